//! A peer's plaintext stream over a TLS session: [`TlsPeer`], the TLS
//! implementation of [`Peer`].
//!
//! Two relay threads share one peer: the receiving thread reads TLS records from
//! the socket and takes plaintext out of the session; the sending thread puts
//! plaintext into the session and writes the records it makes to the socket. One
//! rustls session serves both, so it sits behind a mutex. The locking:
//!
//! - `session` (the rustls state) is held only for in-memory work: feeding it
//!   received bytes, taking plaintext out, encrypting, draining records to send.
//!   It is never held across a blocking socket read or write.
//! - `out` (the buffer of records on their way to the socket) is the write lock:
//!   records are drained from the session only while holding it, and written to
//!   the socket before it is released, so records leave in the order the session
//!   made them. Lock order: `out`, then `session`.
//! - A receive can make records too (an alert, a key update's answer, session
//!   tickets after the handshake). The receiving thread flushes them only if it
//!   gets `out` without waiting (`try_lock`); if the sending thread holds it, that
//!   thread looks at the session again after releasing `out` and flushes what the
//!   receive left. So the receiving thread never waits behind a send that is
//!   blocked on a peer that does not read, and nothing is left unsent.
//! - `inbound` (received bytes the session has not taken yet) is touched by the
//!   receiving thread only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::Connection;

use crate::peer::{Peer, SEND_CHECK, abort_socket, write_all_checked};

/// The most TLS bytes read from the socket at once.
const INBOUND: usize = 64 * 1024;

/// How the peer hung up, for the run index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hangup {
    /// It sent close_notify: a TLS hang-up.
    CloseNotify,
    /// It closed its TCP sending half without close_notify (many servers do).
    FinWithoutCloseNotify,
}

impl Hangup {
    /// The index's word for it.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Hangup::CloseNotify => "close_notify",
            Hangup::FinWithoutCloseNotify => "fin_without_close_notify",
        }
    }
}

/// A peer whose socket carries a TLS session that has finished its handshake.
pub(crate) struct TlsPeer {
    socket: TcpStream,
    session: Mutex<Connection>,
    out: Mutex<Vec<u8>>,
    inbound: Mutex<Inbound>,
    aborted: AtomicBool,
    /// 0 while the peer has not hung up, else 1 + [`Hangup`] as `u8`.
    hangup: AtomicU8,
    /// How long a send may wait for a peer that does not read; `None` (the
    /// proxy) waits until the connection is aborted.
    send_timeout: Mutex<Option<Duration>>,
}

/// Bytes received from the socket that the session has not taken yet:
/// `buf[start..end]`. `buf` stays at its full size, so it is zeroed only once.
struct Inbound {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl TlsPeer {
    /// Wraps a socket and the TLS session that has completed its handshake on it.
    pub(crate) fn new(socket: TcpStream, session: Connection) -> TlsPeer {
        let _ = socket.set_nodelay(true);
        let _ = socket.set_read_timeout(None);
        let _ = socket.set_write_timeout(Some(SEND_CHECK));
        TlsPeer {
            socket,
            session: Mutex::new(session),
            out: Mutex::new(Vec::new()),
            inbound: Mutex::new(Inbound {
                buf: vec![0; INBOUND],
                start: 0,
                end: 0,
            }),
            aborted: AtomicBool::new(false),
            hangup: AtomicU8::new(0),
            send_timeout: Mutex::new(None),
        }
    }

    /// Limits how long a send waits for a peer that does not read.
    pub(crate) fn set_send_timeout(&self, timeout: Duration) {
        *self.send_timeout.lock().unwrap_or_else(|e| e.into_inner()) = Some(timeout);
    }

    /// The socket under the session.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// How the peer hung up, once it has.
    pub(crate) fn hangup(&self) -> Option<Hangup> {
        match self.hangup.load(Ordering::SeqCst) {
            1 => Some(Hangup::CloseNotify),
            2 => Some(Hangup::FinWithoutCloseNotify),
            _ => None,
        }
    }

    fn session(&self) -> MutexGuard<'_, Connection> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_hangup(&self, how: Hangup) {
        let code = match how {
            Hangup::CloseNotify => 1,
            Hangup::FinWithoutCloseNotify => 2,
        };
        let _ = self
            .hangup
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Writes every record the session has ready, holding `out` (the caller's
    /// guard) for the whole drain-and-write, so records leave in order.
    fn write_pending(&self, out: &mut Vec<u8>) -> io::Result<()> {
        {
            let mut session = self.session();
            while session.wants_write() {
                session.write_tls(out)?;
            }
        }
        let timeout = *self.send_timeout.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = timeout.map(|t| Instant::now() + t);
        let result = write_all_checked(&self.socket, out, &self.aborted, deadline);
        out.clear();
        result
    }

    /// Flushes records the session made on its own (see the module doc): only if
    /// no send holds the write lock, and again while more are left after it.
    fn flush_nowait(&self) {
        // Bounded: each round writes what is pending; only a peer that keeps
        // producing records keeps it going.
        for _ in 0..64 {
            let Ok(mut out) = self.out.try_lock() else { return };
            if self.write_pending(&mut out).is_err() {
                return;
            }
            drop(out);
            if !self.session().wants_write() {
                return;
            }
        }
    }

    /// Takes plaintext out of the session into `buf[*filled..]`. `Some(result)`
    /// ends the receive; `None` means the session has nothing for now.
    fn take_plaintext(
        &self,
        session: &mut Connection,
        buf: &mut [u8],
        filled: &mut usize,
    ) -> Option<io::Result<usize>> {
        match session.reader().read(&mut buf[*filled..]) {
            Ok(0) => {
                // close_notify: the end of this peer's stream.
                self.set_hangup(Hangup::CloseNotify);
                Some(Ok(*filled))
            }
            Ok(n) => {
                *filled += n;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.set_hangup(Hangup::FinWithoutCloseNotify);
                Some(Ok(*filled))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl Peer for TlsPeer {
    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        // The relay's buffer is reused for every receive; plaintext is copied into
        // it, so it must be initialised (once per size, not per receive).
        let capacity = buf.capacity();
        buf.resize(capacity, 0);
        let mut filled = 0;
        let result = loop {
            let mut ended = None;
            let wants_write;
            {
                let mut session = self.session();
                // Alternate between taking plaintext out and feeding in received
                // bytes, so the session's plaintext buffer never overflows.
                loop {
                    if let Some(end) = self.take_plaintext(&mut session, buf, &mut filled) {
                        ended = Some(end);
                        break;
                    }
                    if filled == capacity || inbound.start == inbound.end {
                        break;
                    }
                    let Inbound { buf: bytes, start, end } = &mut *inbound;
                    let mut rest = &bytes[*start..*end];
                    let taken = session.read_tls(&mut rest);
                    *start = *end - rest.len();
                    if let Err(e) = taken.and_then(|_| session.process_new_packets().map_err(io::Error::other)) {
                        // The session queued an alert for the peer: send it.
                        drop(session);
                        self.flush_nowait();
                        return Err(e);
                    }
                }
                wants_write = session.wants_write();
            }
            if wants_write {
                self.flush_nowait();
            }
            if let Some(end) = ended {
                break end;
            }
            if filled > 0 {
                break Ok(filled);
            }
            // The session needs more bytes: wait for them with no lock held.
            let Inbound { buf: bytes, start, end } = &mut *inbound;
            let n = loop {
                match (&self.socket).read(bytes) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            (*start, *end) = (0, *n.as_ref().unwrap_or(&0));
            if let Err(e) = n {
                break Err(e);
            }
            if *end == 0 {
                // The socket's end: tell the session, which then reports either
                // the close_notify it saw or an end without one.
                let mut session = self.session();
                let _ = session.read_tls(&mut &[][..]);
                let _ = session.process_new_packets();
                if let Some(end) = self.take_plaintext(&mut session, buf, &mut filled) {
                    break end;
                }
                if filled == 0 {
                    self.set_hangup(Hangup::FinWithoutCloseNotify);
                }
                // Plaintext that came with the end is returned first; the next
                // receive reports the end itself.
                break Ok(filled);
            }
        };
        buf.truncate(*result.as_ref().unwrap_or(&0));
        result
    }

    fn send_all(&self, mut data: &[u8]) -> io::Result<()> {
        {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            while !data.is_empty() {
                if self.aborted.load(Ordering::SeqCst) {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection aborted"));
                }
                // The session takes as much plaintext as its buffer limit allows.
                let n = self.session().writer().write(data)?;
                data = &data[n..];
                self.write_pending(&mut out)?;
            }
        }
        // A receive may have left records while we held the write lock.
        if self.session().wants_write() {
            self.flush_nowait();
        }
        Ok(())
    }

    fn hang_up(&self) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        self.session().send_close_notify();
        let result = self
            .write_pending(&mut out)
            .and_then(|()| self.socket.shutdown(Shutdown::Write));
        match result {
            // A peer that has closed its whole socket (an HTTP/1.0 server, say)
            // may answer the close_notify with a reset, before or after we have
            // read its own end: our hang-up then has nobody left to tell, which is
            // no failure. A plain TCP half-close cannot fail that way either.
            Err(_) if self.hangup().is_some() => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn abort(&self) {
        // No close_notify: the peer must see the connection fail, not end.
        abort_socket(&self.socket, &self.aborted);
    }

    fn tls_hangup(&self) -> Option<&'static str> {
        self.hangup().map(Hangup::word)
    }
}

//! A peer's plaintext stream: what the relay needs from one side of a proxied
//! connection, whatever carries it.
//!
//! The relay ([`crate::proxy`]'s `relay.rs`) pumps one direction with four
//! operations on the two peers: receive what one peer sent (or, while the relay
//! polls, only what is already there), send it all to the
//! other, pass a hang-up on as a half-close, and abort both with a reset when
//! anything fails. [`Peer`] is those four operations. [`TcpPeer`] implements them
//! on a plain socket; the TLS implementation (in [`crate::tls`]) implements them
//! on a socket carrying a TLS session, so the relay has no TLS branches.
//!
//! Both relay threads of a connection hold each peer: one receives from it while
//! the other sends to it, so every method takes `&self`.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::SockRef;

/// How long a send blocked on a peer that does not read waits before it checks
/// whether the connection was aborted meanwhile. Only a send that is stuck pays
/// it: nothing wakes a thread blocked in `send` without also sending a FIN, and an
/// aborted connection must reach its peers as a reset, not as a hang-up.
pub(crate) const SEND_CHECK: Duration = Duration::from_millis(100);

/// One side of a proxied connection, as a stream of plaintext bytes.
pub(crate) trait Peer: Send + Sync {
    /// Receives the next bytes this peer sent into `buf`'s spare capacity (after
    /// clearing it) and returns how many; `Ok(0)` means the peer hung up.
    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize>;

    /// Like [`Peer::recv`], but returns `Ok(None)` at once when nothing is
    /// waiting. A peer that cannot tell waits, as [`Peer::recv`] does.
    fn try_recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        self.recv(buf).map(Some)
    }

    /// Sends all of `data` to this peer. Fails once [`Peer::abort`] was called,
    /// also when the send was blocked on a peer that is not reading.
    fn send_all(&self, data: &[u8]) -> io::Result<()>;

    /// Closes our sending half toward this peer, so it sees the other peer's
    /// hang-up; it can still send to us.
    fn hang_up(&self) -> io::Result<()>;

    /// Ends the connection with this peer as a reset: it gets an RST and no FIN,
    /// and a thread blocked receiving from or sending to it returns at once (the
    /// receive with `Ok(0)` or an error, the send with an error). The reset itself
    /// goes out when the socket is closed, after both threads have let go of it.
    fn abort(&self);

    /// For a TLS peer that has hung up: `"close_notify"`, or
    /// `"fin_without_close_notify"` when it closed TCP without saying so in TLS.
    fn tls_hangup(&self) -> Option<&'static str> {
        None
    }
}

/// A peer on a plain TCP socket.
#[derive(Debug)]
pub(crate) struct TcpPeer {
    socket: TcpStream,
    aborted: AtomicBool,
}

impl TcpPeer {
    /// Wraps a connected socket: no Nagle delay (the proxy must not add latency to
    /// small messages), and sends that wake up now and then (see [`SEND_CHECK`]).
    pub(crate) fn new(socket: TcpStream) -> TcpPeer {
        let _ = socket.set_nodelay(true);
        let _ = socket.set_write_timeout(Some(SEND_CHECK));
        TcpPeer {
            socket,
            aborted: AtomicBool::new(false),
        }
    }
}

impl Peer for TcpPeer {
    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        recv_into(&self.socket, buf)
    }

    fn try_recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        buf.clear();
        let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
        match SockRef::from(&self.socket).recv_with_flags(spare, libc::MSG_DONTWAIT) {
            Ok(n) => {
                // SAFETY: recv initialised the first n bytes of the spare capacity.
                unsafe { buf.set_len(n) };
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send_all(&self, data: &[u8]) -> io::Result<()> {
        write_all_checked(&self.socket, data, &self.aborted, None)
    }

    fn hang_up(&self) -> io::Result<()> {
        self.socket.shutdown(Shutdown::Write)
    }

    fn abort(&self) {
        abort_socket(&self.socket, &self.aborted);
    }
}

/// Receives into `buf`'s spare capacity without zeroing it first (a fresh large
/// buffer would otherwise be written twice) and returns the byte count.
pub(crate) fn recv_into(socket: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
    let n = SockRef::from(socket).recv(spare)?;
    // SAFETY: recv initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// Writes all of `data` to a socket whose sends time out after [`SEND_CHECK`],
/// retrying after each timeout until the data is out or `aborted` is set (or
/// `deadline`, if given, has passed).
pub(crate) fn write_all_checked(
    mut socket: &TcpStream,
    mut data: &[u8],
    aborted: &AtomicBool,
    deadline: Option<std::time::Instant>,
) -> io::Result<()> {
    while !data.is_empty() {
        if aborted.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection aborted"));
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the peer did not read in time"));
        }
        match socket.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes closing `socket` send a reset (linger 0) and wakes a thread blocked
/// receiving from it. `shutdown(Read)` wakes the receiver without sending
/// anything; `shutdown(Both)` or `shutdown(Write)` would send a FIN first, and
/// the peer would take the end for a clean hang-up.
pub(crate) fn abort_socket(socket: &TcpStream, aborted: &AtomicBool) {
    aborted.store(true, Ordering::SeqCst);
    let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
    let _ = socket.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    /// Bytes waiting in `socket`'s receive queue.
    fn queued(socket: &TcpStream) -> i32 {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into `n`.
        unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n) };
        n
    }

    #[test]
    fn try_recv_takes_only_what_is_there_and_sees_a_hang_up() {
        let (ours, mut theirs) = pair();
        let peer = TcpPeer::new(ours);
        let mut buf = Vec::with_capacity(16);
        assert_eq!(peer.try_recv(&mut buf).unwrap(), None);
        // Tries until something arrives, within a deadline.
        let arrived = |buf: &mut Vec<u8>, what: &str| {
            let start = std::time::Instant::now();
            loop {
                if let Some(n) = peer.try_recv(buf).unwrap() {
                    return n;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "{what} never came");
                std::thread::yield_now();
            }
        };
        theirs.write_all(b"hello").unwrap();
        let n = arrived(&mut buf, "the bytes");
        assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
        assert_eq!(peer.try_recv(&mut buf).unwrap(), None);
        theirs.shutdown(Shutdown::Write).unwrap();
        assert_eq!(arrived(&mut buf, "the hang-up"), 0, "a hang-up is a receive of nothing");
    }

    #[test]
    fn abort_wakes_a_blocked_receive_and_resets_the_peer() {
        let (ours, theirs) = pair();
        let peer = Arc::new(TcpPeer::new(ours));
        let receiver = {
            let peer = Arc::clone(&peer);
            std::thread::spawn(move || peer.recv(&mut Vec::with_capacity(16)))
        };
        peer.abort();
        assert!(matches!(receiver.join().unwrap(), Ok(0) | Err(_)));
        drop(peer);
        theirs.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let e = (&theirs).read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }

    #[test]
    fn abort_ends_a_send_blocked_on_a_peer_that_does_not_read() {
        let (ours, theirs) = pair();
        let peer = Arc::new(TcpPeer::new(ours));
        let sender = {
            let peer = Arc::clone(&peer);
            // Far more than both socket buffers hold: the send blocks.
            std::thread::spawn(move || peer.send_all(&vec![0u8; 64 << 20]))
        };
        // Abort only once the send is under way, so it is the blocked send that
        // must notice.
        let start = std::time::Instant::now();
        while queued(&theirs) == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "the send never started");
            std::thread::yield_now();
        }
        peer.abort();
        assert!(sender.join().unwrap().is_err());
    }
}

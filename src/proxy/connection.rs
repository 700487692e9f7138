//! One proxied connection: its life after accept ([`serve`]: connect, relay both
//! directions, [`finish`]), and its shared state ([`Conn`]: its log, how each side
//! ended, and the byte counts, behind one mutex that both relay threads take for
//! every record).
//!
//! Taking the timestamp and writing the record under the same lock is what makes
//! time order equal file order. The state also decides which events get recorded:
//! once a side's error has torn the connection down, the sibling thread's wake-up
//! (an EOF or an error caused by the teardown itself) records nothing, so `err`
//! stays the last record.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::SockRef;

use super::limits::{Budget, Refused};
use super::{Run, Shared, relay};
use crate::index::{Entry, TlsInfo};
use crate::log::{Clock, End, Event, LogWriter, Micros, Side};
use crate::peer::{Peer, TcpPeer};
use crate::process::say;
use crate::tls::Tls;

/// A connection being proxied and recorded.
#[derive(Debug)]
pub struct Conn {
    /// The connection number, `N` in its log's name.
    pub n: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The proxy address the client connected to.
    pub listen: Option<SocketAddr>,
    /// The server as the user named it.
    pub upstream_name: String,
    /// The log's path, for messages.
    pub log_path: PathBuf,
    start_unix_us: u64,
    clock: Clock,
    /// The run's size limits, asked before each data record.
    budget: Arc<Budget>,
    state: Mutex<State>,
}

/// What a new connection is, besides its log: what [`Conn::open`] needs.
#[derive(Debug)]
pub struct Accepted {
    pub n: u64,
    pub client: SocketAddr,
    pub listen: Option<SocketAddr>,
    pub upstream_name: String,
    /// Where its log is, or would have been.
    pub log_path: PathBuf,
}

#[derive(Debug)]
struct State {
    /// `None` once recording has stopped for this connection (a failed write, or
    /// netrecord stopping).
    log: Option<LogWriter>,
    log_error: Option<String>,
    upstream: Option<SocketAddr>,
    tls: Option<TlsInfo>,
    start: Micros,
    /// Bytes each side sent, recorded or not.
    bytes: [u64; 2],
    /// Payload bytes in the log, both sides: what the size limit counts.
    logged: u64,
    ended: [End; 2],
    /// The OS error text of a side that ended in `err`.
    errors: [Option<String>; 2],
    /// An `err` ended the connection; nothing more is recorded.
    torn_down: bool,
    /// The index line has been written (by the connection's end or by netrecord
    /// stopping, whichever came first).
    reported: bool,
}

/// What [`Conn::record`] tells the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Go on: forward the bytes, or finish the half-close.
    Go,
    /// The connection is being torn down or netrecord is stopping: stop quietly.
    Stop,
}

impl Conn {
    /// Starts a connection's record with `c <time> con` in `log`. When the log
    /// could not be created (`log` is why), or not even `con` fits, the connection
    /// is forwarded unrecorded and [`Conn::log_error`] says why: a full disk must
    /// not refuse clients.
    pub fn open(who: Accepted, log: Result<LogWriter, String>, clock: Clock, budget: Arc<Budget>) -> Conn {
        let start_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let (log, log_error) = match log {
            Ok(log) => (Some(log), None),
            Err(why) => (None, Some(why)),
        };
        let conn = Conn {
            n: who.n,
            client: who.client,
            listen: who.listen,
            upstream_name: who.upstream_name,
            log_path: who.log_path,
            start_unix_us,
            clock,
            budget,
            state: Mutex::new(State {
                log,
                log_error,
                upstream: None,
                tls: None,
                start: Micros(0),
                bytes: [0; 2],
                logged: 0,
                ended: [End::Open, End::Open],
                errors: [None, None],
                torn_down: false,
                reported: false,
            }),
        };
        {
            let mut state = conn.lock();
            let now = clock.now();
            state.start = now;
            if let Some(log) = state.log.as_mut()
                && let Err(e) = log.append(Side::Client, now, Event::Con, b"")
            {
                // Leave no empty log that looks like a recording.
                let _ = std::fs::remove_file(&conn.log_path);
                state.log = None;
                state.log_error = Some(format!("failed to write log {}: {e}", conn.log_path.display()));
            }
        }
        conn
    }

    /// Why this connection is not (or no longer) recorded, if it is not.
    pub fn log_error(&self) -> Option<String> {
        self.lock().log_error.clone()
    }

    /// The state, even if a thread panicked while holding it: the state is kept
    /// consistent between statements, and losing the recording is worse.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the connection to the server was made through `addr`.
    pub fn set_upstream(&self, addr: SocketAddr) {
        self.lock().upstream = Some(addr);
    }

    /// Records the TLS sessions of the connection's legs, for the index.
    pub fn set_tls(&self, tls: TlsInfo) {
        self.lock().tls = Some(tls);
    }

    /// Notes how a TLS peer on `side` hung up (`close_notify`, or a FIN without
    /// one), for the index.
    pub fn note_tls_hangup(&self, side: Side, how: &str) {
        let mut state = self.lock();
        let Some(tls) = state.tls.as_mut() else { return };
        let leg = match side {
            Side::Client => tls.client.as_mut(),
            Side::Server => tls.server.as_mut(),
        };
        if let Some(leg) = leg {
            leg.hangup = Some(how.to_string());
        }
    }

    /// Records `payload` received from `side`; the caller forwards it only after
    /// this returns [`Recorded::Go`], so every byte a peer receives is in the log.
    pub fn data(&self, side: Side, payload: &[u8]) -> Recorded {
        let mut state = self.lock();
        if state.torn_down || state.reported {
            return Recorded::Stop;
        }
        state.bytes[side.index()] += payload.len() as u64;
        self.append(&mut state, side, Event::Data(payload.len()), payload);
        Recorded::Go
    }

    /// Records that `side` hung up (closed its sending half).
    pub fn hup(&self, side: Side) -> Recorded {
        let mut state = self.lock();
        if state.torn_down || state.reported {
            return Recorded::Stop;
        }
        state.ended[side.index()] = End::Hup;
        self.append(&mut state, side, Event::Hup, b"");
        Recorded::Go
    }

    /// Records that `side`'s connection failed. Returns [`Recorded::Go`] if this is
    /// the first failure, and the caller must tear the whole connection down;
    /// [`Recorded::Stop`] if it already was (the error is the teardown's echo).
    pub fn err(&self, side: Side, error: &dyn std::fmt::Display) -> Recorded {
        let mut state = self.lock();
        if state.torn_down || state.reported {
            return Recorded::Stop;
        }
        state.torn_down = true;
        state.ended[side.index()] = End::Err;
        state.errors[side.index()] = Some(error.to_string());
        self.append(&mut state, side, Event::Err, b"");
        Recorded::Go
    }

    /// Appends a record stamped now. A record the size limits have no room for
    /// is not written, and a failed write is cut back to whole records by the
    /// writer: either way recording stops for this connection, not its traffic.
    fn append(&self, state: &mut State, side: Side, event: Event, payload: &[u8]) {
        if state.log.is_none() {
            return;
        }
        let n = payload.len() as u64;
        if let Err(refused) = self.budget.admit(state.logged, n) {
            let why = match refused {
                Refused::Log(why) => why,
                Refused::Run { why, first } => {
                    if first {
                        say!("{why}: recording stops, traffic still flows, and new connections get no log");
                    }
                    why
                }
            };
            return self.stop_recording(state, why);
        }
        let Some(log) = state.log.as_mut() else { return };
        match log.append(side, self.clock.now(), event, payload) {
            Ok(()) => state.logged += n,
            Err(e) => {
                self.budget.give_back(n);
                let why = format!("failed to write log {}: {e}", self.log_path.display());
                self.stop_recording(state, why);
            }
        }
    }

    /// Ends this connection's log (it holds whole records) and says why, once.
    fn stop_recording(&self, state: &mut State, why: String) {
        say!(
            "#{}: {why}; recording stopped for this connection, traffic still flows",
            self.n
        );
        state.log = None;
        state.log_error = Some(why);
    }

    /// Waits (up to `deadline`) until no record of this connection is being
    /// written, and keeps it so: nothing more is ever recorded. Only for the
    /// moment before the process exits at once.
    pub fn freeze(&self, deadline: Instant) {
        hold_forever(&self.state, deadline);
    }

    /// Ends recording and returns the connection's index entry, once: when both
    /// relay threads are done, or when netrecord stops first (then the sides that
    /// have not ended are `open`). Later calls return `None`. Because this takes
    /// the lock, no record is half-written when it returns.
    pub fn report(&self) -> Option<Entry> {
        let mut state = self.lock();
        if state.reported {
            return None;
        }
        state.reported = true;
        state.log = None;
        let end = self.clock.now();
        Some(Entry {
            conn: self.n,
            log: self.log_path.clone(),
            client: self.client,
            upstream: state.upstream,
            start_unix_us: self.start_unix_us,
            start_us: state.start.0,
            end_us: end.0,
            client_bytes: state.bytes[0],
            server_bytes: state.bytes[1],
            client_end: state.ended[0],
            client_error: state.errors[0].clone(),
            server_end: state.ended[1],
            server_error: state.errors[1].clone(),
            log_error: state.log_error.clone(),
            tls: state.tls.clone(),
            listen: self.listen,
            upstream_name: Some(self.upstream_name.clone()),
        })
    }
}

/// Takes `lock` and never lets it go, or gives up at `deadline` (a write stuck in
/// a hung file system must not keep a process that was told twice to stop).
pub(super) fn hold_forever<T>(lock: &Mutex<T>, deadline: Instant) {
    loop {
        match lock.try_lock() {
            Ok(guard) => return std::mem::forget(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => return std::mem::forget(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(std::sync::TryLockError::WouldBlock) => return,
        }
    }
}

/// A connection's life after accept, on its own thread: connect to the server
/// (with TLS handshakes where the run uses TLS), then relay both directions, this
/// thread client-to-server and a second one server-to-client.
pub(super) fn serve(shared: &Arc<Shared>, conn: &Arc<Conn>, client: TcpStream) {
    let config = &shared.config;
    let connect = || crate::net::connect_first(&config.upstream_name, &config.upstream, config.connect_timeout);
    let Some(tls) = config.tls.as_deref() else {
        let server = match connect() {
            Ok((server, addr)) => {
                conn.set_upstream(addr);
                server
            }
            Err(e) => return refuse(shared, conn, client, &e),
        };
        return relay_both(
            shared,
            conn,
            Arc::new(TcpPeer::new(client)),
            Arc::new(TcpPeer::new(server)),
        );
    };
    serve_tls(shared, conn, client, tls, connect);
}

/// [`serve`] for a run with TLS on one leg or both. With `--tls-listen` the
/// client's ClientHello comes first, so that its SNI and ALPN offer reach the
/// server; the client's handshake is finished last, with the ALPN protocol the
/// server chose. A failed handshake is that side's `err`, in words.
fn serve_tls(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    mut client: TcpStream,
    tls: &Tls,
    connect: impl FnOnce() -> io::Result<(TcpStream, SocketAddr)>,
) {
    let mut info = TlsInfo::default();
    // No Nagle's delay for the handshake's small messages either.
    let _ = client.set_nodelay(true);
    let hello = match &tls.listen {
        Some(listen) => match listen.read_hello(&mut client) {
            Ok(hello) => Some(hello),
            Err(why) => return fail_setup(shared, conn, Side::Client, &why, info, [Some(client), None]),
        },
        None => None,
    };
    let server = match connect() {
        Ok((server, addr)) => {
            conn.set_upstream(addr);
            server
        }
        // A plain client may have sent bytes meanwhile; a TLS client has sent
        // nothing but its handshake.
        Err(e) if hello.is_none() => return refuse(shared, conn, client, &e),
        Err(e) => return fail_setup(shared, conn, Side::Server, &e, info, [Some(client), None]),
    };
    let (server, chosen): (Arc<dyn Peer>, Option<Vec<u8>>) = match &tls.upstream {
        Some(upstream) => {
            let sni = hello.as_ref().and_then(|h| h.sni.as_deref());
            let offer = hello.as_ref().map(|h| h.alpn.clone()).unwrap_or_default();
            match upstream.connect(server, sni, offer) {
                Ok((peer, leg)) => {
                    let chosen = leg.alpn.clone().map(String::into_bytes);
                    info.server = Some(leg);
                    (Arc::new(peer), chosen)
                }
                Err(why) if hello.is_none() => {
                    conn.set_tls(info);
                    return refuse(shared, conn, client, &why);
                }
                Err(why) => return fail_setup(shared, conn, Side::Server, &why, info, [Some(client), None]),
            }
        }
        None => (Arc::new(TcpPeer::new(server)), None),
    };
    let client: Arc<dyn Peer> = match (&tls.listen, hello) {
        (Some(listen), Some(hello)) => match listen.finish(hello, client, chosen) {
            Ok((peer, leg)) => {
                info.client = Some(leg);
                Arc::new(peer)
            }
            Err(why) => {
                // The server leg is up: it must see the connection fail too.
                conn.set_tls(info);
                conn.err(Side::Client, &why);
                server.abort();
                drop(server);
                return finish(shared, conn);
            }
        },
        _ => Arc::new(TcpPeer::new(client)),
    };
    conn.set_tls(info);
    relay_both(shared, conn, client, server);
}

/// A connection that failed before relaying began (a handshake, or the connect
/// behind a TLS client): `side`'s `err`, and a reset for the sockets there are.
fn fail_setup(
    shared: &Shared,
    conn: &Conn,
    side: Side,
    why: &dyn std::fmt::Display,
    info: TlsInfo,
    sockets: [Option<TcpStream>; 2],
) {
    conn.set_tls(info);
    conn.err(side, why);
    for socket in sockets.into_iter().flatten() {
        let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    }
    finish(shared, conn);
}

/// The server could not be reached: record what the client sent while the connect
/// was pending (and its hang-up, if it hung up), then `s err`, and reset the
/// client, as a refused connection would have.
fn refuse(shared: &Shared, conn: &Conn, client: TcpStream, error: &dyn std::fmt::Display) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match SockRef::from(&client).recv_with_flags(buf.spare_capacity_mut(), libc::MSG_DONTWAIT) {
            Ok(0) => {
                conn.hup(Side::Client);
                break;
            }
            Ok(n) => {
                // SAFETY: recv initialised the first n bytes of the spare capacity.
                unsafe { buf.set_len(n) };
                conn.data(Side::Client, &buf);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Nothing more waiting (or the client is gone): the server's error is
            // what ends the connection either way.
            Err(_) => break,
        }
    }
    conn.err(Side::Server, error);
    let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
    drop(client);
    finish(shared, conn);
}

/// Relays both directions of a connected pair of peers. The server-to-client
/// direction runs on a second thread. Whichever direction ends last finishes the
/// connection, after both have let go of the peers (so the sockets are closed
/// first), and neither thread waits for the other.
fn relay_both(shared: &Arc<Shared>, conn: &Arc<Conn>, client: Arc<dyn Peer>, server: Arc<dyn Peer>) {
    let running = Arc::new(AtomicUsize::new(2));
    let back = {
        let last = LastOut {
            shared: Arc::clone(shared),
            conn: Arc::clone(conn),
            running: Arc::clone(&running),
        };
        let (client, server) = (Arc::clone(&client), Arc::clone(&server));
        shared.threads.spawn(Box::new(move || {
            relay::pump(&last.conn, Side::Server, &*server, &*client, &last.shared.run.polling);
            drop((server, client));
            drop(last);
        }))
    };
    let last = LastOut {
        shared: Arc::clone(shared),
        conn: Arc::clone(conn),
        running,
    };
    match back {
        Ok(()) => relay::pump(conn, Side::Client, &*client, &*server, &shared.run.polling),
        Err(e) => {
            // The job went down with the failed spawn, and its `LastOut` with it.
            let e = io::Error::new(e.kind(), format!("could not start a relay thread: {e}"));
            relay::fail(conn, Side::Server, &e, &*client, &*server);
        }
    }
    drop((client, server));
    drop(last);
}

/// One direction's hold on its connection: the last one dropped finishes the
/// connection, also when a relay thread panicked (unwinding drops it), so every
/// connection gets its index line.
struct LastOut {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    running: Arc<AtomicUsize>,
}

impl Drop for LastOut {
    fn drop(&mut self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            finish(&self.shared, &self.conn);
        }
    }
}

/// A connection has ended: write its index line and its end line.
pub(super) fn finish(shared: &Shared, conn: &Conn) {
    report(&shared.run, conn);
}

/// Writes `conn`'s index line and end line, unless they are written already,
/// then lets it go from the live set. Whoever gets the entry (the connection's
/// own thread, or the stop) writes it, and the connection stays live until its
/// line is out, so a stop that waits for the live set to empty loses no line.
pub(super) fn report(run: &Run, conn: &Conn) {
    let Some(entry) = conn.report() else { return };
    run.client_bytes.fetch_add(entry.client_bytes, Ordering::SeqCst);
    run.server_bytes.fetch_add(entry.server_bytes, Ordering::SeqCst);
    if let Err(e) = run.index.append(&entry) {
        say!("#{}: failed to write index {}: {e}", conn.n, run.index.path().display());
    }
    if !run.quiet {
        let side = |end: End, bytes: u64, error: &Option<String>, name: &str| match (end, error) {
            (End::Err, Some(e)) => format!("{name} sent {bytes} bytes (err: {e})"),
            (end, _) => format!("{name} sent {bytes} bytes ({end})"),
        };
        say!(
            "#{} ended after {:.3}s: {}, {}",
            conn.n,
            entry.end_us.saturating_sub(entry.start_us) as f64 / 1e6,
            side(entry.client_end, entry.client_bytes, &entry.client_error, "client"),
            side(entry.server_end, entry.server_bytes, &entry.server_error, "server"),
        );
    }
    run.forget(conn.n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Reader;

    fn open_conn(dir: &std::path::Path) -> Conn {
        let mut next = 1;
        let (n, log) = LogWriter::create_next(&dir.join("rec"), &mut next).unwrap();
        let who = Accepted {
            n,
            client: "127.0.0.1:1234".parse().unwrap(),
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            upstream_name: "db.local:5432".into(),
            log_path: log.path().to_path_buf(),
        };
        Conn::open(who, Ok(log), Clock::start(), Arc::new(Budget::new(Some(8), None)))
    }

    #[test]
    fn nothing_is_recorded_after_the_first_err() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_conn(dir.path());
        assert_eq!(conn.data(Side::Client, b"hello"), Recorded::Go);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(conn.err(Side::Server, &reset), Recorded::Go);
        assert_eq!(conn.err(Side::Client, &reset), Recorded::Stop);
        assert_eq!(conn.hup(Side::Client), Recorded::Stop);
        assert_eq!(conn.data(Side::Server, b"late"), Recorded::Stop);
        let entry = conn.report().unwrap();
        assert_eq!((entry.client_end, entry.server_end), (End::Open, End::Err));
        assert_eq!(entry.client_bytes, 5);
        assert!(conn.report().is_none(), "reported once");
        let events: Vec<_> = Reader::open(&conn.log_path)
            .unwrap()
            .map(|r| r.map(|r| (r.side, r.event)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            events,
            vec![
                (Side::Client, Event::Con),
                (Side::Client, Event::Data(5)),
                (Side::Server, Event::Err)
            ]
        );
    }

    #[test]
    fn a_record_past_the_size_limit_ends_the_log_but_not_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_conn(dir.path());
        assert_eq!(conn.data(Side::Client, b"12345"), Recorded::Go);
        assert_eq!(conn.data(Side::Server, b"6789"), Recorded::Go, "traffic flows on");
        assert_eq!(conn.data(Side::Client, b"0"), Recorded::Go);
        let entry = conn.report().unwrap();
        assert_eq!((entry.client_bytes, entry.server_bytes), (6, 4));
        assert_eq!(entry.log_error.as_deref(), Some("size limit reached: 8 bytes"));
        assert_eq!(entry.listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(entry.upstream_name.as_deref(), Some("db.local:5432"));
        let shapes: Vec<_> = Reader::open(&conn.log_path)
            .unwrap()
            .map(|r| r.map(|r| r.event))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(shapes, vec![Event::Con, Event::Data(5)]);
    }

    #[test]
    fn stop_reports_open_sides_and_ends_recording() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_conn(dir.path());
        conn.hup(Side::Client);
        let entry = conn.report().unwrap();
        assert_eq!((entry.client_end, entry.server_end), (End::Hup, End::Open));
        assert_eq!(conn.data(Side::Server, b"x"), Recorded::Stop);
        assert!(conn.report().is_none());
    }
}

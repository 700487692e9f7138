//! The recording proxy: startup checks, the listener, the accept loop, and each
//! connection's setup and end.
//!
//! Data flow: the accept loop takes a client, creates its log (`c con`), and hands
//! it to a connection thread, which connects to the server (`s err` if it cannot),
//! starts a second thread for server-to-client, and itself pumps client-to-server
//! (see [`crate::relay`]). When both directions are done the connection's line goes
//! into the run index ([`crate::index`]). A stop (SIGINT/SIGTERM, or
//! [`Shutdown::trigger`]) ends the accept loop and reports the connections still
//! open.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use socket2::{Domain, SockRef, Socket, Type};

use crate::cli::RecordArgs;
use crate::conn::Conn;
use crate::index::{End, Entry, IndexWriter};
use crate::log::{Clock, LogWriter, Side, log_path};
use crate::relay;

/// Prints one line to stderr with a single write. `eprintln!` writes every piece
/// of its format separately (stderr is unbuffered): a per-connection line cost
/// about twenty system calls, each waking whatever reads the other end.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }};
}

/// Relay threads keep their buffers on the heap and call nothing deep, so a small
/// stack lets thousands of connections fit in little memory.
const THREAD_STACK: usize = 128 * 1024;

/// Connection threads that have finished wait this long for new work before they
/// exit, and at most this many wait at once.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_IDLE: usize = 64;

/// The listen backlog: bursts of new connections queue instead of being refused.
const BACKLOG: i32 = 1024;

/// How long the accept loop waits before retrying after a transient error, at
/// first and at most.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Everything a connection needs to know about the run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server as the user named it, for messages.
    pub upstream_name: String,
    /// The server's addresses, tried in order for each connection.
    pub upstream: Vec<SocketAddr>,
    /// Logs are `<root>_N`.
    pub root: PathBuf,
    pub connect_timeout: Duration,
    /// No per-connection lines.
    pub quiet: bool,
}

/// Totals of a run, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
}

/// A handle that stops [`run`]: from a signal handler thread, or from a test.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Debug, Default)]
struct ShutdownInner {
    stop: AtomicBool,
    listener: Mutex<Option<TcpListener>>,
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Stops the accept loop: sets the flag and shuts the listening socket down,
    /// which wakes a thread blocked in `accept` (Linux returns EINVAL to it).
    pub fn trigger(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(listener) = &*self.inner.listener.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = SockRef::from(listener).shutdown(std::net::Shutdown::Read);
        }
    }

    /// Whether [`Shutdown::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst)
    }

    fn attach(&self, listener: &TcpListener) -> io::Result<()> {
        *self.inner.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener.try_clone()?);
        Ok(())
    }
}

/// `netrecord <server host> <server port> <proxy port> <log file root>`: checks
/// everything that can be checked before listening, then records until a signal.
pub fn main(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    // clap guarantees the four positionals when no subcommand was given.
    let (Some(host), Some(port), Some(proxy_port), Some(root)) = (
        args.server_host.as_deref(),
        args.server_port,
        args.proxy_port,
        args.log_file_root.as_deref(),
    ) else {
        bail!("missing arguments: netrecord <server host> <server port> <proxy port> <log file root>");
    };
    let connect_timeout = Duration::try_from_secs_f64(args.connect_timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!(
                "--connect-timeout must be a positive number of seconds, not {}",
                args.connect_timeout
            )
        })?;
    check_log_dir(root)?;
    let upstream = resolve(host, port)?;
    let listen = SocketAddr::new(args.listen, proxy_port);
    let listener = bind(listen).with_context(|| format!("could not listen on {listen}"))?;
    let local = listener.local_addr().context("could not read the listening address")?;
    let index = IndexWriter::open(root)
        .with_context(|| format!("failed to open index {}", crate::index::index_path(root).display()))?;
    raise_fd_limit();

    let shown: Vec<String> = upstream.iter().map(SocketAddr::to_string).collect();
    let hint = if args.listen.is_loopback() {
        " (only this host can connect: use --listen 0.0.0.0 or --listen :: to accept from others)"
    } else {
        ""
    };
    say!(
        "netrecord: listening on {local}{hint}, forwarding to {host}:{port} ({}), logging to {} (index {})",
        shown.join(", "),
        format!("{}_N", root.display()),
        index.path().display()
    );

    let shutdown = Shutdown::new();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .context("could not install signal handlers")?;
    let on_signal = shutdown.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                on_signal.trigger();
            }
        })
        .context("could not start the signal thread")?;

    let config = Config {
        upstream_name: format!("{host}:{port}"),
        upstream,
        root: root.to_path_buf(),
        connect_timeout,
        quiet: args.quiet,
    };
    let totals = run(listener, config, index, &shutdown)?;
    say!(
        "netrecord: stopped after {} connection{}: {} bytes from clients, {} bytes from servers",
        totals.connections,
        if totals.connections == 1 { "" } else { "s" },
        totals.client_bytes,
        totals.server_bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// The log directory must exist and be writable, or no connection could be recorded.
fn check_log_dir(root: &Path) -> anyhow::Result<()> {
    let dir = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).with_context(|| format!("log directory {} does not exist", dir.display()))?;
    if !meta.is_dir() {
        bail!("log directory {} is not a directory", dir.display());
    }
    if root.file_name().is_none() {
        bail!(
            "log file root {} must end in a file name (logs are <root>_N)",
            root.display()
        );
    }
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("log directory {} has a NUL byte in its name", dir.display()))?;
    // SAFETY: c_dir is a valid NUL-terminated path.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = io::Error::last_os_error();
        bail!("log directory {} is not writable: {e}", dir.display());
    }
    Ok(())
}

/// Resolves the server to all its addresses, IPv4 and IPv6.
fn resolve(host: &str, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("could not resolve server host {host}"))?
        .collect();
    if addrs.is_empty() {
        bail!("could not resolve server host {host}: no addresses");
    }
    Ok(addrs)
}

/// Binds a listener with SO_REUSEADDR (a restart is not refused because of old
/// connections in TIME_WAIT) and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Each connection holds three descriptors (client, server, log): raise the
/// soft open-files limit as far as the hard limit allows.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// What every connection thread shares.
struct Shared {
    config: Config,
    clock: Clock,
    index: IndexWriter,
    /// Connections whose index line is not written yet, to report at a stop.
    live: Mutex<HashMap<u64, Arc<Conn>>>,
    connections: AtomicU64,
    client_bytes: AtomicU64,
    server_bytes: AtomicU64,
    threads: Arc<Threads>,
}

/// Accepts and records connections on `listener` until `shutdown` is triggered,
/// then reports the connections still open and returns the run's totals.
pub fn run(listener: TcpListener, config: Config, index: IndexWriter, shutdown: &Shutdown) -> anyhow::Result<Totals> {
    shutdown
        .attach(&listener)
        .context("could not prepare the listener for shutdown")?;
    let shared = Arc::new(Shared {
        config,
        clock: Clock::start(),
        index,
        live: Mutex::new(HashMap::new()),
        connections: AtomicU64::new(0),
        client_bytes: AtomicU64::new(0),
        server_bytes: AtomicU64::new(0),
        threads: Arc::new(Threads::default()),
    });
    let mut next = 1;
    let mut backoff = Backoff::default();
    while !shutdown.is_triggered() {
        match listener.accept() {
            Ok((client, addr)) => {
                if let Some(pause) = backoff.recovered() {
                    say!("netrecord: accepting again after {pause}");
                }
                if let Err(e) = accept(&shared, client, addr, &mut next) {
                    say!("netrecord: connection from {addr} dropped: {e:#}");
                    if is_resource_error(e.downcast_ref::<io::Error>()) {
                        thread::sleep(backoff.failed(None));
                    }
                }
            }
            Err(_) if shutdown.is_triggered() => break,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            Err(e) => thread::sleep(backoff.failed(Some(&e))),
        }
    }
    // Report what is still open: taking each connection's lock in `report` means
    // no record is half-written, and nothing more is recorded after it.
    let open: Vec<Arc<Conn>> = shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .map(|(_, c)| c)
        .collect();
    for conn in open {
        if let Some(entry) = conn.report() {
            end_connection(&shared, &conn, &entry);
        }
    }
    Ok(Totals {
        connections: shared.connections.load(Ordering::SeqCst),
        client_bytes: shared.client_bytes.load(Ordering::SeqCst),
        server_bytes: shared.server_bytes.load(Ordering::SeqCst),
    })
}

/// Tracks the accept loop's backing off, so a lasting condition is reported once
/// when it starts and once when it ends, not once per retry.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
    total: Duration,
}

impl Backoff {
    fn failed(&mut self, error: Option<&io::Error>) -> Duration {
        let delay = match self.delay {
            None => {
                if let Some(e) = error {
                    say!("netrecord: accept failed: {e}; retrying until it recovers");
                }
                BACKOFF_FIRST
            }
            Some(d) => (d * 2).min(BACKOFF_MAX),
        };
        self.delay = Some(delay);
        self.total += delay;
        delay
    }

    /// Called after a successful accept: how long the loop had been backing off.
    fn recovered(&mut self) -> Option<String> {
        self.delay.take()?;
        let total = std::mem::take(&mut self.total);
        Some(format!("{} ms", total.as_millis()))
    }
}

/// Errors that mean the process or system is out of something for now.
fn is_resource_error(e: Option<&io::Error>) -> bool {
    e.and_then(io::Error::raw_os_error)
        .is_some_and(|code| matches!(code, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Sets up one accepted client: its log, its `con` record, its thread.
fn accept(shared: &Arc<Shared>, client: TcpStream, addr: SocketAddr, next: &mut u64) -> anyhow::Result<()> {
    let root = &shared.config.root;
    let (n, log) = LogWriter::create_next(root, next)
        .with_context(|| format!("failed to create log {}", log_path(root, *next).display()))?;
    let conn = Conn::open(n, addr, log, shared.clock)
        .map(Arc::new)
        .with_context(|| format!("failed to write log {}", log_path(root, n).display()))?;
    // The proxy must not add Nagle's delay to small messages.
    let _ = client.set_nodelay(true);
    shared.connections.fetch_add(1, Ordering::SeqCst);
    if !shared.config.quiet {
        say!("netrecord: #{n} from {addr}, logging to {}", conn.log_path.display());
    }
    shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(n, Arc::clone(&conn));
    let (shared2, conn2) = (Arc::clone(shared), Arc::clone(&conn));
    let spawned = shared.threads.spawn(Box::new(move || serve(&shared2, &conn2, client)));
    if let Err(e) = spawned {
        // The client stream went down with the closure: it is closed.
        conn.err(Side::Server, &e);
        finish(shared, &conn);
        return Err(anyhow::Error::new(e).context("could not start a connection thread"));
    }
    Ok(())
}

/// A connection's life after accept, on its own thread.
fn serve(shared: &Arc<Shared>, conn: &Arc<Conn>, client: TcpStream) {
    let server = match connect(&shared.config) {
        Ok(server) => server,
        Err(e) => {
            conn.err(Side::Server, &e);
            drop(client);
            finish(shared, conn);
            return;
        }
    };
    if let Ok(addr) = server.peer_addr() {
        conn.set_upstream(addr);
    }
    let _ = server.set_nodelay(true);
    let client = Arc::new(client);
    let server = Arc::new(server);
    // The server-to-client direction runs on a second thread. Whichever
    // direction ends last finishes the connection, after both have let go of the
    // sockets (so they are closed first), and neither thread waits for the other.
    let running = Arc::new(AtomicUsize::new(2));
    let (shared2, conn2, running2) = (Arc::clone(shared), Arc::clone(conn), Arc::clone(&running));
    let (client2, server2) = (Arc::clone(&client), Arc::clone(&server));
    let back = shared.threads.spawn(Box::new(move || {
        relay::pump(&conn2, Side::Server, &server2, &client2);
        drop((server2, client2));
        if running2.fetch_sub(1, Ordering::AcqRel) == 1 {
            finish(&shared2, &conn2);
        }
    }));
    match back {
        Ok(()) => relay::pump(conn, Side::Client, &client, &server),
        Err(e) => {
            conn.err(Side::Server, &e);
            let _ = client.shutdown(std::net::Shutdown::Both);
            running.fetch_sub(1, Ordering::AcqRel);
        }
    }
    drop((client, server));
    if running.fetch_sub(1, Ordering::AcqRel) == 1 {
        finish(shared, conn);
    }
}

/// Work for a connection thread.
type Job = Box<dyn FnOnce() + Send>;

/// The connection threads: blocking threads, two per connection, as before, but a
/// thread whose connection has ended waits a while for the next one instead of
/// exiting. Starting and ending a thread costs more than a short connection's
/// whole relay: its stack and signal stack are mapped and protected, then unmapped,
/// and each change to the mappings interrupts every other core to flush its TLB.
#[derive(Default)]
struct Threads {
    state: Mutex<Waiting>,
    wake: Condvar,
}

#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
}

impl Threads {
    /// Runs `job` on a waiting thread if there is one, else on a new thread.
    fn spawn(self: &Arc<Self>, job: Job) -> io::Result<()> {
        {
            let mut waiting = self.lock();
            // Each waiting thread takes one job before it may leave, so a job
            // queued here is always picked up.
            if waiting.idle > waiting.jobs.len() {
                waiting.jobs.push_back(job);
                self.wake.notify_one();
                return Ok(());
            }
        }
        let threads = Arc::clone(self);
        thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || threads.work(job))
            .map(drop)
    }

    /// Runs jobs until none comes within the idle timeout.
    fn work(&self, first: Job) {
        let mut job = first;
        loop {
            job();
            match self.next() {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Waits for the next job; `None` when enough threads already wait, or none
    /// came within the idle timeout.
    fn next(&self) -> Option<Job> {
        let mut waiting = self.lock();
        if waiting.idle >= MAX_IDLE {
            return None;
        }
        waiting.idle += 1;
        let deadline = Instant::now() + IDLE_TIMEOUT;
        loop {
            if let Some(job) = waiting.jobs.pop_front() {
                waiting.idle -= 1;
                return Some(job);
            }
            let now = Instant::now();
            if now >= deadline {
                waiting.idle -= 1;
                return None;
            }
            waiting = self
                .wake
                .wait_timeout(waiting, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The queue stays consistent between statements even if a job panicked
    /// elsewhere: jobs never run under this lock.
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Connects to the first of the server's addresses that accepts, each within the
/// connect timeout; the error names the server and every address tried.
fn connect(config: &Config) -> io::Result<TcpStream> {
    let mut errors = Vec::new();
    for addr in &config.upstream {
        match TcpStream::connect_timeout(addr, config.connect_timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => errors.push((addr, e)),
        }
    }
    let (_, last) = errors.pop().expect("at least one upstream address");
    let tried: Vec<String> = config.upstream.iter().map(SocketAddr::to_string).collect();
    Err(io::Error::new(
        last.kind(),
        format!(
            "could not connect to {} ({}): {last}",
            config.upstream_name,
            tried.join(", ")
        ),
    ))
}

/// A connection has ended: write its index line and its end line.
fn finish(shared: &Shared, conn: &Conn) {
    shared.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&conn.n);
    if let Some(entry) = conn.report() {
        end_connection(shared, conn, &entry);
    }
}

fn end_connection(shared: &Shared, conn: &Conn, entry: &Entry) {
    shared.client_bytes.fetch_add(entry.client_bytes, Ordering::SeqCst);
    shared.server_bytes.fetch_add(entry.server_bytes, Ordering::SeqCst);
    if let Err(e) = shared.index.append(entry) {
        say!(
            "netrecord: #{}: failed to write index {}: {e}",
            conn.n,
            shared.index.path().display()
        );
    }
    if shared.config.quiet {
        return;
    }
    let side = |end: End, bytes: u64, error: &Option<String>, name: &str| match (end, error) {
        (End::Err, Some(e)) => format!("{name} sent {bytes} bytes (err: {e})"),
        (end, _) => format!("{name} sent {bytes} bytes ({})", end_word(end)),
    };
    say!(
        "netrecord: #{} ended after {:.3}s: {}, {}",
        conn.n,
        entry.end_us.saturating_sub(entry.start_us) as f64 / 1e6,
        side(entry.client_end, entry.client_bytes, &entry.client_error, "client"),
        side(entry.server_end, entry.server_bytes, &entry.server_error, "server"),
    );
}

fn end_word(end: End) -> &'static str {
    match end {
        End::Hup => "hup",
        End::Err => "err",
        End::Open => "open",
    }
}

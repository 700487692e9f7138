//! The recorder: startup checks, the listeners and the accept loop.
//!
//! A run has one or more forwards (the four positionals, and each `--forward`):
//! each its own listener and upstream, all sharing one clock, one log root, one
//! run index, one sequence of connection numbers and the size limits.
//!
//! Data flow: the accept loop waits until one of the listeners has a client (and
//! fewer than `--max-connections` are in flight), takes the next connection
//! number, creates its log (`c con`; without a log if it cannot be created), and
//! hands it to a connection thread (`connection::serve`), which connects to its
//! forward's server (`s err` if it cannot), starts a second thread for
//! server-to-client, and itself pumps client-to-server (`relay::pump`). When both
//! directions are done the connection's line goes into the run index
//! ([`crate::index`]). A stop (SIGINT/SIGTERM/SIGHUP, or [`Stop::trigger`]) ends the
//! accept loop and reports the connections still open.

mod connection;
mod limits;
mod relay;
mod threads;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::{ForwardArg, RecordArgs};
use crate::index::IndexWriter;
use crate::log::{Clock, LogWriter, Side, log_path};
use crate::net::{Stop, bind};
use crate::process::say;
use crate::tls::Tls;
use connection::{Accepted, Conn};
use limits::Budget;
use threads::Threads;

/// How long the accept loop waits before retrying after a transient error, at
/// first and at most.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// How often a wait in the accept loop looks whether the run is stopping.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How long the accept loop waits for a client before it looks again. A stop
/// wakes it at once (shutting a listener down makes it readable); this is only
/// a safety net.
const POLL_TIMEOUT_MS: i32 = 1000;

/// How long an exit at once waits for records being written.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a stop waits for connections that are writing their index lines.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a connection of one forward needs to know: its server. The
/// run-wide settings are in [`Run`]; per-forward options (TLS, say) belong here.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server as the user named it, for messages and the index.
    pub upstream_name: String,
    /// The server's addresses, tried in order for each connection.
    pub upstream: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    /// The address this forward listens on (its real port, if 0 was asked for).
    pub listen: SocketAddr,
    /// TLS toward clients, the server, or both; `None` for plain TCP. The TLS
    /// options apply to every forward of the run, each with its own server name.
    pub(crate) tls: Option<Arc<Tls>>,
}

/// Totals of a run, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
}

/// One forward as the command line gives it, before anything is resolved.
struct Wanted {
    proxy_port: u16,
    host: String,
    port: u16,
}

/// `netrecord <server host> <server port> <proxy port> <log file root>
/// [--forward ...]`: checks everything that can be checked before listening (for
/// every forward), then records until a signal.
pub fn run(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    // clap guarantees the four positionals when no subcommand was given.
    let (Some(host), Some(port), Some(proxy_port), Some(root)) = (
        args.server_host.as_deref(),
        args.server_port,
        args.proxy_port,
        args.log_file_root.as_deref(),
    ) else {
        bail!("missing arguments: netrecord <server host> <server port> <proxy port> <log file root>");
    };
    check_log_dir(root)?;
    let wanted: Vec<Wanted> = std::iter::once(Wanted {
        proxy_port,
        host: host.to_string(),
        port,
    })
    .chain(args.forwards.iter().map(|f: &ForwardArg| Wanted {
        proxy_port: f.proxy_port,
        host: f.host.clone(),
        port: f.port,
    }))
    .collect();
    // Every name is resolved and every port bound before anything is created.
    let mut resolved = Vec::new();
    for w in &wanted {
        resolved.push(crate::net::resolve(&w.host, w.port)?);
    }
    let mut forwards: Vec<(TcpListener, Config)> = Vec::new();
    for (w, upstream) in wanted.iter().zip(resolved) {
        // Before the listener opens: with a minted certificate, the CA exists by
        // the time a client can connect, so it can be trusted first.
        let tls = Tls::from_args(
            &args.tls_listen,
            &args.tls_upstream,
            args.tls_keylog.as_deref(),
            &w.host,
            args.connect_timeout,
        )?
        .map(Arc::new);
        let listen = SocketAddr::new(args.listen, w.proxy_port);
        let listener = bind(listen).with_context(|| format!("could not listen on {listen}"))?;
        let local = listener.local_addr().context("could not read the listening address")?;
        let config = Config {
            upstream_name: crate::net::display_name(&w.host, w.port),
            upstream,
            connect_timeout: args.connect_timeout,
            listen: local,
            tls,
        };
        forwards.push((listener, config));
    }
    check_no_loop(&forwards)?;
    let index = IndexWriter::open(root)?;
    crate::process::raise_open_files_limit();
    // From here on no accepting or relaying thread may block on a stderr nobody reads.
    crate::process::queue_messages()?;

    let hint = if args.listen.is_loopback() {
        " (only this host can connect: use --listen 0.0.0.0 or --listen :: to accept from others)"
    } else {
        ""
    };
    for (i, (_, config)) in forwards.iter().enumerate() {
        let shown: Vec<String> = config.upstream.iter().map(SocketAddr::to_string).collect();
        let tls_words = config
            .tls
            .as_ref()
            .map(|t| format!("; {}", t.describe()))
            .unwrap_or_default();
        say!(
            "listening on {}{}, forwarding to {} ({}), logging to {}_N (index {}){tls_words}",
            config.listen,
            if i == 0 { hint } else { "" },
            config.upstream_name,
            shown.join(", "),
            root.display(),
            index.path().display()
        );
    }

    let run = Arc::new(Run {
        root: root.to_path_buf(),
        quiet: args.quiet,
        clock: Clock::start(),
        index,
        budget: Arc::new(Budget::new(args.max_log_bytes, args.max_run_bytes)),
        max_connections: args.max_connections,
        live: Mutex::new(HashMap::new()),
        left: Condvar::new(),
        waiting: AtomicUsize::new(0),
        polling: relay::Polling::new(),
        connections: AtomicU64::new(0),
        client_bytes: AtomicU64::new(0),
        server_bytes: AtomicU64::new(0),
    });
    let threads = Arc::new(Threads::default());
    let stop = Stop::new();
    let mut listeners = Vec::new();
    for (listener, config) in forwards {
        stop.attach(&listener)
            .context("could not prepare the listener for shutdown")?;
        let shared = Arc::new(Shared {
            config,
            run: Arc::clone(&run),
            threads: Arc::clone(&threads),
        });
        listeners.push((listener, shared));
    }
    let on_signal = stop.clone();
    let frozen = Arc::clone(&run);
    crate::process::on_stop_signals(
        move || on_signal.trigger(),
        move |signal| {
            frozen.freeze();
            crate::process::exit_now(signal)
        },
    )?;
    let totals = accept_loop(&listeners, &run, &stop);
    say!(
        "stopped after {} connection{}: {} bytes from clients, {} bytes from servers",
        totals.connections,
        if totals.connections == 1 { "" } else { "s" },
        totals.client_bytes,
        totals.server_bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// No forward's server may be one of the run's own listeners: a forward to itself
/// (or two forwards to each other) would make connections without end until the
/// descriptors run out.
fn check_no_loop(forwards: &[(TcpListener, Config)]) -> anyhow::Result<()> {
    for (_, config) in forwards {
        for (_, other) in forwards {
            if let Some(to) = config
                .upstream
                .iter()
                .find(|to| crate::net::reaches(**to, other.listen))
            {
                let whose = if std::ptr::eq(config, other) {
                    "its own listening address"
                } else {
                    "netrecord's listening address"
                };
                bail!(
                    "{} ({to}) is {whose} {}: it would forward every connection to itself",
                    config.upstream_name,
                    other.listen
                );
            }
        }
    }
    Ok(())
}

/// The log file root must name files in a directory that exists and is
/// writable, or no connection could be recorded.
fn check_log_dir(root: &Path) -> anyhow::Result<()> {
    // `/tmp` or `/tmp/` would log to `/tmp_N` or `/tmp/_N`: a directory given
    // where a file name prefix belongs.
    let bytes = root.as_os_str().as_encoded_bytes();
    if root.is_dir() || root.file_name().is_none() || bytes.ends_with(b"/") || bytes.ends_with(b"/.") {
        bail!(
            "log file root {} names a directory, not a file name prefix: give one, e.g. {} (logs are <root>_N)",
            root.display(),
            root.join("rec").display()
        );
    }
    let dir = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).with_context(|| format!("log directory {} does not exist", dir.display()))?;
    if !meta.is_dir() {
        bail!("log directory {} is not a directory", dir.display());
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

/// What every connection of a run shares, whichever forward it came through.
struct Run {
    /// Logs are `<root>_N`.
    root: PathBuf,
    /// No per-connection lines.
    quiet: bool,
    clock: Clock,
    index: IndexWriter,
    budget: Arc<Budget>,
    /// Connections in flight (not yet in the index) at most.
    max_connections: u64,
    /// Connections whose index line is not written yet: those in flight, and
    /// those to report at a stop.
    live: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Signalled whenever a connection leaves `live` while someone waits.
    left: Condvar,
    /// Threads waiting on `left`; changed only with `live` locked, so that a
    /// connection leaving sees every waiter (and wakes no one when none waits:
    /// a wake-up is a system call even then).
    waiting: AtomicUsize,
    /// When relay threads poll before they block (counts connections in flight).
    polling: relay::Polling,
    connections: AtomicU64,
    client_bytes: AtomicU64,
    server_bytes: AtomicU64,
}

/// The live set, locked.
type Live<'a> = MutexGuard<'a, HashMap<u64, Arc<Conn>>>;

/// What a connection thread is given: its forward, and the run.
struct Shared {
    config: Config,
    run: Arc<Run>,
    threads: Arc<Threads>,
}

impl Run {
    fn live(&self) -> Live<'_> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection whose index line is written out of the live set.
    fn forget(&self, n: u64) {
        let waiting = {
            let mut live = self.live();
            if live.remove(&n).is_some() {
                self.polling.ended();
            }
            self.waiting.load(Ordering::SeqCst)
        };
        if waiting > 0 {
            self.left.notify_all();
        }
    }

    /// Waits on `left` until a connection leaves or `timeout` passes.
    fn wait_left<'a>(&self, live: Live<'a>, timeout: Duration) -> Live<'a> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let live = self
            .left
            .wait_timeout(live, timeout)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        live
    }

    /// Waits while `--max-connections` are in flight; false if the run stops
    /// meanwhile. Clients that arrive meanwhile wait in the listen backlog.
    fn wait_for_room(&self, stop: &Stop) -> bool {
        let mut live = self.live();
        while live.len() as u64 >= self.max_connections {
            if stop.is_triggered() {
                return false;
            }
            live = self.wait_left(live, STOP_POLL);
        }
        !stop.is_triggered()
    }

    /// Before an exit at once: waits until no record and no index line is being
    /// written, and keeps it so, so that every log and the index end in whole
    /// records (within a bound: see [`connection::hold_forever`]).
    fn freeze(&self) {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        // Holding the live set first keeps a connection from starting meanwhile.
        let live = self.live();
        for conn in live.values() {
            conn.freeze(deadline);
        }
        connection::hold_forever(self.index.lock(), deadline);
        std::mem::forget(live);
    }

    /// Waits until every connection has its index line, or `within` has passed.
    fn wait_until_reported(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut live = self.live();
        while !live.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                say!(
                    "{} connections still had no index line when netrecord stopped",
                    live.len()
                );
                return;
            }
            live = self.wait_left(live, deadline - now);
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            connections: self.connections.load(Ordering::SeqCst),
            client_bytes: self.client_bytes.load(Ordering::SeqCst),
            server_bytes: self.server_bytes.load(Ordering::SeqCst),
        }
    }
}

/// Accepts and records connections on every forward's listener until `stop` is
/// triggered, then reports the connections still open and returns the run's
/// totals.
///
/// One thread accepts for all listeners (it waits with `poll`), so connection
/// numbers follow accept order across forwards, and the limit on connections in
/// flight is checked before each accept, with no overshoot.
fn accept_loop(listeners: &[(TcpListener, Arc<Shared>)], run: &Run, stop: &Stop) -> Totals {
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|(l, _)| libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    for (l, _) in listeners {
        // Readiness can go stale (a client that reset before its accept): then
        // accept must not block the other listeners.
        let _ = l.set_nonblocking(true);
    }
    let mut next = 1;
    let mut turn = 0;
    let mut backoff = Backoff::default();
    while run.wait_for_room(stop) {
        // A listener that was ready stays so (its `revents` kept) until its
        // accept finds no client waiting: under load the loop accepts without
        // polling in between.
        if fds.iter().all(|fd| fd.revents == 0) {
            // SAFETY: fds is a valid array of pollfd of the length given.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_TIMEOUT_MS) };
            if ready <= 0 {
                continue;
            }
        }
        // One accept per round, taking the listeners in turn, so that a busy
        // forward does not starve the others and the room check stays exact.
        let Some(i) = (0..fds.len())
            .map(|k| (turn + k) % fds.len())
            .find(|&i| fds[i].revents != 0)
        else {
            continue;
        };
        turn = i + 1;
        let (listener, shared) = &listeners[i];
        let accepted = listener.accept();
        if accepted.is_err() {
            fds[i].revents = 0;
        }
        match accepted {
            Ok((client, addr)) => {
                if let Some(pause) = backoff.recovered() {
                    say!("accepting again after {pause}");
                }
                match accept(shared, client, addr, &mut next) {
                    Ok(false) => {}
                    Ok(true) => thread::sleep(backoff.failed(None)),
                    Err(e) => {
                        say!("connection from {addr} dropped: {e:#}");
                        if is_resource_error(e.downcast_ref::<io::Error>()) {
                            thread::sleep(backoff.failed(None));
                        }
                    }
                }
            }
            Err(_) if stop.is_triggered() => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => thread::sleep(backoff.failed(Some(&e))),
        }
    }
    // Report what is still open: taking each connection's lock in `report` means
    // no record is half-written, and nothing more is recorded after it. A
    // connection that ended a moment ago may be writing its own line on its own
    // thread: wait for it, so that every connection has exactly one index line
    // and the summary counts its bytes.
    let open: Vec<Arc<Conn>> = run.live().values().cloned().collect();
    for conn in open {
        connection::report(run, &conn);
    }
    run.wait_until_reported(REPORT_TIMEOUT);
    run.totals()
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
                    say!("accept failed: {e}; retrying until it recovers");
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

/// Sets up one accepted client: its log, its `c con` record, its thread. A log
/// that cannot be created does not refuse the client: it is forwarded unrecorded,
/// keeps its number (the next connection gets the next one, so the index has no
/// gap and no number twice), and its index line says why. Returns whether the
/// log failed for want of descriptors or memory, so the loop backs off.
fn accept(shared: &Arc<Shared>, client: TcpStream, addr: SocketAddr, next: &mut u64) -> anyhow::Result<bool> {
    let run = &shared.run;
    let root = &run.root;
    let mut starved = false;
    let (n, path, log) = match run.budget.run_full() {
        // The run's size limit is reached: no new log, not even an empty one.
        Some(why) => {
            let n = *next;
            *next += 1;
            (n, log_path(root, n), Err(why))
        }
        None => match LogWriter::create_next(root, next) {
            Ok((n, log)) => (n, log.path().to_path_buf(), Ok(log)),
            Err(e) => {
                let n = *next;
                *next += 1;
                starved = is_resource_error(Some(&e));
                let path = log_path(root, n);
                let why = format!("failed to create log {}: {e}", path.display());
                (n, path, Err(why))
            }
        },
    };
    let who = Accepted {
        n,
        client: addr,
        // A listener on one address is that address; one on every address
        // (`0.0.0.0`, `::`) must ask which one the client reached.
        listen: if shared.config.listen.ip().is_unspecified() {
            client.local_addr().ok()
        } else {
            Some(shared.config.listen)
        },
        upstream_name: shared.config.upstream_name.clone(),
        log_path: path,
    };
    let conn = Arc::new(Conn::open(who, log, run.clock, Arc::clone(&run.budget)));
    run.connections.fetch_add(1, Ordering::SeqCst);
    let port = shared.config.listen.port();
    let name = &shared.config.upstream_name;
    match conn.log_error() {
        Some(why) => say!("#{n} from {addr} on port {port} for {name}, not recorded: {why}; forwarding it anyway"),
        None if !run.quiet => say!(
            "#{n} from {addr} on port {port} for {name}, logging to {}",
            conn.log_path.display()
        ),
        None => {}
    }
    run.live().insert(n, Arc::clone(&conn));
    run.polling.started();
    let (shared2, conn2) = (Arc::clone(shared), Arc::clone(&conn));
    let spawned = shared
        .threads
        .spawn(Box::new(move || connection::serve(&shared2, &conn2, client)));
    if let Err(e) = spawned {
        // The client stream went down with the closure: it is closed.
        conn.err(Side::Server, &e);
        connection::finish(shared, &conn);
        return Err(anyhow::Error::new(e).context("could not start a connection thread"));
    }
    Ok(starved)
}

//! The paths from a client to the upstream server: direct, through a netrecord
//! process that records every byte, and through two forwarders that record
//! nothing: socat (a process per connection) and haproxy (event-driven, `mode
//! tcp`, default settings). Each run starts a fresh proxy process and stops it by
//! its own handle; netrecord's logs are removed when the run's [`Stopped`] is
//! dropped.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a proxy may take to start listening, or to exit after SIGTERM.
const START_DEADLINE: Duration = Duration::from_secs(10);
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// How long netrecord may take to finish the connections the clients have closed
/// before it is stopped.
const SETTLE_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts at starting socat or haproxy on a port that another process may grab
/// first.
const LISTEN_ATTEMPTS: usize = 5;

/// One of the paths a scenario is driven through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    Netrecord,
    Socat,
    Haproxy,
    /// Another netrecord build (`--baseline`), to race a change against the code
    /// before it.
    Baseline,
}

impl Kind {
    /// Every path, in the order of the table's columns.
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::Netrecord,
        Kind::Socat,
        Kind::Haproxy,
        Kind::Baseline,
    ];

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Netrecord => "netrecord",
            Kind::Socat => "socat",
            Kind::Haproxy => "haproxy",
            Kind::Baseline => "baseline",
        }
    }

    /// Whether this path is a netrecord (which records, and is checked for it).
    pub fn records(self) -> bool {
        matches!(self, Kind::Netrecord | Kind::Baseline)
    }
}

/// What every run needs to start a proxy.
#[derive(Clone)]
pub struct Context {
    pub netrecord: PathBuf,
    /// The netrecord build of the baseline path.
    pub baseline: Option<PathBuf>,
    /// The bench's own temporary directory for logs (and haproxy's configuration).
    pub log_dir: PathBuf,
    /// Extra arguments for netrecord (the TLS options of the TLS scenarios).
    pub netrecord_args: Vec<std::ffi::OsString>,
    /// The TLS material, in the TLS scenarios.
    pub tls: Option<std::sync::Arc<crate::tls::Setup>>,
}

/// Whether `socat` can be run.
pub fn have_socat() -> bool {
    runs("socat", "-V")
}

/// Whether `haproxy` can be run.
pub fn have_haproxy() -> bool {
    runs("haproxy", "-v")
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A path ready for clients: `addr` is where they connect.
pub struct Running {
    pub addr: SocketAddr,
    proc: Proc,
}

enum Proc {
    None,
    Netrecord {
        child: Child,
        root: PathBuf,
        stderr: Option<thread::JoinHandle<Vec<String>>>,
        lines: Arc<ConnectionLines>,
    },
    Socat(Child),
    /// haproxy and its configuration file, removed when it stops.
    Haproxy(Child, PathBuf),
}

/// How many connections netrecord has said it accepted (`#N from`) and finished
/// (`#N ended`), counted by the thread that drains its stderr.
#[derive(Default)]
struct ConnectionLines {
    from: AtomicU64,
    ended: AtomicU64,
}

impl ConnectionLines {
    /// Waits until every connection netrecord accepted has ended: each scenario
    /// has closed its clients by the time it stops the proxy, and a connection
    /// that netrecord is still finishing when SIGTERM arrives may be missing from
    /// the totals of its summary line.
    fn settle(&self) {
        let start = Instant::now();
        while self.ended.load(Ordering::SeqCst) < self.from.load(Ordering::SeqCst) && start.elapsed() < SETTLE_DEADLINE
        {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// What a netrecord run left behind: its summary and its logs, which are removed
/// when this is dropped.
#[derive(Default)]
pub struct Stopped {
    /// Bytes netrecord says it recorded from clients and from servers.
    pub recorded: Option<(u64, u64)>,
    /// The connection logs (without the index).
    pub logs: Vec<PathBuf>,
    /// Other files of the run (the index).
    others: Vec<PathBuf>,
    /// What the proxy process used (netrecord and haproxy).
    pub usage: Option<Usage>,
    /// stderr lines that are neither the startup line nor per-connection lines.
    pub problems: Vec<String>,
}

impl Stopped {
    /// Total size of the connection logs.
    pub fn log_bytes(&self) -> u64 {
        self.logs
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for p in self.logs.iter().chain(&self.others) {
            let _ = fs::remove_file(p);
        }
    }
}

impl Running {
    /// Starts `kind` in front of `upstream`.
    pub fn start(kind: Kind, ctx: &Context, upstream: SocketAddr) -> Result<Running, String> {
        match kind {
            Kind::Direct => Ok(Running {
                addr: upstream,
                proc: Proc::None,
            }),
            Kind::Netrecord => start_netrecord(&ctx.netrecord, ctx, upstream),
            Kind::Baseline => match &ctx.baseline {
                Some(binary) => start_netrecord(binary, ctx, upstream),
                None => Err("no --baseline build given".into()),
            },
            Kind::Socat => start_socat(upstream),
            Kind::Haproxy => start_haproxy(ctx, upstream),
        }
    }

    /// The proxy's process id, if there is a proxy process.
    pub fn pid(&self) -> Option<u32> {
        match &self.proc {
            Proc::None => None,
            Proc::Netrecord { child, .. } | Proc::Socat(child) | Proc::Haproxy(child, _) => Some(child.id()),
        }
    }

    /// Stops the proxy and collects what it left behind.
    pub fn stop(mut self) -> Result<Stopped, String> {
        match std::mem::replace(&mut self.proc, Proc::None) {
            Proc::None => Ok(Stopped::default()),
            Proc::Socat(mut child) => {
                // socat forks a child per connection into its process group (made
                // its own at spawn): signal the whole group through the handle's pid.
                signal_group(&child, libc::SIGTERM);
                let exited = wait_deadline(&mut child);
                signal_group(&child, libc::SIGKILL);
                if !exited {
                    let _ = child.kill();
                }
                let _ = child.wait();
                Ok(Stopped::default())
            }
            Proc::Haproxy(mut child, config) => {
                // With -db haproxy is one process (threads, no workers): the
                // handle's pid is all of it. SIGTERM is its immediate stop.
                // SAFETY: kill only sends a signal to the child we spawned.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let (status, usage) = reap(&mut child);
                let _ = fs::remove_file(&config);
                let _ = fs::remove_file(config.with_extension("err"));
                if status.is_none() {
                    return Err(format!("haproxy did not exit within {STOP_DEADLINE:?} of SIGTERM"));
                }
                let mut stopped = Stopped::default();
                stopped.usage = usage;
                Ok(stopped)
            }
            Proc::Netrecord {
                mut child,
                root,
                stderr,
                lines,
            } => {
                lines.settle();
                // SAFETY: kill only sends a signal to the child we spawned.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let (status, usage) = reap(&mut child);
                let lines = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
                let mut stopped = collect_logs(&root);
                stopped.usage = usage;
                stopped.recorded = lines.iter().find_map(|l| parse_totals(l));
                stopped.problems = lines.into_iter().filter(|l| !l.contains("stopped after")).collect();
                let Some(status) = status else {
                    return Err(format!("netrecord did not exit within {STOP_DEADLINE:?} of SIGTERM"));
                };
                if !status.success() {
                    return Err(format!("netrecord exited with {status}: {:?}", stopped.problems));
                }
                Ok(stopped)
            }
        }
    }
}

impl Drop for Running {
    /// A run that failed halfway still stops its proxy.
    fn drop(&mut self) {
        match std::mem::replace(&mut self.proc, Proc::None) {
            Proc::None => {}
            Proc::Netrecord { mut child, root, .. } => {
                let _ = child.kill();
                let _ = child.wait();
                drop(collect_logs(&root));
            }
            Proc::Socat(mut child) => {
                signal_group(&child, libc::SIGKILL);
                let _ = child.wait();
            }
            Proc::Haproxy(mut child, config) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = fs::remove_file(&config);
                let _ = fs::remove_file(config.with_extension("err"));
            }
        }
    }
}

/// What a proxy process used over its whole life, all its threads included.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu: f64,
    /// Context switches, voluntary (it blocked) and involuntary (preempted).
    pub switches: u64,
}

/// Waits up to the stop deadline for the child to exit and reaps it with its
/// resource usage. `(None, None)` if it did not exit in time: then it is killed
/// and reaped without one.
fn reap(child: &mut Child) -> (Option<ExitStatus>, Option<Usage>) {
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    while start.elapsed() < STOP_DEADLINE {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into the two values passed, for our own child.
        match unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) } {
            0 => thread::sleep(Duration::from_millis(5)),
            n if n == pid => {
                let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                let usage = Usage {
                    cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
                    switches: (usage.ru_nvcsw + usage.ru_nivcsw) as u64,
                };
                return (Some(ExitStatus::from_raw(status)), Some(usage));
            }
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (None, None)
}

/// Polls for the child's exit until the stop deadline; true if it exited.
fn wait_deadline(child: &mut Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < STOP_DEADLINE {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(_) => return false,
        }
    }
    false
}

fn signal_group(child: &Child, sig: i32) {
    // SAFETY: the child was spawned as the leader of its own process group, so
    // -pid names exactly the processes it started.
    unsafe { libc::kill(-(child.id() as libc::pid_t), sig) };
}

static RUN: AtomicU64 = AtomicU64::new(0);

fn start_netrecord(binary: &Path, ctx: &Context, upstream: SocketAddr) -> Result<Running, String> {
    let root = ctx.log_dir.join(format!("run{}", RUN.fetch_add(1, Ordering::SeqCst)));
    let mut child = Command::new(binary)
        .arg(upstream.ip().to_string())
        .arg(upstream.port().to_string())
        .arg("0")
        .arg(&root)
        .args(&ctx.netrecord_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    let lines = Arc::new(ConnectionLines::default());
    let counts = Arc::clone(&lines);
    // Drains stderr for the whole run (a full pipe would stall netrecord), hands
    // the startup line over, counts the per-connection lines and keeps the others.
    let drain = thread::spawn(move || {
        let mut kept = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("netrecord: listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            } else if let Some(ended) = connection_line(&line) {
                let count = if ended { &counts.ended } else { &counts.from };
                count.fetch_add(1, Ordering::SeqCst);
            } else if kept.len() < 100 {
                kept.push(line);
            }
        }
        kept
    });
    let mut running = Running {
        addr: upstream,
        proc: Proc::Netrecord {
            child,
            root,
            stderr: Some(drain),
            lines,
        },
    };
    let line = rx
        .recv_timeout(START_DEADLINE)
        .map_err(|_| "netrecord did not print its listening line".to_string())?;
    running.addr = line["netrecord: listening on ".len()..]
        .split([' ', ','])
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("cannot read the address in {line:?}"))?;
    Ok(running)
}

/// `netrecord: #N from ...` (`Some(false)`) and `netrecord: #N ended ...`
/// (`Some(true)`).
fn connection_line(line: &str) -> Option<bool> {
    let (_, rest) = line.strip_prefix("netrecord: #")?.split_once(' ')?;
    if rest.starts_with("from ") {
        Some(false)
    } else if rest.starts_with("ended ") {
        Some(true)
    } else {
        None
    }
}

/// `netrecord: stopped after N connections: X bytes from clients, Y bytes from servers`.
fn parse_totals(line: &str) -> Option<(u64, u64)> {
    let rest = line
        .split_once("connections: ")
        .or_else(|| line.split_once("connection: "))?
        .1;
    let mut numbers = rest
        .split(' ')
        .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// The run's files: `<root>_N` logs and the index.
fn collect_logs(root: &Path) -> Stopped {
    let mut stopped = Stopped::default();
    let (Some(dir), Some(name)) = (root.parent(), root.file_name().and_then(|n| n.to_str())) else {
        return stopped;
    };
    let prefix = format!("{name}_");
    let Ok(entries) = fs::read_dir(dir) else { return stopped };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        if rest.bytes().all(|b| b.is_ascii_digit()) {
            stopped.logs.push(entry.path());
        } else {
            stopped.others.push(entry.path());
        }
    }
    stopped
}

/// socat listens on a port picked by binding port 0 and releasing it; another
/// process may take it in between, so a failed start is retried on a new port.
/// socat binds loopback only (`bind=127.0.0.1`), like everything in the bench, and
/// gets netrecord's listen backlog (`backlog=1024`; socat's default of 5 drops
/// connection attempts under load, which would measure a queue setting, not the
/// forwarding).
fn start_socat(upstream: SocketAddr) -> Result<Running, String> {
    let mut last = String::new();
    for _ in 0..LISTEN_ATTEMPTS {
        let port = free_port()?;
        let mut child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1,backlog=1024"))
            .arg(format!("TCP:{upstream}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run socat: {e}"))?;
        let start = Instant::now();
        while start.elapsed() < START_DEADLINE {
            if is_listening(port) {
                return Ok(Running {
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    proc: Proc::Socat(child),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                last = format!("socat on port {port} exited with {status}");
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        if last.is_empty() {
            last = format!("socat did not listen on port {port}");
        }
        signal_group(&child, libc::SIGKILL);
        let _ = child.wait();
    }
    Err(last)
}

/// haproxy's configuration: one `listen` section in `mode tcp` and haproxy's
/// defaults for everything else (threads, buffers, maxconn from the open-files
/// limit). Only the timeouts are set, because haproxy warns without them; they are
/// longer than any scenario's idle time. No `splice-auto`: it fails on loopback.
fn haproxy_config(port: u16, upstream: SocketAddr) -> String {
    format!(
        "defaults\n    \
         mode tcp\n    \
         timeout connect 10s\n    \
         timeout client 10m\n    \
         timeout server 10m\n\n\
         listen race\n    \
         bind 127.0.0.1:{port}\n    \
         server upstream {upstream}\n"
    )
}

/// A loopback port nobody listens on now (another process may take it before
/// the proxy binds it: the callers retry).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot pick a free port: {e}"))
}

/// haproxy in the foreground (`-db`), on a free port picked like socat's.
fn start_haproxy(ctx: &Context, upstream: SocketAddr) -> Result<Running, String> {
    let mut last = String::new();
    for _ in 0..LISTEN_ATTEMPTS {
        let port = free_port()?;
        let config = ctx
            .log_dir
            .join(format!("haproxy{}.cfg", RUN.fetch_add(1, Ordering::SeqCst)));
        let errors = config.with_extension("err");
        fs::write(&config, haproxy_config(port, upstream))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let stderr = fs::File::create(&errors).map_err(|e| format!("cannot create {}: {e}", errors.display()))?;
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run haproxy: {e}"))?;
        let start = Instant::now();
        last.clear();
        while start.elapsed() < START_DEADLINE {
            if is_listening(port) {
                return Ok(Running {
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    proc: Proc::Haproxy(child, config),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let said = fs::read_to_string(&errors).unwrap_or_default();
                last = format!("haproxy on port {port} exited with {status}: {}", said.trim());
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        if last.is_empty() {
            last = format!("haproxy did not listen on port {port}");
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_file(&config);
        let _ = fs::remove_file(&errors);
    }
    Err(last)
}

/// Whether something listens on 127.0.0.1:`port`, from /proc/net/tcp, without
/// connecting (a probe connection would reach the upstream through the proxy).
fn is_listening(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        fields.nth(1) == Some(local.as_str()) && fields.nth(1) == Some("0A")
    })
}

/// Peak resident memory (VmHWM, KiB) and thread count of a process.
pub fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("Threads:")?))
}

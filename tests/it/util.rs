//! Helpers shared by the integration tests: a netrecord process on a free loopback
//! port, small upstream servers, log reading, and waiting with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netrecord::log::{Event, ReadError, Reader, Side, Summary};

/// The built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_netrecord");

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or `DEADLINE` passes; panics naming `what`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A netrecord process recording into a temporary directory, stopped (SIGTERM,
/// then SIGKILL) by its own handle when dropped.
pub struct Proxy {
    child: Option<Child>,
    /// The proxy's listening address.
    pub addr: SocketAddr,
    /// The log file root: logs are `<root>_N`.
    pub root: PathBuf,
    /// Every stderr line so far.
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_done: Option<thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Proxy {
    /// Starts `netrecord <upstream ip> <upstream port> 0 <tmp>/rec` plus `extra`.
    pub fn start(upstream: SocketAddr, extra: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let mut proxy = Proxy::start_in(&upstream.ip().to_string(), upstream.port(), &root, extra, |_| {});
        proxy._dir = Some(dir);
        proxy
    }

    /// Starts netrecord with the given server host/port and log root; `setup` can
    /// adjust the command (e.g. resource limits) before it is spawned.
    pub fn start_in(host: &str, port: u16, root: &Path, extra: &[&str], setup: impl FnOnce(&mut Command)) -> Proxy {
        let mut cmd = Command::new(BIN);
        cmd.arg(host).arg(port.to_string()).arg("0").arg(root).args(extra);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("spawn netrecord");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&lines);
        let stderr_done = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on ") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("netrecord did not start: {:?}", lines.lock().unwrap());
            }
        };
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ',']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in startup line {line:?}"));
        Proxy {
            child: Some(child),
            addr,
            root: root.to_path_buf(),
            stderr: lines,
            stderr_done: Some(stderr_done),
            _dir: None,
        }
    }

    /// The path of connection `n`'s log.
    pub fn log(&self, n: u64) -> PathBuf {
        netrecord::log::log_path(&self.root, n)
    }

    /// The run index's path.
    pub fn index(&self) -> PathBuf {
        netrecord::index::index_path(&self.root)
    }

    /// The index entries written so far.
    pub fn entries(&self) -> Vec<netrecord::index::Entry> {
        if !self.index().exists() {
            return Vec::new();
        }
        netrecord::index::read_index(&self.index()).unwrap()
    }

    /// Waits until `n` connections have ended (have an index line).
    pub fn wait_ended(&self, n: usize) -> Vec<netrecord::index::Entry> {
        let mut entries = Vec::new();
        wait_until(&format!("{n} index lines"), || {
            entries = self.entries();
            entries.len() >= n
        });
        entries
    }

    /// A copy of the stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        signal(&child, libc::SIGKILL);
        wait_child(&mut child);
    }

    /// Sends SIGTERM and waits for the exit; returns the status and all of stderr.
    pub fn stop(self) -> (ExitStatus, Vec<String>) {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `sig` and waits for the exit; returns the status and all of stderr.
    pub fn stop_with(mut self, sig: i32) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().unwrap();
        signal(&child, sig);
        let status = wait_child(&mut child);
        if let Some(h) = self.stderr_done.take() {
            let _ = h.join();
        }
        (status, self.stderr())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `sig` to a child this test started.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill with a pid we own and a valid signal number.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Waits for a child to exit within the deadline, killing it if it does not.
pub fn wait_child(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("process {} did not exit in time", child.id());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback server that runs `handler` on a thread per connection. It stops
/// accepting when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    /// Binds 127.0.0.1:0 and serves every connection with `handler`.
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Upstream {
        Upstream::start_on("127.0.0.1:0", handler)
    }

    /// Binds `addr` (port 0) and serves every connection with `handler`.
    pub fn start_on(addr: &str, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                thread::spawn(move || handler(stream));
            }
        });
        Upstream { addr, stop }
    }

    /// An echo server: sends back everything it receives, and hangs up after the
    /// client does.
    pub fn echo() -> Upstream {
        Upstream::start(|mut s| {
            let mut r = s.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut s);
            let _ = s.shutdown(Shutdown::Write);
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Connects to `addr` with read and write timeouts of `DEADLINE`.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads until EOF.
pub fn read_all(mut s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// Reads exactly `n` bytes.
pub fn read_n(mut s: &TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    s.read_exact(&mut out).unwrap();
    out
}

/// Writes all of `data`.
pub fn send(mut s: &TcpStream, data: &[u8]) {
    s.write_all(data).unwrap();
}

/// A log read back: its records (side, event) and each side's payload bytes.
#[derive(Debug)]
pub struct Log {
    pub events: Vec<(Side, Event)>,
    pub client: Vec<u8>,
    pub server: Vec<u8>,
    pub summary: Summary,
    /// How reading ended: `None` for a clean end of whole records.
    pub error: Option<ReadError>,
}

impl Log {
    /// The events as a compact string, e.g. `"c con, c 5, s 5, c hup, s hup"`.
    pub fn shape(&self) -> String {
        self.events
            .iter()
            .map(|(side, e)| {
                let what = match e {
                    Event::Con => "con".to_string(),
                    Event::Data(n) => n.to_string(),
                    Event::Hup => "hup".into(),
                    Event::Err => "err".into(),
                };
                format!("{} {what}", side.letter())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The events with consecutive data records of one side merged into one, so
    /// tests do not depend on how the kernel split a stream into receives.
    pub fn merged_shape(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut last_data: Option<(Side, usize)> = None;
        for (side, e) in &self.events {
            match (e, last_data) {
                (Event::Data(n), Some((s, total))) if s == *side => {
                    out.pop();
                    last_data = Some((s, total + n));
                    out.push(format!("{} {}", side.letter(), total + n));
                }
                (Event::Data(n), _) => {
                    last_data = Some((*side, *n));
                    out.push(format!("{} {n}", side.letter()));
                }
                (e, _) => {
                    last_data = None;
                    let what = match e {
                        Event::Con => "con",
                        Event::Hup => "hup",
                        _ => "err",
                    };
                    out.push(format!("{} {what}", side.letter()));
                }
            }
        }
        out.join(", ")
    }
}

/// Reads a whole log file, keeping the error (if any) instead of panicking.
pub fn read_log(path: &Path) -> Log {
    let mut reader = Reader::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut log = Log {
        events: Vec::new(),
        client: Vec::new(),
        server: Vec::new(),
        summary: Summary::default(),
        error: None,
    };
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => {
                log.events.push((rec.side, rec.event));
                match rec.side {
                    Side::Client => log.client.extend_from_slice(reader.payload()),
                    Side::Server => log.server.extend_from_slice(reader.payload()),
                }
            }
            Ok(None) => break,
            Err(e) => {
                log.error = Some(e);
                break;
            }
        }
    }
    log.summary = reader.summary().clone();
    log
}

/// Reads a log that must be valid and whole.
pub fn valid_log(path: &Path) -> Log {
    let log = read_log(path);
    if let Some(e) = &log.error {
        panic!("{}: {e}", path.display());
    }
    log
}

/// Deterministic pseudo-random bytes (xorshift), so payloads are not compressible
/// patterns and a misplaced byte shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// SHA-256 of `data`, as hex, for comparing large transfers.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `::1` can be bound here.
pub fn have_ipv6() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Skips the calling test with a printed reason, or, when `NETRECORD_REQUIRE_TOOLS=1`
/// (CI sets it), fails it: CI installs every tool a test needs and runs as root,
/// so a skip there means a test that never ran.
pub fn skip(reason: &str) {
    if std::env::var_os("NETRECORD_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("cannot run: {reason} (NETRECORD_REQUIRE_TOOLS=1)");
    }
    eprintln!("skipping: {reason}");
}

/// Whether `tool` is on the PATH; tests print why they skip when it is not.
pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Records one exchange through a fresh proxy: the client sends `request`, shuts
/// down its write side and reads to EOF; the upstream replies with `reply` after
/// reading the whole request. Returns the proxy (stopped) root dir and log path.
pub fn record_exchange(request: &[u8], reply: &'static [u8]) -> (tempfile::TempDir, PathBuf) {
    let upstream = Upstream::start(move |s| {
        let _ = read_all(&s);
        send(&s, reply);
        let _ = s.shutdown(Shutdown::Write);
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    let client = connect(proxy.addr);
    send(&client, request);
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), reply);
    proxy.wait_ended(1);
    let log = proxy.log(1);
    let (status, _) = proxy.stop();
    assert!(status.success());
    (dir, log)
}

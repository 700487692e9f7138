//! `make demo`: a self-contained recording on loopback.
//!
//! Starts a small line-protocol server in-process, runs this very binary as the
//! recording proxy in front of it (exactly as a user would, with the four
//! positionals), sends a short exchange through it, stops the proxy with SIGTERM,
//! and prints what was recorded. Needs no network and no other program.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long any step of the demo may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs the demo and leaves its recording in a fresh directory under the system's
/// temporary directory.
pub fn run() -> anyhow::Result<ExitCode> {
    let server = TcpListener::bind("127.0.0.1:0").context("could not start the demo server")?;
    let server_addr = server.local_addr()?;
    thread::spawn(move || {
        for stream in server.incoming().flatten() {
            thread::spawn(move || serve_kv(stream));
        }
    });

    let dir = std::env::temp_dir().join(format!("netrecord-demo-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let root = dir.join("demo");
    let exe = std::env::current_exe().context("could not find the netrecord binary")?;
    println!("A tiny key-value server listens on {server_addr}. Recording it:\n");
    println!("$ netrecord 127.0.0.1 {} 0 {}", server_addr.port(), root.display());
    let mut proxy = Proxy::spawn(&exe, server_addr, &root)?;

    println!("\nA client talks to the server through netrecord on {}:", proxy.addr);
    let result = talk(proxy.addr);
    let index = crate::index::index_path(&root);
    let ended = wait_for(|| std::fs::metadata(&index).is_ok_and(|m| m.len() > 0));
    proxy.stop();
    result?;
    if !ended {
        bail!("the connection did not end in time");
    }

    let log = crate::log::log_path(&root, 1);
    println!("\nThe recording, {} (the format is in README.md):\n", log.display());
    let bytes = std::fs::read(&log).with_context(|| format!("failed to read log {}", log.display()))?;
    std::io::stdout().write_all(&bytes)?;
    println!("\nThe run index, {}:\n", index.display());
    print!("{}", std::fs::read_to_string(&index)?);
    println!(
        "\nThe same recording, as a person reads it:\n\n$ netrecord show {}",
        log.display()
    );
    let options = crate::show::Options {
        hex: false,
        side: None,
        color: false,
    };
    crate::show::render(bytes.as_slice(), &mut std::io::stdout().lock(), &options)?;
    println!("\nThe recording stays in {} for you to explore.", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Sends a few commands and prints each request and reply.
fn talk(addr: SocketAddr) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("could not connect to {addr}"))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    let mut replies = BufReader::new(stream.try_clone()?);
    for request in ["PING", "SET greeting hello", "GET greeting"] {
        (&stream).write_all(format!("{request}\r\n").as_bytes())?;
        let mut reply = String::new();
        replies.read_line(&mut reply)?;
        println!("  > {request}\n  < {}", reply.trim_end());
    }
    // Half-close: the server says goodbye only after it sees the client's EOF.
    stream.shutdown(Shutdown::Write)?;
    let mut rest = String::new();
    replies.read_to_string(&mut rest)?;
    println!("  (client hangs up)\n  < {}", rest.trim_end());
    Ok(())
}

/// The demo server: `PING`, `SET k v`, `GET k`, one command per line; `+BYE` at EOF.
fn serve_kv(stream: TcpStream) {
    let mut store = std::collections::HashMap::new();
    let Ok(reader) = stream.try_clone() else { return };
    let mut out = &stream;
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { return };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["PING"] => "+PONG".to_string(),
            ["SET", k, v] => {
                store.insert(k.to_string(), v.to_string());
                "+OK".into()
            }
            ["GET", k] => store.get(*k).map_or("$-1".into(), |v| format!("${v}")),
            _ => "-ERR unknown command".into(),
        };
        if out.write_all(format!("{reply}\r\n").as_bytes()).is_err() {
            return;
        }
    }
    let _ = out.write_all(b"+BYE\r\n");
}

/// The proxy child process.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    /// The thread echoing the proxy's stderr; joined at stop so its last lines
    /// print before the recording does.
    echo: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn spawn(exe: &Path, server: SocketAddr, root: &Path) -> anyhow::Result<Proxy> {
        let mut child = Command::new(exe)
            .arg(server.ip().to_string())
            .arg(server.port().to_string())
            .arg("0")
            .arg(root)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start netrecord")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        // Echo the proxy's own lines, indented, and pick the port from the first.
        let echo = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                println!("  {line}");
                let addr = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split([' ', ',']).next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(addr) => Ok(Proxy {
                child,
                addr,
                echo: Some(echo),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("netrecord did not start")
            }
        }
    }

    /// SIGTERM, as a user's Ctrl-C would, then wait for the summary line.
    fn stop(&mut self) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if !wait_for(|| self.child.try_wait().is_ok_and(|s| s.is_some())) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
    }
}

/// Polls `cond` until it holds or the deadline passes.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

//! Tests of `netrecord replay-server` and `replay-client`: sessions recorded through
//! the proxy, then replayed over loopback against fresh clients and live servers.

use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::*;

/// A netrecord replay process with its stdout and stderr collected line by line,
/// killed by its own handle if a test ends without waiting for it.
pub(crate) struct Run {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// What a finished run left behind.
pub(crate) struct Done {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<String>,
    pub(crate) stderr: Vec<String>,
}

impl Done {
    pub(crate) fn stdout_has(&self, text: &str) -> bool {
        self.stdout.iter().any(|l| l.contains(text))
    }
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netrecord");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Run {
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// Starts `replay-server <log> 0 <extra>` and waits for its startup line.
    pub(crate) fn server(log: &Path, extra: &[&str]) -> (Run, SocketAddr) {
        Run::server_of(&[log], extra)
    }

    /// Starts `replay-server <logs> 0 <extra>` and waits for its startup line.
    fn server_of(logs: &[&Path], extra: &[&str]) -> (Run, SocketAddr) {
        let mut args = vec!["replay-server"];
        args.extend(logs.iter().map(|l| l.to_str().unwrap()));
        args.push("0");
        args.extend_from_slice(extra);
        let mut run = Run::start(&args);
        let mut addr = None;
        wait_until("the replay-server startup line", || {
            addr = run.stderr.lock().unwrap().iter().find_map(|l| {
                l.split("listening on ")
                    .nth(1)?
                    .split([' ', ','])
                    .next()?
                    .parse::<SocketAddr>()
                    .ok()
            });
            if addr.is_none() && run.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                panic!("replay-server exited: {:?}", run.stderr.lock().unwrap());
            }
            addr.is_some()
        });
        (run, addr.unwrap())
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits (within the deadline) for the process to exit by itself.
    pub(crate) fn finish(mut self) -> Done {
        let mut child = self.child.take().unwrap();
        let status = wait_child(&mut child);
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Done {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }

    /// Sends SIGTERM, then waits for the exit.
    fn terminate(self) -> Done {
        signal(self.child.as_ref().unwrap(), libc::SIGTERM);
        self.finish()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect(pipe: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    })
}

/// Runs `netrecord <args>` to its end.
pub(crate) fn netrecord(args: &[&str]) -> Done {
    Run::start(args).finish()
}

fn replay_client(log: &Path, server: SocketAddr, extra: &[&str]) -> Done {
    let port = server.port().to_string();
    let mut args = vec!["replay-client", log.to_str().unwrap(), "127.0.0.1", &port];
    args.extend_from_slice(extra);
    netrecord(&args)
}

/// Records one connection through a fresh proxy to `upstream`: `client` drives
/// it, and must end the exchange. Returns the temporary directory and the log.
fn record(upstream: &Upstream, client: impl FnOnce(&TcpStream)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    let stream = connect(proxy.addr);
    client(&stream);
    drop(stream);
    proxy.wait_ended(1);
    let log = proxy.log(1);
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    (dir, log)
}

/// Reads until the peer closes, counting a reset as a close.
fn read_until_closed(mut s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A line server in the manner of Redis: answers each `\r\n`-terminated line with
/// `answer(line)`, and hangs up after the client does.
fn line_server(answer: fn(&[u8]) -> &'static [u8]) -> Upstream {
    Upstream::start(move |s| {
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            send(&s, answer(&line));
            line.clear();
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

fn redis(line: &[u8]) -> &'static [u8] {
    match line {
        b"PING\r\n" => b"+PONG\r\n",
        b"GET k\r\n" => b"$5\r\nhello\r\n",
        _ => b"-ERR unknown\r\n",
    }
}

/// The same server after a change: PING answers differently.
fn changed_redis(line: &[u8]) -> &'static [u8] {
    match line {
        b"PING\r\n" => b"+PANG\r\n",
        other => redis(other),
    }
}

/// A recording of `PING` and `GET k` against [`redis`], with the server kept.
fn redis_session() -> (Upstream, tempfile::TempDir, PathBuf) {
    let upstream = line_server(redis);
    let (dir, log) = record(&upstream, |s| {
        send(s, b"PING\r\n");
        assert_eq!(read_n(s, 7), b"+PONG\r\n");
        send(s, b"GET k\r\n");
        assert_eq!(read_n(s, 11), b"$5\r\nhello\r\n");
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(s), b"");
    });
    (upstream, dir, log)
}

#[test]
fn replay_server_answers_a_fresh_client_as_recorded() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let recorded = valid_log(&log);
    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    client.set_nodelay(true).unwrap();
    // Chunks unlike the recorded ones: the replay compares streams.
    for chunk in recorded.client.chunks(3) {
        send(&client, chunk);
    }
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), recorded.server);
    let done = server.finish();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    assert!(done.stdout_has("#1 "), "{:?}", done.stdout);
    assert!(done.stdout_has("matched the recording"), "{:?}", done.stdout);
    assert!(done.stdout_has("served 1 client: 1 matched"), "{:?}", done.stdout);
}

#[test]
fn replay_client_matches_the_original_server() {
    let (upstream, _dir, log) = redis_session();
    let done = replay_client(&log, upstream.addr, &[]);
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout
            .last()
            .unwrap()
            .ends_with(": matched; sent 13 client bytes, received 18 server bytes"),
        "{:?}",
        done.stdout
    );
    // Keeping the recorded gaps changes the pace, not the result.
    let done = replay_client(&log, upstream.addr, &["--timing", "original"]);
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
}

#[test]
fn replay_client_reports_where_a_changed_server_differs() {
    let (_upstream, _dir, log) = redis_session();
    let changed = line_server(changed_redis);
    let done = replay_client(&log, changed.addr, &[]);
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    // "+PONG" against "+PANG": the server's byte 2 is the first to differ.
    assert!(
        done.stdout_has("server stream differs at offset 2"),
        "{:?}",
        done.stdout
    );
    assert!(done.stdout_has(r#"expected "ONG\r\n"#), "{:?}", done.stdout);
    assert!(done.stdout_has(r#"got "ANG\r\n"#), "{:?}", done.stdout);
    // Stopped at the first difference: the verdict ends the report.
    assert!(
        done.stdout
            .last()
            .unwrap()
            .contains(": 1 difference; sent 6 of 13 client bytes, received 7 of 18 server bytes"),
        "{:?}",
        done.stdout
    );
}

/// A protocol where the server speaks first: a greeting, then one command.
fn greeting_server() -> Upstream {
    Upstream::start(|s| {
        send(&s, b"220 ready\r\n");
        let mut line = Vec::new();
        let _ = BufReader::new(s.try_clone().unwrap()).read_until(b'\n', &mut line);
        if line == b"QUIT\r\n" {
            send(&s, b"221 bye\r\n");
        }
        let _ = s.shutdown(Shutdown::Write);
        let _ = read_all(&s);
    })
}

fn greeting_session(upstream: &Upstream) -> (tempfile::TempDir, PathBuf) {
    record(upstream, |s| {
        assert_eq!(read_n(s, 11), b"220 ready\r\n");
        send(s, b"QUIT\r\n");
        assert_eq!(read_all(s), b"221 bye\r\n");
    })
}

#[test]
fn a_server_first_greeting_is_sent_before_the_client_speaks() {
    let upstream = greeting_server();
    let (_dir, log) = greeting_session(&upstream);
    let done = replay_client(&log, upstream.addr, &[]);
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);

    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    // The client waits for the greeting before it sends anything.
    assert_eq!(read_n(&client, 11), b"220 ready\r\n");
    send(&client, b"QUIT\r\n");
    assert_eq!(read_all(&client), b"221 bye\r\n");
    drop(client);
    let done = server.finish();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
}

#[test]
fn a_client_half_close_is_replayed_as_a_half_close() {
    // The server answers only once the client has closed its sending half.
    let upstream = Upstream::start(|s| {
        let request = read_all(&s);
        send(&s, format!("got {} bytes\n", request.len()).as_bytes());
        let _ = s.shutdown(Shutdown::Write);
    });
    let (_dir, log) = record(&upstream, |s| {
        send(s, b"request");
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(s), b"got 7 bytes\n");
    });
    assert_eq!(valid_log(&log).shape(), "c con, c 7, c hup, s 12, s hup");
    // replay-client must half-close too, or this server never answers.
    let done = replay_client(&log, upstream.addr, &["--timeout", "5"]);
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);

    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    send(&client, b"request");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"got 7 bytes\n");
    let done = server.finish();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
}

#[test]
fn a_server_half_close_is_replayed_as_a_half_close() {
    // The server says goodbye and closes its sending half; the client goes on
    // sending after that, and the server still reads it.
    let upstream = Upstream::start(|s| {
        let _ = read_n(&s, 5);
        send(&s, b"bye");
        let _ = s.shutdown(Shutdown::Write);
        let _ = read_all(&s);
    });
    let (_dir, log) = record(&upstream, |s| {
        send(s, b"hello");
        assert_eq!(read_all(s), b"bye");
        send(s, b"more");
        s.shutdown(Shutdown::Write).unwrap();
    });
    assert_eq!(valid_log(&log).shape(), "c con, c 5, s 3, s hup, c 4, c hup");

    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    send(&client, b"hello");
    // EOF here, while the connection still carries what the client sends next.
    assert_eq!(read_all(&client), b"bye");
    send(&client, b"more");
    client.shutdown(Shutdown::Write).unwrap();
    let done = server.finish();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    assert!(done.stdout_has("received 9 bytes, sent 3 bytes"), "{:?}", done.stdout);
}

#[test]
fn a_client_that_differs_gets_the_offset_reported_and_exit_1() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let recorded = valid_log(&log);
    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    client.set_nodelay(true).unwrap();
    // One byte at a time: the report does not depend on how the stream is split.
    for byte in b"PING\r\nGET x\r\n" {
        send(&client, &[*byte]);
    }
    client.shutdown(Shutdown::Write).unwrap();
    // By default the replay goes on with the recorded answers.
    assert_eq!(read_all(&client), recorded.server);
    let done = server.finish();
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout_has("client stream differs at offset 10"),
        "{:?}",
        done.stdout
    );
    assert!(
        done.stdout_has(r#"expected "k\r\n" (6b 0d 0a), got "x\r\n" (78 0d 0a)"#),
        "{:?}",
        done.stdout
    );
    assert!(
        done.stdout_has("served 1 client: 0 matched the recording, 1 did not"),
        "{:?}",
        done.stdout
    );
}

#[test]
fn strict_closes_the_connection_at_the_first_mismatch() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let (server, addr) = Run::server(&log, &["--strict"]);
    let client = connect(addr);
    send(&client, b"PONG\r\n");
    // The recorded answer to PING is never sent: the connection closes instead.
    assert_eq!(read_until_closed(&client), b"");
    let done = server.finish();
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout_has("client stream differs at offset 1"),
        "{:?}",
        done.stdout
    );
    assert!(done.stdout_has("sent 0 of 18"), "{:?}", done.stdout);
}

#[test]
fn a_corrupt_or_missing_log_is_an_error_before_listening_or_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt");
    std::fs::write(&corrupt, b"this is not a log\n").unwrap();
    let corrupt_str = corrupt.to_str().unwrap();

    let done = netrecord(&["replay-server", corrupt_str, "0"]);
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(done.stderr.len(), 1, "{:?}", done.stderr);
    assert!(
        done.stderr[0].starts_with(&format!(
            "netrecord: log {corrupt_str} is not a valid recording: corrupt record at byte 0"
        )),
        "{:?}",
        done.stderr
    );

    let missing = dir.path().join("missing");
    let done = netrecord(&["replay-server", missing.to_str().unwrap(), "0"]);
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(done.stderr.len(), 1, "{:?}", done.stderr);
    assert!(
        done.stderr[0].starts_with("netrecord: failed to open log "),
        "{:?}",
        done.stderr
    );

    // replay-client checks the log before it connects: the listener sees no one.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let done = replay_client(&corrupt, listener.local_addr().unwrap(), &[]);
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stderr[0].contains("is not a valid recording"), "{:?}", done.stderr);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "replay-client connected with a corrupt log");
}

#[test]
fn a_refused_connection_is_a_one_line_error() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let done = replay_client(&log, closed, &[]);
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stdout.is_empty(), "{:?}", done.stdout);
    assert_eq!(done.stderr.len(), 1, "{:?}", done.stderr);
    assert!(
        done.stderr[0].starts_with(&format!("netrecord: could not connect to {closed}: ")),
        "{:?}",
        done.stderr
    );
    assert!(done.stderr[0].to_lowercase().contains("refused"), "{:?}", done.stderr);
}

#[test]
fn replay_client_gives_up_on_a_silent_server() {
    let (_upstream, _dir, log) = redis_session();
    // Reads everything, answers nothing.
    let silent = Upstream::start(|s| {
        let _ = read_all(&s);
    });
    let done = replay_client(&log, silent.addr, &["--timeout", "0.3"]);
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout_has("server sent nothing for 0.3s at offset 0"),
        "{:?}",
        done.stdout
    );
}

#[test]
fn a_cut_short_log_replays_what_it_has() {
    let upstream = greeting_server();
    let (_dir, log) = greeting_session(&upstream);
    assert_eq!(valid_log(&log).shape(), "c con, s 11, c 6, s 9, s hup, c hup");
    // Cut into the last record's header, as a killed recorder would leave it.
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() - 3]).unwrap();

    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    assert_eq!(read_n(&client, 11), b"220 ready\r\n");
    send(&client, b"QUIT\r\n");
    assert_eq!(read_all(&client), b"221 bye\r\n");
    let done = server.finish();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("is cut short") && l.contains("replaying the 5 whole records")),
        "{:?}",
        done.stderr
    );
}

/// Serves `log` with `--loop` to one client per request, each sending its request
/// and a half-close; stops the server with SIGTERM once every client has been
/// reported, and returns the server's result and what each client received.
fn serve_in_a_loop(log: &Path, requests: &[&[u8]]) -> (Done, Vec<Vec<u8>>) {
    let (server, addr) = Run::server(log, &["--loop"]);
    let mut received = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let n = i + 1;
        let client = connect(addr);
        send(&client, request);
        client.shutdown(Shutdown::Write).unwrap();
        received.push(read_all(&client));
        wait_until(&format!("client {n}'s report"), || {
            server.stdout().iter().any(|l| l.starts_with(&format!("#{n} ")))
        });
    }
    (server.terminate(), received)
}

#[test]
fn loop_serves_each_client_until_a_signal() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let recorded = valid_log(&log);
    let (done, received) = serve_in_a_loop(&log, &[&recorded.client, &recorded.client]);
    for (n, got) in received.iter().enumerate() {
        assert_eq!(got, &recorded.server, "client {}", n + 1);
    }
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout_has("served 2 clients: 2 matched the recording, 0 did not"),
        "{:?}",
        done.stdout
    );
}

#[test]
fn loop_exit_status_counts_every_client_served() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let recorded = valid_log(&log);
    let (done, _) = serve_in_a_loop(&log, &[&recorded.client, b"PING\r\nGET x\r\n"]);
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout_has("served 2 clients: 1 matched the recording, 1 did not"),
        "{:?}",
        done.stdout
    );
}

#[test]
fn large_streams_compare_whatever_the_chunks() {
    let upstream = Upstream::echo();
    let data = pattern(1 << 20, 7);
    let (_dir, log) = record(&upstream, |s| {
        let writer = s.try_clone().unwrap();
        let sent = data.clone();
        let t = thread::spawn(move || {
            send(&writer, &sent);
            writer.shutdown(Shutdown::Write).unwrap();
        });
        assert_eq!(sha256(&read_all(s)), sha256(&data));
        t.join().unwrap();
    });
    let recorded = valid_log(&log);
    assert_eq!(recorded.client.len(), 1 << 20);

    let done = replay_client(&log, upstream.addr, &[]);
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);

    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    let writer = client.try_clone().unwrap();
    let sent = data.clone();
    let t = thread::spawn(move || {
        for chunk in sent.chunks(1000) {
            send(&writer, chunk);
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    assert_eq!(sha256(&read_all(&client)), sha256(&recorded.server));
    t.join().unwrap();
    let done = server.finish();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
}

#[test]
fn a_directory_given_as_a_log_is_one_clean_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    for args in [
        vec!["replay-client", path, "127.0.0.1", &port],
        vec!["replay-server", path, "0"],
    ] {
        let done = netrecord(&args);
        assert_eq!(done.status.code(), Some(1), "{args:?}: {:?}", done.stderr);
        assert_eq!(done.stderr.len(), 1, "{args:?}: {:?}", done.stderr);
        let line = &done.stderr[0];
        assert_eq!(line.to_lowercase().matches("directory").count(), 1, "{args:?}: {line}");
        assert_eq!(line, &format!("netrecord: {path} is a directory, not a log"));
    }
}

#[test]
fn replay_messages_count_one_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    // One whole record, then a header cut short.
    let cut = dir.path().join("cut_1");
    std::fs::write(&cut, b"c 0.000001 con\nc 0.0000").unwrap();
    let (server, addr) = Run::server(&cut, &[]);
    drop(connect(addr));
    let done = server.finish();
    assert!(
        done.stderr
            .iter()
            .any(|l| l.ends_with("replaying the 1 whole record before it")),
        "{:?}",
        done.stderr
    );
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("(0 bytes to expect from each client, 0 bytes to send)")),
        "{:?}",
        done.stderr
    );

    // One byte each way.
    let one = dir.path().join("one_1");
    std::fs::write(
        &one,
        b"c 0.000001 con\nc 0.000002 1\nxs 0.000003 1\nyc 0.000004 hup\ns 0.000005 hup\n",
    )
    .unwrap();
    let (server, addr) = Run::server(&one, &[]);
    assert!(server.stderr.lock().unwrap()[0].contains("(1 byte to expect from each client, 1 byte to send)"));
    let client = connect(addr);
    send(&client, b"x");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"y");
    let done = server.finish();
    assert!(done.stdout_has("received 1 byte, sent 1 byte"), "{:?}", done.stdout);
    assert!(done.stdout_has("served 1 client: "), "{:?}", done.stdout);
}

/// The peak resident memory of a running process, in bytes (Linux's VmHWM).
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_large_record_is_held_once_in_memory() {
    const LARGE: usize = 128 << 20;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("large_1");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        write!(file, "c 0.000001 con\nc 0.000002 5\nhellos 0.000003 {LARGE}\n").unwrap();
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..LARGE / chunk.len() {
            file.write_all(&chunk).unwrap();
        }
        file.write_all(b"c 0.000004 hup\ns 0.000005 hup\n").unwrap();
    }
    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    send(&client, b"hello");
    let reply = read_n(&client, LARGE);
    assert!(reply.iter().all(|&b| b == b'z'));
    // Loaded and sent: the record must have been in memory once, not twice
    // (the reader's copy and the script's), with room for the program itself.
    let peak = peak_memory(server.child.as_ref().unwrap().id());
    assert!(
        peak < (LARGE + LARGE / 2) as u64,
        "replay-server peaked at {} MiB for a {} MiB record",
        peak >> 20,
        LARGE >> 20
    );
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"");
    let done = server.finish();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
}

/// Records one connection per request through a fresh proxy to `upstream`: each
/// client sends its request, half-closes and reads to the end. Returns the
/// temporary directory and the logs, in connection order.
fn record_run(upstream: &Upstream, requests: &[&[u8]]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    for (i, request) in requests.iter().enumerate() {
        let client = connect(proxy.addr);
        send(&client, request);
        client.shutdown(Shutdown::Write).unwrap();
        read_all(&client);
        drop(client);
        proxy.wait_ended(i + 1);
    }
    let logs = (1..=requests.len() as u64).map(|n| proxy.log(n)).collect();
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    (dir, logs)
}

/// Three requests answered one way, and a changed server that answers each of
/// them differently.
fn abc(line: &[u8]) -> &'static [u8] {
    match line {
        b"A\r\n" => b"+a1\r\n",
        b"B\r\n" => b"+b1\r\n",
        b"C\r\n" => b"+c1\r\n",
        _ => b"-ERR unknown\r\n",
    }
}

fn changed_abc(line: &[u8]) -> &'static [u8] {
    match line {
        b"A\r\n" => b"+a2\r\n",
        b"B\r\n" => b"+b2\r\n",
        b"C\r\n" => b"+c2\r\n",
        _ => b"-ERR unknown\r\n",
    }
}

#[test]
fn keep_going_reports_every_difference_and_replays_on() {
    let upstream = line_server(abc);
    let (_dir, log) = record(&upstream, |s| {
        for (request, reply) in [(b"A\r\n", b"+a1\r\n"), (b"B\r\n", b"+b1\r\n"), (b"C\r\n", b"+c1\r\n")] {
            send(s, request);
            assert_eq!(read_n(s, 5), reply);
        }
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(s), b"");
    });
    let changed = line_server(changed_abc);

    // By default the replay stops at the first difference.
    let done = replay_client(&log, changed.addr, &[]);
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert_eq!(done.stdout.len(), 2, "{:?}", done.stdout);
    assert!(
        done.stdout[0].contains("server stream differs at offset 2:"),
        "{:?}",
        done.stdout
    );

    let done = replay_client(&log, changed.addr, &["--keep-going"]);
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    // Each reply differs at its third byte: offsets 2, 7 and 12 of the server's stream.
    for (line, offset) in done.stdout.iter().zip([2, 7, 12]) {
        assert!(
            line.contains(&format!("server stream differs at offset {offset}: expected \"")),
            "{:?}",
            done.stdout
        );
    }
    assert_eq!(done.stdout.len(), 4, "{:?}", done.stdout);
    // Every recorded request went out: the server received all of them.
    assert!(
        done.stdout[3].ends_with(": 3 differences; sent 9 client bytes, received 15 server bytes"),
        "{:?}",
        done.stdout
    );

    let done = replay_client(&log, changed.addr, &["--keep-going", "--max-differences", "2"]);
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(done.stdout.len(), 4, "{:?}", done.stdout);
    assert!(
        done.stdout[2].ends_with("... and 1 more difference, not shown"),
        "{:?}",
        done.stdout
    );
    assert!(done.stdout[3].contains(": 3 differences;"), "{:?}", done.stdout);

    // Against the recorded server, --keep-going changes nothing.
    let done = replay_client(&log, upstream.addr, &["--keep-going"]);
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    assert!(done.stdout[0].contains(": matched; "), "{:?}", done.stdout);
}

#[test]
fn replay_server_answers_a_shorter_different_request_before_the_timeout() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let (server, addr) = Run::server(&log, &["--timeout", "10"]);
    let client = connect(addr);
    send(&client, b"PING\r\n");
    assert_eq!(read_n(&client, 7), b"+PONG\r\n");
    // Shorter than the recorded `GET k\r\n`, and different.
    let asked = Instant::now();
    send(&client, b"GET\r\n");
    assert_eq!(read_n(&client, 11), b"$5\r\nhello\r\n");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "answered only after the timeout"
    );
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"");
    let done = server.finish();
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout_has(r#"#1 127.0.0.1:"#) && done.stdout_has(": 1 difference: client stream differs at offset 9:"),
        "{:?}",
        done.stdout
    );
    assert!(
        done.stdout_has("; received 11 of 13 bytes; sent 18 of 18 bytes"),
        "{:?}",
        done.stdout
    );
}

#[test]
fn replay_server_reports_bytes_beyond_the_recording() {
    let (upstream, _dir, log) = redis_session();
    drop(upstream);
    let (server, addr) = Run::server(&log, &[]);
    let client = connect(addr);
    // Two bytes longer than the recorded 13, sent at once: answered at once.
    send(&client, b"PING\r\nGET kk\r\n");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"+PONG\r\n$5\r\nhello\r\n");
    let done = server.finish();
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(
        done.stdout_has("client sent 14 bytes, recording has 13"),
        "{:?}",
        done.stdout
    );
}

#[test]
fn replay_server_masks_the_client_stream() {
    let (_dir, log) = record_exchange(b"LOGIN id=123 now\r\n", b"+OK\r\n");
    for (mask, verdict) in [
        (None, "1 difference"),
        (Some("id=[0-9]+"), "matched the recording with 1 masked span"),
    ] {
        let extra: Vec<&str> = mask.iter().flat_map(|m| ["--mask", m]).collect();
        let (server, addr) = Run::server(&log, &extra);
        let client = connect(addr);
        send(&client, b"LOGIN id=98765 now\r\n");
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&client), b"+OK\r\n");
        let done = server.finish();
        assert_eq!(done.status.success(), mask.is_some(), "{:?}", done.stdout);
        assert!(done.stdout_has(&format!(": {verdict}")), "{mask:?}: {:?}", done.stdout);
    }
}

#[test]
fn replay_client_over_a_run_reports_one_line_per_log() {
    let upstream = line_server(abc);
    let (dir, logs) = record_run(&upstream, &[b"A\r\n", b"B\r\n", b"C\r\n"]);
    // As a shell glob gives them: the index too, and not in connection order.
    let mut args: Vec<String> = logs.iter().rev().map(|l| l.to_str().unwrap().to_owned()).collect();
    args.push(dir.path().join("rec_index.jsonl").to_str().unwrap().to_owned());
    let run = |server: SocketAddr, extra: &[&str]| {
        let port = server.port().to_string();
        let mut all: Vec<&str> = vec!["replay-client"];
        all.extend(extra);
        all.extend(args.iter().map(String::as_str));
        all.extend(["127.0.0.1", &port]);
        netrecord(&all)
    };
    for extra in [&[][..], &["--parallel"][..]] {
        let done = run(upstream.addr, extra);
        assert!(done.status.success(), "{extra:?}: {:?} {:?}", done.stdout, done.stderr);
        assert_eq!(done.stdout.len(), 4, "{:?}", done.stdout);
        for (line, log) in done.stdout.iter().zip(&logs) {
            assert!(
                line.starts_with(&format!("{}: matched; ", log.display())),
                "{extra:?}: {:?}",
                done.stdout
            );
        }
        assert!(done.stdout[3].ends_with(": 3 matched, 0 differed"), "{:?}", done.stdout);
    }

    // A server changed for B only.
    let changed = line_server(|line| if line == b"B\r\n" { b"+b2\r\n" } else { abc(line) });
    let done = run(changed.addr, &[]);
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(done.stdout[0].contains(": matched;"), "{:?}", done.stdout);
    assert!(
        done.stdout[1].starts_with(&format!("{}: 1 difference; ", logs[1].display())),
        "{:?}",
        done.stdout
    );
    assert!(
        done.stdout[2].starts_with("  server stream differs at offset 2"),
        "{:?}",
        done.stdout
    );
    assert!(done.stdout[3].contains(": matched;"), "{:?}", done.stdout);
    assert!(done.stdout[4].ends_with(": 2 matched, 1 differed"), "{:?}", done.stdout);
}

#[test]
fn replay_server_answers_each_client_from_the_log_it_matches_best() {
    let upstream = line_server(abc);
    let (_dir, logs) = record_run(&upstream, &[b"A\r\n", b"B\r\n", b"C\r\n"]);
    let greeting = greeting_server();
    let (_greeting_dir, greeting_log) = greeting_session(&greeting);
    let mut all: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    all.push(&greeting_log);
    let (server, addr) = Run::server_of(&all, &["--loop"]);
    let mut n = 0;
    let reported = |n: usize| {
        wait_until(&format!("client {n}'s report"), || {
            server.stdout().iter().any(|l| l.starts_with(&format!("#{n} ")))
        })
    };
    for (request, reply) in [(b"C\r\n", b"+c1\r\n"), (b"A\r\n", b"+a1\r\n"), (b"B\r\n", b"+b1\r\n")] {
        let client = connect(addr);
        send(&client, request);
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&client), reply);
        n += 1;
        reported(n);
    }
    // A client that waits to be greeted gets the log whose server speaks first.
    let client = connect(addr);
    assert_eq!(read_n(&client, 11), b"220 ready\r\n");
    send(&client, b"QUIT\r\n");
    assert_eq!(read_all(&client), b"221 bye\r\n");
    drop(client);
    reported(n + 1);
    let done = server.terminate();
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    for (line, log) in done.stdout.iter().zip([&logs[2], &logs[0], &logs[1], &greeting_log]) {
        assert!(
            line.contains(&format!(" ({}): matched the recording", log.display())),
            "{:?}",
            done.stdout
        );
    }
    assert!(done.stdout_has("served 4 clients: 4 matched"), "{:?}", done.stdout);
}

/// A child process this test started, killed by its own handle when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python's http.server on 127.0.0.1, port 0, serving `dir`; it prints the port
/// it was given, so nothing races for a port.
fn http_server(dir: &Path) -> (Daemon, u16) {
    let code = "import http.server, sys\n\
                server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
                print(server.server_address[1], flush=True)\n\
                server.serve_forever()\n";
    let mut child = Command::new("python3")
        .args(["-c", code])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn python3");
    let stdout = child.stdout.take().unwrap();
    let daemon = Daemon(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE).expect("http.server's port");
    let port = line.trim().parse().unwrap_or_else(|_| panic!("no port in {line:?}"));
    (daemon, port)
}

/// Runs a command to its end within the deadline; returns its status and stdout.
fn run_tool(cmd: &mut Command) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut out);
        out
    });
    let status = wait_child(&mut child);
    (status, reader.join().unwrap())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn an_http_replay_matches_once_the_date_is_masked() {
    if !have_tool("curl") || !have_tool("python3") {
        skip("curl and python3 are needed for the HTTP replay test");
        return;
    }
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), b"hello over http\n").unwrap();
    let (_http, port) = http_server(www.path());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("http");
    let proxy = Proxy::start_in("127.0.0.1", port, &root, &["-q"], |_| {});
    let url = format!("http://{}/hello.txt", proxy.addr);
    let (status, body) = run_tool(Command::new("curl").args(["-s", "--max-time", "10", &url]));
    assert!(status.success());
    assert_eq!(body, "hello over http\n");
    let recorded_at = now_secs();
    proxy.wait_ended(1);
    let log = proxy.log(1);
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    let recorded = valid_log(&log);
    assert!(recorded.server.windows(6).any(|w| w == b"Date: "), "no Date header");

    // The server's Date header has a resolution of a second: let one pass.
    wait_until("the next second", || now_secs() > recorded_at);
    let server = format!("127.0.0.1:{port}").parse().unwrap();
    let done = replay_client(&log, server, &[]);
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    assert!(done.stdout_has("server stream differs at offset "), "{:?}", done.stdout);
    assert!(
        done.stdout.last().unwrap().contains(": 1 difference;"),
        "{:?}",
        done.stdout
    );

    for mask in [&["--mask", r"Date: [^\r]*"][..], &["--mask-preset", "http-date"][..]] {
        let done = replay_client(&log, server, mask);
        assert!(done.status.success(), "{mask:?}: {:?} {:?}", done.stdout, done.stderr);
        assert_eq!(done.stdout.len(), 1, "{:?}", done.stdout);
        assert!(
            done.stdout[0].contains(": matched with 1 masked span; "),
            "{mask:?}: {:?}",
            done.stdout
        );
    }
}

/// A redis-server on a free loopback port, without persistence, answering PING.
fn redis_server() -> (Daemon, u16) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let daemon = Daemon(child);
    wait_until("redis-server to answer PING", || {
        let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        send(&s, b"PING\r\n");
        let mut reply = [0u8; 7];
        (&s).read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    });
    (daemon, port)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let (status, out) = run_tool(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
    );
    assert!(status.success(), "redis-cli {args:?}");
    out
}

#[test]
fn replay_server_answers_a_run_of_redis_commands_each_from_its_own_recording() {
    if !have_tool("redis-server") || !have_tool("redis-cli") {
        skip("redis-server and redis-cli are needed for the redis run test");
        return;
    }
    let (redis, redis_port) = redis_server();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("redis");
    let proxy = Proxy::start_in("127.0.0.1", redis_port, &root, &["-q"], |_| {});
    let commands: [&[&str]; 3] = [
        &["set", "greeting", "hello"],
        &["get", "greeting"],
        &["incr", "counter"],
    ];
    let answers = ["OK\n", "hello\n", "1\n"];
    for (command, answer) in commands.iter().zip(answers) {
        assert_eq!(redis_cli(proxy.addr.port(), command), answer);
    }
    proxy.wait_ended(3);
    let logs: Vec<PathBuf> = (1..=3).map(|n| proxy.log(n)).collect();
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    drop(redis);

    let all: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let (server, addr) = Run::server_of(&all, &["--loop"]);
    // Another order than recorded; each answered from its own recording.
    let order = [2, 0, 1];
    for (n, &i) in order.iter().enumerate() {
        assert_eq!(redis_cli(addr.port(), commands[i]), answers[i], "{:?}", commands[i]);
        wait_until(&format!("client {}'s report", n + 1), || {
            server.stdout().iter().any(|l| l.starts_with(&format!("#{} ", n + 1)))
        });
    }
    // A command not recorded gets the answer of the one it is closest to.
    assert_eq!(redis_cli(addr.port(), &["get", "other"]), "hello\n");
    wait_until("client 4's report", || {
        server.stdout().iter().any(|l| l.starts_with("#4 "))
    });
    let done = server.terminate();
    assert_eq!(done.status.code(), Some(1), "{:?} {:?}", done.stdout, done.stderr);
    for (line, &i) in done.stdout.iter().zip(&order) {
        assert!(
            line.contains(&format!(" ({}): matched the recording", logs[i].display())),
            "{:?}",
            done.stdout
        );
    }
    assert!(
        done.stdout[3].contains(&format!(
            " ({}): 1 difference: client stream differs",
            logs[1].display()
        )),
        "{:?}",
        done.stdout
    );
    assert!(
        done.stdout_has("served 4 clients: 3 matched the recording, 1 did not"),
        "{:?}",
        done.stdout
    );
}

//! Tests of `netrecord replay-server` and `replay-client`: sessions recorded through
//! the proxy, then replayed over loopback against fresh clients and live servers.

use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::util::*;

/// A netrecord replay process with its stdout and stderr collected line by line,
/// killed by its own handle if a test ends without waiting for it.
struct Run {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// What a finished run left behind.
struct Done {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Done {
    fn stdout_has(&self, text: &str) -> bool {
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
    fn server(log: &Path, extra: &[&str]) -> (Run, SocketAddr) {
        let mut args = vec!["replay-server", log.to_str().unwrap(), "0"];
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
    fn finish(mut self) -> Done {
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
fn netrecord(args: &[&str]) -> Done {
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
    assert!(done.stdout_has("the server answered as recorded"), "{:?}", done.stdout);
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
    assert!(
        done.stdout_has("the server differs from the recording"),
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

//! Tests of the recording proxy itself: forwarding, recording, half-close,
//! failures, startup checks, signals, full disks and descriptor exhaustion.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use netrecord::log::End;
use netrecord::log::{Event, Side};

use crate::util::*;

/// Sends `data` and then a half-close on one thread while reading everything the
/// other end sends until EOF, as a full-duplex peer does; returns what was read.
fn full_duplex(client: &TcpStream, data: &[u8]) -> Vec<u8> {
    let writer = {
        let (client, data) = (client.try_clone().unwrap(), data.to_vec());
        thread::spawn(move || {
            send(&client, &data);
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let got = read_all(client);
    writer.join().unwrap();
    got
}

#[test]
fn scripted_exchange_is_forwarded_and_recorded() {
    let upstream = Upstream::start(|s| {
        // A tiny line protocol: answer each line, say goodbye at EOF.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = (&s).read(&mut byte) {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                let reply = if line == b"PING\r\n" {
                    &b"+PONG\r\n"[..]
                } else {
                    &b"-ERR\r\n"[..]
                };
                send(&s, reply);
                line.clear();
            }
        }
        send(&s, b"+BYE\r\n");
        let _ = s.shutdown(Shutdown::Write);
    });
    let proxy = Proxy::start(upstream.addr, &[]);
    let client = connect(proxy.addr);
    send(&client, b"PING\r\n");
    assert_eq!(read_n(&client, 7), b"+PONG\r\n");
    send(&client, b"HELLO\r\n");
    assert_eq!(read_n(&client, 6), b"-ERR\r\n");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"+BYE\r\n");
    let entries = proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert_eq!(log.shape(), "c con, c 6, s 7, c 7, s 6, c hup, s 6, s hup");
    assert_eq!(log.client, b"PING\r\nHELLO\r\n");
    assert_eq!(log.server, b"+PONG\r\n-ERR\r\n+BYE\r\n");

    let e = &entries[0];
    assert_eq!((e.conn, e.client_bytes, e.server_bytes), (1, 13, 19));
    assert_eq!((e.client_end, e.server_end), (End::Hup, End::Hup));
    assert_eq!(e.upstream, Some(upstream.addr));
    assert_eq!(e.client, client.local_addr().unwrap());
    assert_eq!(e.log, proxy.log(1));
    assert_eq!(Some(netrecord::log::Micros(e.start_us)), log.summary.first);

    let (status, stderr) = proxy.stop();
    assert!(status.success());
    assert!(
        stderr.iter().any(|l| l.starts_with("netrecord: #1 from 127.0.0.1:")),
        "{stderr:?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("#1 ended after") && l.contains("client sent 13 bytes (hup)")),
        "{stderr:?}"
    );
    assert!(
        stderr.last().unwrap().contains("stopped after 1 connection"),
        "{stderr:?}"
    );
}

#[test]
fn quiet_prints_no_connection_lines() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["--quiet"]);
    let client = connect(proxy.addr);
    send(&client, b"x");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"x");
    proxy.wait_ended(1);
    let (_, stderr) = proxy.stop();
    assert!(!stderr.iter().any(|l| l.contains("#1")), "{stderr:?}");
}

#[test]
fn large_transfers_both_ways_arrive_and_are_recorded_exactly() {
    const SIZE: usize = 16 << 20;
    let up_data = Arc::new(pattern(SIZE, 2));
    let received_by_server = Arc::new(Mutex::new(None));
    let upstream = {
        let (up_data, received) = (Arc::clone(&up_data), Arc::clone(&received_by_server));
        Upstream::start(move |s| {
            // Read and write at the same time, as a real full-duplex peer does.
            let reader = s.try_clone().unwrap();
            let got = thread::spawn(move || read_all(&reader));
            send(&s, &up_data);
            s.shutdown(Shutdown::Write).unwrap();
            *received.lock().unwrap() = Some(got.join().unwrap());
        })
    };
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let down_data = pattern(SIZE, 1);
    let got_by_client = full_duplex(&connect(proxy.addr), &down_data);
    proxy.wait_ended(1);
    wait_until("the server to finish reading", || {
        received_by_server.lock().unwrap().is_some()
    });
    let got_by_server = received_by_server.lock().unwrap().take().unwrap();

    assert_eq!(sha256(&got_by_client), sha256(&up_data));
    assert_eq!(sha256(&got_by_server), sha256(&down_data));
    let log = valid_log(&proxy.log(1));
    assert_eq!(sha256(&log.client), sha256(&down_data));
    assert_eq!(sha256(&log.server), sha256(&up_data));
    assert!(log.summary.hup[0] && log.summary.hup[1]);
}

#[test]
fn half_close_lets_the_server_answer_after_the_clients_eof() {
    let request = pattern(100_000, 3);
    let (_dir, log) = record_exchange(&request, b"the answer, sent only after EOF");
    let log = valid_log(&log);
    assert_eq!(log.client, request);
    assert_eq!(log.server, b"the answer, sent only after EOF");
    // The client's hup comes before any server data: the reply followed the EOF.
    assert_eq!(log.merged_shape(), "c con, c 100000, c hup, s 31, s hup");
}

#[test]
fn an_unreachable_upstream_is_recorded_as_s_err_and_the_proxy_keeps_serving() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(closed, &["--connect-timeout", "5"]);
    for n in 1..=2 {
        let client = connect(proxy.addr);
        // The client is closed: EOF or a reset, never data.
        let mut buf = [0u8; 16];
        assert!(matches!((&client).read(&mut buf), Ok(0) | Err(_)));
        let entries = proxy.wait_ended(n);
        let log = valid_log(&proxy.log(n as u64));
        assert_eq!(log.shape(), "c con, s err");
        let e = &entries[n - 1];
        assert_eq!(e.upstream, None);
        assert_eq!(e.server_end, End::Err);
        let why = e.server_error.as_deref().unwrap();
        assert!(why.contains("refused") && why.contains(&closed.to_string()), "{why}");
    }
    let (status, stderr) = proxy.stop();
    assert!(status.success());
    assert!(stderr.iter().any(|l| l.contains("could not connect to")), "{stderr:?}");
}

/// Closes `s` with a reset instead of a FIN.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// The records after `con`, with data merged, must end in exactly one `err` of
/// `side`, with nothing after it.
fn assert_ends_in_one_err(path: &Path, side: Side) {
    let log = valid_log(path);
    let errs: Vec<_> = log.events.iter().filter(|(_, e)| *e == Event::Err).collect();
    assert_eq!(errs.len(), 1, "{}", log.shape());
    assert_eq!(log.events.last(), Some(&(side, Event::Err)), "{}", log.shape());
    assert!(!log.events.iter().any(|(_, e)| *e == Event::Hup), "{}", log.shape());
}

#[test]
fn a_client_reset_ends_the_log_with_one_c_err() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let client = connect(proxy.addr);
    send(&client, b"hello");
    assert_eq!(read_n(&client, 5), b"hello");
    reset(client);
    let entries = proxy.wait_ended(1);
    assert_ends_in_one_err(&proxy.log(1), Side::Client);
    assert_eq!(entries[0].client_end, End::Err);
    assert!(
        entries[0].client_error.as_deref().unwrap().contains("reset"),
        "{entries:?}"
    );
}

#[test]
fn a_server_reset_ends_the_log_with_one_s_err() {
    let upstream = Upstream::start(|s| {
        let _ = read_n(&s, 5);
        send(&s, b"bye");
        reset(s);
    });
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let client = connect(proxy.addr);
    send(&client, b"hello");
    let mut got = Vec::new();
    // The client sees the data, then the connection end (EOF or reset).
    let _ = (&client).read_to_end(&mut got);
    assert!(b"bye".starts_with(&got), "{got:?}");
    proxy.wait_ended(1);
    assert_ends_in_one_err(&proxy.log(1), Side::Server);
}

#[test]
fn ipv6_loopback_listen_and_upstream() {
    if !have_ipv6() {
        skip("::1 is not available here");
        return;
    }
    let upstream = Upstream::start_on("[::1]:0", |s| {
        let mut r = s.try_clone().unwrap();
        let mut w = s;
        let _ = std::io::copy(&mut r, &mut w);
        let _ = w.shutdown(Shutdown::Write);
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("::1", upstream.addr.port(), &root, &["--listen", "::1"], |_| {});
    assert!(proxy.addr.is_ipv6(), "{}", proxy.addr);
    let client = connect(proxy.addr);
    send(&client, b"over v6");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"over v6");
    let entries = proxy.wait_ended(1);
    assert_eq!(valid_log(&proxy.log(1)).shape(), "c con, c 7, c hup, s 7, s hup");
    assert!(entries[0].client.is_ipv6() && entries[0].upstream.unwrap().is_ipv6());
}

#[test]
fn an_existing_log_is_never_touched_and_new_logs_are_private() {
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let old = netrecord::log::log_path(&root, 1);
    std::fs::write(&old, b"an earlier recording\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    let client = connect(proxy.addr);
    send(&client, b"new");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"new");
    let entries = proxy.wait_ended(1);
    assert_eq!(entries[0].conn, 2);
    assert_eq!(std::fs::read(&old).unwrap(), b"an earlier recording\n");
    assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(valid_log(&proxy.log(2)).client, b"new");
    for path in [proxy.log(2), proxy.index()] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

/// Runs the binary with `args`, expecting it to fail at startup.
pub fn startup_failure(args: &[&str]) -> (i32, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr.lines().map(String::from).collect())
}

#[test]
fn startup_checks_fail_with_one_line_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let root = root.to_str().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let under_file = format!("{}/rec", file.display());
    let missing = format!("{}/missing/rec", dir.path().display());
    let cases: &[(&[&str], i32, &str)] = &[
        (&["127.0.0.1", "http", "0", root], 2, "<SERVER_PORT>"),
        (&["127.0.0.1", "80", "70000", root], 2, "<PROXY_PORT>"),
        (&["127.0.0.1", "0", "0", root], 2, "<SERVER_PORT>"),
        (&["127.0.0.1", "80", "0"], 2, "<LOG_FILE_ROOT>"),
        (
            &["127.0.0.1", "80", "0", root, "--connect-timeout", "0"],
            2,
            "positive number of seconds",
        ),
        (&["127.0.0.1", "80", "0", root, "--listen", "nowhere"], 2, "--listen"),
        (
            &["no-such-host.invalid", "80", "0", root],
            1,
            "could not resolve server host no-such-host.invalid",
        ),
        (&["127.0.0.1", "80", "0", &missing], 1, "does not exist"),
        (&["127.0.0.1", "80", "0", &under_file], 1, "is not a directory"),
        (
            &["127.0.0.1", "80", &busy_port, root],
            1,
            "could not listen on 127.0.0.1:",
        ),
    ];
    for (args, code, needle) in cases {
        let (got, lines) = startup_failure(args);
        assert_eq!(got, *code, "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].starts_with("netrecord: "), "{args:?}: {lines:?}");
        assert!(lines[0].contains(needle), "{args:?}: {lines:?} lacks {needle:?}");
    }
    let created: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(created, vec![std::ffi::OsString::from("a-file")]);
}

/// A directory netrecord cannot write to: a read-only tmpfs when running as root
/// (root ignores permission bits), a mode-0500 directory otherwise. Unmounted on drop.
struct ReadOnlyDir {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl ReadOnlyDir {
    fn new() -> Option<ReadOnlyDir> {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
            return Some(ReadOnlyDir { dir, mounted: false });
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(ReadOnlyDir { dir, mounted: true })
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        } else {
            let _ = std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
}

#[test]
fn an_unwritable_log_directory_is_refused_at_startup() {
    let Some(ro) = ReadOnlyDir::new() else {
        skip("cannot make a read-only directory here (mount failed)");
        return;
    };
    let root = ro.dir.path().join("rec");
    let (code, lines) = startup_failure(&["127.0.0.1", "80", "0", root.to_str().unwrap()]);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("netrecord: log directory") && lines[0].contains("not writable"),
        "{lines:?}"
    );
    assert_eq!(std::fs::read_dir(ro.dir.path()).unwrap().count(), 0);
}

#[test]
fn sigterm_during_a_transfer_leaves_whole_logs_and_index_lines() {
    let upstream = Upstream::start(|s| {
        let mut sink = std::io::sink();
        let _ = std::io::copy(&mut &s, &mut sink);
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    let client = connect(proxy.addr);
    let log_path = proxy.log(1);
    let sender = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || {
            // Keep sending until the proxy goes away; bounded at 4 GiB.
            let chunk = pattern(64 * 1024, 4);
            for _ in 0..65_536 {
                if (&client).write_all(&chunk).is_err() {
                    return true;
                }
            }
            false
        })
    };
    wait_until("the log to grow past 1 MiB", || {
        std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 1 << 20)
    });
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
    assert!(
        stderr.last().unwrap().contains("stopped after 1 connection"),
        "{stderr:?}"
    );
    assert!(sender.join().unwrap(), "the client saw the proxy go away");
    let log = valid_log(&log_path);
    assert!(
        !log.summary.is_complete(),
        "the connection was still open: {}",
        log.summary.end(Side::Client).word()
    );
    assert!(log.client.len() > 1 << 20);
    let entries = netrecord::index::read_index(&netrecord::index::index_path(&root)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].client_end, entries[0].server_end), (End::Open, End::Open));
    assert_eq!(entries[0].client_bytes, log.client.len() as u64);
}

/// A 1 MiB tmpfs, unmounted on drop; `None` where mounting is not allowed.
pub struct TinyDisk {
    pub dir: tempfile::TempDir,
}

impl TinyDisk {
    pub fn new() -> Option<TinyDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TinyDisk { dir })
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_stops_recording_but_not_the_traffic() {
    let Some(disk) = TinyDisk::new() else {
        skip("needs root to mount a 1 MiB tmpfs");
        return;
    };
    let upstream = Upstream::echo();
    let root = disk.dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    let data = pattern(4 << 20, 5);
    let echoed = full_duplex(&connect(proxy.addr), &data);
    assert_eq!(sha256(&echoed), sha256(&data), "traffic completes");
    let entries = proxy.wait_ended(1);
    let log = read_log(&proxy.log(1));
    assert!(
        !matches!(log.error, Some(netrecord::log::ReadError::Corrupt { .. })),
        "{:?}",
        log.error
    );
    assert!(
        data.starts_with(&log.client) && data.starts_with(&log.server),
        "the log is a prefix"
    );
    assert!(log.client.len() + log.server.len() < data.len() * 2);
    let why = entries[0].log_error.as_deref().expect("index carries the log error");
    assert!(why.contains("No space left"), "{why}");
    assert_eq!(entries[0].client_bytes, data.len() as u64);
    let (_, stderr) = proxy.stop();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("failed to write log") && l.contains("recording stopped")),
        "{stderr:?}"
    );
}

#[test]
fn descriptor_exhaustion_is_survived() {
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |cmd| {
        // SAFETY: setrlimit is async-signal-safe and only touches the child.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 48,
                    rlim_max: 48,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    // More clients than 48 descriptors can hold (three per connection).
    let clients: Vec<TcpStream> = (0..40).map(|_| connect(proxy.addr)).collect();
    wait_until("the proxy to run out of descriptors", || {
        proxy.stderr().iter().any(|l| l.contains("Too many open files"))
    });
    drop(clients);
    // Once the held connections are gone, the proxy serves normally again.
    let mut served = false;
    for _ in 0..200 {
        let client = connect(proxy.addr);
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        send(&client, b"again");
        let mut got = [0u8; 5];
        if (&client).read_exact(&mut got).is_ok() && &got == b"again" {
            served = true;
            break;
        }
    }
    assert!(served, "the proxy never served again: {:?}", proxy.stderr());
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    let reports = stderr.iter().filter(|l| l.contains("accept failed")).count();
    assert!(
        reports <= 5,
        "reported once per episode, not per retry: {reports} lines"
    );
}

#[test]
fn five_hundred_concurrent_connections_are_all_recorded() {
    const N: usize = 500;
    const SIZE: usize = 32 * 1024;
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let addr: SocketAddr = proxy.addr;
    let clients: Vec<_> = (0..N)
        .map(|i| {
            thread::spawn(move || {
                let client = connect(addr);
                let data = pattern(SIZE, 100 + i as u64);
                let echoed = full_duplex(&client, &data);
                assert_eq!(sha256(&echoed), sha256(&data), "client {i}");
                (client.local_addr().unwrap(), i)
            })
        })
        .collect();
    let by_addr: std::collections::HashMap<SocketAddr, usize> =
        clients.into_iter().map(|h| h.join().unwrap()).collect();
    let entries = proxy.wait_ended(N);
    assert_eq!(entries.len(), N);
    for e in &entries {
        let i = by_addr[&e.client];
        let log = valid_log(&e.log);
        let want = sha256(&pattern(SIZE, 100 + i as u64));
        assert_eq!(sha256(&log.client), want, "{}", e.log.display());
        assert_eq!(sha256(&log.server), want, "{}", e.log.display());
        assert!(log.summary.hup[0] && log.summary.hup[1]);
    }
    let (status, _) = proxy.stop();
    assert!(status.success());
}

#[test]
fn a_connect_timeout_is_an_error_not_a_hang() {
    // A listener whose backlog is full accepts no more handshakes, so connecting
    // to it times out.
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let full: SocketAddr = listener.local_addr().unwrap().as_socket().unwrap();
    // Fill the backlog, bounded: stop at the first handshake that does not complete.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&full, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(e) => {
                assert!(matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock), "{e}");
                break;
            }
        }
    }
    let proxy = Proxy::start(full, &["-q", "--connect-timeout", "0.3"]);
    let client = connect(proxy.addr);
    let mut buf = [0u8; 1];
    assert!(matches!((&client).read(&mut buf), Ok(0) | Err(_)));
    let entries = proxy.wait_ended(1);
    assert_eq!(valid_log(&proxy.log(1)).shape(), "c con, s err");
    assert!(
        entries[0].server_error.as_deref().unwrap().contains("timed out"),
        "{entries:?}"
    );
}

#[test]
fn the_demo_records_and_prints_an_exchange() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(wait_child(&mut child).success(), "{out}");
    assert!(out.contains("  < +PONG") && out.contains("  < $hello"), "{out}");
    // The printed recording is the log file, and the log is valid and complete.
    let dir = std::fs::read_dir(tmp.path()).unwrap().next().unwrap().unwrap().path();
    let log = valid_log(&dir.join("demo_1"));
    assert_eq!(log.client, b"PING\r\nSET greeting hello\r\nGET greeting\r\n");
    assert_eq!(log.server, b"+PONG\r\n+OK\r\n$hello\r\n+BYE\r\n");
    assert!(out.contains(&String::from_utf8_lossy(&std::fs::read(dir.join("demo_1")).unwrap()).to_string()));
    // It ends by showing the recording with `netrecord show`.
    assert!(
        out.contains("$ netrecord show ") && out.contains("client 20 bytes\n    SET greeting hello\\r\\n\n"),
        "{out}"
    );
}

/// CPU time (user and system, in clock ticks) the process `pid` has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; the state (field 3) is first here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// While round trips follow each other quickly the relay threads poll before they
/// block; once the conversation goes quiet they must block, not keep polling.
#[test]
fn a_connection_gone_quiet_after_quick_round_trips_costs_no_cpu() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let s = connect(proxy.addr);
    let mut sent = Vec::new();
    for i in 0..500 {
        let message = format!("message {i:03}\n");
        send(&s, message.as_bytes());
        assert_eq!(read_n(&s, message.len()), message.as_bytes());
        sent.extend_from_slice(message.as_bytes());
    }
    let before = cpu_ticks(proxy.pid());
    // The connection idles for a second: a thread that kept polling would use
    // all of it (100 ticks), one that blocks next to none.
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(proxy.pid()) - before;
    assert!(used < 20, "the idle proxy used {used} ticks of CPU in one second");
    s.shutdown(Shutdown::Write).unwrap();
    assert!(read_all(&s).is_empty());
    let entries = proxy.wait_ended(1);
    assert_eq!(entries[0].client_bytes, sent.len() as u64);
    let log = valid_log(&proxy.log(1));
    assert_eq!(log.client, sent, "every message recorded");
    assert_eq!(log.server, sent);
}

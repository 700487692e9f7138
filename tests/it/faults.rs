//! The recorder under faults: a full or vanished log directory, a stderr nobody
//! reads, signals while stopping, connections ending during a stop, `kill -9` in
//! the middle of a transfer, and startup refusals (a self-loop, a bad log root, an
//! index another user prepared).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread;

use netrecord::index::Entry;

use crate::proxy::TinyDisk;
use crate::util::*;

/// One echo exchange through the proxy at `addr`: sends `data`, half-closes and
/// checks that everything comes back.
fn echo_through(addr: SocketAddr, data: &[u8]) {
    let client = connect(addr);
    send(&client, data);
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), data, "the echo through {addr}");
}

/// The connection numbers of `entries`, sorted.
fn numbers(entries: &[Entry]) -> Vec<u64> {
    let mut n: Vec<u64> = entries.iter().map(|e| e.conn).collect();
    n.sort_unstable();
    n
}

/// Writes to `path` until the file system is full; bounded by the disk's size.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..1024 {
        if file.write_all(&chunk).is_err() {
            return;
        }
    }
    panic!("{} never filled up", path.display());
}

#[test]
fn a_full_disk_forwards_new_clients_unrecorded_and_numbers_them_all() {
    let Some(disk) = TinyDisk::new() else {
        skip("needs root to mount a 1 MiB tmpfs");
        return;
    };
    let upstream = Upstream::echo();
    let root = disk.dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    echo_through(proxy.addr, b"recorded");
    proxy.wait_ended(1);
    let filler = disk.dir.path().join("filler");
    fill(&filler);
    for i in 0..3 {
        echo_through(proxy.addr, format!("unrecorded {i}").as_bytes());
    }
    let entries = proxy.wait_ended(4);
    assert_eq!(numbers(&entries), [1, 2, 3, 4]);
    for e in entries.iter().filter(|e| e.conn > 1) {
        let why = e.log_error.as_deref().expect("the index says why");
        assert!(
            why.contains("failed to write log") && why.contains("No space left"),
            "{why}"
        );
        assert!(!e.log.exists(), "no empty log is left: {}", e.log.display());
        assert_eq!(e.client_bytes, 12);
    }
    // With room again, the next connection is recorded under the next number.
    std::fs::remove_file(&filler).unwrap();
    echo_through(proxy.addr, b"recorded again");
    let entries = proxy.wait_ended(5);
    assert_eq!(numbers(&entries), [1, 2, 3, 4, 5]);
    assert_eq!(valid_log(&proxy.log(5)).client, b"recorded again");
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    let refused: Vec<_> = stderr.iter().filter(|l| l.contains("not recorded")).collect();
    assert_eq!(refused.len(), 3, "{stderr:?}");
    assert!(
        refused[0].starts_with("netrecord: #2 from 127.0.0.1:") && refused[0].contains("forwarding it anyway"),
        "{refused:?}"
    );
    assert!(
        stderr.last().unwrap().contains("stopped after 5 connections"),
        "{stderr:?}"
    );
}

#[test]
fn a_removed_log_directory_forwards_new_clients_unrecorded() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let upstream = Upstream::echo();
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &logs.join("rec"), &["-q"], |_| {});
    echo_through(proxy.addr, b"recorded");
    proxy.wait_ended(1);
    // The index lives on in the open file after its directory is gone.
    let index = std::fs::File::open(proxy.index()).unwrap();
    let index_path = PathBuf::from(format!("/proc/self/fd/{}", index.as_raw_fd()));
    std::fs::remove_dir_all(&logs).unwrap();
    for i in 0..3 {
        echo_through(proxy.addr, format!("unrecorded {i}").as_bytes());
    }
    let mut entries = Vec::new();
    wait_until("4 index lines", || {
        entries = netrecord::index::read_index(&index_path).unwrap();
        entries.len() >= 4
    });
    assert_eq!(numbers(&entries), [1, 2, 3, 4]);
    for e in entries.iter().filter(|e| e.conn > 1) {
        let why = e.log_error.as_deref().expect("the index says why");
        assert!(
            why.contains(&format!("failed to create log {}", e.log.display())) && why.contains("No such file"),
            "{why}"
        );
    }
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    assert_eq!(
        stderr.iter().filter(|l| l.contains("not recorded")).count(),
        3,
        "{stderr:?}"
    );
}

/// A netrecord whose stderr is a pipe the test reads only when it chooses to.
struct Stuck {
    child: std::process::Child,
    /// Unread until a test takes it.
    stderr: Option<std::process::ChildStderr>,
    addr: SocketAddr,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stuck {
    /// Starts netrecord in front of `upstream` and reads its startup line, byte by
    /// byte so that nothing after it is read.
    fn start(upstream: SocketAddr, extra: &[&str]) -> Stuck {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let mut child = std::process::Command::new(BIN)
            .arg(upstream.ip().to_string())
            .arg(upstream.port().to_string())
            .arg("0")
            .arg(&root)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 4096 && stderr.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ',']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in startup line {line:?}"));
        Stuck {
            child,
            stderr: Some(stderr),
            addr,
            root,
            _dir: dir,
        }
    }

    fn entries(&self) -> Vec<Entry> {
        netrecord::index::read_index(&netrecord::index::index_path(&self.root)).unwrap()
    }
}

impl Drop for Stuck {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `count` echo exchanges through `addr` from four client threads, each
/// client with the usual read timeout: a proxy that stops serving fails them.
fn many_connections(addr: SocketAddr, count: usize) {
    let clients: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..count / 4 {
                    echo_through(addr, format!("client {t} connection {i}").as_bytes());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn a_stderr_nobody_reads_does_not_stall_the_proxy_or_its_exit() {
    let upstream = Upstream::echo();
    let mut proxy = Stuck::start(upstream.addr, &[]);
    // Two lines per connection: far more than the 64 KiB a pipe holds.
    many_connections(proxy.addr, 2000);
    wait_until("2000 index lines", || proxy.entries().len() >= 2000);
    signal(&proxy.child, libc::SIGTERM);
    let status = wait_child(&mut proxy.child);
    assert!(status.success(), "{status:?}");
    assert_eq!(numbers(&proxy.entries()), (1..=2000).collect::<Vec<u64>>());
}

#[test]
fn lines_dropped_for_a_stuck_stderr_are_counted_once_it_drains() {
    let upstream = Upstream::echo();
    let mut proxy = Stuck::start(upstream.addr, &[]);
    // Two lines per connection: more than the pipe and the queue hold.
    many_connections(proxy.addr, 6000);
    wait_until("6000 index lines", || proxy.entries().len() >= 6000);
    // Now read: the queued lines come, then the count of the dropped ones.
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stderr) = (std::sync::Arc::clone(&lines), proxy.stderr.take().unwrap());
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                lines.lock().unwrap().push(line.unwrap());
            }
        })
    };
    wait_until("the count of dropped lines", || {
        lines.lock().unwrap().iter().any(|l| l.contains("messages dropped"))
    });
    signal(&proxy.child, libc::SIGTERM);
    assert!(wait_child(&mut proxy.child).success());
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    let dropped = lines.iter().find(|l| l.contains("messages dropped")).unwrap();
    assert!(
        dropped.starts_with("netrecord: ") && dropped.ends_with("dropped: standard error was not being read"),
        "{dropped}"
    );
    assert!(
        lines.last().unwrap().contains("stopped after 6000 connections"),
        "{lines:?}"
    );
}

/// The totals of the summary line `stopped after N connections: X bytes from
/// clients, Y bytes from servers`.
fn summary(stderr: &[String]) -> (u64, u64, u64) {
    let line = stderr
        .iter()
        .rev()
        .find(|l| l.contains("stopped after"))
        .unwrap_or_else(|| panic!("no summary: {stderr:?}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 3, "{line}");
    (numbers[0], numbers[1], numbers[2])
}

#[test]
fn every_connection_ending_during_a_stop_gets_exactly_one_index_line() {
    const HELD: usize = 300;
    let upstream = Upstream::echo();
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
        // Connections that have exchanged data and are about to end.
        let clients: Vec<TcpStream> = (0..HELD)
            .map(|i| {
                let client = connect(proxy.addr);
                let data = format!("round {round} connection {i}");
                send(&client, data.as_bytes());
                assert_eq!(read_n(&client, data.len()), data.as_bytes());
                client
            })
            .collect();
        // End them all while the stop arrives: their last records, index lines
        // and the stop's reports race.
        let closer = thread::spawn(move || {
            for c in &clients {
                let _ = c.shutdown(Shutdown::Write);
            }
            clients
        });
        let index = proxy.index();
        let (status, stderr) = proxy.stop();
        drop(closer.join().unwrap());
        assert!(status.success(), "{stderr:?}");
        let (connections, client_bytes, server_bytes) = summary(&stderr);
        assert_eq!(connections, HELD as u64);
        let entries = netrecord::index::read_index(&index).unwrap();
        assert_eq!(entries.len(), HELD, "round {round}: one line per connection");
        assert_eq!(
            numbers(&entries),
            (1..=HELD as u64).collect::<Vec<u64>>(),
            "round {round}"
        );
        assert_eq!(
            entries.iter().map(|e| e.client_bytes).sum::<u64>(),
            client_bytes,
            "round {round}"
        );
        assert_eq!(
            entries.iter().map(|e| e.server_bytes).sum::<u64>(),
            server_bytes,
            "round {round}"
        );
    }
}

#[test]
fn sighup_stops_like_sigterm_with_a_summary_and_index_lines() {
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &[], |_| {});
    echo_through(proxy.addr, b"ended");
    proxy.wait_ended(1);
    let open = connect(proxy.addr);
    send(&open, b"open");
    assert_eq!(read_n(&open, 4), b"open");
    let index = proxy.index();
    let (status, stderr) = proxy.stop_with(libc::SIGHUP);
    assert!(status.success(), "{status:?} {stderr:?}");
    assert!(
        stderr.last().unwrap().contains("stopped after 2 connections"),
        "{stderr:?}"
    );
    let entries = netrecord::index::read_index(&index).unwrap();
    assert_eq!(numbers(&entries), [1, 2]);
    let second = entries.iter().find(|e| e.conn == 2).unwrap();
    assert_eq!(second.client_end, netrecord::log::End::Open);
}

#[test]
fn a_second_signal_while_stopping_exits_at_once_with_whole_records() {
    let upstream = Upstream::echo();
    let mut proxy = Stuck::start(upstream.addr, &[]);
    // Fill stderr's pipe and the queue, so that the exit waits for stderr.
    many_connections(proxy.addr, 6000);
    wait_until("6000 index lines", || proxy.entries().len() >= 6000);
    // And a transfer in full flow when the signals come.
    let client = connect(proxy.addr);
    let drain = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || std::io::copy(&mut &client, &mut std::io::sink()))
    };
    let sender = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || {
            let chunk = pattern(64 * 1024, 7);
            for _ in 0..65_536 {
                if (&client).write_all(&chunk).is_err() {
                    return;
                }
            }
        })
    };
    let log = netrecord::log::log_path(&proxy.root, 6001);
    wait_until("the log to grow", || {
        std::fs::metadata(&log).is_ok_and(|m| m.len() > 1 << 20)
    });
    signal(&proxy.child, libc::SIGTERM);
    wait_until("the proxy to stop accepting", || {
        TcpStream::connect(proxy.addr).is_err()
    });
    signal(&proxy.child, libc::SIGINT);
    let status = wait_child(&mut proxy.child);
    assert_eq!(status.code(), Some(130), "{status:?}");
    drop(client);
    sender.join().unwrap();
    let _ = drain.join().unwrap();
    assert!(valid_log(&log).client.len() > 1 << 20);
    // Whole lines only; the open connection's may be missing, no other.
    let entries = proxy.entries();
    assert!(entries.len() >= 6000, "{}", entries.len());
    let text = std::fs::read(netrecord::index::index_path(&proxy.root)).unwrap();
    assert!(text.ends_with(b"\n"));
}

/// A port that was free a moment ago: for a proxy that must listen on the port
/// it also forwards to.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The entries of `dir`, by name.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs netrecord with `args`, which must fail at startup with one line
/// containing `needle` and exit status `code`.
fn refused(args: &[&str], code: i32, needle: &str) {
    let (got, lines) = crate::proxy::startup_failure(args);
    assert_eq!(got, code, "{args:?}: {lines:?}");
    assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
    assert!(lines[0].starts_with("netrecord: "), "{args:?}: {lines:?}");
    assert!(lines[0].contains(needle), "{args:?}: {lines:?} lacks {needle:?}");
}

#[test]
fn a_proxy_that_would_forward_to_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let root = root.to_str().unwrap();
    let port = free_port().to_string();
    let itself = "would forward every connection to itself";
    refused(&["127.0.0.1", &port, &port, root], 1, itself);
    refused(&["localhost", &port, &port, root], 1, itself);
    refused(&["127.0.0.1", &port, &port, root, "--listen", "0.0.0.0"], 1, itself);
    if have_ipv6() {
        refused(&["127.0.0.1", &port, &port, root, "--listen", "::"], 1, itself);
    }
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn a_log_root_that_is_a_directory_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let as_given = |suffix: &str| format!("{}{suffix}", dir.display());
    for root in [as_given(""), as_given("/"), as_given("/."), as_given("/missing/")] {
        refused(
            &["127.0.0.1", "80", "0", &root],
            1,
            "names a directory, not a file name prefix",
        );
    }
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
    assert_eq!(listing(parent.path()), ["logs"]);
}

#[test]
fn a_log_root_that_is_not_utf8_still_gets_its_index() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(std::ffi::OsStr::from_bytes(b"r\xe9c"));
    let upstream = Upstream::echo();
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    echo_through(proxy.addr, b"latin-1 name");
    let entries = proxy.wait_ended(1);
    assert_eq!(entries[0].log, proxy.log(1));
    assert_eq!(valid_log(&entries[0].log).client, b"latin-1 name");
    let text = std::fs::read_to_string(proxy.index()).unwrap();
    assert!(text.contains(r#""log":{"Unix":["#), "{text}");
    let (status, stderr) = proxy.stop();
    assert!(status.success(), "{stderr:?}");
    assert!(
        !stderr.iter().any(|l| l.contains("failed to write index")),
        "{stderr:?}"
    );
}

#[test]
fn an_index_another_user_could_have_prepared_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let cases: &[(&str, &str)] = &[
        ("symlink", "it is a symbolic link"),
        ("mode 0666", "writable by group or others (mode 0666)"),
        ("hard link", "it has 2 hard links"),
        ("other owner", "it is owned by uid 12345"),
    ];
    for (case, needle) in cases {
        if *case == "other owner" && !root_user {
            skip("needs root to give a file to another user");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let index = netrecord::index::index_path(&root);
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        match *case {
            "symlink" => std::os::unix::fs::symlink(&target, &index).unwrap(),
            "hard link" => std::fs::hard_link(&target, &index).unwrap(),
            _ => {
                std::fs::write(&index, b"").unwrap();
                let mode = if *case == "mode 0666" { 0o666 } else { 0o600 };
                std::fs::set_permissions(&index, std::fs::Permissions::from_mode(mode)).unwrap();
                if *case == "other owner" {
                    std::os::unix::fs::chown(&index, Some(12345), Some(12345)).unwrap();
                }
            }
        }
        let before = listing(dir.path());
        refused(&["127.0.0.1", "80", "0", root.to_str().unwrap()], 1, needle);
        assert_eq!(listing(dir.path()), before, "{case}: nothing created");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious\n", "{case}");
        assert!(std::fs::read(&index).unwrap().len() <= 9, "{case}: nothing appended");
    }
}

#[test]
fn an_index_line_cut_by_a_full_disk_is_taken_back() {
    let Some(disk) = TinyDisk::new() else {
        skip("needs root to mount a 1 MiB tmpfs");
        return;
    };
    let upstream = Upstream::echo();
    let root = disk.dir.path().join("rec");
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
    let filler = disk.dir.path().join("filler");
    fill(&filler);
    // Unrecorded connections fill the index's reserve, until its lines fail too.
    let mut failed = false;
    for i in 0..2_000 {
        echo_through(proxy.addr, format!("connection {i}").as_bytes());
        if proxy.stderr().iter().any(|l| l.contains("failed to write index")) {
            failed = true;
            break;
        }
    }
    assert!(failed, "the index never filled up");
    std::fs::remove_file(&filler).unwrap();
    echo_through(proxy.addr, b"after");
    let text = proxy.index();
    wait_until("the last connection's index line", || {
        std::fs::read_to_string(&text).unwrap().contains(r#""client_bytes":5,"#)
    });
    let bytes = std::fs::read(&text).unwrap();
    assert!(bytes.ends_with(b"\n"));
    let entries = netrecord::index::read_index(&text).expect("no torn line in the middle");
    let last = entries.last().unwrap();
    assert_eq!(last.client_bytes, 5);
    let (status, _) = proxy.stop();
    assert!(status.success());
}

/// Reads from `s` until EOF or an error, keeping what arrived.
fn read_until_gone(mut s: &TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `data` to `s` until it is all sent or the connection fails.
fn write_until_gone(mut s: &TcpStream, data: &[u8]) {
    for chunk in data.chunks(256 * 1024) {
        if s.write_all(chunk).is_err() {
            return;
        }
    }
}

#[test]
fn kill_9_during_bulk_transfers_leaves_logs_cut_only_in_their_last_record() {
    const SIZE: usize = 48 << 20;
    let to_server = std::sync::Arc::new(pattern(SIZE, 11));
    let to_client = std::sync::Arc::new(pattern(SIZE, 12));
    for run in 0..10 {
        let received_by_server = std::sync::Arc::new(std::sync::Mutex::new(None));
        let upstream = {
            let (data, received) = (
                std::sync::Arc::clone(&to_client),
                std::sync::Arc::clone(&received_by_server),
            );
            Upstream::start(move |s| {
                let reader = s.try_clone().unwrap();
                let got = thread::spawn(move || read_until_gone(&reader));
                write_until_gone(&s, &data);
                *received.lock().unwrap() = Some(got.join().unwrap());
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let mut proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), &root, &["-q"], |_| {});
        let client = connect(proxy.addr);
        let sender = {
            let (client, data) = (client.try_clone().unwrap(), std::sync::Arc::clone(&to_server));
            thread::spawn(move || write_until_gone(&client, &data))
        };
        let receiver = {
            let client = client.try_clone().unwrap();
            thread::spawn(move || read_until_gone(&client))
        };
        let log_path = proxy.log(1);
        // Kill it at a different point of the transfer each run.
        let at = (2 + run as u64 * 2) << 20;
        wait_until("the log to grow", || {
            std::fs::metadata(&log_path).is_ok_and(|m| m.len() > at)
        });
        proxy.kill();
        let got_by_client = receiver.join().unwrap();
        drop(client);
        sender.join().unwrap();
        wait_until("the server to see the end", || {
            received_by_server.lock().unwrap().is_some()
        });
        let got_by_server = received_by_server.lock().unwrap().take().unwrap();

        let log = read_log(&log_path);
        assert!(
            matches!(log.error, None | Some(netrecord::log::ReadError::Truncated { .. })),
            "run {run}: {:?}",
            log.error
        );
        // The log holds what each side sent, and at least what the other received.
        assert!(to_server.starts_with(&log.client), "run {run}");
        assert!(to_client.starts_with(&log.server), "run {run}");
        assert!(
            log.client.starts_with(&got_by_server),
            "run {run}: the server got {} bytes, the log has {}",
            got_by_server.len(),
            log.client.len()
        );
        assert!(
            log.server.starts_with(&got_by_client),
            "run {run}: the client got {} bytes, the log has {}",
            got_by_client.len(),
            log.server.len()
        );
    }
}

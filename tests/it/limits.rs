//! The limits that protect the disk and the process: `--max-log-bytes`,
//! `--max-run-bytes` and `--max-connections`.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::util::*;

/// Sends `data` and a half-close while reading everything that comes back.
fn echo_all(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let client = connect(addr);
    let writer = {
        let (client, data) = (client.try_clone().unwrap(), data.to_vec());
        thread::spawn(move || {
            send(&client, &data);
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let got = read_all(&client);
    writer.join().unwrap();
    got
}

#[test]
fn a_log_stops_at_max_log_bytes_and_the_connection_flows_on() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["--max-log-bytes", "1M"]);
    let data = pattern(10 << 20, 31);
    let echoed = echo_all(proxy.addr, &data);
    assert_eq!(sha256(&echoed), sha256(&data), "the client gets all 10 MiB");
    let entries = proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert!(
        log.client.len() + log.server.len() <= 1 << 20,
        "{} + {}",
        log.client.len(),
        log.server.len()
    );
    assert!(data.starts_with(&log.client) && data.starts_with(&log.server));
    assert!(!log.summary.is_complete(), "the log is cut short: {}", log.shape());
    assert_eq!(entries[0].log_error.as_deref(), Some("size limit reached: 1 MiB"));
    assert_eq!(entries[0].client_bytes, data.len() as u64);
    // The next connection has a limit of its own.
    assert_eq!(echo_all(proxy.addr, b"small"), b"small");
    proxy.wait_ended(2);
    let next = valid_log(&proxy.log(2));
    assert!(next.summary.is_complete(), "{}", next.shape());
    assert_eq!(next.client, b"small");
    let (status, stderr) = proxy.stop();
    assert!(status.success());
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("#1: size limit reached: 1 MiB; recording stopped for this connection")),
        "{stderr:?}"
    );
}

#[test]
fn max_run_bytes_ends_recording_for_the_run_but_not_its_traffic() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["--max-run-bytes", "100K", "-q"]);
    // Each connection logs 60 KiB (30 each way): the second one does not fit.
    for i in 0..4 {
        let data = pattern(30 << 10, 40 + i);
        assert_eq!(
            sha256(&echo_all(proxy.addr, &data)),
            sha256(&data),
            "connection {}",
            i + 1
        );
    }
    let entries = proxy.wait_ended(4);
    let mut numbers: Vec<u64> = entries.iter().map(|e| e.conn).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let entry = |n: u64| entries.iter().find(|e| e.conn == n).unwrap();
    assert!(entry(1).log_error.is_none());
    assert!(valid_log(&proxy.log(1)).summary.is_complete());
    let full = "run size limit reached: 100 KiB";
    assert_eq!(entry(2).log_error.as_deref(), Some(full));
    let second = valid_log(&proxy.log(2));
    let logged = [1, 2].map(|n| {
        let l = valid_log(&proxy.log(n));
        l.client.len() + l.server.len()
    });
    assert!(logged.iter().sum::<usize>() <= 100 << 10, "{logged:?}");
    assert!(!second.summary.is_complete());
    for n in [3, 4] {
        assert_eq!(entry(n).log_error.as_deref(), Some(full), "#{n}");
        assert!(!proxy.log(n).exists(), "no log is started once the run is full");
        assert_eq!(entry(n).client_bytes, 30 << 10);
    }
    let (status, stderr) = proxy.stop();
    assert!(status.success());
    assert_eq!(
        stderr
            .iter()
            .filter(|l| l.contains("new connections get no log"))
            .count(),
        1,
        "{stderr:?}"
    );
}

/// The `Threads:` count of process `pid`.
fn threads_of(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
}

#[test]
fn max_connections_makes_clients_wait_instead_of_starting_threads() {
    const LIMIT: usize = 50;
    const CLIENTS: usize = 200;
    // The upstream counts connections open at once, and holds the first ones
    // until the limit is reached, so that the limit is really hit.
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(AtomicBool::new(false));
    let upstream = {
        let (open, most, gate) = (Arc::clone(&open), Arc::clone(&most), Arc::clone(&gate));
        Upstream::start(move |mut s| {
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            if now >= LIMIT {
                gate.store(true, Ordering::SeqCst);
            }
            wait_until("the limit to be reached", || gate.load(Ordering::SeqCst));
            let mut r = s.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut s);
            let _ = s.shutdown(Shutdown::Write);
            open.fetch_sub(1, Ordering::SeqCst);
        })
    };
    let proxy = Proxy::start(upstream.addr, &["-q", "--max-connections", &LIMIT.to_string()]);
    let pid = proxy.pid();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(0));
    let watcher = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(n) = threads_of(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(n);
                }
                thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let addr = proxy.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let data = pattern(16 << 10, 200 + i as u64);
                let client: TcpStream = connect(addr);
                let writer = {
                    let (client, data) = (client.try_clone().unwrap(), data.clone());
                    thread::spawn(move || {
                        send(&client, &data);
                        client.shutdown(Shutdown::Write).unwrap();
                    })
                };
                assert_eq!(sha256(&read_all(&client)), sha256(&data), "client {i}");
                writer.join().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let entries = proxy.wait_ended(CLIENTS);
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(entries.len(), CLIENTS, "nothing lost");
    assert!(
        most.load(Ordering::SeqCst) <= LIMIT,
        "{} at once",
        most.load(Ordering::SeqCst)
    );
    assert_eq!(most.load(Ordering::SeqCst), LIMIT, "the limit was reached");
    // Two threads per connection, plus the main, signal and stderr threads.
    let peak = *peak.lock().unwrap();
    assert!(peak <= 2 * LIMIT + 3, "{peak} threads");
    for e in &entries {
        assert!(valid_log(&e.log).summary.is_complete(), "{}", e.log.display());
    }
    let (status, _) = proxy.stop();
    assert!(status.success());
}

#[test]
fn bad_sizes_and_counts_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let root = root.to_str().unwrap();
    for (option, value) in [
        ("--max-log-bytes", "0"),
        ("--max-log-bytes", "-1"),
        ("--max-log-bytes", "12Q"),
        ("--max-run-bytes", "99999999999999G"),
        ("--max-run-bytes", "18446744073709551616"),
        ("--max-connections", "0"),
        ("--max-connections", "many"),
    ] {
        let arg = format!("{option}={value}");
        let (code, lines) = crate::proxy::startup_failure(&["127.0.0.1", "80", "0", root, &arg]);
        assert_eq!(code, 2, "{arg}: {lines:?}");
        assert_eq!(lines.len(), 1, "{arg}: {lines:?}");
        assert!(
            lines[0].starts_with("netrecord: ") && lines[0].contains(option),
            "{arg}: {lines:?}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

//! Tests of netrecord pcap: logs recorded through the real proxy, exported, and read
//! back by tshark, which must see the same bytes, good checksums and well-formed TCP.

use std::net::{Shutdown, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use netrecord::log::Event;

use crate::util::*;

/// Whether tshark can run here; says why not when it cannot.
fn have_tshark() -> bool {
    let ok = have_tool("tshark");
    if !ok {
        skip("tshark is not installed (CI installs it)");
    }
    ok
}

/// Runs `netrecord pcap` with `args`.
fn pcap(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("pcap")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run netrecord pcap")
}

/// Exports `logs` into `out`, which must succeed; returns stderr.
fn export(logs: &[&Path], out: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&str> = logs.iter().map(|p| p.to_str().unwrap()).collect();
    args.extend(["-o", out.to_str().unwrap()]);
    args.extend(extra);
    let output = pcap(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "netrecord pcap failed: {stderr}");
    stderr
}

/// Runs tshark on `file` with `args` and returns its stdout.
fn tshark(file: &Path, args: &[&str]) -> String {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tshark");
    assert!(
        output.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One field per packet, e.g. `tcp.flags.str`.
fn fields(file: &Path, names: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-T", "fields"];
    for name in names {
        args.extend(["-e", name]);
    }
    tshark(file, &args)
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

/// What `follow,tcp,raw` gives back for one stream: its two nodes and each one's bytes.
#[derive(Debug)]
struct Followed {
    client: String,
    server: String,
    client_bytes: Vec<u8>,
    server_bytes: Vec<u8>,
}

fn follow(file: &Path, stream: u32) -> Followed {
    let text = tshark(file, &["-q", "-z", &format!("follow,tcp,raw,{stream}")]);
    let mut followed = Followed {
        client: String::new(),
        server: String::new(),
        client_bytes: Vec::new(),
        server_bytes: Vec::new(),
    };
    let mut in_data = false;
    for line in text.lines() {
        if let Some(node) = line.strip_prefix("Node 0: ") {
            followed.client = node.to_string();
        } else if let Some(node) = line.strip_prefix("Node 1: ") {
            followed.server = node.to_string();
            in_data = true;
        } else if line.starts_with("=====") {
            in_data = false;
        } else if in_data && !line.is_empty() {
            // Node 1's data is indented with a tab.
            let (to, hex) = match line.strip_prefix('\t') {
                Some(hex) => (&mut followed.server_bytes, hex),
                None => (&mut followed.client_bytes, line),
            };
            to.extend(unhex(hex));
        }
    }
    assert!(!followed.client.is_empty(), "no stream {stream} in:\n{text}");
    followed
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex line {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {hex:?}")))
        .collect()
}

/// Asserts that tshark, checking every checksum, finds them all good and no packet
/// malformed, raises no expert warning or error (retransmissions, lost segments,
/// ACKs of unseen data) but those whose summary contains one of `expected`, and
/// flags no packet in its TCP analysis.
fn assert_clean(file: &Path, expected: &[&str]) {
    let checks = ["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"];
    let mut args = checks.to_vec();
    args.push("-V");
    let verbose = tshark(file, &args);
    assert!(!verbose.contains("Malformed"), "malformed packets:\n{verbose}");
    assert!(!verbose.contains("Status: Bad"), "bad checksums:\n{verbose}");
    assert!(
        verbose.contains("[Checksum Status: Good]"),
        "tshark checked no checksum:\n{verbose}"
    );
    let mut args = checks.to_vec();
    args.extend(["-q", "-z", "expert,warn"]);
    let expert = tshark(file, &args);
    // The report lists warnings and errors under headers such as `Warns (1)`, one
    // per line that starts with its frequency.
    let unexpected: Vec<&str> = expert
        .lines()
        .filter(|line| line.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .filter(|line| !expected.iter().any(|e| line.contains(e)))
        .collect();
    assert!(unexpected.is_empty(), "unexpected expert info:\n{expert}");
    // TCP analysis problems that are only notes: duplicate ACKs, keep-alives,
    // window updates out of place.
    let flagged = tshark(file, &["-Y", "tcp.analysis.flags"]);
    assert!(flagged.is_empty(), "tcp analysis flags:\n{flagged}");
}

/// The packet times (Unix seconds with microseconds) must never go backwards.
fn assert_time_ordered(file: &Path) -> Vec<f64> {
    let times: Vec<f64> = fields(file, &["frame.time_epoch"])
        .iter()
        .map(|f| f[0].parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    times
}

/// A socket address as tshark's follow output writes it (`[::1]:80` for IPv6).
fn node(addr: SocketAddr) -> String {
    addr.to_string()
}

#[test]
fn a_large_exchange_reads_back_byte_for_byte_with_real_addresses_and_times() {
    if !have_tshark() {
        return;
    }
    let request = pattern(300 * 1024, 1);
    let reply: &'static [u8] = pattern(200 * 1024, 2).leak();
    let (dir, log_path) = record_exchange(&request, reply);
    let log = valid_log(&log_path);
    assert!(
        log.events.iter().any(|(_, e)| matches!(e, Event::Data(n) if *n > 1460)),
        "no record needs splitting: {}",
        log.shape()
    );
    let entry = &netrecord::index::read_index(&dir.path().join("rec_index.jsonl")).unwrap()[0];
    let out = dir.path().join("out.pcap");
    export(&[&log_path], &out, &[]);

    let followed = follow(&out, 0);
    assert_eq!(followed.client, node(entry.client));
    assert_eq!(followed.server, node(entry.upstream.unwrap()));
    assert_eq!(sha256(&followed.client_bytes), sha256(&log.client));
    assert_eq!(sha256(&followed.server_bytes), sha256(&log.server));
    assert_eq!(followed.client_bytes.len(), request.len());
    assert_clean(&out, &[]);
    let times = assert_time_ordered(&out);
    let first_us = (times[0] * 1e6).round() as u64;
    assert_eq!(first_us, entry.start_unix_us);
    // The handshake opens it and both FINs close it.
    let flags = fields(&out, &["tcp.flags.str"]);
    let flags: Vec<&str> = flags.iter().map(|f| f[0].as_str()).collect();
    assert!(flags[0].contains('S') && !flags[0].contains('A'), "{:?}", &flags[..3]);
    assert_eq!(flags.iter().filter(|f| f.contains('F')).count(), 2);
}

#[test]
fn an_ipv6_recording_exports_as_ipv6() {
    if !have_tshark() {
        return;
    }
    if !have_ipv6() {
        skip("::1 is not available here");
        return;
    }
    let upstream = Upstream::start_on("[::1]:0", |s| {
        let request = read_all(&s);
        send(&s, &request.iter().rev().copied().collect::<Vec<_>>());
        let _ = s.shutdown(Shutdown::Write);
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let proxy = Proxy::start_in("::1", upstream.addr.port(), &root, &["-q", "--listen", "::1"], |_| {});
    let client = connect(proxy.addr);
    let request = pattern(5000, 3);
    send(&client, &request);
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client).len(), request.len());
    let entry = proxy.wait_ended(1).remove(0);
    let log_path = proxy.log(1);
    assert!(proxy.stop().0.success());
    let log = valid_log(&log_path);

    let out = dir.path().join("v6.pcap");
    export(&[&log_path], &out, &[]);
    let followed = follow(&out, 0);
    assert_eq!(followed.client, node(entry.client));
    assert!(followed.client.starts_with("[::1]:"), "{followed:?}");
    assert_eq!(followed.server, node(upstream.addr));
    assert_eq!(followed.client_bytes, log.client);
    assert_eq!(followed.server_bytes, log.server);
    let sources = fields(&out, &["ipv6.src", "ip.src"]);
    assert!(sources.iter().all(|f| f[0] == "::1" && f[1].is_empty()), "{sources:?}");
    assert_clean(&out, &[]);
}

#[test]
fn overlapping_logs_become_interleaved_streams_in_time_order() {
    if !have_tshark() {
        return;
    }
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let a = connect(proxy.addr);
    // B's connection is accepted after A's: wait for its log to be sure.
    wait_until("log 1", || proxy.log(1).exists());
    let b = connect(proxy.addr);
    wait_until("log 2", || proxy.log(2).exists());
    for (i, s) in [&a, &b, &a, &b].into_iter().enumerate() {
        let data = pattern(100 + i, i as u64);
        send(s, &data);
        assert_eq!(read_n(s, data.len()), data);
    }
    for s in [&b, &a] {
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(s), b"");
    }
    let entries = proxy.wait_ended(2);
    let logs = [proxy.log(1), proxy.log(2)];
    let out = proxy.root.with_file_name("both.pcap");
    // As `netrecord pcap rec_* -o both.pcap` would, with the index among the logs.
    let index = proxy.index();
    let stderr = export(&[&logs[0], &index, &logs[1]], &out, &["--server-port", "7"]);
    assert!(
        stderr.ends_with(&format!("in 2 TCP streams to {}\n", out.display())),
        "{stderr}"
    );

    let streams = fields(&out, &["tcp.stream"]);
    let streams: Vec<&str> = streams.iter().map(|f| f[0].as_str()).collect();
    let first_b = streams.iter().position(|s| *s == "1").expect("a second stream");
    assert!(
        streams[first_b..].contains(&"0"),
        "the streams do not interleave: {streams:?}"
    );
    assert!(streams.iter().all(|s| *s == "0" || *s == "1"), "{streams:?}");
    assert_time_ordered(&out);
    assert_clean(&out, &[]);
    for (stream, log) in logs.iter().enumerate() {
        let log = valid_log(log);
        let followed = follow(&out, stream as u32);
        let entry = entries.iter().find(|e| e.conn == stream as u64 + 1).unwrap();
        assert_eq!(followed.client, node(entry.client));
        assert!(followed.server.ends_with(":7"), "--server-port ignored: {followed:?}");
        assert_eq!(followed.client_bytes, log.client);
        assert_eq!(followed.server_bytes, log.server);
    }
    drop(proxy);
}

#[test]
fn a_failed_connect_is_a_syn_answered_by_rst() {
    if !have_tshark() {
        return;
    }
    // A port nothing listens on: bound, read back, closed.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = Proxy::start(closed, &["-q"]);
    let client = connect(proxy.addr);
    let _ = read_all_or_reset(&client);
    proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert_eq!(log.shape(), "c con, s err");
    let out = proxy.root.with_file_name("refused.pcap");
    // The index has no upstream address for a connection that never had one.
    let port = closed.port().to_string();
    export(&[&proxy.log(1)], &out, &["--server-port", &port]);
    let packets = fields(
        &out,
        &["tcp.srcport", "tcp.dstport", "tcp.flags.syn", "tcp.flags.reset"],
    );
    assert_eq!(packets.len(), 2, "{packets:?}");
    assert_eq!(packets[0][1], port, "the SYN goes to the server");
    assert_eq!(packets[0][2..], ["1", "0"], "the first packet is the SYN");
    assert_eq!(packets[1][0], port, "the RST comes from the server");
    assert_eq!(packets[1][2..], ["0", "1"], "the second packet is the RST");
    assert_clean(&out, &["Connection reset (RST)"]);
}

/// Reads to EOF, counting a reset as the end too.
fn read_all_or_reset(s: &std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = (&*s).read_to_end(&mut out);
    out
}

/// A copy of a recorded log in a directory of its own, without the run index.
fn lone_copy(log: &Path, bytes: impl FnOnce(Vec<u8>) -> Vec<u8>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy_1");
    std::fs::write(&copy, bytes(std::fs::read(log).unwrap())).unwrap();
    (dir, copy)
}

#[test]
fn without_an_index_placeholders_keep_logs_apart_and_say_so() {
    if !have_tshark() {
        return;
    }
    let (_rec, log) = record_exchange(b"hello", b"world");
    let (dir, one) = lone_copy(&log, |b| b);
    let two = dir.path().join("copy_2");
    std::fs::copy(&one, &two).unwrap();
    let out = dir.path().join("out.pcap");
    let stderr = export(&[&one, &two], &out, &[]);
    assert!(stderr.contains("no run index"), "{stderr}");
    assert_eq!(follow(&out, 0).client, "10.0.0.1:49152");
    let second = follow(&out, 1);
    assert_eq!(second.client, "10.0.0.1:49153");
    assert_eq!(second.server, "10.0.0.2:40000");
    assert_eq!(
        (second.client_bytes.as_slice(), second.server_bytes.as_slice()),
        (&b"hello"[..], &b"world"[..])
    );
    let first = fields(&out, &["frame.time_epoch"])[0][0].clone();
    assert!(first.starts_with("946684800."), "{first}");
    assert_clean(&out, &[]);
}

#[test]
fn a_truncated_log_exports_what_it_has_without_fin() {
    if !have_tshark() {
        return;
    }
    let (_rec, log) = record_exchange(b"request", b"reply");
    let full = valid_log(&log);
    // The upstream answers after the client's hup.
    assert_eq!(full.merged_shape(), "c con, c 7, c hup, s 5, s hup");
    // Cut inside the server's payload: "reply" loses its last two bytes.
    let (dir, cut) = lone_copy(&log, |b| {
        let at = b.windows(5).position(|w| w == b"reply").unwrap() + 3;
        b[..at].to_vec()
    });
    let out = dir.path().join("cut.pcap");
    let stderr = export(&[&cut], &out, &[]);
    assert!(
        stderr.contains(&format!("log {}: truncated record at byte", cut.display())),
        "{stderr}"
    );
    // The bytes of the record cut short that are in the log are exported too.
    let followed = follow(&out, 0);
    assert_eq!(followed.client_bytes, b"request");
    assert_eq!(followed.server_bytes, b"rep");
    // The client's FIN is in the log; the server's end is not, and is not made up.
    let fins: Vec<String> = fields(&out, &["tcp.flags.fin", "tcp.srcport"])
        .into_iter()
        .filter(|f| f[0] == "1")
        .map(|f| f[1].clone())
        .collect();
    assert_eq!(fins, ["49152"]);
    assert_clean(&out, &[]);
}

#[test]
fn a_corrupt_log_is_an_error_naming_file_and_offset_and_leaves_no_pcap() {
    let (_rec, log) = record_exchange(b"request", b"reply");
    // Make the server's record claim a time before the client's.
    let (dir, bad) = lone_copy(&log, |b| {
        let at = b.windows(2).position(|w| w == b"s ").unwrap();
        let mut out = b[..at].to_vec();
        out.extend_from_slice(b"s 0.000000 5\nreply");
        out
    });
    let offset = std::fs::read(&bad)
        .unwrap()
        .windows(2)
        .position(|w| w == b"s ")
        .unwrap();
    let out = dir.path().join("bad.pcap");
    let output = pcap(&[bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "netrecord: invalid log {}: corrupt record at byte {offset}: time goes backwards",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(!out.exists(), "a partial pcap was left behind");
}

#[test]
fn a_missing_log_fails_before_writing_and_the_output_may_not_be_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let missing = dir.path().join("rec_1");
    let output = pcap(&[missing.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr,
        format!(
            "netrecord: failed to open log {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    assert!(!out.exists());

    let (_rec, log) = record_exchange(b"a", b"b");
    let before = std::fs::read(&log).unwrap();
    let output = pcap(&[log.to_str().unwrap(), "-o", log.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("refusing to overwrite log"));
    assert_eq!(std::fs::read(&log).unwrap(), before);
}

#[test]
fn an_open_connection_exports_what_is_recorded_so_far() {
    if !have_tshark() {
        return;
    }
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let client = connect(proxy.addr);
    send(&client, b"still here");
    assert_eq!(read_n(&client, 10), b"still here");
    let out = proxy.root.with_file_name("open.pcap");
    let stderr = export(&[&proxy.log(1)], &out, &[]);
    assert!(stderr.contains("is the connection still open?"), "{stderr}");
    assert!(
        stderr.contains(&format!("log {} ends with the connection open", proxy.log(1).display())),
        "{stderr}"
    );
    let followed = follow(&out, 0);
    assert_eq!(followed.client_bytes, b"still here");
    assert_eq!(followed.server_bytes, b"still here");
    let flags = fields(&out, &["tcp.flags.fin", "tcp.flags.reset"]);
    assert!(flags.iter().all(|f| f == &["0", "0"]), "{flags:?}");
    assert_clean(&out, &[]);
    drop(client);
}

#[test]
fn a_bad_index_line_costs_only_itself() {
    if !have_tshark() {
        return;
    }
    let (dir, log) = record_exchange(b"hello", b"world");
    let index = dir.path().join("rec_index.jsonl");
    let entry = netrecord::index::read_index(&index).unwrap().remove(0);
    // A line torn by a crash before the good one, and one cut short after it.
    let good = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, format!("{{\"conn\":7,\"lo\n{good}{{\"conn\":8,")).unwrap();
    let out = dir.path().join("out.pcap");
    let stderr = export(&[&log], &out, &[]);
    let skipped = |line: usize| format!("netrecord: skipped line {line} of index {}: ", index.display());
    assert!(stderr.contains(&skipped(1)), "{stderr}");
    assert!(stderr.contains(&skipped(3)), "{stderr}");
    assert!(!stderr.contains("placeholder"), "{stderr}");
    let followed = follow(&out, 0);
    assert_eq!(followed.client, node(entry.client));
    assert_eq!(followed.server, node(entry.upstream.unwrap()));
}

#[test]
fn the_pcap_is_private_and_replaces_a_file_only_with_force() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, log) = record_exchange(b"secret", b"token");
    let out = dir.path().join("out.pcap");
    export(&[&log], &out, &[]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o600);

    let existing = dir.path().join("notes.txt");
    std::fs::write(&existing, b"keep me").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = pcap(&[log.to_str().unwrap(), "-o", existing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "netrecord: refusing to replace {}: the file exists (give --force to replace it)\n",
            existing.display()
        )
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    assert_eq!(mode(&existing), 0o644);

    export(&[&log], &existing, &["--force"]);
    assert_eq!(std::fs::read(&existing).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(mode(&existing), 0o600);
}

#[test]
fn a_time_too_late_for_pcap_is_one_error_naming_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("late_1");
    // Valid: the largest time the format can write.
    std::fs::write(&log, "c 18446744073709.551615 con\ns 18446744073709.551615 hup\n").unwrap();
    let out = dir.path().join("late.pcap");
    let output = pcap(&[log.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!(
            "netrecord: cannot export log {}: a record at 18446744073709.551615 s on the log's clock \
             would be sent after 2106, the last time a pcap file can hold",
            log.display()
        ),
        "{stderr}"
    );
    assert!(!out.exists(), "a partial pcap was left behind");
}

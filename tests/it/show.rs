//! Tests of `netrecord show`: sessions recorded through the proxy, shown by the
//! built binary.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use netrecord::log::{Event, Reader, Record, Side};

use crate::util::*;

/// What one run of the binary produced.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("output is UTF-8")
    }
}

/// Runs `netrecord <args>` with extra environment (`None` removes a variable),
/// within the deadline.
pub fn netrecord_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let mut child = cmd.spawn().expect("spawn netrecord");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let stderr = thread::spawn(move || {
        let mut buf = String::new();
        let _ = err.read_to_string(&mut buf);
        buf
    });
    let status = wait_child(&mut child);
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs `netrecord <args>` with colour settings from the environment removed.
pub fn netrecord(args: &[&str]) -> Output {
    netrecord_env(args, &[("NO_COLOR", None), ("CLICOLOR_FORCE", None)])
}

/// A path as an argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The records of a log, with their header lengths.
pub fn records(path: &Path) -> Vec<(Record, usize)> {
    let bytes = std::fs::read(path).unwrap();
    Reader::new(&bytes[..])
        .map(|r| {
            let rec = r.unwrap();
            let start = rec.offset as usize;
            let header = bytes[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
            (rec, header)
        })
        .collect()
}

/// The payload lines shown under `side`'s headers, indentation removed and
/// joined: the escaped text of that side's whole stream, however it was split
/// into records.
fn shown_stream(text: &str, side: &str) -> String {
    let mut out = String::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(payload) = line.strip_prefix("    ") {
            if current == side {
                out.push_str(payload);
            }
        } else {
            current = line.split(' ').nth(1).unwrap_or("");
        }
    }
    out
}

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n";
const REPLY: &[u8] = b"HTTP/1.0 200 OK\r\n\r\n\x00\x01\x1b[2Jbin\xff \xc3\xa9t\xc3\xa9\\";

#[test]
fn text_shows_each_record_with_its_payload_escaped() {
    let (_dir, log) = record_exchange(REQUEST, REPLY);
    let out = netrecord(&["show", arg(&log)]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with(" client connected"), "{text}");
    assert!(lines.iter().any(|l| l.ends_with(" client hung up")), "{text}");
    assert!(lines.iter().any(|l| l.ends_with(" server hung up")), "{text}");
    assert!(
        text.contains("\n    Host: x\\r\\n\n"),
        "the line breaks after \\n:\n{text}"
    );
    assert_eq!(shown_stream(&text, "client"), "GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n");
    assert_eq!(
        shown_stream(&text, "server"),
        "HTTP/1.0 200 OK\\r\\n\\r\\n\\x00\\x01\\x1b[2Jbin\\xff été\\\\"
    );
    assert!(
        !text.contains('\x1b') && !text.contains('\0'),
        "raw control bytes in:\n{text}"
    );

    let server_only = netrecord(&["show", "--side", "s", arg(&log)]).text();
    assert!(!server_only.contains("client"), "{server_only}");
    assert!(server_only.contains("server hung up"), "{server_only}");
}

#[test]
fn raw_gives_exactly_one_side_bytes() {
    let reply: &'static [u8] = Box::leak(pattern(300_000, 7).into_boxed_slice());
    let request = pattern(70_000, 8);
    let (_dir, log) = record_exchange(&request, reply);
    let server = netrecord(&["show", "--raw", "s", arg(&log)]);
    assert!(server.status.success(), "{}", server.stderr);
    assert_eq!(sha256(&server.stdout), sha256(reply));
    let client = netrecord(&["show", "--raw", "c", arg(&log)]);
    assert_eq!(sha256(&client.stdout), sha256(&request));
}

#[test]
fn hex_offsets_count_the_side_stream() {
    let reply: &'static [u8] = Box::leak(pattern(5000, 3).into_boxed_slice());
    let (_dir, log) = record_exchange(b"hello", reply);
    let out = netrecord(&["show", "--hex", "--side", "s", arg(&log)]);
    assert!(out.status.success(), "{}", out.stderr);
    // Every byte's row offset plus column must be its position in the stream.
    let mut seen = vec![false; reply.len()];
    for line in out.text().lines().filter_map(|l| l.strip_prefix("    ")) {
        let (offset, rest) = line.split_once("  ").unwrap();
        let row = u64::from_str_radix(offset, 16).unwrap() as usize;
        for col in 0..16 {
            // Two digits and a space per byte, one more space after the eighth.
            let at = col * 3 + usize::from(col >= 8);
            let cell = &rest[at..at + 2];
            if cell != "  " {
                let pos = row + col;
                assert_eq!(u8::from_str_radix(cell, 16).unwrap(), reply[pos], "server byte {pos}");
                assert!(!seen[pos], "byte {pos} shown twice");
                seen[pos] = true;
            }
        }
    }
    assert!(seen.iter().all(|&s| s), "not every server byte was shown");
}

#[test]
fn merge_orders_two_logs_by_time_with_connection_tags() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let one = connect(proxy.addr);
    let two_then = |c: &std::net::TcpStream, data: &[u8]| {
        send(c, data);
        assert_eq!(read_n(c, data.len()), data);
    };
    two_then(&one, b"one-a");
    let two = connect(proxy.addr);
    two_then(&two, b"two-a");
    two_then(&one, b"one-b");
    two_then(&two, b"two-b");
    for c in [&one, &two] {
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(c), b"");
    }
    proxy.wait_ended(2);
    let (log1, log2) = (proxy.log(1), proxy.log(2));

    // Given in the wrong order, the timeline still comes out by time; the run
    // index (a glob of the run matches it) is not a log and is left out.
    let index = proxy.index();
    let out = netrecord(&["show", "--merge", arg(&log2), arg(&index), arg(&log1)]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = out.text();
    let mut data = Vec::new();
    let mut last_time = 0.0;
    let mut header = String::new();
    for line in text.lines() {
        let (tag, rest) = line.split_once(' ').unwrap();
        assert!(tag == "[1]" || tag == "[2]", "untagged line {line:?}");
        if let Some(payload) = rest.strip_prefix("    ") {
            data.push(format!("{tag} {header} {payload}"));
        } else {
            let mut fields = rest.split(' ');
            let time: f64 = fields.next().unwrap().parse().unwrap();
            assert!(time >= last_time, "time goes back at {line:?}");
            last_time = time;
            header = fields.next().unwrap().to_string();
        }
    }
    assert_eq!(
        data,
        [
            "[1] client one-a",
            "[1] server one-a",
            "[2] client two-a",
            "[2] server two-a",
            "[1] client one-b",
            "[1] server one-b",
            "[2] client two-b",
            "[2] server two-b"
        ]
    );

    // Without --merge, each log is shown whole under its heading, in the order given.
    let text = netrecord(&["show", arg(&log1), arg(&log2)]).text();
    let first = text.find(&format!("==> {} <==", log1.display())).expect("heading 1");
    let second = text.find(&format!("==> {} <==", log2.display())).expect("heading 2");
    assert!(first < text.find("one-b").unwrap() && text.find("one-b").unwrap() < second);
    assert!(text.find("two-a").unwrap() > second);
}

/// A recorded log and a copy of it cut inside a server payload.
fn cut_log() -> (tempfile::TempDir, PathBuf, u64) {
    let (dir, log) = record_exchange(b"ping", b"pong pong");
    let (rec, header) = records(&log)
        .into_iter()
        .find(|(r, _)| r.side == Side::Server && matches!(r.event, Event::Data(n) if n >= 2))
        .expect("a server data record");
    let bytes = std::fs::read(&log).unwrap();
    let cut = dir.path().join("cut_1");
    std::fs::write(&cut, &bytes[..rec.offset as usize + header + 1]).unwrap();
    (dir, cut, rec.offset)
}

#[test]
fn a_truncated_log_is_shown_to_its_end_with_a_note() {
    let (_dir, cut, offset) = cut_log();
    let out = netrecord(&["show", arg(&cut)]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    let text = out.text();
    assert!(text.contains("    ping\n"), "{text}");
    let note = format!("-- the log is cut short: truncated record at byte {offset}: the payload ends after 1 of ");
    assert!(text.lines().last().unwrap().starts_with(&note), "{text}");
}

#[test]
fn a_corrupt_log_is_shown_up_to_the_error_and_fails() {
    let (dir, log) = record_exchange(b"ping", b"pong");
    let (rec, _) = records(&log).into_iter().find(|(r, _)| r.side == Side::Server).unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[rec.offset as usize] = b'x';
    let bad = dir.path().join("bad_1");
    std::fs::write(&bad, bytes).unwrap();
    let out = netrecord(&["show", arg(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.text().contains("    ping\n"), "{}", out.text());
    assert!(!out.text().contains("pong"));
    let offset = rec.offset;
    assert_eq!(
        out.stderr,
        format!(
            "netrecord: invalid log {}: corrupt record at byte {offset}: side is 'x', not `c` or `s`\n",
            bad.display()
        )
    );
}

#[test]
fn color_follows_the_option_and_the_environment() {
    let (_dir, log) = record_exchange(b"ping", b"pong");
    let log = arg(&log);
    let has_escapes = |args: &[&str], env: &[(&str, Option<&str>)]| {
        let out = netrecord_env(args, env);
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout.contains(&0x1b)
    };
    let clean = [("NO_COLOR", None), ("CLICOLOR_FORCE", None)];
    assert!(has_escapes(&["show", "--color", "always", log], &clean));
    assert!(!has_escapes(&["show", "--color", "never", log], &clean));
    // Auto: a pipe is not a terminal, unless CLICOLOR_FORCE says to colour anyway;
    // NO_COLOR wins over it, and an explicit --color always wins over both.
    assert!(!has_escapes(&["show", log], &clean));
    assert!(has_escapes(
        &["show", log],
        &[("NO_COLOR", None), ("CLICOLOR_FORCE", Some("1"))]
    ));
    assert!(!has_escapes(
        &["show", log],
        &[("NO_COLOR", Some("1")), ("CLICOLOR_FORCE", Some("1"))]
    ));
    assert!(!has_escapes(
        &["show", "--color", "never", log],
        &[("CLICOLOR_FORCE", Some("1"))]
    ));
    assert!(has_escapes(
        &["show", "--color", "always", log],
        &[("NO_COLOR", Some("1"))]
    ));
}

#[test]
fn a_reader_that_closes_early_ends_show_quietly() {
    let reply: &'static [u8] = Box::leak(pattern(1 << 20, 5).into_boxed_slice());
    let (_dir, log) = record_exchange(b"send me a lot", reply);
    let mut child = Command::new(BIN)
        .args(["show", arg(&log)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, like `head -c 100`, then close the pipe. The output (several
    // MiB) is far larger than the pipe's buffer, so show is still writing.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = child.stderr.take().unwrap();
    let status = wait_child(&mut child);
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(err, "");
    assert!(first.starts_with(b"0."), "{:?}", String::from_utf8_lossy(&first));
}

/// Starts `netrecord show <args> /dev/stdin` reading from a pipe the test
/// writes, with stdout piped to a thread that collects it.
fn show_from_pipe(args: &[&str]) -> (std::process::Child, std::process::ChildStdin, Arc<Mutex<Vec<u8>>>) {
    let mut child = Command::new(BIN)
        .arg("show")
        .args(args)
        .arg("/dev/stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (child, stdin, seen)
}

#[test]
fn a_large_record_is_shown_as_it_is_read_not_after() {
    // A record of 1 GB of which only the first 300 KB exist yet: its bytes show
    // without the rest being read (or held) first, in text and raw.
    for (args, shown) in [
        (&["--hex"][..], &b"00030000  "[..]),
        (&["--raw", "s"], &[7u8; 1000][..]),
    ] {
        let (mut child, mut stdin, seen) = show_from_pipe(args);
        stdin.write_all(b"c 0.000001 con\ns 0.000002 1000000000\n").unwrap();
        stdin.write_all(&[7u8; 300_000]).unwrap();
        stdin.flush().unwrap();
        wait_until("payload bytes in the output", || {
            let seen = seen.lock().unwrap();
            seen.windows(shown.len()).any(|w| w == shown)
        });
        drop(stdin);
        let status = wait_child(&mut child);
        assert!(status.success(), "{args:?}: {status:?}");
    }
}

/// Records one echoed exchange, `data`, through a proxy on `root`, started for
/// it and stopped after; `before` runs once the proxy is up.
fn one_run(root: &Path, upstream: &Upstream, data: &[u8], before: impl FnOnce()) {
    let proxy = Proxy::start_in("127.0.0.1", upstream.addr.port(), root, &["-q"], |_| {});
    before();
    let ended = proxy.entries().len() + 1;
    let c = connect(proxy.addr);
    send(&c, data);
    assert_eq!(read_n(&c, data.len()), data);
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&c), b"");
    proxy.wait_ended(ended);
    assert!(proxy.stop().0.success());
}

/// The connection tags of a merged timeline, in order, once per record.
fn tags_in_order(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.contains("     ")) // payload lines
        .filter_map(|l| l.split(' ').next())
        .collect()
}

#[test]
fn merge_orders_logs_of_two_runs_on_one_root_by_the_wall_clock() {
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    // The first run's connection comes a second after it started; the second
    // run's at once, so on their own clocks the later connection is the earlier.
    one_run(&root, &upstream, b"first run", || {
        thread::sleep(std::time::Duration::from_secs(1))
    });
    one_run(&root, &upstream, b"second run", || {});
    let (one, two) = (netrecord::log::log_path(&root, 1), netrecord::log::log_path(&root, 2));
    let con_time = |log: &Path| records(log)[0].0.time;
    assert!(
        con_time(&two) < con_time(&one),
        "the second run's connection should be earlier on its own clock"
    );

    let out = netrecord(&["show", "--merge", arg(&two), arg(&one)]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    let text = out.text();
    let tags = tags_in_order(&text);
    let first_two = tags.iter().position(|t| *t == "[2]").unwrap();
    assert!(tags[..first_two].iter().all(|t| *t == "[1]"), "{text}");
    assert!(tags[first_two..].iter().all(|t| *t == "[2]"), "{text}");

    // Without the index the runs cannot be told apart: merged by the logs' own
    // clocks, with one note saying so.
    std::fs::rename(netrecord::index::index_path(&root), dir.path().join("moved.jsonl")).unwrap();
    let out = netrecord(&["show", "--merge", arg(&one), arg(&two)]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "netrecord: there is no run index {}: ",
            netrecord::index::index_path(&root).display()
        )) && out
            .stderr
            .contains("logs of different runs cannot be ordered against each other"),
        "{}",
        out.stderr
    );
    assert_eq!(tags_in_order(&out.text())[0], "[2]", "{}", out.text());
}

#[test]
fn bytes_and_file_names_that_could_drive_the_terminal_are_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let (dir, log) = record_exchange(b"ping", b"pong");
    let (rec, _) = records(&log).into_iter().find(|(r, _)| r.side == Side::Server).unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    for (side, shown) in [(0xffu8, "'\\xff'"), (0x83, "'\\x83'")] {
        bytes[rec.offset as usize] = side;
        // A name with an escape sequence and a byte that is not UTF-8.
        let name = std::ffi::OsStr::from_bytes(b"bad\x1b[31m\xfe_1");
        let bad = dir.path().join(name);
        std::fs::write(&bad, &bytes).unwrap();
        let shown_name = format!("{}/bad\\x1b[31m\\xfe_1", dir.path().display());
        let out = Command::new(BIN).arg("show").arg(&bad).arg(&log).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(!stdout.contains('\x1b') && !stderr.contains('\x1b'), "{stdout}{stderr}");
        assert!(stdout.contains(&format!("==> {shown_name} <==")), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "-- corrupt record at byte {}: side is {shown}, not `c` or `s`",
                rec.offset
            )),
            "{stdout}"
        );
        assert_eq!(
            stderr,
            format!(
                "netrecord: invalid log {shown_name}: corrupt record at byte {}: side is {shown}, not `c` or `s`\n",
                rec.offset
            )
        );
        let out = Command::new(BIN).arg("check").arg(&bad).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout,
            format!(
                "{shown_name}: invalid, corrupt record at byte {}: side is {shown}, not `c` or `s`\n",
                rec.offset
            )
        );
        let pcap = dir.path().join("out.pcap");
        let out = Command::new(BIN)
            .args(["pcap", "-o"])
            .arg(&pcap)
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains('\x1b'), "{stderr}");
        assert!(
            stderr.contains(&format!("netrecord: invalid log {shown_name}: ")),
            "{stderr}"
        );
        assert!(stderr.contains("no run index"), "{stderr}");
    }
}

/// Decodes standard base64 with padding.
fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?} in {text:?}"),
    };
    assert!(text.len().is_multiple_of(4), "{text:?}");
    let mut out = Vec::new();
    for quad in text.as_bytes().chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let n = quad[..4 - pad]
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | u32::from(value(c)) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

#[test]
fn json_gives_back_every_byte_of_both_sides() {
    // All 256 byte values, invalid UTF-8, and a character split between the
    // client's two writes.
    let mut request: Vec<u8> = (0..=255u8).collect();
    request.extend_from_slice(b"\xc3\x28 \xe2\x82 \xff\xfe plain\ttext\r\n \xe6");
    // Clean text, sent at once: one record, shown as text.
    let reply: &'static [u8] = "HTTP/1.0 200 OK\r\n\r\n\tété 日本\n".as_bytes();
    let upstream = Upstream::start(move |s| {
        let _ = read_all(&s);
        send(&s, reply);
        let _ = s.shutdown(Shutdown::Write);
    });
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let client = connect(proxy.addr);
    send(&client, &request);
    send(&client, b"\x97\xa5 rest");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), reply);
    proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    request.extend_from_slice(b"\x97\xa5 rest");
    assert_eq!(
        (log.client.as_slice(), log.server.as_slice()),
        (request.as_slice(), reply)
    );

    let out = netrecord(&["show", "--json", arg(&proxy.log(1))]);
    assert!(out.status.success(), "{}", out.stderr);
    let mut sides = [Vec::new(), Vec::new()];
    let mut events = Vec::new();
    let (mut texts, mut base64s) = (0, 0);
    for line in out.text().lines() {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(object["conn"], 1, "{line}");
        let side = object["side"].as_str().unwrap();
        let event = object["event"].as_str().unwrap();
        assert!(object["time_us"].is_u64(), "{line}");
        events.push(format!("{} {event}", &side[..1]));
        if event != "data" {
            assert_eq!(object.as_object().unwrap().len(), 4, "{line}");
            continue;
        }
        let bytes = match (object.get("text"), object.get("base64")) {
            (Some(text), None) => {
                texts += 1;
                text.as_str().unwrap().as_bytes().to_vec()
            }
            (None, Some(coded)) => {
                base64s += 1;
                unbase64(coded.as_str().unwrap())
            }
            _ => panic!("data as neither text nor base64, or both: {line}"),
        };
        assert_eq!(object["len"], bytes.len(), "{line}");
        sides[usize::from(side == "server")].extend(bytes);
    }
    assert_eq!(sha256(&sides[0]), sha256(&log.client));
    assert_eq!(sha256(&sides[1]), sha256(&log.server));
    assert!(base64s > 0 && texts > 0, "{}", out.text());
    let shape: Vec<String> = log
        .events
        .iter()
        .map(|(s, e)| {
            let what = match e {
                Event::Con => "con",
                Event::Data(_) => "data",
                Event::Hup => "hup",
                Event::Err => "err",
            };
            format!("{} {what}", s.letter())
        })
        .collect();
    assert_eq!(events, shape);
    drop(proxy);
}

/// A `netrecord show --follow` process, its output collected as it comes,
/// stopped by its own handle.
struct Follower {
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        let mut child = Command::new(BIN)
            .args(["show", "--follow"])
            .args(args)
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |mut pipe: Box<dyn Read + Send>| {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&seen);
            thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            seen
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Follower { child, stdout, stderr }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn errors(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `text`.
    fn wait_for(&self, text: &str) {
        wait_until(&format!("{text:?} in the follower's output"), || {
            self.output().contains(text)
        });
    }

    /// Whether the follower is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the follower to exit by itself; returns its status, once all
    /// its output has been collected.
    fn exit(&mut self) -> ExitStatus {
        let status = wait_child(&mut self.child);
        // The pipes close at the exit: their readers finish soon after.
        let closed = || Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1;
        wait_until("the follower's output to be read", closed);
        status
    }

    /// Stops the follower with `sig` and returns its status.
    fn stop(&mut self, sig: i32) -> ExitStatus {
        signal(&self.child, sig);
        self.exit()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_shows_a_live_connection_and_ends_with_it() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let client = connect(proxy.addr);
    wait_until("log 1", || proxy.log(1).exists());
    let mut text = Follower::start(&[arg(&proxy.log(1))]);
    let mut json = Follower::start(&["--json", arg(&proxy.log(1))]);
    let mut raw = Follower::start(&["--raw", "s", arg(&proxy.log(1))]);
    let mut hex = Follower::start(&["--hex", "--side", "s", "--color", "always", arg(&proxy.log(1))]);
    text.wait_for(" client connected\n");
    for round in ["first", "second"] {
        send(&client, round.as_bytes());
        assert_eq!(read_n(&client, round.len()), round.as_bytes());
        // Shown while the connection is still open.
        text.wait_for(&format!(" server {} bytes\n    {round}\n", round.len()));
        json.wait_for("\"side\":\"server\",");
        json.wait_for(&format!("\"text\":\"{round}\""));
        raw.wait_for(round);
        assert!(text.running() && json.running() && raw.running() && hex.running());
    }
    // "second" is server bytes 5 to 10, in the row at 0 (a gap after the 8th), painted.
    hex.wait_for("73 65 63  6f 6e 64");
    assert!(
        hex.output().contains('\x1b') && !hex.output().contains("client"),
        "{}",
        hex.output()
    );
    assert!(!text.output().contains("hung up"), "{}", text.output());
    // The client hangs up, the echo server after it: the followers end.
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"");
    for follower in [&mut text, &mut json, &mut raw, &mut hex] {
        let status = follower.exit();
        assert!(status.success(), "{status:?}: {}", follower.errors());
        assert_eq!(follower.errors(), "");
    }
    let shown = text.output();
    assert!(
        shown.contains(" client hung up\n") && shown.contains(" server hung up\n"),
        "{shown}"
    );
    assert_eq!(raw.output(), "firstsecond");
    let events: Vec<serde_json::Value> = json
        .output()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.iter().filter(|e| e["event"] == "hup").count(), 2);
    // What was shown live is what `show` shows of the whole log.
    assert_eq!(shown, netrecord(&["show", arg(&proxy.log(1))]).text());
}

#[test]
fn follow_of_a_root_shows_each_new_connection_tagged() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    // One connection before the follower starts, ended.
    let first = connect(proxy.addr);
    send(&first, b"before");
    assert_eq!(read_n(&first, 6), b"before");
    first.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&first), b"");
    proxy.wait_ended(1);
    let mut follower = Follower::start(&[arg(&proxy.root)]);
    follower.wait_for("[1]     before\n");
    follower.wait_for("[1] -- the connection has ended\n");
    let second = connect(proxy.addr);
    follower.wait_for("[2] ");
    let third = connect(proxy.addr);
    follower.wait_for("[3] ");
    for (c, data) in [(&second, &b"two"[..]), (&third, b"three"), (&second, b"two again")] {
        send(c, data);
        assert_eq!(read_n(c, data.len()), data);
    }
    follower.wait_for("[2]     two again\n");
    follower.wait_for("[3]     three\n");
    third.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&third), b"");
    follower.wait_for("[3] -- the connection has ended\n");
    assert!(follower.running());
    assert!(!follower.output().contains("[2] -- the connection has ended"));
    let status = follower.stop(libc::SIGINT);
    assert!(status.success(), "{status:?}: {}", follower.errors());
    assert_eq!(follower.errors(), "");
    let shown = follower.output();
    for n in 1..=3 {
        assert!(
            shown.contains(&format!("[{n}] ")) && shown.contains(" client connected\n"),
            "{shown}"
        );
    }
    // Every line is tagged, and each connection's lines are its log's.
    assert!(shown.lines().all(|l| l.starts_with('[')), "{shown}");
    drop(second);
}

#[test]
fn follow_waits_for_a_half_written_record_and_still_fails_on_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rec_1");
    std::fs::write(&log, b"c 0.000001 con\ns 0.000002 10\nhello").unwrap();
    let mut text = Follower::start(&[arg(&log)]);
    let mut json = Follower::start(&["--json", arg(&log)]);
    text.wait_for("0.000002 server 10 bytes\n    hello");
    json.wait_for("\"event\":\"con\"}\n");
    // Still waiting, with nothing to say about the record cut so far; JSON holds
    // the part of the payload it has until the record is whole.
    assert!(text.running() && json.running());
    assert_eq!(text.errors(), "");
    assert_eq!(
        json.output(),
        "{\"conn\":1,\"side\":\"client\",\"time_us\":1,\"event\":\"con\"}\n"
    );
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(b"world").unwrap();
    file.write_all(b"c 0.000003 hup\ns 0.0").unwrap();
    text.wait_for("client hung up\n");
    assert!(text.running());
    file.write_all(b"00004 hup\n").unwrap();
    for follower in [&mut text, &mut json] {
        let status = follower.exit();
        assert!(status.success(), "{status:?}: {}", follower.errors());
        assert_eq!(follower.errors(), "");
    }
    assert_eq!(
        text.output(),
        "0.000001 client connected\n0.000002 server 10 bytes\n    helloworld\n\
         0.000003 client hung up\n0.000004 server hung up\n"
    );
    assert!(
        json.output().contains("\"len\":10,\"text\":\"helloworld\"}\n"),
        "{}",
        json.output()
    );

    // A violation stops the follower with the error and its offset, whether it
    // is there from the start or written while it waits.
    let bad = dir.path().join("bad_1");
    std::fs::write(&bad, b"c 0.000001 con\nc 0.000002 3\nabc").unwrap();
    let mut follower = Follower::start(&[arg(&bad)]);
    follower.wait_for("    abc\n");
    let mut file = std::fs::OpenOptions::new().append(true).open(&bad).unwrap();
    file.write_all(b"c 0.000001 hup\n").unwrap();
    let status = follower.exit();
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        follower.errors(),
        format!(
            "netrecord: invalid log {}: corrupt record at byte 31: time goes backwards (0.000001 after 0.000002)\n",
            bad.display()
        )
    );
    assert!(
        follower
            .output()
            .ends_with("-- corrupt record at byte 31: time goes backwards (0.000001 after 0.000002)\n")
    );
}

#[test]
fn follow_of_a_root_sees_a_log_created_while_it_waits_inside_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let one = netrecord::log::log_path(&root, 1);
    let three = netrecord::log::log_path(&root, 3);
    std::fs::write(&one, b"c 0.000001 con\ns 0.000002 8\nhal").unwrap();
    std::fs::write(&three, b"c 0.000001 con\n").unwrap();
    let mut follower = Follower::start(&[arg(&root)]);
    follower.wait_for("[1]     hal");
    follower.wait_for("[3] 0.000001 client connected\n");
    // While the follower waits for the rest of a payload, a new connection, and
    // a record in another log: neither is missed.
    std::fs::write(netrecord::log::log_path(&root, 2), b"c 0.000003 con\n").unwrap();
    let mut other = std::fs::OpenOptions::new().append(true).open(&three).unwrap();
    other.write_all(b"c 0.000004 hup\n").unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(&one).unwrap();
    file.write_all(b"f way").unwrap();
    follower.wait_for("[1]     half way\n");
    follower.wait_for("[2] 0.000003 client connected\n");
    follower.wait_for("[3] 0.000004 client hung up\n");
    assert!(follower.stop(libc::SIGTERM).success(), "{}", follower.errors());
}

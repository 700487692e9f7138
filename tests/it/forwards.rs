//! Several forwards in one run (`--forward`): real clients of real services
//! (redis-cli and redis-server, curl and Python's http.server) through one
//! netrecord, one index, one clock; and the refusals of bad `--forward` values.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// A server process a test started, stopped by its own handle when dropped.
struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Service {
    /// Starts `cmd` (which must listen on `addr`) and waits until `ready` holds.
    fn start(mut cmd: Command, addr: SocketAddr, ready: impl Fn() -> bool) -> Service {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let service = Service {
            child: cmd.spawn().expect("start the service"),
            addr,
        };
        wait_until(&format!("the service on {addr}"), ready);
        service
    }

    /// redis-server on a free loopback port, without persistence.
    fn redis() -> Service {
        let addr = free_addr("127.0.0.1:0");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        Service::start(cmd, addr, || redis_cli(addr.port(), &["ping"]) == "PONG")
    }

    /// Python's http.server serving `dir` on a free port of `ip`.
    fn http(ip: &str, dir: &Path) -> Service {
        let addr = free_addr(&SocketAddr::new(ip.parse().unwrap(), 0).to_string());
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "http.server",
            &addr.port().to_string(),
            "--bind",
            ip,
            "--directory",
        ])
        .arg(dir);
        Service::start(cmd, addr, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address with a port that was free a moment ago (for servers that cannot
/// be told to pick one and say which).
fn free_addr(at: &str) -> SocketAddr {
    TcpListener::bind(at).unwrap().local_addr().unwrap()
}

/// redis-cli's output for one command against `port`, trimmed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What curl received for `url`: the response header bytes and the body, each
/// as they came.
fn curl(url: &str, dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let (headers, body) = (dir.join(format!("{name}.headers")), dir.join(format!("{name}.body")));
    let status = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .arg(url)
        .stdin(Stdio::null())
        .status()
        .expect("run curl");
    assert!(status.success(), "curl {url}: {status:?}");
    (std::fs::read(headers).unwrap(), std::fs::read(body).unwrap())
}

/// The listening addresses of a proxy's startup lines, in order.
fn listening(proxy: &Proxy, count: usize) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    wait_until(&format!("{count} startup lines"), || {
        addrs = proxy
            .stderr()
            .iter()
            .filter_map(|l| l.split("listening on ").nth(1))
            .filter_map(|rest| rest.split([' ', ',']).next()?.parse().ok())
            .collect();
        addrs.len() >= count
    });
    addrs
}

/// The logs of a run, in connection order.
fn logs_of(root: &Path, count: u64) -> Vec<PathBuf> {
    (1..=count).map(|n| netrecord::log::log_path(root, n)).collect()
}

#[test]
fn three_forwards_record_one_timeline_in_one_index() {
    for tool in ["redis-server", "redis-cli", "curl", "python3", "tshark"] {
        if !have_tool(tool) {
            skip(&format!("{tool} is not installed (CI installs it)"));
            return;
        }
    }
    if !have_ipv6() {
        skip("::1 is not available here");
        return;
    }
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("a.txt"), b"served over IPv4\n").unwrap();
    std::fs::write(site.path().join("b.txt"), pattern(100_000, 21)).unwrap();
    let redis = Service::redis();
    let web = Service::http("127.0.0.1", site.path());
    let web6 = Service::http("::1", site.path());

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    let web_fwd = format!("0={}", web.addr);
    let web6_fwd = format!("0={}", web6.addr);
    let proxy = Proxy::start_in(
        "127.0.0.1",
        redis.addr.port(),
        &root,
        &["--forward", &web_fwd, "--forward", &web6_fwd],
        |_| {},
    );
    let at = listening(&proxy, 3);
    let (redis_at, web_at, web6_at) = (at[0], at[1], at[2]);
    assert_eq!(proxy.addr, redis_at);

    // Interleaved in time: redis, web, redis, web6, web.
    assert_eq!(redis_cli(redis_at.port(), &["set", "greeting", "hello"]), "OK");
    let got_a = curl(&format!("http://{web_at}/a.txt"), dir.path(), "a");
    assert_eq!(redis_cli(redis_at.port(), &["get", "greeting"]), "hello");
    let got_b6 = curl(&format!("http://{web6_at}/b.txt"), dir.path(), "b6");
    let got_a2 = curl(&format!("http://{web_at}/a.txt"), dir.path(), "a2");
    assert_eq!(got_a.1, b"served over IPv4\n");
    assert_eq!(got_b6.1, pattern(100_000, 21));

    let entries = proxy.wait_ended(5);
    let mut numbers: Vec<u64> = entries.iter().map(|e| e.conn).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4, 5], "one sequence across forwards");
    let entry = |n: u64| entries.iter().find(|e| e.conn == n).unwrap();
    let services = [
        (1, redis_at, redis.addr),
        (2, web_at, web.addr),
        (3, redis_at, redis.addr),
        (4, web6_at, web6.addr),
        (5, web_at, web.addr),
    ];
    for (n, listen, server) in services {
        let e = entry(n);
        assert_eq!(e.listen, Some(listen), "#{n}");
        assert_eq!(e.upstream, Some(server), "#{n}");
        assert_eq!(e.upstream_name.as_deref(), Some(server.to_string().as_str()), "#{n}");
        assert!(e.log_error.is_none(), "#{n}: {:?}", e.log_error);
    }
    // Each log holds exactly what its client sent and got.
    let log = |n| valid_log(&proxy.log(n));
    assert_eq!(log(1).client, b"*3\r\n$3\r\nset\r\n$8\r\ngreeting\r\n$5\r\nhello\r\n");
    assert_eq!(log(1).server, b"+OK\r\n");
    assert_eq!(log(3).client, b"*2\r\n$3\r\nget\r\n$8\r\ngreeting\r\n");
    assert_eq!(log(3).server, b"$5\r\nhello\r\n");
    for (n, path, got) in [(2, "/a.txt", &got_a), (4, "/b.txt", &got_b6), (5, "/a.txt", &got_a2)] {
        let l = log(n);
        assert!(
            l.client.starts_with(format!("GET {path} HTTP/1.1\r\n").as_bytes()),
            "#{n}"
        );
        assert_eq!(l.server, [got.0.clone(), got.1.clone()].concat(), "#{n}");
    }

    // `show --merge` over the run is its timeline, across services.
    let logs = logs_of(&root, 5);
    let out = Command::new(BIN)
        .args(["show", "--merge"])
        .args(&logs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let records: Vec<(u64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (tag, rest) = l.strip_prefix('[')?.split_once("] ")?;
            let time = rest.split(' ').next()?.parse().ok()?;
            Some((tag.parse().ok()?, time))
        })
        .collect();
    assert!(records.windows(2).all(|w| w[0].1 <= w[1].1), "{text}");
    let firsts: Vec<u64> = records.iter().fold(Vec::new(), |mut seen, (n, _)| {
        if !seen.contains(n) {
            seen.push(*n);
        }
        seen
    });
    assert_eq!(firsts, [1, 2, 3, 4, 5], "{text}");

    // The pcap keeps each service's own port, so tshark dissects each by it.
    let pcap = dir.path().join("sys.pcap");
    let out = Command::new(BIN)
        .arg("pcap")
        .args(&logs)
        .arg("-o")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let decode = |port: u16, proto: &str| format!("tcp.port=={port},{proto}");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", &decode(redis.addr.port(), "resp")])
        .args(["-d", &decode(web.addr.port(), "http")])
        .args(["-d", &decode(web6.addr.port(), "http")])
        .args([
            "-T",
            "fields",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.dstport",
            "-e",
            "_ws.col.Protocol",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let protocols = |stream: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.split('\t').next() == Some(stream))
            .map(|l| l.split('\t').nth(2).unwrap_or("").to_string())
            .collect()
    };
    for (stream, proto) in [
        ("0", "RESP"),
        ("1", "HTTP"),
        ("2", "RESP"),
        ("3", "HTTP"),
        ("4", "HTTP"),
    ] {
        assert!(protocols(stream).iter().any(|p| p == proto), "stream {stream}:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.contains(&format!("\t{}\t", web6.addr.port()))),
        "the IPv6 service keeps its port:\n{text}"
    );
    let (status, stderr) = proxy.stop();
    assert!(status.success());
    let line = stderr.iter().find(|l| l.contains("#4 from")).unwrap();
    assert!(
        line.contains(&format!("on port {} for {}", web6_at.port(), web6.addr)),
        "{line}"
    );
}

#[test]
fn bad_forwards_are_refused_with_one_line_and_nothing_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let root = root.to_str().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let up = Upstream::echo();
    let up_port = up.addr.port().to_string();
    let taken = free_addr("127.0.0.1:0").port();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["--forward".into(), "7000".into()], 2, "PROXY_PORT=HOST:PORT"),
        (vec!["--forward".into(), "=x:1".into()], 2, "not a proxy port"),
        (vec!["--forward".into(), "7000=host".into()], 2, "PROXY_PORT=HOST:PORT"),
        (
            vec!["--forward".into(), "7000=host:70000".into()],
            2,
            "not a server port",
        ),
        (vec!["--forward".into(), "7000=::1:80".into()], 2, "in brackets"),
        (
            vec![
                "--forward".into(),
                format!("{taken}=127.0.0.1:80"),
                "--forward".into(),
                format!("{taken}=127.0.0.1:81"),
            ],
            2,
            "is given to two forwards",
        ),
        (
            vec!["--forward".into(), format!("{busy_port}=127.0.0.1:80")],
            1,
            "could not listen on 127.0.0.1:",
        ),
        (
            vec!["--forward".into(), "0=no-such-host.invalid:80".into()],
            1,
            "could not resolve server host no-such-host.invalid",
        ),
    ];
    for (extra, code, needle) in &cases {
        let mut args: Vec<&str> = vec!["127.0.0.1", &up_port, "0", root];
        args.extend(extra.iter().map(String::as_str));
        let (got, lines) = crate::proxy::startup_failure(&args);
        assert_eq!(got, *code, "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].starts_with("netrecord: "), "{args:?}: {lines:?}");
        assert!(lines[0].contains(needle), "{args:?}: {lines:?} lacks {needle:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing created");
}

#[test]
fn a_connection_that_reached_no_server_keeps_its_service_port_in_the_pcap() {
    if !have_tool("tshark") {
        skip("tshark is not installed (CI installs it)");
        return;
    }
    let closed = free_addr("127.0.0.1:0");
    let up = Upstream::echo();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let forward = format!("0={closed}");
    let proxy = Proxy::start_in("127.0.0.1", up.addr.port(), &root, &["--forward", &forward], |_| {});
    let at = listening(&proxy, 2);
    let client = connect(at[1]);
    let _ = read_all_or_reset(&client);
    let entries = proxy.wait_ended(1);
    assert_eq!(entries[0].upstream, None);
    assert_eq!(entries[0].upstream_name.as_deref(), Some(closed.to_string().as_str()));
    let pcap = dir.path().join("rec.pcap");
    let out = Command::new(BIN)
        .arg("pcap")
        .arg(proxy.log(1))
        .arg("-o")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "tcp.flags.syn==1", "-T", "fields", "-e", "tcp.dstport"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().next(), Some(closed.port().to_string().as_str()), "{text}");
}

/// Reads until EOF or a reset.
fn read_all_or_reset(s: &TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut &*s, &mut got);
    got
}

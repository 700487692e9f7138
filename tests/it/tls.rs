//! TLS through the proxy: terminating (`--tls-listen`), originating
//! (`--tls-upstream`) and both, with real clients and servers (curl, openssl
//! s_client and s_server, python's ssl) and with rustls peers in the test for
//! half-closes and large full-duplex transfers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;

use netrecord::log::End;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::util::*;

/// A CA made for the test and a server certificate it signed for `localhost`
/// and 127.0.0.1, as PEM files.
struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> TestCa {
        TestCa::for_names(&["localhost", "127.0.0.1"])
    }

    fn for_names(names: &[&str]) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        TestCa { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_file_iter(self.cert())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.key()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

/// A client configuration that trusts the CA certificate in `ca`.
fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A proxy for a server on 127.0.0.1 named `localhost`, with `tls` options, its
/// CA directory inside the test's directory. Returns it and that directory.
fn tls_proxy(port: u16, tls: &[&str]) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let mut extra: Vec<&str> = tls.to_vec();
    let ca_dir_arg = ca_dir.to_str().unwrap().to_string();
    if tls.contains(&"--tls-listen") && !tls.contains(&"--tls-cert") {
        extra.extend(["--tls-ca-dir", &ca_dir_arg]);
    }
    let proxy = Proxy::start_in("localhost", port, &dir.path().join("rec"), &extra, |_| {});
    (proxy, dir)
}

/// A proxy that terminates and originates TLS (full interception) for a server
/// whose certificate `ca` signed, with `extra` options.
fn intercepting(ca: &TestCa, port: u16, extra: &[&str]) -> (Proxy, tempfile::TempDir) {
    let ca_arg = ca.ca();
    let mut args = vec!["--tls-listen", "--tls-upstream", "--tls-ca", ca_arg.to_str().unwrap()];
    args.extend_from_slice(extra);
    tls_proxy(port, &args)
}

/// A TLS client stream through the proxy at `proxy` as `localhost`, trusting `ca`.
fn tls_stream(proxy: SocketAddr, ca: &Path) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let socket = TcpStream::connect(proxy).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(client_config(ca), name).unwrap();
    rustls::StreamOwned::new(session, socket)
}

/// netrecord's CA certificate in a directory from [`tls_proxy`].
fn netrecord_ca(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ca/netrecord-ca.pem")
}

/// A child process that is killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// python's http.server on 127.0.0.1 port 0, serving `root`, with TLS when a
/// certificate and key are given.
fn python_https(root: &Path, tls: Option<(&Path, &Path)>) -> Server {
    const SCRIPT: &str = r#"
import http.server, os, ssl, sys
os.chdir(sys.argv[1])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(SCRIPT).arg(root);
    if let Some((cert, key)) = tls {
        cmd.arg(cert).arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let line = first_line(child.stdout.take().unwrap(), |_| true);
    Server {
        port: line.trim().parse().expect("python printed its port"),
        child,
    }
}

/// `openssl s_server` on 127.0.0.1 port 0 with `args`; its port from the ACCEPT line.
fn openssl_server(ca: &TestCa, args: &[&str]) -> Server {
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0"])
        .arg("-cert")
        .arg(ca.cert())
        .arg("-key")
        .arg(ca.key())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let line = first_line(child.stdout.take().unwrap(), |l| l.starts_with("ACCEPT"));
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    Server { child, port }
}

/// The first line of `out` that `want` accepts, read on a thread with a deadline;
/// the rest of the output is drained so the writer never blocks.
fn first_line(out: impl Read + Send + 'static, want: impl Fn(&str) -> bool + Send + 'static) -> String {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if want(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(DEADLINE)
        .expect("the server never said where it listens")
}

fn need(tools: &[&str]) -> bool {
    for tool in tools {
        if !have_tool(tool) {
            skip(&format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

/// Runs curl with `args`; returns its exit status and stdout.
fn curl(args: &[&str]) -> (i32, Vec<u8>) {
    let mut child = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    (wait_child(&mut child).code().unwrap_or(-1), out)
}

#[test]
fn curl_through_full_interception_to_an_https_server() {
    if !need(&["curl", "python3"]) {
        return;
    }
    let ca = TestCa::new();
    let www = tempfile::tempdir().unwrap();
    let body = pattern(300_000, 7);
    std::fs::write(www.path().join("file"), &body).unwrap();
    let server = python_https(www.path(), Some((&ca.cert(), &ca.key())));
    let (proxy, dir) = intercepting(&ca, server.port, &[]);
    let ours = netrecord_ca(&dir);
    assert!(ours.exists(), "the CA exists once the proxy listens");
    let url = format!("https://localhost:{}/file", proxy.addr.port());
    let (status, got) = curl(&["--cacert", ours.to_str().unwrap(), &url]);
    assert_eq!(status, 0, "curl failed");
    assert_eq!(sha256(&got), sha256(&body));
    let entries = proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert!(
        log.client.starts_with(b"GET /file HTTP/1.1\r\n"),
        "{:?}",
        &log.client[..20]
    );
    assert!(log.server.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert!(log.server.ends_with(&body), "the server's payload ends with the body");
    let tls = entries[0].tls.as_ref().expect("a tls field");
    let (client, server_leg) = (tls.client.as_ref().unwrap(), tls.server.as_ref().unwrap());
    assert!(client.version.starts_with("TLSv1."), "{tls:?}");
    assert_eq!(client.sni.as_deref(), Some("localhost"));
    assert_eq!(server_leg.sni.as_deref(), Some("localhost"));
    assert_eq!(server_leg.cert_subject.as_deref(), Some("CN=localhost"));
    let der = CertificateDer::pem_file_iter(ca.cert())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(server_leg.cert_sha256.as_deref(), Some(want.as_str()));
    let (status, stderr) = proxy.stop();
    assert!(status.success());
    assert!(
        stderr[0].contains(&format!("trust netrecord's CA {}", ours.display())),
        "{stderr:?}"
    );
}

#[test]
fn tls_upstream_alone_serves_a_plain_client() {
    if !need(&["python3"]) {
        return;
    }
    let ca = TestCa::new();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello"), b"hello over TLS\n").unwrap();
    let server = python_https(www.path(), Some((&ca.cert(), &ca.key())));
    let ca_arg = ca.ca();
    let (proxy, _dir) = tls_proxy(server.port, &["--tls-upstream", "--tls-ca", ca_arg.to_str().unwrap()]);
    let client = connect(proxy.addr);
    send(&client, b"GET /hello HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let got = read_all(&client);
    assert!(got.starts_with(b"HTTP/1.0 200 OK"), "{}", String::from_utf8_lossy(&got));
    assert!(got.ends_with(b"hello over TLS\n"));
    drop(client);
    let entries = proxy.wait_ended(1);
    let tls = entries[0].tls.as_ref().unwrap();
    assert!(tls.client.is_none() && tls.server.is_some(), "{tls:?}");
    assert_eq!(valid_log(&proxy.log(1)).server, got);
}

#[test]
fn tls_listen_alone_serves_a_plain_server_and_offers_no_alpn_it_cannot_honour() {
    if !need(&["curl", "python3", "openssl"]) {
        return;
    }
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello"), b"plain behind TLS\n").unwrap();
    let server = python_https(www.path(), None);
    let (proxy, dir) = tls_proxy(server.port, &["--tls-listen"]);
    let ours = netrecord_ca(&dir);
    let url = format!("https://localhost:{}/hello", proxy.addr.port());
    let (status, got) = curl(&["--cacert", ours.to_str().unwrap(), &url]);
    assert_eq!(status, 0);
    assert_eq!(got, b"plain behind TLS\n");
    let entries = proxy.wait_ended(1);
    let tls = entries[0].tls.as_ref().unwrap();
    assert!(tls.server.is_none());
    assert_eq!(tls.client.as_ref().unwrap().alpn, None, "{tls:?}");
    // A client that connects by address sends no SNI: the minted certificate
    // covers the address it connected to.
    let by_address = format!("https://127.0.0.1:{}/hello", proxy.addr.port());
    let (status, got) = curl(&["--cacert", ours.to_str().unwrap(), &by_address]);
    assert_eq!((status, got.as_slice()), (0, &b"plain behind TLS\n"[..]));
    // A client offering h2 must not be told h2 by a proxy with a plain server.
    let out = s_client(proxy.addr.port(), &ours, &["-alpn", "h2,http/1.1"]);
    assert!(out.contains("No ALPN negotiated"), "{out}");
}

/// Runs `openssl s_client` against 127.0.0.1:`port` as `localhost`, sends
/// nothing, and returns what it printed.
fn s_client(port: u16, ca: &Path, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    wait_child(&mut child);
    out + &err
}

#[test]
fn alpn_h2_reaches_the_client_from_the_server() {
    if !need(&["openssl"]) {
        return;
    }
    let ca = TestCa::new();
    let server = openssl_server(&ca, &["-alpn", "h2"]);
    let (proxy, dir) = intercepting(&ca, server.port, &[]);
    let out = s_client(proxy.addr.port(), &netrecord_ca(&dir), &["-alpn", "h2,http/1.1"]);
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let entries = proxy.wait_ended(1);
    let tls = entries[0].tls.as_ref().unwrap();
    assert_eq!(tls.client.as_ref().unwrap().alpn.as_deref(), Some("h2"));
    assert_eq!(tls.server.as_ref().unwrap().alpn.as_deref(), Some("h2"));
}

/// A TLS peer in the test: sends `data`, then close_notify and a FIN, while
/// reading everything the other side sends until it ends; returns what it read
/// and whether the other side ended with close_notify. One thread, non-blocking,
/// so it reads and writes at once as a real full-duplex peer does.
fn tls_duplex(mut session: rustls::Connection, socket: TcpStream, data: &[u8]) -> (Vec<u8>, bool) {
    socket.set_nonblocking(true).unwrap();
    let mut sock = &socket;
    let (mut sent, mut closed, mut fin_sent, mut eof) = (0, false, false, false);
    let mut ended = None;
    let mut got = Vec::new();
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE * 3, "the transfer did not finish");
        let mut progress = false;
        if !session.is_handshaking() && sent < data.len() && !session.wants_write() {
            let n = session
                .writer()
                .write(&data[sent..(sent + 64 * 1024).min(data.len())])
                .unwrap();
            sent += n;
            progress |= n > 0;
        }
        if !session.is_handshaking() && sent == data.len() && !closed {
            session.send_close_notify();
            closed = true;
        }
        while session.wants_write() {
            match session.write_tls(&mut sock) {
                Ok(n) => progress |= n > 0,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        if closed && !fin_sent && !session.wants_write() {
            let _ = socket.shutdown(Shutdown::Write);
            fin_sent = true;
        }
        if !eof {
            match session.read_tls(&mut sock) {
                Ok(0) => eof = true,
                Ok(_) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            session.process_new_packets().expect("TLS error");
        }
        if ended.is_none() {
            ended = drain(&mut session, &mut got);
        }
        if let Some(clean) = ended
            && fin_sent
        {
            return (got, clean);
        }
        if !progress {
            poll(&socket, !eof, session.wants_write() || sent < data.len());
        }
    }
}

/// Takes the plaintext out of `session`; `Some(clean)` once the other side's
/// stream has ended (`clean` if with close_notify).
fn drain(session: &mut rustls::Connection, got: &mut Vec<u8>) -> Option<bool> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match session.reader().read(&mut buf) {
            Ok(0) => return Some(true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Some(false),
            Err(e) => panic!("plaintext: {e}"),
        }
    }
}

/// Waits (at most 100 ms) until the socket is readable if `read`, or writable if
/// `write`.
fn poll(socket: &TcpStream, read: bool, write: bool) {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: if read { libc::POLLIN } else { 0 } | if write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut fd, 1, 100) };
}

/// A TLS server in the test that runs `tls_duplex` with `data` on each
/// connection and hands back what it read.
fn tls_upstream(ca: &TestCa, data: Vec<u8>) -> (SocketAddr, mpsc::Receiver<(Vec<u8>, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ca.server_config();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for socket in listener.incoming().take(1) {
            let socket = socket.unwrap();
            let session = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let _ = tx.send(tls_duplex(rustls::Connection::Server(session), socket, &data));
        }
    });
    (addr, rx)
}

/// A TLS client in the test, through the proxy, trusting `ca`.
fn tls_client(proxy: SocketAddr, ca: &Path, data: &[u8]) -> (Vec<u8>, bool) {
    let socket = TcpStream::connect(proxy).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(client_config(ca), name).unwrap();
    tls_duplex(rustls::Connection::Client(session), socket, data)
}

#[test]
fn sixty_four_mib_each_way_through_tls_on_both_legs() {
    const SIZE: usize = 64 << 20;
    let ca = TestCa::new();
    let up = pattern(SIZE, 11);
    let down = pattern(SIZE, 12);
    let (addr, from_server) = tls_upstream(&ca, up.clone());
    let (proxy, dir) = intercepting(&ca, addr.port(), &["-q"]);
    let (got_by_client, clean) = tls_client(proxy.addr, &netrecord_ca(&dir), &down);
    let (got_by_server, server_clean) = from_server.recv_timeout(DEADLINE * 3).unwrap();
    assert_eq!(sha256(&got_by_client), sha256(&up));
    assert_eq!(sha256(&got_by_server), sha256(&down));
    assert!(clean && server_clean, "both ends saw close_notify");
    proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert_eq!(sha256(&log.client), sha256(&down));
    assert_eq!(sha256(&log.server), sha256(&up));
    assert!(log.summary.hup[0] && log.summary.hup[1]);
    let entries = proxy.entries();
    let tls = entries[0].tls.as_ref().unwrap();
    assert_eq!(tls.client.as_ref().unwrap().hangup.as_deref(), Some("close_notify"));
    assert_eq!(tls.server.as_ref().unwrap().hangup.as_deref(), Some("close_notify"));
}

#[test]
fn half_close_through_tls_lets_the_server_answer_after_the_clients_close_notify() {
    let ca = TestCa::new();
    // The server reads until the client's close_notify, then answers and closes.
    let (addr, server) = tls_server_once(&ca, |mut stream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        stream.write_all(b"you said: ").unwrap();
        stream.write_all(&request).unwrap();
        stream.conn.send_close_notify();
        stream.flush().unwrap();
        request
    });
    let (proxy, dir) = intercepting(&ca, addr.port(), &["-q"]);
    let (got, clean) = tls_client(proxy.addr, &netrecord_ca(&dir), b"question");
    assert_eq!(server.join().unwrap(), b"question");
    assert_eq!(got, b"you said: question");
    assert!(clean);
    proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert_eq!(log.merged_shape(), "c con, c 8, c hup, s 18, s hup");
}

#[test]
fn half_close_through_tls_lets_the_client_go_on_after_the_servers_close_notify() {
    let ca = TestCa::new();
    // The server greets and hangs up its sending half at once, then reads.
    let (addr, server) = tls_server_once(&ca, |mut stream| {
        stream.write_all(b"hello, then bye").unwrap();
        stream.conn.send_close_notify();
        stream.flush().unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        rest
    });
    let (proxy, dir) = intercepting(&ca, addr.port(), &["-q"]);
    let mut stream = tls_stream(proxy.addr, &netrecord_ca(&dir));
    let mut greeting = Vec::new();
    stream.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"hello, then bye");
    // The server has hung up; the client can still talk to it.
    stream.write_all(b"one more thing").unwrap();
    stream.conn.send_close_notify();
    stream.flush().unwrap();
    assert_eq!(server.join().unwrap(), b"one more thing");
    proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert_eq!(log.merged_shape(), "c con, s 15, s hup, c 14, c hup");
}

#[test]
fn a_fin_without_close_notify_is_a_hup_that_the_index_notes() {
    let ca = TestCa::new();
    // The server answers, then closes TCP without a TLS close_notify.
    let (addr, _server) = tls_server_once(&ca, |mut stream| {
        stream.write_all(b"bye").unwrap();
        stream.flush().unwrap();
        stream.sock.shutdown(Shutdown::Write).unwrap();
        let _ = stream.read_to_end(&mut Vec::new());
    });
    let (proxy, dir) = intercepting(&ca, addr.port(), &["-q"]);
    let (got, clean) = tls_client(proxy.addr, &netrecord_ca(&dir), b"");
    assert_eq!(got, b"bye");
    assert!(clean, "netrecord ends the client's stream with close_notify");
    let entries = proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert!(log.summary.hup[0] && log.summary.hup[1], "{}", log.shape());
    let tls = entries[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.server.as_ref().unwrap().hangup.as_deref(),
        Some("fin_without_close_notify")
    );
    assert_eq!(tls.client.as_ref().unwrap().hangup.as_deref(), Some("close_notify"));
}

/// The two directions of TLS stream 0 in a capture, decrypted by tshark with
/// the key log: (what the connecting side sent, what the other side sent).
fn tshark_decrypt(capture: &Path, keylog: &Path) -> (Vec<u8>, Vec<u8>) {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .arg("-o")
        .arg(format!("tls.keylog_file:{}", keylog.display()))
        .args(["-q", "-z", "follow,tls,raw,0"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    // After the header, each line is one segment's bytes in hex; the other
    // side's lines are indented with a tab.
    for line in text.lines().skip_while(|l| !l.starts_with("Node 1:")).skip(1) {
        if line.starts_with('=') || line.is_empty() {
            continue;
        }
        let (to, hex) = match line.strip_prefix('\t') {
            Some(hex) => (&mut second, hex),
            None => (&mut first, line),
        };
        let hex = hex.trim();
        for i in (0..hex.len()).step_by(2) {
            to.push(u8::from_str_radix(&hex[i..i + 2], 16).expect("hex from tshark"));
        }
    }
    (first, second)
}

#[test]
fn the_keylog_lets_tshark_decrypt_the_upstream_leg_to_the_logged_bytes() {
    if !need(&["tcpdump", "tshark"]) {
        return;
    }
    let ca = TestCa::new();
    let echo = tls_echo(&ca);
    let work = tempfile::tempdir().unwrap();
    let capture = work.path().join("upstream.pcap");
    let keylog = work.path().join("keys.txt");
    let mut tcpdump = Command::new("tcpdump")
        // Immediate mode: packets are written as they come, not when a capture
        // buffer block fills or times out (which some kernels never do on lo).
        .args(["-i", "lo", "--immediate-mode", "-U", "-w"])
        .arg(&capture)
        .arg(format!("tcp port {}", echo.port()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "listening on lo" once it captures.
    first_line(tcpdump.stderr.take().unwrap(), |l| l.contains("listening on"));
    let (proxy, dir) = intercepting(&ca, echo.port(), &["-q", "--tls-keylog", keylog.to_str().unwrap()]);
    let message = pattern(50_000, 3);
    let (got, _) = tls_client(proxy.addr, &netrecord_ca(&dir), &message);
    assert_eq!(sha256(&got), sha256(&message));
    proxy.wait_ended(1);
    signal(&tcpdump, libc::SIGINT);
    assert!(wait_child(&mut tcpdump).success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&keylog).unwrap().permissions().mode() & 0o777, 0o600);
    let log = valid_log(&proxy.log(1));
    let (sent_upstream, from_server) = tshark_decrypt(&capture, &keylog);
    assert_eq!(sha256(&sent_upstream), sha256(&log.client), "the c payloads");
    assert_eq!(sha256(&from_server), sha256(&log.server), "the s payloads");
    assert_eq!(sha256(&log.client), sha256(&message));
}

/// Waits for connection `n`'s index line and returns its error on `side`.
fn error_of(proxy: &Proxy, n: usize, side: netrecord::log::Side) -> String {
    let entries = proxy.wait_ended(n);
    let e = &entries[n - 1];
    let (end, error) = match side {
        netrecord::log::Side::Client => (e.client_end, &e.client_error),
        netrecord::log::Side::Server => (e.server_end, &e.server_error),
    };
    assert_eq!(end, End::Err, "{e:?}");
    let log = valid_log(&proxy.log(n as u64));
    assert_eq!(log.events.last().map(|(s, _)| *s), Some(side), "{}", log.shape());
    error.clone().unwrap()
}

/// After a failure, the proxy still serves: a good TLS client gets through.
fn still_serves(proxy: &Proxy, ca: &Path, n: usize) {
    let (got, _) = tls_client(proxy.addr, ca, b"ping");
    assert_eq!(got, b"ping", "the echo after a failure");
    proxy.wait_ended(n);
}

/// A TLS echo server in the test for the failure cases: echoes each connection
/// until its client hangs up.
/// A TLS server for one connection on a port of its own: `serve` gets the
/// accepted stream (its reads time out at the deadline), and the handle its result.
fn tls_server_once<T: Send + 'static>(
    ca: &TestCa,
    serve: impl FnOnce(rustls::StreamOwned<rustls::ServerConnection, TcpStream>) -> T + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ca.server_config();
    let server = thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        serve(rustls::StreamOwned::new(
            rustls::ServerConnection::new(config).unwrap(),
            socket,
        ))
    });
    (addr, server)
}

fn tls_echo(ca: &TestCa) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ca.server_config();
    thread::spawn(move || {
        for socket in listener.incoming().take(16) {
            let Ok(socket) = socket else { continue };
            let config = Arc::clone(&config);
            thread::spawn(move || {
                socket.set_read_timeout(Some(DEADLINE)).unwrap();
                let Ok(session) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut stream = rustls::StreamOwned::new(session, socket);
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).is_ok() {
                    let _ = stream.write_all(&got);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
            });
        }
    });
    addr
}

#[test]
fn a_client_that_does_not_trust_the_ca_is_an_err_in_words() {
    if !need(&["curl"]) {
        return;
    }
    let ca = TestCa::new();
    let echo = tls_echo(&ca);
    let (proxy, dir) = intercepting(&ca, echo.port(), &[]);
    // curl without netrecord's CA refuses the certificate.
    let (status, _) = curl(&[&format!("https://localhost:{}/", proxy.addr.port())]);
    assert_ne!(status, 0);
    let why = error_of(&proxy, 1, netrecord::log::Side::Client);
    assert_eq!(why, "TLS handshake: the client rejected our certificate (unknown CA)");
    still_serves(&proxy, &netrecord_ca(&dir), 2);
    let (_, stderr) = proxy.stop();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("#1 ended") && l.contains("unknown CA")),
        "{stderr:?}"
    );
}

#[test]
fn a_plaintext_client_on_a_tls_port_is_an_err_in_words() {
    let ca = TestCa::new();
    let echo = tls_echo(&ca);
    let (proxy, dir) = intercepting(&ca, echo.port(), &["-q"]);
    let client = connect(proxy.addr);
    send(&client, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let _ = (&client).read(&mut [0u8; 64]);
    let why = error_of(&proxy, 1, netrecord::log::Side::Client);
    assert!(why.starts_with("TLS handshake: the client did not speak TLS"), "{why}");
    assert!(why.contains("GET / HTTP/1.1"), "{why}");
    still_serves(&proxy, &netrecord_ca(&dir), 2);
}

#[test]
fn a_server_that_does_not_speak_tls_is_an_err_in_words() {
    // A plain HTTP-ish server: answers anything with a plaintext line.
    let plain = Upstream::start(|s| {
        let _ = (&s).read(&mut [0u8; 1024]);
        let _ = (&s).write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let (proxy, _dir) = tls_proxy(plain.addr.port(), &["-q", "--tls-upstream"]);
    let client = connect(proxy.addr);
    send(&client, b"GET / HTTP/1.0\r\n\r\n");
    let _ = (&client).read(&mut [0u8; 64]);
    let why = error_of(&proxy, 1, netrecord::log::Side::Server);
    assert!(why.starts_with("TLS handshake: the server did not speak TLS"), "{why}");
    // What the plain client sent while the handshake failed is in the log.
    assert_eq!(valid_log(&proxy.log(1)).client, b"GET / HTTP/1.0\r\n\r\n");
    // The next connection is served the same way.
    let client = connect(proxy.addr);
    let _ = (&client).read(&mut [0u8; 64]);
    error_of(&proxy, 2, netrecord::log::Side::Server);
}

#[test]
fn a_server_certificate_for_another_name_is_an_err_in_words() {
    let ca = TestCa::for_names(&["other.example"]);
    let echo = tls_echo(&ca);
    let (proxy, dir) = intercepting(&ca, echo.port(), &["-q"]);
    let mut stream = tls_stream(proxy.addr, &netrecord_ca(&dir));
    assert!(stream.read(&mut [0u8; 16]).is_err() || stream.read(&mut [0u8; 16]).is_err());
    let why = error_of(&proxy, 1, netrecord::log::Side::Server);
    assert!(
        why.starts_with("TLS handshake: the server's certificate was rejected: it is not valid for"),
        "{why}"
    );
    assert!(why.contains("localhost") && why.contains("other.example"), "{why}");
    // With the right name to verify, the same server is fine.
    drop(proxy);
    let (proxy, dir) = intercepting(&ca, echo.port(), &["-q", "--tls-server-name", "other.example"]);
    still_serves(&proxy, &netrecord_ca(&dir), 1);
}

#[test]
fn tls_insecure_accepts_an_untrusted_server_and_says_so() {
    let ca = TestCa::for_names(&["somewhere.else"]);
    let echo = tls_echo(&ca);
    let (proxy, _dir) = tls_proxy(echo.port(), &["-q", "--tls-upstream", "--tls-insecure"]);
    let client = connect(proxy.addr);
    send(&client, b"unverified");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"unverified");
    proxy.wait_ended(1);
    let (_, stderr) = proxy.stop();
    assert!(stderr[0].contains("WITHOUT verifying"), "{stderr:?}");
}

#[test]
fn bad_tls_options_are_one_line_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rec");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let run = |extra: &[&str]| {
        let mut child = Command::new(BIN)
            .args(["127.0.0.1", "9", "0"])
            .arg(&root)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (wait_child(&mut child).code().unwrap_or(-1), stderr)
    };
    let (m, g) = (missing.to_str().unwrap(), garbage.to_str().unwrap());
    let cases: [(&[&str], i32, &str); 6] = [
        (&["--tls-cert", g, "--tls-key", g], 2, "--tls-listen"),
        (&["--tls-insecure"], 2, "--tls-upstream"),
        (&["--tls-listen", "--tls-cert", m, "--tls-key", m], 1, "missing.pem"),
        (
            &["--tls-listen", "--tls-cert", g, "--tls-key", g],
            1,
            "no certificate in",
        ),
        (&["--tls-upstream", "--tls-ca", g], 1, "no certificate in"),
        (
            &["--tls-upstream", "--tls-server-name", "bad name!"],
            1,
            "not a valid server name",
        ),
    ];
    for (extra, code, says) in cases {
        let (status, stderr) = run(extra);
        assert_eq!(status, code, "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        assert!(
            stderr.starts_with("netrecord: ") && stderr.contains(says),
            "{extra:?}: {stderr}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["garbage.pem"], "only the test's own file is there");
}

#[test]
fn replay_over_tls_serves_curl_and_matches_the_live_server() {
    if !need(&["curl", "python3"]) {
        return;
    }
    let ca = TestCa::new();
    let www = tempfile::tempdir().unwrap();
    let body = pattern(20_000, 9);
    std::fs::write(www.path().join("file"), &body).unwrap();
    let server = python_https(www.path(), Some((&ca.cert(), &ca.key())));
    let (proxy, dir) = intercepting(&ca, server.port, &["-q"]);
    let ours = netrecord_ca(&dir);
    let (status, got) = curl(&[
        "--cacert",
        ours.to_str().unwrap(),
        &format!("https://localhost:{}/file", proxy.addr.port()),
    ]);
    assert_eq!((status, sha256(&got)), (0, sha256(&body)));
    proxy.wait_ended(1);
    let log = proxy.log(1);

    // replay-server answers curl over TLS with the recorded bytes.
    let ca_dir = dir.path().join("ca");
    let (replay, addr) = crate::replay::Run::server(&log, &["--tls-listen", "--tls-ca-dir", ca_dir.to_str().unwrap()]);
    let (status, got) = curl(&[
        "--cacert",
        ours.to_str().unwrap(),
        &format!("https://localhost:{}/file", addr.port()),
    ]);
    assert_eq!((status, sha256(&got)), (0, sha256(&body)), "curl got the recorded body");
    let done = replay.finish();
    assert!(
        done.stdout_has("matched the recording"),
        "{:?} {:?}",
        done.stdout,
        done.stderr
    );

    // replay-client over TLS matches the live server, its Date masked.
    let port = server.port.to_string();
    let done = crate::replay::netrecord(&[
        "replay-client",
        log.to_str().unwrap(),
        "localhost",
        &port,
        "--tls-upstream",
        "--tls-ca",
        ca.ca().to_str().unwrap(),
        "--mask",
        "Date: [^\\r]*",
    ]);
    assert!(done.status.success(), "{:?} {:?}", done.stdout, done.stderr);
    assert!(done.stdout.last().unwrap().contains("matched"), "{:?}", done.stdout);
}

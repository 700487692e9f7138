//! The recorder must not change how a connection ends: a reset from one peer
//! reaches the other as a reset (an RST and no FIN), and a client whose server
//! cannot be reached is reset, with what it sent recorded first.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use netrecord::log::End;

use crate::util::*;

/// Closes `s` with a reset instead of a FIN.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Reads until the connection ends and returns what was read and how it ended:
/// `Ok(())` for a FIN, the error for anything else.
fn read_to_end_or_error(mut s: &TcpStream) -> (Vec<u8>, Result<(), std::io::Error>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: each read waits at most the socket's timeout.
    for _ in 0..100_000 {
        match s.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
    panic!("the connection never ended");
}

#[test]
fn a_server_reset_reaches_the_client_as_a_reset() {
    let upstream = Upstream::start(|s| {
        let _ = read_n(&s, 5);
        send(&s, b"partial answer");
        // Let the proxy take the bytes before the reset, so they are forwarded.
        wait_until("the proxy to read the answer", || unsent(&s) == 0);
        reset(s);
    });
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let client = connect(proxy.addr);
    send(&client, b"hello");
    let (got, end) = read_to_end_or_error(&client);
    assert!(b"partial answer".starts_with(&got), "{got:?}");
    let e = end.expect_err("the client saw a FIN where the server sent a reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let entries = proxy.wait_ended(1);
    assert_eq!(entries[0].server_end, End::Err);
    assert_eq!(valid_log(&proxy.log(1)).merged_shape(), "c con, c 5, s 14, s err");
}

#[test]
fn a_client_reset_reaches_the_server_as_a_reset() {
    let (tx, rx) = std::sync::mpsc::channel();
    let upstream = Upstream::start(move |s| {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = tx.send(read_to_end_or_error(&s));
    });
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    let client = connect(proxy.addr);
    send(&client, b"hello");
    wait_until("the proxy to log the client's bytes", || {
        proxy.log(1).exists() && read_log(&proxy.log(1)).client == b"hello"
    });
    reset(client);
    let (got, end) = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(got, b"hello");
    let e = end.expect_err("the server saw a FIN where the client sent a reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let entries = proxy.wait_ended(1);
    assert_eq!(entries[0].client_end, End::Err);
}

/// Bytes `s` has sent that its peer has not acknowledged yet (SIOCOUTQ).
fn unsent(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int into `n`.
    unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    n
}

/// curl's exit status fetching `url`: 0 for a whole answer, 56 when the
/// connection is reset while receiving.
fn curl_status(url: &str) -> i32 {
    let mut child = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "20", url])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_child(&mut child).code().unwrap()
}

#[test]
fn curl_sees_a_server_reset_through_the_proxy_as_it_does_directly() {
    if !have_tool("curl") {
        return skip("curl is not installed");
    }
    // An HTTP server that promises 100000 bytes, sends 10, and resets.
    let upstream = Upstream::start(|s| {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match (&s).read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        send(&s, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789");
        wait_until("the peer to read the answer", || unsent(&s) == 0);
        reset(s);
    });
    let direct = curl_status(&format!("http://{}/", upstream.addr));
    assert_eq!(direct, 56, "curl's status for a reset, directly");
    let proxy = Proxy::start(upstream.addr, &["-q"]);
    assert_eq!(curl_status(&format!("http://{}/", proxy.addr)), direct);
}

/// A listener whose backlog is full: connecting to it hangs until the
/// connecting side gives up. Returns the address and what keeps it full.
fn unresponsive() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    // Bounded: stop at the first handshake that does not complete. A full queue
    // drops the SYN and its retransmits, so the wait is long enough that a slow,
    // busy machine does not mistake a late handshake for a full queue.
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(1500)) {
            Ok(s) => fillers.push(s),
            Err(_) => return (addr, listener, fillers),
        }
    }
    panic!("the listen queue never filled up");
}

#[test]
fn bytes_sent_while_the_connect_is_pending_are_recorded_and_the_client_is_reset() {
    let (addr, _listener, _fillers) = unresponsive();
    let proxy = Proxy::start(addr, &["-q", "--connect-timeout", "1"]);
    let client = connect(proxy.addr);
    send(&client, b"early bytes");
    client.shutdown(Shutdown::Write).unwrap();
    let (got, end) = read_to_end_or_error(&client);
    assert!(got.is_empty(), "{got:?}");
    let e = end.expect_err("the client saw a FIN where a refused connection resets");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let entries = proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert_eq!(log.merged_shape(), "c con, c 11, c hup, s err");
    assert_eq!(log.client, b"early bytes");
    assert_eq!(entries[0].client_bytes, 11);
    assert!(
        entries[0].server_error.as_deref().unwrap().contains("timed out"),
        "{entries:?}"
    );
}

#[test]
fn a_refused_connect_resets_the_client() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = Proxy::start(closed, &["-q"]);
    let client = connect(proxy.addr);
    let (_, end) = read_to_end_or_error(&client);
    let e = end.expect_err("the client saw a FIN where a refused connection resets");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    proxy.wait_ended(1);
    assert_eq!(valid_log(&proxy.log(1)).shape(), "c con, s err");
}

//! Sockets shared by the proxy and replay: resolving a server to all its addresses
//! and connecting to the first that answers, binding a listener, and a listener
//! that another thread can stop. The proxy resolves once at startup and connects
//! for every client; `replay-client` does both once.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use socket2::{Domain, SockRef, Socket, Type};

/// The listen backlog: bursts of new connections queue instead of being refused.
const BACKLOG: i32 = 1024;

/// Resolves `host` to all its addresses, IPv4 and IPv6, in the resolver's order.
pub fn resolve(host: &str, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("could not resolve server host {host}"))?
        .collect();
    if addrs.is_empty() {
        bail!("could not resolve server host {host}: no addresses");
    }
    Ok(addrs)
}

/// `host:port` for messages, with brackets around an IPv6 address.
pub fn display_name(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// Connects to the first of `addrs` that accepts, each within `timeout`, and says
/// which one it reached. The error keeps the last attempt's kind and names the
/// server and every address tried:
/// `could not connect to db.local:5432 (10.0.0.7:5432): Connection refused`.
pub fn connect_first(name: &str, addrs: &[SocketAddr], timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no addresses to try");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok((stream, *addr)),
            Err(e) => last = e,
        }
    }
    let tried: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    // A server named by its address needs no list of what it resolved to.
    let tried = if tried == [name] {
        String::new()
    } else {
        format!(" ({})", tried.join(", "))
    };
    Err(io::Error::new(
        last.kind(),
        format!("could not connect to {name}{tried}: {last}"),
    ))
}

/// Whether `ip` is an address of this host: connecting to it reaches a listener
/// here. Loopback and the unspecified address (which Linux connects to this host)
/// are; any other is if a socket can be bound to it.
pub fn is_local(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Whether connecting to `to` would reach the listener bound at `listen` (its
/// real port, after a port 0 was resolved). A wildcard listener takes every local
/// address of its family, and `::` takes IPv4 too (Linux's default dual stack).
pub fn reaches(to: SocketAddr, listen: SocketAddr) -> bool {
    if to.port() != listen.port() {
        return false;
    }
    let (to_ip, listen_ip) = (to.ip().to_canonical(), listen.ip().to_canonical());
    if to_ip.is_unspecified() || to_ip == listen_ip {
        return true;
    }
    if !listen_ip.is_unspecified() {
        return false;
    }
    let family = match listen.ip() {
        IpAddr::V4(_) => to_ip.is_ipv4(),
        IpAddr::V6(_) => true,
    };
    family && is_local(to_ip)
}

/// Binds a listener with SO_REUSEADDR (a restart is not refused because of old
/// connections in TIME_WAIT) and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A handle that stops an accept loop from another thread (a signal handler, a
/// test): it sets a flag and shuts the listening socket down, which wakes a thread
/// blocked in `accept` (Linux returns EINVAL to it). Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    stopped: AtomicBool,
    listeners: Mutex<Vec<TcpListener>>,
}

impl Stop {
    /// A handle that has not been triggered.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stops every attached listener's accept loop.
    pub fn trigger(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        for listener in &*self.inner.listeners.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = SockRef::from(listener).shutdown(std::net::Shutdown::Read);
        }
    }

    /// Whether [`Stop::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Lets [`Stop::trigger`] wake a thread blocked accepting on `listener`. A
    /// trigger that came first takes effect at once.
    pub fn attach(&self, listener: &TcpListener) -> io::Result<()> {
        let copy = listener.try_clone()?;
        let mut listeners = self.inner.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_triggered() {
            let _ = SockRef::from(&copy).shutdown(std::net::Shutdown::Read);
        }
        listeners.push(copy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_error_names_the_server_and_every_address() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = connect_first("db.local:5432", &[closed], Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            e.to_string()
                .starts_with(&format!("could not connect to db.local:5432 ({closed}): ")),
            "{e}"
        );
        let e = connect_first(&closed.to_string(), &[closed], Duration::from_secs(5)).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("could not connect to {closed}: ")),
            "{e}"
        );
        assert_eq!(display_name("::1", 80), "[::1]:80");
        assert_eq!(display_name("db.local", 80), "db.local:80");
    }

    #[test]
    fn reaches_knows_wildcards_families_and_ports() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(reaches(at("127.0.0.1:7000"), at("127.0.0.1:7000")));
        assert!(!reaches(at("127.0.0.1:7001"), at("127.0.0.1:7000")));
        assert!(!reaches(at("127.0.0.2:7000"), at("127.0.0.1:7000")));
        assert!(reaches(at("0.0.0.0:7000"), at("127.0.0.1:7000")));
        assert!(reaches(at("127.0.0.5:7000"), at("0.0.0.0:7000")));
        assert!(!reaches(at("[::1]:7000"), at("0.0.0.0:7000")));
        assert!(reaches(at("127.0.0.1:7000"), at("[::]:7000")));
        assert!(reaches(at("[::ffff:127.0.0.1]:7000"), at("127.0.0.1:7000")));
        assert!(
            !reaches(at("192.0.2.1:7000"), at("0.0.0.0:7000")),
            "not this host's address"
        );
        // A port 0 listener is compared at the port it got.
        let listener = bind(at("127.0.0.1:0")).unwrap();
        let local = listener.local_addr().unwrap();
        assert!(reaches(SocketAddr::new(local.ip(), local.port()), local));
    }

    #[test]
    fn stop_wakes_a_blocked_accept() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stop = Stop::new();
        stop.attach(&listener).unwrap();
        let waker = stop.clone();
        let t = std::thread::spawn(move || listener.accept().map(drop));
        waker.trigger();
        assert!(t.join().unwrap().is_err(), "accept returned a connection");
        assert!(stop.is_triggered());
    }
}

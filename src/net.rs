//! Reaching a server by name: resolving it to all its addresses and connecting to
//! the first that answers. The proxy resolves once at startup and connects for
//! every client; `replay-client` does both once.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

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

/// Connects to the first of `addrs` that accepts, each within `timeout`. The error
/// keeps the last attempt's kind and names the server and every address tried:
/// `could not connect to db.local:5432 (10.0.0.7:5432): Connection refused`.
pub fn connect_first(name: &str, addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no addresses to try");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
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
}

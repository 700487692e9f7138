//! The handshakes of one connection, and their failures in words a person
//! understands (`the client rejected our certificate (unknown CA)`), for the
//! stderr line and the run index.
//!
//! Each handshake runs on the connection's thread before relaying starts, with
//! the socket's timeouts set to the connect timeout, so a peer that stalls in the
//! middle of it cannot hold the thread forever.

use std::io::{self, Read};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::server::{Accepted, Acceptor};
use rustls::{AlertDescription, CertificateError, ClientConnection, Connection, ProtocolVersion};

use super::{Listen, TlsPeer, Upstream};
use crate::index::TlsLeg;
use crate::log::Side;

/// A client's ClientHello, read before the server is reached.
pub(crate) struct Hello {
    accepted: Accepted,
    /// The name the client asked for (SNI), if any.
    pub(crate) sni: Option<String>,
    /// The protocols the client offered (ALPN), in its order.
    pub(crate) alpn: Vec<Vec<u8>>,
}

impl Listen {
    /// Reads the client's ClientHello.
    pub(crate) fn read_hello(&self, socket: &mut TcpStream) -> Result<Hello, String> {
        set_timeouts(socket, Some(self.timeout));
        let mut acceptor = Acceptor::default();
        let mut first = FirstBytes::new(socket);
        // Bounded: every round reads at least one byte or ends.
        for _ in 0..1_000_000 {
            match acceptor.read_tls(&mut first) {
                Ok(0) => return Err(describe_io(Side::Client, &first.describe_eof())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(describe_io(Side::Client, &e)),
            }
            match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    let sni = hello.server_name().map(str::to_string);
                    let alpn = hello
                        .alpn()
                        .map(|offer| offer.map(<[u8]>::to_vec).collect())
                        .unwrap_or_default();
                    return Ok(Hello { accepted, sni, alpn });
                }
                Err((e, mut alert)) => {
                    let _ = alert.write_all(first.socket);
                    return Err(describe_tls(Side::Client, &e, &first.seen));
                }
            }
        }
        Err("TLS handshake: the ClientHello never ended".into())
    }

    /// Makes the whole handshake with a client that connected on `socket`,
    /// answering with no ALPN protocol (replay-server).
    pub(crate) fn accept(&self, mut socket: TcpStream) -> Result<TlsPeer, String> {
        let hello = self.read_hello(&mut socket)?;
        Ok(self.finish(hello, socket, None)?.0)
    }

    /// Finishes the client's handshake, answering with `alpn` (the protocol the
    /// server chose, or none), and returns the client as a peer.
    pub(crate) fn finish(
        &self,
        hello: Hello,
        mut socket: TcpStream,
        alpn: Option<Vec<u8>>,
    ) -> Result<(TlsPeer, TlsLeg), String> {
        let local = socket
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let certified = self
            .certified_key(hello.sni.as_deref(), local)
            .map_err(|e| format!("TLS handshake: {e:#}"))?;
        let mut config = (*self.base).clone();
        config.cert_resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
        // Only a protocol the server behind us speaks: with a plain server that
        // is none, so a client offering h2 falls back to HTTP/1.1.
        config.alpn_protocols = alpn.into_iter().collect();
        let sni = hello.sni.clone();
        let mut session = match hello.accepted.into_connection(Arc::new(config)) {
            Ok(session) => Connection::Server(session),
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut socket);
                return Err(describe_tls(Side::Client, &e, &[]));
            }
        };
        handshake(&mut socket, &mut session).map_err(|e| describe_io(Side::Client, &e))?;
        let mut leg = leg(&session);
        leg.sni = sni;
        Ok((TlsPeer::new(socket, session), leg))
    }
}

impl Upstream {
    /// Makes the TLS handshake with the server on `socket`, sending `client_sni`'s
    /// name unless `--tls-server-name` overrides it, and offering `alpn`.
    pub(crate) fn connect(
        &self,
        mut socket: TcpStream,
        client_sni: Option<&str>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<(TlsPeer, TlsLeg), String> {
        set_timeouts(&socket, Some(self.timeout));
        let name = self.server_name.as_deref().or(client_sni).unwrap_or(&self.host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("TLS handshake: {name:?} is not a valid server name"))?;
        let config = if alpn.is_empty() {
            Arc::clone(&self.base)
        } else {
            let mut config = (*self.base).clone();
            config.alpn_protocols = alpn;
            Arc::new(config)
        };
        let mut session = Connection::Client(
            ClientConnection::new(config, server_name).map_err(|e| describe_tls(Side::Server, &e, &[]))?,
        );
        let mut first = FirstBytes::new(&mut socket);
        if let Err(e) = handshake(&mut first, &mut session) {
            let seen = std::mem::take(&mut first.seen);
            return Err(match tls_error(&e) {
                Some(tls) => describe_tls(Side::Server, tls, &seen),
                None if e.kind() == io::ErrorKind::UnexpectedEof => describe_io(Side::Server, &first.describe_eof()),
                None => describe_io(Side::Server, &e),
            });
        }
        let mut leg = leg(&session);
        // An address is verified as such and sent as no SNI.
        leg.sni = name.parse::<IpAddr>().is_err().then(|| name.to_string());
        if let Some(cert) = session.peer_certificates().and_then(<[_]>::first) {
            leg.cert_sha256 = Some(sha256_hex(cert));
            leg.cert_subject = x509_parser::parse_x509_certificate(cert)
                .ok()
                .map(|(_, parsed)| parsed.subject().to_string());
        }
        Ok((TlsPeer::new(socket, session), leg))
    }
}

/// Runs a handshake to its end and sends what it leaves to send.
fn handshake<S: Read + io::Write>(socket: &mut S, session: &mut Connection) -> io::Result<()> {
    // Bounded: every round moves bytes or fails.
    for _ in 0..10_000 {
        if !session.is_handshaking() {
            while session.wants_write() {
                session.write_tls(socket)?;
            }
            return Ok(());
        }
        let (read, written) = session.complete_io(socket)?;
        if read == 0 && written == 0 && session.is_handshaking() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Err(io::Error::other("the handshake never ended"))
}

/// What the index says about one leg's TLS.
fn leg(session: &Connection) -> TlsLeg {
    TlsLeg {
        version: session.protocol_version().map_or_else(String::new, version_name),
        cipher: session
            .negotiated_cipher_suite()
            .map_or_else(String::new, |suite| format!("{:?}", suite.suite())),
        sni: None,
        alpn: session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        cert_subject: None,
        cert_sha256: None,
        hangup: None,
    }
}

fn version_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        other => format!("{other:?}"),
    }
}

fn sha256_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(64);
    super::config::hex_into(&mut out, digest.as_ref());
    out
}

/// The timeouts of a socket in a handshake.
fn set_timeouts(socket: &TcpStream, timeout: Option<Duration>) {
    let _ = socket.set_read_timeout(timeout);
    let _ = socket.set_write_timeout(timeout);
}

/// A socket that remembers the first bytes the peer sent, to say what a peer
/// that does not speak TLS sent instead.
struct FirstBytes<'a> {
    socket: &'a mut TcpStream,
    seen: Vec<u8>,
}

const FIRST: usize = 16;

impl<'a> FirstBytes<'a> {
    fn new(socket: &'a mut TcpStream) -> FirstBytes<'a> {
        FirstBytes {
            socket,
            seen: Vec::new(),
        }
    }

    /// The end of the stream in the middle of a handshake.
    fn describe_eof(&self) -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, "closed")
    }
}

impl Read for FirstBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        let room = FIRST.saturating_sub(self.seen.len()).min(n);
        self.seen.extend_from_slice(&buf[..room]);
        Ok(n)
    }
}

impl io::Write for FirstBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// The rustls error inside an I/O error from a handshake, if that is what it is.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Words for a failed handshake with `side`, from an I/O error (which may carry a
/// rustls error).
pub(crate) fn describe_io(side: Side, e: &io::Error) -> String {
    if let Some(tls) = tls_error(e) {
        return describe_tls(side, tls, &[]);
    }
    let peer = side.name();
    let what = match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("the {peer} closed the connection during the handshake"),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("the {peer} did not finish the handshake in time")
        }
        _ => e.to_string(),
    };
    format!("TLS handshake: {what}")
}

/// Words for a failed handshake with `side`; `seen` is what it sent first.
fn describe_tls(side: Side, e: &rustls::Error, seen: &[u8]) -> String {
    use rustls::Error as E;
    let peer = side.name();
    let what = match e {
        E::AlertReceived(alert) if side == Side::Client && is_about_certificates(*alert) => {
            format!("the client rejected our certificate ({})", alert_words(*alert))
        }
        E::AlertReceived(alert) => format!("the {peer} refused the handshake ({})", alert_words(*alert)),
        E::InvalidCertificate(cert) => format!("the server's certificate was rejected: {}", certificate_words(cert)),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            if seen.is_empty() {
                format!("the {peer} did not speak TLS")
            } else {
                format!(
                    "the {peer} did not speak TLS (it sent {:?})",
                    String::from_utf8_lossy(seen)
                )
            }
        }
        E::PeerIncompatible(why) => {
            format!("the {peer} has no TLS version or cipher suite in common with netrecord ({why:?})")
        }
        E::NoApplicationProtocol => format!("the {peer} speaks none of the offered application protocols (ALPN)"),
        other => other.to_string(),
    };
    format!("TLS handshake: {what}")
}

fn is_about_certificates(alert: AlertDescription) -> bool {
    use AlertDescription as A;
    matches!(
        alert,
        A::UnknownCA
            | A::BadCertificate
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied
    )
}

fn alert_words(alert: AlertDescription) -> String {
    use AlertDescription as A;
    match alert {
        A::UnknownCA => "unknown CA".into(),
        A::BadCertificate => "bad certificate".into(),
        A::CertificateUnknown => "certificate unknown".into(),
        A::CertificateExpired => "certificate expired".into(),
        A::HandshakeFailure => "handshake failure".into(),
        A::ProtocolVersion => "protocol version".into(),
        A::UnrecognisedName => "unrecognised name".into(),
        A::NoApplicationProtocol => "no application protocol".into(),
        other => format!("{other:?}"),
    }
}

fn certificate_words(e: &CertificateError) -> String {
    use CertificateError as C;
    match e {
        C::UnknownIssuer => "unknown issuer: not signed by a CA netrecord trusts (add it with --tls-ca)".into(),
        C::NotValidForName => "it is not valid for the server name".into(),
        C::NotValidForNameContext { expected, presented } => {
            format!("it is not valid for {expected:?} (it is for {})", presented.join(", "))
        }
        C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
        other => other.to_string(),
    }
}

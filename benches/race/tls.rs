//! The TLS scenarios: bulk and rtt through netrecord with TLS on both legs
//! (`--tls-listen --tls-upstream`), against a direct TLS connection to the same
//! server in the same run.
//!
//! At start the bench mints a test CA and a server certificate for 127.0.0.1 with
//! rcgen. The upstream servers (`upstream.rs`) then speak TLS with that
//! certificate; netrecord trusts the test CA (`--tls-ca`) and presents clients a
//! certificate of its own CA, made in a directory of the bench's (`--tls-ca-dir`).
//! The bench's client trusts the test CA on the direct path and netrecord's CA on
//! the netrecord path. Client and server use rustls with the ring provider, as
//! netrecord does, so the same cipher suite is negotiated on every leg.

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, RootCertStore, ServerConfig, ServerConnection, SideData,
    StreamOwned,
};
use rustls_pki_types::pem::PemObject;

use crate::Options;
use crate::load::{bulk_transfer, check_recorded, connect, per_round_trip, per_unit, round_trips, throughput};
use crate::paths::{Context, Kind, Running};
use crate::report::Sample;
use crate::upstream::{self, Server, Stream};

/// The TLS material of one bench run.
pub struct Setup {
    provider: Arc<CryptoProvider>,
    server: Arc<ServerConfig>,
    /// Trusts the test CA: for the direct path.
    direct: Arc<ClientConfig>,
    /// The test CA's certificate, for netrecord's `--tls-ca`.
    test_ca: PathBuf,
    /// netrecord's CA directory, `--tls-ca-dir`.
    netrecord_ca_dir: PathBuf,
}

impl Setup {
    /// Mints the test CA and the server certificate, keeping the CA's certificate
    /// in `dir`.
    pub fn new(dir: &Path) -> Result<Setup, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("cannot make the test {what}: {e}");
        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "netrecord bench test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| fail("CA", &e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().map_err(|e| fail("server key", &e))?;
        let params = CertificateParams::new(vec![Ipv4Addr::LOCALHOST.to_string()])
            .map_err(|e| fail("server certificate", &e))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| fail("server certificate", &e))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth().with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
            })
            .map_err(|e| fail("server configuration", &e))?;

        let test_ca = dir.join("test-ca.pem");
        fs::write(&test_ca, ca_cert.pem()).map_err(|e| format!("cannot write {}: {e}", test_ca.display()))?;
        let direct = client_config(&provider, ca_cert.der().clone())?;
        Ok(Setup {
            provider,
            server: Arc::new(server),
            direct,
            test_ca,
            netrecord_ca_dir: dir.join("netrecord-ca"),
        })
    }

    /// netrecord's TLS options: TLS from the client and to the server.
    pub fn netrecord_args(&self) -> Vec<OsString> {
        vec![
            "--tls-listen".into(),
            "--tls-ca-dir".into(),
            self.netrecord_ca_dir.clone().into(),
            "--tls-upstream".into(),
            "--tls-ca".into(),
            self.test_ca.clone().into(),
        ]
    }

    /// An upstream server pool whose connections speak TLS, then run `serve`.
    fn server(&self, threads: usize, serve: impl Fn(ServerStream) + Send + Sync + 'static) -> Result<Server, String> {
        let config = Arc::clone(&self.server);
        Server::start(
            threads,
            Arc::new(move |socket| {
                if let Ok(session) = ServerConnection::new(Arc::clone(&config)) {
                    serve(StreamOwned::new(session, socket));
                }
            }),
        )
        .map_err(|e| e.to_string())
    }

    /// Connects to `addr` over TLS and finishes the handshake, trusting the test CA
    /// (direct) or netrecord's CA (through netrecord, which made it by the time it
    /// listens).
    fn connect(&self, kind: Kind, addr: SocketAddr) -> Result<ClientStream, String> {
        let config = match kind {
            Kind::Netrecord | Kind::Baseline => {
                let path = self.netrecord_ca_dir.join("netrecord-ca.pem");
                let ca =
                    CertificateDer::from_pem_file(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                client_config(&self.provider, ca)?
            }
            _ => Arc::clone(&self.direct),
        };
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let session = ClientConnection::new(config, name).map_err(|e| format!("TLS client: {e}"))?;
        let mut stream = StreamOwned::new(session, connect(addr)?);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        }
        Ok(stream)
    }
}

type ServerStream = StreamOwned<ServerConnection, TcpStream>;
type ClientStream = StreamOwned<ClientConnection, TcpStream>;

fn client_config(provider: &Arc<CryptoProvider>, ca: CertificateDer<'static>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| format!("bad CA certificate: {e}"))?;
    let config = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS hang-up: close_notify, then the TCP half-close.
impl<C, S> Stream for StreamOwned<C, TcpStream>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn hang_up(&mut self) {
        self.conn.send_close_notify();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock).is_err() {
                break;
            }
        }
        self.sock.hang_up();
    }
}

fn setup(ctx: &Context) -> &Setup {
    ctx.tls.as_deref().expect("the TLS scenarios run with a TLS setup")
}

/// One TLS connection: `tls_bulk_bytes` each way, like the plain bulk scenario.
pub fn bulk(opts: &Options, ctx: &Context, kind: Kind) -> Result<Vec<Sample>, String> {
    let tls = setup(ctx);
    let n = opts.tls_bulk_bytes;
    let server = tls.server(1, move |s| upstream::bulk(s, n))?;
    let path = Running::start(kind, ctx, server.addr)?;
    let (up, down, both) = bulk_transfer(tls.connect(kind, path.addr)?, n)?;
    let stopped = path.stop()?;
    drop(server);
    check_recorded(kind, &stopped, n, n)?;
    let mut samples = throughput(up, down, both);
    samples.extend(per_unit(&stopped, (2 * n) as f64 / 1e9, ("proxy CPU s/GB", 1.0), None));
    Ok(samples)
}

/// One TLS connection, `round_trips` sequential 64-byte round trips.
pub fn rtt(opts: &Options, ctx: &Context, kind: Kind) -> Result<Vec<Sample>, String> {
    let tls = setup(ctx);
    let server = tls.server(1, upstream::echo)?;
    let path = Running::start(kind, ctx, server.addr)?;
    let (mut samples, bytes) = round_trips(tls.connect(kind, path.addr)?, opts.round_trips)?;
    let stopped = path.stop()?;
    check_recorded(kind, &stopped, bytes, bytes)?;
    samples.extend(per_round_trip(&stopped, bytes));
    Ok(samples)
}

//! TLS: recording TLS connections in plaintext. netrecord can be the TLS server
//! its clients talk to (`--tls-listen`), the TLS client of the server
//! (`--tls-upstream`), or both (full interception). The log holds the plaintext
//! each peer sent, exactly as for plain TCP: the format does not change.
//!
//! Data flow for one connection (see `proxy/connection.rs`): with `--tls-listen`
//! the client's ClientHello is read first ([`Listen::read_hello`]), so its SNI and
//! ALPN offer are known before the server is reached; with `--tls-upstream` the
//! server connection makes its handshake offering that SNI and ALPN
//! ([`Upstream::connect`]); then the client's handshake is finished with the ALPN
//! protocol the server chose ([`Listen::finish`]), so HTTP/2 and gRPC keep working
//! through the proxy. After the handshakes each side is a [`TlsPeer`], a
//! [`crate::peer::Peer`] like a plain socket, and the relay does not know the
//! difference. The locking of one TLS session shared by two relay threads is
//! described in `stream.rs`.
//!
//! - `ca.rs`: netrecord's own CA, which mints a certificate per name.
//! - `config.rs`: the rustls configurations, certificate files, the key log.
//! - `handshake.rs`: the handshakes and what their failures mean in words.
//! - `stream.rs`: [`TlsPeer`].

mod ca;
mod config;
mod handshake;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, KeyLog, ServerConfig};

use crate::cli::{TlsListenArgs, TlsUpstreamArgs};
pub(crate) use stream::TlsPeer;

/// The TLS options of a run, ready to use for every connection.
pub(crate) struct Tls {
    pub(crate) listen: Option<Listen>,
    pub(crate) upstream: Option<Upstream>,
    /// Where session keys go, for the startup line.
    pub(crate) keylog: Option<PathBuf>,
}

/// `--tls-listen`: how netrecord presents itself to clients.
pub(crate) struct Listen {
    base: Arc<ServerConfig>,
    cert: CertSource,
    /// The server host, the certificate's name for a client that sends no SNI.
    default_name: String,
    timeout: Duration,
}

enum CertSource {
    /// `--tls-cert`: the same certificate for every client.
    Fixed(Arc<CertifiedKey>),
    /// netrecord's CA mints one per name.
    Minted(Box<ca::Ca>),
}

/// `--tls-upstream`: how netrecord reaches the server.
pub(crate) struct Upstream {
    base: Arc<ClientConfig>,
    /// `--tls-server-name`.
    server_name: Option<String>,
    /// The server host: the name verified when nothing else names the server
    /// (an address is verified as an address, and sent as no SNI).
    host: String,
    insecure: bool,
    timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Tls {
    /// Builds the run's TLS setup from the command line; `None` for plain TCP on
    /// both legs. With `--tls-listen` and no `--tls-cert`, the CA is loaded or made
    /// here, before any listener opens, so a client can be pointed at it first.
    pub(crate) fn from_args(
        listen: &TlsListenArgs,
        upstream: &TlsUpstreamArgs,
        keylog: Option<&Path>,
        server_host: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<Tls>> {
        if !listen.tls_listen && !upstream.tls_upstream {
            return Ok(None);
        }
        let provider = config::provider();
        let keylog_path = config::keylog_path(keylog);
        let keylog = self::keylog(keylog_path.as_deref())?;
        Ok(Some(Tls {
            listen: Listen::from_args(listen, &provider, keylog.clone(), server_host, timeout)?,
            upstream: Upstream::from_args(upstream, &provider, keylog, server_host, timeout)?,
            keylog: keylog_path,
        }))
    }

    /// The startup line's words for the TLS setup, e.g. `TLS from clients
    /// (trust netrecord's CA /home/me/.local/share/netrecord/netrecord-ca.pem)`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(listen) = &self.listen {
            parts.push(match &listen.cert {
                CertSource::Fixed(_) => "TLS from clients (with the given certificate)".to_string(),
                CertSource::Minted(ca) => format!(
                    "TLS from clients (clients must trust netrecord's CA {})",
                    ca.cert_path().display()
                ),
            });
        }
        if let Some(upstream) = &self.upstream {
            parts.push(if upstream.insecure {
                "TLS to the server WITHOUT verifying its certificate (--tls-insecure)".to_string()
            } else {
                "TLS to the server, verifying its certificate".to_string()
            });
        }
        if let Some(path) = &self.keylog {
            parts.push(format!("session keys appended to {}", path.display()));
        }
        parts.join(", ")
    }
}

/// The key log for `option` (`--tls-keylog`), else `SSLKEYLOGFILE`, if either.
fn keylog(option: Option<&Path>) -> anyhow::Result<Option<Arc<dyn KeyLog>>> {
    Ok(match config::keylog_path(option) {
        Some(path) => Some(Arc::new(config::KeyLogFile::open(&path)?)),
        None => None,
    })
}

impl Listen {
    /// The TLS a replay server speaks to its clients; `None` without
    /// `--tls-listen`. A client that sends no SNI gets a certificate for
    /// `localhost` (and the address it connected to).
    pub(crate) fn for_replay(args: &TlsListenArgs, timeout: Duration) -> anyhow::Result<Option<Listen>> {
        let provider = config::provider();
        Listen::from_args(args, &provider, keylog(None)?, "localhost", timeout)
    }

    /// The CA file a client must trust, when the certificates are minted.
    pub(crate) fn ca_path(&self) -> Option<&Path> {
        match &self.cert {
            CertSource::Fixed(_) => None,
            CertSource::Minted(ca) => Some(ca.cert_path()),
        }
    }

    /// `None` without `--tls-listen`.
    pub(crate) fn from_args(
        args: &TlsListenArgs,
        provider: &Arc<CryptoProvider>,
        keylog: Option<Arc<dyn KeyLog>>,
        server_host: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<Listen>> {
        if !args.tls_listen {
            return Ok(None);
        }
        let cert = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => CertSource::Fixed(Arc::new(config::load_certified_key(cert, key, provider)?)),
            _ => {
                let dir = match &args.tls_ca_dir {
                    Some(dir) => dir.clone(),
                    None => ca::Ca::default_dir()?,
                };
                CertSource::Minted(Box::new(ca::Ca::load_or_create(&dir, Arc::clone(provider))?))
            }
        };
        Ok(Some(Listen {
            base: Arc::new(config::server_config(Arc::clone(provider), keylog)?),
            cert,
            default_name: server_host.to_string(),
            timeout,
        }))
    }

    /// The certificate for a client that asked for `sni` and connected to
    /// `local`: the fixed one, or one minted for the name (the server host when
    /// the client sent none, with the address it connected to as well).
    fn certified_key(&self, sni: Option<&str>, local: std::net::IpAddr) -> anyhow::Result<Arc<CertifiedKey>> {
        match &self.cert {
            CertSource::Fixed(certified) => Ok(Arc::clone(certified)),
            CertSource::Minted(ca) => match sni {
                Some(name) => ca.certified_key(name, None),
                None => ca.certified_key(&self.default_name, Some(local)),
            },
        }
        .context("no certificate to present")
    }
}

impl Upstream {
    /// The TLS a replay client speaks to the server `host`; `None` without
    /// `--tls-upstream`.
    pub(crate) fn for_replay(
        args: &TlsUpstreamArgs,
        host: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<Upstream>> {
        let provider = config::provider();
        Upstream::from_args(args, &provider, keylog(None)?, host, timeout)
    }

    /// `None` without `--tls-upstream`.
    pub(crate) fn from_args(
        args: &TlsUpstreamArgs,
        provider: &Arc<CryptoProvider>,
        keylog: Option<Arc<dyn KeyLog>>,
        server_host: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<Upstream>> {
        if !args.tls_upstream {
            return Ok(None);
        }
        let base = config::client_config(Arc::clone(provider), args.tls_ca.as_deref(), args.tls_insecure, keylog)?;
        if let Some(name) = &args.tls_server_name {
            rustls::pki_types::ServerName::try_from(name.as_str())
                .map_err(|_| anyhow::anyhow!("--tls-server-name {name:?} is not a valid server name"))?;
        }
        Ok(Some(Upstream {
            base: Arc::new(base),
            server_name: args.tls_server_name.clone(),
            host: server_host.to_string(),
            insecure: args.tls_insecure,
            timeout,
        }))
    }
}

//! The rustls configurations a run uses, built once at startup from the
//! command line: the server side (`--tls-listen`: which certificate), the client
//! side (`--tls-upstream`: which server certificates to trust), and the key log
//! both legs append to.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, KeyLog, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// The crypto provider: ring, which builds with the C compiler alone.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the TLS session keys go: `--tls-keylog FILE`, else `SSLKEYLOGFILE`.
pub(crate) fn keylog_path(option: Option<&Path>) -> Option<PathBuf> {
    option.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("SSLKEYLOGFILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Appends NSS key log lines (`<label> <client random> <secret>`, hex) to a file
/// created mode 0600: with it Wireshark decrypts a capture of either leg.
#[derive(Debug)]
pub(crate) struct KeyLogFile {
    file: Mutex<File>,
}

impl KeyLogFile {
    pub(crate) fn open(path: &Path) -> anyhow::Result<KeyLogFile> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("failed to open TLS key log {}", path.display()))?;
        Ok(KeyLogFile { file: Mutex::new(file) })
    }
}

impl KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line = String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        hex_into(&mut line, client_random);
        line.push(' ');
        hex_into(&mut line, secret);
        line.push('\n');
        // One write per line, so lines of both legs never interleave. A key log
        // that cannot be written must not stop the traffic.
        let _ = self
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(line.as_bytes());
    }
}

/// Appends `bytes` as lowercase hex.
pub(crate) fn hex_into(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// Reads a certificate chain and its key (PEM) for `--tls-cert`/`--tls-key`.
pub(crate) fn load_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("failed to read certificates from {}", cert.display()))?;
    if chain.is_empty() {
        bail!("no certificate in {}", cert.display());
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("failed to read a private key from {}", key.display()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("unsupported private key in {}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().with_context(|| {
        format!(
            "the key in {} does not belong to the certificate in {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(certified)
}

/// The server side's base configuration; each connection gets a copy with its
/// own certificate and ALPN.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    keylog: Option<Arc<dyn KeyLog>>,
) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup failed")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Ok(config)
}

/// The client side's base configuration: the system's trust store plus
/// `extra_ca`, or no verification at all with `insecure`.
pub(crate) fn client_config(
    provider: Arc<CryptoProvider>,
    extra_ca: Option<&Path>,
    insecure: bool,
    keylog: Option<Arc<dyn KeyLog>>,
) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS setup failed")?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        // A system without a trust store still works with --tls-ca.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("failed to read CA certificates from {}", path.display()))?;
            if certs.is_empty() {
                bail!("no certificate in {}", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("bad CA certificate in {}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Ok(config)
}

/// `--tls-insecure`: accepts any server certificate, but still checks that the
/// handshake is signed by the key in it, as TLS requires.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! netrecord's own certificate authority: with `--tls-listen` and no
//! `--tls-cert`, netrecord presents a certificate it mints for the name the client
//! asked for, signed by this CA, so a client that trusts the CA once accepts
//! netrecord for any server.
//!
//! The CA lives in a directory (`--tls-ca-dir`, default
//! `$XDG_DATA_HOME/netrecord`, else `~/.local/share/netrecord`) as
//! `netrecord-ca.pem` (the certificate clients trust, mode 0644) and
//! `netrecord-ca-key.pem` (its key, mode 0600). Both are made on first use and
//! reused afterwards. The key is created with `O_EXCL`, so two netrecords starting
//! at once never make two CAs, and an existing key is never replaced. Minted
//! certificates live in memory only, one per name.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;

/// The CA certificate's file name in the CA directory.
pub(crate) const CA_CERT: &str = "netrecord-ca.pem";
/// The CA key's file name in the CA directory.
pub(crate) const CA_KEY: &str = "netrecord-ca-key.pem";

/// A minted certificate's names: the name asked for, and an address it also
/// covers.
type Names = (String, Option<IpAddr>);

/// The CA, able to mint a certificate for any name.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    provider: Arc<CryptoProvider>,
    minted: Mutex<HashMap<Names, Arc<CertifiedKey>>>,
}

impl Ca {
    /// The CA directory when `--tls-ca-dir` is not given.
    pub(crate) fn default_dir() -> anyhow::Result<PathBuf> {
        let data = match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
                Some(home) => Path::new(&home).join(".local/share"),
                None => bail!("cannot place netrecord's CA: neither XDG_DATA_HOME nor HOME is set (use --tls-ca-dir)"),
            },
        };
        Ok(data.join("netrecord"))
    }

    /// Loads the CA in `dir`, or makes it there if it does not exist yet.
    pub(crate) fn load_or_create(dir: &Path, provider: Arc<CryptoProvider>) -> anyhow::Result<Ca> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("failed to create CA directory {}", dir.display()))?;
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&key_path);
        let issuer = match created {
            Ok(key_file) => create(key_file, &key_path, &cert_path)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load(&key_path, &cert_path)?,
            Err(e) => return Err(e).with_context(|| format!("failed to create CA key {}", key_path.display())),
        };
        Ok(Ca {
            issuer,
            cert_path,
            provider,
            minted: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate a client must trust.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A certificate for `name` (a DNS SAN, or an IP SAN for an address), plus an
    /// IP SAN for `also_ip` when given, signed by the CA; minted once per name.
    pub(crate) fn certified_key(&self, name: &str, also_ip: Option<IpAddr>) -> anyhow::Result<Arc<CertifiedKey>> {
        let key = (name.to_ascii_lowercase(), also_ip);
        let mut minted = self.minted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(certified) = minted.get(&key) {
            return Ok(Arc::clone(certified));
        }
        let certified = Arc::new(self.mint(&key.0, also_ip)?);
        minted.insert(key, Arc::clone(&certified));
        Ok(certified)
    }

    fn mint(&self, name: &str, also_ip: Option<IpAddr>) -> anyhow::Result<CertifiedKey> {
        let mut names = vec![name.to_string()];
        if let Some(ip) = also_ip.filter(|ip| ip.to_string() != name) {
            names.push(ip.to_string());
        }
        let mut params =
            CertificateParams::new(names).with_context(|| format!("cannot mint a certificate for {name:?}"))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        // Well inside the 398 days some clients allow a server certificate.
        (params.not_before, params.not_after) = validity(Duration::from_secs(365 * 86_400));
        let key = KeyPair::generate().context("failed to make a key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("failed to sign a certificate for {name:?}"))?;
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .context("failed to load a minted key")?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signing_key))
    }
}

/// From a day ago (clocks differ) to `length` from now.
fn validity(length: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::days(1), now + length)
}

/// Makes a new CA: its key into the file just created, its certificate beside it.
fn create(mut key_file: fs::File, key_path: &Path, cert_path: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let made = (|| {
        let key = KeyPair::generate().context("failed to make the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "netrecord CA");
        params.distinguished_name.push(DnType::OrganizationName, "netrecord");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(Duration::from_secs(10 * 365 * 86_400));
        let cert = params.self_signed(&key).context("failed to sign the CA certificate")?;
        key_file
            .write_all(key.serialize_pem().as_bytes())
            .and_then(|()| key_file.sync_all())
            .with_context(|| format!("failed to write CA key {}", key_path.display()))?;
        // Written beside and renamed into place, so a reader never sees half a
        // certificate.
        let tmp = cert_path.with_extension(format!("pem.tmp{}", std::process::id()));
        fs::write(&tmp, cert.pem())
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)))
            .and_then(|()| fs::rename(&tmp, cert_path))
            .with_context(|| format!("failed to write CA certificate {}", cert_path.display()))?;
        Ok(Issuer::new(params, key))
    })();
    if made.is_err() {
        // Leave no key without a certificate behind: the next start makes a CA anew.
        let _ = fs::remove_file(key_path);
    }
    made
}

/// Loads an existing CA. The key must be private to this user.
fn load(key_path: &Path, cert_path: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let meta =
        fs::symlink_metadata(key_path).with_context(|| format!("failed to read CA key {}", key_path.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        bail!(
            "CA key {} must be a regular file owned by this user with mode 0600",
            key_path.display()
        );
    }
    let key_pem =
        fs::read_to_string(key_path).with_context(|| format!("failed to read CA key {}", key_path.display()))?;
    // Another netrecord may have created the key a moment ago and be writing
    // the certificate now: give it a moment (bounded).
    let mut cert_pem = fs::read_to_string(cert_path);
    for _ in 0..20 {
        match &cert_pem {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(50));
                cert_pem = fs::read_to_string(cert_path);
            }
            _ => break,
        }
    }
    let cert_pem = cert_pem.with_context(|| {
        format!(
            "failed to read CA certificate {} (its key {} exists: remove the key to make a new CA)",
            cert_path.display(),
            key_path.display()
        )
    })?;
    let key =
        KeyPair::from_pem(&key_pem).with_context(|| format!("CA key {} is not a valid key", key_path.display()))?;
    Issuer::from_ca_cert_pem(&cert_pem, key)
        .with_context(|| format!("CA certificate {} is not a valid certificate", cert_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn the_ca_is_made_once_then_reused_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let first = Ca::load_or_create(&ca_dir, provider()).unwrap();
        let cert = fs::read(first.cert_path()).unwrap();
        let key_mode = fs::metadata(ca_dir.join(CA_KEY)).unwrap().permissions().mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let cert_mode = fs::metadata(ca_dir.join(CA_CERT)).unwrap().permissions().mode();
        assert_eq!(cert_mode & 0o777, 0o644);
        let again = Ca::load_or_create(&ca_dir, provider()).unwrap();
        assert_eq!(fs::read(again.cert_path()).unwrap(), cert, "the CA was made anew");
        let a = again.certified_key("localhost", None).unwrap();
        let b = again.certified_key("LOCALHOST", None).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "a name is minted once");
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Ca::load_or_create(dir.path(), provider()).unwrap();
        fs::set_permissions(dir.path().join(CA_KEY), fs::Permissions::from_mode(0o644)).unwrap();
        let e = Ca::load_or_create(dir.path(), provider()).err().unwrap();
        assert!(e.to_string().contains("mode 0600"), "{e:#}");
    }
}

//! The local certificate authority the egress proxy intercepts TLS with, for hosts where a
//! credential is injected. Made on first use under `$NANOCLAW_HOME/ca/` (directory 0700, key
//! 0600); the key never leaves the host. Sandboxes get only the certificate, inside a bundle
//! with the host's system roots ([`LocalCa::write_bundle`]).
//!
//! Leaf certificates are short-lived (24 h), one per host, cached and re-issued when less
//! than an hour remains.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA's directory under `$NANOCLAW_HOME`.
pub const CA_DIR_NAME: &str = "ca";
const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca-key.pem";

/// File names written into a sandbox's run dir (mounted read-only at `/run/nanoclaw`).
pub const SANDBOX_CA_CERT: &str = nanoclaw_protocol::contract::paths::CA_CERT_NAME;
pub const SANDBOX_CA_BUNDLE: &str = nanoclaw_protocol::contract::paths::CA_BUNDLE_NAME;
/// The variable telling the agent runner where the bundle is inside the sandbox.
pub const CA_BUNDLE_ENV: &str = nanoclaw_protocol::contract::env::CA_BUNDLE;

/// A leaf is valid this long...
const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// ...and re-issued when less than this remains.
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// Leaves start this far in the past, for clients whose clock is a little behind.
const LEAF_BACKDATE: Duration = Duration::from_secs(300);
/// Host certificates kept at once (a runaway tool must not grow this without bound).
const MAX_CACHED_LEAVES: usize = 1024;

/// Where the host's system CA certificates usually are (first found wins).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("local CA: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "local CA: the files in {dir} do not form a usable CA ({why}); move the directory away to make a new CA"
    )]
    Corrupt { dir: PathBuf, why: CaMaterialError },
    #[error("local CA: cannot issue a certificate for {host}: {why}")]
    Issue { host: String, why: LeafError },
}

/// What is wrong with the CA's key or certificate (read from disk or just made).
#[derive(Debug, thiserror::Error)]
pub enum CaMaterialError {
    #[error("the key: {0}")]
    Key(rcgen::Error),
    #[error("the certificate: {0}")]
    CertificatePem(rustls_pki_types::pem::Error),
    #[error("the certificate: {0}")]
    Certificate(rcgen::Error),
    #[error("generating the key: {0}")]
    GenerateKey(rcgen::Error),
    #[error("self-signing: {0}")]
    SelfSign(rcgen::Error),
}

/// Why a leaf certificate for one host could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    #[error("not a DNS name: {0}")]
    NotDnsName(rcgen::Error),
    #[error("key: {0}")]
    Key(rcgen::Error),
    #[error("signing: {0}")]
    Signing(rcgen::Error),
    #[error("loading the key: {0}")]
    LoadKey(rustls::Error),
    #[error("TLS versions: {0}")]
    TlsVersions(rustls::Error),
}

struct Leaf {
    config: Arc<ServerConfig>,
    expires: Instant,
}

/// The CA and its per-host leaf cache.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<HashMap<String, Leaf>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA from `dir`, or makes one there when it has none.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, CaError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { what, path, source }
        };
        create_private_dir(dir).map_err(io("creating", dir))?;
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cert_path.exists() && key_path.exists() {
            let cert_pem =
                std::fs::read_to_string(&cert_path).map_err(io("reading", &cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io("reading", &key_path))?;
            {
                use std::os::unix::fs::PermissionsExt;
                // Tighten a key file someone loosened.
                std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io("restricting", &key_path))?;
            }
            return Self::from_pem(&cert_pem, &key_pem).map_err(|why| CaError::Corrupt {
                dir: dir.to_owned(),
                why,
            });
        }
        let (cert_pem, key_pem) = generate_ca().map_err(|why| CaError::Corrupt {
            dir: dir.to_owned(),
            why,
        })?;
        write_private(&key_path, key_pem.as_bytes(), 0o600).map_err(io("writing", &key_path))?;
        write_private(&cert_path, cert_pem.as_bytes(), 0o644).map_err(io("writing", &cert_path))?;
        tracing::info!(dir = %dir.display(), "made the local CA for egress TLS interception");
        Self::from_pem(&cert_pem, &key_pem).map_err(|why| CaError::Corrupt {
            dir: dir.to_owned(),
            why,
        })
    }

    /// A CA that lives only in memory (tests, benchmarks).
    pub fn ephemeral() -> Result<LocalCa, CaError> {
        let corrupt = |why| CaError::Corrupt {
            dir: PathBuf::from("(memory)"),
            why,
        };
        let (cert_pem, key_pem) = generate_ca().map_err(corrupt)?;
        Self::from_pem(&cert_pem, &key_pem).map_err(corrupt)
    }

    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<LocalCa, CaMaterialError> {
        let key = KeyPair::from_pem(key_pem).map_err(CaMaterialError::Key)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(CaMaterialError::CertificatePem)?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(CaMaterialError::Certificate)?;
        Ok(LocalCa {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The host's system CA certificates followed by ours (what sandboxed tools trust).
    pub fn bundle_pem(&self) -> String {
        let mut out = String::new();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find_map(|p| std::fs::read_to_string(p).ok());
        match system {
            Some(s) => {
                out.push_str(&s);
                if !s.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => tracing::warn!(
                "no system CA bundle found; sandboxed tools will trust only the local CA (tunnelled HTTPS will fail verification)"
            ),
        }
        out.push_str("# nanoclaw local CA (egress credential injection)\n");
        out.push_str(&self.cert_pem);
        out
    }

    /// Writes `ca.pem` and `ca-bundle.pem` into `run_dir`; returns the bundle's path there.
    pub fn write_bundle(&self, run_dir: &Path) -> std::io::Result<PathBuf> {
        write_private(
            &run_dir.join(SANDBOX_CA_CERT),
            self.cert_pem.as_bytes(),
            0o644,
        )?;
        let bundle = run_dir.join(SANDBOX_CA_BUNDLE);
        write_private(&bundle, self.bundle_pem().as_bytes(), 0o644)?;
        Ok(bundle)
    }

    /// The TLS server configuration presenting a leaf for `host` (cached; re-issued when
    /// under an hour of validity remains).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let now = Instant::now();
        if let Ok(leaves) = self.leaves.lock()
            && let Some(leaf) = leaves.get(host)
            && leaf.expires > now + LEAF_RENEW_BEFORE
        {
            return Ok(Arc::clone(&leaf.config));
        }
        let config = Arc::new(self.issue(host)?);
        if let Ok(mut leaves) = self.leaves.lock() {
            if leaves.len() >= MAX_CACHED_LEAVES {
                leaves.retain(|_, l| l.expires > now + LEAF_RENEW_BEFORE);
                if leaves.len() >= MAX_CACHED_LEAVES {
                    leaves.clear();
                }
            }
            leaves.insert(
                host.to_owned(),
                Leaf {
                    config: Arc::clone(&config),
                    expires: now + LEAF_LIFETIME,
                },
            );
        }
        Ok(config)
    }

    fn issue(&self, host: &str) -> Result<ServerConfig, CaError> {
        let fail = |why: LeafError| CaError::Issue {
            host: host.to_owned(),
            why,
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_owned()
                    .try_into()
                    .map_err(|e| fail(LeafError::NotDnsName(e)))?,
            ),
        }];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + LEAF_LIFETIME;
        params.serial_number = Some(rand::random::<[u8; 16]>().to_vec().into());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| fail(LeafError::Key(e)))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail(LeafError::Signing(e)))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| fail(LeafError::LoadKey(e)))?;
        let certified = Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing,
        ));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(LeafError::TlsVersions(e)))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(certified)));
        // The proxy speaks HTTP/1.1 to the client; ALPN keeps h2-capable clients on it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tracing::debug!(host, "issued a leaf certificate");
        Ok(config)
    }
}

/// Presents the one leaf whatever the client's SNI says: the CONNECT target was checked,
/// not the SNI.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// A new CA: ECDSA P-256, valid ten years, usable only to sign certificates.
fn generate_ca() -> Result<(String, String), CaMaterialError> {
    let key = KeyPair::generate().map_err(CaMaterialError::GenerateKey)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A random suffix tells two installations' CAs apart.
    let id = hex_id();
    dn.push(DnType::CommonName, format!("nanoclaw local CA {id}"));
    dn.push(DnType::OrganizationName, "nanoclaw");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(10 * 365 * 24 * 3600);
    params.serial_number = Some(rand::random::<[u8; 16]>().to_vec().into());
    let cert = params
        .self_signed(&key)
        .map_err(CaMaterialError::SelfSign)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn hex_id() -> String {
    rand::random::<[u8; 4]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes through a temporary file created with `mode`, then renames: never a moment with
/// the content readable by others, nor a half-written file.
fn write_private(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_with_private_files_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let a = LocalCa::load_or_create(&ca_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&ca_dir.join(KEY_FILE)), 0o600);
        let b = LocalCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        // A leaf from the reloaded CA is issued without error.
        b.server_config("api.example.com").unwrap();
        b.server_config("127.0.0.1").unwrap();
    }

    #[test]
    fn the_bundle_holds_our_ca_but_never_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::ephemeral().unwrap();
        let bundle = ca.write_bundle(dir.path()).unwrap();
        let text = std::fs::read_to_string(bundle).unwrap();
        assert!(text.contains(ca.cert_pem().trim()));
        assert!(!text.contains("PRIVATE KEY"));
        let cert = std::fs::read_to_string(dir.path().join(SANDBOX_CA_CERT)).unwrap();
        assert_eq!(cert, ca.cert_pem());
    }

    #[test]
    fn leaves_are_cached_per_host() {
        let ca = LocalCa::ephemeral().unwrap();
        let a1 = ca.server_config("a.example").unwrap();
        let a2 = ca.server_config("a.example").unwrap();
        let b = ca.server_config("b.example").unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b));
    }
}

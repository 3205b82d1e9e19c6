//! The TLS client configuration both mail connections use: the system's roots, plus a CA
//! file the owner names for a server with a private CA. Certificates are always checked;
//! there is no setting to turn that off.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::MailError;

/// The roots to trust: the system's, and the certificates in `ca_file`.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, MailError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        for cert in extra_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| MailError::Config(format!("ca_file {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(MailError::Config(
            "no trusted certificates: the system has none and no ca_file is set".into(),
        ));
    }
    Ok(roots)
}

/// The certificates in a PEM file.
pub fn extra_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MailError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| MailError::Config(format!("ca_file {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| MailError::Config(format!("ca_file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(MailError::Config(format!(
            "ca_file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A rustls client configuration over [`roots`].
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, MailError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MailError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

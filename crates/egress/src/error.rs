//! The errors the proxy's seams and constructors return. Their messages are the texts users,
//! logs and refusals showed before these were typed.

use crate::ca::CaError;

/// Why the proxy's secrets (the vault behind [`crate::EgressSecrets`]) could not answer. The
/// proxy then refuses the request: it fails closed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The vault failed (decrypting, its key, its tables).
    #[error("the vault could not be read ({0})")]
    Vault(#[from] nanoclaw_vault::VaultError),
    /// The store under the vault failed.
    #[error("the vault could not be read ({0})")]
    Store(#[from] nanoclaw_store::StoreError),
}

/// Why a group's egress policy could not be read. The proxy then refuses the request.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The group itself could not be read.
    #[error("reading group {folder}: {source}")]
    Group {
        folder: String,
        source: nanoclaw_store::StoreError,
    },
    /// The group's allow/deny rules could not be read.
    #[error("reading group {folder}'s egress rules: {source}")]
    Rules {
        folder: String,
        source: nanoclaw_store::StoreError,
    },
    /// The group's method/port settings could not be read.
    #[error("reading group {folder}'s egress settings: {source}")]
    Settings {
        folder: String,
        source: nanoclaw_store::StoreError,
    },
}

/// Why the intercepting proxy could not be built (the host then serves without interception).
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The local CA could not be loaded or made.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A root certificate given for upstreams (tests' own roots) was refused.
    #[error("an extra upstream root certificate is not usable: {0}")]
    UpstreamRoot(#[source] rustls::Error),
    /// The TLS library refused the upstream protocol versions.
    #[error("upstream TLS versions: {0}")]
    UpstreamTlsVersions(#[source] rustls::Error),
}

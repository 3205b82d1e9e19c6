//! nanoclaw's vault: secrets encrypted at rest (XChaCha20-Poly1305 under a master key kept outside the
//! data dir: in the OS keyring or a key file), grants saying which group may use which secret on which host and how it is injected,
//! placeholders that stand for secrets inside sandboxes, the audit hash chain and the leak guard.
//!
//! Secret values live in `secrecy` types (zeroized on drop, redacted in `Debug`) and are never logged.

mod audit;
mod crypto;
mod error;
mod key;
mod keyring;
mod leak;
mod rules;
mod vault;

pub use audit::{Audit, AuditEntry, Decision, VerifyError, row_hash};
pub use crypto::{NONCE_LEN, open as open_sealed, seal};
pub use error::VaultError;
pub use key::{KeyOrigin, KeySources, MASTER_KEY_ENV, MasterKey, default_key_path};
pub use keyring::{KEYRING_ENV, KeyringEntry, KeyringError};
pub use leak::{LeakGuard, MIN_DERIVED_LEN, MIN_RAW_LEN, Match};
pub use rules::{
    Template, host_matches, normalize_host, path_matches, validate_host_pattern,
    validate_path_prefix, validate_secret_name,
};
pub use vault::{GrantRequest, Injection, LiveSecret, SecretInfo, Vault, env_name};

/// Re-exported so callers need no direct dependency for the value types.
pub use secrecy::{ExposeSecret, SecretString};

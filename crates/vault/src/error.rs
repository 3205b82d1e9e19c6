//! The vault's error type. Messages say what failed and what to do; none ever contains a secret value.

use std::path::PathBuf;

use nanoclaw_store::StoreError;

/// Errors from the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The master key given is not the one the vault was sealed with. Nothing was written.
    #[error(
        "the master key does not match the one that encrypted this vault: {source_desc}; set \
         NANOCLAW_MASTER_KEY or restore {}",
        key_path.display()
    )]
    WrongKey {
        /// Where the key came from (e.g. "NANOCLAW_MASTER_KEY" or "key file /…/master.key").
        source_desc: String,
        key_path: PathBuf,
    },

    /// No master key is available, but the vault holds secrets sealed with one.
    #[error(
        "no master key: the vault holds secrets but NANOCLAW_MASTER_KEY is not set, {} does \
         not exist and the OS keyring has no key for this data dir; set NANOCLAW_MASTER_KEY, \
         restore {} or unlock the keyring that holds it",
        key_path.display(), key_path.display()
    )]
    MissingKey { key_path: PathBuf },

    /// The OS keyring is there but failed; no new key is made in its place.
    #[error(transparent)]
    Keyring(#[from] crate::keyring::KeyringError),

    /// The master key text could not be parsed.
    #[error("the master key from {origin} is not 32 bytes as base64 or 64 hex characters: {why}")]
    BadKey { origin: String, why: String },

    /// Reading or writing the key file failed.
    #[error("vault: cannot {op} {}: {source}", path.display())]
    KeyFile {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A stored ciphertext failed authentication (tampered, moved to another name/version, or sealed
    /// with another key).
    #[error(
        "secret {name:?} version {version} cannot be decrypted: the ciphertext, its nonce or its \
         name/version were changed, or it was sealed with another master key"
    )]
    Decrypt { name: String, version: i64 },

    /// Input the vault rejects (bad name, host, template…).
    #[error("{0}")]
    Invalid(String),

    /// A secret the operation needs does not exist.
    #[error("no secret named {0:?}; see `nanoclaw vault list`")]
    NoSuchSecret(String),

    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// Sealing failed (only on an internal error of the AEAD).
    #[error("vault: encryption failed: {0}")]
    Seal(String),
}

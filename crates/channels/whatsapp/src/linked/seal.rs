//! The linked session on disk: one file, sealed with XChaCha20-Poly1305 under a 32-byte key
//! that lives in the vault (`whatsapp.session_key`), written whole to a temporary file and
//! renamed over the old one, so a crash leaves either the old session or the new one.
//!
//! Layout: `NCWA1\0` (the format's name, also the associated data) ‖ 24-byte nonce ‖
//! ciphertext. A file that does not open — edited, cut short, or sealed under another key —
//! is an error that tells the owner to link again; it is never read as an empty session.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use nanoclaw_channel::{ChannelError, SecretSource};
use secrecy::{ExposeSecret, SecretString};

/// The vault secret holding the session key (64 hex digits).
pub const SESSION_KEY_SECRET: &str = "whatsapp.session_key";
const MAGIC: &[u8] = b"NCWA1\0";
const NONCE_LEN: usize = 24;

/// Why the session file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "the WhatsApp session could not be opened: {0}; run `nanoclaw channel add whatsapp --set mode=linked` to link again"
    )]
    Unreadable(String),
    #[error("the WhatsApp session file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("sealing the WhatsApp session failed: {0}")]
    Seal(String),
}

impl From<SessionError> for ChannelError {
    fn from(e: SessionError) -> ChannelError {
        ChannelError::Setup(e.to_string())
    }
}

/// The key that seals the session.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    pub fn generate() -> SessionKey {
        SessionKey(rand::random())
    }

    /// Parses the vault's form: 64 hex digits.
    pub fn from_secret(secret: &SecretString) -> Result<SessionKey, ChannelError> {
        let bytes = hex::decode(secret.expose_secret().trim()).ok();
        bytes
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(SessionKey)
            .ok_or_else(|| {
                ChannelError::Setup(format!(
                    "the vault secret {SESSION_KEY_SECRET} is not 64 hex digits; remove it \
                     (`nanoclaw channel remove whatsapp`) and link again"
                ))
            })
    }

    pub fn to_secret(&self) -> SecretString {
        SecretString::from(hex::encode(self.0))
    }

    /// The key from the vault, made and stored there first when there is none.
    pub async fn load_or_create(secrets: &dyn SecretSource) -> Result<SessionKey, ChannelError> {
        if let Some(secret) = secrets.secret(SESSION_KEY_SECRET).await? {
            return SessionKey::from_secret(&secret);
        }
        let key = SessionKey::generate();
        secrets
            .put_secret(SESSION_KEY_SECRET, key.to_secret())
            .await?;
        tracing::info!(
            secret = SESSION_KEY_SECRET,
            "whatsapp: made a new session key in the vault"
        );
        Ok(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Seals `plain` into the file format.
pub fn seal(key: &SessionKey, plain: &[u8]) -> Result<Vec<u8>, SessionError> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let sealed = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plain,
                aad: MAGIC,
            },
        )
        .map_err(|e| SessionError::Seal(e.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal`] made.
pub fn open(key: &SessionKey, file: &[u8]) -> Result<Vec<u8>, SessionError> {
    let body = file
        .strip_prefix(MAGIC)
        .ok_or_else(|| SessionError::Unreadable("not a nanoclaw WhatsApp session file".into()))?;
    if body.len() < NONCE_LEN {
        return Err(SessionError::Unreadable("the file is cut short".into()));
    }
    let (nonce, sealed) = body.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce)
        .map_err(|_| SessionError::Unreadable("the file is cut short".into()))?;
    key.cipher()
        .decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: MAGIC,
            },
        )
        .map_err(|_| {
            SessionError::Unreadable(
                "it was changed, or sealed under another key than the vault's whatsapp.session_key"
                    .into(),
            )
        })
}

/// The sealed session file.
#[derive(Debug, Clone)]
pub struct SealedFile {
    path: PathBuf,
    key: SessionKey,
}

impl SealedFile {
    pub fn new(path: PathBuf, key: SessionKey) -> SealedFile {
        SealedFile { path, key }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// The opened contents; `None` when there is no file (never linked).
    pub fn read(&self) -> Result<Option<Vec<u8>>, SessionError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => open(&self.key, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(self.io(error)),
        }
    }

    /// Replaces the file with `plain`, sealed: written to a temporary file (0600), flushed
    /// to disk, then renamed over the old one.
    pub fn write(&self, plain: &[u8]) -> Result<(), SessionError> {
        let sealed = seal(&self.key, plain)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(&sealed)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                // The rename itself is durable once the directory is.
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        written.map_err(|error| {
            let _ = std::fs::remove_file(&tmp);
            self.io(error)
        })
    }

    /// Where a logged-out session is set aside (so health can say why there is none).
    pub fn logged_out_path(&self) -> PathBuf {
        let mut path = self.path.clone().into_os_string();
        path.push(".logged-out");
        PathBuf::from(path)
    }

    /// Sets a logged-out session aside: it is never opened again.
    pub fn retire(&self) -> Result<(), SessionError> {
        std::fs::rename(&self.path, self.logged_out_path()).map_err(|error| self.io(error))
    }

    /// Deletes the file.
    pub fn remove(&self) -> Result<(), SessionError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.io(error)),
        }
    }

    fn io(&self, error: std::io::Error) -> SessionError {
        SessionError::Io {
            path: self.path.clone(),
            error,
        }
    }
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_opens_only_with_its_key_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::generate();
        let file = SealedFile::new(dir.path().join("session"), key.clone());
        assert!(file.read().unwrap().is_none(), "no file: never linked");
        file.write(b"the session").unwrap();
        assert_eq!(file.read().unwrap().unwrap(), b"the session");
        let raw = std::fs::read(file.path()).unwrap();
        assert!(
            !raw.windows(11).any(|w| w == b"the session"),
            "the plaintext is not on disk"
        );

        let other = SealedFile::new(file.path().to_path_buf(), SessionKey::generate());
        let e = other.read().unwrap_err().to_string();
        assert!(e.contains("could not be opened"), "{e}");
        assert!(e.contains("nanoclaw channel add whatsapp"), "{e}");

        let mut tampered = raw.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        std::fs::write(file.path(), &tampered).unwrap();
        assert!(matches!(file.read(), Err(SessionError::Unreadable(_))));
        std::fs::write(file.path(), &raw[..20]).unwrap();
        assert!(matches!(file.read(), Err(SessionError::Unreadable(_))));
        std::fs::write(file.path(), b"").unwrap();
        assert!(matches!(file.read(), Err(SessionError::Unreadable(_))));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_and_no_temporary_is_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = SealedFile::new(dir.path().join("session"), SessionKey::generate());
        file.write(b"one").unwrap();
        file.write(b"two").unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("session")]);
        assert_eq!(file.read().unwrap().unwrap(), b"two");
    }

    #[test]
    fn the_key_round_trips_through_the_vault_form_and_is_made_once() {
        let secrets = nanoclaw_channel::memory::MemorySecrets::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = rt.block_on(SessionKey::load_or_create(&secrets)).unwrap();
        let again = rt.block_on(SessionKey::load_or_create(&secrets)).unwrap();
        assert_eq!(first.0, again.0, "the stored key is reused, not replaced");
        let bad = SecretString::from("not hex".to_string());
        assert!(SessionKey::from_secret(&bad).is_err());
    }
}

//! The 32-byte master key, looked for in this order:
//! 1. `NANOCLAW_MASTER_KEY` (base64 or 64 hex characters);
//! 2. a 0600 key file outside the data dir, `$XDG_CONFIG_HOME/nanoclaw/master.key` (default
//!    `~/.config/nanoclaw/master.key`), when it exists — installs that started with a file keep it;
//! 3. the OS keyring (Secret Service), the item for this data dir.
//!
//! On first use (`nanoclaw vault set`) a new key goes to the OS keyring when there is one, else to the
//! key file. An existing key is never replaced. A keyring that is there but fails (locked, prompt
//! dismissed) is an error, never a reason to make a new key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

use crate::crypto::secret_key;
use crate::error::VaultError;
use crate::keyring::{KeyringEntry, Lookup};

/// Environment variable holding the master key.
pub const MASTER_KEY_ENV: &str = "NANOCLAW_MASTER_KEY";

/// Where a key came from (for error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    Env,
    File(PathBuf),
    /// Created just now at this path.
    Created(PathBuf),
    /// The OS keyring's item for this data dir.
    Keyring,
    /// Created just now in the OS keyring.
    CreatedInKeyring,
    /// Given by the program (tests, embedding).
    Given,
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOrigin::Env => write!(f, "{MASTER_KEY_ENV}"),
            KeyOrigin::File(p) => write!(f, "key file {}", p.display()),
            KeyOrigin::Created(p) => write!(f, "new key file {}", p.display()),
            KeyOrigin::Keyring => write!(f, "the OS keyring"),
            KeyOrigin::CreatedInKeyring => write!(f, "a new key in the OS keyring"),
            KeyOrigin::Given => write!(f, "the key given by the program"),
        }
    }
}

/// Where to look for the master key besides `NANOCLAW_MASTER_KEY`.
#[derive(Clone, Debug)]
pub struct KeySources {
    /// The key file (used when it exists, or created when there is no keyring).
    pub file: PathBuf,
    /// The OS keyring item; `None` when the keyring is turned off.
    pub keyring: Option<KeyringEntry>,
}

impl KeySources {
    /// The key file only (no keyring).
    pub fn file_only(file: &Path) -> KeySources {
        KeySources {
            file: file.to_path_buf(),
            keyring: None,
        }
    }

    /// The default key file and the keyring item for the data dir `home`.
    pub fn for_home(home: &Path) -> Result<KeySources, VaultError> {
        Ok(KeySources {
            file: default_key_path()?,
            keyring: KeyringEntry::for_home(home),
        })
    }
}

/// The master key. Zeroized on drop; never printed.
pub struct MasterKey {
    key: SecretBox<[u8; 32]>,
    origin: KeyOrigin,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        MasterKey {
            key: secret_key(*self.key.expose_secret()),
            origin: self.origin.clone(),
        }
    }
}

impl MasterKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey {
            key: secret_key(bytes),
            origin: KeyOrigin::Given,
        }
    }

    /// A fresh random key.
    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(rand::random())
    }

    /// Parse 64 hex characters or base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str, origin: KeyOrigin) -> Result<MasterKey, VaultError> {
        let text = text.trim();
        let bad = |why: &str| VaultError::BadKey {
            origin: origin.to_string(),
            why: why.to_owned(),
        };
        let bytes: Zeroizing<Vec<u8>> =
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(hex::decode(text).map_err(|_| bad("invalid hex"))?)
            } else {
                let engines = [
                    base64::engine::general_purpose::STANDARD,
                    base64::engine::general_purpose::STANDARD_NO_PAD,
                    base64::engine::general_purpose::URL_SAFE,
                    base64::engine::general_purpose::URL_SAFE_NO_PAD,
                ];
                let decoded = engines.iter().find_map(|e| e.decode(text).ok());
                Zeroizing::new(decoded.ok_or_else(|| bad("neither hex nor base64"))?)
            };
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad(&format!("decodes to {} bytes", bytes.len())))?;
        Ok(MasterKey {
            key: secret_key(arr),
            origin,
        })
    }

    /// The key from `NANOCLAW_MASTER_KEY`, else the key file, else the OS keyring (see the module
    /// docs). With `create`, a missing key is created — in the keyring when there is one, else in the
    /// key file (0600, directory 0700); an existing one is never replaced.
    /// `Ok(None)`: no key anywhere and `create` is false.
    pub fn load(sources: &KeySources, create: bool) -> Result<Option<MasterKey>, VaultError> {
        if let Some(text) = std::env::var_os(MASTER_KEY_ENV).filter(|v| !v.is_empty()) {
            let text = Zeroizing::new(text.to_string_lossy().into_owned());
            return MasterKey::parse(&text, KeyOrigin::Env).map(Some);
        }
        let path = sources.file.as_path();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                warn_if_loose(path);
                return MasterKey::parse(&text, KeyOrigin::File(path.to_path_buf())).map(Some);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(VaultError::KeyFile {
                    op: "read the master key file",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        if let Some(entry) = &sources.keyring {
            match entry.lookup()? {
                Lookup::Found(text) => {
                    return MasterKey::parse(&text, KeyOrigin::Keyring).map(Some);
                }
                Lookup::Missing if create => {
                    let key = MasterKey::generate();
                    let text = Zeroizing::new(hex::encode(key.bytes()));
                    if entry.store(&text)? {
                        tracing::info!(
                            home = entry.home(),
                            "vault: created a new master key in the OS keyring"
                        );
                        return Ok(Some(MasterKey {
                            key: key.key,
                            origin: KeyOrigin::CreatedInKeyring,
                        }));
                    }
                }
                Lookup::Missing => {}
                Lookup::Unavailable(why) => {
                    tracing::debug!(%why, "vault: no OS keyring; using the key file");
                }
            }
        }
        if create {
            MasterKey::create_file(path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Write a fresh key to `path` (which must not exist).
    fn create_file(path: &Path) -> Result<MasterKey, VaultError> {
        let io = |op, source| VaultError::KeyFile {
            op,
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("create the directory of", e))?;
        }
        let key = MasterKey::generate();
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.bytes())));
        // create_new: two processes racing never overwrite each other's key.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("create the master key file", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write the master key file", e))?;
        tracing::info!(path = %path.display(), "vault: created a new master key file");
        Ok(MasterKey {
            key: key.key,
            origin: KeyOrigin::Created(path.to_path_buf()),
        })
    }

    /// Where this key came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        self.key.expose_secret()
    }
}

fn warn_if_loose(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "vault: the master key file is readable by others; chmod 600 it");
    }
}

/// `$XDG_CONFIG_HOME/nanoclaw/master.key`, else `$HOME/.config/nanoclaw/master.key`.
pub fn default_key_path() -> Result<PathBuf, VaultError> {
    let config_dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .ok_or_else(|| {
            VaultError::Invalid(format!(
                "cannot find the master key file: neither XDG_CONFIG_HOME nor HOME is set; set \
                 {MASTER_KEY_ENV} or HOME"
            ))
        })?;
    Ok(config_dir.join("nanoclaw").join("master.key"))
}

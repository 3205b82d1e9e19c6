//! The master key in the OS keyring: the freedesktop Secret Service (GNOME Keyring, KWallet,
//! KeePassXC) over the D-Bus session bus. One item per data dir, found by its attributes
//! `application=nanoclaw`, `kind=master-key`, `home=<data dir>`, so two installs on one account keep
//! separate keys.
//!
//! The Secret Service client is async (zbus); the vault's key loading is synchronous and runs once at
//! start-up, so each call runs on its own short-lived thread with a current-thread runtime and a
//! deadline — a keyring that hangs (an unlock prompt nobody answers) cannot hang the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

/// Turns the keyring off: `NANOCLAW_KEYRING=off` (or `0`, `false`, `no`).
pub const KEYRING_ENV: &str = "NANOCLAW_KEYRING";

/// How long a keyring call may take, an unlock prompt included.
const DEADLINE: Duration = Duration::from_secs(30);

/// The keyring item holding one data dir's master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringEntry {
    home: String,
}

/// What a lookup found.
pub enum Lookup {
    /// The stored key text.
    Found(Zeroizing<String>),
    /// The keyring works but holds no key for this data dir.
    Missing,
    /// There is no keyring to ask (no session bus, no Secret Service, or turned off).
    Unavailable(String),
}

/// A keyring that is there but refused or failed (locked, prompt dismissed, bad item…).
#[derive(Debug, thiserror::Error)]
#[error("the OS keyring (Secret Service) failed to {op}: {why}")]
pub struct KeyringError {
    pub op: &'static str,
    pub why: String,
}

impl KeyringEntry {
    /// The entry for the data dir `home`, or `None` when `NANOCLAW_KEYRING` turns the keyring off.
    pub fn for_home(home: &Path) -> Option<KeyringEntry> {
        if keyring_disabled() {
            return None;
        }
        let home = std::fs::canonicalize(home).unwrap_or_else(|_| PathBuf::from(home));
        Some(KeyringEntry {
            home: home.display().to_string(),
        })
    }

    /// The data dir this entry belongs to.
    pub fn home(&self) -> &str {
        &self.home
    }

    /// Read the key text.
    pub fn lookup(&self) -> Result<Lookup, KeyringError> {
        imp::lookup(self)
    }

    /// Store `text` as the key. Fails when an item already exists (a key is never replaced).
    /// `Ok(false)`: there is no keyring to store it in.
    pub fn store(&self, text: &Zeroizing<String>) -> Result<bool, KeyringError> {
        imp::store(self, text)
    }

    fn attributes(&self) -> [(&'static str, &str); 3] {
        [
            ("application", "nanoclaw"),
            ("kind", "master-key"),
            ("home", self.home.as_str()),
        ]
    }

    fn label(&self) -> String {
        format!("nanoclaw master key ({})", self.home)
    }
}

fn keyring_disabled() -> bool {
    std::env::var(KEYRING_ENV).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    })
}

/// Run `op` on its own thread and runtime, within [`DEADLINE`].
fn run_blocking<T: Send + 'static>(
    op_name: &'static str,
    op: impl std::future::Future<Output = Result<T, KeyringError>> + Send + 'static,
) -> Result<T, KeyringError> {
    let fail = |why: String| KeyringError { op: op_name, why };
    let worker = std::thread::Builder::new()
        .name("nanoclaw-keyring".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| KeyringError {
                    op: op_name,
                    why: format!("cannot start a runtime: {e}"),
                })?;
            runtime.block_on(async move {
                match tokio::time::timeout(DEADLINE, op).await {
                    Ok(result) => result,
                    Err(_) => Err(KeyringError {
                        op: op_name,
                        why: format!(
                            "no answer within {} s (an unlock prompt nobody answered?)",
                            DEADLINE.as_secs()
                        ),
                    }),
                }
            })
        })
        .map_err(|e| fail(format!("cannot start a thread: {e}")))?;
    worker
        .join()
        .map_err(|_| fail("the keyring thread panicked".into()))?
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;

    use secret_service::{EncryptionType, SecretService};
    use zeroize::Zeroizing;

    use super::{KeyringEntry, KeyringError, Lookup, run_blocking};

    const CONTENT_TYPE: &str = "text/plain";

    /// Connect, or say why there is no keyring. Any failure up to an open session means "no keyring
    /// here": no session bus, nothing owning `org.freedesktop.secrets`, or a provider that will not
    /// open a session.
    async fn connect() -> Result<SecretService<'static>, String> {
        // Plain (not DH-encrypted) transfer is refused: the session bus may be shared.
        SecretService::connect(EncryptionType::Dh)
            .await
            .map_err(|e| e.to_string())
    }

    fn failed(op: &'static str) -> impl Fn(secret_service::Error) -> KeyringError {
        move |e| KeyringError {
            op,
            why: match e {
                secret_service::Error::Locked => {
                    "the keyring is locked; unlock it (log in to the desktop session) or set \
                     NANOCLAW_MASTER_KEY"
                        .into()
                }
                secret_service::Error::Prompt => "the unlock prompt was dismissed".into(),
                other => other.to_string(),
            },
        }
    }

    pub(super) fn lookup(entry: &KeyringEntry) -> Result<Lookup, KeyringError> {
        let entry = entry.clone();
        run_blocking("read the master key", async move {
            let service = match connect().await {
                Ok(s) => s,
                Err(why) => return Ok(Lookup::Unavailable(why)),
            };
            let attributes: HashMap<&str, &str> = entry.attributes().into_iter().collect();
            let found = service
                .search_items(attributes)
                .await
                .map_err(failed("search for the master key"))?;
            let item = match (found.unlocked.first(), found.locked.first()) {
                (Some(item), _) => item,
                (None, Some(item)) => {
                    // Unlocking may show the desktop's password prompt.
                    item.unlock()
                        .await
                        .map_err(failed("unlock the master key"))?;
                    item
                }
                (None, None) => return Ok(Lookup::Missing),
            };
            let bytes = Zeroizing::new(
                item.get_secret()
                    .await
                    .map_err(failed("read the master key"))?,
            );
            let text = std::str::from_utf8(&bytes).map_err(|_| KeyringError {
                op: "read the master key",
                why: "the stored item is not text".into(),
            })?;
            Ok(Lookup::Found(Zeroizing::new(text.to_owned())))
        })
    }

    pub(super) fn store(
        entry: &KeyringEntry,
        text: &Zeroizing<String>,
    ) -> Result<bool, KeyringError> {
        let entry = entry.clone();
        let text = text.clone();
        run_blocking("store the master key", async move {
            let service = match connect().await {
                Ok(s) => s,
                Err(why) => {
                    tracing::debug!(%why, "vault: no OS keyring");
                    return Ok(false);
                }
            };
            let attributes: HashMap<&str, &str> = entry.attributes().into_iter().collect();
            let existing = service
                .search_items(attributes.clone())
                .await
                .map_err(failed("search for the master key"))?;
            if !existing.unlocked.is_empty() || !existing.locked.is_empty() {
                return Err(KeyringError {
                    op: "store the master key",
                    why: "the keyring already holds a master key for this data dir; it is never \
                          replaced"
                        .into(),
                });
            }
            let collection = service
                .get_default_collection()
                .await
                .map_err(failed("open the default collection"))?;
            if collection
                .is_locked()
                .await
                .map_err(failed("open the default collection"))?
            {
                // May show the desktop's password prompt.
                collection
                    .unlock()
                    .await
                    .map_err(failed("unlock the default collection"))?;
            }
            collection
                .create_item(
                    &entry.label(),
                    attributes,
                    text.as_bytes(),
                    false,
                    CONTENT_TYPE,
                )
                .await
                .map_err(failed("store the master key"))?;
            Ok(true)
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    //! No keyring client on this platform yet (macOS Keychain is planned); the key file is used.
    use zeroize::Zeroizing;

    use super::{KeyringEntry, KeyringError, Lookup};

    pub(super) fn lookup(_: &KeyringEntry) -> Result<Lookup, KeyringError> {
        Ok(Lookup::Unavailable(
            "no OS keyring support on this platform".into(),
        ))
    }

    pub(super) fn store(_: &KeyringEntry, _: &Zeroizing<String>) -> Result<bool, KeyringError> {
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_for_different_homes_differ() {
        let ea = KeyringEntry {
            home: "/home/a/.nanoclaw".into(),
        };
        let eb = KeyringEntry {
            home: "/home/b/.nanoclaw".into(),
        };
        assert_ne!(ea.attributes(), eb.attributes());
        assert_eq!(ea.attributes()[0], ("application", "nanoclaw"));
    }
}

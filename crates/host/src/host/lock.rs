//! The data directory's lock: one host per data directory, since a second would double-answer
//! every message.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Held for the host's lifetime; the lock goes with the file when the host stops or dies.
pub(super) struct HostLock {
    _file: std::fs::File,
}

/// Another host holds the data directory's lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another nanoclaw host is already running with this data directory ({}); \
     use `nanoclaw chat` to talk to it, or stop it first",
    home.display()
)]
pub struct AlreadyRunning {
    /// The data directory the other host uses.
    pub home: PathBuf,
}

impl HostLock {
    /// Takes the lock file at `path` (under `<home>/run/`), or fails with [`AlreadyRunning`].
    pub(super) fn acquire(path: &Path) -> anyhow::Result<HostLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // An exclusive, non-blocking lock (flock on Unix). Any failure to take it reads as
        // another host holding it, as it always has.
        if file.try_lock().is_err() {
            return Err(AlreadyRunning {
                home: path
                    .parent()
                    .and_then(|p| p.parent())
                    .unwrap_or(path)
                    .to_owned(),
            }
            .into());
        }
        Ok(HostLock { _file: file })
    }
}

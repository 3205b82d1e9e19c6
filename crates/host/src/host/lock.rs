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
        // The holder's pid, for `nanoclaw stop` and `status` to name (best effort: the lock,
        // not this text, is what keeps a second host out).
        {
            use std::io::{Seek, Write};
            let mut f = &file;
            let _ = f
                .set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| writeln!(f, "{}", std::process::id()));
        }
        Ok(HostLock { _file: file })
    }
}

/// Whether a host holds the lock file at `path` right now, and the pid it wrote there.
/// `None`: no host runs on that data directory.
pub fn holder(path: &Path) -> Option<Option<u32>> {
    let file = std::fs::OpenOptions::new().write(true).open(path).ok()?;
    match file.try_lock() {
        // Free: let go at once (dropping the file releases it), so a host starting now
        // is not kept out for more than this instant.
        Ok(()) => None,
        Err(_) => Some(
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok()),
        ),
    }
}

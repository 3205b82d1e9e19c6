//! Mount policy: which extra host folders a group's sandbox may see.
//!
//! A group asks for folders (`nanoclaw group mount add`, stored in the `group_mounts` table); the
//! owner's allowlist, a file OUTSIDE the data dir that is never mounted
//! (`~/.config/nanoclaw/mount-allowlist.toml`), says which folders may be mounted at all. Every request
//! is checked again at every spawn, on the fully resolved path (symlinks included), and that resolved
//! path is what gets mounted, at `/workspace/extra/<name>`. No allowlist means nothing is mounted.
//!
//! Checks, in order: the name; the allowlist is usable and outside the data dir; the path resolves to a
//! directory; no built-in or allowlist `blocked` pattern matches the path or any of its ancestors; it
//! neither lies inside nor contains nanoclaw's data dir, the allowlist's folder or a system folder; an
//! allowed folder covers it for this group; no blocked entry or Unix socket lies within
//! [`SCAN_DEPTH`] levels inside it. See docs/SECURITY.md ("Mount policy").

mod allowlist;
mod check;
mod rules;
mod scan;
#[cfg(test)]
mod tests;
mod verdict;

use std::path::{Path, PathBuf};

use nanoclaw_sandbox::Mount;
use nanoclaw_store::{Group, GroupMount};

pub use allowlist::{ALLOWLIST_EXAMPLE, AllowEntry, MountPolicy, MountPolicyError, allowlist_path};
pub use rules::BUILTIN_BLOCKED;
pub use verdict::{ApprovedMount, Hit, MountRejection, Origin, RejectReason};

/// Extra folders appear under this sandbox path, one per mount name.
pub const SANDBOX_EXTRA: &str = nanoclaw_protocol::contract::paths::EXTRA;
/// Overrides where the allowlist is read from (tests, unusual setups).
pub const ALLOWLIST_ENV: &str = "NANOCLAW_MOUNT_ALLOWLIST";
/// How many levels inside a mounted folder are searched for blocked entries.
pub const SCAN_DEPTH: usize = 3;
/// Most entries inspected per mounted folder; beyond it the rest of the folder is not searched.
pub const SCAN_BUDGET: usize = 10_000;

/// Checks every requested mount of `group`: what passes, as sandbox mounts of the RESOLVED host paths
/// at `/workspace/extra/<name>`, and what does not, each with the rule that refused it (also logged).
/// Call at every spawn with a freshly loaded policy ([`MountPolicy::load_or_deny`]).
pub fn resolve_group_mounts(
    policy: &MountPolicy,
    group: &Group,
    requested: &[GroupMount],
    data_dir: &Path,
) -> (Vec<Mount>, Vec<MountRejection>) {
    let mut mounts = Vec::new();
    let mut rejections = Vec::new();
    for req in requested {
        match policy.check(group, req, data_dir) {
            Ok(ok) => {
                for note in &ok.notes {
                    tracing::info!(group = %group.folder, mount = %ok.name, note = %note, "extra mount");
                }
                mounts.push(ok.into_mount());
            }
            Err(rejection) => {
                tracing::warn!(group = %group.folder, mount = %rejection.name, reason = %rejection, "extra mount refused");
                rejections.push(rejection);
            }
        }
    }
    (mounts, rejections)
}

/// [`resolve_group_mounts`] with a freshly loaded policy ([`MountPolicy::load_or_deny`]), run
/// on the blocking pool: reading the allowlist and scanning every folder is disk work that must
/// not hold up an async runtime worker.
pub async fn resolve_group_mounts_blocking(
    group: Group,
    requested: Vec<GroupMount>,
    data_dir: PathBuf,
) -> Result<(Vec<Mount>, Vec<MountRejection>), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let policy = MountPolicy::load_or_deny();
        resolve_group_mounts(&policy, &group, &requested, &data_dir)
    })
    .await
}

//! Checking one requested mount against the policy, step by step, in the order the module
//! docs give.

use std::path::{Path, PathBuf};

use nanoclaw_store::{Group, GroupMount};

use super::allowlist::PolicyState;
use super::rules::{blocked_path, resolve_lenient};
use super::scan::scan_contents;
use super::{AllowEntry, ApprovedMount, MountPolicy, MountRejection, RejectReason};
use super::{SANDBOX_EXTRA, SCAN_BUDGET};

/// The requested folder after `~` expansion and resolution.
struct Resolved {
    /// Fully resolved (symlinks followed): what is checked and mounted.
    path: PathBuf,
    /// Whether it differs from the path as given (refusals then show it).
    differs: bool,
}

impl Resolved {
    /// The resolved path, for a refusal, when it differs from the request.
    fn shown(&self) -> Option<&Path> {
        self.differs.then_some(self.path.as_path())
    }
}

impl MountPolicy {
    /// Checks one requested mount for `group`. The approved mount carries the RESOLVED path.
    /// It walks the folder on disk ([`super::SCAN_DEPTH`] levels): from async code, call it
    /// on the blocking pool.
    // A refusal is the rare, cold path and callers keep it whole; boxing buys nothing here.
    #[allow(clippy::result_large_err)]
    pub fn check(
        &self,
        group: &Group,
        requested: &GroupMount,
        data_dir: &Path,
    ) -> Result<ApprovedMount, MountRejection> {
        let reject = |resolved: Option<&Path>, reason: RejectReason| MountRejection {
            name: requested.name.clone(),
            host_path: requested.host_path.clone(),
            resolved: resolved.map(Path::to_owned),
            reason,
        };
        let (allow, user_blocked) = self
            .usable_for(requested)
            .map_err(|reason| reject(None, reason))?;
        let data_dir = resolve_lenient(data_dir);
        let allowlist_dir = resolve_lenient(self.file.parent().unwrap_or(Path::new("/")));
        if allowlist_dir.starts_with(&data_dir) {
            return Err(reject(
                None,
                RejectReason::AllowlistInDataDir {
                    file: self.file_display(),
                    data_dir: data_dir.clone(),
                },
            ));
        }
        let resolved = self
            .resolve_request(&requested.host_path)
            .map_err(|reason| reject(None, reason))?;
        if !resolved.path.is_dir() {
            return Err(reject(resolved.shown(), RejectReason::NotADirectory));
        }
        let rules = self.rules(user_blocked, &data_dir, &allowlist_dir);
        if let Some(reason) = blocked_path(&rules, &resolved.path) {
            return Err(reject(resolved.shown(), reason));
        }
        let entry = self
            .deciding_entry(allow, &resolved.path, group)
            .map_err(|reason| reject(resolved.shown(), reason))?;
        let scan = scan_contents(&rules, &resolved.path);
        if let Some(reason) = scan.rejection {
            return Err(reject(resolved.shown(), reason));
        }
        Ok(approve(
            group,
            requested,
            entry,
            resolved.path,
            scan.complete,
        ))
    }

    /// The allow entries and the allowlist's blocked patterns, when the name is valid and the
    /// allowlist usable.
    fn usable_for(
        &self,
        requested: &GroupMount,
    ) -> Result<(&[AllowEntry], &[String]), RejectReason> {
        if let Err(e) = nanoclaw_store::validate_mount_name(&requested.name) {
            let msg = e.to_string();
            let msg = msg.strip_prefix("store: invalid input: ").unwrap_or(&msg);
            return Err(RejectReason::InvalidName(msg.to_owned()));
        }
        match &self.state {
            PolicyState::Missing => Err(RejectReason::NoAllowlist {
                file: self.file_display(),
            }),
            PolicyState::Unusable(why) => Err(RejectReason::Unusable {
                file: self.file_display(),
                message: why.clone(),
            }),
            PolicyState::Loaded { allow, blocked } => Ok((allow, blocked)),
        }
    }

    /// The requested path, `~` expanded and fully resolved.
    fn resolve_request(&self, host_path: &str) -> Result<Resolved, RejectReason> {
        let Some(given) = self.expand(host_path) else {
            return Err(RejectReason::NotAbsolute);
        };
        let path = match std::fs::canonicalize(&given) {
            Ok(p) => p,
            Err(e) => return Err(RejectReason::Unresolvable(e.to_string())),
        };
        let differs = path != given;
        Ok(Resolved { path, differs })
    }

    /// The most specific allowed folder that covers `resolved` decides; one limited to other
    /// groups does not count.
    fn deciding_entry<'a>(
        &self,
        allow: &'a [AllowEntry],
        resolved: &Path,
        group: &Group,
    ) -> Result<&'a AllowEntry, RejectReason> {
        let mut covering = false;
        let mut best: Option<(&AllowEntry, PathBuf)> = None;
        for entry in allow {
            let Some(root) = self.expand(&entry.path) else {
                continue;
            };
            let Ok(root) = std::fs::canonicalize(&root) else {
                tracing::debug!(path = %entry.path, "allowed folder does not resolve; skipped");
                continue;
            };
            if !resolved.starts_with(&root) {
                continue;
            }
            covering = true;
            if !entry_applies(entry, &group.folder) {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(_, r)| root.as_os_str().len() > r.as_os_str().len())
            {
                best = Some((entry, root));
            }
        }
        match best {
            Some((entry, _)) => Ok(entry),
            None if covering => Err(RejectReason::NotForGroup {
                group: group.folder.clone(),
                file: self.file_display(),
            }),
            None => Err(RejectReason::NotAllowed {
                file: self.file_display(),
            }),
        }
    }
}

/// The approved mount of the `resolved` folder once its contents passed the scan (searched
/// whole unless `scan_complete` is false): writable only as far as the entry and the group
/// allow, with notes saying why it is less than asked for.
fn approve(
    group: &Group,
    requested: &GroupMount,
    entry: &AllowEntry,
    resolved: PathBuf,
    scan_complete: bool,
) -> ApprovedMount {
    let listed = entry
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|f| f == &group.folder));
    let mut notes = Vec::new();
    let writable = requested.read_write && entry.read_write && (group.is_main || listed);
    if requested.read_write && !writable {
        notes.push(if !entry.read_write {
            format!("read-only: its allowed folder {:?} is not read_write", entry.path)
        } else {
            format!(
                "read-only: groups other than main get read-write only when the allowed folder {:?} lists them in groups",
                entry.path
            )
        });
    }
    if !scan_complete {
        notes.push(format!(
            "only the first {SCAN_BUDGET} entries were searched for blocked files"
        ));
    }
    ApprovedMount {
        name: requested.name.clone(),
        host_path: resolved,
        sandbox_path: Path::new(SANDBOX_EXTRA).join(&requested.name),
        writable,
        notes,
    }
}

/// Whether an allow entry applies to the group `folder` (no `groups` list: every group).
fn entry_applies(entry: &AllowEntry, folder: &str) -> bool {
    entry
        .groups
        .as_ref()
        .is_none_or(|groups| groups.iter().any(|g| g == folder))
}

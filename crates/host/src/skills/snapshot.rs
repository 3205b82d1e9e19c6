//! What a sandbox mounts of a skill: a copy of exactly the approved files, not the skill's own
//! folder. Two reasons: the hash is checked once per turn, and a live folder could change under
//! a running agent after that check; and the owner's folders may be private (0700/0600, and a
//! root host's files are unreadable to the sandbox user), while the agent must read every file
//! and run the scripts. Snapshots are content-addressed (`skill-snapshots/<hash>`), so every
//! group and agent with the same skill shares one, made once.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Paths, create_private_dir};

/// The folder holding every snapshot (0700; sandboxes see only their bind-mounted copies).
pub fn snapshots_dir(paths: &Paths) -> PathBuf {
    paths.home.join("skill-snapshots")
}

/// The snapshot of the skill in `source` whose approved hash is `hash`, made if missing. The
/// copy is hashed again and must equal `hash`: files changed between the turn's check and the
/// copy fail the turn (it is retried, and the next check pauses the skill).
pub fn ensure(paths: &Paths, source: &Path, hash: &str) -> Result<PathBuf, String> {
    if hash.is_empty() || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("skill hash {hash:?} is not a SHA-256 hex digest"));
    }
    let root = snapshots_dir(paths);
    let target = root.join(hash);
    if target.is_dir() {
        return Ok(target);
    }
    create_private_dir(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let staging = root.join(format!(".{hash}.new-{}", crate::random_suffix(8)));
    let made = (|| -> Result<(), String> {
        copy_tree(source, &staging)
            .map_err(|e| format!("copying skill {} for the sandbox: {e}", source.display()))?;
        let copied =
            nanoclaw_skills::hash::content_hash(&staging, &nanoclaw_skills::Limits::default())
                .map_err(|e| e.to_string())?;
        if copied != hash {
            return Err(format!(
                "the files of skill {} changed while it was being prepared; the next turn checks it again",
                source.display()
            ));
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    match std::fs::rename(&staging, &target) {
        Ok(()) => Ok(target),
        // Another turn made the same snapshot meanwhile: same hash, same files.
        Err(_) if target.is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(target)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(format!(
                "saving the skill snapshot {}: {e}",
                target.display()
            ))
        }
    }
}

/// Copies regular files and folders (never a link: the loader refused them, and one appearing
/// since is refused here too); folders 0755, files 0644, or 0755 when any execute bit is set.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir(to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
            std::fs::copy(entry.path(), &dest)?;
            let mode = if executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        } else {
            return Err(io::Error::other(format!(
                "{} is not a regular file or folder",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// Removes every snapshot whose hash is not in `keep` (no group's approved hash any more) and
/// any staging folder left by a crash. Called at start, before any agent runs: a running
/// sandbox may still have an old snapshot mounted. Returns how many were removed.
pub fn prune(paths: &Paths, keep: &std::collections::HashSet<String>) -> usize {
    let root = snapshots_dir(paths);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        // Only what this module makes: never follow or delete anything else put there.
        let ours = entry.file_type().is_ok_and(|t| t.is_dir())
            && (name.chars().all(|c| c.is_ascii_hexdigit()) || name.starts_with('.'));
        if !ours {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(snapshot = %name, error = %e, "could not remove an unused skill snapshot")
            }
        }
    }
    removed
}

/// [`prune`] with the hashes every group has approved, read from the store.
pub async fn prune_unused(store: &nanoclaw_store::Store, paths: &Paths) {
    let mut keep = std::collections::HashSet::new();
    let groups = match store.list_groups().await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "skill snapshots not pruned: could not list the groups");
            return;
        }
    };
    for g in groups {
        match store.group_skills(g.id.as_str()).await {
            Ok(rows) => keep.extend(rows.into_iter().map(|r| r.content_hash)),
            Err(e) => {
                tracing::warn!(error = %e, "skill snapshots not pruned: could not read a group's skills");
                return;
            }
        }
    }
    let paths = paths.clone();
    match tokio::task::spawn_blocking(move || prune(&paths, &keep)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed unused skill snapshots"),
        Err(e) => tracing::warn!(error = %e, "pruning skill snapshots failed"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_snapshot_is_the_approved_files_readable_and_shared() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::new(home.path());
        let src = home.path().join("src/demo");
        std::fs::create_dir_all(src.join("scripts")).unwrap();
        std::fs::write(
            src.join("SKILL.md"),
            "---\nname: demo\ndescription: A demo.\n---\nbody\n",
        )
        .unwrap();
        std::fs::write(src.join("scripts/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            src.join("scripts/run.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(src.join("SKILL.md"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let hash =
            nanoclaw_skills::hash::content_hash(&src, &nanoclaw_skills::Limits::default()).unwrap();

        let snap = ensure(&paths, &src, &hash).unwrap();
        assert_eq!(snap, snapshots_dir(&paths).join(&hash));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&snap.join("SKILL.md")), 0o644);
        assert_eq!(mode(&snap.join("scripts/run.sh")), 0o755);
        assert_eq!(mode(&snap.join("scripts")), 0o755);
        // Made once: a second call reuses it even when the source is gone.
        std::fs::remove_dir_all(&src).unwrap();
        assert_eq!(ensure(&paths, &src, &hash).unwrap(), snap);
    }

    #[test]
    fn files_that_differ_from_the_approved_hash_are_not_mounted() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::new(home.path());
        let src = home.path().join("demo");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("SKILL.md"), "changed after approval").unwrap();
        let approved = "ab".repeat(32);
        let err = ensure(&paths, &src, &approved).unwrap_err();
        assert!(err.contains("changed while it was being prepared"), "{err}");
        assert!(!snapshots_dir(&paths).join(&approved).exists());
        let leftovers: Vec<_> = std::fs::read_dir(snapshots_dir(&paths)).unwrap().collect();
        assert!(leftovers.is_empty(), "staging removed");
        assert!(ensure(&paths, &src, "../../etc").is_err());
    }

    #[test]
    fn pruning_keeps_approved_snapshots_and_removes_the_rest() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::new(home.path());
        let root = snapshots_dir(&paths);
        let (kept, old) = ("aa".repeat(32), "bb".repeat(32));
        for dir in [&kept, &old, &".cc.new-x1y2".to_owned()] {
            std::fs::create_dir_all(root.join(dir).join("scripts")).unwrap();
            std::fs::write(root.join(dir).join("SKILL.md"), "x").unwrap();
        }
        std::fs::write(root.join("README"), "not ours").unwrap();
        let keep = std::collections::HashSet::from([kept.clone()]);
        assert_eq!(prune(&paths, &keep), 2);
        assert!(root.join(&kept).join("SKILL.md").is_file());
        assert!(!root.join(&old).exists());
        assert!(!root.join(".cc.new-x1y2").exists());
        assert!(
            root.join("README").is_file(),
            "only snapshot folders are touched"
        );
    }
}

//! Built-in skills: shipped inside the binary and written to `$NANOCLAW_HOME/builtin-skills`
//! at every start, replacing what was there (so an edited or stale copy never outlives an
//! upgrade). The folder is the catalog's first source; the user's and a group's skills of the
//! same name override it.

use std::io;
use std::path::{Component, Path};

use crate::config::create_private_dir;

/// One file of a built-in skill, by its path relative to the built-in skills folder
/// (`<skill>/SKILL.md`, `<skill>/scripts/run.sh` …).
pub use nanoclaw_skills::BundledFile as BuiltinFile;

/// The skills this build ships: `crates/skills/bundled/`, embedded by nanoclaw-skills.
pub const BUILTIN: &[BuiltinFile] = nanoclaw_skills::bundled::FILES;

/// Writes `files` as the folder `dir` (0700 folders, 0600 or 0700 files): staged next to it,
/// then swapped in, so a failure leaves the previous copy. A path that is absolute, has `..`
/// or is empty is refused.
pub fn install(dir: &Path, files: &[BuiltinFile]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent folder", dir.display())))?;
    create_private_dir(parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "builtin-skills".into());
    let staging = parent.join(format!(".{name}.new-{}", crate::random_suffix(8)));
    let result = (|| {
        create_private_dir(&staging)?;
        for file in files {
            let rel = Path::new(file.path);
            if file.path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(io::Error::other(format!(
                    "built-in skill file {:?} is not a plain relative path",
                    file.path
                )));
            }
            let target = staging.join(rel);
            if let Some(folder) = target.parent() {
                create_private_dir(folder)?;
            }
            let mode = if file.executable { 0o700 } else { 0o600 };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)?;
            io::Write::write_all(&mut f, file.contents)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", crate::random_suffix(8)));
    match std::fs::rename(dir, &old) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    }
    std::fs::rename(&staging, dir)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// At host start: writes [`BUILTIN`] and makes the user's and groups' skills folders (0700). A
/// failure is logged; the host runs on with whatever skills are there.
pub fn write_at_start(paths: &crate::config::Paths) {
    if let Err(e) = install(&super::builtin_dir(paths), BUILTIN) {
        tracing::error!(error = %e, dir = %super::builtin_dir(paths).display(), "could not write the built-in skills");
    }
    for dir in [super::user_dir(paths), paths.home.join("group-skills")] {
        if let Err(e) = create_private_dir(&dir) {
            tracing::error!(error = %e, dir = %dir.display(), "could not create a skills folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_skills::{Catalog, Source, SourceKind};

    const NOTES: &[BuiltinFile] = &[
        BuiltinFile {
            path: "notes/SKILL.md",
            contents: b"---\nname: notes\ndescription: Keeps notes. Use when asked to note things.\n---\n# Notes\n",
            executable: false,
        },
        BuiltinFile {
            path: "notes/scripts/list.sh",
            contents: b"#!/bin/sh\nls\n",
            executable: true,
        },
    ];

    #[test]
    fn built_in_skills_are_written_replacing_the_old_copy_and_load_as_built_in() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("builtin-skills");
        // A stale skill from an older build, and an edited file: both go.
        std::fs::create_dir_all(dir.join("stale")).unwrap();
        std::fs::write(dir.join("stale/SKILL.md"), "old").unwrap();
        install(&dir, NOTES).unwrap();
        install(&dir, NOTES).unwrap();
        assert!(!dir.join("stale").exists());
        let catalog = Catalog::load(&[Source::builtin(&dir)]);
        let entry = catalog.get("notes").unwrap();
        assert_eq!(entry.source, SourceKind::Builtin);
        assert!(entry.ok().is_some(), "{:?}", entry.error());
        assert_eq!(catalog.entries().count(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("notes/scripts/list.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Nothing staged is left next to it.
        let left: Vec<_> = std::fs::read_dir(home.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn a_path_leaving_the_folder_is_refused_and_the_old_copy_kept() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("builtin-skills");
        install(&dir, NOTES).unwrap();
        let bad = [BuiltinFile {
            path: "../escape/SKILL.md",
            contents: b"x",
            executable: false,
        }];
        let err = install(&dir, &bad).unwrap_err();
        assert!(err.to_string().contains("plain relative path"), "{err}");
        assert!(!home.path().join("escape").exists());
        assert!(dir.join("notes/SKILL.md").exists());
    }
}

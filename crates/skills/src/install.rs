//! Installing a skill into a skills folder: from a folder, a `.tar.gz` archive with a known
//! SHA-256, or a git repository at a pinned ref.
//!
//! Every install unpacks or copies into a hidden staging folder inside the destination (the
//! catalog skips hidden folders), validates the result as a [`Skill`], and only then renames it
//! to `<dest>/<name>`. A failure leaves nothing behind.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{InstallError, LoadError};
use crate::frontmatter;
use crate::hash::{self, Limits};
use crate::skill::{SKILL_MD, Skill};

/// Largest `.tar.gz` read, compressed.
pub const MAX_ARCHIVE_BYTES: u64 = 20 * 1024 * 1024;

fn staging(dest_root: &Path) -> Result<tempfile::TempDir, InstallError> {
    std::fs::create_dir_all(dest_root)
        .map_err(|e| InstallError::io(dest_root, "creating the skills folder", &e))?;
    tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(dest_root)
        .map_err(|e| InstallError::io(dest_root, "creating a staging folder", &e))
}

#[cfg(unix)]
fn set_executable(path: &Path, executable: bool) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| InstallError::io(path, "setting permissions", &e))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path, _executable: bool) -> Result<(), InstallError> {
    Ok(())
}

/// Copies the regular files of `src` (checked by [`hash::walk`]: no symlinks, devices or
/// oversize content) into `dst`, which must not exist.
fn copy_tree(src: &Path, dst: &Path, limits: &Limits) -> Result<(), InstallError> {
    let files = hash::walk(src, limits)?;
    std::fs::create_dir_all(dst).map_err(|e| InstallError::io(dst, "creating", &e))?;
    for f in files {
        let to = dst.join(&f.rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| InstallError::io(parent, "creating", &e))?;
        }
        std::fs::copy(&f.path, &to).map_err(|e| InstallError::io(&f.path, "copying", &e))?;
        set_executable(&to, f.executable)?;
    }
    Ok(())
}

/// Validates the skill in `root` (any folder name), copies it into staging as `<name>`, loads
/// it, and moves it to `dest_root/<name>`.
fn install_checked(root: &Path, dest_root: &Path, limits: &Limits) -> Result<Skill, InstallError> {
    // Validate before copying: the walk refuses symlinks and limits, then SKILL.md must parse.
    hash::walk(root, limits)?;
    let md = root.join(SKILL_MD);
    let text = std::fs::read_to_string(&md).map_err(|e| {
        InstallError::Invalid(LoadError::io(&md, "reading (is this a skill folder?)", &e))
    })?;
    let (fm, _) = frontmatter::parse(&text, &md, None)?;
    let target = dest_root.join(&fm.name);
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(InstallError::Exists {
            name: fm.name,
            path: target,
        });
    }
    let stage = staging(dest_root)?;
    let staged = stage.path().join(&fm.name);
    copy_tree(root, &staged, limits)?;
    // Full validation (manifest, scripts, hash) on the copy, under its final folder name.
    Skill::load_with(&staged, limits)?;
    std::fs::rename(&staged, &target)
        .map_err(|e| InstallError::io(&target, "moving the skill into place", &e))?;
    let skill = Skill::load_with(&target, limits)?;
    tracing::info!(skill = %skill.name(), dir = %target.display(), hash = %skill.content_hash(), "skill installed");
    Ok(skill)
}

/// Installs the skill in folder `src` into `dest_root/<name>`, copying its files.
pub fn install_from_dir(src: &Path, dest_root: &Path) -> Result<Skill, InstallError> {
    install_checked(src, dest_root, &Limits::default())
}

/// Checks an archive entry's path: relative, only normal components (`.` allowed), no `..`.
fn entry_path(raw: &Path, archive: &str) -> Result<PathBuf, InstallError> {
    let refuse = |reason: &str| InstallError::Refused {
        source_name: archive.to_string(),
        entry: raw.display().to_string(),
        reason: reason.to_string(),
    };
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("path contains \"..\"; refused")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("absolute path; refused"));
            }
        }
    }
    Ok(out)
}

/// Installs a skill from a `.tar.gz` archive whose SHA-256 must be `expected_sha256` (hex).
///
/// The hash is checked before anything is unpacked. Entries must be regular files or folders
/// with relative paths and no `..`; links, devices and FIFOs are refused, as are archives over
/// the size and count limits. The skill is the archive's root if it has SKILL.md, or its one
/// top-level folder.
pub fn install_from_archive(
    archive: &Path,
    expected_sha256: &str,
    dest_root: &Path,
) -> Result<Skill, InstallError> {
    let limits = Limits::default();
    let name = archive.display().to_string();
    let expected = expected_sha256.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InstallError::Refused {
            source_name: name,
            entry: "expected SHA-256".into(),
            reason: format!(
                "{expected_sha256:?} is not a SHA-256 (64 hex digits); give the archive's published hash"
            ),
        });
    }
    let file =
        std::fs::File::open(archive).map_err(|e| InstallError::io(archive, "opening", &e))?;
    let mut bytes = Vec::new();
    file.take(MAX_ARCHIVE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| InstallError::io(archive, "reading", &e))?;
    if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(InstallError::Refused {
            source_name: name,
            entry: "archive".into(),
            reason: format!("larger than {MAX_ARCHIVE_BYTES} bytes"),
        });
    }
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(InstallError::HashMismatch {
            path: archive.to_path_buf(),
            expected,
            actual,
        });
    }

    let unpack = tempfile::tempdir()
        .map_err(|e| InstallError::io(archive, "creating a temporary folder", &e))?;
    let root = unpack.path().join("archive");
    std::fs::create_dir(&root).map_err(|e| InstallError::io(&root, "creating", &e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let entries = tar
        .entries()
        .map_err(|e| InstallError::io(archive, "reading the archive", &e))?;
    let mut count = 0usize;
    let mut entries_seen = 0usize;
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| InstallError::io(archive, "reading the archive", &e))?;
        let raw = entry
            .path()
            .map_err(|e| InstallError::io(archive, "reading an entry's path", &e))?
            .into_owned();
        let refuse = |reason: String| InstallError::Refused {
            source_name: name.clone(),
            entry: raw.display().to_string(),
            reason,
        };
        let kind = entry.header().entry_type();
        let rel = entry_path(&raw, &name)?;
        // Folders and metadata entries count too, so an archive of empty folders is bounded.
        entries_seen += 1;
        if entries_seen > 4 * limits.max_files || rel.components().count() > limits.max_depth + 1 {
            return Err(refuse(format!(
                "the archive has more than {} entries or nests deeper than {} folders",
                4 * limits.max_files,
                limits.max_depth
            )));
        }
        match kind {
            tar::EntryType::Directory => {
                if !rel.as_os_str().is_empty() {
                    std::fs::create_dir_all(root.join(&rel))
                        .map_err(|e| InstallError::io(root.join(&rel), "creating", &e))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(refuse("a file entry with no name".into()));
                }
                count += 1;
                let size = entry.header().size().unwrap_or(u64::MAX);
                total = total.saturating_add(size);
                if count > limits.max_files
                    || size > limits.max_file_bytes
                    || total > limits.max_total_bytes
                {
                    return Err(refuse(format!(
                        "the archive exceeds the limits ({} files, {} bytes per file, {} in all)",
                        limits.max_files, limits.max_file_bytes, limits.max_total_bytes
                    )));
                }
                let to = root.join(&rel);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| InstallError::io(parent, "creating", &e))?;
                }
                // create_new: a second entry with the same path is refused, not a silent overwrite.
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&to)
                    .map_err(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            refuse("the archive holds this path twice".into())
                        } else {
                            InstallError::io(&to, "creating", &e)
                        }
                    })?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)
                    .map_err(|e| InstallError::io(&to, "unpacking", &e))?;
                if copied != size {
                    return Err(refuse("the entry is truncated".into()));
                }
                let exec = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                set_executable(&to, exec)?;
            }
            // Extended headers carry metadata for the next entry; tar has applied them.
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {}
            other => {
                let what = match other {
                    tar::EntryType::Symlink => "a symbolic link",
                    tar::EntryType::Link => "a hard link",
                    tar::EntryType::Char | tar::EntryType::Block => "a device file",
                    tar::EntryType::Fifo => "a FIFO",
                    _ => "an unsupported entry type",
                };
                return Err(refuse(format!(
                    "{what}; skills may hold only regular files and folders"
                )));
            }
        }
    }

    let skill_root = if root.join(SKILL_MD).is_file() {
        root.clone()
    } else {
        let tops: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(|e| InstallError::io(&root, "listing", &e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        match tops.as_slice() {
            [one] if one.join(SKILL_MD).is_file() => one.clone(),
            _ => {
                return Err(InstallError::Refused {
                    source_name: name,
                    entry: SKILL_MD.into(),
                    reason: "no SKILL.md at the archive's root or in its single top-level folder"
                        .into(),
                });
            }
        }
    };
    install_checked(&skill_root, dest_root, &limits)
}

/// A git repository to install from, at a pinned ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository URL (`https://…`, `file://…`).
    pub url: String,
    /// A branch or tag, cloned with `--depth 1`.
    pub reference: String,
    /// If given, the commit (full hex) the ref must point at; anything else is refused.
    pub commit: Option<String>,
    /// The skill's folder inside the repository, if it is not the root.
    pub subdir: Option<PathBuf>,
}

fn git(args: &[&str], dir: Option<&Path>) -> Result<String, InstallError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    // No prompts, no system/user config (hooks, URL rewrites, credential helpers), and no
    // transports that run programs.
    cmd.args([
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "core.hooksPath=/dev/null",
    ])
    .args(args)
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| InstallError::Git(format!("could not run git (is it installed?): {e}")))?;
    if !out.status.success() {
        return Err(InstallError::Git(format!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Installs a skill from a git repository: `git clone --depth 1 --branch <reference>`, checks
/// the commit if one is pinned, and installs the (sub)folder like [`install_from_dir`] (the
/// `.git` folder is not copied).
pub fn install_from_git(source: &GitSource, dest_root: &Path) -> Result<Skill, InstallError> {
    if source.url.starts_with('-') || source.url.is_empty() {
        return Err(InstallError::Git(format!(
            "{:?} is not a repository URL",
            source.url
        )));
    }
    let ref_ok = !source.reference.is_empty()
        && !source.reference.starts_with('-')
        && !source.reference.contains("..")
        && source
            .reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-+".contains(&b));
    if !ref_ok {
        return Err(InstallError::Git(format!(
            "{:?} is not a branch or tag name",
            source.reference
        )));
    }
    let tmp = tempfile::tempdir()
        .map_err(|e| InstallError::io(dest_root, "creating a temporary folder", &e))?;
    let checkout = tmp.path().join("repo");
    let checkout_str = checkout.to_string_lossy().into_owned();
    git(
        &[
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "--single-branch",
            "--branch",
            &source.reference,
            "--",
            &source.url,
            &checkout_str,
        ],
        None,
    )?;
    let head = git(&["rev-parse", "HEAD"], Some(&checkout))?;
    if let Some(want) = &source.commit
        && !head.eq_ignore_ascii_case(want.trim())
    {
        return Err(InstallError::Git(format!(
            "{} at {:?} is commit {head}, not the pinned {want}; refusing",
            source.url, source.reference
        )));
    }
    tracing::debug!(url = %source.url, reference = %source.reference, commit = %head, "cloned skill repository");
    std::fs::remove_dir_all(checkout.join(".git"))
        .map_err(|e| InstallError::io(checkout.join(".git"), "removing", &e))?;
    let root = match &source.subdir {
        None => checkout.clone(),
        Some(sub) => {
            let rel = entry_path(sub, &source.url)?;
            // Each folder on the way must be a real folder: a symlink could lead out of the clone.
            let mut at = checkout.clone();
            for part in rel.components() {
                at.push(part);
                let meta = std::fs::symlink_metadata(&at)
                    .map_err(|e| InstallError::io(&at, "finding the skill folder", &e))?;
                if !meta.is_dir() {
                    return Err(InstallError::Refused {
                        source_name: source.url.clone(),
                        entry: sub.display().to_string(),
                        reason: format!("{} is not a folder (symlinks are refused)", at.display()),
                    });
                }
            }
            at
        }
    };
    install_checked(&root, dest_root, &Limits::default())
}

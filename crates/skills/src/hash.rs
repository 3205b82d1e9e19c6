//! The skill folder walk (limits, no symlinks) and its content hash.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::LoadError;

/// Limits on what a skill folder may hold. Skills are instructions and small scripts; these keep
/// a mistaken folder (a checkout, a data set) from being hashed, copied or mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most files.
    pub max_files: usize,
    /// Largest single file, bytes.
    pub max_file_bytes: u64,
    /// Most bytes in all files.
    pub max_total_bytes: u64,
    /// Deepest folder nesting below the skill folder.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 1000,
            max_file_bytes: 10 * 1024 * 1024,
            max_total_bytes: 50 * 1024 * 1024,
            max_depth: 16,
        }
    }
}

/// One regular file of a skill folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the skill folder, `/`-separated.
    pub rel: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Whether any execute bit is set.
    pub executable: bool,
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

/// Lists the regular files of `dir`, sorted by relative path (bytewise), refusing symlinks,
/// devices, sockets and FIFOs, non-UTF-8 names, and anything over `limits`.
pub fn walk(dir: &Path, limits: &Limits) -> Result<Vec<FileEntry>, LoadError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let top = std::fs::symlink_metadata(dir)
        .map_err(|e| LoadError::io(dir, "reading the skill folder", &e))?;
    if top.file_type().is_symlink() {
        return Err(LoadError::refused(
            dir,
            "the skill folder is a symlink; copy the skill in instead",
        ));
    }
    if !top.is_dir() {
        return Err(LoadError::refused(dir, "not a folder"));
    }
    walk_into(dir, "", 0, limits, &mut out, &mut total)?;
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(out)
}

fn walk_into(
    dir: &Path,
    prefix: &str,
    depth: usize,
    limits: &Limits,
    out: &mut Vec<FileEntry>,
    total: &mut u64,
) -> Result<(), LoadError> {
    if depth > limits.max_depth {
        return Err(LoadError::refused(
            dir,
            format!(
                "folders nest deeper than {} levels; flatten the skill",
                limits.max_depth
            ),
        ));
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| LoadError::io(dir, "listing the folder", &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LoadError::io(dir, "listing the folder", &e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(LoadError::refused(
                &path,
                "the file name is not UTF-8; rename it",
            ));
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| LoadError::io(&path, "reading file metadata", &e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(LoadError::refused(
                &path,
                "symlinks are not allowed in a skill (they could point outside it); replace it \
                 with the file",
            ));
        }
        if ft.is_dir() {
            walk_into(&path, &rel, depth + 1, limits, out, total)?;
        } else if ft.is_file() {
            if meta.len() > limits.max_file_bytes {
                return Err(LoadError::refused(
                    &path,
                    format!(
                        "the file is {} bytes; the limit is {} per file",
                        meta.len(),
                        limits.max_file_bytes
                    ),
                ));
            }
            *total += meta.len();
            if *total > limits.max_total_bytes {
                return Err(LoadError::refused(
                    &path,
                    format!(
                        "the skill holds more than {} bytes; move large data out of it",
                        limits.max_total_bytes
                    ),
                ));
            }
            if out.len() >= limits.max_files {
                return Err(LoadError::refused(
                    &path,
                    format!("the skill holds more than {} files", limits.max_files),
                ));
            }
            out.push(FileEntry {
                rel,
                path,
                size: meta.len(),
                executable: is_executable(&meta),
            });
        } else {
            return Err(LoadError::refused(
                &path,
                "only regular files and folders are allowed in a skill (not devices, sockets or \
                 FIFOs)",
            ));
        }
    }
    Ok(())
}

/// Domain separation for the hash, so a skill hash is never equal to some other SHA-256 use.
const HASH_TAG: &[u8] = b"nanoclaw-skill-content-v1\n";

/// SHA-256 over the folder's regular files, as lower-case hex.
///
/// Input: a version tag, then for each file in bytewise order of its `/`-separated relative path:
/// the path, a NUL, `x` or `-` for the execute bit, the size as 8 bytes big-endian, the contents.
/// Folders themselves (and empty ones) do not count, nor do timestamps, owners or other mode
/// bits, so the same files give the same hash on every machine.
pub fn content_hash(dir: &Path, limits: &Limits) -> Result<String, LoadError> {
    let files = walk(dir, limits)?;
    let mut h = Sha256::new();
    h.update(HASH_TAG);
    let mut buf = vec![0u8; 64 * 1024];
    for f in &files {
        h.update(f.rel.as_bytes());
        h.update([0u8]);
        h.update(if f.executable { b"x" } else { b"-" });
        h.update(f.size.to_be_bytes());
        let file =
            std::fs::File::open(&f.path).map_err(|e| LoadError::io(&f.path, "opening", &e))?;
        // Read no more than the size hashed above, and refuse a file that changed size meanwhile.
        let mut reader = file.take(f.size + 1);
        let mut read = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| LoadError::io(&f.path, "reading", &e))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            let chunk = buf.get(..n).unwrap_or_default();
            h.update(chunk);
        }
        if read != f.size {
            return Err(LoadError::refused(
                &f.path,
                "the file changed while it was being hashed; try again",
            ));
        }
    }
    Ok(hex::encode(h.finalize()))
}

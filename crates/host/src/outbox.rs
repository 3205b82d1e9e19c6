//! Files an agent sends (`send_message` with `files`): checked, then copied into the host's
//! own outbox, from which the channels send them.
//!
//! Every path comes from the agent, so it is untrusted. A path must name a regular file inside
//! the group's folder, reached without following any symbolic link, no larger than the limit.
//! The walk opens each folder on the way relative to the one before with `O_NOFOLLOW`, so a
//! link anywhere on the path is refused, never followed — also when the host runs as root and
//! the link points at a file only root may read. The checks are made on the open file and the
//! bytes are copied from that same open file, so swapping the file after the check changes
//! nothing; the copy (0600, in a fresh 0700 folder under `$NANOCLAW_HOME/outbox/`, which no
//! sandbox sees) is what the channel sends, also after a restart.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nanoclaw_store::OutboundFile;

/// Files one message may carry.
pub const MAX_FILES_PER_MESSAGE: usize = 10;
/// The default of `[channels] max_outgoing_file_bytes`.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 25 * 1024 * 1024;
/// Files waiting for delivery may take this many times `max_outgoing_file_bytes` in all (with
/// the default limit, 1000 MiB): an agent sending in a loop to a chat that is not delivered
/// to cannot fill the host's disk.
pub const OUTBOX_CAP_FILES: u64 = 40;
/// Longest path the agent may name, in bytes.
const MAX_PATH_BYTES: usize = 4096;
/// Longest file name shown in the chat, in characters.
const MAX_SHOWN_NAME_CHARS: usize = 200;

/// Why a file was refused; shown to the agent, which may be able to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the path is empty")]
    Empty,
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("it leaves the group folder (`..`)")]
    ParentDir,
    #[error("it is outside the group folder (files must be under {workspace})", workspace = nanoclaw_protocol::contract::paths::WORKSPACE)]
    Outside,
    #[error("it names the group folder itself, not a file")]
    NotAFile,
    #[error("`{0}` is a symbolic link; links are not followed (send the file it points to)")]
    Symlink(String),
    #[error("`{0}` does not exist")]
    Missing(String),
    #[error("`{0}` is not a folder")]
    NotAFolder(String),
    #[error("it is not a regular file (it is a {0})")]
    NotRegular(&'static str),
    #[error("it is {size} bytes; the limit is {limit} bytes per file")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "files waiting for delivery already take the host's room for them; only {room} more bytes fit until they are sent"
    )]
    NoRoom { room: u64 },
    #[error("it cannot be read: {0}")]
    Unreadable(String),
}

/// Something went wrong on the host's side (the outbox cannot be written).
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("file {path:?} refused: {reason}")]
    Refused { path: String, reason: Refusal },
    #[error("{count} files in one message; the limit is {MAX_FILES_PER_MESSAGE}")]
    TooMany { count: usize },
    #[error("the host could not keep a copy of {path:?}: {source}")]
    Host {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Copies of the files of one message, in the outbox folder made for them.
#[derive(Debug)]
pub struct Taken {
    /// The folder holding the copies (removed with [`remove_copies`]).
    pub dir: PathBuf,
    pub files: Vec<OutboundFile>,
}

/// Checks every path the agent named and copies the files into a new folder under
/// `outbox_root`, `room` bytes at most in all. All or nothing: on any refusal the copies made
/// so far are removed. Blocking; run it on the blocking pool.
pub fn take_files(
    group_dir: &Path,
    outbox_root: &Path,
    requested: &[String],
    max_bytes: u64,
    mut room: u64,
) -> Result<Taken, OutboxError> {
    if requested.len() > MAX_FILES_PER_MESSAGE {
        return Err(OutboxError::TooMany {
            count: requested.len(),
        });
    }
    // Every path is checked and opened before anything is copied.
    let mut opened = Vec::with_capacity(requested.len());
    for path in requested {
        let refused = |reason| OutboxError::Refused {
            path: path.clone(),
            reason,
        };
        let parts = sandbox_relative(path).map_err(refused)?;
        let file = open_inside(group_dir, &parts, max_bytes).map_err(refused)?;
        room = room
            .checked_sub(file.1)
            .ok_or_else(|| refused(Refusal::NoRoom { room }))?;
        opened.push((path, parts, file));
    }
    let dir = new_outbox_dir(outbox_root).map_err(|source| OutboxError::Host {
        path: outbox_root.display().to_string(),
        source,
    })?;
    let mut files = Vec::with_capacity(opened.len());
    for (position, (path, parts, (file, size))) in opened.into_iter().enumerate() {
        let last = parts.last().map(|p| p.as_os_str()).unwrap_or_default();
        // Read no further than the size checked (plus a byte to see that it grew).
        let copied = copy_into(&dir, position, last, file, size);
        match copied {
            Ok(copy) => files.push(copy),
            Err(e) => {
                remove_dir(&dir);
                return Err(match e {
                    CopyError::Refused(reason) => OutboxError::Refused {
                        path: path.clone(),
                        reason,
                    },
                    CopyError::Host(source) => OutboxError::Host {
                        path: path.clone(),
                        source,
                    },
                });
            }
        }
    }
    Ok(Taken { dir, files })
}

/// The path's components below the group folder: relative to it, or absolute under
/// `/workspace/group`. `.` is dropped; `..` is refused outright (even one that would stay
/// inside: the agent can always name the file directly).
fn sandbox_relative(path: &str) -> Result<Vec<PathBuf>, Refusal> {
    if path.is_empty() {
        return Err(Refusal::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(Refusal::TooLong);
    }
    let given = Path::new(path);
    let relative = if given.is_absolute() {
        given
            .strip_prefix(nanoclaw_protocol::contract::paths::WORKSPACE)
            .map_err(|_| Refusal::Outside)?
    } else {
        given
    };
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => parts.push(PathBuf::from(name)),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::Outside),
        }
    }
    if parts.is_empty() {
        return Err(Refusal::NotAFile);
    }
    Ok(parts)
}

/// The regular file at `parts` below `group_dir`, opened for reading without following any
/// link, with its size (checked against `max_bytes`).
fn open_inside(
    group_dir: &Path,
    parts: &[PathBuf],
    max_bytes: u64,
) -> Result<(File, u64), Refusal> {
    let unreadable = |e: std::io::Error| Refusal::Unreadable(e.to_string());
    // The group folder itself is the host's (the sandbox cannot replace its own mount point).
    let top = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let mut dir =
        open_at(libc::AT_FDCWD, &c_path(group_dir.as_os_str())?, top).map_err(unreadable)?;
    let mut shown = PathBuf::new();
    let (last, folders) = parts.split_last().ok_or(Refusal::NotAFile)?;
    for folder in folders {
        shown.push(folder);
        let name = c_path(folder.as_os_str())?;
        dir = match open_at(dir.as_raw_fd(), &name, DIR_FLAGS) {
            Ok(fd) => fd,
            Err(e) => return Err(why_not_opened(&dir, &name, &shown, e)),
        };
    }
    shown.push(last);
    let name = c_path(last.as_os_str())?;
    // Looked at before it is opened: a fifo or device is never opened (opening one may block
    // or have effects), and what is opened must be the same inode.
    let before = stat_at(&dir, &name).map_err(|e| why_not_opened(&dir, &name, &shown, e))?;
    check_kind(&before, &shown)?;
    // O_NONBLOCK: should a fifo be swapped in after the look, opening it does not block.
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let fd = open_at(dir.as_raw_fd(), &name, flags)
        .map_err(|e| why_not_opened(&dir, &name, &shown, e))?;
    let file = File::from(fd);
    let meta = fstat(&file).map_err(unreadable)?;
    check_kind(&meta, &shown)?;
    if (meta.st_dev, meta.st_ino) != (before.st_dev, before.st_ino) {
        return Err(Refusal::Unreadable(
            "it changed while it was being checked".into(),
        ));
    }
    let size = u64::try_from(meta.st_size).unwrap_or(0);
    if size > max_bytes {
        return Err(Refusal::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    Ok((file, size))
}

pub(crate) const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn c_path(name: &OsStr) -> Result<CString, Refusal> {
    CString::new(name.as_bytes())
        .map_err(|_| Refusal::Unreadable("the path contains a NUL byte".into()))
}

pub(crate) fn open_at(
    dir: libc::c_int,
    name: &CStr,
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string; `dir` is an open directory fd or AT_FDCWD; the
    // returned fd is owned below.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `name` in `dir` itself (a link is described, not followed).
fn stat_at(dir: &OwnedFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter; the fd and C string are valid.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stat)
    }
}

fn fstat(file: &File) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter; the fd is open.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(file.as_raw_fd(), &mut stat) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stat)
    }
}

/// Only a regular file passes.
fn check_kind(stat: &libc::stat, shown: &Path) -> Result<(), Refusal> {
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => Ok(()),
        libc::S_IFLNK => Err(Refusal::Symlink(shown.display().to_string())),
        libc::S_IFDIR => Err(Refusal::NotRegular("folder")),
        libc::S_IFIFO => Err(Refusal::NotRegular("fifo")),
        libc::S_IFSOCK => Err(Refusal::NotRegular("socket")),
        libc::S_IFCHR | libc::S_IFBLK => Err(Refusal::NotRegular("device")),
        _ => Err(Refusal::NotRegular("special file")),
    }
}

/// Why `name` in `dir` could not be opened, in words the agent can act on. Only explains: the
/// open itself already refused to follow anything.
fn why_not_opened(dir: &OwnedFd, name: &CStr, shown: &Path, error: std::io::Error) -> Refusal {
    let shown = shown.display().to_string();
    match stat_at(dir, name) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Refusal::Missing(shown),
        Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFLNK => Refusal::Symlink(shown),
        Ok(stat)
            if error.raw_os_error() == Some(libc::ENOTDIR)
                && stat.st_mode & libc::S_IFMT != libc::S_IFDIR =>
        {
            Refusal::NotAFolder(shown)
        }
        _ => Refusal::Unreadable(error.to_string()),
    }
}

/// A new, empty 0700 folder of its own under `root` (created 0700 too when missing).
fn new_outbox_dir(root: &Path) -> std::io::Result<PathBuf> {
    crate::config::create_private_dir(root)?;
    loop {
        let dir = root.join(crate::random_suffix(16));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

enum CopyError {
    Refused(Refusal),
    Host(std::io::Error),
}

/// Copies the open `file` into `dir` (0600) as `<position>-<safe name>`, reading at most
/// `max_bytes`, its checked size (a file that grew since it was checked is refused).
fn copy_into(
    dir: &Path,
    position: usize,
    name: &OsStr,
    file: File,
    max_bytes: u64,
) -> Result<OutboundFile, CopyError> {
    let shown = shown_name(name);
    let path = dir.join(format!(
        "{position}-{}",
        crate::router::safe_file_name(&shown, 100)
    ));
    let mut copy = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(CopyError::Host)?;
    let mut limited = file.take(max_bytes.saturating_add(1));
    let size = std::io::copy(&mut limited, &mut copy).map_err(|e| match e.kind() {
        // Reading the agent's file failed; writing ours is the host's problem.
        std::io::ErrorKind::WriteZero | std::io::ErrorKind::StorageFull => CopyError::Host(e),
        _ => CopyError::Refused(Refusal::Unreadable(e.to_string())),
    })?;
    if size > max_bytes {
        return Err(CopyError::Refused(Refusal::Unreadable(
            "it grew while it was being copied".into(),
        )));
    }
    copy.flush()
        .and_then(|()| copy.sync_all())
        .map_err(CopyError::Host)?;
    let path = path
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| CopyError::Host(std::io::Error::other("the outbox path is not UTF-8")))?;
    Ok(OutboundFile {
        mime_type: mime_type(&shown).map(str::to_owned),
        file_name: shown,
        path,
        size,
    })
}

/// The name the chat shows: the agent's file name without control characters, cut short.
fn shown_name(name: &OsStr) -> String {
    let name: String = name
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .take(MAX_SHOWN_NAME_CHARS)
        .collect();
    if name.trim().is_empty() {
        "file".into()
    } else {
        name
    }
}

/// The MIME type of common file kinds, by extension; `None` lets the channel pick its default.
pub fn mime_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => return None,
    })
}

/// Removes the outbox folder holding `file` once its message is delivered or given up. Only a
/// folder directly under `outbox_root` is ever removed, whatever the stored path says.
pub fn remove_copies(outbox_root: &Path, file: &str) {
    let Some(dir) = Path::new(file).parent() else {
        return;
    };
    if dir.parent() != Some(outbox_root) || dir.file_name().is_none() {
        tracing::warn!(file, "not removing an outbox copy outside the outbox");
        return;
    }
    remove_dir(dir);
}

pub(crate) fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove outbox copies")
        }
    }
}

/// [`sweep`] with the files of the store's undelivered messages kept. Call only while no
/// agent can send (a copy being made belongs to no message yet).
pub async fn sweep_unsent(store: &nanoclaw_store::Store, outbox_root: PathBuf) {
    match store.pending_outbound_file_paths().await {
        Ok(keep) => {
            let _ = tokio::task::spawn_blocking(move || sweep(&outbox_root, &keep)).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not list the files waiting for delivery; the outbox is not swept")
        }
    }
}

/// Removes every outbox folder none of `keep` (the files of undelivered messages) lies in:
/// copies left by a message that was delivered, given up or never queued (a crash between the
/// copy and the queue). Blocking.
pub fn sweep(outbox_root: &Path, keep: &[String]) {
    let keep: std::collections::HashSet<&Path> =
        keep.iter().filter_map(|f| Path::new(f).parent()).collect();
    let Ok(entries) = std::fs::read_dir(outbox_root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !keep.contains(dir.as_path()) {
            tracing::debug!(dir = %dir.display(), "removing outbox copies nobody waits for");
            remove_dir(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Setup {
        _tmp: tempfile::TempDir,
        group: PathBuf,
        outbox: PathBuf,
        outside: PathBuf,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let group = tmp.path().join("groups/main");
        std::fs::create_dir_all(group.join("out")).unwrap();
        let outside = tmp.path().join("secret.txt");
        std::fs::write(&outside, "the host's secret").unwrap();
        Setup {
            outbox: tmp.path().join("outbox"),
            group,
            outside,
            _tmp: tmp,
        }
    }

    fn take(s: &Setup, paths: &[&str], max: u64) -> Result<Taken, OutboxError> {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        take_files(&s.group, &s.outbox, &paths, max, u64::MAX)
    }

    fn refusal(result: Result<Taken, OutboxError>) -> Refusal {
        match result {
            Err(OutboxError::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Nothing left in the outbox: a refused message keeps no copy.
    fn outbox_is_empty(s: &Setup) -> bool {
        std::fs::read_dir(&s.outbox).map_or(true, |mut d| d.next().is_none())
    }

    #[test]
    fn files_inside_are_copied_privately_with_their_names_sizes_and_types() {
        let s = setup();
        std::fs::write(s.group.join("out/chart.png"), b"\x89PNG data").unwrap();
        std::fs::write(s.group.join("notes.txt"), b"hello").unwrap();
        let taken = take(&s, &["/workspace/group/out/chart.png", "./notes.txt"], 100).unwrap();
        assert_eq!(taken.files.len(), 2);
        assert_eq!(taken.files[0].file_name, "chart.png");
        assert_eq!(taken.files[0].mime_type.as_deref(), Some("image/png"));
        assert_eq!(taken.files[0].size, 9);
        assert_eq!(
            std::fs::read(&taken.files[0].path).unwrap(),
            b"\x89PNG data"
        );
        assert_eq!(taken.files[1].file_name, "notes.txt");
        assert_eq!(std::fs::read(&taken.files[1].path).unwrap(), b"hello");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&taken.dir), 0o700);
        assert_eq!(mode(Path::new(&taken.files[0].path)), 0o600);
        // The agent changing its file afterwards changes nothing that is sent.
        std::fs::write(s.group.join("notes.txt"), b"swapped").unwrap();
        assert_eq!(std::fs::read(&taken.files[1].path).unwrap(), b"hello");
        remove_copies(&s.outbox, &taken.files[0].path);
        assert!(!taken.dir.exists());
    }

    #[test]
    fn escapes_are_refused_before_anything_is_copied() {
        let s = setup();
        std::fs::write(s.group.join("ok.txt"), b"fine").unwrap();
        assert_eq!(
            refusal(take(&s, &["ok.txt", "../../secret.txt"], 100)),
            Refusal::ParentDir
        );
        assert_eq!(
            refusal(take(&s, &["out/../ok.txt"], 100)),
            Refusal::ParentDir
        );
        assert_eq!(refusal(take(&s, &["/etc/passwd"], 100)), Refusal::Outside);
        assert_eq!(
            refusal(take(&s, &["/workspace/groupie/x"], 100)),
            Refusal::Outside
        );
        assert_eq!(
            refusal(take(&s, &["/workspace/group"], 100)),
            Refusal::NotAFile
        );
        assert_eq!(refusal(take(&s, &[""], 100)), Refusal::Empty);
        assert_eq!(
            refusal(take(&s, &["nope.txt"], 100)),
            Refusal::Missing("nope.txt".into())
        );
        assert!(outbox_is_empty(&s));
    }

    #[test]
    fn links_anywhere_on_the_path_are_refused_not_followed() {
        let s = setup();
        std::os::unix::fs::symlink(&s.outside, s.group.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(s.outside.parent().unwrap(), s.group.join("up")).unwrap();
        // Even a link that stays inside is refused: it is resolved in the sandbox's namespace.
        std::fs::write(s.group.join("out/real.txt"), b"inside").unwrap();
        std::os::unix::fs::symlink("out", s.group.join("alias")).unwrap();
        assert_eq!(
            refusal(take(&s, &["leak.txt"], 100)),
            Refusal::Symlink("leak.txt".into())
        );
        assert_eq!(
            refusal(take(&s, &["up/secret.txt"], 100)),
            Refusal::Symlink("up".into())
        );
        assert_eq!(
            refusal(take(&s, &["alias/real.txt"], 100)),
            Refusal::Symlink("alias".into())
        );
        assert!(outbox_is_empty(&s));
    }

    #[test]
    fn fifos_folders_and_large_files_are_refused() {
        let s = setup();
        let fifo = CString::new(s.group.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(s.group.join("big.bin"), vec![7u8; 101]).unwrap();
        std::fs::write(s.group.join("edge.bin"), vec![7u8; 100]).unwrap();
        assert_eq!(
            refusal(take(&s, &["pipe"], 100)),
            Refusal::NotRegular("fifo")
        );
        assert_eq!(
            refusal(take(&s, &["out"], 100)),
            Refusal::NotRegular("folder")
        );
        assert_eq!(
            refusal(take(&s, &["big.bin"], 100)),
            Refusal::TooLarge {
                size: 101,
                limit: 100
            }
        );
        std::fs::write(s.group.join("file"), b"x").unwrap();
        assert_eq!(
            refusal(take(&s, &["file/below"], 100)),
            Refusal::NotAFolder("file".into())
        );
        assert!(outbox_is_empty(&s));
        assert_eq!(take(&s, &["edge.bin"], 100).unwrap().files[0].size, 100);
    }

    #[test]
    fn files_beyond_the_outbox_room_are_refused() {
        let s = setup();
        std::fs::write(s.group.join("a.txt"), b"12345").unwrap();
        let paths = vec!["a.txt".to_owned(), "a.txt".to_owned()];
        let refused = take_files(&s.group, &s.outbox, &paths, 100, 9);
        assert_eq!(refusal(refused), Refusal::NoRoom { room: 4 });
        assert!(outbox_is_empty(&s));
        assert!(take_files(&s.group, &s.outbox, &paths, 100, 10).is_ok());
    }

    #[test]
    fn too_many_files_are_refused() {
        let s = setup();
        let many: Vec<&str> = vec!["a"; MAX_FILES_PER_MESSAGE + 1];
        assert!(matches!(
            take(&s, &many, 100),
            Err(OutboxError::TooMany { count: 11 })
        ));
    }

    #[test]
    fn the_sweep_keeps_only_copies_of_undelivered_messages() {
        let s = setup();
        std::fs::write(s.group.join("a.txt"), b"a").unwrap();
        let kept = take(&s, &["a.txt"], 100).unwrap();
        let gone = take(&s, &["a.txt"], 100).unwrap();
        sweep(&s.outbox, &[kept.files[0].path.clone()]);
        assert!(kept.dir.exists());
        assert!(!gone.dir.exists());
        // A stored path outside the outbox is never removed.
        remove_copies(&s.outbox, s.outside.to_str().unwrap());
        assert!(s.outside.exists());
    }

    #[test]
    fn shown_names_lose_control_characters_and_disk_names_lose_paths() {
        assert_eq!(shown_name(OsStr::new("a\nb.txt")), "a_b.txt");
        assert_eq!(shown_name(OsStr::new("Übersicht.pdf")), "Übersicht.pdf");
        assert_eq!(mime_type("REPORT.PDF"), Some("application/pdf"));
        assert_eq!(mime_type("noext"), None);
    }
}

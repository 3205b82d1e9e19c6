//! The host uid/gid a sandbox runs as, the same for every runtime.
//!
//! - Host not root: the host user itself (its files are the agent's files; nothing changes
//!   owner).
//! - Host root: one dedicated unprivileged id that is nobody's login and never 0: the
//!   `nanoclaw` system user and group when they exist, else [`FALLBACK_ID`]. The native
//!   runtime starts bwrap with it (so the sandbox's uid 1000 maps to it, never to host
//!   root), Docker runs the container as it, and the writable mounts are handed to it
//!   (`hand_over`) without ever following a link.
//!
//! A configuration that would map a sandbox to uid or gid 0 (a `nanoclaw` user with id 0, a
//! non-root host user whose group is 0) is refused: [`SandboxUser::check`].

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{Mount, SandboxError};

/// The sandbox uid and gid when the host runs as root and no `nanoclaw` system user exists:
/// high in the 31-bit range, above every distribution's system, regular and default
/// subordinate (`/etc/subuid`, 100000 + 65536 per user) ranges and below systemd's
/// container ranges' end (1879048191) — so it is nobody's account.
pub const FALLBACK_ID: u32 = 2_000_000_000;
/// The system user (and group) used when the host runs as root, when it exists.
pub const SYSTEM_USER: &str = "nanoclaw";

/// Which host ids a sandbox runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxUser {
    pub uid: u32,
    pub gid: u32,
    /// The host runs as root: the sandbox gets its own id, and the writable mounts are
    /// handed over to it.
    pub dedicated: bool,
}

impl SandboxUser {
    /// The sandbox user for this process.
    pub fn for_this_host() -> Self {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Self::for_host(euid, egid, system_user())
    }

    /// The sandbox user for a host running as `euid:egid`, with the `nanoclaw` system user's
    /// ids when it exists.
    pub fn for_host(euid: u32, egid: u32, system: Option<(u32, u32)>) -> Self {
        if euid != 0 {
            return Self {
                uid: euid,
                gid: egid,
                dedicated: false,
            };
        }
        let (uid, gid) = system.unwrap_or((FALLBACK_ID, FALLBACK_ID));
        Self {
            uid,
            gid,
            dedicated: true,
        }
    }

    /// Refuses ids that would make the sandbox root on the host (fail closed).
    pub fn check(&self) -> Result<(), SandboxError> {
        if self.uid == 0 || self.gid == 0 {
            return Err(SandboxError::Unavailable {
                runtime: "sandbox",
                reason: format!(
                    "sandboxes would run as host uid {} gid {}, which is root",
                    self.uid, self.gid
                ),
                fix: if self.dedicated {
                    format!(
                        "Give the `{SYSTEM_USER}` system user and group non-zero ids \
                         (`usermod -u`/`groupmod -g`), or remove them to use {FALLBACK_ID}"
                    )
                } else {
                    "Run nanoclaw as a user whose primary group is not root (gid 0)".to_string()
                },
            });
        }
        Ok(())
    }
}

/// The `nanoclaw` system user's uid and its group's gid, from the system databases.
fn system_user() -> Option<(u32, u32)> {
    let name = c"nanoclaw";
    let mut buffer = vec![0u8; 16 * 1024];
    // SAFETY: zeroed passwd/group structs are valid out-parameters; the buffer outlives the
    // calls and its length is passed; `result` is only read after the call returns.
    let uid = unsafe {
        let mut entry: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let status = libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut result,
        );
        (status == 0 && !result.is_null()).then_some((entry.pw_uid, entry.pw_gid))
    }?;
    // SAFETY: as above.
    let gid = unsafe {
        let mut entry: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let status = libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut result,
        );
        (status == 0 && !result.is_null()).then_some(entry.gr_gid)
    };
    Some((uid.0, gid.unwrap_or(uid.1)))
}

/// Hands what the sandbox needs to `user` (host runs as root): writable mounts entirely
/// (the sandbox must write there); read-only ones that others cannot already list (the
/// host's own 0700 folders: global memory, the run folder) at their top directory and the
/// entries directly in it (so the sandbox can read them and connect to the sockets in the
/// run folder). A read-only folder open to everyone keeps its owner. Nothing else, and no
/// link is ever followed: every directory is opened with
/// `O_NOFOLLOW|O_DIRECTORY` relative to its parent's fd, every entry changed with
/// `fchownat(AT_SYMLINK_NOFOLLOW)`. An entry swapped for a link mid-walk is skipped.
pub(crate) fn hand_over(mounts: &[Mount], user: SandboxUser) -> Result<(), SandboxError> {
    if !user.dedicated {
        return Ok(());
    }
    for mount in mounts {
        let depth = if mount.writable {
            usize::MAX
        } else {
            let open_to_all = std::fs::symlink_metadata(&mount.host_path)
                .map(|meta| {
                    use std::os::unix::fs::PermissionsExt;
                    meta.permissions().mode() & 0o005 == 0o005
                })
                .unwrap_or(false);
            if open_to_all {
                continue;
            }
            1
        };
        hand_over_tree(&mount.host_path, user.uid, user.gid, depth)?;
    }
    Ok(())
}

fn hand_over_tree(top: &Path, uid: u32, gid: u32, depth: usize) -> Result<(), SandboxError> {
    let failed = |error: std::io::Error| SandboxError::Spawn {
        runtime: "sandbox",
        source: std::io::Error::new(
            error.kind(),
            format!(
                "handing {} to the sandbox user {uid}:{gid} failed: {error}",
                top.display()
            ),
        ),
    };
    let path = std::ffi::CString::new(top.as_os_str().as_bytes())
        .map_err(|_| failed(std::io::Error::other("the path contains a NUL byte")))?;
    // The top is a canonical path the host chose; it may be a file (a mounted file).
    // SAFETY: `path` is a valid C string; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let top_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let stat = fstat(&top_fd).map_err(failed)?;
    if stat.st_uid != uid || stat.st_gid != gid {
        // fchownat on an O_PATH fd with AT_EMPTY_PATH changes exactly that inode.
        // SAFETY: valid fd and empty C string.
        let changed = unsafe {
            libc::fchownat(
                top_fd.as_raw_fd(),
                c"".as_ptr(),
                uid,
                gid,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if changed != 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
    }
    if depth == 0 || stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Ok(());
    }
    let dir = open_dir_at(top_fd.as_raw_fd(), c".").map_err(failed)?;
    walk(dir, uid, gid, depth).map_err(failed)
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter; fd is open.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut stat) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stat)
    }
}

/// Opens `name` in `parent` as a directory, refusing a symlink.
fn open_dir_at(parent: libc::c_int, name: &CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: valid fd and C string; the returned fd is owned below.
    let fd = unsafe {
        libc::openat(
            parent,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Changes the owner of every entry below the open directory `dir`, `depth` levels deep.
fn walk(dir: OwnedFd, uid: u32, gid: u32, depth: usize) -> std::io::Result<()> {
    let dir_fd = dir.as_raw_fd();
    let mut subdirs = Vec::new();
    // A second fd for the directory stream (fdopendir takes ownership of it).
    // SAFETY: dup of an open fd.
    let stream_fd = unsafe { libc::fcntl(dir_fd, libc::F_DUPFD_CLOEXEC, 0) };
    if stream_fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: stream_fd is an open directory fd whose ownership passes to the stream.
    let stream = unsafe { libc::fdopendir(stream_fd) };
    if stream.is_null() {
        let error = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so stream_fd is still ours to close.
        unsafe { libc::close(stream_fd) };
        return Err(error);
    }
    loop {
        // SAFETY: stream is a valid DIR*; the entry is copied out before the next call.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_owned();
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            continue;
        }
        // SAFETY: a zeroed stat is a valid out-parameter; dir_fd and name are valid.
        let stat = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstatat(dir_fd, name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW) != 0 {
                // Gone since it was listed: nothing to hand over.
                continue;
            }
            stat
        };
        if stat.st_uid != uid || stat.st_gid != gid {
            // SAFETY: valid fd and C string. NOFOLLOW: a link (even one swapped in since
            // the fstatat) has its own owner changed, never its target's.
            unsafe {
                libc::fchownat(dir_fd, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW);
            }
        }
        if depth > 1 && stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
            subdirs.push(name);
        }
    }
    // SAFETY: stream is valid and closed exactly once (this also closes stream_fd).
    unsafe { libc::closedir(stream) };
    for name in subdirs {
        // A directory replaced by a link (or anything else) since it was listed fails to
        // open here (ELOOP/ENOTDIR) and is skipped: never followed.
        let Ok(sub) = open_dir_at(dir_fd, &name) else {
            continue;
        };
        walk(sub, uid, gid, depth - 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_host_gets_a_dedicated_non_root_id() {
        let user = SandboxUser::for_host(0, 0, None);
        assert_eq!((user.uid, user.gid), (FALLBACK_ID, FALLBACK_ID));
        assert!(user.dedicated);
        assert!(user.check().is_ok());
        let system = SandboxUser::for_host(0, 0, Some((998, 997)));
        assert_eq!((system.uid, system.gid, system.dedicated), (998, 997, true));
        let plain = SandboxUser::for_host(1234, 99, Some((998, 997)));
        assert_eq!((plain.uid, plain.gid, plain.dedicated), (1234, 99, false));
    }

    #[test]
    fn ids_that_map_to_root_are_refused() {
        for user in [
            SandboxUser::for_host(0, 0, Some((0, 0))),
            SandboxUser::for_host(0, 0, Some((998, 0))),
            SandboxUser::for_host(1234, 0, None),
        ] {
            let error = user.check().expect_err("maps to root").to_string();
            assert!(error.contains("which is root"), "{error}");
        }
    }

    const DEDICATED: SandboxUser = SandboxUser {
        uid: FALLBACK_ID,
        gid: FALLBACK_ID,
        dedicated: true,
    };

    /// The attack: a sandbox swaps a directory of its writable folder for a link to a
    /// root-owned host directory while the host hands the folder over (another sandbox of
    /// the same group starting). The host's files must keep their owner.
    #[test]
    fn hand_over_never_follows_a_link_swapped_in_mid_walk() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: handing over needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("host-etc");
        std::fs::create_dir(&outside).expect("mkdir");
        for index in 0..200 {
            std::fs::write(outside.join(format!("f{index}")), "root's").expect("write");
        }
        let group = dir.path().join("group");
        std::fs::create_dir(&group).expect("mkdir");
        let mounts = vec![Mount {
            host_path: group.clone(),
            sandbox_path: "/workspace".into(),
            writable: true,
        }];
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // The sandbox's side: `sub` is a real directory (so the walk descends into
                // it) and a link to the host directory in turns, swapped atomically.
                let sub = group.join("sub");
                let link = group.join("link");
                std::fs::create_dir(&sub).expect("mkdir");
                std::os::unix::fs::symlink(&outside, &link).expect("symlink");
                let sub = std::ffi::CString::new(sub.as_os_str().as_bytes()).expect("path");
                let link = std::ffi::CString::new(link.as_os_str().as_bytes()).expect("path");
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: valid C strings; renameat2 only renames.
                    unsafe {
                        libc::syscall(
                            libc::SYS_renameat2,
                            libc::AT_FDCWD,
                            sub.as_ptr(),
                            libc::AT_FDCWD,
                            link.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        );
                    }
                }
            });
            for _ in 0..2000 {
                let _ = hand_over(&mounts, DEDICATED);
            }
            stop.store(true, Ordering::Relaxed);
        });
        let changed: Vec<String> = std::fs::read_dir(&outside)
            .expect("list")
            .map(|entry| entry.expect("entry"))
            .filter(|entry| entry.metadata().expect("stat").uid() != 0)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            changed.is_empty(),
            "host files handed to the sandbox: {changed:?}"
        );
        assert_eq!(
            std::fs::metadata(&outside).expect("stat").uid(),
            0,
            "the link's target directory itself"
        );
    }

    #[test]
    fn hand_over_gives_writable_trees_and_read_only_tops() {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let rw = dir.path().join("rw");
        let ro = dir.path().join("ro");
        std::fs::create_dir_all(rw.join("a/b")).expect("mkdir");
        std::fs::write(rw.join("a/b/f"), "x").expect("write");
        std::fs::create_dir_all(ro.join("sub")).expect("mkdir");
        std::fs::write(ro.join("top.txt"), "x").expect("write");
        std::fs::write(ro.join("sub/deep.txt"), "x").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mounts = vec![
            Mount {
                host_path: rw.clone(),
                sandbox_path: "/w".into(),
                writable: true,
            },
            Mount {
                host_path: ro.clone(),
                sandbox_path: "/r".into(),
                writable: false,
            },
            Mount {
                host_path: open.clone(),
                sandbox_path: "/o".into(),
                writable: false,
            },
        ];
        hand_over(&mounts, DEDICATED).expect("hand over");
        let owner = |p: &Path| {
            let meta = std::fs::symlink_metadata(p).expect("stat");
            (meta.uid(), meta.gid())
        };
        for path in [
            rw.clone(),
            rw.join("a/b"),
            rw.join("a/b/f"),
            ro.clone(),
            ro.join("top.txt"),
            ro.join("sub"),
        ] {
            assert_eq!(
                owner(&path),
                (FALLBACK_ID, FALLBACK_ID),
                "{}",
                path.display()
            );
        }
        assert_eq!(
            owner(&ro.join("sub/deep.txt")),
            (0, 0),
            "read-only mounts: top level only"
        );
        assert_eq!(owner(&open), (0, 0), "a folder open to all keeps its owner");
    }
}

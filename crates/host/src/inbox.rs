//! Saving inbound files into a group's `inbox/`. The group folder is mounted writable in the
//! agent's sandbox, so whatever sits at `inbox` or at a file's name may be the agent's doing,
//! e.g. a symbolic link to a host file. The host (possibly root) must never write through one:
//! `inbox` is opened relative to the group folder without following links, and each file is
//! written under a fresh temporary name (`O_EXCL`, no links followed) and renamed into place,
//! which replaces whatever entry had the name instead of writing through it.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::outbox::{DIR_FLAGS, open_at};

/// Writes `data` as `inbox/<name>` in `group_dir`. `name` must be a plain file name (the
/// router makes it safe); blocking.
pub fn save(group_dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(invalid("not a plain file name"));
    }
    // The group folder itself is the host's (the sandbox sees only what is inside it); a
    // group that never ran may not have it yet.
    std::fs::create_dir_all(group_dir)?;
    let group = CString::new(group_dir.as_os_str().as_bytes())
        .map_err(|_| invalid("the group folder's path contains a NUL byte"))?;
    let group = open_at(libc::AT_FDCWD, &group, DIR_FLAGS)?;
    let inbox = c"inbox";
    let inbox = match open_at(group.as_raw_fd(), inbox, DIR_FLAGS) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // SAFETY: the fd is an open directory and the name a valid C string.
            if unsafe { libc::mkdirat(group.as_raw_fd(), inbox.as_ptr(), 0o755) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
            open_at(group.as_raw_fd(), inbox, DIR_FLAGS)?
        }
        // ELOOP: `inbox` is a link; ENOTDIR: it is not a folder. Neither is written into.
        Err(e) => return Err(e),
    };
    let final_name = CString::new(name).map_err(|_| invalid("NUL byte in the file name"))?;
    let temp_name = CString::new(format!(".{name}.{}.part", std::process::id()))
        .map_err(|_| invalid("NUL byte in the file name"))?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid fd and C string; mode is passed as the variadic argument open expects.
    let fd = unsafe {
        libc::openat(
            inbox.as_raw_fd(),
            temp_name.as_ptr(),
            flags,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let written = file.write_all(data).and_then(|()| file.sync_data());
    drop(file);
    let renamed = written.and_then(|()| {
        // SAFETY: both names are valid C strings relative to the same open directory.
        let rc = unsafe {
            libc::renameat(
                inbox.as_raw_fd(),
                temp_name.as_ptr(),
                inbox.as_raw_fd(),
                final_name.as_ptr(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    if renamed.is_err() {
        // SAFETY: valid fd and C string; removes our own temporary entry.
        unsafe { libc::unlinkat(inbox.as_raw_fd(), temp_name.as_ptr(), 0) };
    }
    renamed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn files_land_in_the_inbox_and_replace_what_had_their_name() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "a.txt", b"one").unwrap();
        save(dir.path(), "a.txt", b"two").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("inbox/a.txt")).unwrap(),
            b"two"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("inbox"))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_link_planted_at_a_file_name_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("shadow");
        std::fs::write(&secret, b"host secret").unwrap();
        std::fs::create_dir(dir.path().join("inbox")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("inbox/photo.jpg")).unwrap();
        save(dir.path(), "photo.jpg", b"picture").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"host secret");
        let saved = dir.path().join("inbox/photo.jpg");
        assert!(!saved.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(saved).unwrap(), b"picture");
    }

    #[test]
    fn an_inbox_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("inbox")).unwrap();
        assert!(save(dir.path(), "x.txt", b"data").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}

//! Best-effort per-sandbox cgroup (pids + memory), used because `RLIMIT_NPROC` alone is not
//! a per-sandbox process limit (see the module docs of [`crate::bwrap`]).
//!
//! Layout:
//! - cgroup v2 (`/sys/fs/cgroup/cgroup.controllers` exists): `<current cgroup>/nanoclaw/<name>`,
//!   falling back to `/sys/fs/cgroup/nanoclaw/<name>` (works for root, whose current cgroup
//!   usually holds processes and so cannot enable controllers for children).
//! - cgroup v1: `/sys/fs/cgroup/{pids,memory}/<current cgroup>/nanoclaw/<name>`. Nesting under
//!   the current cgroup keeps any limit the host process itself is subject to.
//!
//! The child joins by writing `0` to the leaf's `cgroup.procs` from `pre_exec`; the file is
//! opened here, before the fork, so the child only calls `write(2)`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Limits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PARENT_NAME: &str = "nanoclaw";

/// Why a per-sandbox cgroup could not be set up (logged; the sandbox then relies on rlimits).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("writing {value:?} to {}: {source}", .path.display())]
    Write {
        value: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no cgroup v2 entry in /proc/self/cgroup")]
    NoV2Entry,
    #[error("{} is not a cgroup v1 hierarchy", .0.display())]
    NotV1Hierarchy(PathBuf),
    /// Every candidate place failed, for these reasons in order.
    #[error("{}", join_reasons(.0))]
    Candidates(Vec<CgroupError>),
}

fn join_reasons(reasons: &[CgroupError]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Extra tasks in the cgroup beyond the sandboxed processes: bwrap's outer monitor and its
/// pid-1 reaper inside the pid namespace.
pub(crate) const BWRAP_OVERHEAD_TASKS: u64 = 2;

/// A created (but not yet joined) per-sandbox cgroup.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    /// Leaf directories, one per hierarchy (one on v2, pids + memory on v1).
    leaves: Vec<PathBuf>,
    /// `cgroup.procs` of each leaf, opened for writing before the fork.
    procs: Vec<File>,
    v2: bool,
}

impl SandboxCgroup {
    /// Creates the cgroup and writes the limits. `None` when cgroups are not writable here.
    pub(crate) fn create(name: &str, limits: &Limits) -> Option<Self> {
        let own = match fs::read_to_string("/proc/self/cgroup") {
            Ok(text) => text,
            Err(error) => {
                tracing::debug!(%error, "cannot read /proc/self/cgroup; relying on rlimits");
                return None;
            }
        };
        let result = if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            create_v2(&own, name, limits)
        } else {
            create_v1(&own, name, limits)
        };
        match result {
            Ok(cgroup) => {
                tracing::debug!(sandbox = name, leaves = ?cgroup.leaves, "created sandbox cgroup");
                Some(cgroup)
            }
            Err(reason) => {
                tracing::debug!(sandbox = name, %reason, "no sandbox cgroup; relying on rlimits");
                None
            }
        }
    }

    /// Raw fds of the `cgroup.procs` files, for the `pre_exec` hook.
    pub(crate) fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Closes the `cgroup.procs` files once the child has been spawned.
    pub(crate) fn close_procs(&mut self) {
        self.procs.clear();
    }

    /// Whether `pid` is a member of every leaf (i.e. the `pre_exec` join worked).
    pub(crate) fn contains(&self, pid: u32) -> bool {
        let pid = pid.to_string();
        self.leaves.iter().all(|leaf| {
            fs::read_to_string(leaf.join("cgroup.procs"))
                .map(|procs| procs.lines().any(|line| line.trim() == pid))
                .unwrap_or(false)
        })
    }

    /// Kills whatever is left in the cgroup and removes the leaf directories. Call after the
    /// sandbox process exited; stragglers (e.g. the pid namespace still being torn down)
    /// are killed and waited for briefly.
    pub(crate) fn remove(mut self) {
        self.close_procs();
        for leaf in &self.leaves {
            kill_members(leaf, self.v2);
            let mut removed = false;
            // rmdir fails with EBUSY until the killed tasks are fully gone.
            for _ in 0..100 {
                match fs::remove_dir(leaf) {
                    Ok(()) => {
                        removed = true;
                        break;
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        removed = true;
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            if !removed {
                tracing::warn!(cgroup = %leaf.display(), "could not remove sandbox cgroup");
            }
        }
    }
}

/// Removes empty per-sandbox cgroups older than `min_age` left behind by a host that died
/// before running its cleanup. Non-empty ones (live sandboxes) cannot be removed by rmdir.
pub(crate) fn remove_stale(min_age: Duration) {
    let Ok(own) = fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    let root = Path::new(CGROUP_ROOT);
    let mut parents = Vec::new();
    if root.join("cgroup.controllers").exists() {
        if let Some(current) = current_path(&own, "") {
            parents.push(join_rel(root, &current).join(PARENT_NAME));
        }
        parents.push(root.join(PARENT_NAME));
    } else {
        for controller in ["pids", "memory"] {
            let hierarchy = root.join(controller);
            parents.push(hierarchy.join(PARENT_NAME));
            if let Some(current) = current_path(&own, controller) {
                parents.push(join_rel(&hierarchy, &current).join(PARENT_NAME));
            }
        }
    }
    parents.dedup();
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let old_enough = entry
                .metadata()
                .ok()
                .filter(|meta| meta.is_dir())
                .and_then(|meta| meta.modified().ok())
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old_enough && fs::remove_dir(entry.path()).is_ok() {
                tracing::debug!(cgroup = %entry.path().display(), "removed stale sandbox cgroup");
            }
        }
    }
}

fn kill_members(leaf: &Path, v2: bool) {
    // cgroup.kill (v2, Linux 5.14+) kills every member atomically.
    if v2 && write_file(&leaf.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let Ok(procs) = fs::read_to_string(leaf.join("cgroup.procs")) else {
        return;
    };
    for pid in procs
        .lines()
        .filter_map(|line| line.trim().parse::<libc::pid_t>().ok())
    {
        if pid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is a member of
            // the sandbox's own cgroup, so nothing outside the sandbox is signalled.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            value: value.to_owned(),
            path: path.to_path_buf(),
            source,
        })
}

fn open_procs(leaf: &Path) -> Result<File, CgroupError> {
    let path = leaf.join("cgroup.procs");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|source| CgroupError::Open { path, source })
}

fn create_dir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir(path).map_err(|source| CgroupError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `leaf`, replacing a stale empty one left behind by a crashed host.
fn make_leaf(leaf: &Path) -> Result<(), CgroupError> {
    if leaf.exists() {
        let _ = fs::remove_dir(leaf);
    }
    create_dir(leaf)
}

/// Path of the current cgroup in the hierarchy whose controller list contains `controller`
/// (`""` selects the v2 entry `0::/path`).
fn current_path(own: &str, controller: &str) -> Option<String> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_string())
    })
}

fn join_rel(base: &Path, rel: &str) -> PathBuf {
    base.join(rel.trim_start_matches('/'))
}

fn create_v2(own: &str, name: &str, limits: &Limits) -> Result<SandboxCgroup, CgroupError> {
    let root = Path::new(CGROUP_ROOT);
    let current = current_path(own, "").ok_or(CgroupError::NoV2Entry)?;
    let mut candidates = vec![join_rel(root, &current)];
    if current != "/" {
        candidates.push(root.to_path_buf());
    }
    let mut reasons = Vec::new();
    for base in candidates {
        match create_v2_under(&base, name, limits) {
            Ok(cgroup) => return Ok(cgroup),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(CgroupError::Candidates(reasons))
}

fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in ["pids", "memory"] {
        if !enabled.split_whitespace().any(|c| c == controller) {
            write_file(
                &dir.join("cgroup.subtree_control"),
                &format!("+{controller}"),
            )?;
        }
    }
    Ok(())
}

fn create_v2_under(base: &Path, name: &str, limits: &Limits) -> Result<SandboxCgroup, CgroupError> {
    enable_controllers(base)?;
    let parent = base.join(PARENT_NAME);
    if !parent.is_dir() {
        create_dir(&parent)?;
    }
    enable_controllers(&parent)?;
    let leaf = parent.join(name);
    make_leaf(&leaf)?;
    let setup = || -> Result<File, CgroupError> {
        write_file(
            &leaf.join("pids.max"),
            &(limits.max_processes + BWRAP_OVERHEAD_TASKS).to_string(),
        )?;
        write_file(
            &leaf.join("memory.max"),
            &limits.max_memory_bytes.to_string(),
        )?;
        open_procs(&leaf)
    };
    match setup() {
        Ok(procs) => Ok(SandboxCgroup {
            leaves: vec![leaf],
            procs: vec![procs],
            v2: true,
        }),
        Err(reason) => {
            let _ = fs::remove_dir(&leaf);
            Err(reason)
        }
    }
}

fn create_v1(own: &str, name: &str, limits: &Limits) -> Result<SandboxCgroup, CgroupError> {
    let root = Path::new(CGROUP_ROOT);
    let pids_limit = (limits.max_processes + BWRAP_OVERHEAD_TASKS).to_string();
    let memory_limit = limits.max_memory_bytes.to_string();
    let wanted = [
        ("pids", "pids.max", pids_limit.as_str()),
        ("memory", "memory.limit_in_bytes", memory_limit.as_str()),
    ];
    let mut cgroup = SandboxCgroup {
        leaves: Vec::new(),
        procs: Vec::new(),
        v2: false,
    };
    for (controller, limit_file, value) in wanted {
        let hierarchy = root.join(controller);
        let mut base = hierarchy.clone();
        if let Some(current) = current_path(own, controller) {
            let nested = join_rel(&hierarchy, &current);
            // In a container the path may name a cgroup outside our mount; use the mount root.
            if nested.is_dir() {
                base = nested;
            }
        }
        let step = || -> Result<(PathBuf, File), CgroupError> {
            if !base.join("cgroup.procs").exists() {
                return Err(CgroupError::NotV1Hierarchy(base.clone()));
            }
            let parent = base.join(PARENT_NAME);
            if !parent.is_dir() {
                create_dir(&parent)?;
            }
            let leaf = parent.join(name);
            make_leaf(&leaf)?;
            let limit_and_open =
                write_file(&leaf.join(limit_file), value).and_then(|()| open_procs(&leaf));
            match limit_and_open {
                Ok(procs) => Ok((leaf, procs)),
                Err(reason) => {
                    let _ = fs::remove_dir(&leaf);
                    Err(reason)
                }
            }
        };
        match step() {
            Ok((leaf, procs)) => {
                cgroup.leaves.push(leaf);
                cgroup.procs.push(procs);
            }
            Err(reason) => {
                cgroup.remove();
                return Err(reason);
            }
        }
    }
    Ok(cgroup)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";

    #[test]
    fn finds_v1_and_v2_paths() {
        assert_eq!(current_path(V1, "pids").as_deref(), Some("/"));
        assert_eq!(
            current_path(V1, "memory").as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(current_path(V1, "cpuacct").as_deref(), Some("/x"));
        assert_eq!(current_path(V1, "").as_deref(), Some("/"));
        assert_eq!(
            current_path("0::/user.slice/u.service\n", "").as_deref(),
            Some("/user.slice/u.service")
        );
        assert_eq!(current_path("0::/a\n", "pids"), None);
    }

    #[test]
    fn errors_read_as_the_reasons_logged_before() {
        let reasons = CgroupError::Candidates(vec![
            CgroupError::Create {
                path: PathBuf::from("/a"),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
            CgroupError::NotV1Hierarchy(PathBuf::from("/b")),
            CgroupError::Write {
                value: "+pids".into(),
                path: PathBuf::from("/c"),
                source: std::io::Error::other("busy"),
            },
        ]);
        assert_eq!(
            reasons.to_string(),
            "creating /a: permission denied; /b is not a cgroup v1 hierarchy; \
             writing \"+pids\" to /c: busy"
        );
    }

    #[test]
    fn joins_relative_to_hierarchy() {
        assert_eq!(
            join_rel(Path::new("/sys/fs/cgroup/memory"), "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(
            join_rel(Path::new("/sys/fs/cgroup"), "/"),
            PathBuf::from("/sys/fs/cgroup/")
        );
    }
}

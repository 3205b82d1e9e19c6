//! The `native` runtime: the agent runs under [bubblewrap](https://github.com/containers/bubblewrap)
//! (`bwrap`, ≥ 0.5; `--size` used from 0.7, `--disable-userns` from 0.8).
//!
//! # What is enforced, and by whom
//!
//! | Guarantee | Mechanism |
//! |---|---|
//! | non-root user inside, never host root outside | new user namespace, `--uid 1000 --gid 1000` mapped to the [`SandboxUser`]: the host user, or — host is root — bwrap is started as the dedicated unprivileged id (`setgroups([])`, `setresgid`, `setresuid` in `pre_exec`), the mounts handed to it ([`crate::user`]) and their sources bound onto mountpoints under `/run/nanoclaw/staging/<name>` in the private mount namespace of the bwrap process (the id cannot walk to them under `/root`); `--cap-drop ALL`; `/etc/passwd` is generated (`agent`, home = workdir) |
//! | kernel knobs read-only | [`PROC_READ_ONLY`] (`/proc/sys`, `/proc/sysrq-trigger`, `/proc/irq`, `/proc/bus`, `/proc/fs`) `--ro-bind-try` onto themselves after `--proc /proc` |
//! | no nested user namespaces | `--disable-userns` (bwrap ≥ 0.8 only) |
//! | no network but loopback | new network namespace (`--unshare-net`): only `lo`, no route anywhere |
//! | own processes only | new pid namespace; `/proc` is a fresh procfs of that namespace |
//! | protocol pipes out of the tools' reach | `--as-pid-1`: no bwrap reaper holds the agent's stdio in the sandbox; the agent is pid 1, forks a non-dumpable init and runs non-dumpable itself, so `/proc/<pid>/fd` of both is closed to the tools |
//! | ipc / hostname / cgroup view | new ipc and uts namespaces (hostname `nanoclaw`), cgroup namespace when available |
//! | no TIOCSTI into the host terminal | `--new-session` (setsid) |
//! | dies with the host | `--die-with-parent` (PDEATHSIG: the host thread that called `spawn` must outlive the sandbox, so do not spawn from a short-lived thread such as `spawn_blocking`); `kill_on_drop` on the bwrap child |
//! | filesystem | root is bwrap's tmpfs, remounted read-only once populated. Read-only: `/usr`, `/bin` `/sbin` `/lib*` (symlinks recreated on merged-usr hosts, else ro-bound), a short allow-list of `/etc` files (no `/etc/ssl/private`, no shadow), the agent binary at [`AGENT_BINARY_PATH`]. Generated: `/etc/passwd`, `/etc/group`, `/etc/hosts`, `/etc/hostname` (`--ro-bind-data` from pipes, no temp files). Fresh: `/proc`, minimal `/dev`, size-limited tmpfs `/tmp` and `/run`. Plus exactly the spec's mounts, in order. No host home, no data dir. |
//! | environment | `bwrap` itself is started with an empty environment (the outer bwrap is not in the sandbox's pid namespace), and `--clearenv` + `--setenv` gives the agent exactly `spec.env` |
//! | `max_open_files`, `max_file_bytes`, `max_memory_bytes` | `RLIMIT_NOFILE`, `RLIMIT_FSIZE`, `RLIMIT_AS` set in `pre_exec` on bwrap, inherited by everything in the sandbox (clamped to the host's hard limit when lower). `RLIMIT_CORE` = 0. |
//! | `max_processes` | `RLIMIT_NPROC`, with a kernel caveat: it counts *all* tasks of the sandbox user (the sandbox's user namespace inherits the creator's limit; for a root host every sandbox shares the dedicated id). So the rlimit is `max_processes` + that user's task count at spawn, i.e. roughly "`max_processes` more tasks". The exact per-sandbox limit is the cgroup below. |
//! | `max_processes`, `max_memory_bytes` (exact) | a per-sandbox cgroup when cgroups are writable (root, or a delegated v2 subtree): `pids.max` = `max_processes` + 2 (bwrap's two own processes), `memory.max` / `memory.limit_in_bytes` = `max_memory_bytes`. v2: `<current>/nanoclaw/<name>` or `/sys/fs/cgroup/nanoclaw/<name>`; v1: `/sys/fs/cgroup/{pids,memory}/<current>/nanoclaw/<name>`. Joined from `pre_exec`; the cleanup hook kills leftovers and removes it. When not writable: logged at debug, rlimits only. |
//!
//! A workdir outside every mount is created empty on the read-only
//! root (`--dir`); one under a mount must already exist on the host.
//! Per-sandbox cgroups of a host that died are removed by the next [`NativeRuntime::detect`]
//! (empty ones older than a minute).

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::cgroup::SandboxCgroup;
use crate::process::{Cleanup, ProcessControl, run_blocking};
use crate::user::SandboxUser;
use crate::{AGENT_BINARY_PATH, Limits, Mount, Runtime, SandboxError, SandboxProcess, SandboxSpec};

const RUNTIME: &str = "native";
const HOSTNAME: &str = "nanoclaw";
const SANDBOX_UID: u32 = 1000;
const SANDBOX_GID: u32 = 1000;
/// Size of the sandbox's `/tmp` tmpfs (bwrap ≥ 0.7).
pub const TMP_SIZE_BYTES: u64 = 256 * 1024 * 1024;
/// Size of the sandbox's `/run` tmpfs (bwrap ≥ 0.7).
pub const RUN_SIZE_BYTES: u64 = 16 * 1024 * 1024;
/// Environment variable naming the bwrap binary to use instead of `bwrap` on `PATH`.
pub const BWRAP_ENV: &str = "NANOCLAW_BWRAP";

const INSTALL_FIX: &str = "Install bubblewrap: `apt-get install bubblewrap` (Debian/Ubuntu), \
     `dnf install bubblewrap` (Fedora), `pacman -S bubblewrap` (Arch), or set NANOCLAW_BWRAP \
     to its path";

/// Library directories recreated as in the host (symlink or read-only bind).
const SYSTEM_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

/// The only host `/etc` entries visible inside (when they exist). Nothing with secrets.
const ETC_ALLOW_LIST: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust/extracted",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/bash.bashrc",
    "/etc/profile",
    "/etc/inputrc",
    "/etc/os-release",
];

/// Kernel interfaces under `/proc` bound read-only over the sandbox's fresh procfs (those
/// that exist): `/proc/sys` (`kernel.core_pattern` runs a program as root on a crash),
/// `/proc/sysrq-trigger`, IRQ affinity, bus and filesystem knobs. Docker uses the same list.
pub const PROC_READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// Sandbox paths a spec mount may not cover (they are the runtime's own mounts).
const RESERVED: &[&str] = &["/proc", "/dev", "/sys", "/usr", "/etc", "/opt/nanoclaw"];

/// How a host system path appears in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SystemEntry {
    /// `--symlink target path`
    Symlink { target: PathBuf, path: PathBuf },
    /// `--ro-bind path path`
    RoBind { path: PathBuf },
}

/// The host's system layout, detected once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostLayout {
    pub(crate) entries: Vec<SystemEntry>,
}

impl HostLayout {
    fn detect() -> Self {
        let mut entries = vec![SystemEntry::RoBind {
            path: PathBuf::from("/usr"),
        }];
        for path in SYSTEM_DIRS.iter().chain(ETC_ALLOW_LIST) {
            let path = Path::new(path);
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(path) {
                    entries.push(SystemEntry::Symlink {
                        target,
                        path: path.to_path_buf(),
                    });
                }
            } else {
                entries.push(SystemEntry::RoBind {
                    path: path.to_path_buf(),
                });
            }
        }
        Self { entries }
    }
}

/// Optional bwrap features, from its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Features {
    /// `--size` for tmpfs (0.7.0).
    pub(crate) tmpfs_size: bool,
    /// `--disable-userns` (0.8.0).
    pub(crate) disable_userns: bool,
}

impl Features {
    fn from_version(version: (u32, u32, u32)) -> Self {
        Self {
            tmpfs_size: version >= (0, 7, 0),
            disable_userns: version >= (0, 8, 0),
        }
    }
}

/// A spec that passed validation, with canonical host paths.
#[derive(Debug, Clone)]
pub(crate) struct ValidSpec {
    pub(crate) name: String,
    pub(crate) agent_binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: PathBuf,
    pub(crate) limits: Limits,
}

/// The bubblewrap runtime.
#[derive(Debug, Clone)]
pub struct NativeRuntime {
    bwrap: PathBuf,
    version: (u32, u32, u32),
    features: Features,
    layout: HostLayout,
    user: SandboxUser,
}

impl NativeRuntime {
    /// Finds `bwrap` (`$NANOCLAW_BWRAP`, else `PATH`) and checks its version. Does not start a
    /// sandbox: call [`Runtime::probe`] for that.
    pub fn detect() -> Result<Self, SandboxError> {
        let bwrap = match std::env::var_os(BWRAP_ENV) {
            Some(path) if !path.is_empty() => {
                let path = PathBuf::from(path);
                if !is_executable(&path) {
                    return Err(unavailable(
                        format!("{BWRAP_ENV}={} is not an executable file", path.display()),
                        INSTALL_FIX.to_string(),
                    ));
                }
                path
            }
            _ => find_on_path("bwrap").ok_or_else(|| {
                unavailable(
                    "bubblewrap (`bwrap`) was not found on PATH".to_string(),
                    INSTALL_FIX.to_string(),
                )
            })?,
        };
        Self::with_bwrap(bwrap)
    }

    /// Uses the given `bwrap` binary.
    pub fn with_bwrap(bwrap: PathBuf) -> Result<Self, SandboxError> {
        let output = std::process::Command::new(&bwrap)
            .arg("--version")
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                unavailable(
                    format!("running `{} --version` failed: {error}", bwrap.display()),
                    INSTALL_FIX.to_string(),
                )
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = parse_version(&text).ok_or_else(|| {
            unavailable(
                format!(
                    "`{} --version` printed {:?}, not a bubblewrap version",
                    bwrap.display(),
                    text.trim()
                ),
                INSTALL_FIX.to_string(),
            )
        })?;
        if version < (0, 5, 0) {
            return Err(unavailable(
                format!(
                    "bubblewrap {}.{}.{} is too old (need 0.5.0 or newer)",
                    version.0, version.1, version.2
                ),
                "Upgrade bubblewrap (your distribution's package, or build it from \
                 https://github.com/containers/bubblewrap)"
                    .to_string(),
            ));
        }
        // Sandboxes of a host that crashed leave empty cgroups and staging folders behind.
        crate::cgroup::remove_stale(Duration::from_secs(60));
        remove_stale_staging(Duration::from_secs(60));
        Ok(Self {
            bwrap,
            version,
            features: Features::from_version(version),
            layout: HostLayout::detect(),
            user: SandboxUser::for_this_host(),
        })
    }

    /// The `bwrap` binary in use.
    pub fn bwrap_path(&self) -> &Path {
        &self.bwrap
    }

    /// The host ids sandboxes run as.
    pub fn user(&self) -> SandboxUser {
        self.user
    }

    /// The bubblewrap version, `(major, minor, patch)`.
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// The full bwrap command line (without the program) for `spec`, for logs and debugging.
    /// The generated `/etc` files appear as fd numbers that are only valid during `spawn`.
    pub fn command_line(&self, spec: &SandboxSpec) -> Result<Vec<OsString>, SandboxError> {
        let valid = validate(spec)?;
        let fds: Vec<(RawFd, &'static str)> = generated_files(&valid)
            .iter()
            .enumerate()
            .map(|(index, (dest, _))| (3 + index as RawFd, *dest))
            .collect();
        Ok(build_args(&valid, &self.layout, self.features, &fds))
    }
}

#[async_trait]
impl Runtime for NativeRuntime {
    /// The host's own packages: its sandboxes run the host's `/usr`. A host without dpkg
    /// (not Debian-based) cannot tell.
    async fn installed_packages(
        &self,
    ) -> Result<Option<std::collections::BTreeSet<String>>, SandboxError> {
        match tokio::fs::read_to_string(crate::packages::DPKG_STATUS).await {
            Ok(text) => Ok(Some(crate::packages::parse_dpkg_status(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SandboxError::Packages {
                runtime: RUNTIME,
                reason: format!("reading {}: {e}", crate::packages::DPKG_STATUS),
            }),
        }
    }

    fn name(&self) -> &'static str {
        RUNTIME
    }

    async fn probe(&self) -> Result<(), SandboxError> {
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let agent = ["/usr/bin/true", "/bin/true"]
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .ok_or_else(|| {
                unavailable(
                    "no `true` binary in /usr/bin or /bin to probe with".to_string(),
                    "Install coreutils".to_string(),
                )
            })?;
        let spec = SandboxSpec {
            name: format!(
                "probe-{}-{}",
                std::process::id(),
                PROBES.fetch_add(1, Ordering::Relaxed)
            ),
            agent_binary: agent,
            args: Vec::new(),
            mounts: Vec::new(),
            env: Default::default(),
            workdir: PathBuf::from("/tmp"),
            limits: Limits::default(),
        };
        let process = match self.spawn(&spec).await {
            Ok(process) => process,
            Err(SandboxError::Spawn { source, .. }) => {
                return Err(unavailable(
                    format!("starting {} failed: {source}", self.bwrap.display()),
                    INSTALL_FIX.to_string(),
                ));
            }
            Err(other) => return Err(other),
        };
        let SandboxProcess {
            stdin,
            stdout,
            mut stderr,
            mut control,
        } = process;
        drop(stdin);
        drop(stdout);
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            use tokio::io::AsyncReadExt;
            let mut message = Vec::new();
            let _ = stderr.read_to_end(&mut message).await;
            (control.wait().await, message)
        })
        .await;
        let result = match waited {
            Ok((Some(0), _)) => Ok(()),
            Ok((Some(code), message)) => {
                let message = String::from_utf8_lossy(&message).trim().to_string();
                Err(unavailable(
                    format!("a test sandbox failed (exit status {code}): {message}"),
                    fix_for_failure(&message),
                ))
            }
            Ok((None, message)) => {
                let message = String::from_utf8_lossy(&message).trim().to_string();
                Err(unavailable(
                    format!("a test sandbox was killed: {message}"),
                    fix_for_failure(&message),
                ))
            }
            Err(_) => {
                control.kill().await;
                Err(unavailable(
                    "a test sandbox running `true` did not exit within 30 s".to_string(),
                    "Check that bubblewrap works: `bwrap --ro-bind / / true`".to_string(),
                ))
            }
        };
        // Dropping the control releases the test sandbox's cgroup.
        drop(control);
        result
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError> {
        let valid = validate(spec)?;
        self.user.check()?;
        if self.user.dedicated {
            let mounts = valid.mounts.clone();
            let user = self.user;
            tokio::task::spawn_blocking(move || crate::user::hand_over(&mounts, user))
                .await
                .map_err(|error| spawn_error(std::io::Error::other(error)))??;
        }
        let (staging, bwrap_spec, plan) = self.stage(&valid)?;
        let mut held = Held {
            cgroup: None,
            staging,
        };
        // Generated /etc files go through pipes (`--ro-bind-data FD`): nothing to clean up.
        let (readers, data_fds) = match generated_file_pipes(&valid) {
            Ok(pipes) => pipes,
            Err(error) => {
                held.release().await;
                return Err(spawn_error(error));
            }
        };
        let args = build_args(&bwrap_spec, &self.layout, self.features, &data_fds);
        held.cgroup = SandboxCgroup::create(&valid.name, &valid.limits);
        let hook = self.pre_exec_hook(&valid, &data_fds, held.cgroup.as_ref(), plan);
        let mut command = self.command(&args, hook);
        tracing::debug!(sandbox = %valid.name, bwrap = %self.bwrap.display(), ?args, "starting sandbox");
        let spawned = command.spawn();
        drop(readers);
        let child = match spawned {
            Ok(child) => child,
            Err(error) => {
                held.release().await;
                return Err(spawn_error(error));
            }
        };
        held.check_joined(&valid.name, &child);
        sandbox_process(child, held).await
    }
}

fn spawn_error(source: std::io::Error) -> SandboxError {
    SandboxError::Spawn {
        runtime: RUNTIME,
        source,
    }
}

impl NativeRuntime {
    /// A root host's data dir is not reachable for the unprivileged sandbox user (it is
    /// under /root, 0700): the mount sources and the agent binary are opened here, as root,
    /// and bound onto a private staging tmpfs that bwrap then mounts from. Returns the
    /// staging, the spec as bwrap sees it and what the child binds before exec.
    fn stage(
        &self,
        valid: &ValidSpec,
    ) -> Result<(Option<Staging>, ValidSpec, Option<StagingPlan>), SandboxError> {
        if !self.user.dedicated {
            return Ok((None, valid.clone(), None));
        }
        let staging = Staging::prepare(valid).map_err(spawn_error)?;
        let staged = staging.staged_spec(valid);
        match staging.plan() {
            Ok(plan) => Ok((Some(staging), staged, Some(plan))),
            Err(error) => {
                staging.remove();
                Err(spawn_error(error))
            }
        }
    }

    /// What the child does between fork and exec: inherit the data pipes, join the cgroup,
    /// set the rlimits, drop to the sandbox user, bind the staged sources.
    fn pre_exec_hook(
        &self,
        valid: &ValidSpec,
        data_fds: &[DataFd],
        cgroup: Option<&SandboxCgroup>,
        staging: Option<StagingPlan>,
    ) -> PreExec {
        PreExec {
            inherit_fds: data_fds.iter().map(|(fd, _)| *fd).collect(),
            cgroup_procs: cgroup.map(SandboxCgroup::procs_fds).unwrap_or_default(),
            rlimits: rlimits_for(&valid.limits, self.user.uid),
            drop_to: self
                .user
                .dedicated
                .then_some((self.user.uid, self.user.gid)),
            staging,
        }
    }

    /// The bwrap command: empty environment, piped stdio, killed when dropped.
    fn command(&self, args: &[OsString], hook: PreExec) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.bwrap);
        command
            .args(args)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the hook only calls async-signal-safe functions (write, fcntl, getrlimit,
        // setrlimit) on data prepared before the fork; it does not allocate or lock.
        unsafe {
            command.pre_exec(move || hook.run());
        }
        command
    }
}

/// The generated `/etc` files as pipes bwrap reads (`--ro-bind-data FD`): the read ends, to
/// keep open until bwrap has started, and their fds with the destination. The files are a
/// few hundred bytes, far below the pipe buffer, so writing cannot block.
fn generated_file_pipes(
    valid: &ValidSpec,
) -> std::io::Result<(Vec<std::io::PipeReader>, Vec<DataFd>)> {
    let mut readers = Vec::new();
    let mut data_fds = Vec::new();
    for (dest, content) in generated_files(valid) {
        let (reader, mut writer) = std::io::pipe()?;
        writer.write_all(content.as_bytes())?;
        drop(writer);
        data_fds.push((reader.as_raw_fd(), dest));
        readers.push(reader);
    }
    Ok((readers, data_fds))
}

/// A generated file's pipe (read end) and where it appears inside the sandbox.
type DataFd = (RawFd, &'static str);

/// What one native sandbox holds on the host besides its process.
struct Held {
    cgroup: Option<SandboxCgroup>,
    staging: Option<Staging>,
}

impl Held {
    /// Closes the cgroup's `cgroup.procs` files now the child exists, and warns when the
    /// child did not join the cgroup.
    fn check_joined(&mut self, sandbox: &str, child: &tokio::process::Child) {
        if let Some(cgroup) = self.cgroup.as_mut() {
            cgroup.close_procs();
            if let Some(pid) = child.id()
                && !cgroup.contains(pid)
            {
                tracing::warn!(
                    sandbox,
                    pid,
                    "sandbox did not join its cgroup; only rlimits apply"
                );
            }
        }
    }

    /// The cleanup to run when the sandbox ends; `None` when nothing is held. The staging
    /// mountpoints must stay until bwrap has mounted them, so they go with the cgroup.
    fn into_cleanup(self) -> Option<Cleanup> {
        if self.cgroup.is_none() && self.staging.is_none() {
            return None;
        }
        Some(Box::new(move || self.release_blocking()))
    }

    /// Removes the cgroup (waiting for its tasks to go) and the staging folder.
    fn release_blocking(self) {
        if let Some(cgroup) = self.cgroup {
            cgroup.remove();
        }
        if let Some(staging) = self.staging {
            staging.remove();
        }
    }

    /// [`Held::release_blocking`] off the async runtime's workers.
    async fn release(self) {
        if let Some(cleanup) = self.into_cleanup() {
            run_blocking(cleanup).await;
        }
    }
}

/// The started sandbox: its stdio, and a control that releases what it holds when it ends.
async fn sandbox_process(
    mut child: tokio::process::Child,
    held: Held,
) -> Result<SandboxProcess, SandboxError> {
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill().await;
        held.release().await;
        return Err(spawn_error(std::io::Error::other(
            "bwrap child has no piped stdio",
        )));
    };
    Ok(SandboxProcess {
        stdin: Box::pin(stdin),
        stdout: Box::pin(stdout),
        stderr: Box::pin(stderr),
        control: Box::new(ProcessControl::new(child, held.into_cleanup())),
    })
}

/// Runs in the forked child before `exec(bwrap)`.
struct PreExec {
    /// Fds bwrap must inherit (the `--ro-bind-data` pipes); they are CLOEXEC in the parent.
    inherit_fds: Vec<RawFd>,
    /// `cgroup.procs` files to join.
    cgroup_procs: Vec<RawFd>,
    rlimits: Vec<(RlimitResource, u64)>,
    /// The host runs as root: become this unprivileged uid:gid (no supplementary groups)
    /// before bwrap starts, so the sandbox's uid maps to it and never to host root.
    drop_to: Option<(u32, u32)>,
    /// Bind the mount sources onto the staging tmpfs first (see [`Staging`]).
    staging: Option<StagingPlan>,
}

/// Highest fd marked close-on-exec when `close_range(2)` is unavailable.
const FALLBACK_MAX_FD: RawFd = 65536;

#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

impl PreExec {
    fn run(&self) -> std::io::Result<()> {
        // Fds the host inherited without CLOEXEC (from whoever started it) must not reach
        // the sandbox: mark everything above stderr close-on-exec, then re-open the few
        // bwrap needs. stdio is already in place when pre_exec runs.
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags in this process.
        let marked = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if marked != 0 {
            // Kernels before 5.11: mark each possible fd (EBADF for unused ones is fine).
            for fd in 3..FALLBACK_MAX_FD {
                // SAFETY: fcntl on an arbitrary fd number only sets flags or fails with EBADF.
                unsafe {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
        }
        for &fd in &self.cgroup_procs {
            // Best effort: "0" moves the writing process. The parent checks membership.
            // SAFETY: fd is an open cgroup.procs file owned by the parent for the whole
            // spawn; the buffer is a static byte string.
            let _ = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        }
        for &(resource, wanted) in &self.rlimits {
            let mut current = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `current` is a valid, writable rlimit struct.
            if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // An unprivileged process cannot raise its hard limit: never ask for more.
            let value = (wanted as libc::rlim_t).min(current.rlim_max);
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: `limit` is a valid rlimit struct.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(plan) = &self.staging {
            plan.run()?;
        }
        if let Some((uid, gid)) = self.drop_to {
            // Groups first, while still privileged; then the gid, then the uid (real,
            // effective and saved: no way back). Any failure stops the spawn.
            // SAFETY: setgroups with an empty list, setresgid and setresuid only change
            // this (child) process's credentials.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        for &fd in &self.inherit_fds {
            // SAFETY: fd is an open pipe read end owned by the parent for the whole spawn;
            // clearing FD_CLOEXEC only affects this (child) process's fd table.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Where the mount sources of a root host's sandboxes are staged: one root-owned folder per
/// sandbox holding empty mountpoints, on which the sources are bound inside the private
/// mount namespace of the process that becomes bwrap (the host's view gets no mounts).
const STAGING_ROOT: &str = "/run/nanoclaw/staging";

/// A root host's data dir is not reachable for the unprivileged sandbox user (it is under
/// /root, 0700), so bwrap mounts the sources from here instead.
struct Staging {
    dir: PathBuf,
    /// (source, mountpoint, source is a directory), the mounts in order then the agent.
    binds: Vec<(PathBuf, PathBuf, bool)>,
}

impl Staging {
    fn prepare(spec: &ValidSpec) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let root = Path::new(STAGING_ROOT);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)?;
        let dir = root.join(&spec.name);
        // Left over by a host that died with this sandbox name: only empty mountpoints.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o755).create(&dir)?;
        let mut staging = Self {
            dir,
            binds: Vec::new(),
        };
        let sources = spec
            .mounts
            .iter()
            .map(|mount| &mount.host_path)
            .chain(std::iter::once(&spec.agent_binary));
        for (index, source) in sources.enumerate() {
            let target = staging.dir.join(index.to_string());
            let is_dir = std::fs::metadata(source)?.is_dir();
            if is_dir {
                std::fs::DirBuilder::new().mode(0o755).create(&target)?;
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&target)?;
            }
            staging.binds.push((source.clone(), target, is_dir));
        }
        Ok(staging)
    }

    /// The spec as bwrap sees it: every source at its mountpoint.
    fn staged_spec(&self, spec: &ValidSpec) -> ValidSpec {
        let mut staged = spec.clone();
        for (mount, (_, target, _)) in staged.mounts.iter_mut().zip(&self.binds) {
            mount.host_path = target.clone();
        }
        if let Some((_, target, _)) = self.binds.last() {
            staged.agent_binary = target.clone();
        }
        staged
    }

    /// Everything the child needs, as C strings made before the fork.
    fn plan(&self) -> std::io::Result<StagingPlan> {
        let c = |path: &Path| {
            std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::other("a path contains a NUL byte"))
        };
        let mut binds = Vec::new();
        for (source, target, _) in &self.binds {
            binds.push((c(source)?, c(target)?));
        }
        Ok(StagingPlan { binds })
    }

    /// Removes the mountpoints (once bwrap has mounted, or never will).
    fn remove(self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(dir = %self.dir.display(), %error, "removing a staging folder");
        }
    }
}

/// Removes staging folders older than `min_age`: only empty mountpoints, in the host's view,
/// and bwrap mounts from them within moments of its start, so even a live sandbox's folder
/// is no longer needed by then.
fn remove_stale_staging(min_age: Duration) {
    let Ok(entries) = std::fs::read_dir(STAGING_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if old && let Err(error) = std::fs::remove_dir_all(entry.path()) {
            tracing::debug!(dir = %entry.path().display(), %error, "removing a stale staging folder");
        }
    }
}

struct StagingPlan {
    /// (source, mountpoint)
    binds: Vec<(std::ffi::CString, std::ffi::CString)>,
}

impl StagingPlan {
    /// In the child, still root: a private mount namespace, each source bound onto its
    /// mountpoint.
    fn run(&self) -> std::io::Result<()> {
        let check = |result: libc::c_int| {
            if result != 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: unshare and mount are async-signal-safe syscalls on C strings prepared
        // before the fork; they only change this child's mount namespace.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target) in &self.binds {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

fn rlimits_for(limits: &Limits, uid: u32) -> Vec<(RlimitResource, u64)> {
    vec![
        (libc::RLIMIT_NPROC, nproc_limit(limits.max_processes, uid)),
        (libc::RLIMIT_AS, limits.max_memory_bytes),
        (libc::RLIMIT_FSIZE, limits.max_file_bytes),
        (libc::RLIMIT_NOFILE, limits.max_open_files),
        (libc::RLIMIT_CORE, 0),
    ]
}

/// `RLIMIT_NPROC` for the bwrap child running as `uid`. The kernel compares the limit with
/// *all* that user's tasks (every sandbox's, when the host is root and they share the
/// dedicated uid), so add what the user already runs (see module docs).
fn nproc_limit(max_processes: u64, uid: u32) -> u64 {
    if uid == 0 {
        return max_processes;
    }
    max_processes.saturating_add(tasks_of_uid(uid))
}

/// Number of tasks (threads) whose real uid is `uid`, from /proc.
fn tasks_of_uid(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u64>().ok())
        };
        if field("Uid:") == Some(u64::from(uid)) {
            total += field("Threads:").unwrap_or(1);
        }
    }
    total
}

/// The generated `/etc` files: (path inside, content).
pub(crate) fn generated_files(spec: &ValidSpec) -> Vec<(&'static str, String)> {
    let home = spec.workdir.display();
    vec![
        (
            "/etc/passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 agent:x:{SANDBOX_UID}:{SANDBOX_GID}:nanoclaw agent:{home}:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "/etc/group",
            format!("root:x:0:\nagent:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"),
        ),
        (
            "/etc/hosts",
            format!("127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        ("/etc/hostname", format!("{HOSTNAME}\n")),
    ]
}

/// Builds bwrap's arguments. Pure: everything host-dependent is passed in.
/// `data_fds` are (fd, path inside) for `--ro-bind-data`.
pub(crate) fn build_args(
    spec: &ValidSpec,
    layout: &HostLayout,
    features: Features,
    data_fds: &[(RawFd, &str)],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&dyn AsRefOs]| {
        for item in items {
            args.push(item.as_os());
        }
    };
    push(&[
        &"--unshare-user",
        &"--unshare-pid",
        // The agent is pid 1 itself: bwrap's own reaper would be a dumpable process holding
        // the agent's stdio, which tools could open through /proc/1/fd (the agent forks its
        // own non-dumpable init instead).
        &"--as-pid-1",
        &"--unshare-net",
        &"--unshare-ipc",
        &"--unshare-uts",
        &"--unshare-cgroup-try",
    ]);
    if features.disable_userns {
        push(&[&"--disable-userns"]);
    }
    push(&[
        &"--die-with-parent",
        &"--new-session",
        &"--uid",
        &SANDBOX_UID.to_string(),
        &"--gid",
        &SANDBOX_GID.to_string(),
        &"--cap-drop",
        &"ALL",
        &"--hostname",
        &HOSTNAME,
    ]);
    for entry in &layout.entries {
        match entry {
            SystemEntry::Symlink { target, path } => push(&[&"--symlink", target, path]),
            SystemEntry::RoBind { path } => push(&[&"--ro-bind", path, path]),
        }
    }
    for (fd, dest) in data_fds {
        push(&[&"--ro-bind-data", &fd.to_string(), dest]);
    }
    push(&[&"--proc", &"/proc"]);
    for path in PROC_READ_ONLY {
        push(&[&"--ro-bind-try", path, path]);
    }
    push(&[&"--dev", &"/dev"]);
    for (dir, size) in [("/tmp", TMP_SIZE_BYTES), ("/run", RUN_SIZE_BYTES)] {
        if features.tmpfs_size {
            push(&[&"--size", &size.to_string()]);
        }
        push(&[&"--tmpfs", &dir]);
    }
    for mount in &spec.mounts {
        let flag = if mount.writable {
            "--bind"
        } else {
            "--ro-bind"
        };
        push(&[&flag, &mount.host_path, &mount.sandbox_path]);
    }
    let workdir_mounted = spec
        .mounts
        .iter()
        .any(|mount| spec.workdir.starts_with(&mount.sandbox_path));
    if !workdir_mounted {
        push(&[&"--dir", &spec.workdir]);
    }
    push(&[&"--ro-bind", &spec.agent_binary, &AGENT_BINARY_PATH]);
    // Everything is in place: freeze the root tmpfs (submounts keep their own flags).
    push(&[&"--remount-ro", &"/"]);
    push(&[&"--clearenv"]);
    for (key, value) in &spec.env {
        push(&[&"--setenv", key, value]);
    }
    push(&[&"--chdir", &spec.workdir, &"--", &AGENT_BINARY_PATH]);
    for arg in &spec.args {
        push(&[arg]);
    }
    args
}

/// Anything that can become one argv element.
trait AsRefOs {
    fn as_os(&self) -> OsString;
}
impl<T: AsRef<std::ffi::OsStr> + ?Sized> AsRefOs for T {
    fn as_os(&self) -> OsString {
        self.as_ref().to_os_string()
    }
}

fn invalid(message: String) -> SandboxError {
    SandboxError::InvalidSpec(message)
}

/// A sandbox path: absolute, no `.`/`..`, no NUL.
fn check_sandbox_path(what: &str, path: &Path) -> Result<(), SandboxError> {
    if !path.is_absolute() {
        return Err(invalid(format!(
            "{what} {} must be an absolute path inside the sandbox",
            path.display()
        )));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(invalid(format!(
            "{what} {} must not contain `.` or `..` components",
            path.display()
        )));
    }
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(invalid(format!(
            "{what} {} contains a NUL byte",
            path.display()
        )));
    }
    Ok(())
}

fn canonical_host_path(what: &str, path: &Path) -> Result<PathBuf, SandboxError> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(invalid(format!(
            "{what} {} contains a NUL byte",
            path.display()
        )));
    }
    std::fs::canonicalize(path).map_err(|error| {
        invalid(format!(
            "{what} {} is not usable on the host: {error}",
            path.display()
        ))
    })
}

/// Checks a spec and resolves its host paths.
pub(crate) fn validate(spec: &SandboxSpec) -> Result<ValidSpec, SandboxError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 128
        && spec.name != "."
        && spec.name != ".."
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !name_ok {
        return Err(invalid(format!(
            "sandbox name {:?} must be 1-128 characters of [A-Za-z0-9_.-]",
            spec.name
        )));
    }

    let agent_binary = canonical_host_path("agent binary", &spec.agent_binary)?;
    if !agent_binary.is_file() {
        return Err(invalid(format!(
            "agent binary {} is not a regular file",
            agent_binary.display()
        )));
    }

    check_sandbox_path("workdir", &spec.workdir)?;
    let workdir_bytes = spec.workdir.as_os_str().as_bytes();
    if workdir_bytes.contains(&b':') || workdir_bytes.contains(&b'\n') {
        // It becomes the home directory field of the generated /etc/passwd.
        return Err(invalid(format!(
            "workdir {} must not contain `:` or a newline",
            spec.workdir.display()
        )));
    }

    let mut mounts = Vec::with_capacity(spec.mounts.len());
    for mount in &spec.mounts {
        check_sandbox_path("mount destination", &mount.sandbox_path)?;
        if mount.sandbox_path == Path::new("/") {
            return Err(invalid(
                "a mount cannot replace the sandbox root `/`".to_string(),
            ));
        }
        if let Some(reserved) = RESERVED
            .iter()
            .find(|reserved| mount.sandbox_path.starts_with(reserved))
        {
            return Err(invalid(format!(
                "mount destination {} is inside {reserved}, which the runtime provides",
                mount.sandbox_path.display()
            )));
        }
        mounts.push(Mount {
            host_path: canonical_host_path("mount source", &mount.host_path)?,
            sandbox_path: mount.sandbox_path.clone(),
            writable: mount.writable,
        });
    }

    let mut env = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(format!(
                "environment variable name {key:?} must be non-empty without `=` or NUL"
            )));
        }
        if value.contains('\0') {
            return Err(invalid(format!(
                "environment variable {key} contains a NUL byte"
            )));
        }
        env.push((key.clone(), value.clone()));
    }
    if let Some(arg) = spec.args.iter().find(|arg| arg.contains('\0')) {
        return Err(invalid(format!(
            "agent argument {arg:?} contains a NUL byte"
        )));
    }

    Ok(ValidSpec {
        name: spec.name.clone(),
        agent_binary,
        args: spec.args.clone(),
        mounts,
        env,
        workdir: spec.workdir.clone(),
        limits: spec.limits.clone(),
    })
}

fn unavailable(reason: String, fix: String) -> SandboxError {
    SandboxError::Unavailable {
        runtime: RUNTIME,
        reason,
        fix,
    }
}

/// A fix for a failed test sandbox, from bwrap's message and the host's sysctls.
fn fix_for_failure(message: &str) -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|value| value.trim().to_string())
    };
    let mut fixes = Vec::new();
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        fixes.push(
            "unprivileged user namespaces are disabled: `sudo sysctl -w kernel.unprivileged_userns_clone=1` \
             (persist it in /etc/sysctl.d/)",
        );
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        fixes.push(
            "AppArmor restricts unprivileged user namespaces (Ubuntu 24.04+): \
             `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or add an AppArmor \
             profile granting `userns` to bwrap",
        );
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        fixes.push("user namespaces are disabled: `sudo sysctl -w user.max_user_namespaces=15000`");
    }
    if message.contains("Resource temporarily unavailable") {
        fixes.push(
            "the process limit was hit: raise the sandbox's max_processes (for a non-root user it \
             counts all of the user's tasks)",
        );
    }
    if fixes.is_empty() {
        if message.contains("namespace") || message.contains("uid map") {
            fixes.push(
                "bubblewrap cannot create user namespaces here: enable unprivileged user namespaces \
                 (`sysctl kernel.unprivileged_userns_clone=1`, \
                 `sysctl kernel.apparmor_restrict_unprivileged_userns=0`), or, inside a container, \
                 allow them (e.g. Docker `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`)",
            );
        } else {
            fixes
                .push("run `bwrap --unshare-all --ro-bind / / true` to see bubblewrap's own error");
        }
    }
    fixes.join("; ")
}

pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text
        .split_whitespace()
        .find(|word| word.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|part| part.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ValidSpec {
        ValidSpec {
            name: "g1".into(),
            agent_binary: "/host/agent".into(),
            args: vec!["--serve".into(), "x y".into()],
            mounts: vec![
                Mount {
                    host_path: "/host/work".into(),
                    sandbox_path: "/workspace".into(),
                    writable: true,
                },
                Mount {
                    host_path: "/host/ro".into(),
                    sandbox_path: "/workspace/ro".into(),
                    writable: false,
                },
            ],
            env: vec![
                ("HOME".into(), "/workspace".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            workdir: "/workspace".into(),
            limits: Limits::default(),
        }
    }

    fn layout() -> HostLayout {
        HostLayout {
            entries: vec![
                SystemEntry::RoBind {
                    path: "/usr".into(),
                },
                SystemEntry::Symlink {
                    target: "usr/bin".into(),
                    path: "/bin".into(),
                },
                SystemEntry::RoBind {
                    path: "/lib64".into(),
                },
            ],
        }
    }

    const ALL: Features = Features {
        tmpfs_size: true,
        disable_userns: true,
    };

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// Index of the `window` sequence in `args`, if present.
    fn find(args: &[String], window: &[&str]) -> Option<usize> {
        args.windows(window.len())
            .position(|w| w.iter().zip(window).all(|(a, b)| a == b))
    }

    #[test]
    fn isolation_flags_are_present() {
        let args = strings(&build_args(&spec(), &layout(), ALL, &[]));
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--as-pid-1",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ] {
            assert!(args.contains(&flag.to_string()), "missing {flag}: {args:?}");
        }
        assert!(find(&args, &["--uid", "1000", "--gid", "1000"]).is_some());
        assert!(find(&args, &["--cap-drop", "ALL"]).is_some());
        assert!(find(&args, &["--hostname", "nanoclaw"]).is_some());
        let proc = find(&args, &["--proc", "/proc"]).expect("--proc");
        for path in [
            "/proc/sys",
            "/proc/sysrq-trigger",
            "/proc/irq",
            "/proc/bus",
            "/proc/fs",
        ] {
            let ro = find(&args, &["--ro-bind-try", path, path]).expect(path);
            assert!(ro > proc, "{path} must cover the fresh procfs");
        }
        assert!(find(&args, &["--dev", "/dev"]).is_some());
        assert!(
            find(
                &args,
                &["--size", &TMP_SIZE_BYTES.to_string(), "--tmpfs", "/tmp"]
            )
            .is_some()
        );
        assert!(find(&args, &["--remount-ro", "/"]).is_some());
        // Never the whole host root or /etc.
        assert!(find(&args, &["--ro-bind", "/", "/"]).is_none());
        assert!(find(&args, &["--ro-bind", "/etc", "/etc"]).is_none());
        assert!(find(&args, &["--bind", "/", "/"]).is_none());
    }

    #[test]
    fn old_bwrap_gets_no_newer_flags() {
        let old = Features {
            tmpfs_size: false,
            disable_userns: false,
        };
        let args = strings(&build_args(&spec(), &layout(), old, &[]));
        assert!(!args.contains(&"--size".to_string()));
        assert!(!args.contains(&"--disable-userns".to_string()));
        assert!(find(&args, &["--tmpfs", "/tmp"]).is_some());
    }

    #[test]
    fn system_layout_mounts_and_generated_files() {
        let args = strings(&build_args(&spec(), &layout(), ALL, &[(7, "/etc/passwd")]));
        assert!(find(&args, &["--ro-bind", "/usr", "/usr"]).is_some());
        assert!(find(&args, &["--symlink", "usr/bin", "/bin"]).is_some());
        assert!(find(&args, &["--ro-bind", "/lib64", "/lib64"]).is_some());
        assert!(find(&args, &["--ro-bind-data", "7", "/etc/passwd"]).is_some());
    }

    #[test]
    fn spec_mounts_in_order_then_agent_then_command() {
        let args = strings(&build_args(&spec(), &layout(), ALL, &[]));
        let rw = find(&args, &["--bind", "/host/work", "/workspace"]).expect("rw mount");
        let ro = find(&args, &["--ro-bind", "/host/ro", "/workspace/ro"]).expect("ro mount");
        let tmp = find(&args, &["--tmpfs", "/tmp"]).expect("tmp");
        let agent = find(&args, &["--ro-bind", "/host/agent", AGENT_BINARY_PATH]).expect("agent");
        let remount = find(&args, &["--remount-ro", "/"]).expect("remount");
        assert!(
            tmp < rw && rw < ro && ro < agent && agent < remount,
            "{args:?}"
        );
        // The workdir is a mount: no --dir for it.
        assert!(find(&args, &["--dir", "/workspace"]).is_none());
        let tail = find(
            &args,
            &[
                "--chdir",
                "/workspace",
                "--",
                AGENT_BINARY_PATH,
                "--serve",
                "x y",
            ],
        )
        .expect("command tail");
        assert_eq!(tail + 6, args.len(), "the command must be last: {args:?}");
    }

    #[test]
    fn env_is_cleared_then_set_from_spec_only() {
        let args = strings(&build_args(&spec(), &layout(), ALL, &[]));
        let clear = find(&args, &["--clearenv"]).expect("clearenv");
        let home = find(&args, &["--setenv", "HOME", "/workspace"]).expect("HOME");
        let lang = find(&args, &["--setenv", "LANG", "C.UTF-8"]).expect("LANG");
        assert!(clear < home && clear < lang);
        assert_eq!(args.iter().filter(|a| *a == "--setenv").count(), 2);
    }

    #[test]
    fn unmounted_workdir_is_created() {
        let mut spec = spec();
        spec.workdir = "/home/agent".into();
        let args = strings(&build_args(&spec, &layout(), ALL, &[]));
        let dir = find(&args, &["--dir", "/home/agent"]).expect("--dir");
        let remount = find(&args, &["--remount-ro", "/"]).expect("remount");
        assert!(dir < remount);
    }

    #[test]
    fn passwd_names_the_agent_user_with_workdir_home() {
        let files = generated_files(&spec());
        let passwd = &files
            .iter()
            .find(|(p, _)| *p == "/etc/passwd")
            .expect("passwd")
            .1;
        assert!(passwd.contains("agent:x:1000:1000:nanoclaw agent:/workspace:/bin/sh\n"));
        assert!(passwd.starts_with("root:x:0:0:"));
        let group = &files
            .iter()
            .find(|(p, _)| *p == "/etc/group")
            .expect("group")
            .1;
        assert!(group.contains("agent:x:1000:\n"));
    }

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("bubblewrap 0.8.0\n"), Some((0, 8, 0)));
        assert_eq!(parse_version("bubblewrap 0.11.0-rc1"), Some((0, 11, 0)));
        assert_eq!(parse_version("bubblewrap 0.6"), Some((0, 6, 0)));
        assert_eq!(parse_version("nonsense"), None);
        assert!(!Features::from_version((0, 6, 1)).tmpfs_size);
        assert_eq!(Features::from_version((0, 8, 0)), ALL);
    }

    fn base_spec(dir: &Path) -> SandboxSpec {
        let agent = dir.join("agent");
        std::fs::write(&agent, "#!/bin/sh\n").expect("write agent");
        SandboxSpec {
            name: "ok".into(),
            agent_binary: agent,
            args: vec![],
            mounts: vec![Mount {
                host_path: dir.to_path_buf(),
                sandbox_path: "/workspace".into(),
                writable: true,
            }],
            env: Default::default(),
            workdir: "/workspace".into(),
            limits: Limits::default(),
        }
    }

    #[test]
    fn validation_rejects_bad_specs() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(validate(&base_spec(dir.path())).is_ok());
        type Mutation = Box<dyn Fn(&mut SandboxSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "absolute",
                Box::new(|s| s.mounts[0].sandbox_path = "workspace".into()),
            ),
            (
                "`..`",
                Box::new(|s| s.mounts[0].sandbox_path = "/workspace/../etc".into()),
            ),
            (
                "not usable on the host",
                Box::new(|s| s.mounts[0].host_path = "/definitely/not/here".into()),
            ),
            (
                "sandbox root",
                Box::new(|s| s.mounts[0].sandbox_path = "/".into()),
            ),
            (
                "runtime provides",
                Box::new(|s| s.mounts[0].sandbox_path = "/etc/shadow".into()),
            ),
            ("sandbox name", Box::new(|s| s.name = "../x".into())),
            ("sandbox name", Box::new(|s| s.name = String::new())),
            (
                "agent binary",
                Box::new(|s| s.agent_binary = "/nope/agent".into()),
            ),
            ("workdir", Box::new(|s| s.workdir = "rel".into())),
            ("workdir", Box::new(|s| s.workdir = "/a:b".into())),
            (
                "environment variable name",
                Box::new(|s| {
                    s.env.insert("A=B".into(), "x".into());
                }),
            ),
        ];
        for (expected, mutate) in cases {
            let mut spec = base_spec(dir.path());
            mutate(&mut spec);
            let error = validate(&spec).expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
            assert!(error.starts_with("invalid sandbox spec"), "{error}");
        }
    }
}

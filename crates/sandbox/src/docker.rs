//! The `docker` runtime: one container per sandbox, through the Docker Engine API
//! ([bollard], Unix socket only). The same code speaks to Podman's Docker-compatible socket.
//!
//! # What is enforced, and by whom
//!
//! | Guarantee | Mechanism |
//! |---|---|
//! | non-root user inside, never host root outside | `User` = the [`SandboxUser`]: the host user's `uid:gid` (so the user's own mounts are writable), or — host is root — the dedicated unprivileged id, with the mounts handed to it without following links ([`crate::user`]); `CapDrop: ALL`, `no-new-privileges` |
//! | kernel knobs read-only | `ReadonlyPaths` = [`PROC_READ_ONLY`] (the engine's default, stated) |
//! | no network but loopback | `NetworkMode: none`: only `lo` |
//! | own processes only, init | the engine's pid namespace; `Init: false`: the agent is pid 1 and forks its own non-dumpable init (reaps zombies, forwards signals), because docker-init/catatonit would be a dumpable process holding the agent's stdio that tools could open through `/proc/1/fd` |
//! | filesystem | the image's root, `ReadonlyRootfs`; size-limited `noexec` tmpfs `/tmp` and `/run`; exactly the spec's mounts (bind, read-only unless writable) plus the agent binary read-only at [`AGENT_BINARY_PATH`]. The image's entrypoint is overridden: the command is the agent. |
//! | environment | exactly `spec.env`, plus what the engine itself always adds: `HOSTNAME` (and `container=podman` under Podman), and the image's own `ENV` (the image is ours: it sets none that matter) |
//! | `max_processes` | `PidsLimit` (pids cgroup of the container) |
//! | `max_memory_bytes` | `Memory`, and `MemorySwap` = the same (no swap) |
//! | `max_open_files`, `max_file_bytes` | ulimits `nofile`, `fsize`; `core` = 0 |
//! | CPU | `NanoCpus` from [`DockerConfig::cpus`] when set |
//! | cleanup | `AutoRemove`; [`SandboxControl::kill`](crate::SandboxControl::kill) and dropping the control force-remove; containers of a host that died are removed by [`DockerRuntime::remove_orphans`] (they carry [`LABEL_MANAGED`] and [`LABEL_HOST`]) |
//!
//! The agent's stdio is the container's attach stream, opened before the container starts
//! so no output is lost, demultiplexed into two in-memory pipes. Closing (dropping) the
//! sandbox's stdin half-closes the attach connection; with `StdinOnce` the engine then
//! closes the agent's stdin, as a process pipe would.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount as EngineMount, MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::bwrap::{ValidSpec, validate};
use crate::user::SandboxUser;
use crate::{AGENT_BINARY_PATH, Runtime, SandboxError, SandboxProcess, SandboxSpec};

/// Label set to `true` on every container this runtime creates.
pub const LABEL_MANAGED: &str = "nanoclaw.managed";
/// Label naming the host (its `host_id`) that created the container.
pub const LABEL_HOST: &str = "nanoclaw.host";
/// Label holding the sandbox name (`spec.name`).
pub const LABEL_SANDBOX: &str = "nanoclaw.sandbox";
/// Image label holding the version of the nanoclaw image.
pub const LABEL_IMAGE_VERSION: &str = "org.nanoclaw.image-version";
/// Container names are `nanoclaw-<sandbox name>`.
pub const CONTAINER_PREFIX: &str = "nanoclaw-";

use crate::image::IMAGE_VERSION;

const RUNTIME: &str = "docker";
const HOSTNAME: &str = "nanoclaw";
/// Kernel interfaces under `/proc` a sandbox may read but never write (`core_pattern`,
/// sysrq, IRQ affinity...). The same list as the native runtime's.
pub const PROC_READ_ONLY: &[&str] = crate::bwrap::PROC_READ_ONLY;
/// tmpfs options: `noexec` so nothing downloaded into scratch space is run from there.
/// Docker copies the mode of the image's directory onto the tmpfs anyway (so the image's
/// `/tmp` must be 1777, as in every base image); Podman honours `mode`.
const TMP_OPTIONS: &str = "rw,noexec,nosuid,nodev,size=256m,mode=1777";
const RUN_OPTIONS: &str = "rw,noexec,nosuid,nodev,size=16m";
/// In-memory buffer of each stdio pipe, like a kernel pipe's.
const PIPE_BUFFER: usize = 64 * 1024;
/// Timeout for each ordinary engine request (until the response headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The wait request's answer comes when the container exits: hours later, maybe.
const WAIT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Oldest Engine API we speak: `next-exit` waits (1.30); Docker 20.10 is 1.41, Podman 1.40+.
const MIN_API: (usize, usize) = (1, 30);
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const PODMAN_ROOT_SOCKET: &str = "/run/podman/podman.sock";

const BUILD_FIX: &str = "Run `nanoclaw image build` to build the agent image";

/// How to reach the engine and what to run.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// The engine's Unix socket; `None` picks one (see [`select_socket`]).
    pub socket: Option<PathBuf>,
    /// The agent image (`name:tag`), built locally by `nanoclaw image build`.
    pub image: String,
    /// CPUs a sandbox may use (fractional); `None` leaves the engine's default.
    pub cpus: Option<f64>,
    /// Identifies this host's containers (label [`LABEL_HOST`]).
    pub host_id: String,
}

/// The Docker (or Podman) runtime.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    socket: PathBuf,
    user: SandboxUser,
    podman: bool,
}

/// The engine socket to use: `$DOCKER_HOST` when it is `unix://…` (even if it does not
/// exist: the user asked for it), else the first existing of `/var/run/docker.sock`,
/// `$XDG_RUNTIME_DIR/podman/podman.sock`, `/run/podman/podman.sock`; else Docker's default
/// (whose absence the connect error then reports).
pub fn select_socket(
    docker_host: Option<&str>,
    xdg_runtime_dir: Option<&str>,
    exists: &dyn Fn(&Path) -> bool,
) -> PathBuf {
    if let Some(path) = docker_host.and_then(|host| host.strip_prefix("unix://"))
        && !path.is_empty()
    {
        return PathBuf::from(path);
    }
    let mut candidates = vec![PathBuf::from(DOCKER_SOCKET)];
    if let Some(dir) = xdg_runtime_dir.filter(|dir| !dir.is_empty()) {
        candidates.push(Path::new(dir).join("podman/podman.sock"));
    }
    candidates.push(PathBuf::from(PODMAN_ROOT_SOCKET));
    candidates
        .iter()
        .find(|candidate| exists(candidate))
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DOCKER_SOCKET))
}

/// What the engine's `/_ping` told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PingInfo {
    /// `Api-Version` header, when present.
    api_version: Option<(usize, usize)>,
    /// Podman answers with a `Libpod-Api-Version` header too.
    podman: bool,
}

/// The engine's `/_ping` did not answer 200.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unexpected answer to /_ping: {status:?}")]
pub(crate) struct PingError {
    /// The response's status line, trimmed.
    status: String,
}

/// Parses a raw HTTP response to `GET /_ping`; `Err` with the status line when not 200.
pub(crate) fn parse_ping(response: &str) -> Result<PingInfo, PingError> {
    let mut lines = response.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.split_whitespace();
    let ok = parts.next().is_some_and(|p| p.starts_with("HTTP/1.")) && parts.next() == Some("200");
    if !ok {
        return Err(PingError {
            status: status.trim().to_owned(),
        });
    }
    let mut info = PingInfo {
        api_version: None,
        podman: false,
    };
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "api-version" {
            info.api_version = parse_api_version(value.trim());
        } else if name == "libpod-api-version" {
            info.podman = true;
        }
    }
    Ok(info)
}

fn parse_api_version(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The API version to speak: the engine's, capped at what bollard knows.
fn client_version(server: Option<(usize, usize)>) -> ClientVersion {
    let ours = (
        bollard::API_DEFAULT_VERSION.major_version,
        bollard::API_DEFAULT_VERSION.minor_version,
    );
    // An engine that does not say is old (Docker 20.10 and Podman say): speak 1.41.
    let (major_version, minor_version) = server.unwrap_or((1, 41)).min(ours);
    ClientVersion {
        major_version,
        minor_version,
    }
}

/// `GET /_ping` over the socket by hand: unlike bollard's ping it is unversioned (an engine
/// rejects a client version newer than its own) and it shows the headers.
async fn raw_ping(socket: &Path) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await?;
        stream
            .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(PING_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", PING_TIMEOUT.as_secs()),
            )
        })?
}

fn engine_fix(socket: &Path) -> String {
    format!(
        "Start the engine (`sudo systemctl start docker`, or for Podman \
         `systemctl --user start podman.socket`), make sure this user may use {} (e.g. add it \
         to the `docker` group), or point DOCKER_HOST=unix:///path/to/socket at the right socket",
        socket.display()
    )
}

fn unavailable(reason: String, fix: String) -> SandboxError {
    SandboxError::Unavailable {
        runtime: RUNTIME,
        reason,
        fix,
    }
}

fn spawn_error(message: String) -> SandboxError {
    SandboxError::Spawn {
        runtime: RUNTIME,
        source: std::io::Error::other(message),
    }
}

/// Whether the error means the engine could not be reached (rather than refused a request).
fn is_unreachable(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::SocketNotFoundError(_)
            | EngineError::HyperLegacyError { .. }
            | EngineError::HyperResponseError { .. }
            | EngineError::IOError { .. }
            | EngineError::RequestTimeoutError
    )
}

fn status_of(error: &EngineError) -> Option<u16> {
    match error {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl DockerRuntime {
    /// Connects to the engine and checks it answers. Does not check the image: call
    /// [`Runtime::probe`] for that.
    pub async fn connect(config: DockerConfig) -> Result<DockerRuntime, SandboxError> {
        let socket = match &config.socket {
            Some(socket) => socket.clone(),
            None => select_socket(
                std::env::var("DOCKER_HOST").ok().as_deref(),
                std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
                &|path: &Path| path.exists(),
            ),
        };
        let info = ping(&socket).await?;
        if let Some(version) = info.api_version
            && version < MIN_API
        {
            return Err(unavailable(
                format!(
                    "the engine at {} speaks Engine API {}.{}, older than the {}.{} needed",
                    socket.display(),
                    version.0,
                    version.1,
                    MIN_API.0,
                    MIN_API.1
                ),
                "Upgrade Docker (20.10 or newer) or Podman (3 or newer)".to_string(),
            ));
        }
        let socket_text = socket.to_str().ok_or_else(|| {
            unavailable(
                format!("engine socket path {} is not UTF-8", socket.display()),
                "Set DOCKER_HOST=unix:///path/to/socket to a UTF-8 path".to_string(),
            )
        })?;
        let docker = Docker::connect_with_unix(
            socket_text,
            REQUEST_TIMEOUT.as_secs(),
            &client_version(info.api_version),
        )
        .map_err(|error| {
            unavailable(
                format!("connecting to {} failed: {error}", socket.display()),
                engine_fix(&socket),
            )
        })?;
        let user = SandboxUser::for_this_host();
        tracing::debug!(socket = %socket.display(), podman = info.podman, api = ?info.api_version, "container engine answers");
        Ok(DockerRuntime {
            docker,
            config,
            socket,
            user,
            podman: info.podman,
        })
    }

    /// The image sandboxes run.
    pub fn image(&self) -> &str {
        &self.config.image
    }

    /// The socket in use.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Force-removes this host's containers (labels [`LABEL_MANAGED`]`=true` and
    /// [`LABEL_HOST`]` = host_id`) that are not in `keep`. `keep` may hold sandbox names
    /// (`spec.name`) or container names (`nanoclaw-…`). Returns how many were removed.
    pub async fn remove_orphans(&self, keep: &HashSet<String>) -> Result<usize, SandboxError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_HOST}={}", self.config.host_id),
            ],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|error| self.engine_error("listing containers", error))?;
        let mut removed = 0;
        for container in containers {
            let Some(id) = container.id.as_deref() else {
                continue;
            };
            let names = container.names.unwrap_or_default();
            let labels = container.labels.unwrap_or_default();
            if !is_orphan(&names, &labels, &self.config.host_id, keep) {
                continue;
            }
            match force_remove(&self.docker, id).await {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(container = ?names, "removed orphaned sandbox container");
                }
                Err(error) if is_unreachable(&error) => {
                    return Err(self.engine_error("removing an orphaned container", error));
                }
                Err(error) => {
                    tracing::warn!(container = ?names, %error, "could not remove orphaned sandbox container");
                }
            }
        }
        Ok(removed)
    }

    fn engine_error(&self, what: &str, error: EngineError) -> SandboxError {
        if is_unreachable(&error) {
            unavailable(
                format!(
                    "{what}: the engine at {} did not answer ({error})",
                    self.socket.display()
                ),
                engine_fix(&self.socket),
            )
        } else {
            spawn_error(format!("{what}: {error}"))
        }
    }

    /// Creates, attaches to and starts the container for a validated spec.
    async fn start(&self, valid: &ValidSpec) -> Result<SandboxProcess, SandboxError> {
        let name = format!("{CONTAINER_PREFIX}{}", valid.name);
        let body = container_config(valid, &self.config, self.user, self.podman);
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|error| match &error {
                EngineError::DockerResponseServerError {
                    status_code: 404,
                    message,
                } if message.contains("image") => unavailable(
                    format!("image {} is not available: {message}", self.config.image),
                    BUILD_FIX.to_string(),
                ),
                _ => self.engine_error(&format!("creating container {name}"), error),
            })?;
        for warning in &created.warnings {
            tracing::warn!(container = %name, %warning, "engine warning on create");
        }
        let id = created.id;
        match self.attach_and_start(&id).await {
            Ok(process) => {
                tracing::debug!(sandbox = %valid.name, container = %id, "sandbox container started");
                Ok(process)
            }
            Err(error) => {
                // Never started, so AutoRemove will not remove it.
                if let Err(remove) = force_remove(&self.docker, &id).await {
                    tracing::warn!(container = %name, error = %remove, "removing a container that failed to start");
                }
                Err(error)
            }
        }
    }

    async fn attach_and_start(&self, id: &str) -> Result<SandboxProcess, SandboxError> {
        // The wait is registered first so the exit code is known even when the agent exits
        // at once; `next-exit` also returns when the container is removed.
        let (exit_tx, exit_rx) = watch::channel(None);
        let waiter = self.docker.clone().with_timeout(WAIT_TIMEOUT);
        let wait_id = id.to_string();
        tokio::spawn(async move {
            let code = wait_for_exit(&waiter, &wait_id).await;
            let _ = exit_tx.send(Some(code));
        });

        let attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stream: true,
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(|error| self.engine_error("attaching to the container", error))?;

        let (stdout_reader, stdout_writer) = tokio::io::duplex(PIPE_BUFFER);
        let (stderr_reader, stderr_writer) = tokio::io::duplex(PIPE_BUFFER);
        tokio::spawn(pump_output(attached.output, stdout_writer, stderr_writer));
        let (stdin_writer, stdin_reader) = tokio::io::duplex(PIPE_BUFFER);
        tokio::spawn(pump_input(stdin_reader, attached.input));

        self.docker
            .start_container(id, None)
            .await
            .map_err(|error| self.engine_error("starting the container", error))?;

        Ok(SandboxProcess {
            stdin: Box::pin(stdin_writer),
            stdout: Box::pin(stdout_reader),
            stderr: Box::pin(stderr_reader),
            control: Box::new(ContainerControl {
                docker: self.docker.clone(),
                id: id.to_string(),
                exit: exit_rx,
                removed: false,
            }),
        })
    }
}

async fn ping(socket: &Path) -> Result<PingInfo, SandboxError> {
    let response = raw_ping(socket).await.map_err(|error| {
        unavailable(
            format!(
                "the container engine at {} does not answer: {error}",
                socket.display()
            ),
            engine_fix(socket),
        )
    })?;
    parse_ping(&response).map_err(|reason| {
        unavailable(
            format!("the container engine at {}: {reason}", socket.display()),
            engine_fix(socket),
        )
    })
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        RUNTIME
    }

    async fn probe(&self) -> Result<(), SandboxError> {
        ping(&self.socket).await?;
        let image = match self.docker.inspect_image(&self.config.image).await {
            Ok(image) => image,
            Err(error) if status_of(&error) == Some(404) => {
                return Err(unavailable(
                    format!("image {} does not exist locally", self.config.image),
                    BUILD_FIX.to_string(),
                ));
            }
            Err(error) => {
                return Err(unavailable(
                    format!("inspecting image {} failed: {error}", self.config.image),
                    engine_fix(&self.socket),
                ));
            }
        };
        let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
        if let Some(version) = labels.get(LABEL_IMAGE_VERSION)
            && version != IMAGE_VERSION
        {
            return Err(unavailable(
                format!(
                    "image {} is outdated (version {version}, this nanoclaw needs {IMAGE_VERSION})",
                    self.config.image
                ),
                BUILD_FIX.to_string(),
            ));
        }
        Ok(())
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError> {
        let valid = validate(spec)?;
        check_utf8(&valid)?;
        self.user.check()?;
        if self.user.dedicated {
            let mounts = valid.mounts.clone();
            let user = self.user;
            tokio::task::spawn_blocking(move || crate::user::hand_over(&mounts, user))
                .await
                .map_err(|error| spawn_error(format!("ownership task failed: {error}")))??;
        }
        self.start(&valid).await
    }

    /// Read from the image's dpkg database through a container that is created, never
    /// started, and removed again. An image without dpkg (the minimal one) has no packages.
    async fn installed_packages(
        &self,
    ) -> Result<Option<std::collections::BTreeSet<String>>, SandboxError> {
        let fail = |reason: String| SandboxError::Packages {
            runtime: RUNTIME,
            reason,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("{CONTAINER_PREFIX}packages-{nanos}");
        let body = ContainerCreateBody {
            image: Some(self.config.image.clone()),
            entrypoint: Some(Vec::new()),
            cmd: Some(vec!["true".into()]),
            network_disabled: Some(true),
            // Ours, so a process that dies before removing it leaves nothing for good: the
            // next start's orphan sweep takes it.
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_HOST.to_string(), self.config.host_id.clone()),
            ])),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| fail(format!("image {}: {e}", self.config.image)))?;
        let read = read_file(&self.docker, &created.id, crate::packages::DPKG_STATUS).await;
        if let Err(error) = force_remove(&self.docker, &created.id).await {
            tracing::warn!(container = %name, %error, "removing the package-list container");
        }
        match read.map_err(|e| fail(format!("image {}: {e}", self.config.image)))? {
            Some(text) => Ok(Some(crate::packages::parse_dpkg_status(&text))),
            None => Ok(Some(Default::default())),
        }
    }
}

/// The largest dpkg database read from an image (a full desktop's is ~10 MB).
const MAX_STATUS_BYTES: usize = 64 * 1024 * 1024;

/// One text file of a (stopped) container, or `None` when it has no such file.
async fn read_file(docker: &Docker, id: &str, path: &str) -> Result<Option<String>, String> {
    let mut stream = docker.download_from_container(
        id,
        Some(bollard::query_parameters::DownloadFromContainerOptions {
            path: path.to_owned(),
        }),
    );
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                archive.extend_from_slice(&bytes);
                if archive.len() > MAX_STATUS_BYTES {
                    return Err(format!("{path} is larger than {MAX_STATUS_BYTES} bytes"));
                }
            }
            Err(error) if status_of(&error) == Some(404) => return Ok(None),
            Err(error) => return Err(format!("reading {path}: {error}")),
        }
    }
    let mut entries = tar::Archive::new(archive.as_slice());
    let mut entries = entries
        .entries()
        .map_err(|e| format!("reading the archive of {path}: {e}"))?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry.map_err(|e| format!("reading the archive of {path}: {e}"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text)
        .map_err(|e| format!("reading {path}: {e}"))?;
    Ok(Some(text))
}

/// The container's configuration. Pure: everything host-dependent is passed in.
pub(crate) fn container_config(
    spec: &ValidSpec,
    config: &DockerConfig,
    user: SandboxUser,
    podman: bool,
) -> ContainerCreateBody {
    let mut mounts: Vec<EngineMount> = spec
        .mounts
        .iter()
        .map(|mount| bind(&mount.host_path, &mount.sandbox_path, !mount.writable))
        .collect();
    mounts.push(bind(&spec.agent_binary, Path::new(AGENT_BINARY_PATH), true));
    let limits = &spec.limits;
    let ulimit = |name: &str, value: u64| ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(clamp_i64(value)),
        hard: Some(clamp_i64(value)),
    };
    let host_config = HostConfig {
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([
            ("/tmp".to_string(), TMP_OPTIONS.to_string()),
            ("/run".to_string(), RUN_OPTIONS.to_string()),
        ])),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        // The agent is its own (non-dumpable) init; see the module docs.
        init: Some(false),
        network_mode: Some("none".to_string()),
        ipc_mode: Some("private".to_string()),
        // The engine's defaults, stated so they hold whatever the engine (Podman, an old
        // Docker) would pick: the kernel knobs under /proc stay read-only.
        readonly_paths: Some(PROC_READ_ONLY.iter().map(|path| path.to_string()).collect()),
        pids_limit: Some(clamp_i64(limits.max_processes)),
        memory: Some(clamp_i64(limits.max_memory_bytes)),
        memory_swap: Some(clamp_i64(limits.max_memory_bytes)),
        nano_cpus: config
            .cpus
            .filter(|cpus| cpus.is_finite() && *cpus > 0.0)
            .map(|cpus| (cpus * 1e9) as i64),
        ulimits: Some(vec![
            ulimit("nofile", limits.max_open_files),
            ulimit("fsize", limits.max_file_bytes),
            ulimit("core", 0),
        ]),
        auto_remove: Some(true),
        mounts: Some(mounts),
        // Rootless Podman maps container uids to subordinate ids; keep-id maps the host
        // user to itself so the user's mounts stay writable.
        userns_mode: (podman && !user.dedicated).then(|| "keep-id".to_string()),
        ..Default::default()
    };
    let mut cmd = vec![AGENT_BINARY_PATH.to_string()];
    cmd.extend(spec.args.iter().cloned());
    ContainerCreateBody {
        image: Some(config.image.clone()),
        hostname: Some(HOSTNAME.to_string()),
        user: Some(format!("{}:{}", user.uid, user.gid)),
        env: Some(
            spec.env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        working_dir: Some(spec.workdir.to_string_lossy().into_owned()),
        // An empty entrypoint resets the image's: the command runs as is.
        entrypoint: Some(vec![String::new()]),
        cmd: Some(cmd),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_HOST.to_string(), config.host_id.clone()),
            (LABEL_SANDBOX.to_string(), spec.name.clone()),
        ])),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn bind(source: &Path, target: &Path, read_only: bool) -> EngineMount {
    EngineMount {
        source: Some(source.to_string_lossy().into_owned()),
        target: Some(target.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whether a listed container (already filtered on our labels by the engine) should go.
pub(crate) fn is_orphan(
    names: &[String],
    labels: &HashMap<String, String>,
    host_id: &str,
    keep: &HashSet<String>,
) -> bool {
    if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true")
        || labels.get(LABEL_HOST).map(String::as_str) != Some(host_id)
    {
        return false;
    }
    let kept_by_name = names.iter().any(|name| {
        let name = name.trim_start_matches('/');
        keep.contains(name)
            || name
                .strip_prefix(CONTAINER_PREFIX)
                .is_some_and(|sandbox| keep.contains(sandbox))
    });
    let kept_by_label = labels
        .get(LABEL_SANDBOX)
        .is_some_and(|sandbox| keep.contains(sandbox));
    !(kept_by_name || kept_by_label)
}

/// Waits for the container's next exit (or its removal); its exit code when known.
async fn wait_for_exit(docker: &Docker, id: &str) -> Option<i32> {
    let mut stream = docker.wait_container(
        id,
        Some(WaitContainerOptions {
            condition: "next-exit".to_string(),
        }),
    );
    match stream.next().await {
        Some(Ok(response)) => i32::try_from(response.status_code).ok(),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(EngineError::DockerContainerWaitError { code, .. })) => i32::try_from(code).ok(),
        Some(Err(error)) => {
            tracing::warn!(container = %id, %error, "waiting for the sandbox container failed");
            None
        }
        None => None,
    }
}

/// Copies the demultiplexed attach stream into the stdout and stderr pipes. A pipe whose
/// reader is gone is skipped; the other keeps flowing.
async fn pump_output(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, EngineError>> + Send>,
    >,
    mut stdout: tokio::io::DuplexStream,
    mut stderr: tokio::io::DuplexStream,
) {
    let (mut stdout_open, mut stderr_open) = (true, true);
    while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                if stdout_open && stdout.write_all(&message).await.is_err() {
                    stdout_open = false;
                }
            }
            Ok(LogOutput::StdErr { message }) => {
                if stderr_open && stderr.write_all(&message).await.is_err() {
                    stderr_open = false;
                }
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(error) => {
                tracing::debug!(%error, "sandbox attach stream ended with an error");
                break;
            }
        }
    }
    // Dropping the writers gives the readers EOF.
}

/// Copies what the host writes to the attach connection; on EOF half-closes it so the
/// engine closes the agent's stdin (StdinOnce).
async fn pump_input(
    mut from_host: tokio::io::DuplexStream,
    mut to_container: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    if let Err(error) = tokio::io::copy(&mut from_host, &mut to_container).await {
        tracing::debug!(%error, "sandbox stdin closed");
    }
    let _ = to_container.shutdown().await;
}

/// Kills and removes a container; one that is already gone (or being removed by
/// AutoRemove) counts as removed.
async fn force_remove(docker: &Docker, id: &str) -> Result<(), EngineError> {
    let result = docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            }),
        )
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(error) if status_of(&error) == Some(404) => Ok(()),
        Err(error) if status_of(&error) == Some(409) => {
            // Removal already in progress: wait until it is done, briefly.
            for _ in 0..50 {
                match docker.inspect_container(id, None).await {
                    Err(error) if status_of(&error) == Some(404) => return Ok(()),
                    Err(error) if is_unreachable(&error) => return Err(error),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Err(error)
        }
        Err(error) => Err(error),
    }
}

/// One running container.
struct ContainerControl {
    docker: Docker,
    id: String,
    /// `None` while running; `Some(exit code)` once it exited or was removed.
    exit: watch::Receiver<Option<Option<i32>>>,
    /// `kill` already removed it.
    removed: bool,
}

#[async_trait]
impl crate::SandboxControl for ContainerControl {
    fn is_running(&mut self) -> bool {
        !self.removed && self.exit.borrow().is_none()
    }

    async fn wait(&mut self) -> Option<i32> {
        match self.exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.flatten(),
            // The wait task is gone without an answer.
            Err(_) => None,
        }
    }

    async fn kill(&mut self) {
        if self.removed {
            return;
        }
        match force_remove(&self.docker, &self.id).await {
            Ok(()) => self.removed = true,
            Err(error) => {
                tracing::warn!(container = %self.id, %error, "could not remove the sandbox container");
            }
        }
    }
}

impl Drop for ContainerControl {
    fn drop(&mut self) {
        if self.removed || self.exit.borrow().is_some() {
            // Gone already, or exited and left to AutoRemove.
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(container = %self.id, "no async runtime to remove the sandbox container; remove_orphans will");
            return;
        };
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        handle.spawn(async move {
            if let Err(error) = force_remove(&docker, &id).await {
                tracing::warn!(container = %id, %error, "could not remove a dropped sandbox container");
            }
        });
    }
}

/// The engine takes paths as JSON strings: a host path that is not UTF-8 cannot be named.
fn check_utf8(spec: &ValidSpec) -> Result<(), SandboxError> {
    let paths = spec
        .mounts
        .iter()
        .map(|mount| &mount.host_path)
        .chain(std::iter::once(&spec.agent_binary));
    for path in paths {
        if std::str::from_utf8(path.as_os_str().as_bytes()).is_err() {
            return Err(SandboxError::InvalidSpec(format!(
                "host path {} is not UTF-8, which the container engine cannot take",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Mount};

    #[test]
    fn socket_selection_order() {
        let none = |_: &Path| false;
        let all = |_: &Path| true;
        assert_eq!(
            select_socket(
                Some("unix:///custom/docker.sock"),
                Some("/run/user/1000"),
                &none
            ),
            PathBuf::from("/custom/docker.sock"),
            "an explicit unix DOCKER_HOST wins even when absent"
        );
        assert_eq!(
            select_socket(Some("tcp://1.2.3.4:2375"), None, &all),
            PathBuf::from(DOCKER_SOCKET),
            "a non-unix DOCKER_HOST is ignored"
        );
        assert_eq!(
            select_socket(None, Some("/run/user/1000"), &all),
            PathBuf::from(DOCKER_SOCKET)
        );
        let podman_user = |p: &Path| p == Path::new("/run/user/1000/podman/podman.sock");
        assert_eq!(
            select_socket(None, Some("/run/user/1000"), &podman_user),
            PathBuf::from("/run/user/1000/podman/podman.sock")
        );
        let podman_root = |p: &Path| p == Path::new(PODMAN_ROOT_SOCKET);
        assert_eq!(
            select_socket(None, Some("/run/user/1000"), &podman_root),
            PathBuf::from(PODMAN_ROOT_SOCKET)
        );
        assert_eq!(
            select_socket(Some(""), Some(""), &podman_root),
            PathBuf::from(PODMAN_ROOT_SOCKET)
        );
        assert_eq!(
            select_socket(None, None, &none),
            PathBuf::from(DOCKER_SOCKET),
            "nothing exists: Docker's default, whose absence connect reports"
        );
    }

    #[test]
    fn ping_headers_give_version_and_engine_kind() {
        let docker = "HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nDocker-Experimental: false\r\n\
                      Content-Length: 2\r\n\r\nOK";
        assert_eq!(
            parse_ping(docker),
            Ok(PingInfo {
                api_version: Some((1, 41)),
                podman: false
            })
        );
        let podman = "HTTP/1.1 200 OK\r\napi-version: 1.41\r\nLibpod-Api-Version: 4.3.1\r\n\r\nOK";
        assert_eq!(
            parse_ping(podman),
            Ok(PingInfo {
                api_version: Some((1, 41)),
                podman: true
            })
        );
        let error = parse_ping("HTTP/1.0 500 Internal Server Error\r\n\r\n")
            .expect_err("500")
            .to_string();
        assert!(error.contains("500"), "{error}");
        assert!(parse_ping("garbage").is_err());
        assert_eq!(parse_api_version("1.x"), None);
    }

    #[test]
    fn client_version_is_capped_by_both_sides() {
        let v = client_version(Some((1, 41)));
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        let v = client_version(Some((1, 99)));
        assert_eq!(
            (v.major_version, v.minor_version),
            (
                bollard::API_DEFAULT_VERSION.major_version,
                bollard::API_DEFAULT_VERSION.minor_version
            )
        );
        let v = client_version(None);
        assert_eq!((v.major_version, v.minor_version), (1, 41));
    }

    fn spec() -> ValidSpec {
        ValidSpec {
            name: "g1-abc".into(),
            agent_binary: "/host/agent".into(),
            args: vec!["--serve".into()],
            mounts: vec![
                Mount {
                    host_path: "/host/group".into(),
                    sandbox_path: "/workspace/group".into(),
                    writable: true,
                },
                Mount {
                    host_path: "/host/global".into(),
                    sandbox_path: "/workspace/global".into(),
                    writable: false,
                },
            ],
            env: vec![("HOME".into(), "/workspace/group".into())],
            workdir: "/workspace/group".into(),
            limits: Limits {
                max_processes: 64,
                max_memory_bytes: 512 * 1024 * 1024,
                max_file_bytes: 1024,
                max_open_files: 100,
            },
        }
    }

    fn config(cpus: Option<f64>) -> DockerConfig {
        DockerConfig {
            socket: None,
            image: "nanoclaw-agent:latest".into(),
            cpus,
            host_id: "host-1".into(),
        }
    }

    const USER: SandboxUser = SandboxUser {
        uid: crate::user::FALLBACK_ID,
        gid: crate::user::FALLBACK_ID,
        dedicated: true,
    };

    #[test]
    fn container_config_locks_the_container_down() {
        let body = container_config(&spec(), &config(Some(1.5)), USER, false);
        let host = body.host_config.clone().expect("host config");
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.init, Some(false));
        assert_eq!(host.auto_remove, Some(true));
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.memory, Some(512 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory, "no swap");
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.userns_mode, None);
        assert_eq!(
            host.readonly_paths,
            Some(
                [
                    "/proc/sys",
                    "/proc/sysrq-trigger",
                    "/proc/irq",
                    "/proc/bus",
                    "/proc/fs"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        let tmpfs = host.tmpfs.expect("tmpfs");
        assert!(tmpfs["/tmp"].contains("size=256m") && tmpfs["/tmp"].contains("noexec"));
        assert!(tmpfs.contains_key("/run"));
        let ulimits: Vec<(String, i64, i64)> = host
            .ulimits
            .expect("ulimits")
            .into_iter()
            .map(|u| {
                (
                    u.name.unwrap_or_default(),
                    u.soft.unwrap_or(-1),
                    u.hard.unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(
            ulimits,
            vec![
                ("nofile".to_string(), 100, 100),
                ("fsize".to_string(), 1024, 1024),
                ("core".to_string(), 0, 0)
            ]
        );
        let mounts: Vec<(String, String, bool)> = host
            .mounts
            .expect("mounts")
            .into_iter()
            .map(|m| {
                assert_eq!(m.typ, Some(MountType::BIND));
                (
                    m.source.unwrap_or_default(),
                    m.target.unwrap_or_default(),
                    m.read_only.unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            mounts,
            vec![
                ("/host/group".into(), "/workspace/group".into(), false),
                ("/host/global".into(), "/workspace/global".into(), true),
                ("/host/agent".into(), AGENT_BINARY_PATH.into(), true),
            ]
        );

        assert_eq!(body.user.as_deref(), Some("2000000000:2000000000"));
        assert_eq!(body.env, Some(vec!["HOME=/workspace/group".to_string()]));
        assert_eq!(body.working_dir.as_deref(), Some("/workspace/group"));
        assert_eq!(body.entrypoint, Some(vec![String::new()]));
        assert_eq!(
            body.cmd,
            Some(vec![AGENT_BINARY_PATH.to_string(), "--serve".to_string()])
        );
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.tty, Some(false));
        let labels = body.labels.expect("labels");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_HOST], "host-1");
        assert_eq!(labels[LABEL_SANDBOX], "g1-abc");
    }

    #[test]
    fn cpus_unset_or_nonsense_leave_the_default() {
        for cpus in [None, Some(0.0), Some(-1.0), Some(f64::NAN)] {
            let body = container_config(&spec(), &config(cpus), USER, false);
            assert_eq!(body.host_config.expect("host").nano_cpus, None, "{cpus:?}");
        }
    }

    #[test]
    fn rootless_podman_keeps_the_host_user_id() {
        let user = SandboxUser::for_host(1234, 99, None);
        let body = container_config(&spec(), &config(None), user, true);
        assert_eq!(body.user.as_deref(), Some("1234:99"));
        assert_eq!(
            body.host_config.expect("host").userns_mode.as_deref(),
            Some("keep-id")
        );
        let body = container_config(&spec(), &config(None), USER, true);
        assert_eq!(body.host_config.expect("host").userns_mode, None);
    }

    #[test]
    fn orphans_are_ours_and_not_kept() {
        let labels = |host: &str, sandbox: &str| {
            HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_HOST.to_string(), host.to_string()),
                (LABEL_SANDBOX.to_string(), sandbox.to_string()),
            ])
        };
        let keep = HashSet::from(["live".to_string(), "nanoclaw-live2".to_string()]);
        let names = |n: &str| vec![format!("/{CONTAINER_PREFIX}{n}")];
        assert!(is_orphan(&names("dead"), &labels("h", "dead"), "h", &keep));
        assert!(!is_orphan(&names("live"), &labels("h", "live"), "h", &keep));
        assert!(!is_orphan(
            &names("live2"),
            &labels("h", "live2"),
            "h",
            &keep
        ));
        assert!(
            !is_orphan(&names("dead"), &labels("other", "dead"), "h", &keep),
            "another host's container"
        );
        assert!(
            !is_orphan(&names("x"), &HashMap::new(), "h", &keep),
            "not ours"
        );
    }

    #[test]
    fn image_version_label_matches_the_builder() {
        assert_eq!(LABEL_IMAGE_VERSION, crate::image::LABEL_VERSION);
    }
}

//! The agent container image: building it and checking that the one on the engine is current.
//!
//! Three ways to build, all through the Engine API:
//! - [`ImageKind::Debian`]: `container/Containerfile` on top of `debian:bookworm-slim` (or any
//!   `--base`), which must exist locally or be pullable.
//! - [`ImageKind::Debootstrap`]: `debootstrap --variant=minbase` makes a local Debian rootfs that is
//!   imported as [`DEBOOTSTRAP_BASE_TAG`], then the Containerfile is built on it. Needs no registry,
//!   only Debian's package mirror.
//! - [`ImageKind::Minimal`]: a rootfs holding the host's static busybox, imported directly. Needs
//!   nothing from the network; what CI uses.
//!
//! Every image carries [`LABEL_VERSION`]`=`[`IMAGE_VERSION`]; [`image_status`] compares it so the
//! host can say "rebuild" instead of running an agent in a stale image. The agent runner itself is
//! never in the image: the runtime mounts it read-only at spawn.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// The Containerfile compiled into nanoclaw; used when [`ImageBuild::containerfile`] is `None`.
pub const CONTAINERFILE: &str = include_str!("../../../container/Containerfile");

/// Bump when the minimal rootfs layout built by [`minimal_rootfs`] changes, so that images built
/// by an older nanoclaw count as outdated.
const MINIMAL_RECIPE: &str = "minimal-rootfs-1";

/// Version of the image recipe: a hash of the Containerfile and the minimal recipe. Images whose
/// [`LABEL_VERSION`] differs are outdated.
pub const IMAGE_VERSION: &str = match std::str::from_utf8(&VERSION_HEX) {
    Ok(s) => s,
    Err(_) => "invalid",
};

const VERSION_HEX: [u8; 16] = hex16(fnv1a(
    MINIMAL_RECIPE.as_bytes(),
    fnv1a(CONTAINERFILE.as_bytes(), 0xcbf2_9ce4_8422_2325),
));

/// FNV-1a, computed at compile time (a content fingerprint, not a security boundary).
const fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn hex16(v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

/// The tag nanoclaw runs agents in unless configured otherwise.
pub const DEFAULT_TAG: &str = "nanoclaw-agent:latest";
/// The default base image for the Containerfile.
pub const DEFAULT_BASE: &str = "debian:bookworm-slim";
/// The tag of the base made by `--debootstrap`.
pub const DEBOOTSTRAP_BASE_TAG: &str = "nanoclaw-base:bookworm";
/// Debian release debootstrap fetches.
pub const DEBOOTSTRAP_SUITE: &str = "bookworm";
/// Mirror debootstrap uses unless told otherwise.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Label holding [`IMAGE_VERSION`].
pub const LABEL_VERSION: &str = "org.nanoclaw.image-version";
/// Label saying how the image was made: `minimal` or `debian`.
pub const LABEL_KIND: &str = "org.nanoclaw.image-kind";
/// Where the agent user's uid/gid is fixed; the runtime runs the agent as this user.
pub const AGENT_UID: u32 = 1000;

/// How to make the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// Busybox only, from the host's static busybox; no network at all.
    Minimal,
    /// The Containerfile on `base` (local or pullable).
    Debian,
    /// The Containerfile on a base made locally by debootstrap.
    Debootstrap,
}

impl ImageKind {
    /// The value of [`LABEL_KIND`] for images of this kind.
    pub fn label(self) -> &'static str {
        match self {
            ImageKind::Minimal => "minimal",
            ImageKind::Debian | ImageKind::Debootstrap => "debian",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageBuild {
    /// The tag to give the image, e.g. [`DEFAULT_TAG`].
    pub tag: String,
    /// Base image for [`ImageKind::Debian`] (ignored by the other kinds).
    pub base: String,
    pub kind: ImageKind,
    /// A Containerfile to build instead of the compiled-in [`CONTAINERFILE`]. Note that the
    /// version label still says [`IMAGE_VERSION`].
    pub containerfile: Option<PathBuf>,
    /// Debian mirror for [`ImageKind::Debootstrap`]; [`DEFAULT_MIRROR`] when `None`.
    pub mirror: Option<String>,
    /// Static busybox for [`ImageKind::Minimal`]; `/bin/busybox` or `/usr/bin/busybox` when `None`.
    pub busybox: Option<PathBuf>,
    /// Debian packages to install on top of the Containerfile's own (skills' `packages`):
    /// passed as the build argument `EXTRA_PACKAGES`. Not for [`ImageKind::Minimal`].
    pub packages: Vec<String>,
}

impl Default for ImageBuild {
    fn default() -> Self {
        Self {
            tag: DEFAULT_TAG.into(),
            base: DEFAULT_BASE.into(),
            kind: ImageKind::Debian,
            containerfile: None,
            mirror: None,
            busybox: None,
            packages: Vec::new(),
        }
    }
}

/// Progress of a build, for the caller to display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A new step started: a Containerfile step (`Step 3/7 : RUN …`) or a phase of ours
    /// (`debootstrap bookworm`, `import rootfs`). `index` is `(n, total)` when known.
    Step {
        index: Option<(u32, u32)>,
        text: String,
    },
    /// One line of output from the current step.
    Log(String),
    /// The image is built and tagged.
    Done { tag: String, id: Option<String> },
}

/// The state of an image on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageStatus {
    /// No image with that tag.
    Missing,
    /// The image exists but was built from another recipe. `found` is its version label, or
    /// `"unlabelled"` when it has none (not built by nanoclaw).
    Outdated { found: String },
    /// Built by this nanoclaw's recipe.
    Current,
}

impl ImageStatus {
    /// What the user should do about this status, or `None` when the image is current.
    pub fn remedy(&self, tag: &str) -> Option<String> {
        let tag_arg = if tag == DEFAULT_TAG {
            String::new()
        } else {
            format!(" --tag {tag}")
        };
        match self {
            ImageStatus::Current => None,
            ImageStatus::Missing => Some(format!(
                "the agent image {tag} does not exist; build it with `nanoclaw image build{tag_arg}` \
                 (add --debootstrap or --minimal when no registry is reachable)"
            )),
            ImageStatus::Outdated { found } => Some(format!(
                "the agent image {tag} is outdated (version {found}, this nanoclaw needs \
                 {IMAGE_VERSION}); rebuild it with `nanoclaw image build{tag_arg}`"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "no container engine answers ({tried}): {reason}; start Docker (or Podman's socket) or set DOCKER_HOST=unix:///path/to/socket"
    )]
    NoEngine { tried: String, reason: String },
    #[error("the container engine failed to {what}: {source}")]
    Engine {
        what: String,
        #[source]
        source: EngineError,
    },
    #[error(
        "the base image {base} is not available locally and cannot be pulled ({reason}); without registry access build with `nanoclaw image build --debootstrap` (a local Debian base made by debootstrap) or `nanoclaw image build --minimal` (busybox only)"
    )]
    BaseUnavailable { base: String, reason: String },
    #[error("building {tag} failed: {message}")]
    BuildFailed { tag: String, message: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no static busybox found ({detail}); install Debian's busybox-static (`apt-get install busybox-static`)"
    )]
    NoBusybox { detail: String },
    #[error(
        "debootstrap is not installed; install it (`apt-get install debootstrap`) or use `nanoclaw image build --minimal`"
    )]
    NoDebootstrap,
    #[error(
        "debootstrap must run as root (it creates device nodes and chroots); run `sudo nanoclaw image build --debootstrap`, or use `--minimal`"
    )]
    DebootstrapNeedsRoot,
    #[error("debootstrap failed ({status}); its last output:\n{output}")]
    DebootstrapFailed { status: String, output: String },
    #[error(
        "the minimal image is busybox only and cannot install packages ({packages}); build the Debian image (`nanoclaw image build`, or `--debootstrap` without a registry)"
    )]
    MinimalHasNoPackages { packages: String },
    #[error("{0}")]
    BadPackage(String),
    #[error("the built image {tag} is {status:?}, expected Current")]
    NotCurrentAfterBuild { tag: String, status: ImageStatus },
}

fn engine(what: impl Into<String>) -> impl FnOnce(EngineError) -> ImageError {
    let what = what.into();
    move |source| ImageError::Engine { what, source }
}

/// Seconds a single engine request may take to answer (image imports of a whole rootfs are big).
const ENGINE_TIMEOUT_SECS: u64 = 900;

/// Connects to the container engine on the socket the Docker runtime would use
/// ([`crate::docker::select_socket`]: `$DOCKER_HOST` when `unix://…`, else
/// `/var/run/docker.sock`, else Podman's rootless then rootful socket) and negotiates the API
/// version so older engines (Docker 20.10 speaks 1.41) accept our requests.
pub async fn connect() -> Result<Docker, ImageError> {
    let socket = crate::docker::select_socket(
        std::env::var("DOCKER_HOST").ok().as_deref(),
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
        &|path: &Path| path.exists(),
    );
    let no_engine = |reason: String| ImageError::NoEngine {
        tried: socket.display().to_string(),
        reason,
    };
    let Some(path) = socket.to_str() else {
        return Err(no_engine("the socket path is not UTF-8".into()));
    };
    if !socket.exists() {
        return Err(no_engine("no such socket".into()));
    }
    let docker = Docker::connect_with_unix(path, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        .map_err(|e| no_engine(e.to_string()))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| no_engine(e.to_string()))
}

/// The state of `tag` on the engine. Engine errors other than "no such image" are logged and
/// reported as [`ImageStatus::Missing`]; use [`try_image_status`] to tell them apart.
pub async fn image_status(docker: &Docker, tag: &str) -> ImageStatus {
    match try_image_status(docker, tag).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(tag, error = %e, "cannot inspect the agent image");
            ImageStatus::Missing
        }
    }
}

/// Like [`image_status`] but engine failures are errors.
pub async fn try_image_status(docker: &Docker, tag: &str) -> Result<ImageStatus, ImageError> {
    let Some(labels) = image_labels(docker, tag).await? else {
        return Ok(ImageStatus::Missing);
    };
    Ok(match labels.get(LABEL_VERSION) {
        Some(v) if v == IMAGE_VERSION => ImageStatus::Current,
        Some(v) => ImageStatus::Outdated { found: v.clone() },
        None => ImageStatus::Outdated {
            found: "unlabelled".into(),
        },
    })
}

/// The labels of `tag`, or `None` when there is no such image.
pub async fn image_labels(
    docker: &Docker,
    tag: &str,
) -> Result<Option<HashMap<String, String>>, ImageError> {
    match docker.inspect_image(tag).await {
        Ok(inspect) => Ok(Some(
            inspect.config.and_then(|c| c.labels).unwrap_or_default(),
        )),
        Err(EngineError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(engine(format!("inspect image {tag}"))(e)),
    }
}

/// Builds the image described by `build`, reporting progress through `progress`. On success
/// the image is tagged `build.tag` and [`image_status`] says [`ImageStatus::Current`].
pub async fn build(
    docker: &Docker,
    build: &ImageBuild,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<(), ImageError> {
    for p in &build.packages {
        crate::packages::check_package_name(p).map_err(ImageError::BadPackage)?;
    }
    let id = match build.kind {
        ImageKind::Minimal if !build.packages.is_empty() => {
            return Err(ImageError::MinimalHasNoPackages {
                packages: build.packages.join(", "),
            });
        }
        ImageKind::Minimal => build_minimal(docker, build, progress).await?,
        ImageKind::Debian => {
            ensure_base(docker, &build.base, progress).await?;
            build_containerfile(docker, build, &build.base, progress).await?
        }
        ImageKind::Debootstrap => {
            debootstrap_base(docker, build, progress).await?;
            build_containerfile(docker, build, DEBOOTSTRAP_BASE_TAG, progress).await?
        }
    };
    // Checks the labels really landed (a custom Containerfile could override them).
    let status = try_image_status(docker, &build.tag).await?;
    if status != ImageStatus::Current {
        return Err(ImageError::NotCurrentAfterBuild {
            tag: build.tag.clone(),
            status,
        });
    }
    progress(BuildEvent::Done {
        tag: build.tag.clone(),
        id,
    });
    Ok(())
}

fn labels(kind: ImageKind) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_VERSION.to_string(), IMAGE_VERSION.to_string()),
        (LABEL_KIND.to_string(), kind.label().to_string()),
    ])
}

/// Makes sure `base` exists locally, pulling it when it does not.
async fn ensure_base(
    docker: &Docker,
    base: &str,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<(), ImageError> {
    if image_labels(docker, base).await?.is_some() {
        return Ok(());
    }
    progress(BuildEvent::Step {
        index: None,
        text: format!("pull {base}"),
    });
    let options = CreateImageOptionsBuilder::new().from_image(base).build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(ImageError::BaseUnavailable {
                        base: base.into(),
                        reason: detail.message.unwrap_or_default(),
                    });
                }
                if let Some(status) = info.status {
                    let line = match info.id {
                        Some(id) => format!("{id}: {status}"),
                        None => status,
                    };
                    progress(BuildEvent::Log(line));
                }
            }
            Err(e) => {
                return Err(ImageError::BaseUnavailable {
                    base: base.into(),
                    reason: engine_message(&e),
                });
            }
        }
    }
    Ok(())
}

fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// Builds the Containerfile with `BASE=base`; returns the image id when the engine says it.
async fn build_containerfile(
    docker: &Docker,
    build: &ImageBuild,
    base: &str,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<Option<String>, ImageError> {
    let text = match &build.containerfile {
        Some(path) => std::fs::read(path).map_err(|source| ImageError::Io {
            what: "cannot read the Containerfile",
            path: path.clone(),
            source,
        })?,
        None => CONTAINERFILE.as_bytes().to_vec(),
    };
    let context = containerfile_context(&text).map_err(|source| ImageError::Io {
        what: "cannot pack the build context for",
        path: PathBuf::from("Containerfile"),
        source,
    })?;
    let args = HashMap::from([
        ("BASE".to_string(), base.to_string()),
        ("EXTRA_PACKAGES".to_string(), build.packages.join(" ")),
    ]);
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Containerfile")
        .t(&build.tag)
        .buildargs(&args)
        .labels(&labels(build.kind))
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context)));
    let mut id = None;
    let mut last_lines: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| ImageError::BuildFailed {
            tag: build.tag.clone(),
            message: engine_message(&e),
        })?;
        if let Some(detail) = info.error_detail {
            let mut message = detail.message.unwrap_or_default();
            if !last_lines.is_empty() {
                message = format!("{message}\nlast output:\n{}", last_lines.join("\n"));
            }
            return Err(ImageError::BuildFailed {
                tag: build.tag.clone(),
                message,
            });
        }
        if let Some(aux) = info.aux
            && let Some(image_id) = aux.id
        {
            id = Some(image_id);
        }
        for text in [info.stream, info.status].into_iter().flatten() {
            for line in text.lines() {
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                match parse_step(line) {
                    Some(index) => {
                        last_lines.clear();
                        progress(BuildEvent::Step {
                            index: Some(index),
                            text: line.to_string(),
                        });
                    }
                    None => {
                        if last_lines.len() == 20 {
                            last_lines.remove(0);
                        }
                        last_lines.push(line.to_string());
                        progress(BuildEvent::Log(line.to_string()));
                    }
                }
            }
        }
    }
    Ok(id)
}

/// `Step 3/7 : RUN …` (the classic builder's step header) → `(3, 7)`.
pub fn parse_step(line: &str) -> Option<(u32, u32)> {
    let rest = line.strip_prefix("Step ")?;
    let (frac, _) = rest.split_once(" :")?;
    let (n, total) = frac.split_once('/')?;
    Some((n.parse().ok()?, total.parse().ok()?))
}

/// A build context holding only `Containerfile` (the image needs no other file).
pub fn containerfile_context(text: &[u8]) -> std::io::Result<Bytes> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "Containerfile", text)?;
    Ok(Bytes::from(tar.into_inner()?))
}

// ---------------------------------------------------------------------------------------------
// Minimal image

async fn build_minimal(
    docker: &Docker,
    build: &ImageBuild,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<Option<String>, ImageError> {
    let busybox = find_busybox(build.busybox.as_deref())?;
    progress(BuildEvent::Step {
        index: Some((1, 2)),
        text: format!("pack a rootfs from {}", busybox.display()),
    });
    let applets = busybox_applets(&busybox).await?;
    progress(BuildEvent::Log(format!(
        "{} busybox applets",
        applets.len()
    )));
    let binary = std::fs::read(&busybox).map_err(|source| ImageError::Io {
        what: "cannot read",
        path: busybox.clone(),
        source,
    })?;
    let rootfs = minimal_rootfs(&binary, &applets).map_err(|source| ImageError::Io {
        what: "cannot pack the minimal rootfs from",
        path: busybox.clone(),
        source,
    })?;
    progress(BuildEvent::Step {
        index: Some((2, 2)),
        text: format!("import rootfs as {}", build.tag),
    });
    import_rootfs(
        docker,
        &build.tag,
        futures_util::stream::once(async move { Ok(rootfs) }),
        &[
            "USER agent".into(),
            format!("WORKDIR {}", nanoclaw_protocol::contract::paths::WORKSPACE),
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            format!("LABEL {LABEL_VERSION}={IMAGE_VERSION}"),
            format!("LABEL {LABEL_KIND}={}", ImageKind::Minimal.label()),
        ],
        progress,
    )
    .await
}

fn find_busybox(explicit: Option<&Path>) -> Result<PathBuf, ImageError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => vec!["/bin/busybox".into(), "/usr/bin/busybox".into()],
    };
    let mut detail = Vec::new();
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => match elf_is_static(&bytes) {
                Some(true) => return Ok(path),
                Some(false) => detail.push(format!(
                    "{} is dynamically linked and cannot run alone",
                    path.display()
                )),
                None => detail.push(format!("{} is not an ELF64 executable", path.display())),
            },
            Err(e) => detail.push(format!("{}: {e}", path.display())),
        }
    }
    Err(ImageError::NoBusybox {
        detail: detail.join("; "),
    })
}

/// Whether an ELF64 little-endian binary has no program interpreter (i.e. is static).
/// `None` when the bytes are not such an ELF file.
pub fn elf_is_static(bytes: &[u8]) -> Option<bool> {
    if bytes.get(0..4)? != b"\x7fELF" || *bytes.get(4)? != 2 || *bytes.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| -> Option<u16> {
        Some(u16::from_le_bytes(
            bytes.get(o..o.checked_add(2)?)?.try_into().ok()?,
        ))
    };
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(o..o.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            bytes.get(o..o.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(at)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// The applets' install paths, relative (`bin/sh`, `usr/bin/env`), from `busybox --list-full`
/// (falling back to `--list`, installed in `bin/`).
async fn busybox_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let run = |flag: &'static str| {
        let busybox = busybox.to_path_buf();
        async move {
            tokio::process::Command::new(&busybox)
                .arg(flag)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|source| ImageError::Io {
                    what: "cannot run",
                    path: busybox,
                    source,
                })
        }
    };
    let full = run("--list-full").await?;
    let mut names: Vec<String> = if full.status.success() {
        String::from_utf8_lossy(&full.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    } else {
        let list = run("--list").await?;
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .map(|n| format!("bin/{n}"))
            .collect()
    };
    names.retain(|p| is_safe_applet_path(p));
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(ImageError::NoBusybox {
            detail: format!("{} lists no applets", busybox.display()),
        });
    }
    Ok(names)
}

fn is_safe_applet_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p != "bin/busybox"
}

/// A rootfs tarball: `/bin/busybox` and a symlink per applet, `/etc/passwd` and `/etc/group`
/// with the user `agent` (uid/gid [`AGENT_UID`]), `/tmp`, and the workspace mount points owned
/// by `agent`.
pub fn minimal_rootfs(busybox: &[u8], applets: &[String]) -> std::io::Result<Bytes> {
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, owner: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(mode);
        h.set_uid(owner.into());
        h.set_gid(owner.into());
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("{path}/"), std::io::empty())
    };
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "dev",
        "proc",
        "sys",
        "root",
        "home",
        "run",
        "var",
        "opt",
        "opt/nanoclaw",
    ] {
        dir(&mut tar, d, 0o755, 0)?;
    }
    dir(&mut tar, "tmp", 0o1777, 0)?;
    dir(&mut tar, "var/tmp", 0o1777, 0)?;
    for d in [
        "home/agent",
        "workspace",
        "workspace/group",
        "workspace/global",
        "run/nanoclaw",
    ] {
        dir(&mut tar, d, 0o755, AGENT_UID)?;
    }
    let file = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data)
    };
    file(&mut tar, "bin/busybox", 0o755, busybox)?;
    let passwd = format!(
        "root:x:0:0:root:/root:/bin/sh\nagent:x:{AGENT_UID}:{AGENT_UID}:agent:/home/agent:/bin/sh\n"
    );
    let group = format!("root:x:0:\nagent:x:{AGENT_UID}:\n");
    file(&mut tar, "etc/passwd", 0o644, passwd.as_bytes())?;
    file(&mut tar, "etc/group", 0o644, group.as_bytes())?;
    for applet in applets {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_link(&mut h, applet, "/bin/busybox")?;
    }
    Ok(Bytes::from(tar.into_inner()?))
}

/// Imports a rootfs tarball as `tag` (`docker import`), applying Dockerfile `changes`.
async fn import_rootfs(
    docker: &Docker,
    tag: &str,
    body: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    changes: &[String],
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<Option<String>, ImageError> {
    let (repo, tag_part) = split_tag(tag);
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag_part)
        .changes(changes.to_vec())
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
    let mut id = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(engine(format!("import a rootfs as {tag}")))?;
        if let Some(detail) = info.error_detail {
            return Err(ImageError::BuildFailed {
                tag: tag.into(),
                message: detail.message.unwrap_or_default(),
            });
        }
        if let Some(status) = info.status {
            let status = status.trim().to_string();
            // `docker import` answers with the new image's id as its status.
            if status.starts_with("sha256:") {
                id = Some(status.clone());
            }
            progress(BuildEvent::Log(status));
        }
    }
    Ok(id)
}

/// `repo:tag` → (`repo`, `tag`); a registry port (`host:5000/repo`) is not a tag.
pub fn split_tag(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

// ---------------------------------------------------------------------------------------------
// Debootstrap base

async fn debootstrap_base(
    docker: &Docker,
    build: &ImageBuild,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<(), ImageError> {
    let Some(debootstrap) = find_in_path("debootstrap") else {
        return Err(ImageError::NoDebootstrap);
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ImageError::DebootstrapNeedsRoot);
    }
    let dir = std::env::temp_dir().join(format!("nanoclaw-debootstrap-{}", std::process::id()));
    let result = debootstrap_into(docker, build, &debootstrap, &dir, progress).await;
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the debootstrap directory");
    }
    result
}

async fn debootstrap_into(
    docker: &Docker,
    build: &ImageBuild,
    debootstrap: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<(), ImageError> {
    let mirror = build.mirror.as_deref().unwrap_or(DEFAULT_MIRROR);
    progress(BuildEvent::Step {
        index: None,
        text: format!("debootstrap --variant=minbase {DEBOOTSTRAP_SUITE} ({mirror})"),
    });
    let mut child = tokio::process::Command::new(debootstrap)
        .arg("--variant=minbase")
        .arg(DEBOOTSTRAP_SUITE)
        .arg(dir)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ImageError::Io {
            what: "cannot run",
            path: debootstrap.to_path_buf(),
            source,
        })?;
    // debootstrap talks on both pipes; read them together so neither fills up and stalls it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, tx.clone()));
    }
    drop(tx);
    let mut tail: Vec<String> = Vec::new();
    while let Some(line) = rx.recv().await {
        if tail.len() == 30 {
            tail.remove(0);
        }
        tail.push(line.clone());
        progress(BuildEvent::Log(line));
    }
    let status = child.wait().await.map_err(|source| ImageError::Io {
        what: "cannot wait for",
        path: debootstrap.to_path_buf(),
        source,
    })?;
    if !status.success() {
        return Err(ImageError::DebootstrapFailed {
            status: status.to_string(),
            output: tail.join("\n"),
        });
    }

    progress(BuildEvent::Step {
        index: None,
        text: format!("import the rootfs as {DEBOOTSTRAP_BASE_TAG}"),
    });
    // The system tar keeps owners, modes and device nodes exactly; streamed, not held in memory.
    let mut tar = tokio::process::Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ImageError::Io {
            what: "cannot run tar on",
            path: dir.to_path_buf(),
            source,
        })?;
    let Some(stdout) = tar.stdout.take() else {
        return Err(ImageError::Io {
            what: "no output from tar on",
            path: dir.to_path_buf(),
            source: std::io::Error::other("stdout not piped"),
        });
    };
    let chunks = futures_util::stream::unfold(stdout, |mut out| async move {
        let mut buf = vec![0u8; 1 << 20];
        match out.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), out))
            }
            Err(e) => Some((Err(e), out)),
        }
    });
    import_rootfs(
        docker,
        DEBOOTSTRAP_BASE_TAG,
        chunks,
        &[format!("LABEL {LABEL_KIND}=debootstrap-base")],
        progress,
    )
    .await?;
    let status = tar.wait().await.map_err(|source| ImageError::Io {
        what: "cannot wait for tar on",
        path: dir.to_path_buf(),
        source,
    })?;
    if !status.success() {
        return Err(ImageError::Io {
            what: "tar failed on",
            path: dir.to_path_buf(),
            source: std::io::Error::other(status.to_string()),
        });
    }
    Ok(())
}

async fn forward_lines(
    pipe: impl tokio::io::AsyncRead + Unpin,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).is_err() {
            break;
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_a_hash_of_the_recipe() {
        assert_eq!(IMAGE_VERSION.len(), 16);
        assert!(IMAGE_VERSION.bytes().all(|b| b.is_ascii_hexdigit()));
        let expected = format!(
            "{:016x}",
            fnv1a(
                MINIMAL_RECIPE.as_bytes(),
                fnv1a(CONTAINERFILE.as_bytes(), 0xcbf2_9ce4_8422_2325)
            )
        );
        assert_eq!(IMAGE_VERSION, expected);
        assert_ne!(
            fnv1a(b"RUN x", 0xcbf2_9ce4_8422_2325),
            fnv1a(b"RUN y", 0xcbf2_9ce4_8422_2325)
        );
    }

    #[test]
    fn step_lines_parse() {
        assert_eq!(parse_step("Step 3/7 : RUN apt-get update"), Some((3, 7)));
        assert_eq!(parse_step(" ---> Running in 1234"), None);
        assert_eq!(parse_step("Step x/7 : RUN"), None);
    }

    #[test]
    fn tags_split() {
        assert_eq!(
            split_tag("nanoclaw-agent:latest"),
            ("nanoclaw-agent", "latest")
        );
        assert_eq!(split_tag("nanoclaw-agent"), ("nanoclaw-agent", "latest"));
        assert_eq!(split_tag("host:5000/img"), ("host:5000/img", "latest"));
        assert_eq!(split_tag("host:5000/img:v2"), ("host:5000/img", "v2"));
    }

    #[test]
    fn applet_paths_cannot_escape_the_rootfs() {
        assert!(is_safe_applet_path("usr/bin/env"));
        assert!(!is_safe_applet_path("../etc/passwd"));
        assert!(!is_safe_applet_path("/bin/sh"));
        assert!(!is_safe_applet_path("bin//sh"));
        assert!(!is_safe_applet_path("bin/busybox"));
    }

    #[test]
    fn elf_detection_handles_garbage() {
        assert_eq!(elf_is_static(b""), None);
        assert_eq!(elf_is_static(b"\x7fELF"), None);
        let mut fake = vec![0u8; 64];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 2;
        fake[5] = 1;
        // phoff far past the end: malformed, not a panic.
        fake[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        fake[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(elf_is_static(&fake), None);
        if let Ok(sh) = std::fs::read("/bin/sh") {
            // Debian's /bin/sh (dash) is dynamically linked.
            assert_eq!(elf_is_static(&sh), Some(false));
        }
    }
}

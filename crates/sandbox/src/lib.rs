//! Sandbox runtimes.
//!
//! A [`Runtime`] starts the agent runner inside an isolated environment described by a
//! [`SandboxSpec`] and hands back its stdio, over which the host speaks the protocol.
//! Every runtime must give the same guarantees: only the listed mounts are visible, no
//! network but loopback, a non-root user, no host environment, resource limits.
//! When no runtime is usable, nanoclaw refuses to run agents; it never falls back to
//! running one unsandboxed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use async_trait::async_trait;

pub mod apple;
pub mod bwrap;
mod cgroup;
pub mod docker;
pub mod image;
pub mod packages;
mod process;
pub mod user;

pub use apple::AppleRuntime;
pub use bwrap::NativeRuntime;
pub use docker::DockerRuntime;
pub use user::SandboxUser;

/// A path from the host made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    /// Absolute path inside the sandbox.
    pub sandbox_path: PathBuf,
    pub writable: bool,
}

/// Resource limits applied to everything running in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of processes/threads.
    pub max_processes: u64,
    /// Address-space / memory ceiling in bytes.
    pub max_memory_bytes: u64,
    /// Largest file the sandbox may write, in bytes.
    pub max_file_bytes: u64,
    /// Maximum open file descriptors.
    pub max_open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_processes: 256,
            max_memory_bytes: 2 * 1024 * 1024 * 1024,
            max_file_bytes: 512 * 1024 * 1024,
            max_open_files: 1024,
        }
    }
}

/// Everything a runtime needs to start one agent.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Unique name, used for logs, cgroups and container names (`[A-Za-z0-9_.-]`).
    pub name: String,
    /// The agent runner binary on the host; mounted read-only and executed.
    pub agent_binary: PathBuf,
    /// Arguments passed to the agent binary.
    pub args: Vec<String>,
    pub mounts: Vec<Mount>,
    /// The complete environment inside the sandbox (nothing is inherited from the host).
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox.
    pub workdir: PathBuf,
    pub limits: Limits,
}

/// Where the agent binary appears inside every sandbox.
pub const AGENT_BINARY_PATH: &str = "/opt/nanoclaw/nanoclaw-agent";

/// The sandbox's stdin as the host writes it.
pub type SandboxStdin = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;
/// The sandbox's stdout or stderr as the host reads it.
pub type SandboxOutput = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A running sandbox: the agent's stdio plus a handle to watch and stop it. The stdio is
/// a plain byte stream whatever the runtime (process pipes, a container attach).
pub struct SandboxProcess {
    pub stdin: SandboxStdin,
    pub stdout: SandboxOutput,
    pub stderr: SandboxOutput,
    pub control: Box<dyn SandboxControl>,
}

impl SandboxProcess {
    /// Kills the sandbox and releases what the runtime holds for it.
    pub async fn kill(mut self) {
        self.control.kill().await;
    }
}

/// Watching and stopping one sandbox. Dropping it stops the sandbox too (best effort).
#[async_trait]
pub trait SandboxControl: Send {
    /// Whether the sandbox is still running; never blocks.
    fn is_running(&mut self) -> bool;

    /// Waits until the sandbox has ended; its exit code when the runtime knows it.
    async fn wait(&mut self) -> Option<i32>;

    /// Stops the sandbox at once and releases its resources. Calling it again is harmless.
    async fn kill(&mut self);
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{runtime} is not usable: {reason}. {fix}")]
    Unavailable {
        runtime: &'static str,
        reason: String,
        fix: String,
    },
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("cannot tell which packages the {runtime} sandboxes have: {reason}")]
    Packages {
        runtime: &'static str,
        reason: String,
    },
    #[error("starting the {runtime} sandbox failed: {source}")]
    Spawn {
        runtime: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How a sandbox of this runtime reaches the host's model relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTransport {
    /// A Unix socket in a folder mounted into the sandbox (same kernel: bwrap, Docker on
    /// Linux). The socket it arrives on identifies the sandbox.
    UnixSocket,
    /// A per-sandbox TCP port on `bind`, reached from inside as `host:PORT`, that only
    /// accepts that sandbox's token (VMs: Apple's container, Docker Desktop).
    Tcp {
        bind: std::net::SocketAddr,
        host: String,
    },
}

/// A way to run the agent in isolation.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name: `native`, `docker`, `apple`.
    fn name(&self) -> &'static str;

    /// How its sandboxes reach the model relay.
    fn relay_transport(&self) -> RelayTransport {
        RelayTransport::UnixSocket
    }

    /// Checks that this runtime can start sandboxes here. The error says how to fix it.
    async fn probe(&self) -> Result<(), SandboxError>;

    /// Starts the agent in a new sandbox.
    async fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError>;

    /// The Debian packages its sandboxes have (see [`packages`]), which skills' declared
    /// `packages` are checked against; `None` when this runtime cannot tell.
    async fn installed_packages(&self) -> Result<Option<BTreeSet<String>>, SandboxError> {
        Ok(None)
    }
}

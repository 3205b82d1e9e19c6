//! Sandbox runtimes.
//!
//! A [`Runtime`] starts the agent runner inside an isolated environment described by a
//! [`SandboxSpec`] and hands back its stdio, over which the host speaks the protocol.
//! Every runtime must give the same guarantees: only the listed mounts are visible, no
//! network but loopback, a non-root user, no host environment, resource limits.
//! When no runtime is usable, nanoclaw refuses to run agents; it never falls back to
//! running one unsandboxed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;

pub mod bwrap;
mod cgroup;

pub use bwrap::NativeRuntime;

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

/// A running sandbox: the agent's stdio plus a handle to stop it.
pub struct SandboxProcess {
    pub stdin: tokio::process::ChildStdin,
    pub stdout: tokio::process::ChildStdout,
    pub stderr: tokio::process::ChildStderr,
    pub child: tokio::process::Child,
    /// Runtime-specific cleanup (e.g. removing a cgroup) run when the process is reaped.
    pub cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl SandboxProcess {
    /// Kills the sandbox and waits for it, then runs the runtime's cleanup.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
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
    #[error("starting the {runtime} sandbox failed: {source}")]
    Spawn {
        runtime: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A way to run the agent in isolation.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name: `native`, `docker`, `apple`.
    fn name(&self) -> &'static str;

    /// Checks that this runtime can start sandboxes here. The error says how to fix it.
    async fn probe(&self) -> Result<(), SandboxError>;

    /// Starts the agent in a new sandbox.
    async fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError>;
}

//! The nanoclaw agent runner: lives inside the sandbox, speaks the line protocol with the
//! host on stdio, reaches the model only through the host relay, and runs tools in its
//! workspace.

pub mod bridge;
pub mod compaction;
pub mod conversation;
pub mod format;
pub mod host_link;
pub mod init;
pub mod mcp;
pub mod memory;
pub mod precheck;
pub mod provider;
pub mod runner;
pub mod session_tools;
pub mod tools;

pub use runner::{AgentEnv, EnvError, run};

//! MCP servers: the stdio children `hello.mcp_servers` names, started inside the sandbox at
//! session start. Each runs like a bash command does (same sandbox, same environment, so its
//! network goes through the egress proxy), plus the variables its entry gives. Their tools
//! are offered to the model as `<server>__<tool>` ([`crate::tools::McpTool`]).
//!
//! A server that cannot start is logged to the host and the session goes on without it; a
//! server that stops later turns its calls into tool errors the model reads. Every child is
//! killed when the session ends ([`McpServers::shutdown`]).

mod connection;
mod names;
mod render;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nanoclaw_protocol::{LogLevel, McpServer};

use crate::host_link::Outbox;

pub use connection::{CallError, McpConnection, RemoteTool, StartError};
pub use names::{MAX_TOOL_NAME, sanitize_name, tool_name};
pub use render::render_result;

/// Bounds for a session's MCP servers.
#[derive(Debug, Clone, Copy)]
pub struct McpLimits {
    /// How long a server may take to start and answer the handshake and `tools/list`.
    pub start_timeout: Duration,
    /// How long one tool call may take before it is abandoned.
    pub call_timeout: Duration,
    /// Tools offered across all servers; the rest are skipped with a log line.
    pub max_tools: usize,
    /// Characters of one result the model sees; the middle of a longer one is cut.
    pub max_result_chars: usize,
}

impl Default for McpLimits {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(120),
            max_tools: 128,
            max_result_chars: 30_000,
        }
    }
}

/// The session's running MCP servers.
#[derive(Default)]
pub struct McpServers {
    running: Vec<Arc<McpConnection>>,
}

impl McpServers {
    /// Starts every server in `specs` at once, in `cwd` (the workspace). Failures are logged to
    /// the host (`outbox`) and leave that server out.
    pub async fn start(
        specs: &[McpServer],
        cwd: &Path,
        limits: McpLimits,
        outbox: &Outbox,
    ) -> Self {
        let starts = specs
            .iter()
            .map(|spec| McpConnection::start(spec, cwd, limits.start_timeout));
        let results = futures_util::future::join_all(starts).await;
        let mut running = Vec::new();
        for (spec, result) in specs.iter().zip(results) {
            match result {
                Ok(conn) => {
                    tracing::info!(
                        server = %spec.name,
                        tools = conn.tools().len(),
                        protocol = %conn.protocol_version(),
                        "MCP server started"
                    );
                    running.push(Arc::new(conn));
                }
                Err(e) => outbox.log(
                    LogLevel::Warn,
                    format!(
                        "MCP server `{}` ({}) is not available this session: {e}",
                        spec.name,
                        origin(spec)
                    ),
                ),
            }
        }
        Self { running }
    }

    pub fn running(&self) -> &[Arc<McpConnection>] {
        &self.running
    }

    /// Kills every server (and what it started).
    pub fn shutdown(&self) {
        for conn in &self.running {
            conn.kill();
        }
    }
}

impl Drop for McpServers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where a server entry came from, for log lines.
fn origin(spec: &McpServer) -> String {
    match &spec.skill {
        Some(skill) => format!("from skill `{skill}`"),
        None => "from the group's configuration".into(),
    }
}

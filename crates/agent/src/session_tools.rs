//! The tools a session adds to the built-in ones: its skills' script tools and its MCP
//! servers' tools. A tool whose name is taken, or one over the MCP tool cap, is left out with
//! a warning in the host's log.

use std::sync::Arc;

use nanoclaw_protocol::{Hello, LogLevel};

use crate::host_link::Outbox;
use crate::mcp::{McpLimits, McpServers};
use crate::tools::{McpTool, SkillScriptTool, ToolRegistry};

/// Adds the skills' script tools, then the MCP servers' tools, to `registry`.
pub fn add_session_tools(
    registry: &mut ToolRegistry,
    hello: &Hello,
    mcp: &McpServers,
    limits: McpLimits,
    outbox: &Outbox,
) {
    for skill in &hello.skills {
        for tool in &skill.tools {
            let added = SkillScriptTool::new(skill, tool).and_then(|t| registry.add(Box::new(t)));
            if let Err(e) = added {
                outbox.log(
                    LogLevel::Warn,
                    format!(
                        "skill `{}`: tool `{}` is left out: {e}",
                        skill.name, tool.name
                    ),
                );
            }
        }
    }

    let mut offered = 0;
    for server in mcp.running() {
        for remote in server.tools() {
            if offered == limits.max_tools {
                outbox.log(
                    LogLevel::Warn,
                    format!(
                        "MCP server `{}`: tool `{}` and any after it are left out: the session \
                         offers at most {} MCP tools",
                        server.name(),
                        remote.name,
                        limits.max_tools
                    ),
                );
                return;
            }
            let tool = McpTool::new(Arc::clone(server), remote.clone(), limits);
            let name = tool.name().to_owned();
            match registry.add(Box::new(tool)) {
                Ok(()) => offered += 1,
                Err(e) => outbox.log(
                    LogLevel::Warn,
                    format!(
                        "MCP server `{}`: tool `{}` (as `{name}`) is left out: {e}",
                        server.name(),
                        remote.name
                    ),
                ),
            }
        }
    }
}

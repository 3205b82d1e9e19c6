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

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_protocol::{AgentMessage, McpServer};
    use std::path::{Path, PathBuf};

    fn faults(name: &str) -> McpServer {
        let venv = std::env::var_os("NANOCLAW_MCP_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/nanoclaw-tests/mcp"));
        assert!(
            venv.join("bin/python").exists(),
            "the MCP test servers are not installed at {}: run scripts/prerequisites --tests",
            venv.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_faults.py");
        McpServer {
            name: name.into(),
            command: venv.join("bin/python").display().to_string(),
            args: vec![script.display().to_string()],
            env: Default::default(),
            skill: None,
        }
    }

    #[tokio::test]
    async fn mcp_tools_past_the_cap_are_left_out_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, mut rx) = Outbox::channel();
        let limits = McpLimits {
            max_tools: 3,
            ..McpLimits::default()
        };
        let mcp = McpServers::start(&[faults("a"), faults("b")], dir.path(), limits, &outbox).await;
        assert_eq!(mcp.running().len(), 2);
        let mut registry = ToolRegistry::new(Vec::new());
        add_session_tools(&mut registry, &hello(), &mcp, limits, &outbox);
        assert_eq!(registry.len(), 3, "{:?}", registry.specs());
        assert!(registry.specs().iter().all(|s| s.name.starts_with("a__")));
        outbox.flush().await;
        let warning = match rx.try_recv() {
            Ok(AgentMessage::Log { message, .. }) => message,
            other => panic!("expected a warning, got {other:?}"),
        };
        assert!(
            warning.contains("at most 3 MCP tools") && warning.contains("`a`"),
            "{warning}"
        );
        mcp.shutdown();
    }

    fn hello() -> Hello {
        serde_json::from_value(serde_json::json!({
            "protocol_major": 1, "protocol_minor": 6, "session_id": "s",
            "group": {"id": "g", "name": "G", "folder": "g"},
            "model": {"provider": "anthropic", "model": "m"},
            "assistant_name": "Andy"
        }))
        .unwrap()
    }
}

//! `<server>__<tool>`: a tool of one of the session's MCP servers.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{Tool, ToolContext, ToolOutput};
use crate::format::truncate_chars;
use crate::mcp::{McpConnection, McpLimits, RemoteTool, render_result, tool_name};
use crate::provider::ToolSpec;

/// Longest tool description passed on to the model (servers write their own).
const MAX_DESCRIPTION_CHARS: usize = 2_000;

pub struct McpTool {
    server: Arc<McpConnection>,
    remote: RemoteTool,
    name: String,
    limits: McpLimits,
}

impl McpTool {
    pub fn new(server: Arc<McpConnection>, remote: RemoteTool, limits: McpLimits) -> Self {
        Self {
            name: tool_name(server.name(), &remote.name),
            server,
            remote,
            limits,
        }
    }

    /// The model-facing name, `<server>__<tool>`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        let mut schema = self.remote.input_schema.clone();
        // Providers want an object schema; a server may leave `type` out.
        if let Value::Object(map) = &mut schema {
            map.entry("type").or_insert_with(|| "object".into());
        } else {
            schema = serde_json::json!({"type": "object"});
        }
        let description = if self.remote.description.trim().is_empty() {
            format!(
                "The `{}` tool of the MCP server `{}`.",
                self.remote.name,
                self.server.name()
            )
        } else {
            truncate_chars(&self.remote.description, MAX_DESCRIPTION_CHARS)
        };
        ToolSpec {
            name: self.name.clone(),
            description,
            input_schema: schema,
        }
    }

    async fn run(&self, input: Value, _ctx: &ToolContext) -> ToolOutput {
        match self
            .server
            .call(&self.remote.name, input, self.limits.call_timeout)
            .await
        {
            Ok(result) => render_result(self.server.name(), &result, self.limits.max_result_chars),
            Err(e) => ToolOutput::error(e.to_string()),
        }
    }
}

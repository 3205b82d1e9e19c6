//! `register_chat` (main group only): wire a chat to an agent group.

use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_protocol::RequestAction;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, ask_host, not_this_action, parse_action};
use crate::provider::ToolSpec;

pub struct RegisterChatTool;

const TIMEOUT: Duration = Duration::from_secs(30);

#[async_trait]
impl Tool for RegisterChatTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "register_chat".into(),
            description: "Wire a chat (channel + chat id) to an agent group so the assistant \
                          answers there; the group is created when the folder is new. Only the \
                          owner's main group may use this."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "channel": {"type": "string", "description": "channel type, e.g. telegram"},
                    "chat_id": {"type": "string", "description": "the chat's id on that platform"},
                    "folder": {"type": "string", "description": "the agent group's folder name"},
                    "name": {"type": "string", "description": "display name for a new group"},
                    "requires_trigger": {"type": "boolean", "description": "messages must mention the trigger (default true)"}
                },
                "required": ["channel", "chat_id", "folder"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        format!(
            "{}:{} → {}",
            input["channel"].as_str().unwrap_or("?"),
            input["chat_id"].as_str().unwrap_or("?"),
            input["folder"].as_str().unwrap_or("?")
        )
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let tool = "register_chat";
        let action = match parse_action(tool, input) {
            Ok(action @ RequestAction::RegisterChat { .. }) => action,
            Ok(_) => return not_this_action(tool),
            Err(e) => return e,
        };
        match ask_host(ctx, action, TIMEOUT, "the host refused").await {
            Ok(data) => ToolOutput::ok(data.to_string()),
            Err(refused) => refused,
        }
    }
}

//! `update_group` (main group only): change a group's trigger word, model or time zone when the
//! owner asks for it in the main chat.

use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_protocol::RequestAction;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, ask_host, not_this_action, parse_action};
use crate::provider::ToolSpec;

pub struct UpdateGroupTool;

const TIMEOUT: Duration = Duration::from_secs(30);

#[async_trait]
impl Tool for UpdateGroupTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "update_group".into(),
            description: "Change an agent group's trigger word, model provider, model or time \
                          zone when the owner asks for it (e.g. \"change the trigger word to \
                          @Bob\"). Give only what changes; omit group for the main group itself. \
                          Only the owner's main group may use this; the change is audited and \
                          applies from the group's next message."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "group": {"type": "string", "description": "the group's folder (see list_groups); omit for the main group"},
                    "trigger": {"type": "string", "description": "new trigger word, e.g. @Bob"},
                    "provider": {"type": "string", "enum": ["anthropic", "openai"]},
                    "model": {"type": "string", "description": "the provider's model id"},
                    "timezone": {"type": "string", "description": "IANA zone such as Europe/Berlin, or \"host\" for the host's zone"}
                }
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        let group = input["group"].as_str().unwrap_or("main");
        let fields: Vec<&str> = ["trigger", "provider", "model", "timezone"]
            .into_iter()
            .filter(|f| input.get(*f).is_some_and(|v| !v.is_null()))
            .collect();
        format!("{group}: {}", fields.join(", "))
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let tool = "update_group";
        let action = match parse_action(tool, input) {
            Ok(action @ RequestAction::UpdateGroup { .. }) => action,
            Ok(_) => return not_this_action(tool),
            Err(e) => return e,
        };
        match ask_host(ctx, action, TIMEOUT, "the host refused").await {
            Ok(data) => ToolOutput::ok(data.to_string()),
            Err(refused) => refused,
        }
    }
}

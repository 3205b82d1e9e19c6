//! `list_groups` (main group only): the project-wide view of agent groups and their chats.

use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_protocol::RequestAction;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput};
use crate::provider::ToolSpec;

pub struct ListGroupsTool;

const TIMEOUT: Duration = Duration::from_secs(30);

#[async_trait]
impl Tool for ListGroupsTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_groups".into(),
            description: "List every agent group with its folder, trigger, model and the chats \
                          wired to it. Only the owner's main group may use this."
                .into(),
            input_schema: json!({"type": "object", "properties": {}}),
        }
    }

    fn summary(&self, _input: &Value) -> String {
        "all groups".into()
    }

    async fn run(&self, _input: Value, ctx: &ToolContext) -> ToolOutput {
        match super::ask_host(ctx, RequestAction::ListGroups, TIMEOUT, "the host refused").await {
            Ok(data) => {
                ToolOutput::ok(serde_json::to_string_pretty(&data).unwrap_or_else(|_| "[]".into()))
            }
            Err(refused) => refused,
        }
    }
}

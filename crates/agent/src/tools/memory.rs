//! The group's memory store: `memory_save`, `memory_search` and `memory_forget`. The host
//! keeps the memories (SQLite with full-text search) and answers only from this group's: the
//! agent names no group, and an id of another group's memory reads as unknown.

use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_protocol::RequestAction;
use serde_json::{Value, json};

use super::{
    SUMMARY_CHARS, Tool, ToolContext, ToolOutput, not_this_action, parse_action, str_field,
};
use crate::format::truncate_chars;
use crate::provider::ToolSpec;

pub struct MemorySaveTool;
pub struct MemorySearchTool;
pub struct MemoryForgetTool;

const TIMEOUT: Duration = Duration::from_secs(30);

const NAMESPACE_HELP: &str = "\"shared\" (the default) for what any conversation may need, or \
     \"skill:<name>\" (e.g. \"skill:weather\") for what only matters to one skill.";

/// Sends `action`; the host's data as pretty JSON, or why it refused.
async fn ask_host(ctx: &ToolContext, action: RequestAction, what: &str) -> ToolOutput {
    let refused = format!("the host refused to {what}");
    match super::ask_host(ctx, action, TIMEOUT, &refused).await {
        Ok(data) => {
            ToolOutput::ok(serde_json::to_string_pretty(&data).unwrap_or_else(|_| data.to_string()))
        }
        Err(refused) => refused,
    }
}

/// Models often send `""` for an optional field they mean to leave out.
fn blank_is_none(value: &mut Option<String>) {
    if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
        *value = None;
    }
}

#[async_trait]
impl Tool for MemorySaveTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "memory_save".into(),
            description: "Save a fact to this group's long-term memory so a later conversation \
                          (even after a restart, or a fresh isolated task run) can find it with \
                          memory_search. One self-contained fact per memory, with the words \
                          someone would search for: \"Anna's birthday is March 3rd\", not \"her \
                          birthday is then\". At most 8 KiB. Returns the memory's id."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "The fact to remember."},
                    "namespace": {"type": "string", "description": NAMESPACE_HELP}
                },
                "required": ["text"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(str_field(input, "text"), SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let tool = "memory_save";
        let mut action = match parse_action(tool, input) {
            Ok(action) => action,
            Err(e) => return e,
        };
        let RequestAction::MemorySave { text, namespace } = &mut action else {
            return not_this_action(tool);
        };
        if text.trim().is_empty() {
            return ToolOutput::error("invalid input for memory_save: `text` is empty");
        }
        blank_is_none(namespace);
        ask_host(ctx, action, "save the memory").await
    }
}

#[async_trait]
impl Tool for MemorySearchTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "memory_search".into(),
            description: "Search this group's long-term memory by words (all of them must \
                          match; when nothing has them all, any may). Words match in any form \
                          (\"birthdays\" finds \"birthday\"); no operators or wildcards. Searches \
                          every namespace (shared and every skill's) unless `namespace` names \
                          one. Returns the best matches first, each with its id, namespace and \
                          text. Search before asking the user something they may have told you."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Words to look for."},
                    "namespace": {"type": "string", "description": NAMESPACE_HELP},
                    "limit": {
                        "type": "integer",
                        "description": "At most this many results (default 10, at most 100)."
                    }
                },
                "required": ["query"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(str_field(input, "query"), SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let tool = "memory_search";
        let mut action = match parse_action(tool, input) {
            Ok(action) => action,
            Err(e) => return e,
        };
        let RequestAction::MemorySearch {
            query, namespace, ..
        } = &mut action
        else {
            return not_this_action(tool);
        };
        if query.trim().is_empty() {
            return ToolOutput::error("invalid input for memory_search: `query` is empty");
        }
        blank_is_none(namespace);
        ask_host(ctx, action, "search the memories").await
    }
}

#[async_trait]
impl Tool for MemoryForgetTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "memory_forget".into(),
            description: "Forget one memory of this group by its id (from memory_search), e.g. \
                          when the user says it is wrong or asks you to forget it. To correct a \
                          fact, forget the old memory and save the new one."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "description": "The memory's id."}
                },
                "required": ["id"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        format!("memory {}", input.get("id").unwrap_or(&Value::Null))
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        match parse_action("memory_forget", input) {
            Ok(action) => ask_host(ctx, action, "forget the memory").await,
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util;
    use nanoclaw_protocol::{AgentMessage, RequestResult};

    /// The tool's request as the host receives it, answered with `data`.
    async fn round_trip(tool: &dyn Tool, input: Value, data: Value) -> (RequestAction, ToolOutput) {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = test_util::ctx(dir.path());
        let host = ctx.host.clone();
        let name = tool.spec().name;
        let run = tokio::spawn(async move { tool_run(name, input, &ctx).await });
        let Some(AgentMessage::Request(req)) = rx.recv().await else {
            panic!("no request sent");
        };
        host.resolve(RequestResult {
            request_id: req.request_id.clone(),
            ok: true,
            error: None,
            data,
        });
        (req.action, run.await.unwrap())
    }

    async fn tool_run(name: String, input: Value, ctx: &ToolContext) -> ToolOutput {
        let registry = crate::tools::ToolRegistry::default();
        registry.run(&name, input, ctx).await
    }

    #[tokio::test]
    async fn tools_send_their_requests_and_show_the_answer() {
        let (action, out) = round_trip(
            &MemorySaveTool,
            json!({"text": "Anna's birthday is March 3rd", "namespace": ""}),
            json!({"id": 7, "namespace": "shared"}),
        )
        .await;
        assert_eq!(
            action,
            RequestAction::MemorySave {
                text: "Anna's birthday is March 3rd".into(),
                namespace: None
            }
        );
        assert!(
            !out.is_error && out.content.contains("\"id\": 7"),
            "{out:?}"
        );

        let (action, _) = round_trip(
            &MemorySearchTool,
            json!({"query": "birthday", "namespace": "skill:calendar", "limit": 3}),
            json!([]),
        )
        .await;
        assert_eq!(
            action,
            RequestAction::MemorySearch {
                query: "birthday".into(),
                namespace: Some("skill:calendar".into()),
                limit: Some(3)
            }
        );

        let (action, _) =
            round_trip(&MemoryForgetTool, json!({"id": 7}), json!({"forgotten": 7})).await;
        assert_eq!(action, RequestAction::MemoryForget { id: 7 });
    }

    #[tokio::test]
    async fn empty_text_or_query_is_refused_before_asking_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = test_util::ctx(dir.path());
        let out = MemorySaveTool.run(json!({"text": "  "}), &ctx).await;
        assert!(out.is_error, "{out:?}");
        let out = MemorySearchTool.run(json!({"query": ""}), &ctx).await;
        assert!(out.is_error, "{out:?}");
        let out = MemoryForgetTool.run(json!({"id": "seven"}), &ctx).await;
        assert!(out.is_error, "{out:?}");
        assert!(rx.try_recv().is_err(), "nothing was sent to the host");
    }
}

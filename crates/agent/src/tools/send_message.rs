//! `send_message`: posts a message to the chat while the turn is still running.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_protocol::RequestAction;
use serde_json::{Value, json};

use super::{
    SUMMARY_CHARS, Tool, ToolContext, ToolOutput, not_this_action, parse_action, str_field,
};
use crate::format::truncate_chars;
use crate::provider::ToolSpec;

pub struct SendMessageTool;

/// The host copies every attached file before it answers: up to 10 × 25 MiB by default.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Files one message may carry (the host enforces the same limit).
const MAX_FILES: usize = 10;

/// `path` as the host understands it: a path inside this agent's workspace becomes relative to
/// it (the workspace is `/workspace/group` in every sandbox, but not necessarily in tests); any
/// other path is passed on as given, for the host to check and refuse.
fn workspace_relative(ctx: &ToolContext, path: &str) -> String {
    match Path::new(path).strip_prefix(&ctx.workspace) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
        _ => path.to_owned(),
    }
}

#[async_trait]
impl Tool for SendMessageTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "send_message".into(),
            description: "Send a message to the chat right away, e.g. a progress update \
                          during long work, or files for the user. Your final answer is \
                          delivered automatically as text; do not repeat it with this tool. \
                          To give the user a file, write it inside /workspace/group first and \
                          list it in `files` (your final answer cannot carry files)."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "text": {
                        "type": "string",
                        "description": "The message; may be empty when files are attached."
                    },
                    "files": {
                        "type": "array",
                        "items": {"type": "string"},
                        "maxItems": MAX_FILES,
                        "description": "Files to attach: paths inside /workspace/group \
                                        (absolute, or relative to it). Regular files only, \
                                        no symbolic links, at most 25 MiB each unless the \
                                        owner configured otherwise."
                    }
                },
                "required": ["text"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(str_field(input, "text"), SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let tool = "send_message";
        let action = match parse_action(tool, input) {
            Ok(action) => action,
            Err(e) => return e,
        };
        let RequestAction::SendMessage { text, files } = action else {
            return not_this_action(tool);
        };
        if text.trim().is_empty() && files.is_empty() {
            return ToolOutput::error("invalid input for send_message: `text` is empty");
        }
        if files.len() > MAX_FILES {
            return ToolOutput::error(format!(
                "invalid input for send_message: {} files; at most {MAX_FILES} per message",
                files.len()
            ));
        }
        let sent = if files.is_empty() {
            "message sent".to_owned()
        } else {
            format!("message sent with {} file(s)", files.len())
        };
        let files = files.iter().map(|f| workspace_relative(ctx, f)).collect();
        let action = RequestAction::SendMessage { text, files };
        match ctx.host.request(&ctx.turn_id, action, TIMEOUT).await {
            Ok(result) if result.ok => ToolOutput::ok(sent),
            Ok(result) => ToolOutput::error(format!(
                "the host refused to send the message: {}",
                result.error.as_deref().unwrap_or("no reason given")
            )),
            Err(e) => ToolOutput::error(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;
    use nanoclaw_protocol::{AgentMessage, RequestResult};

    #[tokio::test]
    async fn round_trips_through_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = ctx(dir.path());
        let host = ctx.host.clone();
        let answer = tokio::spawn(async move {
            let Some(AgentMessage::Request(req)) = rx.recv().await else {
                panic!("expected a request");
            };
            assert_eq!(req.turn_id, "t1");
            assert_eq!(
                req.action,
                RequestAction::SendMessage {
                    text: "hi".into(),
                    files: Vec::new()
                }
            );
            host.resolve(RequestResult {
                request_id: req.request_id,
                ok: false,
                error: Some("chat is read-only".into()),
                data: Value::Null,
            });
        });
        let out = SendMessageTool.run(json!({"text": "hi"}), &ctx).await;
        answer.await.unwrap();
        assert!(out.is_error);
        assert!(out.content.contains("chat is read-only"), "{}", out.content);
    }

    #[tokio::test]
    async fn a_call_without_text_names_the_missing_field() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = SendMessageTool.run(json!({"txt": "hi"}), &ctx).await;
        assert_eq!(
            out,
            ToolOutput::error("invalid input for send_message: missing field `text`")
        );
    }

    #[tokio::test]
    async fn files_in_the_workspace_go_to_the_host_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = ctx(dir.path());
        let host = ctx.host.clone();
        let inside = dir.path().join("out/chart.png").display().to_string();
        let answer = tokio::spawn(async move {
            let Some(AgentMessage::Request(req)) = rx.recv().await else {
                panic!("expected a request");
            };
            host.resolve(RequestResult {
                request_id: req.request_id,
                ok: true,
                error: None,
                data: Value::Null,
            });
            req.action
        });
        let out = SendMessageTool
            .run(
                json!({"text": "", "files": [inside, "notes.txt", "/etc/passwd"]}),
                &ctx,
            )
            .await;
        let sent = answer.await.unwrap();
        assert_eq!(out, ToolOutput::ok("message sent with 3 file(s)"));
        assert_eq!(
            sent,
            RequestAction::SendMessage {
                text: String::new(),
                files: vec![
                    "out/chart.png".into(),
                    "notes.txt".into(),
                    // Outside the workspace: passed on for the host to refuse.
                    "/etc/passwd".into()
                ],
            }
        );
    }

    #[tokio::test]
    async fn a_message_without_text_or_files_and_one_with_too_many_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = ctx(dir.path());
        let out = SendMessageTool
            .run(json!({"text": " ", "files": []}), &ctx)
            .await;
        assert!(out.is_error && out.content.contains("empty"), "{out:?}");
        let many: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
        let out = SendMessageTool
            .run(json!({"text": "x", "files": many}), &ctx)
            .await;
        assert!(
            out.is_error && out.content.contains("at most 10"),
            "{out:?}"
        );
        assert!(rx.try_recv().is_err(), "nothing reached the host");
    }
}

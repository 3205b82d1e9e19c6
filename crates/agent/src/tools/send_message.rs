//! `send_message`: posts a message to the chat while the turn is still running.

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

const TIMEOUT: Duration = Duration::from_secs(30);

#[async_trait]
impl Tool for SendMessageTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "send_message".into(),
            description: "Send a message to the chat right away, e.g. a progress update \
                          during long work. Your final answer is delivered automatically; do \
                          not repeat it with this tool."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
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
        let RequestAction::SendMessage { text } = &action else {
            return not_this_action(tool);
        };
        if text.trim().is_empty() {
            return ToolOutput::error("invalid input for send_message: `text` is empty");
        }
        match ctx.host.request(&ctx.turn_id, action, TIMEOUT).await {
            Ok(result) if result.ok => ToolOutput::ok("message sent"),
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
            assert_eq!(req.action, RequestAction::SendMessage { text: "hi".into() });
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
}

//! Anthropic Messages API client (streaming), via the host relay at `{base}/anthropic`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::retry::{Failure, Retries, parse_retry_after, within_idle};
use super::sse::SseEvents;
use super::{
    ContentBlock, Message, ModelRequest, ModelResponse, Provider, ProviderError, RetryPolicy, Role,
    StopReason, Usage,
};

const NAME: &str = "anthropic";
const API_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    client: reqwest::Client,
    url: String,
    retry: RetryPolicy,
}

impl AnthropicProvider {
    /// `relay_base_url` like `http://127.0.0.1:PORT`; requests go to
    /// `{relay_base_url}/anthropic/v1/messages`.
    pub fn new(relay_base_url: &str, retry: RetryPolicy) -> Self {
        Self {
            client: http_client(),
            url: format!(
                "{}/anthropic/v1/messages",
                relay_base_url.trim_end_matches('/')
            ),
            retry,
        }
    }

    async fn attempt(
        &self,
        body: &Value,
        on_text: &mut (dyn FnMut(&str) + Send + '_),
    ) -> Result<ModelResponse, Failure> {
        let idle = self.retry.stream_idle_timeout;
        let response = self
            .client
            .post(&self.url)
            .header("anthropic-version", API_VERSION)
            .json(body)
            .send();
        let response = within_idle(NAME, idle, "waiting for the model's response", response)
            .await?
            .map_err(|e| transport(format!("POST {}: {e}", self.url)))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = parse_retry_after(response.headers());
            let text = within_idle(NAME, idle, "reading the error body", response.text())
                .await?
                .unwrap_or_default();
            return Err(Failure {
                error: status_error(status.as_u16(), &text),
                retry_after,
            });
        }
        read_stream(response, idle, on_text)
            .await
            .map_err(Failure::from)
    }
}

/// A client for plain HTTP on loopback: no proxy (a sandbox's proxy variables must not
/// divert relay traffic) and bounded connect time. A stalled response is bounded by the
/// policy's stream idle timeout around every read (see `within_idle`), not here.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "could not build the tuned HTTP client; using defaults");
            reqwest::Client::new()
        })
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn complete(
        &self,
        request: &ModelRequest,
        on_text: &mut (dyn for<'t> FnMut(&'t str) + Send),
    ) -> Result<ModelResponse, ProviderError> {
        let body = request_body(request);
        let mut retries = Retries::new(&self.retry, NAME);
        loop {
            match self.attempt(&body, on_text).await {
                Ok(response) => return Ok(response),
                Err(failure) => retries.wait_or_give_up(failure).await?,
            }
        }
    }
}

/// The request as the Messages API wants it, with prompt caching: the system prompt is
/// one cacheable block, and the last block of the last message is a second
/// breakpoint so the growing conversation is read from cache on the next turn.
pub(crate) fn request_body(request: &ModelRequest) -> Value {
    let mut messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    if let Some(last) = messages
        .last_mut()
        .and_then(|m| m.get_mut("content"))
        .and_then(Value::as_array_mut)
        .and_then(|blocks| blocks.last_mut())
        .and_then(Value::as_object_mut)
    {
        last.insert("cache_control".into(), json!({"type": "ephemeral"}));
    }
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "stream": true,
        "messages": messages,
    });
    // The API rejects empty text blocks, so an empty system prompt is left out.
    if !request.system.is_empty() {
        body["system"] = json!([{
            "type": "text",
            "text": request.system,
            "cache_control": {"type": "ephemeral"},
        }]);
    }
    if !request.tools.is_empty() {
        body["tools"] = Value::Array(
            request
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                           "input_schema": t.input_schema})
                })
                .collect(),
        );
    }
    body
}

fn message_json(message: &Message) -> Value {
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let content: Vec<Value> = message
        .content
        .iter()
        .filter_map(|block| match block {
            // Empty text blocks are rejected by the API.
            ContentBlock::Text { text } if text.is_empty() => None,
            ContentBlock::Text { text } => Some(json!({"type": "text", "text": text})),
            ContentBlock::ToolUse { id, name, input } => {
                Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
            }
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let mut v = json!({"type": "tool_result", "tool_use_id": tool_use_id,
                                   "content": content});
                if *is_error {
                    v["is_error"] = Value::Bool(true);
                }
                Some(v)
            }
        })
        .collect();
    json!({"role": role, "content": content})
}

fn transport(message: String) -> Failure {
    Failure::from(ProviderError::Transport {
        provider: NAME,
        message,
    })
}

fn protocol(message: impl Into<String>) -> ProviderError {
    ProviderError::Protocol {
        provider: NAME,
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

fn retryable_kind(kind: &str) -> bool {
    matches!(kind, "overloaded_error" | "api_error" | "rate_limit_error")
}

fn status_error(status: u16, body: &str) -> ProviderError {
    let (kind, message) = match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) => (b.error.kind, b.error.message),
        Err(_) => (format!("http_{status}"), snippet(body)),
    };
    ProviderError::Api {
        provider: NAME,
        status,
        kind,
        message,
        retryable: retryable_status(status),
    }
}

/// The start of an unexpected body, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = trimmed.chars().take(300).collect();
    if s.len() < trimmed.len() {
        s.push('…');
    }
    s
}

// Stream events, as documented. Unknown event, block and delta types (thinking,
// citations, new additions) are skipped rather than failing the turn.

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

enum Building {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
    },
    Done(ContentBlock),
}

fn apply_usage(usage: &mut Usage, wire: &WireUsage) {
    if let Some(v) = wire.input_tokens {
        usage.input_tokens = v;
    }
    if let Some(v) = wire.output_tokens {
        usage.output_tokens = v;
    }
    if let Some(v) = wire.cache_creation_input_tokens {
        usage.cache_creation_input_tokens = v;
    }
    if let Some(v) = wire.cache_read_input_tokens {
        usage.cache_read_input_tokens = v;
    }
}

pub(crate) fn stop_reason(s: &str) -> StopReason {
    match s {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::Refusal,
        other => StopReason::Other(other.to_string()),
    }
}

fn finish_block(building: &mut Building, index: usize) -> Result<(), ProviderError> {
    let done = match building {
        Building::Text(text) => ContentBlock::Text {
            text: std::mem::take(text),
        },
        Building::Tool { id, name, json } => {
            // A tool without arguments streams no JSON at all: that is `{}`.
            let input = if json.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(json).map_err(|e| {
                    protocol(format!(
                        "tool_use block {index} ({name}) has invalid input JSON ({e}): {}",
                        snippet(json)
                    ))
                })?
            };
            ContentBlock::ToolUse {
                id: std::mem::take(id),
                name: std::mem::take(name),
                input,
            }
        }
        Building::Done(_) => return Ok(()),
    };
    *building = Building::Done(done);
    Ok(())
}

async fn read_stream(
    response: reqwest::Response,
    idle: std::time::Duration,
    on_text: &mut (dyn FnMut(&str) + Send + '_),
) -> Result<ModelResponse, ProviderError> {
    let mut events = SseEvents::new(Box::pin(response.bytes_stream()));
    let mut blocks: BTreeMap<usize, Building> = BTreeMap::new();
    let mut usage = Usage::default();
    let mut stop: Option<String> = None;
    let mut finished = false;

    while let Some(event) =
        within_idle(NAME, idle, "reading the event stream", events.next()).await?
    {
        let event = event.map_err(|e| ProviderError::Transport {
            provider: NAME,
            message: format!("reading the event stream: {e}"),
        })?;
        let parsed: Event = serde_json::from_str(&event.data).map_err(|e| {
            protocol(format!(
                "event `{}` has unexpected data ({e}): {}",
                event.event,
                snippet(&event.data)
            ))
        })?;
        match parsed {
            Event::MessageStart { message } => {
                if let Some(u) = &message.usage {
                    apply_usage(&mut usage, u);
                }
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => {
                let building = match content_block {
                    StartBlock::Text { text } => {
                        if !text.is_empty() {
                            on_text(&text);
                        }
                        Building::Text(text)
                    }
                    StartBlock::ToolUse { id, name } => Building::Tool {
                        id,
                        name,
                        json: String::new(),
                    },
                    StartBlock::Unknown => continue,
                };
                blocks.insert(index, building);
            }
            Event::ContentBlockDelta { index, delta } => match (blocks.get_mut(&index), delta) {
                (Some(Building::Text(text)), BlockDelta::TextDelta { text: piece }) => {
                    on_text(&piece);
                    text.push_str(&piece);
                }
                (
                    Some(Building::Tool { json, .. }),
                    BlockDelta::InputJsonDelta { partial_json },
                ) => {
                    json.push_str(&partial_json);
                }
                (_, BlockDelta::Unknown) | (None, _) => {}
                _ => {
                    return Err(protocol(format!(
                        "delta for content block {index} does not match its type"
                    )));
                }
            },
            Event::ContentBlockStop { index } => {
                if let Some(b) = blocks.get_mut(&index) {
                    finish_block(b, index)?;
                }
            }
            Event::MessageDelta { delta, usage: u } => {
                if delta.stop_reason.is_some() {
                    stop = delta.stop_reason;
                }
                if let Some(u) = &u {
                    apply_usage(&mut usage, u);
                }
            }
            Event::MessageStop => {
                finished = true;
                break;
            }
            Event::Error { error } => {
                return Err(ProviderError::Api {
                    provider: NAME,
                    status: 0,
                    retryable: retryable_kind(&error.kind),
                    kind: error.kind,
                    message: error.message,
                });
            }
            Event::Ping | Event::Unknown => {}
        }
    }
    if !finished {
        // The connection closed mid-answer: worth another try.
        return Err(ProviderError::Transport {
            provider: NAME,
            message: "the event stream ended before message_stop".into(),
        });
    }
    let mut content = Vec::with_capacity(blocks.len());
    for (index, mut b) in blocks {
        finish_block(&mut b, index)?;
        if let Building::Done(block) = b {
            content.push(block);
        }
    }
    Ok(ModelResponse {
        content,
        stop_reason: stop
            .as_deref()
            .map_or_else(|| StopReason::Other("missing".into()), stop_reason),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ToolSpec;

    #[test]
    fn body_marks_system_and_last_block_cacheable() {
        let req = ModelRequest {
            model: "claude-x".into(),
            system: "be good".into(),
            messages: vec![
                Message::user_text("hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::ToolUse {
                        id: "t1".into(),
                        name: "bash".into(),
                        input: json!({"command": "ls"}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "t1".into(),
                        content: "boom".into(),
                        is_error: true,
                    }],
                },
            ],
            tools: vec![ToolSpec {
                name: "bash".into(),
                description: "run".into(),
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 100,
        };
        let body = request_body(&req);
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(
            body["messages"][2]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert!(
            body["messages"][0]["content"][0]
                .get("cache_control")
                .is_none()
        );
        assert_eq!(body["messages"][2]["content"][0]["is_error"], true);
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(body["stream"], true);
    }
}

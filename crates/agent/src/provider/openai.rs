//! OpenAI-compatible Chat Completions client (streaming), via the host relay at
//! `{base}/openai`. Written to tolerate the compatible servers too (Ollama, vLLM,
//! OpenRouter): missing usage, missing tool-call indexes, extra fields.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::anthropic::{http_client, snippet};
use super::retry::{Failure, Retries, parse_retry_after, within_idle};
use super::sse::SseEvents;
use super::{
    ContentBlock, Message, ModelRequest, ModelResponse, Provider, ProviderError, RetryPolicy, Role,
    StopReason, Usage,
};

const NAME: &str = "openai";

pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    retry: RetryPolicy,
}

impl OpenAiProvider {
    /// `relay_base_url` like `http://127.0.0.1:PORT`; requests go to
    /// `{relay_base_url}/openai/chat/completions`.
    pub fn new(relay_base_url: &str, retry: RetryPolicy) -> Self {
        Self {
            client: http_client(),
            url: format!(
                "{}/openai/chat/completions",
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
        let response = self.client.post(&self.url).json(body).send();
        let response = within_idle(NAME, idle, "waiting for the model's response", response)
            .await?
            .map_err(|e| {
                Failure::from(ProviderError::Transport {
                    provider: NAME,
                    message: format!("POST {}: {e}", self.url),
                })
            })?;
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

#[async_trait]
impl Provider for OpenAiProvider {
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

pub(crate) fn request_body(request: &ModelRequest) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for m in &request.messages {
        push_message(&mut messages, m);
    }
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": messages,
    });
    // Some compatible servers reject an empty tools array.
    if !request.tools.is_empty() {
        body["tools"] = Value::Array(
            request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description,
                        "parameters": t.input_schema,
                    }})
                })
                .collect(),
        );
    }
    body
}

/// One neutral message becomes one or more chat messages: tool results are separate
/// `tool` messages, and they come first because they must directly follow the
/// assistant message that made the calls.
fn push_message(out: &mut Vec<Value>, message: &Message) {
    match message.role {
        Role::Assistant => {
            let text = message.text();
            let calls: Vec<Value> = message
                .content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolUse { id, name, input } => Some(json!({
                        "id": id, "type": "function",
                        "function": {"name": name, "arguments": input.to_string()},
                    })),
                    _ => None,
                })
                .collect();
            let mut m = json!({"role": "assistant"});
            if calls.is_empty() {
                m["content"] = Value::String(text);
            } else {
                m["content"] = if text.is_empty() {
                    Value::Null
                } else {
                    Value::String(text)
                };
                m["tool_calls"] = Value::Array(calls);
            }
            out.push(m);
        }
        Role::User => {
            for b in &message.content {
                if let ContentBlock::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } = b
                {
                    // The format has no error flag; say it in the content.
                    let content = if *is_error {
                        format!("Error: {content}")
                    } else {
                        content.clone()
                    };
                    out.push(json!({"role": "tool", "tool_call_id": tool_use_id,
                                    "content": content}));
                }
            }
            let text = message.text();
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
        }
    }
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// Error kinds in stream error payloads that mean "try again".
fn retryable_kind(kind: &str) -> bool {
    matches!(
        kind,
        "server_error"
            | "overloaded_error"
            | "api_error"
            | "rate_limit_exceeded"
            | "rate_limit_error"
    )
}

/// Reads `{"error": {...}}` (OpenAI), `{"error": "text"}` (Ollama) or any JSON with
/// `message`/`detail`, falling back to the raw body.
fn error_parts(v: &Value, fallback_kind: String) -> (String, String) {
    let err = v.get("error").unwrap_or(v);
    if let Some(s) = err.as_str() {
        return (fallback_kind, s.to_string());
    }
    let kind = err
        .get("type")
        .and_then(Value::as_str)
        .or_else(|| err.get("code").and_then(Value::as_str))
        .map_or(fallback_kind, str::to_string);
    let message = err
        .get("message")
        .or_else(|| err.get("detail"))
        .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
        .unwrap_or_else(|| snippet(&v.to_string()));
    (kind, message)
}

fn status_error(status: u16, body: &str) -> ProviderError {
    let (kind, message) = match serde_json::from_str::<Value>(body) {
        Ok(v) => error_parts(&v, format!("http_{status}")),
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

fn protocol(message: impl Into<String>) -> ProviderError {
    ProviderError::Protocol {
        provider: NAME,
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<ChoiceDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChoiceDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Default)]
struct CallBuilder {
    id: String,
    name: String,
    arguments: String,
}

/// Which builder a tool-call delta belongs to. Servers that omit `index` (older
/// Ollama) send each call whole, so a new `id` starts a new call.
fn call_slot(calls: &BTreeMap<usize, CallBuilder>, delta: &ToolCallDelta) -> usize {
    if let Some(i) = delta.index {
        return i;
    }
    let last = calls.keys().next_back().copied();
    match (&delta.id, last) {
        (Some(id), Some(l))
            if calls
                .get(&l)
                .is_some_and(|c| c.id == *id || c.id.is_empty()) =>
        {
            l
        }
        (Some(_), Some(l)) => l + 1,
        (_, Some(l)) => l,
        (_, None) => 0,
    }
}

fn finish_reason(s: &str) -> StopReason {
    match s {
        "stop" => StopReason::EndTurn,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        "content_filter" => StopReason::Refusal,
        other => StopReason::Other(other.to_string()),
    }
}

async fn read_stream(
    response: reqwest::Response,
    idle: std::time::Duration,
    on_text: &mut (dyn FnMut(&str) + Send + '_),
) -> Result<ModelResponse, ProviderError> {
    let mut events = SseEvents::new(Box::pin(response.bytes_stream()));
    let mut answer = StreamedAnswer::default();
    let mut done = false;

    while let Some(event) =
        within_idle(NAME, idle, "reading the event stream", events.next()).await?
    {
        let event = event.map_err(|e| ProviderError::Transport {
            provider: NAME,
            message: format!("reading the event stream: {e}"),
        })?;
        let data = event.data.trim();
        if data == "[DONE]" {
            done = true;
            break;
        }
        if data.is_empty() {
            continue;
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            protocol(format!(
                "stream chunk is not valid ({e}): {}",
                snippet(data)
            ))
        })?;
        answer.apply(chunk, on_text)?;
    }
    // Some compatible servers close the stream without `[DONE]`; a finish reason is
    // enough to know the answer is complete. Without either, it was cut off.
    if !done && answer.finish.is_none() {
        return Err(ProviderError::Transport {
            provider: NAME,
            message: "the stream ended before a finish_reason or [DONE]".into(),
        });
    }
    answer.into_response()
}

/// The answer assembled so far from the stream's chunks.
#[derive(Default)]
struct StreamedAnswer {
    text: String,
    calls: BTreeMap<usize, CallBuilder>,
    usage: Usage,
    finish: Option<String>,
}

impl StreamedAnswer {
    /// Folds one chunk in: an in-stream error, usage, text (passed on to `on_text`) and
    /// tool-call pieces.
    fn apply(
        &mut self,
        chunk: Chunk,
        on_text: &mut (dyn FnMut(&str) + Send + '_),
    ) -> Result<(), ProviderError> {
        if let Some(err) = &chunk.error {
            let (kind, message) = error_parts(&json!({"error": err}), "stream_error".into());
            return Err(ProviderError::Api {
                provider: NAME,
                status: 0,
                retryable: retryable_kind(&kind),
                kind,
                message,
            });
        }
        if let Some(u) = &chunk.usage {
            let cached = u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0);
            self.usage.input_tokens = u.prompt_tokens.saturating_sub(cached);
            self.usage.cache_read_input_tokens = cached;
            self.usage.output_tokens = u.completion_tokens;
        }
        // Only one completion is requested (n = 1), so only the first choice matters.
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(());
        };
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(reason);
        }
        let delta = choice.delta.unwrap_or_default();
        if let Some(piece) = delta.content.filter(|p| !p.is_empty()) {
            on_text(&piece);
            self.text.push_str(&piece);
        }
        for call in delta.tool_calls.unwrap_or_default() {
            self.apply_call(call);
        }
        Ok(())
    }

    /// Appends one tool-call piece to the call it belongs to.
    fn apply_call(&mut self, call: ToolCallDelta) {
        let slot = call_slot(&self.calls, &call);
        let builder = self.calls.entry(slot).or_default();
        if let Some(id) = call.id.filter(|i| !i.is_empty()) {
            builder.id = id;
        }
        if let Some(f) = call.function {
            if let Some(name) = f.name.filter(|n| !n.is_empty())
                && builder.name.is_empty()
            {
                builder.name = name;
            }
            if let Some(args) = f.arguments {
                builder.arguments.push_str(&args);
            }
        }
    }

    /// The finished response: text first, then the tool calls in index order.
    fn into_response(self) -> Result<ModelResponse, ProviderError> {
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(ContentBlock::Text { text: self.text });
        }
        for (index, call) in self.calls {
            content.push(tool_use_block(index, call)?);
        }
        let has_calls = content
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolUse { .. }));
        let stop_reason = match self.finish.as_deref() {
            // Some servers say "stop" even when they made tool calls.
            _ if has_calls => StopReason::ToolUse,
            Some(f) => finish_reason(f),
            None => StopReason::EndTurn,
        };
        Ok(ModelResponse {
            content,
            stop_reason,
            usage: self.usage,
        })
    }
}

/// The tool-use block for the call at `index`, its arguments parsed as JSON.
fn tool_use_block(index: usize, call: CallBuilder) -> Result<ContentBlock, ProviderError> {
    if call.name.is_empty() {
        return Err(protocol(format!("tool call {index} has no function name")));
    }
    let input = if call.arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&call.arguments).map_err(|e| {
            protocol(format!(
                "tool call {index} ({}) has invalid arguments JSON ({e}): {}",
                call.name,
                snippet(&call.arguments)
            ))
        })?
    };
    let id = if call.id.is_empty() {
        format!("call_{index}")
    } else {
        call.id
    };
    Ok(ContentBlock::ToolUse {
        id,
        name: call.name,
        input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_become_tool_messages_before_user_text() {
        let req = ModelRequest {
            model: "gpt".into(),
            system: "sys".into(),
            messages: vec![
                Message::user_text("hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::ToolUse {
                        id: "c1".into(),
                        name: "bash".into(),
                        input: json!({"command": "ls"}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        ContentBlock::ToolResult {
                            tool_use_id: "c1".into(),
                            content: "nope".into(),
                            is_error: true,
                        },
                        ContentBlock::Text {
                            text: "also this".into(),
                        },
                    ],
                },
            ],
            tools: vec![],
            max_tokens: 10,
        };
        let body = request_body(&req);
        let m = body["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"command":"ls"}"#
        );
        assert_eq!(m[2]["content"], Value::Null);
        assert_eq!(m[3]["role"], "tool");
        assert_eq!(m[3]["tool_call_id"], "c1");
        assert_eq!(m[3]["content"], "Error: nope");
        assert_eq!(m[4], json!({"role": "user", "content": "also this"}));
        assert!(body.get("tools").is_none());
        assert_eq!(body["stream_options"]["include_usage"], true);
    }
}

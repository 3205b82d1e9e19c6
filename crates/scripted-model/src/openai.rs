//! `POST /v1/chat/completions`: the OpenAI Chat Completions API.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::scenario::{Conversation, Turn};
use crate::{
    Fault, Output, Shared, json_pieces, json_response, never_respond, shape_output, sse_response,
    stalled_sse_response,
};
use crate::{text_pieces, tokens};

pub(crate) async fn chat_completions(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(uri.path(), &headers, &body);
    let scenario = shared.scenario();

    if let Err(response) = check_api_key(&headers, scenario.api_key.as_deref()) {
        return *response;
    }
    let (stream_fault, stall) = match take_fault(&shared) {
        Ok(fault) => fault,
        Err(response) => return *response,
    };
    let parsed = match parse_body(&body) {
        Ok(p) => p,
        Err(response) => return *response,
    };

    if let Some((kind, message)) = &stream_fault
        && !parsed.stream
    {
        let status = if kind == "overloaded_error" { 529 } else { 500 };
        return error(status, kind, message, None, None, None);
    }

    let prompt_tokens = tokens(body.len());
    let planned = scenario.plan(&parsed.conversation);
    let out = shape_output(&shared, planned, parsed.max_tokens, "call_scripted_");
    let completion = Completion {
        id: format!("chatcmpl-scripted{:08}", shared.next_id()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: &parsed.model,
        include_usage: parsed.include_usage,
        usage: json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": out.output_tokens,
            "total_tokens": prompt_tokens + out.output_tokens,
        }),
    };

    if stall.is_some() && !parsed.stream {
        return never_respond().await;
    }
    if !parsed.stream {
        return completion.json_response(&out);
    }
    completion.sse_response(&out, stream_fault, stall)
}

/// Checks the `Authorization: Bearer` header against the scenario's key, answering
/// with the API's 401 bodies when it is missing or wrong.
fn check_api_key(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Box<Response>> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(Box::new(error(
            401,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
            None,
            None,
        ))),
        Some(key) if key != expected => Err(Box::new(error(
            401,
            "invalid_request_error",
            "Incorrect API key provided.",
            None,
            Some("invalid_api_key"),
            None,
        ))),
        Some(_) => Ok(()),
    }
}

/// The error a stream should end with (kind, message).
type StreamFault = Option<(String, String)>;

/// Pops the next scripted fault: a status fault becomes the response itself; a stream
/// error or a stall is returned for the answer to apply.
fn take_fault(shared: &Shared) -> Result<(StreamFault, Option<usize>), Box<Response>> {
    match shared.pop_fault() {
        Some(Fault::Status {
            status,
            kind,
            message,
            retry_after,
        }) => {
            let code = (status == 429).then_some("rate_limit_exceeded");
            Err(Box::new(error(
                status,
                &kind,
                &message,
                None,
                code,
                retry_after,
            )))
        }
        Some(Fault::StreamError { kind, message }) => Ok((Some((kind, message)), None)),
        Some(Fault::StreamStall { after_frames }) => Ok((None, Some(after_frames))),
        None => Ok((None, None)),
    }
}

/// Parses and validates the JSON body, answering 400 when it is not acceptable.
fn parse_body(body: &[u8]) -> Result<Parsed, Box<Response>> {
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            400,
            "invalid_request_error",
            &format!("We could not parse the JSON body of your request: {e}"),
            None,
            None,
            None,
        ))
    })?;
    parse_request(&request).map_err(|(param, message)| {
        Box::new(error(
            400,
            "invalid_request_error",
            &message,
            Some(param),
            None,
            None,
        ))
    })
}

/// What every body or chunk of one completion shares.
struct Completion<'a> {
    id: String,
    created: u64,
    model: &'a str,
    include_usage: bool,
    usage: Value,
}

impl Completion<'_> {
    /// The non-streaming `chat.completion` body.
    fn json_response(&self, out: &Output) -> Response {
        let tool_calls: Vec<Value> = out
            .tool_calls
            .iter()
            .map(|(id, name, input)| {
                json!({"id": id, "type": "function",
                       "function": {"name": name, "arguments": input.to_string()}})
            })
            .collect();
        let mut message = json!({"role": "assistant", "content": out.text, "refusal": null});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let body = json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null,
                         "finish_reason": finish_reason(out)}],
            "usage": self.usage,
        });
        json_response(StatusCode::OK, body, None)
    }

    /// One `chat.completion.chunk` server-sent event.
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    }

    /// The streamed answer; with a stream fault, half the text then an error event;
    /// with a stall, the frames stop after `after_frames`.
    fn sse_response(
        &self,
        out: &Output,
        stream_fault: StreamFault,
        stall: Option<usize>,
    ) -> Response {
        let mut frames = vec![self.chunk(json!({"role": "assistant", "content": ""}), None)];
        if let Some((kind, message)) = stream_fault {
            let text = out.text.clone().unwrap_or_else(|| "Working on it".into());
            let pieces = text_pieces(&text);
            for piece in pieces.iter().take(pieces.len().div_ceil(2)) {
                frames.push(self.chunk(json!({"content": piece}), None));
            }
            let err =
                json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
            frames.push(format!("data: {err}\n\n"));
            return sse_response(frames, &[]);
        }
        if let Some(text) = &out.text {
            for piece in text_pieces(text) {
                frames.push(self.chunk(json!({"content": piece}), None));
            }
        }
        for (index, (call_id, name, input)) in out.tool_calls.iter().enumerate() {
            frames.push(self.chunk(
                json!({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                None,
            ));
            for piece in json_pieces(&input.to_string()) {
                frames.push(self.chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
        }
        frames.push(self.chunk(json!({}), Some(finish_reason(out))));
        if self.include_usage {
            let c = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": self.usage,
            });
            frames.push(format!("data: {c}\n\n"));
        }
        frames.push("data: [DONE]\n\n".to_string());
        if let Some(after_frames) = stall {
            return stalled_sse_response(frames, after_frames);
        }
        sse_response(frames, &[])
    }
}

fn finish_reason(out: &Output) -> &'static str {
    if out.truncated {
        "length"
    } else if out.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

fn error(
    status: u16,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
    retry_after: Option<u64>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
        retry_after,
    )
}

pub(crate) struct Parsed {
    pub model: String,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    pub conversation: Conversation,
}

/// Validates the request minimally; errors carry the offending `param`.
pub(crate) fn parse_request(req: &Value) -> Result<Parsed, (&'static str, String)> {
    let obj = req.as_object().ok_or((
        "body",
        "The request body must be a JSON object.".to_string(),
    ))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or(("model", "you must provide a model parameter".to_string()))?
        .to_string();
    let max_tokens = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64);
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(tools) = obj.get("tools") {
        let tools = tools
            .as_array()
            .ok_or(("tools", "'tools' must be an array".to_string()))?;
        for t in tools {
            let ok = t.get("type").and_then(Value::as_str) == Some("function")
                && t.pointer("/function/name")
                    .and_then(Value::as_str)
                    .is_some();
            if !ok {
                return Err((
                    "tools",
                    "each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}"
                        .to_string(),
                ));
            }
        }
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or((
            "messages",
            "'messages' must contain at least one message".to_string(),
        ))?;

    let mut system = String::new();
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let text = content_text(m.get("content"));
        match role {
            "system" | "developer" => system.push_str(&text),
            "user" => turns.push(Turn::UserText(text)),
            "assistant" => turns.push(Turn::Assistant),
            "tool" => {
                if m.get("tool_call_id").and_then(Value::as_str).is_none() {
                    return Err((
                        "messages",
                        format!("messages[{i}]: 'tool_call_id' is required for role 'tool'"),
                    ));
                }
                turns.push(Turn::ToolResult(text));
            }
            other => {
                return Err((
                    "messages",
                    format!(
                        "messages[{i}].role: '{other}' is not one of 'system', 'developer', 'user', 'assistant', 'tool'"
                    ),
                ));
            }
        }
    }
    Ok(Parsed {
        model,
        max_tokens,
        stream,
        include_usage,
        conversation: Conversation { system, turns },
    })
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

//! `POST /v1/messages`: the Anthropic Messages API.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::scenario::{Conversation, Turn};
use crate::{
    Fault, Output, Shared, json_pieces, json_response, never_respond, shape_output, sse_response,
    stalled_sse_response,
};
use crate::{text_pieces, tokens};

pub(crate) async fn messages(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(uri.path(), &headers, &body);
    let scenario = shared.scenario();

    if let Err(response) = check_headers(&headers, scenario.api_key.as_deref()) {
        return *response;
    }
    let (stream_fault, stall) = match take_fault(&shared) {
        Ok(fault) => fault,
        Err(response) => return *response,
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                400,
                "invalid_request_error",
                &format!("request body is not valid JSON: {e}"),
                None,
            );
        }
    };
    let parsed = match parse_request(&request) {
        Ok(p) => p,
        Err(message) => return error(400, "invalid_request_error", &message, None),
    };

    if let Some((kind, message)) = &stream_fault
        && !parsed.stream
    {
        let status = if kind == "overloaded_error" { 529 } else { 500 };
        return error(status, kind, message, None);
    }

    let (cache_read, cache_creation) = {
        let mut st = shared.lock();
        cache_usage(&request, &mut st.cached_prefixes)
    };
    let input_tokens = tokens(body.len())
        .saturating_sub(cache_read + cache_creation)
        .max(1);
    let usage = json!({
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "output_tokens": 1,
    });

    let planned = scenario.plan(&parsed.conversation);
    let out = shape_output(&shared, planned, Some(parsed.max_tokens), "toolu_scripted_");
    let msg_id = format!("msg_scripted_{:08}", shared.next_id());
    let request_id = format!("req_scripted_{:08}", shared.next_id());

    if let Some(after_frames) = stall {
        if !parsed.stream {
            return never_respond().await;
        }
        let frames = stream_frames(&msg_id, &parsed.model, usage, &out);
        return stalled_sse_response(frames, after_frames);
    }
    if parsed.stream {
        let frames = match stream_fault {
            Some((kind, message)) => {
                stream_fault_frames(&msg_id, &parsed.model, &usage, &out, &kind, &message)
            }
            None => stream_frames(&msg_id, &parsed.model, usage, &out),
        };
        sse_response(frames, &[("request-id", request_id)])
    } else {
        message_response(&msg_id, &parsed.model, usage, &out)
    }
}

/// Checks `x-api-key` against the scenario's key and that `anthropic-version` is
/// present, answering with the API's error bodies otherwise.
fn check_headers(headers: &HeaderMap, expected_key: Option<&str>) -> Result<(), Box<Response>> {
    if let Some(expected) = expected_key {
        match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            None => {
                return Err(Box::new(error(
                    401,
                    "authentication_error",
                    "x-api-key header is required",
                    None,
                )));
            }
            Some(key) if key != expected => {
                return Err(Box::new(error(
                    401,
                    "authentication_error",
                    "invalid x-api-key",
                    None,
                )));
            }
            Some(_) => {}
        }
    }
    if !headers.contains_key("anthropic-version") {
        return Err(Box::new(error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
            None,
        )));
    }
    Ok(())
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
        }) => Err(Box::new(error(status, &kind, &message, retry_after))),
        Some(Fault::StreamError { kind, message }) => Ok((Some((kind, message)), None)),
        Some(Fault::StreamStall { after_frames }) => Ok((None, Some(after_frames))),
        None => Ok((None, None)),
    }
}

/// The non-streaming `message` body.
fn message_response(msg_id: &str, model: &str, mut usage: Value, out: &Output) -> Response {
    usage["output_tokens"] = json!(out.output_tokens);
    let body = json!({
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(out),
        "stop_reason": stop_reason(out),
        "stop_sequence": null,
        "usage": usage,
    });
    json_response(StatusCode::OK, body, None)
}

fn error(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
        retry_after,
    )
}

fn stop_reason(out: &Output) -> &'static str {
    if out.truncated {
        "max_tokens"
    } else if out.tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

fn content_blocks(out: &Output) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(text) = &out.text {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for (id, name, input) in &out.tool_calls {
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    blocks
}

fn frame(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn message_start(msg_id: &str, model: &str, usage: &Value) -> String {
    frame(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": null, "stop_sequence": null, "usage": usage,
        }}),
    )
}

fn stream_frames(msg_id: &str, model: &str, usage: Value, out: &Output) -> Vec<String> {
    let mut frames = vec![message_start(msg_id, model, &usage)];
    let mut index = 0;
    if let Some(text) = &out.text {
        frames.push(frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
        ));
        frames.push(frame("ping", json!({"type": "ping"})));
        for piece in text_pieces(text) {
            frames.push(frame(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        frames.push(frame(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for (id, name, input) in &out.tool_calls {
        frames.push(frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        ));
        if index == 0 {
            frames.push(frame("ping", json!({"type": "ping"})));
        }
        // The API opens with an empty partial_json; clients must cope with it.
        let mut pieces = vec![String::new()];
        pieces.extend(json_pieces(&input.to_string()));
        for piece in pieces {
            frames.push(frame(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        frames.push(frame(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    frames.push(frame(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(out), "stop_sequence": null},
               "usage": {"output_tokens": out.output_tokens}}),
    ));
    frames.push(frame("message_stop", json!({"type": "message_stop"})));
    frames
}

/// A stream that breaks down: message_start, a little text, then an error event.
fn stream_fault_frames(
    msg_id: &str,
    model: &str,
    usage: &Value,
    out: &Output,
    kind: &str,
    message: &str,
) -> Vec<String> {
    let text = out.text.clone().unwrap_or_else(|| "Working on it".into());
    let pieces = text_pieces(&text);
    let mut frames = vec![
        message_start(msg_id, model, usage),
        frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        frame("ping", json!({"type": "ping"})),
    ];
    for piece in pieces.iter().take(pieces.len().div_ceil(2)) {
        frames.push(frame(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    frames.push(frame(
        "error",
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    ));
    frames
}

pub(crate) struct Parsed {
    pub model: String,
    pub max_tokens: u64,
    pub stream: bool,
    pub conversation: Conversation,
}

/// Validates the documented required fields and the message structure, and reduces
/// the request to a [`Conversation`]. Consecutive messages with the same role are
/// rejected (stricter than the API, which merges them) to catch clients that forget
/// to put all tool results into one user turn.
pub(crate) fn parse_request(req: &Value) -> Result<Parsed, String> {
    let obj = req
        .as_object()
        .ok_or("request body must be a JSON object")?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("model: Field required")?
        .to_string();
    let max_tokens = obj
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or("max_tokens: Field required")?;
    if max_tokens == 0 {
        return Err("max_tokens: must be greater than or equal to 1".into());
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("stream: Input should be a valid boolean".into()),
    };
    let system = parse_system(obj.get("system"))?;
    if let Some(tools) = obj.get("tools") {
        check_tools(tools)?;
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let turns = parse_turns(messages)?;
    Ok(Parsed {
        model,
        max_tokens,
        stream,
        conversation: Conversation { system, turns },
    })
}

/// `system` as one string: absent, a string, or a list of text blocks.
fn parse_system(system: Option<&Value>) -> Result<String, String> {
    match system {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut s = String::new();
            for (i, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(format!("system.{i}.type: Input should be 'text'"));
                }
                s.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Ok(s)
        }
        Some(_) => Err("system: Input should be a valid string or list".into()),
    }
}

/// Every tool needs a `name` and an object `input_schema`.
fn check_tools(tools: &Value) -> Result<(), String> {
    let tools = tools
        .as_array()
        .ok_or("tools: Input should be a valid list")?;
    for (i, t) in tools.iter().enumerate() {
        if t.get("name").and_then(Value::as_str).is_none() {
            return Err(format!("tools.{i}.name: Field required"));
        }
        if !t.get("input_schema").is_some_and(Value::is_object) {
            return Err(format!("tools.{i}.input_schema: Field required"));
        }
    }
    Ok(())
}

/// Reduces the messages to turns, checking that roles alternate (starting with the
/// user) and that each assistant `tool_use` is answered by a `tool_result` in the
/// next user message, and only those.
fn parse_turns(messages: &[Value]) -> Result<Vec<Turn>, String> {
    let mut turns = Vec::new();
    let mut prev_role: Option<&str> = None;
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or(format!("messages.{i}.role: Field required"))?;
        if role != "user" && role != "assistant" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        if i == 0 && role != "user" {
            return Err("messages: first message must use the \"user\" role".into());
        }
        if prev_role == Some(role) {
            return Err(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            ));
        }
        prev_role = Some(role);
        let blocks = content_as_blocks(m.get("content"), i)?;
        if role == "assistant" {
            turns.push(Turn::Assistant);
            pending_tool_uses = tool_use_ids(&blocks, i)?;
            continue;
        }
        user_turns(&blocks, i, &pending_tool_uses, &mut turns)?;
        pending_tool_uses.clear();
    }
    Ok(turns)
}

/// The ids of the `tool_use` blocks of assistant message `i`.
fn tool_use_ids(blocks: &[Value], i: usize) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for b in blocks {
        if b.get("type").and_then(Value::as_str) == Some("tool_use") {
            let id = b
                .get("id")
                .and_then(Value::as_str)
                .ok_or(format!("messages.{i}: tool_use.id: Field required"))?;
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// Adds the turns of user message `i`, checking its `tool_result` blocks answer
/// exactly the pending `tool_use` ids.
fn user_turns(
    blocks: &[Value],
    i: usize,
    pending_tool_uses: &[String],
    turns: &mut Vec<Turn>,
) -> Result<(), String> {
    let mut answered = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => turns.push(Turn::UserText(
                b.get("text").and_then(Value::as_str).unwrap_or("").into(),
            )),
            Some("tool_result") => {
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                if !pending_tool_uses.iter().any(|p| p == id) {
                    return Err(format!(
                        "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    ));
                }
                answered.push(id.to_string());
                turns.push(Turn::ToolResult(tool_result_text(b.get("content"))));
            }
            _ => {}
        }
    }
    if let Some(missing) = pending_tool_uses.iter().find(|p| !answered.contains(p)) {
        return Err(format!(
            "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}. Each `tool_result` block must have a corresponding `tool_use` block in the next message."
        ));
    }
    Ok(())
}

fn content_as_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str).is_none() {
                    return Err(format!("messages.{i}.content.{j}.type: Field required"));
                }
            }
            Ok(blocks.clone())
        }
        _ => Err(format!("messages.{i}.content: Field required")),
    }
}

fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Plausible prompt-cache accounting: every block marked `cache_control` ends a
/// cacheable prefix (tools, then system, then messages). The longest prefix seen
/// before is read from cache; the newest breakpoint's prefix, if new, is written.
/// Returns (cache_read_input_tokens, cache_creation_input_tokens).
fn cache_usage(req: &Value, seen: &mut HashSet<u64>) -> (u64, u64) {
    let mut segments: Vec<&Value> = Vec::new();
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        segments.extend(tools);
    }
    if let Some(system) = req.get("system").and_then(Value::as_array) {
        segments.extend(system);
    }
    if let Some(messages) = req.get("messages").and_then(Value::as_array) {
        for m in messages {
            if let Some(blocks) = m.get("content").and_then(Value::as_array) {
                segments.extend(blocks);
            }
        }
    }

    let mut hasher = DefaultHasher::new();
    let mut len = 0usize;
    let mut breakpoints: Vec<(u64, usize)> = Vec::new();
    for seg in segments {
        let marked = seg.get("cache_control").is_some();
        let canonical = match seg {
            Value::Object(map) => {
                let stripped: Map<String, Value> = map
                    .iter()
                    .filter(|(k, _)| *k != "cache_control")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Value::Object(stripped).to_string()
            }
            other => other.to_string(),
        };
        hasher.write(canonical.as_bytes());
        len += canonical.len();
        if marked {
            breakpoints.push((hasher.finish(), len));
        }
    }

    let read = breakpoints
        .iter()
        .filter(|(h, _)| seen.contains(h))
        .map(|(_, l)| *l)
        .max()
        .unwrap_or(0);
    let creation = match breakpoints.last() {
        Some((h, l)) if !seen.contains(h) => l.saturating_sub(read),
        _ => 0,
    };
    for (h, _) in &breakpoints {
        seen.insert(*h);
    }
    let as_tokens = |n: usize| if n == 0 { 0 } else { tokens(n) };
    (as_tokens(read), as_tokens(creation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_tool_result_without_tool_use() {
        let req = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "hi"}]}
        ]});
        let err = parse_request(&req).err().unwrap();
        assert!(err.contains("tool_use_id"), "{err}");
    }

    #[test]
    fn rejects_unanswered_tool_use() {
        let req = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {}}]},
            {"role": "user", "content": "and?"}
        ]});
        let err = parse_request(&req).err().unwrap();
        assert!(err.contains("t1"), "{err}");
    }

    #[test]
    fn cache_reads_an_identical_prefix_seen_before() {
        let mut seen = HashSet::new();
        let first = json!({"system": [{"type": "text", "text": "long system prompt", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]});
        let (read, created) = cache_usage(&first, &mut seen);
        assert_eq!(read, 0);
        assert!(created > 0);
        let second = json!({"system": [{"type": "text", "text": "long system prompt", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                         {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                         {"role": "user", "content": [{"type": "text", "text": "more", "cache_control": {"type": "ephemeral"}}]}]});
        let (read2, created2) = cache_usage(&second, &mut seen);
        assert!(read2 > 0 && created2 > 0);
        let other = json!({"system": [{"type": "text", "text": "different", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(cache_usage(&other, &mut seen).0, 0);
    }
}

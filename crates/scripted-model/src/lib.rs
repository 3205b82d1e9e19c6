//! A scripted model server for tests and the offline demo.
//!
//! It speaks the Anthropic Messages API (`POST /v1/messages`) and the OpenAI Chat
//! Completions API (`POST /v1/chat/completions`) as publicly documented, streaming and
//! not, with the documented error bodies and statuses. What it answers comes from a
//! [`Scenario`]; one-shot [`Fault`]s let tests exercise retries.
//!
//! The relay-style prefixed paths (`/anthropic/v1/messages`, `/openai/chat/completions`,
//! `/openai/v1/chat/completions`) are served too, so agent providers can point at it
//! directly.

mod anthropic;
mod openai;
mod scenario;

use axum::serve::ListenerExt;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use scenario::{Matcher, NO_RULE_MATCHED, Reply, Rule, Scenario, ToolCall};

/// A one-shot failure served instead of (or in the middle of) the next answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "fault")]
pub enum Fault {
    /// An error status with the API's error body, e.g. 529 `overloaded_error`, 429
    /// `rate_limit_error` (optionally with `retry-after` seconds).
    Status {
        status: u16,
        kind: String,
        message: String,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// A stream that starts normally, sends some text, then an error event. Without
    /// streaming it becomes a 529 (`overloaded_error`) or 500 status.
    StreamError { kind: String, message: String },
    /// A stream that sends its first `after_frames` server-sent events of the normal answer,
    /// then nothing more while keeping the connection open (a stalled upstream). Without
    /// streaming the response never starts.
    StreamStall { after_frames: usize },
}

impl Fault {
    pub fn status(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Fault::Status {
            status,
            kind: kind.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The documented Anthropic overload: 529 `overloaded_error`.
    pub fn overloaded() -> Self {
        Self::status(529, "overloaded_error", "Overloaded")
    }

    /// 429 `rate_limit_error` with a `retry-after` header.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Fault::Status {
            status: 429,
            kind: "rate_limit_error".into(),
            message: "Number of request tokens has exceeded your per-minute rate limit".into(),
            retry_after: Some(retry_after_secs),
        }
    }

    /// A stream that stalls for good after `after_frames` events.
    pub fn stream_stall(after_frames: usize) -> Self {
        Fault::StreamStall { after_frames }
    }

    /// A mid-stream `overloaded_error` event.
    pub fn stream_overloaded() -> Self {
        Fault::StreamError {
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body; a body that is not JSON is kept as a JSON string.
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    scenario: Scenario,
    faults: VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
    /// Hashes of the cacheable prefixes seen, for plausible prompt-cache usage.
    cached_prefixes: HashSet<u64>,
    next_id: u64,
}

#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that
        // matters to a test server; keep serving.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, path: &str, headers: &HeaderMap, body: &[u8]) {
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let headers = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.lock().requests.push(RecordedRequest {
            path: path.to_string(),
            headers,
            body,
        });
    }

    fn next_id(&self) -> u64 {
        let mut st = self.lock();
        st.next_id += 1;
        st.next_id
    }

    fn pop_fault(&self) -> Option<Fault> {
        self.lock().faults.pop_front()
    }

    fn scenario(&self) -> Scenario {
        self.lock().scenario.clone()
    }
}

/// A running scripted model server on 127.0.0.1. Stops when dropped.
#[derive(Debug)]
pub struct ScriptedModel {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl ScriptedModel {
    /// Starts on an ephemeral port of 127.0.0.1.
    pub async fn start(scenario: Scenario) -> std::io::Result<ScriptedModel> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), scenario).await
    }

    /// Starts on the given address (port 0 picks a free one).
    pub async fn start_at(addr: SocketAddr, scenario: Scenario) -> std::io::Result<ScriptedModel> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        shared.lock().scenario = scenario;
        let app = Router::new()
            .route("/v1/messages", post(anthropic::messages))
            .route("/anthropic/v1/messages", post(anthropic::messages))
            .route("/v1/chat/completions", post(openai::chat_completions))
            .route("/openai/chat/completions", post(openai::chat_completions))
            .route(
                "/openai/v1/chat/completions",
                post(openai::chat_completions),
            )
            .route("/v1/models", get(models))
            .route("/openai/v1/models", get(models))
            .route("/openai/models", get(models))
            .fallback(not_found)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener.tap_io(disable_nagle), app).await {
                tracing::error!(%error, "scripted model server stopped");
            }
        });
        tracing::debug!(%addr, "scripted model listening");
        Ok(ScriptedModel { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order (including rejected ones).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Replaces the scenario for the following requests.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.shared.lock().scenario = scenario;
    }

    /// Queues a one-shot fault; queued faults are served first, oldest first, one per
    /// request that passes authentication.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET /v1/models`, the cheap authenticated request clients use to check a key. Checked like
/// the real APIs do: Anthropic's `x-api-key` (its error body when wrong), else OpenAI's
/// `Authorization: Bearer` (its error body).
async fn models(
    axum::extract::State(shared): axum::extract::State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    shared.record(uri.path(), &headers, b"");
    let scenario = shared.scenario();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(expected) = &scenario.api_key {
        let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        match (header("x-api-key"), bearer) {
            (Some(k), _) | (None, Some(k)) if k == expected => {}
            (Some(_), _) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({
                        "type": "error",
                        "error": {"type": "authentication_error", "message": "invalid x-api-key"}
                    })),
                )
                    .into_response();
            }
            (None, given) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({
                        "error": {
                            "message": if given.is_some() { "Incorrect API key provided." } else { "You didn't provide an API key." },
                            "type": "invalid_request_error",
                            "param": null,
                            "code": if given.is_some() { Value::from("invalid_api_key") } else { Value::Null },
                        }
                    })),
                )
                    .into_response();
            }
        }
    }
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{"id": "scripted", "object": "model", "type": "model", "display_name": "Scripted model"}],
        "has_more": false
    }))
    .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "type": "error",
            "error": {"type": "not_found_error", "message": "Not found"}
        })),
    )
        .into_response()
}

/// Splits text into several stream deltas: one per word, spaces kept.
fn text_pieces(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

/// Splits serialized JSON into about four pieces on char boundaries, as real
/// streams cut tool arguments at arbitrary places.
fn json_pieces(json: &str) -> Vec<String> {
    let chars: Vec<char> = json.chars().collect();
    let size = chars.len().div_ceil(4).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// A crude token estimate (about four bytes a token), never zero.
fn tokens(bytes: usize) -> u64 {
    (bytes.div_ceil(4)).max(1) as u64
}

/// The planned reply cut to `max_tokens` when it would not fit, like a real model
/// that runs out of budget: text truncated, tool calls dropped.
struct Output {
    text: Option<String>,
    tool_calls: Vec<(String, String, Value)>,
    truncated: bool,
    output_tokens: u64,
}

fn shape_output(
    shared: &Shared,
    planned: scenario::Planned,
    max_tokens: Option<u64>,
    id_prefix: &str,
) -> Output {
    let size = planned.text.as_deref().map_or(0, str::len)
        + planned
            .tool_calls
            .iter()
            .map(|(n, v)| n.len() + v.to_string().len())
            .sum::<usize>();
    let budget = max_tokens.unwrap_or(u64::MAX);
    if tokens(size) > budget {
        let keep = usize::try_from(budget.saturating_mul(4)).unwrap_or(usize::MAX);
        let text: String = planned
            .text
            .unwrap_or_default()
            .chars()
            .take(keep)
            .collect();
        return Output {
            output_tokens: budget,
            text: Some(text).filter(|t| !t.is_empty()),
            tool_calls: Vec::new(),
            truncated: true,
        };
    }
    let tool_calls = planned
        .tool_calls
        .into_iter()
        .map(|(name, input)| {
            let id = format!("{id_prefix}{:08}", shared.next_id());
            (id, name, input)
        })
        .collect();
    Output {
        text: planned.text,
        tool_calls,
        truncated: false,
        output_tokens: tokens(size),
    }
}

fn sse_response(frames: Vec<String>, extra: &[(&'static str, String)]) -> Response {
    let stream = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(f))),
    );
    let mut resp = Response::new(Body::from_stream(stream));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    for (name, value) in extra {
        if let Ok(v) = header::HeaderValue::from_str(value) {
            headers.insert(*name, v);
        }
    }
    resp
}

/// The first `after_frames` frames, then a body that never ends and never sends more.
fn stalled_sse_response(mut frames: Vec<String>, after_frames: usize) -> Response {
    frames.truncate(after_frames);
    let start = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(f))),
    );
    let stream = futures_util::StreamExt::chain(start, futures_util::stream::pending());
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// A response whose headers never come.
async fn never_respond() -> Response {
    std::future::pending::<()>().await;
    StatusCode::GATEWAY_TIMEOUT.into_response()
}

fn json_response(status: StatusCode, body: Value, retry_after: Option<u64>) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    resp
}

/// Streaming replies are many small writes; with Nagle's algorithm each can wait for the
/// client's delayed ACK (~40 ms), which a real API server would not impose.
fn disable_nagle(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not disable Nagle on the scripted model");
    }
}

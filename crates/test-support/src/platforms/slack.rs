//! A local Slack: the Web API methods the Slack channel uses and Socket Mode, built from
//! <https://api.slack.com/methods>, <https://api.slack.com/apis/socket-mode> and
//! <https://api.slack.com/apis/rate-limits>.
//!
//! Web API answers are HTTP 200 with `{"ok":true,…}` or `{"ok":false,"error":"…"}`; rate
//! limits are HTTP 429 with `Retry-After` (seconds) and `{"ok":false,"error":"ratelimited"}`.
//! Socket Mode greets with `hello`, wraps events in `events_api` envelopes and redelivers an
//! envelope that was not acknowledged in time with `retry_attempt` + 1 and `retry_reason`.
//! Like Slack, the bot's own posts come back as `message` events carrying its `bot_id`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{FakeChat, FakePlatform, Posted, SentMessage};

pub const BOT_TOKEN: &str = "xoxb-1111-2222-fakebottoken";
pub const APP_TOKEN: &str = "xapp-1-AFAKEAPP-3333-fakeapptoken";
pub const BOT_USER_ID: &str = "UFAKEBOT1";
pub const BOT_ID: &str = "BFAKEBOT1";
pub const BOT_NAME: &str = "nanoclaw";
pub const TEAM_ID: &str = "TFAKE0001";
pub const OTHER_BOT_ID: &str = "BOTHERBOT";
const APP_ID: &str = "AFAKEAPP";
/// How long Slack waits for an envelope's acknowledgement before retrying (3 s on Slack;
/// shorter here so tests are quick).
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_millis(700);
/// Slack truncates messages longer than this.
const MAX_TEXT: usize = 40_000;

enum Cmd {
    Text(String),
    /// Close the socket without a close frame.
    Drop,
}

struct Envelope {
    id: String,
    body: Value,
    /// The message it carries, as the adapter names it (`channel:ts`), if any.
    message_id: Option<String>,
    sent_at: Option<Instant>,
    deliveries: u32,
    acked: bool,
}

#[derive(Default)]
struct S {
    /// Every message in each channel (top level and thread replies), oldest first.
    messages: HashMap<String, Vec<Value>>,
    /// Each posted message's event, by `channel:ts`, for redelivery.
    events: HashMap<String, Value>,
    sent: Vec<SentMessage>,
    envelopes: Vec<Envelope>,
    sockets: Vec<(u64, mpsc::UnboundedSender<Cmd>)>,
    rate_limited: u32,
    retry_after: Duration,
    last_refused: Option<Instant>,
    rate_log: Vec<(Instant, Instant)>,
    held: usize,
    uploads: HashMap<String, (String, Option<Vec<u8>>)>,
    hosted: HashMap<String, Vec<u8>>,
    post_calls: u64,
    last_malformed: Option<String>,
    revoked: bool,
}

struct Inner {
    addr: SocketAddr,
    s: Mutex<S>,
    counter: AtomicU64,
    connections: AtomicU64,
    holding: watch::Sender<bool>,
    ack_timeout: Mutex<Duration>,
    epoch: u64,
}

/// The fake Slack server; dropping it stops it.
pub struct FakeSlack {
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
        self.ticker.abort();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.s.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A fresh, increasing Slack timestamp.
    fn ts(&self) -> String {
        let n = self.next();
        format!("{}.{:06}", self.epoch + n / 1_000_000, n % 1_000_000)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Wraps `event` in an `events_api` envelope and queues it for the newest socket.
    fn push_event(&self, event: Value, message_id: Option<String>) -> String {
        let id = format!("env-{}", self.next());
        let body = json!({
            "envelope_id": id,
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "fake-verification-token",
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "type": "event_callback",
                "event_id": format!("Ev{}", self.next()),
                "event_time": self.epoch,
                "event": event,
            },
        });
        self.lock().envelopes.push(Envelope {
            id: id.clone(),
            body,
            message_id,
            sent_at: None,
            deliveries: 0,
            acked: false,
        });
        self.pump();
        id
    }

    /// Sends envelopes never sent, and redelivers those not acknowledged in time.
    fn pump(&self) {
        let timeout = *self.ack_timeout.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = self.lock();
        s.sockets.retain(|(_, tx)| !tx.is_closed());
        let Some(tx) = s.sockets.last().map(|(_, tx)| tx.clone()) else {
            return;
        };
        for env in s.envelopes.iter_mut().filter(|e| !e.acked) {
            let due = env.sent_at.is_none_or(|at| at.elapsed() >= timeout);
            if !due {
                continue;
            }
            if env.deliveries > 0 {
                env.body["retry_attempt"] = json!(env.deliveries);
                env.body["retry_reason"] = json!("timeout");
            }
            env.deliveries += 1;
            env.sent_at = Some(Instant::now());
            let _ = tx.send(Cmd::Text(env.body.to_string()));
        }
    }

    fn to_sockets(&self, text: &str) {
        for (_, tx) in &self.lock().sockets {
            let _ = tx.send(Cmd::Text(text.to_string()));
        }
    }
}

fn ok(body: Value) -> Response {
    let mut body = body;
    body["ok"] = json!(true);
    axum::Json(body).into_response()
}

fn slack_error(error: &str) -> Response {
    axum::Json(json!({"ok": false, "error": error})).into_response()
}

/// Parses `a=b&c=d` (form bodies).
fn parse_form(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A Web API call's arguments, from a JSON or a form body.
fn args(headers: &HeaderMap, body: &[u8]) -> Value {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json_body {
        return serde_json::from_slice(body).unwrap_or(Value::Null);
    }
    let form = parse_form(&String::from_utf8_lossy(body));
    Value::Object(
        form.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn arg<'a>(args: &'a Value, name: &str) -> Option<&'a str> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A channel id the fake knows: public/private channels (C, G) and DMs (D).
fn channel_exists(id: &str) -> bool {
    id.len() > 1
        && id.starts_with(['C', 'G', 'D'])
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn channel_type(id: &str) -> &'static str {
    if id.starts_with('D') { "im" } else { "channel" }
}

async fn web_api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let args = args(&headers, &body);
    let token = bearer(&headers);
    let wanted = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    match token.as_deref() {
        None => return slack_error("not_authed"),
        Some(t) if inner.lock().revoked => {
            let _ = t;
            return slack_error("invalid_auth");
        }
        Some(t) if t == wanted => {}
        Some(t) if t == APP_TOKEN || t == BOT_TOKEN => {
            return slack_error("not_allowed_token_type");
        }
        Some(_) => return slack_error("invalid_auth"),
    }
    let is_send = matches!(
        method.as_str(),
        "chat.postMessage" | "files.completeUploadExternal"
    );
    if is_send && let Some(resp) = rate_limit(&inner) {
        return resp;
    }
    match method.as_str() {
        "auth.test" => ok(json!({
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": false,
        })),
        "apps.connections.open" => {
            let ticket = inner.next();
            ok(
                json!({ "url": format!("ws://{}/link/?ticket={ticket}&app_id={APP_ID}", inner.addr) }),
            )
        }
        "chat.postMessage" => post_message(&inner, &args).await,
        "conversations.history" => history(&inner, &args),
        "conversations.replies" => replies(&inner, &args),
        "files.getUploadURLExternal" => upload_url(&inner, &args),
        "files.completeUploadExternal" => complete_upload(&inner, &args),
        _ => slack_error("unknown_method"),
    }
}

/// Answers 429 while [`FakePlatform::rate_limit_sends`] is in force; logs the next try.
fn rate_limit(inner: &Inner) -> Option<Response> {
    let mut s = inner.lock();
    let now = Instant::now();
    if s.rate_limited > 0 {
        s.rate_limited -= 1;
        s.last_refused = Some(now);
        let secs = s.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = slack_error("ratelimited");
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, secs.to_string().parse().ok()?);
        return Some(resp);
    }
    if let Some(refused) = s.last_refused.take() {
        s.rate_log.push((refused, now));
    }
    None
}

async fn post_message(inner: &Arc<Inner>, args: &Value) -> Response {
    let Some(channel) = arg(args, "channel").map(str::to_string) else {
        return slack_error("channel_not_found");
    };
    if !channel_exists(&channel) {
        return slack_error("channel_not_found");
    }
    let text = arg(args, "text").unwrap_or("").to_string();
    if text.is_empty() {
        return slack_error("no_text");
    }
    if text.chars().count() > MAX_TEXT {
        return slack_error("msg_too_long");
    }
    let thread = arg(args, "thread_ts").map(str::to_string);
    // Form bodies carry metadata as a JSON string.
    let metadata = match args.get("metadata") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let ts = inner.ts();
    let mut message = json!({
        "type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID,
        "text": text, "ts": ts, "team": TEAM_ID,
    });
    if let Some(t) = &thread {
        message["thread_ts"] = json!(t);
    }
    if !metadata.is_null() {
        message["metadata"] = metadata;
    }
    {
        let mut s = inner.lock();
        s.post_calls += 1;
        s.messages
            .entry(channel.clone())
            .or_default()
            .push(message.clone());
        s.sent.push(SentMessage {
            chat: channel.clone(),
            text: text.clone(),
            files: Vec::new(),
            thread: thread.clone(),
            reply_to: None,
        });
    }
    wait_if_held(inner).await;
    // Slack echoes the bot's own message to the app's event subscription.
    let mut echo = message.clone();
    echo["channel"] = json!(channel);
    echo["channel_type"] = json!(channel_type(&channel));
    echo["event_ts"] = json!(ts);
    if let Some(m) = echo.as_object_mut() {
        m.remove("metadata");
    }
    inner.push_event(echo, None);
    ok(json!({ "channel": channel, "ts": ts, "message": message }))
}

async fn wait_if_held(inner: &Inner) {
    let mut holding = inner.holding.subscribe();
    if *holding.borrow() {
        inner.lock().held += 1;
        let _ = holding.wait_for(|h| !*h).await;
    }
}

fn with_metadata(message: &Value, include: bool) -> Value {
    let mut m = message.clone();
    if !include && let Some(obj) = m.as_object_mut() {
        obj.remove("metadata");
    }
    m
}

fn limit(args: &Value) -> usize {
    arg(args, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, 999)
}

/// `conversations.history`: top-level messages, newest first.
fn history(inner: &Inner, args: &Value) -> Response {
    let Some(channel) = arg(args, "channel").filter(|c| channel_exists(c)) else {
        return slack_error("channel_not_found");
    };
    let include = arg(args, "include_all_metadata") == Some("true");
    let s = inner.lock();
    let all = s.messages.get(channel).cloned().unwrap_or_default();
    let top: Vec<Value> = all
        .iter()
        .rev()
        .filter(|m| m.get("thread_ts").is_none_or(|t| Some(t) == m.get("ts")))
        .take(limit(args))
        .map(|m| with_metadata(m, include))
        .collect();
    let has_more = all.len() > top.len();
    ok(json!({ "messages": top, "has_more": has_more, "response_metadata": {"next_cursor": ""} }))
}

/// `conversations.replies`: a thread's parent and replies, oldest first.
fn replies(inner: &Inner, args: &Value) -> Response {
    let Some(channel) = arg(args, "channel").filter(|c| channel_exists(c)) else {
        return slack_error("channel_not_found");
    };
    let Some(ts) = arg(args, "ts") else {
        return slack_error("thread_not_found");
    };
    let include = arg(args, "include_all_metadata") == Some("true");
    let s = inner.lock();
    let thread: Vec<Value> = s
        .messages
        .get(channel)
        .into_iter()
        .flatten()
        .filter(|m| {
            m.get("ts").and_then(Value::as_str) == Some(ts)
                || m.get("thread_ts").and_then(Value::as_str) == Some(ts)
        })
        .take(limit(args))
        .map(|m| with_metadata(m, include))
        .collect();
    if thread.is_empty() {
        return slack_error("thread_not_found");
    }
    ok(json!({ "messages": thread, "has_more": false }))
}

fn upload_url(inner: &Inner, args: &Value) -> Response {
    let (Some(name), Some(_length)) = (arg(args, "filename"), arg(args, "length")) else {
        return slack_error("invalid_arguments");
    };
    let id = format!("F{:08}", inner.next());
    inner
        .lock()
        .uploads
        .insert(id.clone(), (name.to_string(), None));
    ok(json!({ "upload_url": format!("{}/upload/v1/{id}", inner.base()), "file_id": id }))
}

async fn upload_bytes(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = inner.lock();
    match s.uploads.get_mut(&id) {
        Some(entry) => {
            entry.1 = Some(body.to_vec());
            (StatusCode::OK, format!("OK - {}", body.len())).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn complete_upload(inner: &Inner, args: &Value) -> Response {
    let files: Vec<Value> = arg(args, "files")
        .and_then(|f| serde_json::from_str(f).ok())
        .or_else(|| args.get("files").and_then(|f| f.as_array().cloned()))
        .unwrap_or_default();
    let channel = arg(args, "channel_id").map(str::to_string);
    if let Some(c) = &channel
        && !channel_exists(c)
    {
        return slack_error("channel_not_found");
    }
    let mut s = inner.lock();
    let mut done = Vec::new();
    for f in &files {
        let id = f.get("id").and_then(Value::as_str).unwrap_or("");
        match s.uploads.get(id) {
            Some((name, Some(data))) => done.push((id.to_string(), name.clone(), data.clone())),
            _ => return slack_error("file_not_found"),
        }
    }
    if done.is_empty() {
        return slack_error("invalid_arguments");
    }
    if let Some(channel) = channel {
        s.sent.push(SentMessage {
            chat: channel,
            text: arg(args, "initial_comment").unwrap_or("").to_string(),
            files: done
                .iter()
                .map(|(_, n, d)| (n.clone(), d.clone()))
                .collect(),
            thread: arg(args, "thread_ts").map(str::to_string),
            reply_to: None,
        });
    }
    let files: Vec<Value> = done
        .iter()
        .map(|(id, n, _)| json!({"id": id, "title": n}))
        .collect();
    ok(json!({ "files": files }))
}

/// `url_private_download`: needs the bot token.
async fn download(
    State(inner): State<Arc<Inner>>,
    Path((id, _name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if bearer(&headers).as_deref() != Some(BOT_TOKEN) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let file_id = id.rsplit('-').next().unwrap_or("").to_string();
    match inner.lock().hosted.get(&file_id) {
        Some(data) => data.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn link(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve_socket(inner, socket))
}

async fn serve_socket(inner: Arc<Inner>, mut socket: WebSocket) {
    let n = inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hello = json!({
        "type": "hello",
        "num_connections": inner.lock().sockets.len() + 1,
        "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID},
    });
    if socket.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    inner.lock().sockets.push((n, tx));
    inner.pump();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Text(text)) => {
                    if socket.send(Message::text(text)).await.is_err() { break; }
                }
                Some(Cmd::Drop) | None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let ack: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    if let Some(id) = ack.get("envelope_id").and_then(Value::as_str) {
                        let mut s = inner.lock();
                        if let Some(env) = s.envelopes.iter_mut().find(|e| e.id == id) {
                            env.acked = true;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    inner.lock().sockets.retain(|(id, _)| *id != n);
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let inner = Arc::new(Inner {
            addr,
            s: Mutex::new(S::default()),
            counter: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            holding: watch::Sender::new(false),
            ack_timeout: Mutex::new(DEFAULT_ACK_TIMEOUT),
            epoch,
        });
        let app = Router::new()
            .route("/api/{method}", post(web_api))
            .route("/upload/v1/{id}", post(upload_bytes))
            .route("/files-pri/{id}/download/{name}", get(download))
            .route("/link/", any(link))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let pump = inner.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                pump.pump();
            }
        });
        FakeSlack {
            inner,
            server,
            ticker,
        }
    }

    /// The Web API base the adapter is pointed at.
    pub fn api_base(&self) -> String {
        format!("{}/api", self.inner.base())
    }

    /// Sends a Socket Mode `disconnect` (`refresh_requested`, `warning`, `link_disabled`).
    pub fn disconnect(&self, reason: &str) {
        let msg =
            json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}});
        self.inner.to_sockets(&msg.to_string());
    }

    /// From now on every token is refused with `invalid_auth`.
    pub fn revoke_tokens(&self) {
        self.inner.lock().revoked = true;
    }

    /// How long an envelope may stay unacknowledged before it is redelivered.
    pub fn set_ack_timeout(&self, timeout: Duration) {
        *self.inner.ack_timeout.lock().unwrap() = timeout;
    }

    /// How many times envelopes carrying `message_id` (`channel:ts`) were sent, and whether
    /// each was acknowledged.
    pub fn deliveries(&self, message_id: &str) -> Vec<(u32, bool)> {
        let s = self.inner.lock();
        s.envelopes
            .iter()
            .filter(|e| e.message_id.as_deref() == Some(message_id))
            .map(|e| (e.deliveries, e.acked))
            .collect()
    }

    /// Whether the last malformed envelope was acknowledged.
    pub fn malformed_acked(&self) -> bool {
        let s = self.inner.lock();
        let id = s.last_malformed.clone();
        s.envelopes
            .iter()
            .any(|e| Some(&e.id) == id.as_ref() && e.acked)
    }

    /// Whether every envelope sent so far was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.inner.lock().envelopes.iter().all(|e| e.acked)
    }

    /// `chat.postMessage` calls so far (retries and refusals excluded).
    pub fn post_calls(&self) -> u64 {
        self.inner.lock().post_calls
    }

    /// Messages in `chat` as conversations.history keeps them (oldest first, metadata too).
    pub fn messages(&self, chat: &FakeChat) -> Vec<Value> {
        self.inner
            .lock()
            .messages
            .get(&chat.platform_id)
            .cloned()
            .unwrap_or_default()
    }

    /// A user posts in `chat`; in a group a mention also sends `app_mention`, as Slack does
    /// for apps subscribed to both.
    pub fn user_posts(
        &self,
        chat: &FakeChat,
        text: &str,
        mention: bool,
        thread_ts: Option<&str>,
        files: Vec<Value>,
    ) -> Posted {
        let inner = &self.inner;
        let ts = inner.ts();
        let text = if mention && chat.is_group {
            format!("<@{BOT_USER_ID}> {text}")
        } else {
            text.to_string()
        };
        let channel = chat.platform_id.clone();
        let mut event = json!({
            "type": "message", "channel": channel, "channel_type": channel_type(&channel),
            "user": chat.user_id, "text": text, "ts": ts, "event_ts": ts, "team": TEAM_ID,
        });
        if let Some(t) = thread_ts {
            event["thread_ts"] = json!(t);
            let parent = inner.lock().messages.get(&channel).and_then(|all| {
                all.iter()
                    .find(|m| m["ts"].as_str() == Some(t))
                    .and_then(|m| m["user"].as_str().map(str::to_string))
            });
            if let Some(parent) = parent {
                event["parent_user_id"] = json!(parent);
            }
        }
        if !files.is_empty() {
            event["subtype"] = json!("file_share");
            event["files"] = json!(files);
        }
        let id = format!("{channel}:{ts}");
        {
            let mut s = inner.lock();
            let mut stored = event.clone();
            if let Some(m) = stored.as_object_mut() {
                m.remove("channel");
                m.remove("channel_type");
            }
            s.messages.entry(channel.clone()).or_default().push(stored);
            s.events.insert(id.clone(), event.clone());
        }
        if mention && chat.is_group {
            let mut mention_event = event.clone();
            mention_event["type"] = json!("app_mention");
            if let Some(m) = mention_event.as_object_mut() {
                m.remove("channel_type");
                m.remove("subtype");
            }
            inner.push_event(mention_event, Some(id.clone()));
        }
        inner.push_event(event, Some(id.clone()));
        Posted {
            chat_id: channel,
            message_id: id,
        }
    }

    /// Hosts a file as Slack would for a user's upload; returns its `files[]` entry.
    pub fn host_file(&self, name: &str, data: &[u8], mimetype: &str) -> Value {
        let id = format!("F{:08}", self.inner.next());
        self.inner.lock().hosted.insert(id.clone(), data.to_vec());
        let url = format!(
            "{}/files-pri/{TEAM_ID}-{id}/download/{name}",
            self.inner.base()
        );
        json!({
            "id": id, "name": name, "title": name, "mimetype": mimetype, "size": data.len(),
            "mode": "hosted", "url_private": url, "url_private_download": url,
        })
    }
}

#[async_trait]
impl FakePlatform for FakeSlack {
    fn channel(&self) -> &'static str {
        "slack"
    }

    fn settings_toml(&self) -> String {
        format!("enabled = true\napi_base = \"{}\"\n", self.api_base())
    }

    fn secrets(&self) -> Vec<(String, String)> {
        vec![
            ("slack.app_token".into(), APP_TOKEN.into()),
            ("slack.bot_token".into(), BOT_TOKEN.into()),
        ]
    }

    fn max_message_len(&self) -> usize {
        4000
    }

    fn chat(&self, n: u32, is_group: bool) -> FakeChat {
        FakeChat {
            platform_id: format!("{}{n:08}", if is_group { 'C' } else { 'D' }),
            is_group,
            user_id: format!("U{n:08}"),
            user_name: format!("user{n}"),
        }
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, mention: bool) -> Posted {
        self.user_posts(chat, text, mention, None, Vec::new())
    }

    async fn user_sends_file(
        &self,
        chat: &FakeChat,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Posted {
        let file = self.host_file(file_name, data, "application/octet-stream");
        self.user_posts(chat, caption, true, None, vec![file])
    }

    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted {
        let ts = self.inner.ts();
        let channel = chat.platform_id.clone();
        let event = json!({
            "type": "message", "subtype": "bot_message", "channel": channel,
            "channel_type": channel_type(&channel), "bot_id": OTHER_BOT_ID,
            "username": "otherbot", "text": format!("<@{BOT_USER_ID}> {text}"),
            "ts": ts, "event_ts": ts,
        });
        let id = format!("{channel}:{ts}");
        self.inner.lock().events.insert(id.clone(), event.clone());
        self.inner.push_event(event, Some(id.clone()));
        Posted {
            chat_id: channel,
            message_id: id,
        }
    }

    async fn redeliver(&self, _chat: &FakeChat, message: &Posted) {
        let event = self.inner.lock().events.get(&message.message_id).cloned();
        if let Some(event) = event {
            self.inner
                .push_event(event, Some(message.message_id.clone()));
        }
    }

    async fn push_malformed(&self, chat: &FakeChat) {
        self.inner
            .to_sockets("{\"type\": \"events_api\", \"envelope_id\": ");
        let event = json!({
            "type": "message", "channel": 42, "user": ["U1"], "text": {"no": "text"},
            "ts": null, "note": format!("meant for {}", chat.platform_id),
        });
        let id = self.inner.push_event(event, None);
        self.inner.lock().last_malformed = Some(id);
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        let s = self.inner.lock();
        s.sent
            .iter()
            .filter(|m| m.chat == chat.platform_id)
            .cloned()
            .collect()
    }

    async fn drop_connections(&self) {
        for (_, tx) in &self.inner.lock().sockets {
            let _ = tx.send(Cmd::Drop);
        }
    }

    fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    fn rate_limit_sends(&self, count: u32, retry_after: Duration) {
        let mut s = self.inner.lock();
        s.rate_limited = count;
        s.retry_after = retry_after;
    }

    fn rate_limit_log(&self) -> Vec<(Instant, Instant)> {
        self.inner.lock().rate_log.clone()
    }

    fn hold_sends(&self) {
        self.inner.holding.send_replace(true);
    }

    fn release_sends(&self) {
        self.inner.holding.send_replace(false);
    }

    fn held_sends(&self) -> usize {
        self.inner.lock().held
    }
}

//! A local Telegram Bot API server (<https://core.telegram.org/bots/api>), for the Telegram
//! channel's tests and the host's conformance suite.
//!
//! It speaks the real wire format: `POST /bot<token>/<method>` with a JSON or multipart body
//! (query parameters too), answers `{"ok":true,"result":…}` or
//! `{"ok":false,"error_code":…,"description":…}`, serves files at
//! `/file/bot<token>/<file_path>`. Implemented: `getMe`, `getUpdates` (long polling that
//! honours `timeout`; an `offset` confirms and drops every update below it; a second poller
//! ends the first with 409 Conflict), `sendMessage`, `sendDocument` (multipart),
//! `sendChatAction`, `getFile`. MarkdownV2 is validated as strictly as the docs say (see
//! [`parse_markdown_v2`]) and what the bot sent is recorded as the text a user would see.
//! As on Telegram, the bot's own messages are not echoed back through `getUpdates`.
//!
//! For the conformance suite: [`SentMessage::text`] is the text a user sees (MarkdownV2
//! markup removed); a group message that addresses the bot starts with
//! `@nanoclaw_test_bot ` and carries a `mention` entity, as a Telegram client sends it;
//! message ids are `"<chat id>:<message id>"` (the adapter's `platform_msg_id`), since
//! Telegram numbers messages per chat; `retry_after` is whole seconds (rounded up);
//! [`FakePlatform::drop_connections`] ends the pending long poll (or the next one) with a
//! proxy's 502 page.

mod markdown;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

pub use markdown::parse_markdown_v2;

use super::{FakeChat, FakePlatform, Posted, SentMessage};

/// The bot's user id (the number before the `:` in its token).
pub const BOT_ID: i64 = 7_000_001;
pub const BOT_USERNAME: &str = "nanoclaw_test_bot";
pub const BOT_TOKEN: &str = "7000001:AAHfakeTelegramTokenForTests";
/// Another bot that posts in chats.
pub const OTHER_BOT_ID: i64 = 8_000_002;
const MAX_TEXT: usize = 4096;
const MAX_CAPTION: usize = 1024;

/// A file a user uploaded, downloadable through `getFile`.
struct StoredFile {
    unique_id: String,
    path: String,
    data: Vec<u8>,
}

/// What the bot sent, as recorded (plus what the fake's own tests look at).
#[derive(Debug, Clone)]
pub struct SentRecord {
    pub chat: i64,
    pub message_id: i64,
    pub message: SentMessage,
    /// `parse_mode` of the request (`None`: plain text).
    pub parse_mode: Option<String>,
}

#[derive(Default)]
struct Inner {
    next_update_id: i64,
    queue: Vec<Value>,
    /// The highest offset a `getUpdates` call confirmed.
    confirmed: i64,
    chats: HashMap<i64, Value>,
    blocked: Vec<i64>,
    messages: HashMap<(i64, i64), Value>,
    next_message_id: HashMap<i64, i64>,
    sent: Vec<SentRecord>,
    actions: Vec<(i64, String)>,
    files: HashMap<String, StoredFile>,
    next_file: u64,
    rate_limited: u32,
    retry_after_secs: u64,
    last_refused: Option<Instant>,
    rate_log: Vec<(Instant, Instant)>,
    held: usize,
    /// MarkdownV2 sends to refuse with "can't parse entities" regardless of content.
    refuse_markdown: u32,
    drop_pending: bool,
    poll_generation: u64,
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
    /// New updates, or polls to end.
    changed: Notify,
    hold: watch::Sender<bool>,
    polls: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fake Bot API server; stops when dropped.
pub struct FakeTelegram {
    base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Nanoclaw", "username": BOT_USERNAME})
}

fn mention_prefix() -> (String, Value) {
    let handle = format!("@{BOT_USERNAME}");
    let entity = json!({"type": "mention", "offset": 0, "length": handle.encode_utf16().count()});
    (format!("{handle} "), entity)
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

fn fail(code: u16, description: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({"ok": false, "error_code": code, "description": description});
    (status, axum::Json(body)).into_response()
}

fn bad_request(description: &str) -> Response {
    fail(400, &format!("Bad Request: {description}"))
}

impl FakeTelegram {
    /// Starts the server on a free local port.
    pub async fn start() -> FakeTelegram {
        let (hold, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            token: BOT_TOKEN.to_string(),
            inner: Mutex::new(Inner {
                next_update_id: 500_000,
                ..Inner::default()
            }),
            changed: Notify::new(),
            hold,
            polls: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/file/{bot}/{*path}", get(download))
            .route("/{bot}/{method}", any(method))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Telegram server");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram {
            base: format!("http://{addr}"),
            shared,
            server,
        }
    }

    /// The `api_base` setting that points the adapter here.
    pub fn api_base(&self) -> &str {
        &self.base
    }

    /// Adds `update` (`{"message": …}` or anything else, even malformed) to the queue with
    /// the next `update_id`; returns that id.
    pub fn push_update(&self, update: Value) -> i64 {
        let mut inner = self.shared.lock();
        let id = Self::enqueue(&mut inner, update);
        drop(inner);
        self.shared.changed.notify_waiters();
        id
    }

    fn enqueue(inner: &mut Inner, mut update: Value) -> i64 {
        let id = inner.next_update_id;
        inner.next_update_id += 1;
        if let Some(fields) = update.as_object_mut() {
            fields.insert("update_id".to_string(), json!(id));
        } else {
            update = json!({"update_id": id, "message": update});
        }
        inner.queue.push(update);
        id
    }

    /// Posts a user message in `chat` with extra `fields` (text, entities, files, …).
    pub fn post(&self, chat: &FakeChat, from: Value, fields: Value) -> Posted {
        let chat_id: i64 = chat.platform_id.parse().expect("a Telegram chat id");
        let mut inner = self.shared.lock();
        let chat_obj = inner
            .chats
            .get(&chat_id)
            .cloned()
            .unwrap_or_else(|| json!({"id": chat_id, "type": "private"}));
        let message_id = Self::next_message_id(&mut inner, chat_id);
        let mut message = json!({
            "message_id": message_id, "date": now_secs(), "chat": chat_obj, "from": from,
        });
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            message[k] = v;
        }
        inner
            .messages
            .insert((chat_id, message_id), message.clone());
        Self::enqueue(&mut inner, json!({"message": message}));
        drop(inner);
        self.shared.changed.notify_waiters();
        Posted {
            chat_id: chat_id.to_string(),
            message_id: format!("{chat_id}:{message_id}"),
        }
    }

    fn next_message_id(inner: &mut Inner, chat: i64) -> i64 {
        let next = inner.next_message_id.entry(chat).or_insert(1);
        let id = *next;
        *next += 1;
        id
    }

    fn user(chat: &FakeChat) -> Value {
        json!({"id": chat.user_id.parse::<i64>().unwrap_or(1), "is_bot": false,
               "first_name": chat.user_name, "language_code": "en"})
    }

    /// `text` with an `@bot` mention in front when `mention` in a group.
    fn addressed(chat: &FakeChat, text: &str, mention: bool) -> (String, Vec<Value>) {
        if chat.is_group && mention {
            let (prefix, entity) = mention_prefix();
            (format!("{prefix}{text}"), vec![entity])
        } else {
            (text.to_string(), Vec::new())
        }
    }

    /// A user writes in a forum topic.
    pub fn user_says_in_topic(
        &self,
        chat: &FakeChat,
        thread: i64,
        text: &str,
        mention: bool,
    ) -> Posted {
        let (text, entities) = Self::addressed(chat, text, mention);
        self.post(chat, Self::user(chat), json!({
            "text": text, "entities": entities, "message_thread_id": thread, "is_topic_message": true,
        }))
    }

    /// A user replies to one of the bot's messages (its id as Telegram numbers it).
    pub fn user_replies_to_bot(&self, chat: &FakeChat, bot_message_id: i64, text: &str) -> Posted {
        let chat_id: i64 = chat.platform_id.parse().expect("a Telegram chat id");
        let replied = self
            .shared
            .lock()
            .messages
            .get(&(chat_id, bot_message_id))
            .cloned()
            .expect("the bot's message exists");
        self.post(
            chat,
            Self::user(chat),
            json!({"text": text, "reply_to_message": replied}),
        )
    }

    fn store_file(&self, data: &[u8], dir: &str, ext: &str) -> (String, String) {
        let mut inner = self.shared.lock();
        inner.next_file += 1;
        let n = inner.next_file;
        let file_id = format!("BQACAgIAAxkBAAI{n:06}");
        let unique_id = format!("AgAD{n:04}");
        inner.files.insert(
            file_id.clone(),
            StoredFile {
                unique_id: unique_id.clone(),
                path: format!("{dir}/file_{n}{ext}"),
                data: data.to_vec(),
            },
        );
        (file_id, unique_id)
    }

    /// A user sends a photo (Telegram offers a thumbnail and the full size).
    pub fn user_sends_photo(&self, chat: &FakeChat, data: &[u8], caption: &str) -> Posted {
        let (thumb_id, thumb_unique) = self.store_file(b"thumbnail", "photos", ".jpg");
        let (file_id, unique_id) = self.store_file(data, "photos", ".jpg");
        let (caption, entities) = Self::addressed(chat, caption, true);
        self.post(chat, Self::user(chat), json!({
            "photo": [
                {"file_id": thumb_id, "file_unique_id": thumb_unique, "width": 90, "height": 67, "file_size": 9},
                {"file_id": file_id, "file_unique_id": unique_id, "width": 1280, "height": 960, "file_size": data.len()},
            ],
            "caption": caption, "caption_entities": entities,
        }))
    }

    /// A user sends a voice note.
    pub fn user_sends_voice(&self, chat: &FakeChat, data: &[u8]) -> Posted {
        let (file_id, unique_id) = self.store_file(data, "voice", ".oga");
        self.post(
            chat,
            Self::user(chat),
            json!({
                "voice": {"file_id": file_id, "file_unique_id": unique_id, "duration": 2,
                          "mime_type": "audio/ogg", "file_size": data.len()},
            }),
        )
    }

    /// The bot can no longer write to `chat` (403 "bot was blocked by the user").
    pub fn block_bot(&self, chat: &FakeChat) {
        let chat_id: i64 = chat.platform_id.parse().expect("a Telegram chat id");
        self.shared.lock().blocked.push(chat_id);
    }

    /// Everything the bot sent, with request details.
    pub fn sent_records(&self) -> Vec<SentRecord> {
        self.shared.lock().sent.clone()
    }

    /// `sendChatAction` actions for `chat`, in order.
    pub fn chat_actions(&self, chat: &FakeChat) -> Vec<String> {
        let chat_id: i64 = chat.platform_id.parse().unwrap_or(0);
        let inner = self.shared.lock();
        inner
            .actions
            .iter()
            .filter(|(c, _)| *c == chat_id)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// The next `count` MarkdownV2 sends fail with 400 "can't parse entities" (Telegram's
    /// parser has rules no client escaper can promise to match; the adapter must cope).
    pub fn refuse_markdown(&self, count: u32) {
        self.shared.lock().refuse_markdown = count;
    }

    /// The highest `offset` a `getUpdates` call has confirmed.
    pub fn confirmed_offset(&self) -> i64 {
        self.shared.lock().confirmed
    }
}

/// Request parameters from the query string and a JSON or multipart body.
struct Params {
    fields: Map<String, Value>,
    files: HashMap<String, (String, Option<String>, Vec<u8>)>,
}

impl Params {
    async fn read(query: HashMap<String, String>, request: Request) -> Result<Params, Response> {
        let mut params = Params {
            fields: query
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            files: HashMap::new(),
        };
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if content_type.starts_with("multipart/form-data") {
            let mut form = Multipart::from_request(request, &())
                .await
                .map_err(|e| bad_request(&format!("can't parse multipart: {e}")))?;
            while let Ok(Some(field)) = form.next_field().await {
                let name = field.name().unwrap_or_default().to_string();
                match field.file_name().map(str::to_string) {
                    Some(file_name) => {
                        let mime = field.content_type().map(str::to_string);
                        let data = field
                            .bytes()
                            .await
                            .map_err(|e| bad_request(&e.to_string()))?;
                        params.files.insert(name, (file_name, mime, data.to_vec()));
                    }
                    None => {
                        let text = field
                            .text()
                            .await
                            .map_err(|e| bad_request(&e.to_string()))?;
                        params.fields.insert(name, Value::String(text));
                    }
                }
            }
        } else if content_type.starts_with("application/json") {
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .map_err(|e| bad_request(&e.to_string()))?;
            let Ok(Value::Object(fields)) = serde_json::from_slice(&body) else {
                return Err(bad_request("can't parse JSON object"));
            };
            params.fields.extend(fields);
        }
        Ok(params)
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn str(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// A JSON-serialized object parameter (a string in multipart bodies).
    fn object(&self, key: &str) -> Option<Value> {
        match self.fields.get(key)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }
}

async fn method(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return fail(401, "Unauthorized");
    }
    let params = match Params::read(query, request).await {
        Ok(params) => params,
        Err(response) => return response,
    };
    match method.as_str() {
        "getMe" => ok(
            json!({"id": BOT_ID, "is_bot": true, "first_name": "Nanoclaw",
            "username": BOT_USERNAME, "can_join_groups": true,
            "can_read_all_group_messages": false, "supports_inline_queries": false}),
        ),
        "getUpdates" => get_updates(&shared, &params).await,
        "sendMessage" | "sendDocument" => send(&shared, &method, &params).await,
        "sendChatAction" => match params.int("chat_id") {
            Some(chat) => {
                let action = params.str("action").unwrap_or_default();
                shared.lock().actions.push((chat, action));
                ok(json!(true))
            }
            None => bad_request("chat_id is empty"),
        },
        "getFile" => {
            let inner = shared.lock();
            match params
                .str("file_id")
                .and_then(|id| inner.files.get(&id).map(|f| (id, f)))
            {
                Some((id, file)) => ok(json!({"file_id": id, "file_unique_id": file.unique_id,
                    "file_size": file.data.len(), "file_path": file.path})),
                None => bad_request("invalid file_id"),
            }
        }
        _ => fail(404, "Not Found"),
    }
}

async fn get_updates(shared: &Shared, params: &Params) -> Response {
    let offset = params.int("offset").unwrap_or(0);
    let timeout = Duration::from_secs(params.int("timeout").unwrap_or(0).clamp(0, 50) as u64);
    let limit = params.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    shared.polls.fetch_add(1, Ordering::SeqCst);
    let generation = {
        let mut inner = shared.lock();
        inner.poll_generation += 1;
        inner.poll_generation
    };
    // A newer poll ends this one with 409 (there may be only one getUpdates consumer).
    shared.changed.notify_waiters();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut inner = shared.lock();
            // A superseded poll (its client may be gone) leaves the drop to the live one.
            if inner.poll_generation != generation {
                return fail(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                );
            }
            if inner.drop_pending {
                inner.drop_pending = false;
                return (
                    StatusCode::BAD_GATEWAY,
                    Html("<html><body><h1>502 Bad Gateway</h1></body></html>"),
                )
                    .into_response();
            }
            if offset > 0 {
                inner
                    .queue
                    .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                inner.confirmed = inner.confirmed.max(offset);
            }
            if !inner.queue.is_empty() || timeout.is_zero() {
                let batch: Vec<Value> = inner.queue.iter().take(limit).cloned().collect();
                return ok(Value::Array(batch));
            }
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => return ok(json!([])),
        }
    }
}

/// The 429 Telegram sends, when the test asked for one.
fn rate_limited(shared: &Shared) -> Option<Response> {
    let mut inner = shared.lock();
    let now = Instant::now();
    if inner.rate_limited > 0 {
        inner.rate_limited -= 1;
        inner.last_refused = Some(now);
        let secs = inner.retry_after_secs;
        let body = json!({"ok": false, "error_code": 429,
            "description": format!("Too Many Requests: retry after {secs}"),
            "parameters": {"retry_after": secs}});
        return Some((StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response());
    }
    if let Some(refused) = inner.last_refused.take() {
        inner.rate_log.push((refused, now));
    }
    None
}

/// The visible text of `text` under `parse_mode`, or the API's 400 description (after
/// "Bad Request: ").
fn visible(text: &str, parse_mode: Option<&str>, max: usize, what: &str) -> Result<String, String> {
    let shown = match parse_mode {
        Some("MarkdownV2") => {
            parse_markdown_v2(text).map_err(|e| format!("can't parse entities: {e}"))?
        }
        Some(other) => return Err(format!("unsupported parse_mode {other:?} in this fake")),
        None => text.to_string(),
    };
    if shown.encode_utf16().count() > max {
        return Err(format!("{what} is too long"));
    }
    Ok(shown)
}

/// A document's name, MIME type and size, as the sent message describes it.
type DocumentInfo = (String, Option<String>, usize);
/// A sent message's visible text, its files and its document.
type Content = (String, Vec<(String, Vec<u8>)>, Option<DocumentInfo>);

/// What a `sendMessage` or `sendDocument` carries, or the 400 description.
fn content(method: &str, params: &Params, parse_mode: Option<&str>) -> Result<Content, String> {
    if method == "sendMessage" {
        let text = params.str("text").unwrap_or_default();
        let shown = visible(&text, parse_mode, MAX_TEXT, "message")?;
        if shown.trim().is_empty() {
            return Err("message text is empty".to_string());
        }
        return Ok((shown, Vec::new(), None));
    }
    let Some((name, mime, data)) = params.files.get("document").cloned() else {
        return Err("there is no document in the request".to_string());
    };
    let caption = params.str("caption").unwrap_or_default();
    let shown = visible(&caption, parse_mode, MAX_CAPTION, "message caption")?;
    let info = (name.clone(), mime, data.len());
    Ok((shown, vec![(name, data)], Some(info)))
}

async fn send(shared: &Shared, method: &str, params: &Params) -> Response {
    if let Some(refusal) = rate_limited(shared) {
        return refusal;
    }
    let Some(chat) = params.int("chat_id") else {
        return bad_request("chat_id is empty");
    };
    let parse_mode = params.str("parse_mode");
    if parse_mode.as_deref() == Some("MarkdownV2") {
        let mut inner = shared.lock();
        if inner.refuse_markdown > 0 {
            inner.refuse_markdown -= 1;
            return bad_request(
                "can't parse entities: Can't find end of the entity starting at byte offset 0",
            );
        }
    }
    let thread = params.int("message_thread_id");
    let reply = params.object("reply_parameters");
    let reply_to = reply.as_ref().and_then(|r| r["message_id"].as_i64());
    let (text, files, document) = match content(method, params, parse_mode.as_deref()) {
        Ok(content) => content,
        Err(e) => return bad_request(&e),
    };
    let message = {
        let mut inner = shared.lock();
        let Some(chat_obj) = inner.chats.get(&chat).cloned() else {
            return bad_request("chat not found");
        };
        if inner.blocked.contains(&chat) {
            return fail(403, "Forbidden: bot was blocked by the user");
        }
        let allow_missing = reply
            .as_ref()
            .is_some_and(|r| r["allow_sending_without_reply"] == json!(true));
        let replied = reply_to.and_then(|id| inner.messages.get(&(chat, id)).cloned());
        if reply_to.is_some() && replied.is_none() && !allow_missing {
            return bad_request("message to be replied not found");
        }
        let message_id = FakeTelegram::next_message_id(&mut inner, chat);
        let mut message = json!({"message_id": message_id, "from": bot_user(), "chat": chat_obj, "date": now_secs()});
        if let Some(thread) = thread {
            message["message_thread_id"] = json!(thread);
            message["is_topic_message"] = json!(true);
        }
        if let Some(replied) = replied {
            message["reply_to_message"] = replied;
        }
        match &document {
            Some((name, mime, size)) => {
                message["document"] = json!({"file_id": format!("BQACsent{message_id}"),
                    "file_unique_id": format!("AgADsent{message_id}"), "file_name": name,
                    "mime_type": mime, "file_size": size});
                if !text.is_empty() {
                    message["caption"] = json!(text);
                }
            }
            None => message["text"] = json!(text),
        }
        inner.messages.insert((chat, message_id), message.clone());
        inner.sent.push(SentRecord {
            chat,
            message_id,
            message: SentMessage {
                chat: chat.to_string(),
                text,
                files,
                thread: thread.map(|t| t.to_string()),
                reply_to: reply_to.map(|id| format!("{chat}:{id}")),
            },
            parse_mode,
        });
        if *shared.hold.borrow() {
            inner.held += 1;
        }
        message
    };
    // Held: recorded, but the answer waits (the test kills the host in between).
    let mut hold = shared.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    ok(message)
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return fail(401, "Unauthorized");
    }
    let inner = shared.lock();
    match inner.files.values().find(|f| f.path == path) {
        Some(file) => (StatusCode::OK, file.data.clone()).into_response(),
        None => fail(404, "Not Found"),
    }
}

#[async_trait]
impl FakePlatform for FakeTelegram {
    fn channel(&self) -> &'static str {
        "telegram"
    }

    fn settings_toml(&self) -> String {
        format!(
            "enabled = true\napi_base = \"{}\"\npoll_timeout_secs = 5\n",
            self.base
        )
    }

    fn secrets(&self) -> Vec<(String, String)> {
        vec![("telegram.bot_token".to_string(), BOT_TOKEN.to_string())]
    }

    fn max_message_len(&self) -> usize {
        MAX_TEXT
    }

    /// Private chats have the user's id; supergroups `-100…` ids and forum topics.
    fn chat(&self, n: u32, is_group: bool) -> FakeChat {
        let n = i64::from(n);
        let (id, user_id, chat_obj) = if is_group {
            let id = -1_000_000_000_000 - n;
            (
                id,
                200_000 + n,
                json!({"id": id, "type": "supergroup", "title": format!("Group {n}"), "is_forum": true}),
            )
        } else {
            let id = 100_000 + n;
            (
                id,
                id,
                json!({"id": id, "type": "private", "first_name": format!("User {n}")}),
            )
        };
        self.shared.lock().chats.insert(id, chat_obj);
        FakeChat {
            platform_id: id.to_string(),
            is_group,
            user_id: user_id.to_string(),
            user_name: format!("User {n}"),
        }
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, mention: bool) -> Posted {
        let (text, entities) = Self::addressed(chat, text, mention);
        let mut fields = json!({"text": text});
        if !entities.is_empty() {
            fields["entities"] = json!(entities);
        }
        self.post(chat, Self::user(chat), fields)
    }

    async fn user_sends_file(
        &self,
        chat: &FakeChat,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Posted {
        let (file_id, unique_id) = self.store_file(data, "documents", "");
        let (caption, entities) = Self::addressed(chat, caption, true);
        self.post(chat, Self::user(chat), json!({
            "document": {"file_id": file_id, "file_unique_id": unique_id, "file_name": file_name,
                         "mime_type": "application/octet-stream", "file_size": data.len()},
            "caption": caption, "caption_entities": entities,
        }))
    }

    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted {
        let (prefix, entity) = mention_prefix();
        let bot = json!({"id": OTHER_BOT_ID, "is_bot": true, "first_name": "Other", "username": "other_helper_bot"});
        self.post(
            chat,
            bot,
            json!({"text": format!("{prefix}{text}"), "entities": [entity]}),
        )
    }

    async fn redeliver(&self, chat: &FakeChat, message: &Posted) {
        let chat_id: i64 = chat.platform_id.parse().expect("a Telegram chat id");
        let message_id: i64 = message
            .message_id
            .rsplit(':')
            .next()
            .and_then(|id| id.parse().ok())
            .expect("a message id made by this fake");
        let original = self
            .shared
            .lock()
            .messages
            .get(&(chat_id, message_id))
            .cloned()
            .expect("a message posted on this fake");
        self.push_update(json!({"message": original}));
    }

    /// Two broken updates: `"message"` of the wrong type, and a message without its chat.
    async fn push_malformed(&self, _chat: &FakeChat) {
        self.push_update(json!({"message": "oops"}));
        self.push_update(
            json!({"message": {"message_id": 1, "date": now_secs(), "text": "no chat here"}}),
        );
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        let inner = self.shared.lock();
        inner
            .sent
            .iter()
            .filter(|r| r.chat.to_string() == chat.platform_id)
            .map(|r| r.message.clone())
            .collect()
    }

    /// The pending long poll (or, if none is pending, the next one) ends with 502.
    async fn drop_connections(&self) {
        self.shared.lock().drop_pending = true;
        self.shared.changed.notify_waiters();
    }

    fn connections(&self) -> u64 {
        self.shared.polls.load(Ordering::SeqCst)
    }

    /// Telegram's `retry_after` is whole seconds: rounded up, at least 1.
    fn rate_limit_sends(&self, count: u32, retry_after: Duration) {
        let mut inner = self.shared.lock();
        inner.rate_limited = count;
        inner.retry_after_secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    }

    fn rate_limit_log(&self) -> Vec<(Instant, Instant)> {
        self.shared.lock().rate_log.clone()
    }

    fn hold_sends(&self) {
        self.shared.hold.send_replace(true);
    }

    fn release_sends(&self) {
        self.shared.hold.send_replace(false);
    }

    fn held_sends(&self) -> usize {
        self.shared.lock().held
    }
}

//! A fake Discord (API v10) built from <https://discord.com/developers/docs>: the REST
//! routes a bot uses (`GET /gateway/bot`, `GET /users/@me`, `GET /channels/{id}`,
//! `POST /channels/{id}/messages` as JSON or multipart with `nonce` + `enforce_nonce`
//! deduplication, `POST /channels/{id}/typing`, a CDN route for attachments) with
//! rate-limit headers on every answer, the documented 401/404/429 bodies, and the Gateway
//! websocket (Hello, heartbeats and ACKs, Identify → READY + GUILD_CREATE, Resume → the
//! missed dispatches then RESUMED, op 7, op 9, close codes). Every message the bot sends is
//! echoed back as a MESSAGE_CREATE, as Discord does.
//!
//! The REST side lives in `rest`, the gateway in `gateway`;
//! this file keeps the shared state and the test's controls.

mod gateway;
mod rest;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::{FakeChat, FakePlatform, Posted, SentMessage};

/// The token the fake accepts.
pub const TOKEN: &str = "fake-discord-bot-token";
pub const BOT_ID: &str = "900000000000000001";
pub const BOT_NAME: &str = "nanoclaw-bot";
const GUILD_ID: &str = "800000000000000001";
const OTHER_BOT_ID: &str = "720000000000000001";
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// MESSAGE_CONTENT, the privileged intent a server may refuse.
const MESSAGE_CONTENT: u64 = 1 << 15;

/// What the fake sends down one gateway connection.
#[derive(Debug)]
pub(crate) enum Cmd {
    Text(String),
    /// A close frame with this code and reason, then the socket ends.
    Close(u16, String),
    /// The socket ends with no close frame (a network failure).
    Drop,
}

#[derive(Debug, Clone)]
pub(crate) struct FakeChannel {
    pub id: String,
    /// 0 GUILD_TEXT, 1 DM, 11 PUBLIC_THREAD.
    pub kind: u8,
    pub name: String,
    pub parent_id: Option<String>,
    /// The DM's recipient (DMs only).
    pub recipient: Option<Value>,
}

impl FakeChannel {
    pub fn in_guild(&self) -> bool {
        self.kind != 1
    }

    pub fn json(&self) -> Value {
        let mut v = json!({ "id": self.id, "type": self.kind, "name": self.name });
        if self.in_guild() {
            v["guild_id"] = json!(GUILD_ID);
            v["parent_id"] = json!(self.parent_id);
        } else if let Some(r) = &self.recipient {
            v["recipients"] = json!([r]);
        }
        v
    }
}

/// A gateway session: its dispatches, numbered, kept for resumes.
#[derive(Debug, Default)]
pub(crate) struct SessionLog {
    pub seq: u64,
    pub log: Vec<(u64, String)>,
}

#[derive(Debug)]
pub(crate) struct Live {
    pub session: Option<String>,
    pub tx: mpsc::UnboundedSender<Cmd>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub remaining: u64,
    pub reset_at: Instant,
}

pub(crate) struct State {
    pub http_base: String,
    pub ws_base: String,
    pub token_valid: bool,
    pub refuse_message_content: bool,
    pub channels: BTreeMap<String, FakeChannel>,
    pub sessions: HashMap<String, SessionLog>,
    pub live: HashMap<u64, Live>,
    pub sent: Vec<SentMessage>,
    /// Every message object created (users' and the bot's), by id.
    pub messages: HashMap<String, Value>,
    pub nonces: HashMap<String, (Instant, Value)>,
    pub nonce_window: Duration,
    pub forced_429: u32,
    pub forced_retry_after: Duration,
    pub last_refused: Option<Instant>,
    pub rl_log: Vec<(Instant, Instant)>,
    pub bucket_limit: u64,
    pub bucket_window: Duration,
    pub buckets: HashMap<String, Bucket>,
    pub responses_429: u64,
    pub message_posts: u64,
    pub holding: bool,
    pub held: usize,
    pub files: HashMap<String, Vec<u8>>,
    pub heartbeat_ms: u64,
    pub ack_heartbeats: bool,
    pub identifies: u64,
    pub resumes: u64,
    pub heartbeats: u64,
    pub typing: Vec<String>,
    next_id: u64,
}

impl State {
    /// A fresh snowflake whose timestamp is now.
    pub fn snowflake(&mut self) -> String {
        self.next_id += 1;
        let ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(0);
        (((ms - DISCORD_EPOCH_MS) << 22) | (self.next_id & 0x3f_ffff)).to_string()
    }

    pub fn bot_user() -> Value {
        json!({ "id": BOT_ID, "username": BOT_NAME, "global_name": null, "discriminator": "0", "avatar": null, "bot": true })
    }

    /// Appends a dispatch to every session and sends it to their live connections.
    pub fn dispatch(&mut self, t: &str, d: &Value) {
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.dispatch_to(&id, t, d);
        }
    }

    pub fn dispatch_to(&mut self, session: &str, t: &str, d: &Value) {
        let Some(log) = self.sessions.get_mut(session) else {
            return;
        };
        log.seq += 1;
        let frame = json!({ "op": 0, "t": t, "s": log.seq, "d": d }).to_string();
        log.log.push((log.seq, frame.clone()));
        for live in self.live.values() {
            if live.session.as_deref() == Some(session) {
                let _ = live.tx.send(Cmd::Text(frame.clone()));
            }
        }
    }

    pub fn send_all(&self, make: impl Fn() -> Cmd) {
        for live in self.live.values() {
            let _ = live.tx.send(make());
        }
    }

    /// (chat id as the adapter reports it, thread) for a channel.
    pub fn place(&self, channel: &str) -> (String, Option<String>) {
        match self.channels.get(channel).and_then(|c| c.parent_id.clone()) {
            Some(parent) => (parent, Some(channel.to_string())),
            None => (channel.to_string(), None),
        }
    }

    /// A message object in `channel` by `author`.
    pub fn message(&mut self, channel: &str, author: Value, content: &str) -> Value {
        let id = self.snowflake();
        let mut m = json!({
            "id": id,
            "type": 0,
            "channel_id": channel,
            "author": author,
            "content": content,
            "timestamp": "2025-01-01T00:00:00.000000+00:00",
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": false,
        });
        if self
            .channels
            .get(channel)
            .is_some_and(FakeChannel::in_guild)
        {
            m["guild_id"] = json!(GUILD_ID);
            m["member"] = json!({ "nick": null, "roles": [] });
        }
        self.messages.insert(id, m.clone());
        m
    }
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub connections: AtomicU64,
    pub released: Notify,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fake Discord server; stops when dropped.
pub struct FakeDiscord {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake Discord");
        let addr = listener.local_addr().expect("the fake Discord's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                http_base: format!("http://{addr}"),
                ws_base: format!("ws://{addr}"),
                token_valid: true,
                refuse_message_content: false,
                channels: BTreeMap::new(),
                sessions: HashMap::new(),
                live: HashMap::new(),
                sent: Vec::new(),
                messages: HashMap::new(),
                nonces: HashMap::new(),
                nonce_window: Duration::from_secs(300),
                forced_429: 0,
                forced_retry_after: Duration::from_millis(1500),
                last_refused: None,
                rl_log: Vec::new(),
                bucket_limit: 50,
                bucket_window: Duration::from_secs(1),
                buckets: HashMap::new(),
                responses_429: 0,
                message_posts: 0,
                holding: false,
                held: 0,
                files: HashMap::new(),
                heartbeat_ms: 41_250,
                ack_heartbeats: true,
                identifies: 0,
                resumes: 0,
                heartbeats: 0,
                typing: Vec::new(),
                next_id: 0,
            }),
            connections: AtomicU64::new(0),
            released: Notify::new(),
        });
        let app = rest::router(Arc::clone(&shared)).merge(gateway::router(Arc::clone(&shared)));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeDiscord {
            shared,
            addr,
            server,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The REST base the adapter's `api_base` points at.
    pub fn api_base(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// Heartbeat interval the next Hello announces.
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        self.lock().heartbeat_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    }

    /// Stop answering heartbeats with op 11 (a zombie connection).
    pub fn stop_heartbeat_acks(&self) {
        self.lock().ack_heartbeats = false;
    }

    pub fn resume_heartbeat_acks(&self) {
        self.lock().ack_heartbeats = true;
    }

    /// The token stops working: REST answers 401, Identify/Resume get close code 4004.
    pub fn revoke_token(&self) {
        self.lock().token_valid = false;
    }

    /// Identify with MESSAGE_CONTENT gets close code 4014 (not enabled in the portal).
    pub fn refuse_message_content_intent(&self) {
        self.lock().refuse_message_content = true;
    }

    /// Sends op 7 Reconnect on every live connection.
    pub fn request_reconnect(&self) {
        let frame = json!({ "op": 7, "d": null }).to_string();
        self.lock().send_all(|| Cmd::Text(frame.clone()));
    }

    /// Sends op 1: Discord asking for a heartbeat now.
    pub fn request_heartbeat(&self) {
        let frame = json!({ "op": 1, "d": null }).to_string();
        self.lock().send_all(|| Cmd::Text(frame.clone()));
    }

    /// Sends op 9 Invalid Session; not resumable also forgets the sessions.
    pub fn invalidate_session(&self, resumable: bool) {
        let mut state = self.lock();
        if !resumable {
            state.sessions.clear();
        }
        let frame = json!({ "op": 9, "d": resumable }).to_string();
        state.send_all(|| Cmd::Text(frame.clone()));
    }

    /// Closes every live connection with `code`.
    pub fn close_connections(&self, code: u16) {
        self.lock()
            .send_all(|| Cmd::Close(code, format!("closed by the test with {code}")));
    }

    /// Each channel's message bucket allows `limit` sends per `window`.
    pub fn set_message_bucket(&self, limit: u64, window: Duration) {
        let mut state = self.lock();
        state.bucket_limit = limit;
        state.bucket_window = window;
        state.buckets.clear();
    }

    pub fn identifies(&self) -> u64 {
        self.lock().identifies
    }

    pub fn resumes(&self) -> u64 {
        self.lock().resumes
    }

    pub fn heartbeats(&self) -> u64 {
        self.lock().heartbeats
    }

    /// 429s answered so far (forced and bucket ones).
    pub fn responses_429(&self) -> u64 {
        self.lock().responses_429
    }

    /// `POST /channels/{id}/messages` requests received (deduplicated ones included).
    pub fn message_posts(&self) -> u64 {
        self.lock().message_posts
    }

    /// Channels the bot showed typing in.
    pub fn typing(&self) -> Vec<String> {
        self.lock().typing.clone()
    }

    /// A public thread under `parent`; `announce` sends THREAD_CREATE (else the adapter
    /// only learns it from `GET /channels/{id}`).
    pub fn create_thread(&self, parent: &FakeChat, name: &str, announce: bool) -> FakeChat {
        let mut state = self.lock();
        let id = state.snowflake();
        let thread = FakeChannel {
            id: id.clone(),
            kind: 11,
            name: name.to_string(),
            parent_id: Some(parent.platform_id.clone()),
            recipient: None,
        };
        let json = thread.json();
        state.channels.insert(id.clone(), thread);
        if announce {
            let mut d = json;
            d["newly_created"] = json!(true);
            state.dispatch("THREAD_CREATE", &d);
        }
        FakeChat {
            platform_id: id,
            ..parent.clone()
        }
    }

    /// A user replies to message `to` (a reply to the bot addresses it).
    pub async fn user_replies(&self, chat: &FakeChat, text: &str, to: &str) -> Posted {
        let mut state = self.lock();
        let referenced = state.messages.get(to).cloned();
        let mut m = state.message(&chat.platform_id, user_json(chat), text);
        m["type"] = json!(19);
        m["message_reference"] = json!({ "message_id": to, "channel_id": chat.platform_id });
        m["referenced_message"] = referenced.unwrap_or(Value::Null);
        post(&mut state, m)
    }
}

fn user_json(chat: &FakeChat) -> Value {
    json!({ "id": chat.user_id, "username": chat.user_name, "global_name": chat.user_name, "discriminator": "0", "avatar": null })
}

/// Stores and dispatches a user's message.
fn post(state: &mut State, m: Value) -> Posted {
    let id = m["id"].as_str().unwrap_or_default().to_string();
    let channel = m["channel_id"].as_str().unwrap_or_default().to_string();
    state.messages.insert(id.clone(), m.clone());
    state.dispatch("MESSAGE_CREATE", &m);
    Posted {
        chat_id: state.place(&channel).0,
        message_id: id,
    }
}

/// `<@bot>` at the front and the bot in `mentions`, as the client writes a mention.
fn mention_bot(m: &mut Value) {
    let content = m["content"].as_str().unwrap_or_default().to_string();
    m["content"] = json!(format!("<@{BOT_ID}> {content}"));
    m["mentions"] = json!([State::bot_user()]);
}

#[async_trait]
impl FakePlatform for FakeDiscord {
    fn channel(&self) -> &'static str {
        "discord"
    }

    fn settings_toml(&self) -> String {
        format!("enabled = true\napi_base = \"{}\"\n", self.api_base())
    }

    fn secrets(&self) -> Vec<(String, String)> {
        vec![("discord.bot_token".into(), TOKEN.into())]
    }

    fn max_message_len(&self) -> usize {
        2000
    }

    fn chat(&self, n: u32, is_group: bool) -> FakeChat {
        let user_id = format!("71{n:016}");
        let user_name = format!("user{n}");
        let chat = FakeChat {
            platform_id: format!("{}{n:016}", if is_group { 81 } else { 82 }),
            is_group,
            user_id,
            user_name,
        };
        let mut state = self.lock();
        if !state.channels.contains_key(&chat.platform_id) {
            let channel = FakeChannel {
                id: chat.platform_id.clone(),
                kind: if is_group { 0 } else { 1 },
                name: if is_group {
                    format!("general-{n}")
                } else {
                    String::new()
                },
                parent_id: None,
                recipient: (!is_group).then(|| user_json(&chat)),
            };
            let d = channel.json();
            state.channels.insert(chat.platform_id.clone(), channel);
            if is_group {
                state.dispatch("CHANNEL_CREATE", &d);
            }
        }
        chat
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, mention: bool) -> Posted {
        let mut state = self.lock();
        let mut m = state.message(&chat.platform_id, user_json(chat), text);
        if mention && chat.is_group {
            mention_bot(&mut m);
        }
        post(&mut state, m)
    }

    async fn user_sends_file(
        &self,
        chat: &FakeChat,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Posted {
        let mut state = self.lock();
        let attachment_id = state.snowflake();
        let path = format!("{}/{attachment_id}/{file_name}", chat.platform_id);
        state.files.insert(path.clone(), data.to_vec());
        let url = format!("{}/cdn/attachments/{path}", state.http_base);
        let mut m = state.message(&chat.platform_id, user_json(chat), caption);
        m["attachments"] = json!([{
            "id": attachment_id,
            "filename": file_name,
            "size": data.len(),
            "url": url,
            "proxy_url": url,
            "content_type": "application/octet-stream",
        }]);
        if chat.is_group {
            mention_bot(&mut m);
        }
        post(&mut state, m)
    }

    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted {
        let mut state = self.lock();
        let author = json!({ "id": OTHER_BOT_ID, "username": "otherbot", "discriminator": "0", "avatar": null, "bot": true });
        let mut m = state.message(&chat.platform_id, author, text);
        mention_bot(&mut m);
        post(&mut state, m)
    }

    async fn redeliver(&self, _chat: &FakeChat, message: &Posted) {
        let mut state = self.lock();
        if let Some(m) = state.messages.get(&message.message_id).cloned() {
            state.dispatch("MESSAGE_CREATE", &m);
        }
    }

    async fn push_malformed(&self, chat: &FakeChat) {
        // Right opcode and event name, wrong shapes: a numeric id, no author object, an
        // array for content.
        let d = json!({ "id": 12345, "channel_id": chat.platform_id, "author": "nobody", "content": ["not", "text"] });
        self.lock().dispatch("MESSAGE_CREATE", &d);
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        let id = &chat.platform_id;
        self.lock()
            .sent
            .iter()
            .filter(|m| &m.chat == id || m.thread.as_ref() == Some(id))
            .cloned()
            .collect()
    }

    async fn drop_connections(&self) {
        self.lock().send_all(|| Cmd::Drop);
    }

    fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    fn rate_limit_sends(&self, count: u32, retry_after: Duration) {
        let mut state = self.lock();
        state.forced_429 = count;
        state.forced_retry_after = retry_after;
    }

    fn rate_limit_log(&self) -> Vec<(Instant, Instant)> {
        self.lock().rl_log.clone()
    }

    fn hold_sends(&self) {
        self.lock().holding = true;
    }

    fn release_sends(&self) {
        self.lock().holding = false;
        self.shared.released.notify_waiters();
    }

    fn held_sends(&self) -> usize {
        self.lock().held
    }
}

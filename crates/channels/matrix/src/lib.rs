//! nanoclaw's Matrix channel, on the client-server API
//! (<https://spec.matrix.org/v1.12/client-server-api/>) with a thin client of our own
//! ([`api`]).
//!
//! - **In**: long-polling `/sync`; the `next_batch` token is kept in the host's state store
//!   and moved only after every message of a batch is settled by the host (a crash
//!   re-delivers, the host deduplicates by event id). The first start skips the rooms'
//!   history. A room is a chat; a DM is a room of two. A message addresses the bot when it
//!   is in a DM, names the bot in `m.mentions`, or names it in its text. Threads
//!   (`m.thread`) are the chat's threads. Files (`m.image`, `m.file`, …) are downloaded
//!   through authenticated media up to `max_attachment_bytes`. `m.notice` is how programs
//!   speak (the spec says never to answer one): it reaches the host marked as from a bot.
//!   Invites are joined only from `invites_from` (users, or `:server` for a whole server).
//! - **Out**: replies as `m.notice` (so other bots do not answer them; `reply_msgtype`
//!   changes it), split at 16,000 characters (`max_message_chars`), the first part replying to the message it
//!   answers, in its thread; files uploaded and sent as `m.file`. Each part is sent with a
//!   transaction id made from the message's idempotency key: the homeserver answers a
//!   repeated id with the event it already made, so a part retried after a crash is shown
//!   once (while the homeserver remembers the id: about 30 minutes on Synapse).
//! - **End-to-end encryption** ([`e2ee`], on unless `encryption = false`): Olm and Megolm
//!   from vodozemac, the protocol glue ours. The token's device gets its own keys on the
//!   first start (kept pickled under the vault's `matrix.pickle_key`, so a restart is the
//!   same device). Room keys arriving over Olm are checked as the spec says; an encrypted
//!   message decrypts only with a session of its room from its sender, and a replayed index
//!   is refused. Decrypted messages take the same path as clear ones. A message whose key is
//!   late waits (24 h, 1,000 at most) and is handed over when the key comes. Replies in an
//!   encrypted room are encrypted with one Megolm session per room, shared with every device
//!   of every member, rotated by the room's settings and when a member leaves; files there
//!   are AES-256-CTR encrypted, and received ones decrypted after their hash is checked.
//!   **Not done**: cross-signing (devices are trusted on first use; a device whose keys
//!   change is refused), key backup, verification (emoji), forwarded keys.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nanoclaw_channel::chunk::{Measure, split};
use nanoclaw_channel::{
    Attachment, Backoff, Channel, ChannelError, ChannelRegistration, ChannelSetup, Health,
    HealthCell, InboundEvent, InboundSink, OutgoingMessage, Progress, SecretSource, SecretSpec,
    SendLedger, StateStore, hand_over, send_parts,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::task::JoinHandle;

pub mod api;
pub mod e2ee;
pub mod events;

use api::{Api, ApiError};
use e2ee::{Crypto, Decrypted, E2eeError};
use events::{RoomMessage, SyncBatch};

/// The channel's name.
pub const NAME: &str = "matrix";
/// The vault secret holding the access token.
pub const TOKEN_SECRET: &str = "matrix.access_token";
const NEXT_BATCH_KEY: &str = "next_batch";
/// Messages read back per room when a sync's timeline was cut (`limited`).
pub const MAX_BACKFILL: usize = 1_000;
/// The longest part sent (events are limited to 64 KiB of JSON).
pub const MAX_PART: usize = 16_000;
/// Only what the channel reads: no presence, no account data.
const FILTER: &str = r#"{"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]},"room":{"timeline":{"limit":100},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}}}"#;

/// What the host lists and builds.
pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: NAME,
    summary: "Matrix (client-server API): rooms, DMs, threads, files; end-to-end encrypted rooms (Olm/Megolm)",
    secrets: &[SecretSpec {
        name: TOKEN_SECRET,
        prompt: "Access token of the bot's Matrix account",
        optional: false,
    }],
    modes: &[],
    settings: &[("homeserver", ""), ("invites_from", "[]")],
    settings_secrets: None,
    factory,
};

type BuiltChannel =
    Pin<Box<dyn std::future::Future<Output = Result<Arc<dyn Channel>, ChannelError>> + Send>>;

fn factory(setup: ChannelSetup) -> BuiltChannel {
    Box::pin(async move {
        let channel = MatrixChannel::from_setup(setup).await?;
        Ok(Arc::new(channel) as Arc<dyn Channel>)
    })
}

/// `[channels.matrix]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The homeserver's client API base, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// Invites are accepted from these users (`@owner:example.org`) or servers
    /// (`:example.org`); empty: none.
    #[serde(default)]
    pub invites_from: Vec<String>,
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout_secs: u64,
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
    /// Longer replies are split into parts of at most this many characters (at most
    /// [`MAX_PART`]: an event is limited to 64 KiB).
    #[serde(default = "default_max_message_chars")]
    pub max_message_chars: usize,
    /// `m.notice` (default: other bots never answer it) or `m.text`.
    #[serde(default = "default_msgtype")]
    pub reply_msgtype: String,
    /// End-to-end encryption (default on): encrypted rooms are read and answered encrypted.
    #[serde(default = "default_true")]
    pub encryption: bool,
}

fn default_true() -> bool {
    true
}

fn default_sync_timeout() -> u64 {
    30
}
fn default_max_attachment() -> u64 {
    20 * 1024 * 1024
}
fn default_max_message_chars() -> usize {
    MAX_PART
}
fn default_msgtype() -> String {
    "m.notice".into()
}

/// The Matrix channel.
pub struct MatrixChannel {
    api: Arc<Api>,
    config: MatrixConfig,
    state: Arc<dyn StateStore>,
    secrets: Arc<dyn SecretSource>,
    ledger: Arc<dyn SendLedger>,
    health: Arc<HealthCell>,
    /// The device's encryption, once loaded (`encryption = true`).
    crypto: tokio::sync::Mutex<Option<Crypto>>,
    me: tokio::sync::OnceCell<String>,
    /// Joined member counts by room, with when they were read.
    members: Mutex<HashMap<String, (usize, Instant)>>,
    receiver: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Held while a batch is handed to the host and the token moved past it.
    handing_over: tokio::sync::Mutex<()>,
}

impl MatrixChannel {
    pub async fn from_setup(setup: ChannelSetup) -> Result<MatrixChannel, ChannelError> {
        let config: MatrixConfig = setup.settings_as(NAME)?;
        if !matches!(config.reply_msgtype.as_str(), "m.notice" | "m.text") {
            return Err(ChannelError::Setup(format!(
                "[channels.matrix] reply_msgtype {:?}: use \"m.notice\" or \"m.text\"",
                config.reply_msgtype
            )));
        }
        for entry in &config.invites_from {
            if !(entry.starts_with('@') && entry.contains(':') || entry.starts_with(':')) {
                return Err(ChannelError::Setup(format!(
                    "[channels.matrix] invites_from entry {entry:?}: write a user (@owner:example.org) or a server (:example.org)"
                )));
            }
        }
        let token = setup.require_secret(NAME, TOKEN_SECRET).await?;
        let api = Api::new(&config.homeserver, token)?;
        Ok(MatrixChannel {
            api: Arc::new(api),
            config,
            state: setup.state,
            secrets: setup.secrets,
            ledger: setup.ledger,
            health: Arc::new(HealthCell::default()),
            crypto: tokio::sync::Mutex::new(None),
            me: tokio::sync::OnceCell::new(),
            members: Mutex::new(HashMap::new()),
            receiver: tokio::sync::Mutex::new(None),
            handing_over: tokio::sync::Mutex::new(()),
        })
    }

    async fn me(&self) -> Result<String, ApiError> {
        self.me.get_or_try_init(|| self.api.whoami()).await.cloned()
    }

    /// Loads (or makes) the device's encryption once.
    async fn ensure_crypto(&self) -> Result<(), E2eeError> {
        let mut crypto = self.crypto.lock().await;
        if crypto.is_none() {
            let loaded = Crypto::load_or_create(&self.api, &*self.state, &*self.secrets).await?;
            tracing::info!(device = %loaded.device_id(), ed25519 = %loaded.ed25519(), "matrix: end-to-end encryption on");
            *crypto = Some(loaded);
        }
        if let Some(crypto) = crypto.as_ref() {
            self.health.detail(encryption_detail(crypto));
        }
        Ok(())
    }

    fn invite_allowed(&self, inviter: Option<&str>) -> bool {
        let Some(inviter) = inviter else {
            return false;
        };
        self.config.invites_from.iter().any(|entry| {
            if entry.starts_with(':') {
                inviter.ends_with(entry.as_str())
            } else {
                entry == inviter
            }
        })
    }

    async fn member_count(&self, room: &str) -> usize {
        if let Some((count, when)) = self
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            && when.elapsed() < Duration::from_secs(60)
        {
            return *count;
        }
        match self.api.joined_member_count(room).await {
            Ok(count) => {
                self.members
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(room.to_owned(), (count, Instant::now()));
                count
            }
            // Unknown: treat as a group (a mention is then needed), the safer reading.
            Err(e) => {
                tracing::debug!(error = %e, room, "matrix: member count unknown");
                3
            }
        }
    }
}

/// What the health says about the encryption.
fn encryption_detail(crypto: &Crypto) -> String {
    format!(
        "end-to-end encryption: on, device {}, ed25519 {}; {} waiting for their key, {} refused or dropped",
        crypto.device_id(),
        crypto.ed25519(),
        crypto.pending_count(),
        crypto.refused
    )
}

/// A sync-loop error from the encryption layer: retried like a network failure.
fn e2ee_to_api(e: E2eeError) -> ApiError {
    match e {
        E2eeError::Api(e) => e,
        other => ApiError::Network(other.to_string()),
    }
}

/// The transaction id for part `part` of message `key`.
fn txn_id(key: &str, part: usize) -> String {
    let digest = sha2::Sha256::digest(format!("{key}:{part}").as_bytes());
    format!("nc{}", &hex::encode(digest)[..32])
}

#[async_trait]
impl Channel for MatrixChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let mut receiver = self.receiver.lock().await;
        if let Some(old) = receiver.take() {
            old.abort();
        }
        self.health.starting();
        match self.me().await {
            Ok(me) => tracing::info!(%me, "matrix: signed in"),
            Err(e @ ApiError::Matrix { status: 401, .. }) => {
                self.health.down(e.to_string());
                return Err(e.into_channel_error());
            }
            Err(e) => self.health.reconnecting(e.to_string()),
        }
        if self.config.encryption {
            match self.ensure_crypto().await {
                Ok(()) => {}
                Err(E2eeError::Setup(e)) => {
                    self.health.down(e.clone());
                    return Err(ChannelError::Setup(format!("[channels.matrix] {e}")));
                }
                // The sync loop tries again.
                Err(e) => self.health.reconnecting(e.to_string()),
            }
        }
        let me = Arc::clone(&self);
        *receiver = Some(tokio::spawn(async move { me.receive(sink).await }));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let result = self.deliver_parts(message).await;
        if let Err(e) = &result {
            self.health.error(e.to_string());
        }
        result
    }

    async fn progress(&self, chat_id: &str, _answers: &[String], progress: Progress) {
        if let Progress::Working = progress
            && let Ok(me) = self.me().await
            && let Err(e) = self.api.typing(chat_id, &me, true).await
        {
            tracing::debug!(error = %e, "matrix: typing not shown");
        }
    }

    fn typing_lasts(&self) -> Option<Duration> {
        Some(Duration::from_secs(25))
    }

    async fn verify(&self) -> Result<String, ChannelError> {
        self.me().await.map_err(ApiError::into_channel_error)
    }

    fn health(&self) -> Health {
        self.health.snapshot()
    }

    async fn stop(&self) {
        // Bounded: the host may be the one not answering (the batch then comes again and
        // the host deduplicates it by event id).
        let _settled = tokio::time::timeout(Duration::from_secs(5), self.handing_over.lock()).await;
        if let Some(task) = self.receiver.lock().await.take() {
            task.abort();
        }
        self.health.stopped();
    }
}

impl MatrixChannel {
    async fn deliver_parts(
        &self,
        message: &OutgoingMessage,
    ) -> Result<Option<String>, ChannelError> {
        let texts: Vec<String> = if message.text.trim().is_empty() {
            Vec::new()
        } else {
            split(
                &message.text,
                self.config.max_message_chars.clamp(100, MAX_PART),
                Measure::Chars,
            )
        };
        let count = texts.len() + message.files.len();
        if count == 0 {
            return Ok(None);
        }
        // Fail closed: a room whose encryption cannot be read is not sent to in the clear.
        let encryption = if self.config.encryption {
            self.ensure_crypto()
                .await
                .map_err(E2eeError::into_channel_error)?;
            self.api
                .room_encryption(&message.chat_id)
                .await
                .map_err(ApiError::into_channel_error)?
        } else {
            None
        };
        send_parts(&*self.ledger, &message.idempotency_key, count, |part, _attempt| {
            let texts = &texts;
            let encryption = &encryption;
            async move {
                let mut content = if let Some(text) = texts.get(part) {
                    json!({"msgtype": self.config.reply_msgtype, "body": text})
                } else {
                    let file = &message.files[part - texts.len()];
                    let data = tokio::fs::read(&file.path).await.map_err(|e| {
                        ChannelError::Failed(format!("reading {}: {e}", file.path.display()))
                    })?;
                    let mime = file
                        .mime_type
                        .clone()
                        .unwrap_or_else(|| "application/octet-stream".into());
                    let size = data.len();
                    if encryption.is_some() {
                        // The homeserver keeps only ciphertext; the key travels in the event.
                        let (cipher, mut file_object) = e2ee::attachment::encrypt(&data);
                        let mxc = self
                            .api
                            .upload(&file.file_name, "application/octet-stream", cipher)
                            .await
                            .map_err(ApiError::into_channel_error)?;
                        file_object["url"] = Value::String(mxc);
                        json!({
                            "msgtype": "m.file",
                            "body": file.file_name,
                            "filename": file.file_name,
                            "file": file_object,
                            "info": {"mimetype": mime, "size": size},
                        })
                    } else {
                        let mxc = self
                            .api
                            .upload(&file.file_name, &mime, data)
                            .await
                            .map_err(ApiError::into_channel_error)?;
                        json!({
                            "msgtype": "m.file",
                            "body": file.file_name,
                            "filename": file.file_name,
                            "url": mxc,
                            "info": {"mimetype": mime, "size": size},
                        })
                    }
                };
                // Threads keep every part in the thread; the first part replies.
                let reply = (part == 0).then_some(message.reply_to.as_deref()).flatten();
                if let Some(root) = &message.thread {
                    let mut relates = json!({"rel_type": "m.thread", "event_id": root, "is_falling_back": true});
                    if let Some(reply) = reply {
                        relates["is_falling_back"] = Value::Bool(false);
                        relates["m.in_reply_to"] = json!({"event_id": reply});
                    }
                    content["m.relates_to"] = relates;
                } else if let Some(reply) = reply {
                    content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": reply}});
                }
                let txn = txn_id(&message.idempotency_key, part);
                let event = if let Some(settings) = encryption {
                    let encrypted = {
                        let mut crypto = self.crypto.lock().await;
                        let crypto = crypto.as_mut().ok_or_else(|| {
                            ChannelError::Failed("end-to-end encryption is not ready".into())
                        })?;
                        crypto
                            .encrypt(&self.api, &*self.state, &message.chat_id, settings, "m.room.message", &content)
                            .await
                            .map_err(E2eeError::into_channel_error)?
                    };
                    self.api
                        .send_event(&message.chat_id, "m.room.encrypted", &txn, &encrypted)
                        .await
                } else {
                    self.api.send_message(&message.chat_id, &txn, &content).await
                }
                .map_err(ApiError::into_channel_error)?;
                Ok(Some(event))
            }
        })
        .await
    }

    /// The receive loop: sync, hand over, move the token; reconnect with backoff.
    async fn receive(self: Arc<Self>, sink: InboundSink) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        loop {
            let error = match self.sync_loop(&sink, &mut backoff).await {
                Ok(()) => return,
                Err(e) => e,
            };
            match &error {
                ApiError::Matrix { status: 401, .. } => self.health.down(error.to_string()),
                _ => self.health.reconnecting(error.to_string()),
            }
            let wait = match &error {
                ApiError::Matrix {
                    retry_after: Some(after),
                    ..
                } => *after,
                _ => backoff.next_delay(),
            };
            tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, "matrix: sync failed; trying again");
            tokio::time::sleep(wait).await;
        }
    }

    /// `Ok` only when the host stopped listening.
    async fn sync_loop(&self, sink: &InboundSink, backoff: &mut Backoff) -> Result<(), ApiError> {
        let me = self.me().await?;
        let mut since = self
            .state
            .get(NEXT_BATCH_KEY)
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        if since.is_none() {
            // First start: the rooms' history is not answered.
            let first = self.sync_once(None, Duration::ZERO).await?;
            self.join_invites(&first).await;
            // Room keys are not history: the messages they are for may still come.
            self.receive_keys(sink, &me, &first).await?;
            self.save(&first.next_batch).await?;
            since = Some(first.next_batch);
        }
        self.health.connected();
        backoff.reset();
        loop {
            let timeout = Duration::from_secs(self.config.sync_timeout_secs);
            let batch = self.sync_once(since.as_deref(), timeout).await?;
            // A stop waits for this: a batch handed over always moves the token, so a
            // restarted channel does not hand it over again.
            let handing_over = self.handing_over.lock().await;
            self.health.connected();
            self.join_invites(&batch).await;
            let mut batch = batch;
            if let Some(since) = since.as_deref() {
                self.backfill(&mut batch, since).await?;
            }
            // Keys before rooms: a message and its key often come in the same batch.
            if !self.receive_keys(sink, &me, &batch).await? {
                return Ok(());
            }
            for message in batch.messages {
                if message.sender == me {
                    continue;
                }
                let message = if message.encrypted {
                    match self.decrypt(message).await? {
                        Some(message) => message,
                        None => continue,
                    }
                } else {
                    message
                };
                if !self.hand_over(sink, &me, message).await? {
                    return Ok(());
                }
            }
            self.save(&batch.next_batch).await?;
            drop(handing_over);
            since = Some(batch.next_batch);
        }
    }

    /// Reads what a cut timeline left out: for each room of the batch whose timeline was
    /// `limited`, `/messages` backwards from its `prev_batch` down to `since` (the previous
    /// sync), at most [`MAX_BACKFILL`] events; they join the batch's messages in order
    /// (the host drops any it already has by event id). Beyond the bound, the oldest are
    /// skipped and the health says so.
    async fn backfill(&self, batch: &mut SyncBatch, since: &str) -> Result<(), ApiError> {
        let gaps = std::mem::take(&mut batch.gaps);
        let mut older: Vec<RoomMessage> = Vec::new();
        for gap in gaps {
            let Some(mut from) = gap.prev_batch.clone() else {
                continue;
            };
            let mut events: Vec<Value> = Vec::new();
            let complete = loop {
                if events.len() >= MAX_BACKFILL {
                    break false;
                }
                let (chunk, end) = self
                    .api
                    .messages_before(&gap.room, &from, since, 100)
                    .await?;
                let done = chunk.is_empty();
                events.extend(chunk);
                match end {
                    Some(next) if !done && next != from => from = next,
                    _ => break true,
                }
            };
            if !complete {
                let error = format!(
                    "room {}: more than {MAX_BACKFILL} messages arrived between two syncs; the oldest were skipped",
                    gap.room
                );
                tracing::warn!(%error, "matrix: backfill cut");
                self.health.error(error);
            }
            tracing::info!(room = %gap.room, events = events.len(), "matrix: read what a cut timeline left out");
            // `/messages` backwards gives the newest first.
            older.extend(
                events
                    .iter()
                    .rev()
                    .filter_map(|event| events::read_event(&gap.room, event)),
            );
        }
        if older.is_empty() {
            return Ok(());
        }
        // Stable: within a timestamp the backfilled stay before the batch's own.
        older.append(&mut batch.messages);
        older.sort_by_key(|m| m.origin_server_ts);
        batch.messages = older;
        Ok(())
    }

    /// A batch's encryption news: key counts, device changes, room keys; then hands over
    /// the waiting messages those keys open. `Ok(false)`: the host is gone.
    async fn receive_keys(
        &self,
        sink: &InboundSink,
        me: &str,
        batch: &SyncBatch,
    ) -> Result<bool, ApiError> {
        if !self.config.encryption {
            return Ok(true);
        }
        self.ensure_crypto().await.map_err(e2ee_to_api)?;
        let ready = {
            let mut crypto = self.crypto.lock().await;
            let Some(crypto) = crypto.as_mut() else {
                return Ok(true);
            };
            crypto.devices_changed(&batch.devices_changed);
            crypto
                .top_up(
                    &self.api,
                    &*self.state,
                    batch.one_time_keys,
                    batch.unused_fallback.as_deref(),
                )
                .await
                .map_err(e2ee_to_api)?;
            let added = crypto
                .receive_to_device(&self.api, &*self.state, &batch.to_device)
                .await
                .map_err(e2ee_to_api)?;
            if let Some(why) = crypto.last_refusal.take() {
                self.health.error(why);
            }
            let ready = if added > 0 {
                crypto.retry_pending()
            } else {
                Vec::new()
            };
            self.health.detail(encryption_detail(crypto));
            ready
        };
        for (room, event) in ready {
            let event_id = event
                .get("event_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(message) = events::read_event(&room, &event)
                && message.sender != me
            {
                tracing::info!(%room, %event_id, "matrix: a message whose key came late is handed over");
                if !self.hand_over(sink, me, message).await? {
                    return Ok(false);
                }
            }
            let mut crypto = self.crypto.lock().await;
            if let Some(crypto) = crypto.as_mut() {
                crypto.forget_pending(&event_id);
                crypto.save(&*self.state).await.map_err(e2ee_to_api)?;
                self.health.detail(encryption_detail(crypto));
            }
        }
        Ok(true)
    }

    /// An encrypted room message, decrypted; `None` when it cannot be (yet, or ever).
    async fn decrypt(&self, message: RoomMessage) -> Result<Option<RoomMessage>, ApiError> {
        let Some(raw) = message.raw.as_ref() else {
            return Ok(None);
        };
        if !self.config.encryption {
            tracing::warn!(room = %message.room, "matrix: an end-to-end encrypted message was skipped (encryption = false)");
            self.health.error(format!(
                "room {} is encrypted and [channels.matrix] encryption is off",
                message.room
            ));
            return Ok(None);
        }
        let mut crypto = self.crypto.lock().await;
        let Some(crypto) = crypto.as_mut() else {
            return Ok(None);
        };
        let outcome = crypto.decrypt(&message.room, raw);
        let read = match outcome {
            Decrypted::Event(event) => events::read_event(&message.room, &event),
            Decrypted::Missing => {
                tracing::info!(room = %message.room, event = %message.event_id, "matrix: an encrypted message waits for its key");
                crypto.defer(&message.room, raw);
                None
            }
            Decrypted::Refused(why) => {
                crypto.refused += 1;
                tracing::warn!(room = %message.room, event = %message.event_id, sender = %message.sender, why, "matrix: an encrypted message was refused");
                self.health
                    .error(format!("an encrypted message was refused: {why}"));
                None
            }
        };
        crypto.save(&*self.state).await.map_err(e2ee_to_api)?;
        self.health.detail(encryption_detail(crypto));
        Ok(read)
    }

    async fn sync_once(
        &self,
        since: Option<&str>,
        timeout: Duration,
    ) -> Result<SyncBatch, ApiError> {
        let v = self.api.sync(since, timeout, FILTER).await?;
        events::read_sync(&v)
            .ok_or_else(|| ApiError::Decode("a sync answer without next_batch".into()))
    }

    async fn save(&self, next_batch: &str) -> Result<(), ApiError> {
        self.state
            .put(NEXT_BATCH_KEY, next_batch)
            .await
            .map_err(|e| ApiError::Network(e.to_string()))
    }

    async fn join_invites(&self, batch: &SyncBatch) {
        for room in &batch.invites {
            let inviter = batch.inviters.get(room).map(String::as_str);
            if !self.invite_allowed(inviter) {
                tracing::info!(
                    room,
                    ?inviter,
                    "matrix: invite not from invites_from; left alone"
                );
                continue;
            }
            match self.api.join(room).await {
                Ok(()) => tracing::info!(room, ?inviter, "matrix: joined on invite"),
                Err(e) => tracing::warn!(error = %e, room, "matrix: could not join"),
            }
        }
    }

    /// Hands one message to the host and waits until it is settled. `Ok(false)`: the host
    /// is gone. A message the host could not store is an error (the batch is synced again).
    async fn hand_over(
        &self,
        sink: &InboundSink,
        me: &str,
        message: RoomMessage,
    ) -> Result<bool, ApiError> {
        let members = self.member_count(&message.room).await;
        let is_group = members > 2;
        let mentions_me = !is_group
            || message.mentioned.iter().any(|u| u == me)
            || events::body_mentions(&message.body, me);
        let mut attachments = Vec::new();
        let mut text = message.body.clone();
        if let Some(media) = &message.media {
            text = media.caption.clone().unwrap_or_default();
            match self
                .api
                .download(&media.mxc, self.config.max_attachment_bytes)
                .await
            {
                Ok(Some(data)) => {
                    let data = match &media.file {
                        // Checked against its hash before a byte is decrypted.
                        Some(file) => e2ee::attachment::decrypt(file, &data).map_err(|e| {
                            tracing::warn!(error = %e, "matrix: an encrypted file was not decrypted");
                            e
                        }),
                        None => Ok(data),
                    };
                    match data {
                        Ok(data) => attachments.push(Attachment {
                            file_name: media.name.clone(),
                            mime_type: media.mime.clone(),
                            data: bytes::Bytes::from(data),
                        }),
                        Err(e) => text.push_str(&format!(
                            "\n[file {} could not be decrypted: {e}]",
                            media.name
                        )),
                    }
                }
                Ok(None) => {
                    text.push_str(&format!(
                        "\n[file {} not downloaded: larger than {} bytes]",
                        media.name, self.config.max_attachment_bytes
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "matrix: a file could not be downloaded");
                    text.push_str(&format!("\n[file {} could not be downloaded]", media.name));
                }
            }
        }
        let event = InboundEvent {
            channel: NAME.into(),
            chat_id: message.room.clone(),
            chat_name: message.room.clone(),
            is_group,
            thread: message.thread_root.clone(),
            platform_msg_id: message.event_id.clone(),
            sender: message.sender.clone(),
            sender_name: None,
            text,
            received_at: nanoclaw_channel::now_ms(),
            mentions_me,
            from_bot: message.is_notice(),
            attachments,
            ack: None,
        };
        let outcome = hand_over(sink, event).await;
        self.health.event();
        match outcome {
            Some(outcome) if outcome.is_settled() => Ok(true),
            Some(outcome) => Err(ApiError::Network(format!(
                "the host could not store a message ({outcome:?}); syncing the batch again"
            ))),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_are_stable_per_part() {
        assert_eq!(txn_id("k", 0), txn_id("k", 0));
        assert_ne!(txn_id("k", 0), txn_id("k", 1));
        assert!(txn_id("k", 0).chars().all(|c| c.is_ascii_alphanumeric()));
    }
}

//! Turns gateway dispatches into [`InboundEvent`]s, in order, and tells the session store
//! which sequence numbers the host is done with.
//!
//! A MESSAGE_CREATE becomes an event unless the bot wrote it. Threads are channels with a
//! `parent_id`: their messages are reported in the parent channel with the thread set.
//! Threads are learnt from GUILD_CREATE (`threads`), THREAD_CREATE/UPDATE, or — for one
//! never announced — one `GET /channels/{id}`, cached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use nanoclaw_channel::{
    Attachment, ChannelEvent, HealthCell, InboundEvent, InboundSink, RouteOutcome, now_ms,
};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::PLATFORM;
use crate::api::Api;
use crate::model::{Channel, GuildCreate, Message, Ready, User, snowflake_ms};
use crate::session::SessionStore;

/// How many settled message ids are remembered, so a replay after a resume is not
/// reported twice.
const SETTLED_MEMORY: usize = 1024;

/// One dispatch, as the gateway read it.
#[derive(Debug)]
pub struct Dispatch {
    /// Which connection read it (a new connection may replay what an old one had).
    pub conn: u64,
    pub session_id: Option<String>,
    pub seq: Option<u64>,
    pub kind: String,
    pub data: Value,
}

pub struct Inbound {
    api: Arc<Api>,
    health: Arc<HealthCell>,
    max_attachment_bytes: u64,
    bot: Mutex<Option<User>>,
    channels: Mutex<HashMap<String, Channel>>,
    settled: Mutex<(VecDeque<String>, HashSet<String>)>,
}

impl Inbound {
    pub fn new(api: Arc<Api>, health: Arc<HealthCell>, max_attachment_bytes: u64) -> Inbound {
        Inbound {
            api,
            health,
            max_attachment_bytes,
            bot: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            settled: Mutex::new((VecDeque::new(), HashSet::new())),
        }
    }

    pub async fn set_bot(&self, user: User) {
        *self.bot.lock().await = Some(user);
    }

    /// Handles dispatches in order until the gateway side goes away. The session's
    /// sequence advances only past dispatches the host settled; after one it did not
    /// (a failed store), it stays put for the rest of that connection, so the next resume
    /// (a reconnect or a restart) replays from there.
    pub async fn run(
        self: Arc<Self>,
        mut dispatches: mpsc::UnboundedReceiver<Dispatch>,
        sink: InboundSink,
        sessions: Arc<SessionStore>,
    ) {
        let mut frozen_conn: Option<u64> = None;
        while let Some(dispatch) = dispatches.recv().await {
            if frozen_conn.is_some_and(|c| c != dispatch.conn) {
                frozen_conn = None;
            }
            let settled = self.handle(&dispatch, &sink).await;
            if !settled {
                frozen_conn = Some(dispatch.conn);
            }
            if let (None, Some(session), Some(seq)) =
                (frozen_conn, &dispatch.session_id, dispatch.seq)
            {
                sessions.settled(session, seq).await;
            }
        }
    }

    /// Whether the host is done with the dispatch.
    async fn handle(&self, dispatch: &Dispatch, sink: &InboundSink) -> bool {
        let data = dispatch.data.clone();
        match dispatch.kind.as_str() {
            "READY" => match serde_json::from_value::<Ready>(data) {
                Ok(ready) => self.set_bot(ready.user).await,
                Err(e) => self.malformed("READY", &e),
            },
            "GUILD_CREATE" => match serde_json::from_value::<GuildCreate>(data) {
                Ok(guild) => {
                    let mut channels = self.channels.lock().await;
                    for c in guild.channels.into_iter().chain(guild.threads) {
                        channels.insert(c.id.clone(), c);
                    }
                }
                Err(e) => self.malformed("GUILD_CREATE", &e),
            },
            "CHANNEL_CREATE" | "CHANNEL_UPDATE" | "THREAD_CREATE" | "THREAD_UPDATE" => {
                match serde_json::from_value::<Channel>(data) {
                    Ok(c) => {
                        self.channels.lock().await.insert(c.id.clone(), c);
                    }
                    Err(e) => self.malformed(&dispatch.kind, &e),
                }
            }
            "MESSAGE_CREATE" => match serde_json::from_value::<Message>(data) {
                Ok(message) => return self.message(message, sink).await,
                Err(e) => self.malformed("MESSAGE_CREATE", &e),
            },
            _ => {}
        }
        true
    }

    fn malformed(&self, kind: &str, error: &serde_json::Error) {
        tracing::warn!(dispatch = kind, error = %error, "discord: skipping a malformed dispatch");
        self.health
            .error(format!("malformed {kind} dispatch skipped: {error}"));
    }

    async fn message(&self, message: Message, sink: &InboundSink) -> bool {
        if self.settled.lock().await.1.contains(&message.id) {
            tracing::debug!(id = %message.id, "discord: message replayed after a resume; already settled");
            return true;
        }
        let Some(event) = self.event(message).await else {
            return true;
        };
        let id = event.platform_msg_id.clone();
        let (ack, outcome) = oneshot::channel();
        let event = InboundEvent {
            ack: Some(ack),
            ..event
        };
        if sink.send(ChannelEvent::Inbound(event)).await.is_err() {
            tracing::warn!("discord: the host stopped taking messages");
            return false;
        }
        let outcome = outcome
            .await
            .unwrap_or_else(|_| RouteOutcome::Failed("the host dropped the message".into()));
        if !outcome.is_settled() {
            tracing::warn!(
                id,
                ?outcome,
                "discord: the host did not store a message; it will be replayed on the next resume"
            );
            return false;
        }
        let mut settled = self.settled.lock().await;
        if settled.1.insert(id.clone()) {
            settled.0.push_back(id);
            if settled.0.len() > SETTLED_MEMORY
                && let Some(old) = settled.0.pop_front()
            {
                settled.1.remove(&old);
            }
        }
        true
    }

    /// The event for a message, `None` for the bot's own.
    async fn event(&self, message: Message) -> Option<InboundEvent> {
        let bot = self.bot.lock().await.clone();
        let bot_id = bot.as_ref().map(|b| b.id.as_str()).unwrap_or_default();
        if message.author.id == bot_id {
            return None;
        }
        let is_dm = message.guild_id.is_none();
        let (chat_id, thread, chat_name) = if is_dm {
            (
                message.channel_id.clone(),
                None,
                message.author.display_name().to_string(),
            )
        } else {
            self.place(&message.channel_id).await
        };
        let mentions_me = is_dm
            || message.mentions.iter().any(|u| u.id == bot_id)
            || message
                .referenced_message
                .as_ref()
                .is_some_and(|r| r.author.id == bot_id);
        let mut text = message.content.clone();
        if let Some(bot) = &bot {
            // Show the mention as people see it, not as `<@id>`.
            let shown = format!("@{}", bot.username);
            text = text
                .replace(&format!("<@{}>", bot.id), &shown)
                .replace(&format!("<@!{}>", bot.id), &shown);
        }
        let attachments = self.attachments(&message, &mut text).await;
        Some(InboundEvent {
            channel: PLATFORM.to_string(),
            chat_id,
            chat_name,
            is_group: !is_dm,
            thread,
            platform_msg_id: message.id.clone(),
            sender: message.author.id.clone(),
            sender_name: Some(
                message
                    .member
                    .as_ref()
                    .and_then(|m| m.nick.clone())
                    .unwrap_or_else(|| message.author.display_name().to_string()),
            ),
            text,
            received_at: snowflake_ms(&message.id).unwrap_or_else(now_ms),
            mentions_me,
            from_bot: message.author.bot,
            attachments,
            ack: None,
        })
    }

    /// (chat id, thread, chat name) for a guild channel: a thread reports its parent.
    async fn place(&self, channel_id: &str) -> (String, Option<String>, String) {
        let Some(channel) = self.channel(channel_id).await else {
            return (channel_id.to_string(), None, channel_id.to_string());
        };
        match (&channel.parent_id, channel.is_thread()) {
            (Some(parent), true) => {
                let name = match self.channel(parent).await {
                    Some(p) => p.name.unwrap_or_else(|| parent.clone()),
                    None => parent.clone(),
                };
                (parent.clone(), Some(channel.id), name)
            }
            _ => (channel.id.clone(), None, channel.name.unwrap_or(channel.id)),
        }
    }

    async fn channel(&self, id: &str) -> Option<Channel> {
        if let Some(c) = self.channels.lock().await.get(id) {
            return Some(c.clone());
        }
        match self.api.channel(id).await {
            Ok(c) => {
                self.channels.lock().await.insert(id.to_string(), c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::warn!(channel = id, error = %e, "discord: looking up a channel");
                None
            }
        }
    }

    /// Downloads the message's attachments; what is too large or fails is noted in `text`.
    async fn attachments(&self, message: &Message, text: &mut String) -> Vec<Attachment> {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        for a in &message.attachments {
            let result = if a.size > self.max_attachment_bytes {
                Ok(None)
            } else {
                self.api.download(&a.url, self.max_attachment_bytes).await
            };
            match result {
                Ok(Some(data)) => out.push(Attachment {
                    file_name: a.filename.clone(),
                    mime_type: a.content_type.clone(),
                    data,
                }),
                Ok(None) => notes.push(format!(
                    "[attachment {} ({} bytes) skipped: larger than the {}-byte limit]",
                    a.filename, a.size, self.max_attachment_bytes
                )),
                Err(e) => {
                    tracing::warn!(file = %a.filename, error = %e, "discord: attachment not downloaded");
                    notes.push(format!(
                        "[attachment {} could not be downloaded]",
                        a.filename
                    ));
                }
            }
        }
        for note in notes {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&note);
        }
        out
    }
}

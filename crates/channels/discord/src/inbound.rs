//! Turns gateway dispatches into [`InboundEvent`]s, in order, and tells the session store
//! which sequence numbers the host is done with. Messages are pipelined: many go to the
//! host before its first answer comes back (see [`Inbound::run`]).
//!
//! A MESSAGE_CREATE becomes an event unless the bot wrote it. Threads are channels with a
//! `parent_id`: their messages are reported in the parent channel with the thread set.
//! Threads are learnt from GUILD_CREATE (`threads`), THREAD_CREATE/UPDATE, or — for one
//! never announced — one `GET /channels/{id}`, cached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use nanoclaw_channel::{
    Attachment, DEFAULT_IN_FLIGHT, HealthCell, InboundEvent, InboundSink, Pipeline, RouteOutcome,
    Settlement, now_ms,
};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio::time::MissedTickBehavior;

use crate::PLATFORM;
use crate::api::Api;
use crate::model::{Channel, GuildCreate, Message, Ready, User, snowflake_ms};
use crate::session::{SAVE_EVERY, SessionStore};

/// How many settled message ids are remembered, so a replay after a resume is not
/// reported twice.
const SETTLED_MEMORY: usize = 1024;

/// What is remembered of a dispatch until the host has settled it.
#[derive(Debug)]
struct Tag {
    conn: u64,
    session_id: Option<String>,
    seq: Option<u64>,
    /// The message it carried to the host, if any.
    message_id: Option<String>,
}

/// Where the resume cursor stands.
#[derive(Debug, Default)]
struct Cursor {
    /// A connection on which a dispatch was not settled: the cursor stays before it for
    /// the rest of that connection.
    frozen_conn: Option<u64>,
}

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

    /// Handles dispatches in order until the gateway side goes away.
    ///
    /// Messages go to the host without waiting for its answer (up to
    /// [`DEFAULT_IN_FLIGHT`] unanswered); the answers are taken in the order the
    /// dispatches arrived. The session's sequence advances only over that settled prefix:
    /// after a dispatch the host did not settle (a failed store, a dropped ack) it stays put
    /// for the rest of that connection, so the next resume (a reconnect or a restart)
    /// replays from there. Messages after the failed one that the host did store are
    /// replayed too; the settled-ids memory skips them (and the host would store them once
    /// anyway, by message id).
    pub async fn run(
        self: Arc<Self>,
        mut dispatches: mpsc::UnboundedReceiver<Dispatch>,
        sink: InboundSink,
        sessions: Arc<SessionStore>,
    ) {
        let mut pipeline = Pipeline::new(DEFAULT_IN_FLIGHT);
        let mut cursor = Cursor::default();
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                dispatch = dispatches.recv() => {
                    let Some(dispatch) = dispatch else { break };
                    let mut settled = self.handle(dispatch, &sink, &mut pipeline).await;
                    settled.extend(pipeline.ready());
                    for one in settled {
                        self.record(one, &mut cursor, &sessions).await;
                    }
                }
                Some(one) = pipeline.next(), if !pipeline.is_empty() => {
                    self.record(one, &mut cursor, &sessions).await;
                }
                _ = save.tick() => sessions.save_if_stale().await,
            }
        }
        // The gateway reader is gone (a stop): what the host settles within the stop's
        // grace is recorded, and the sequence saved.
        while let Some(one) = pipeline.next().await {
            self.record(one, &mut cursor, &sessions).await;
        }
        sessions.flush().await;
    }

    /// Takes the host's answer for one dispatch (in arrival order) and moves the cursor.
    async fn record(&self, settled: Settlement<Tag>, cursor: &mut Cursor, sessions: &SessionStore) {
        let Settlement { tag, outcome } = settled;
        if cursor.frozen_conn.is_some_and(|c| c != tag.conn) {
            cursor.frozen_conn = None;
        }
        if !outcome.is_settled() {
            tracing::warn!(
                id = tag.message_id.as_deref().unwrap_or_default(),
                ?outcome,
                "discord: the host did not store a message; it will be replayed on the next resume"
            );
            cursor.frozen_conn = Some(tag.conn);
        } else if let Some(id) = tag.message_id {
            self.remember_settled(id).await;
        }
        if let (None, Some(session), Some(seq)) = (cursor.frozen_conn, &tag.session_id, tag.seq) {
            sessions.settled(session, seq).await;
        }
    }

    async fn remember_settled(&self, id: String) {
        let mut settled = self.settled.lock().await;
        if settled.1.insert(id.clone()) {
            settled.0.push_back(id);
            if settled.0.len() > SETTLED_MEMORY
                && let Some(old) = settled.0.pop_front()
            {
                settled.1.remove(&old);
            }
        }
    }

    /// Handles one dispatch: a message goes to the host, anything else is settled at once.
    /// Returns what settled meanwhile (when the pipeline was full), oldest first.
    async fn handle(
        &self,
        dispatch: Dispatch,
        sink: &InboundSink,
        pipeline: &mut Pipeline<Tag>,
    ) -> Vec<Settlement<Tag>> {
        let mut tag = Tag {
            conn: dispatch.conn,
            session_id: dispatch.session_id,
            seq: dispatch.seq,
            message_id: None,
        };
        let data = dispatch.data;
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
                Ok(message) => {
                    if self.settled.lock().await.1.contains(&message.id) {
                        tracing::debug!(id = %message.id, "discord: message replayed after a resume; already settled");
                    } else if let Some(event) = self.event(message).await {
                        tag.message_id = Some(event.platform_msg_id.clone());
                        return pipeline.send(sink, event, tag).await;
                    }
                }
                Err(e) => self.malformed("MESSAGE_CREATE", &e),
            },
            _ => {}
        }
        pipeline.push_known(tag, RouteOutcome::Accepted).await
    }

    fn malformed(&self, kind: &str, error: &serde_json::Error) {
        tracing::warn!(dispatch = kind, error = %error, "discord: skipping a malformed dispatch");
        self.health
            .error(format!("malformed {kind} dispatch skipped: {error}"));
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

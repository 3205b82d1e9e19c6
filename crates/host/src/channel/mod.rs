//! Chat channels: where messages come from and where replies go.
//!
//! A channel turns a platform's events into [`InboundEvent`]s and delivers
//! [`OutgoingMessage`]s back. Channels register themselves in [`REGISTRY`]; the host
//! starts those the configuration enables. Adding a channel is one new file and one line
//! in the registry.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::config::{Config, Paths};

pub mod sanitize;
pub mod terminal;

/// A message that arrived on a channel.
#[derive(Debug)]
pub struct InboundEvent {
    /// Channel type, e.g. `terminal`.
    pub channel: String,
    /// The chat's id on the platform.
    pub chat_id: String,
    pub chat_name: String,
    pub is_group: bool,
    pub thread: Option<String>,
    /// The platform's id for this message; a re-delivered message has the same id and is
    /// stored only once.
    pub platform_msg_id: String,
    pub sender: String,
    pub sender_name: Option<String>,
    pub text: String,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Told what became of the message once the host has decided (stored durably,
    /// ignored, or refused), for channels that acknowledge to the sender.
    pub ack: Option<tokio::sync::oneshot::Sender<RouteOutcome>>,
}

/// What the router did with an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// Stored; an agent will answer.
    Accepted,
    /// Seen before (same platform message id); not stored again.
    Duplicate,
    /// No agent group is wired to this chat, or the trigger was absent.
    Ignored(String),
    /// Could not be stored.
    Failed(String),
}

/// What channels tell the host.
#[derive(Debug)]
pub enum ChannelEvent {
    Inbound(InboundEvent),
    /// Someone is reachable in this chat again: queued messages can be delivered now.
    Reachable {
        channel: String,
        chat_id: String,
    },
    /// The owner's CLI changed the database: scheduled tasks and queued work are looked at again.
    Wake,
}

/// A reply or message for a chat.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub outbound_id: i64,
    /// Stable per message; channels that can deduplicate use it so that a message retried
    /// after a crash is shown once.
    pub idempotency_key: String,
    pub chat_id: String,
    pub thread: Option<String>,
    pub text: String,
    /// `reply`, `message` or `error`.
    pub kind: String,
    /// The platform id of the message this answers, when it answers one.
    pub reply_to: Option<String>,
    /// The platform ids of every message this answers: a turn answers all the messages
    /// batched into it, not only the last (`reply_to`). Empty: just `reply_to`.
    pub answers: Vec<String>,
}

/// Live progress of a turn, for channels that can show it (typing, streamed text).
#[derive(Debug, Clone)]
pub enum Progress {
    TextDelta(String),
    Tool { tool: String, summary: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Nobody is there to receive it right now; the message stays queued.
    #[error("{0} is not connected")]
    NotConnected(String),
    /// Someone is connected, but nobody who asked for this message or shows the whole chat:
    /// the message stays queued without holding up the chat's other messages.
    #[error("not delivered yet: {0}")]
    Unclaimed(String),
    #[error("delivery failed: {0}")]
    Failed(String),
    #[error("channel setup failed: {0}")]
    Setup(String),
}

/// Where channels send what they receive.
pub type InboundSink = mpsc::Sender<ChannelEvent>;

#[async_trait]
pub trait Channel: Send + Sync {
    /// Channel type, e.g. `terminal`.
    fn name(&self) -> &'static str;

    /// Starts receiving; events go to `sink`. Returns once the channel is listening.
    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError>;

    /// Delivers one message. Returns the platform's message id when it has one.
    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError>;

    /// Shows progress of a turn in a chat (best effort; default: nothing). `answers`: the
    /// platform ids of the messages the turn answers.
    async fn progress(&self, _chat_id: &str, _answers: &[String], _progress: Progress) {}

    /// For a host started on demand by clients: returns `true` once nobody has been
    /// connected for `linger` and the channel has stopped accepting; `false` at once when the
    /// channel cannot tell (the default).
    async fn until_unattended(&self, _linger: Duration) -> bool {
        false
    }

    /// Stops receiving.
    async fn stop(&self) {}
}

/// What a channel factory may look at.
pub struct ChannelContext<'a> {
    pub config: &'a Config,
    pub paths: &'a Paths,
    /// Why agents cannot run here, for channels that tell people on arrival.
    pub warning: Option<String>,
}

/// Builds a channel, or `Ok(None)` when the configuration leaves it off.
pub type ChannelFactory = fn(&ChannelContext<'_>) -> Result<Option<Arc<dyn Channel>>, ChannelError>;

/// Every channel nanoclaw knows, by name.
pub const REGISTRY: &[(&str, ChannelFactory)] = &[("terminal", terminal::factory)];

/// The enabled channels, built.
pub fn build_enabled(ctx: &ChannelContext<'_>) -> Result<Vec<Arc<dyn Channel>>, ChannelError> {
    let mut out = Vec::new();
    for (name, factory) in REGISTRY {
        if let Some(channel) = factory(ctx)? {
            tracing::debug!(channel = name, "channel enabled");
            out.push(channel);
        }
    }
    Ok(out)
}

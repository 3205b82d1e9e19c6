//! What flows between a channel and the host.

use std::path::PathBuf;

use bytes::Bytes;

/// A message that arrived on a channel.
#[derive(Debug, Default)]
pub struct InboundEvent {
    /// Channel type, e.g. `telegram`.
    pub channel: String,
    /// The chat's id on the platform.
    pub chat_id: String,
    pub chat_name: String,
    pub is_group: bool,
    /// The platform's thread (Telegram topic, Discord thread, Slack `thread_ts`).
    pub thread: Option<String>,
    /// The platform's id for this message; a re-delivered message has the same id and is
    /// stored only once.
    pub platform_msg_id: String,
    pub sender: String,
    pub sender_name: Option<String>,
    pub text: String,
    /// Unix milliseconds.
    pub received_at: i64,
    /// The platform says the message addresses the bot: an @mention of the bot, a reply to
    /// one of its messages, or a direct message. Wirings with the `mention` rule need it.
    pub mentions_me: bool,
    /// The sender is a bot (another one; channels drop the bot's own messages themselves).
    /// The router never answers bots, so two assistants cannot talk to each other forever.
    pub from_bot: bool,
    /// Files that came with the message, already downloaded; the host puts them in the
    /// group's inbox folder for the agent.
    pub attachments: Vec<Attachment>,
    /// Told what became of the message once the host has decided (stored durably,
    /// ignored, or refused). Channels that keep a cursor advance it only after this.
    pub ack: Option<tokio::sync::oneshot::Sender<RouteOutcome>>,
}

/// A file received with a message.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The name to give the file (untrusted: the host sanitizes it).
    pub file_name: String,
    pub mime_type: Option<String>,
    pub data: Bytes,
}

/// What the router did with an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// Stored; an agent will answer.
    Accepted,
    /// Seen before (same platform message id); not stored again.
    Duplicate,
    /// No agent group is wired to this chat, the trigger was absent, or the sender is not
    /// allowed.
    Ignored(String),
    /// Held for the owner's decision (unknown chat or sender); replayed on approval.
    Held(String),
    /// Could not be stored.
    Failed(String),
}

impl RouteOutcome {
    /// Whether the host is done with the message: a channel may advance its cursor past it.
    pub fn is_settled(&self) -> bool {
        !matches!(self, RouteOutcome::Failed(_))
    }
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
    /// The owner asked (from the CLI) how the channels are doing.
    ChannelStatus {
        reply: tokio::sync::oneshot::Sender<Vec<(String, crate::health::Health)>>,
    },
    /// The owner asked (from the CLI) to restart one channel.
    RestartChannel {
        name: String,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    },
    /// The owner asked (from the CLI, `nanoclaw status`) how the host itself is doing.
    HostStatus {
        reply: tokio::sync::oneshot::Sender<HostState>,
    },
    /// The owner asked (from the CLI, `nanoclaw stop`) the host to shut down as on SIGTERM.
    Stop,
}

/// The running host's live state, for `nanoclaw status` (what only the running process
/// knows; what the database knows the CLI reads itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    /// The host's process id.
    pub pid: u32,
    /// The host's version (its binary may be older than the CLI asking).
    pub version: String,
    /// When the host started (unix ms).
    pub started_at: i64,
    /// The sandbox runtime agents run in (`native`, `docker`, `apple`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Why no agent can run, when none can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_error: Option<String>,
    /// Agents alive (busy with a turn or idle and warm).
    pub live_agents: usize,
    /// The most agents alive at once (`agents.max_concurrent`).
    pub max_agents: usize,
    /// Sessions with a worker answering their messages right now.
    pub busy_sessions: usize,
    /// Messages stored and waiting for a turn (pending, due or backing off).
    pub queued_messages: u64,
    /// Messages in a turn right now.
    pub processing_messages: u64,
}

/// A reply or message for a chat.
#[derive(Debug, Clone, Default)]
pub struct OutgoingMessage {
    pub outbound_id: i64,
    /// Stable per message; the send ledger and platforms that deduplicate use it so that a
    /// message retried after a crash is shown once.
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
    /// Files to send with the message (checked by the host: inside the group's folder).
    pub files: Vec<OutgoingFile>,
}

/// A file to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingFile {
    pub file_name: String,
    pub path: PathBuf,
    pub mime_type: Option<String>,
}

/// Live progress of a turn, for channels that can show it (typing, streamed text).
#[derive(Debug, Clone)]
pub enum Progress {
    /// A turn started working on the chat's messages (channels show "typing…").
    Working,
    TextDelta(String),
    Tool {
        tool: String,
        summary: String,
    },
}

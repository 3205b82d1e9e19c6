//! Row types and enums. Plain pub-field structs, serializable for `--json` output.

use serde::{Deserialize, Serialize};

/// Declares a string-backed enum with `as_str`, `FromStr`, `Display` and SQLite conversions.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::StoreError;
            fn from_str(s: &str) -> Result<Self, $crate::StoreError> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let allowed: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        $crate::StoreError::Invalid(format!(
                            "{:?} is not a valid {} (expected one of: {})",
                            s,
                            stringify!($name),
                            allowed.join(", ")
                        ))
                    })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> ::rusqlite::Result<::rusqlite::types::ToSqlOutput<'_>> {
                Ok(::rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl ::rusqlite::types::FromSql for $name {
            fn column_result(value: ::rusqlite::types::ValueRef<'_>) -> ::rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                text.parse().map_err(|e: $crate::StoreError| ::rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

pub(crate) use text_enum;

text_enum!(
    /// Lifecycle of an inbound message.
    InboundStatus {
        Pending => "pending",
        Processing => "processing",
        Done => "done",
        Failed => "failed",
    }
);

text_enum!(
    /// Delivery state of an outbound message.
    OutboundState {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
    }
);

text_enum!(
    /// What an outbound message is.
    OutboundKind {
        /// The agent's answer to inbound messages.
        Reply => "reply",
        /// A message the agent sent on its own (scheduled task, tool).
        Message => "message",
        /// A notice to the user that something failed.
        Error => "error",
    }
);

text_enum!(
    /// How a wiring maps conversations to sessions.
    SessionMode {
        /// One session for the whole chat; threads are ignored.
        Shared => "shared",
        /// One session per platform thread.
        PerThread => "per-thread",
        /// One session for the whole agent group: every chat wired this way talks into the
        /// same conversation (NanoClaw's "agent-shared"); each reply goes to the chat and
        /// thread of the messages it answers.
        AgentShared => "agent-shared",
    }
);

text_enum!(
    /// What a session is the conversation of.
    SessionScope {
        /// One chat (or one thread of it, in per-thread mode).
        Chat => "chat",
        /// The whole agent group, across the chats wired to it with [`SessionMode::AgentShared`].
        Group => "group",
    }
);

text_enum!(
    /// Whether a session still receives messages.
    SessionStatus {
        Active => "active",
        Closed => "closed",
    }
);

/// An agent group: one agent persona with its own folder, trigger and model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub folder: String,
    pub trigger: String,
    pub is_main: bool,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub created_at: i64,
    /// IANA time zone for the group's schedules and clock; `None`: the host's.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Input of [`Store::ensure_group`](crate::Store::ensure_group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewGroup {
    pub name: String,
    pub folder: String,
    /// `None` → the default trigger `@Andy`.
    pub trigger: Option<String>,
    pub is_main: bool,
    pub provider: Option<String>,
    pub model: Option<String>,
}

/// A chat on some channel (a DM or a group chat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: i64,
    pub channel: String,
    pub platform_id: String,
    pub name: String,
    pub is_group: bool,
    pub created_at: i64,
}

text_enum!(
    /// Which messages of a wired chat wake its group.
    TriggerRule {
        /// Messages containing the group's trigger word (`@Andy`).
        Word => "word",
        /// Messages the platform says address the bot (an @mention, a reply to the bot, a
        /// direct message), or containing the trigger word.
        Mention => "mention",
        /// Every message.
        Always => "always",
        /// Messages the wiring's regular expression matches.
        Regex => "regex",
    }
);

text_enum!(
    /// What happens to a message from a sender not on a wiring's allowlist.
    UnknownSenders {
        /// Dropped (logged).
        Ignore => "ignore",
        /// Held; the owner is asked in the main chat and the message is replayed on approval.
        Ask => "ask",
    }
);

/// How a chat is wired to a group: which messages wake it and from whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WiringOptions {
    pub trigger_rule: TriggerRule,
    /// The regular expression of [`TriggerRule::Regex`].
    pub trigger_pattern: Option<String>,
    /// Platform sender ids allowed to wake the group; `None`: anyone in the chat.
    pub allowed_senders: Option<Vec<String>>,
    pub unknown_senders: UnknownSenders,
    pub session_mode: SessionMode,
}

impl WiringOptions {
    /// The trigger word when `requires_trigger`, else every message; anyone; `mode`.
    pub fn new(requires_trigger: bool, mode: SessionMode) -> WiringOptions {
        WiringOptions {
            trigger_rule: if requires_trigger {
                TriggerRule::Word
            } else {
                TriggerRule::Always
            },
            trigger_pattern: None,
            allowed_senders: None,
            unknown_senders: UnknownSenders::Ignore,
            session_mode: mode,
        }
    }
}

/// A chat routed to an agent group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wiring {
    pub id: i64,
    pub chat_id: i64,
    pub group_id: String,
    pub trigger_rule: TriggerRule,
    pub trigger_pattern: Option<String>,
    pub allowed_senders: Option<Vec<String>>,
    pub unknown_senders: UnknownSenders,
    pub session_mode: SessionMode,
    pub created_at: i64,
}

impl Wiring {
    /// Whether messages need something (a trigger word, a mention, a match) to wake the group.
    pub fn requires_trigger(&self) -> bool {
        self.trigger_rule != TriggerRule::Always
    }

    /// Whether `sender` may wake the group.
    pub fn allows_sender(&self, sender: &str) -> bool {
        self.allowed_senders
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == sender))
    }
}

/// A message from an unknown chat or sender, waiting for the owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMessage {
    pub id: i64,
    pub chat_id: i64,
    pub group_id: Option<String>,
    /// `unknown_chat` or `unknown_sender`.
    pub reason: String,
    pub platform_msg_id: String,
    pub sender: String,
    pub sender_name: Option<String>,
    pub text: String,
    pub thread: Option<String>,
    pub mentions_me: bool,
    pub received_at: i64,
    /// `waiting`, `approved` or `denied`.
    pub state: String,
}

/// A conversation between one group and one chat (and thread, in per-thread mode), or with
/// every chat wired to the group in agent-shared mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub group_id: String,
    /// The chat; for a group-wide session, the chat that started it.
    pub chat_id: i64,
    pub thread: Option<String>,
    pub status: SessionStatus,
    pub scope: SessionScope,
    pub created_at: i64,
    pub last_active: i64,
}

/// Input of [`Store::insert_inbound`](crate::Store::insert_inbound).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewInbound {
    pub session_id: String,
    pub chat_id: i64,
    pub platform_msg_id: String,
    pub sender: String,
    pub sender_name: Option<String>,
    pub text: String,
    pub thread: Option<String>,
    /// Unix ms; the message is due for processing from this time on.
    pub received_at: i64,
}

/// Result of [`Store::insert_inbound`](crate::Store::insert_inbound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsertedInbound {
    /// The row id (the existing row's id when `duplicate`).
    pub id: i64,
    /// The platform re-delivered a message already stored; nothing was inserted.
    pub duplicate: bool,
}

/// A stored inbound message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub id: i64,
    pub session_id: String,
    pub chat_id: i64,
    pub platform_msg_id: String,
    pub sender: String,
    pub sender_name: Option<String>,
    pub text: String,
    pub thread: Option<String>,
    pub received_at: i64,
    pub status: InboundStatus,
    pub tries: u32,
    pub process_after: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
    /// The scheduled task run this row carries out; `None` for chat messages.
    pub task_run_id: Option<i64>,
}

/// Input of [`Store::insert_outbound`](crate::Store::insert_outbound) and friends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOutbound {
    pub session_id: Option<String>,
    pub chat_id: i64,
    pub in_reply_to: Option<i64>,
    /// Unique; inserting an existing key is a no-op (so retries never duplicate a message).
    pub idempotency_key: String,
    pub text: String,
    pub kind: OutboundKind,
    /// Files sent with the message, in order (usually none).
    pub files: Vec<OutboundFile>,
}

/// A file sent with an outbound message: the host's own copy, ready for the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundFile {
    /// The name the chat shows.
    pub file_name: String,
    /// Where the host keeps the copy until the message is delivered or given up.
    pub path: String,
    pub mime_type: Option<String>,
    /// The copy's length in bytes.
    pub size: u64,
}

/// A stored outbound message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    pub id: i64,
    pub session_id: Option<String>,
    pub chat_id: i64,
    pub in_reply_to: Option<i64>,
    pub idempotency_key: String,
    pub text: String,
    pub kind: OutboundKind,
    pub state: OutboundState,
    pub tries: u32,
    pub platform_message_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    /// The platform thread it goes to: a per-thread session's thread, or in a group-wide
    /// session the thread of the message it answers.
    pub thread: Option<String>,
}

/// Result of [`Store::retry_or_fail`](crate::Store::retry_or_fail).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOutcome {
    /// Rows put back to `pending` with a backoff.
    pub retried: Vec<i64>,
    /// Rows that reached `max_tries` and are now `failed`.
    pub failed: Vec<i64>,
    /// The failure notice, when it was inserted by this call.
    pub notice: Option<Outbound>,
    /// Scheduled task runs that ended failed with these rows (for alerts).
    pub failed_runs: Vec<crate::tasks::FailedRun>,
}

/// Token usage of one model turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

/// Summed usage over many turns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Number of recorded turns.
    pub turns: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

//! Messages from unknown chats and senders held for the owner, chats the owner turned away,
//! and one-time pairing codes.

use rusqlite::{OptionalExtension, Row, params};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};
use crate::model::HeldMessage;

const HELD_COLS: &str = "id, chat_id, group_id, reason, platform_msg_id, sender, sender_name, \
     text, thread, mentions_me, received_at, state";

fn held_row(row: &Row<'_>) -> rusqlite::Result<HeldMessage> {
    Ok(HeldMessage {
        id: row.get(0)?,
        chat_id: row.get(1)?,
        group_id: row.get(2)?,
        reason: row.get(3)?,
        platform_msg_id: row.get(4)?,
        sender: row.get(5)?,
        sender_name: row.get(6)?,
        text: row.get(7)?,
        thread: row.get(8)?,
        mentions_me: row.get(9)?,
        received_at: row.get(10)?,
        state: row.get(11)?,
    })
}

/// Input of [`Store::hold_message`].
#[derive(Clone, Debug, Default)]
pub struct NewHeld {
    pub chat_id: i64,
    pub group_id: Option<String>,
    /// `unknown_chat` or `unknown_sender`.
    pub reason: &'static str,
    pub platform_msg_id: String,
    pub sender: String,
    pub sender_name: Option<String>,
    pub text: String,
    pub thread: Option<String>,
    pub mentions_me: bool,
    pub received_at: i64,
}

/// What [`Store::hold_message`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub id: i64,
    /// The message was held before (a redelivery): nothing new.
    pub duplicate: bool,
    /// The first message waiting for this chat (or this sender): the owner should be asked.
    /// Later ones wait with it, so the owner is asked once.
    pub first: bool,
}

/// What using a pairing code found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// The code was valid: the chat is now wired to this group.
    Paired { group_id: String },
    /// No such live code for this channel.
    NoCode,
}

impl Store {
    /// Holds a message for the owner's decision (once per platform message).
    pub async fn hold_message(&self, held: NewHeld) -> Result<Held, StoreError> {
        self.write("hold message", move |tx| {
            if let Some(id) = tx
                .query_row(
                    "SELECT id FROM held_messages WHERE chat_id = ?1 AND platform_msg_id = ?2",
                    params![held.chat_id, held.platform_msg_id],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .ctx("look up held message")?
            {
                return Ok(Held { id, duplicate: true, first: false });
            }
            let waiting: bool = tx
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM held_messages WHERE chat_id = ?1 AND state = 'waiting'
                         AND reason = ?2 AND (?2 = 'unknown_chat' OR sender = ?3))",
                    params![held.chat_id, held.reason, held.sender],
                    |r| r.get(0),
                )
                .ctx("look for waiting messages")?;
            tx.execute(
                "INSERT INTO held_messages (chat_id, group_id, reason, platform_msg_id, sender,
                     sender_name, text, thread, mentions_me, received_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    held.chat_id,
                    held.group_id,
                    held.reason,
                    held.platform_msg_id,
                    held.sender,
                    held.sender_name,
                    held.text,
                    held.thread,
                    held.mentions_me,
                    held.received_at,
                    now_ms()
                ],
            )
            .ctx("hold message")?;
            Ok(Held { id: tx.last_insert_rowid(), duplicate: false, first: !waiting })
        })
        .await
    }

    /// One held message.
    pub async fn held_message(&self, id: i64) -> Result<Option<HeldMessage>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {HELD_COLS} FROM held_messages WHERE id = ?1"),
                [id],
                held_row,
            )
            .optional()
            .ctx("read held message")
        })
        .await
    }

    /// Messages waiting for the owner, oldest first.
    pub async fn waiting_messages(&self) -> Result<Vec<HeldMessage>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {HELD_COLS} FROM held_messages WHERE state = 'waiting' ORDER BY id"
                ))
                .ctx("list held messages")?;
            let rows = stmt.query_map([], held_row).ctx("list held messages")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list held messages")
        })
        .await
    }

    /// Decides every waiting message like `id` (same chat; for an unknown sender, same sender
    /// too) and returns them, oldest first, for replay when approved.
    pub async fn decide_held(
        &self,
        id: i64,
        approve: bool,
    ) -> Result<Vec<HeldMessage>, StoreError> {
        let state = if approve { "approved" } else { "denied" };
        self.write("decide held messages", move |tx| {
            let first = tx
                .query_row(
                    &format!("SELECT {HELD_COLS} FROM held_messages WHERE id = ?1"),
                    [id],
                    held_row,
                )
                .optional()
                .ctx("read held message")?
                .ok_or(StoreError::NotFound {
                    what: "held message",
                    id: id.to_string(),
                })?;
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {HELD_COLS} FROM held_messages WHERE state = 'waiting' AND chat_id = ?1
                     AND reason = ?2 AND (?2 = 'unknown_chat' OR sender = ?3) ORDER BY id"
                ))
                .ctx("list held messages")?;
            let rows = stmt
                .query_map(params![first.chat_id, first.reason, first.sender], held_row)
                .ctx("list held messages")?
                .collect::<Result<Vec<_>, _>>()
                .ctx("list held messages")?;
            for row in &rows {
                tx.execute(
                    "UPDATE held_messages SET state = ?2 WHERE id = ?1",
                    params![row.id, state],
                )
                .ctx("decide held message")?;
            }
            if !approve && first.reason == "unknown_chat" {
                tx.execute(
                    "INSERT OR IGNORE INTO blocked_chats (chat_id, created_at) VALUES (?1, ?2)",
                    params![first.chat_id, now_ms()],
                )
                .ctx("block chat")?;
            }
            Ok(rows)
        })
        .await
    }

    /// Whether the owner turned this chat away.
    pub async fn is_chat_blocked(&self, chat_id: i64) -> Result<bool, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM blocked_chats WHERE chat_id = ?1)",
                [chat_id],
                |r| r.get(0),
            )
            .ctx("check blocked chat")
        })
        .await
    }

    /// Makes a pairing code for `channel` that wires the chat it is sent from to `group_id`,
    /// valid until `expires_at`. Earlier unused codes for the channel stop working.
    pub async fn create_pairing_code(
        &self,
        code: impl Into<String>,
        channel: impl Into<String>,
        group_id: impl Into<String>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (code, channel, group_id) = (code.into(), channel.into(), group_id.into());
        self.write("create pairing code", move |tx| {
            tx.execute(
                "DELETE FROM pairing_codes WHERE code = ?2 OR (channel = ?1 AND used_at IS NULL)",
                params![channel, code],
            )
            .ctx("retire pairing codes")?;
            tx.execute(
                "INSERT INTO pairing_codes (code, channel, group_id, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![code, channel, group_id, expires_at, now_ms()],
            )
            .ctx("create pairing code")?;
            Ok(())
        })
        .await
    }

    /// Whether `channel` has a live pairing code (so unknown chats are listened to for it).
    pub async fn has_pairing_code(
        &self,
        channel: impl Into<String>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let channel = channel.into();
        self.read(move |conn| {
            conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM pairing_codes WHERE channel = ?1 AND used_at IS NULL
                     AND expires_at > ?2)",
                params![channel, now],
                |r| r.get(0),
            )
            .ctx("look for pairing codes")
        })
        .await
    }

    /// Uses `code` for `chat_id` on `channel`: a live code is spent and the chat wired to its
    /// group (the trigger word in group chats, every message in direct ones).
    pub async fn use_pairing_code(
        &self,
        channel: impl Into<String>,
        code: impl Into<String>,
        chat_id: i64,
        is_group: bool,
        now: i64,
    ) -> Result<Pairing, StoreError> {
        let (channel, code) = (channel.into(), code.into());
        self.write("use pairing code", move |tx| {
            let group: Option<String> = tx
                .query_row(
                    "SELECT group_id FROM pairing_codes WHERE code = ?1 AND channel = ?2
                         AND used_at IS NULL AND expires_at > ?3",
                    params![code, channel, now],
                    |r| r.get(0),
                )
                .optional()
                .ctx("look up pairing code")?;
            let Some(group_id) = group else {
                return Ok(Pairing::NoCode);
            };
            tx.execute(
                "UPDATE pairing_codes SET used_at = ?2 WHERE code = ?1",
                params![code, now],
            )
            .ctx("spend pairing code")?;
            let rule = if is_group { "mention" } else { "always" };
            tx.execute(
                "INSERT INTO wirings (chat_id, group_id, trigger_rule, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (chat_id, group_id) DO NOTHING",
                params![chat_id, group_id, rule, now],
            )
            .ctx("wire paired chat")?;
            tx.execute("DELETE FROM blocked_chats WHERE chat_id = ?1", [chat_id])
                .ctx("unblock paired chat")?;
            Ok(Pairing::Paired { group_id })
        })
        .await
    }

    /// Makes `chat_id` an owner's main chat (the newest one gets the host's notices).
    pub async fn set_owner_chat(&self, chat_id: i64) -> Result<(), StoreError> {
        self.write("set owner chat", move |tx| {
            tx.execute(
                "INSERT INTO owner_chats (chat_id, created_at) VALUES (?1, ?2)
                 ON CONFLICT (chat_id) DO UPDATE SET created_at = excluded.created_at",
                params![chat_id, now_ms()],
            )
            .ctx("set owner chat")?;
            Ok(())
        })
        .await
    }

    /// Stops `chat_id` being an owner's main chat; returns whether it was one.
    pub async fn unset_owner_chat(&self, chat_id: i64) -> Result<bool, StoreError> {
        self.write("unset owner chat", move |tx| {
            let n = tx
                .execute("DELETE FROM owner_chats WHERE chat_id = ?1", [chat_id])
                .ctx("unset owner chat")?;
            Ok(n > 0)
        })
        .await
    }

    /// The platform chats that are owner's main chats, newest first.
    pub async fn owner_chat_ids(&self) -> Result<Vec<i64>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT chat_id FROM owner_chats ORDER BY created_at DESC, chat_id DESC",
                )
                .ctx("list owner chats")?;
            let rows = stmt.query_map([], |r| r.get(0)).ctx("list owner chats")?;
            rows.collect::<Result<Vec<i64>, _>>()
                .ctx("list owner chats")
        })
        .await
    }
}

//! What platform channels keep between runs: their small state (offsets, resume tokens)
//! and the send ledger that makes delivery exactly-once across crashes.

use rusqlite::{OptionalExtension, params};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};

/// What the ledger holds for one part of an outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerPart {
    Unsent,
    /// Recorded as being sent, never as sent: the host stopped in between.
    Sending,
    Sent(Option<String>),
}

impl Store {
    /// A channel's state value for `key`.
    pub async fn channel_state(
        &self,
        channel: impl Into<String>,
        key: impl Into<String>,
    ) -> Result<Option<String>, StoreError> {
        let (channel, key) = (channel.into(), key.into());
        self.read(move |conn| {
            conn.query_row(
                "SELECT value FROM channel_state WHERE channel = ?1 AND key = ?2",
                [&channel, &key],
                |r| r.get(0),
            )
            .optional()
            .ctx("read channel state")
        })
        .await
    }

    /// Sets a channel's state value for `key`.
    pub async fn set_channel_state(
        &self,
        channel: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), StoreError> {
        let (channel, key, value) = (channel.into(), key.into(), value.into());
        self.write("write channel state", move |tx| {
            tx.execute(
                "INSERT INTO channel_state (channel, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value,
                     updated_at = excluded.updated_at",
                params![channel, key, value, now_ms()],
            )
            .ctx("write channel state")?;
            Ok(())
        })
        .await
    }

    /// Removes a channel's state values whose key starts with `prefix` and that were last
    /// written before `before_ms` (ms since the epoch); returns how many.
    pub async fn forget_channel_state_before(
        &self,
        channel: impl Into<String>,
        prefix: impl Into<String>,
        before_ms: i64,
    ) -> Result<usize, StoreError> {
        let (channel, prefix) = (channel.into(), prefix.into());
        self.write("forget old channel state", move |tx| {
            // substr, not LIKE: a prefix may hold `%` or `_`.
            tx.execute(
                "DELETE FROM channel_state WHERE channel = ?1
                   AND substr(key, 1, length(?2)) = ?2 AND updated_at < ?3",
                params![channel, prefix, before_ms],
            )
            .ctx("forget old channel state")
        })
        .await
    }

    /// Removes every state value of a channel (`nanoclaw channel remove`).
    pub async fn clear_channel_state(
        &self,
        channel: impl Into<String>,
    ) -> Result<usize, StoreError> {
        let channel = channel.into();
        self.write("clear channel state", move |tx| {
            tx.execute("DELETE FROM channel_state WHERE channel = ?1", [&channel])
                .ctx("clear channel state")
        })
        .await
    }

    /// What the ledger knows of part `part` of message `key`.
    pub async fn ledger_part(
        &self,
        key: impl Into<String>,
        part: u32,
    ) -> Result<LedgerPart, StoreError> {
        let key = key.into();
        self.read(move |conn| {
            let row: Option<(String, Option<String>)> = conn
                .query_row(
                    "SELECT state, platform_msg_id FROM channel_sends
                     WHERE idempotency_key = ?1 AND part = ?2",
                    params![key, part],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .ctx("read send ledger")?;
            Ok(match row {
                None => LedgerPart::Unsent,
                Some((state, id)) if state == "sent" => LedgerPart::Sent(id),
                Some(_) => LedgerPart::Sending,
            })
        })
        .await
    }

    /// Records that part `part` of message `key` is about to be sent.
    pub async fn ledger_begin(&self, key: impl Into<String>, part: u32) -> Result<(), StoreError> {
        let key = key.into();
        self.write("record send intent", move |tx| {
            tx.execute(
                "INSERT INTO channel_sends (idempotency_key, part, state, updated_at)
                 VALUES (?1, ?2, 'sending', ?3)
                 ON CONFLICT (idempotency_key, part) DO NOTHING",
                params![key, part, now_ms()],
            )
            .ctx("record send intent")?;
            Ok(())
        })
        .await
    }

    /// Records that part `part` of message `key` was sent.
    pub async fn ledger_sent(
        &self,
        key: impl Into<String>,
        part: u32,
        platform_id: Option<String>,
    ) -> Result<(), StoreError> {
        let key = key.into();
        self.write("record send", move |tx| {
            tx.execute(
                "INSERT INTO channel_sends (idempotency_key, part, state, platform_msg_id, updated_at)
                 VALUES (?1, ?2, 'sent', ?3, ?4)
                 ON CONFLICT (idempotency_key, part) DO UPDATE SET state = 'sent',
                     platform_msg_id = excluded.platform_msg_id, updated_at = excluded.updated_at",
                params![key, part, platform_id, now_ms()],
            )
            .ctx("record send")?;
            Ok(())
        })
        .await
    }

    /// Forgets a part recorded as being sent that never reached the platform.
    pub async fn ledger_abandon(
        &self,
        key: impl Into<String>,
        part: u32,
    ) -> Result<(), StoreError> {
        let key = key.into();
        self.write("abandon send intent", move |tx| {
            tx.execute(
                "DELETE FROM channel_sends WHERE idempotency_key = ?1 AND part = ?2 AND state = 'sending'",
                params![key, part],
            )
            .ctx("abandon send intent")?;
            Ok(())
        })
        .await
    }
}

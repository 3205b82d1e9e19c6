//! Chats and wirings (which chat is routed to which group).

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};
use crate::groups::{GROUP_COLS, group_at};
use crate::model::{Chat, Group, SessionMode, Wiring};

const CHAT_COLS: &str = "id, channel, platform_id, name, is_group, created_at";
const WIRING_COLS: &str =
    "w.id, w.chat_id, w.group_id, w.requires_trigger, w.session_mode, w.created_at";

fn chat_row(row: &Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: row.get(0)?,
        channel: row.get(1)?,
        platform_id: row.get(2)?,
        name: row.get(3)?,
        is_group: row.get(4)?,
        created_at: row.get(5)?,
    })
}

fn wiring_row(row: &Row<'_>) -> rusqlite::Result<Wiring> {
    Ok(Wiring {
        id: row.get(0)?,
        chat_id: row.get(1)?,
        group_id: row.get(2)?,
        requires_trigger: row.get(3)?,
        session_mode: row.get(4)?,
        created_at: row.get(5)?,
    })
}

fn chat_by_platform_sync(
    conn: &Connection,
    channel: &str,
    platform_id: &str,
) -> Result<Option<Chat>, StoreError> {
    conn.query_row(
        &format!("SELECT {CHAT_COLS} FROM chats WHERE channel = ?1 AND platform_id = ?2"),
        [channel, platform_id],
        chat_row,
    )
    .optional()
    .ctx("look up chat by platform id")
}

fn missing(what: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_string(),
    }
}

impl Store {
    /// Insert the chat or return the existing one for (channel, platform_id); a changed name is updated.
    pub async fn ensure_chat(
        &self,
        channel: impl Into<String>,
        platform_id: impl Into<String>,
        name: impl Into<String>,
        is_group: bool,
    ) -> Result<Chat, StoreError> {
        let (channel, platform_id, name) = (channel.into(), platform_id.into(), name.into());
        self.write("ensure chat", move |tx| {
            if let Some(mut chat) = chat_by_platform_sync(tx, &channel, &platform_id)? {
                if !name.is_empty() && chat.name != name {
                    tx.execute(
                        "UPDATE chats SET name = ?2 WHERE id = ?1",
                        params![chat.id, name],
                    )
                    .ctx("rename chat")?;
                    chat.name = name.clone();
                }
                return Ok(chat);
            }
            tx.execute(
                "INSERT INTO chats (channel, platform_id, name, is_group, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![channel, platform_id, name, is_group, now_ms()],
            )
            .ctx("insert chat")?;
            let id = tx.last_insert_rowid();
            tx.query_row(
                &format!("SELECT {CHAT_COLS} FROM chats WHERE id = ?1"),
                [id],
                chat_row,
            )
            .ctx("read inserted chat")
        })
        .await
    }

    /// The chat with this id.
    pub async fn chat(&self, id: i64) -> Result<Option<Chat>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {CHAT_COLS} FROM chats WHERE id = ?1"),
                [id],
                chat_row,
            )
            .optional()
            .ctx("look up chat")
        })
        .await
    }

    /// The chat with this platform id on this channel.
    pub async fn chat_by_platform(
        &self,
        channel: impl Into<String>,
        platform_id: impl Into<String>,
    ) -> Result<Option<Chat>, StoreError> {
        let (channel, platform_id) = (channel.into(), platform_id.into());
        self.read(move |conn| chat_by_platform_sync(conn, &channel, &platform_id))
            .await
    }

    /// All chats, oldest first.
    pub async fn list_chats(&self) -> Result<Vec<Chat>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {CHAT_COLS} FROM chats ORDER BY id"))
                .ctx("list chats")?;
            let rows = stmt.query_map([], chat_row).ctx("list chats")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list chats")
        })
        .await
    }

    /// The chats wired to a group, oldest wiring first.
    pub async fn chats_for_group(
        &self,
        group_id: impl Into<String>,
    ) -> Result<Vec<Chat>, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT c.id, c.channel, c.platform_id, c.name, c.is_group, c.created_at
                     FROM chats c JOIN wirings w ON w.chat_id = c.id
                     WHERE w.group_id = ?1 ORDER BY w.id",
                )
                .ctx("list chats of a group")?;
            let rows = stmt
                .query_map([&group_id], chat_row)
                .ctx("list chats of a group")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list chats of a group")
        })
        .await
    }

    /// Route a chat to a group (insert, or update the options of an existing wiring).
    pub async fn wire(
        &self,
        chat_id: i64,
        group_id: impl Into<String>,
        requires_trigger: bool,
        mode: SessionMode,
    ) -> Result<Wiring, StoreError> {
        let group_id = group_id.into();
        self.write("wire chat to group", move |tx| {
            // Check first so the user gets "chat 7 not found", not a bare foreign-key error.
            let chat_exists: bool = tx
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM chats WHERE id = ?1)",
                    [chat_id],
                    |r| r.get(0),
                )
                .ctx("check chat exists")?;
            if !chat_exists {
                return Err(missing("chat", chat_id));
            }
            let group_exists: bool = tx
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM agent_groups WHERE id = ?1)",
                    [&group_id],
                    |r| r.get(0),
                )
                .ctx("check group exists")?;
            if !group_exists {
                return Err(missing("group", &group_id));
            }
            tx.execute(
                "INSERT INTO wirings (chat_id, group_id, requires_trigger, session_mode, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (chat_id, group_id) DO UPDATE SET
                     requires_trigger = excluded.requires_trigger,
                     session_mode = excluded.session_mode",
                params![chat_id, group_id, requires_trigger, mode, now_ms()],
            )
            .ctx("upsert wiring")?;
            tx.query_row(
                &format!(
                    "SELECT {WIRING_COLS} FROM wirings w WHERE w.chat_id = ?1 AND w.group_id = ?2"
                ),
                params![chat_id, group_id],
                wiring_row,
            )
            .ctx("read wiring")
        })
        .await
    }

    /// Remove the wiring of a chat to a group; returns whether one existed.
    pub async fn unwire(
        &self,
        chat_id: i64,
        group_id: impl Into<String>,
    ) -> Result<bool, StoreError> {
        let group_id = group_id.into();
        self.write("unwire chat", move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM wirings WHERE chat_id = ?1 AND group_id = ?2",
                    params![chat_id, group_id],
                )
                .ctx("delete wiring")?;
            Ok(n > 0)
        })
        .await
    }

    /// The groups a chat is routed to, with the wiring options, oldest wiring first.
    pub async fn wirings_for_chat(&self, chat_id: i64) -> Result<Vec<(Wiring, Group)>, StoreError> {
        self.read(move |conn| {
            let group_cols: Vec<String> =
                GROUP_COLS.split(", ").map(|c| format!("g.{c}")).collect();
            let sql = format!(
                "SELECT {WIRING_COLS}, {} FROM wirings w JOIN agent_groups g ON g.id = w.group_id
                 WHERE w.chat_id = ?1 ORDER BY w.id",
                group_cols.join(", ")
            );
            let mut stmt = conn.prepare_cached(&sql).ctx("list wirings for chat")?;
            let rows = stmt
                .query_map([chat_id], |r| Ok((wiring_row(r)?, group_at(r, 6)?)))
                .ctx("list wirings for chat")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list wirings for chat")
        })
        .await
    }
}

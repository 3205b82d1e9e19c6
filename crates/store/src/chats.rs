//! Chats and wirings (which chat is routed to which group).

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};
use crate::groups::{GROUP_COLS, group_at};
use crate::model::{Chat, Group, TriggerRule, Wiring, WiringOptions};

const CHAT_COLS: &str = "id, channel, platform_id, name, is_group, created_at";
const WIRING_COLS: &str = "w.id, w.chat_id, w.group_id, w.trigger_rule, w.trigger_pattern, \
     w.allowed_senders, w.unknown_senders, w.session_mode, w.created_at";
/// Columns of [`WIRING_COLS`]: where a joined row's next table starts.
const WIRING_COL_COUNT: usize = 9;

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
    let allowed: Option<String> = row.get(5)?;
    let allowed_senders = match allowed {
        Some(json) => Some(serde_json::from_str::<Vec<String>>(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?),
        None => None,
    };
    Ok(Wiring {
        id: row.get(0)?,
        chat_id: row.get(1)?,
        group_id: row.get(2)?,
        trigger_rule: row.get(3)?,
        trigger_pattern: row.get(4)?,
        allowed_senders,
        unknown_senders: row.get(6)?,
        session_mode: row.get(7)?,
        created_at: row.get(8)?,
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
        // The usual case (a known chat, same name) needs no write transaction: every inbound
        // message comes through here.
        let (c, p) = (channel.clone(), platform_id.clone());
        if let Some(chat) = self
            .read(move |conn| chat_by_platform_sync(conn, &c, &p))
            .await?
            && (name.is_empty() || chat.name == name)
        {
            return Ok(chat);
        }
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
        options: WiringOptions,
    ) -> Result<Wiring, StoreError> {
        let group_id = group_id.into();
        if options.trigger_rule == TriggerRule::Regex && options.trigger_pattern.is_none() {
            return Err(StoreError::Invalid(
                "the regex trigger rule needs a pattern".into(),
            ));
        }
        let allowed = match &options.allowed_senders {
            Some(list) => Some(
                serde_json::to_string(list)
                    .map_err(|e| StoreError::Invalid(format!("sender allowlist: {e}")))?,
            ),
            None => None,
        };
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
                "INSERT INTO wirings (chat_id, group_id, trigger_rule, trigger_pattern,
                                      allowed_senders, unknown_senders, session_mode, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (chat_id, group_id) DO UPDATE SET
                     trigger_rule = excluded.trigger_rule,
                     trigger_pattern = excluded.trigger_pattern,
                     allowed_senders = excluded.allowed_senders,
                     unknown_senders = excluded.unknown_senders,
                     session_mode = excluded.session_mode",
                params![
                    chat_id,
                    group_id,
                    options.trigger_rule,
                    options.trigger_pattern,
                    allowed,
                    options.unknown_senders,
                    options.session_mode,
                    now_ms()
                ],
            )
            .ctx("upsert wiring")?;
            // A chat the owner wires is no longer turned away.
            tx.execute("DELETE FROM blocked_chats WHERE chat_id = ?1", [chat_id])
                .ctx("unblock wired chat")?;
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

    /// Adds `sender` to the allowlist of the chat's wiring to the group (a wiring without an
    /// allowlist lets everyone through already and is left alone).
    pub async fn allow_sender(
        &self,
        chat_id: i64,
        group_id: impl Into<String>,
        sender: impl Into<String>,
    ) -> Result<(), StoreError> {
        let (group_id, sender) = (group_id.into(), sender.into());
        self.write("allow sender", move |tx| {
            let current: Option<Option<String>> = tx
                .query_row(
                    "SELECT allowed_senders FROM wirings WHERE chat_id = ?1 AND group_id = ?2",
                    params![chat_id, group_id],
                    |r| r.get(0),
                )
                .optional()
                .ctx("read allowlist")?;
            let Some(Some(json)) = current else {
                return Ok(());
            };
            let mut list: Vec<String> = serde_json::from_str(&json)
                .map_err(|e| StoreError::Invalid(format!("stored allowlist: {e}")))?;
            if !list.contains(&sender) {
                list.push(sender.clone());
            }
            let json = serde_json::to_string(&list)
                .map_err(|e| StoreError::Invalid(format!("allowlist: {e}")))?;
            tx.execute(
                "UPDATE wirings SET allowed_senders = ?3 WHERE chat_id = ?1 AND group_id = ?2",
                params![chat_id, group_id, json],
            )
            .ctx("update allowlist")?;
            Ok(())
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

    /// Sends the replies for chat `chat_id` to chat `target` instead (`None`: to the chat
    /// itself again). Messages queued before stay where they were queued.
    pub async fn set_reply_route(
        &self,
        chat_id: i64,
        target: Option<i64>,
    ) -> Result<(), StoreError> {
        if target == Some(chat_id) {
            return Err(StoreError::Invalid(
                "a chat's replies cannot be routed to itself".into(),
            ));
        }
        self.write("set reply route", move |tx| {
            match target {
                Some(target) => tx
                    .execute(
                        "INSERT INTO reply_routes (chat_id, target_chat_id, created_at)
                         VALUES (?1, ?2, ?3)
                         ON CONFLICT (chat_id) DO UPDATE SET target_chat_id = excluded.target_chat_id",
                        params![chat_id, target, now_ms()],
                    )
                    .ctx("set reply route")?,
                None => tx
                    .execute("DELETE FROM reply_routes WHERE chat_id = ?1", [chat_id])
                    .ctx("clear reply route")?,
            };
            Ok(())
        })
        .await
    }

    /// Every chat whose replies go to another chat: (chat id, target chat id).
    pub async fn reply_routes(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT chat_id, target_chat_id FROM reply_routes ORDER BY chat_id")
                .ctx("list reply routes")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .ctx("list reply routes")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list reply routes")
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
                .query_map([chat_id], |r| {
                    Ok((wiring_row(r)?, group_at(r, WIRING_COL_COUNT)?))
                })
                .ctx("list wirings for chat")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list wirings for chat")
        })
        .await
    }
}

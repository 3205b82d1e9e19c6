//! The outbound queue: replies and messages waiting to be delivered to a chat.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};
use crate::model::{NewOutbound, Outbound, OutboundFile, OutboundState};

const OUTBOUND_COLS: &str = "id, session_id, chat_id, in_reply_to, idempotency_key, text, kind, state, tries, \
     platform_message_id, last_error, created_at, delivered_at, thread";

fn outbound_row(row: &Row<'_>) -> rusqlite::Result<Outbound> {
    Ok(Outbound {
        id: row.get(0)?,
        session_id: row.get(1)?,
        chat_id: row.get(2)?,
        in_reply_to: row.get(3)?,
        idempotency_key: row.get(4)?,
        text: row.get(5)?,
        kind: row.get(6)?,
        state: row.get(7)?,
        tries: row.get(8)?,
        platform_message_id: row.get(9)?,
        last_error: row.get(10)?,
        created_at: row.get(11)?,
        delivered_at: row.get(12)?,
        thread: row.get(13)?,
    })
}

fn outbound_by_id(conn: &Connection, id: i64) -> Result<Option<Outbound>, StoreError> {
    conn.query_row(
        &format!("SELECT {OUTBOUND_COLS} FROM outbound WHERE id = ?1"),
        [id],
        outbound_row,
    )
    .optional()
    .ctx("look up outbound")
}

fn outbound_list(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<Outbound>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).ctx(op)?;
    let rows = stmt.query_map(p, outbound_row).ctx(op)?;
    rows.collect::<Result<Vec<_>, _>>().ctx(op)
}

/// Insert inside an open transaction; `None` when the idempotency key already exists.
pub(crate) fn insert_outbound_tx(
    conn: &Connection,
    m: &NewOutbound,
    now_ms: i64,
) -> Result<Option<Outbound>, StoreError> {
    // A chat whose replies go elsewhere (`reply_routes`): the message is queued for the
    // target chat, saying where it comes from, without the platform reply/thread (ids of
    // another platform mean nothing there).
    let route: Option<(i64, String)> = conn
        .query_row(
            "SELECT r.target_chat_id, c.name FROM reply_routes r JOIN chats c ON c.id = r.chat_id
             WHERE r.chat_id = ?1",
            [m.chat_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ctx("look up reply route")?;
    if let Some((target, name)) = route {
        let inserted = conn
            .execute(
                "INSERT INTO outbound (session_id, chat_id, in_reply_to, idempotency_key, text, kind,
                                       state, tries, created_at, thread)
                 VALUES (?1, ?2, NULL, ?3, ?4, ?5, 'pending', 0, ?6, NULL)
                 ON CONFLICT (idempotency_key) DO NOTHING",
                params![
                    m.session_id,
                    target,
                    m.idempotency_key,
                    format!("[{name}] {}", m.text),
                    m.kind,
                    now_ms
                ],
            )
            .ctx("insert routed outbound")?;
        if inserted == 0 {
            return Ok(None);
        }
        let id = conn.last_insert_rowid();
        insert_files_tx(conn, id, &m.files)?;
        return outbound_by_id(conn, id);
    }
    let inserted = conn
        .execute(
            // The thread: a chat session's own (per-thread mode), or in a group-wide session
            // (which spans chats and threads) the thread of the message answered.
            "INSERT INTO outbound (session_id, chat_id, in_reply_to, idempotency_key, text, kind, state,
                                   tries, created_at, thread)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7,
                     (SELECT CASE WHEN s.scope = 'group'
                                  THEN (SELECT i.thread FROM inbound i WHERE i.id = ?3)
                                  ELSE s.thread END
                        FROM sessions s WHERE s.id = ?1))
             ON CONFLICT (idempotency_key) DO NOTHING",
            params![m.session_id, m.chat_id, m.in_reply_to, m.idempotency_key, m.text, m.kind, now_ms],
        )
        .ctx("insert outbound")?;
    if inserted == 0 {
        tracing::debug!(key = %m.idempotency_key, "store: outbound already recorded, skipped");
        return Ok(None);
    }
    let id = conn.last_insert_rowid();
    insert_files_tx(conn, id, &m.files)?;
    outbound_by_id(conn, id)
}

fn insert_files_tx(conn: &Connection, id: i64, files: &[OutboundFile]) -> Result<(), StoreError> {
    for (position, file) in files.iter().enumerate() {
        // Sizes and positions are small (the host caps both); SQLite integers are signed.
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        let size = i64::try_from(file.size).unwrap_or(i64::MAX);
        conn.execute(
            "INSERT INTO outbound_files (outbound_id, position, file_name, path, mime_type, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                position,
                file.file_name,
                file.path,
                file.mime_type,
                size
            ],
        )
        .ctx("insert outbound file")?;
    }
    Ok(())
}

fn outbound_file_row(row: &Row<'_>) -> rusqlite::Result<OutboundFile> {
    Ok(OutboundFile {
        file_name: row.get(0)?,
        path: row.get(1)?,
        mime_type: row.get(2)?,
        size: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
    })
}

impl Store {
    /// Queue a message for delivery; `None` when a message with this idempotency key already exists.
    pub async fn insert_outbound(&self, m: NewOutbound) -> Result<Option<Outbound>, StoreError> {
        self.write("insert outbound", move |tx| {
            insert_outbound_tx(tx, &m, now_ms())
        })
        .await
    }

    /// The files of outbound message `id`, in order.
    pub async fn outbound_files(&self, id: i64) -> Result<Vec<OutboundFile>, StoreError> {
        self.read(move |conn| {
            let op = "list outbound files";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT file_name, path, mime_type, size FROM outbound_files
                     WHERE outbound_id = ?1 ORDER BY position",
                )
                .ctx(op)?;
            let rows = stmt.query_map([id], outbound_file_row).ctx(op)?;
            rows.collect::<Result<Vec<_>, _>>().ctx(op)
        })
        .await
    }

    /// The file paths of every message still waiting for delivery: the outbox copies that
    /// must be kept.
    pub async fn pending_outbound_file_paths(&self) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            let op = "list pending outbound files";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT f.path FROM outbound_files f JOIN outbound o ON o.id = f.outbound_id
                     WHERE o.state = 'pending'",
                )
                .ctx(op)?;
            let rows = stmt.query_map([], |r| r.get(0)).ctx(op)?;
            rows.collect::<Result<Vec<_>, _>>().ctx(op)
        })
        .await
    }

    /// Bytes of the files of every message still waiting for delivery (the outbox's size).
    pub async fn pending_outbound_file_bytes(&self) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let total: i64 = conn
                .query_row(
                    "SELECT COALESCE(SUM(f.size), 0) FROM outbound_files f
                     JOIN outbound o ON o.id = f.outbound_id WHERE o.state = 'pending'",
                    [],
                    |r| r.get(0),
                )
                .ctx("sum pending outbound files")?;
            Ok(u64::try_from(total).unwrap_or(0))
        })
        .await
    }

    /// The outbound message with this id.
    pub async fn outbound(&self, id: i64) -> Result<Option<Outbound>, StoreError> {
        self.read(move |conn| outbound_by_id(conn, id)).await
    }

    /// Up to `limit` undelivered messages, oldest first.
    pub async fn pending_outbound(&self, limit: usize) -> Result<Vec<Outbound>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            outbound_list(
                conn,
                "list pending outbound",
                &format!("SELECT {OUTBOUND_COLS} FROM outbound WHERE state = 'pending' ORDER BY id LIMIT ?1"),
                [limit],
            )
        })
        .await
    }

    /// Undelivered messages of one chat, oldest first.
    pub async fn pending_outbound_for_chat(
        &self,
        chat_id: i64,
    ) -> Result<Vec<Outbound>, StoreError> {
        self.read(move |conn| {
            outbound_list(
                conn,
                "list pending outbound for chat",
                &format!(
                    "SELECT {OUTBOUND_COLS} FROM outbound WHERE chat_id = ?1 AND state = 'pending' ORDER BY id"
                ),
                [chat_id],
            )
        })
        .await
    }

    /// Every outbound message of one chat, oldest first.
    pub async fn outbound_for_chat(&self, chat_id: i64) -> Result<Vec<Outbound>, StoreError> {
        self.read(move |conn| {
            outbound_list(
                conn,
                "list outbound for chat",
                &format!("SELECT {OUTBOUND_COLS} FROM outbound WHERE chat_id = ?1 ORDER BY id"),
                [chat_id],
            )
        })
        .await
    }

    /// Record a successful delivery. Only a `pending` row changes, so a second call returns `false`
    /// and the message is never "delivered twice" in the books.
    pub async fn mark_delivered(
        &self,
        id: i64,
        platform_message_id: Option<String>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write("mark outbound delivered", move |tx| {
            let n = tx
                .execute(
                    "UPDATE outbound SET state = 'delivered', platform_message_id = ?2, delivered_at = ?3,
                         last_error = NULL
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, platform_message_id, now_ms],
                )
                .ctx("mark outbound delivered")?;
            Ok(n > 0)
        })
        .await
    }

    /// Record a failed delivery attempt: tries += 1, and the row becomes `failed` once `max_tries` is
    /// reached. A row no longer `pending` is left alone. Returns the resulting state.
    pub async fn mark_delivery_failed(
        &self,
        id: i64,
        error: impl Into<String>,
        max_tries: u32,
    ) -> Result<OutboundState, StoreError> {
        let error = error.into();
        self.write("mark outbound delivery failed", move |tx| {
            let current: Option<(OutboundState, u32)> = tx
                .query_row("SELECT state, tries FROM outbound WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .ctx("read outbound state")?;
            let Some((state, tries)) = current else {
                return Err(StoreError::NotFound {
                    what: "outbound message",
                    id: id.to_string(),
                });
            };
            if state != OutboundState::Pending {
                return Ok(state);
            }
            let tries = tries.saturating_add(1);
            let next = if tries >= max_tries {
                OutboundState::Failed
            } else {
                OutboundState::Pending
            };
            tx.execute(
                "UPDATE outbound SET tries = ?2, last_error = ?3, state = ?4 WHERE id = ?1",
                params![id, tries, error, next],
            )
            .ctx("mark outbound delivery failed")?;
            if next == OutboundState::Failed {
                tracing::warn!(outbound = id, tries, error = %error, "store: outbound delivery gave up");
            }
            Ok(next)
        })
        .await
    }
}

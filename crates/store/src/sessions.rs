//! Sessions: one conversation of a group in a chat (and thread, in per-thread mode), or of a
//! whole group across its agent-shared chats.

use rusqlite::{OptionalExtension, Row, params};

use crate::engine::{Store, new_id};
use crate::error::{Ctx, StoreError};
use crate::model::{Session, SessionMode, SessionScope, SessionStatus};

const SESSION_COLS: &str = "id, group_id, chat_id, thread, status, created_at, last_active, scope";

fn session_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        group_id: row.get(1)?,
        chat_id: row.get(2)?,
        thread: row.get(3)?,
        status: row.get(4)?,
        created_at: row.get(5)?,
        last_active: row.get(6)?,
        scope: row.get(7)?,
    })
}

/// Which conversation a message of `chat_id` (in `thread`) belongs to under a wiring's mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionKey {
    pub(crate) chat_id: i64,
    /// `None` in shared mode: the whole chat is one session.
    pub(crate) thread: Option<String>,
    pub(crate) scope: SessionScope,
}

impl SessionKey {
    pub(crate) fn new(mode: SessionMode, chat_id: i64, thread: Option<String>) -> SessionKey {
        match mode {
            SessionMode::Shared => SessionKey {
                chat_id,
                thread: None,
                scope: SessionScope::Chat,
            },
            SessionMode::PerThread => SessionKey {
                chat_id,
                thread,
                scope: SessionScope::Chat,
            },
            SessionMode::AgentShared => SessionKey {
                chat_id,
                thread: None,
                scope: SessionScope::Group,
            },
        }
    }
}

/// The session mode of the wiring between `chat_id` and `group_id` (shared when unwired,
/// e.g. a task whose chat was unwired since).
pub(crate) fn wiring_mode_tx(
    tx: &rusqlite::Connection,
    group_id: &str,
    chat_id: i64,
) -> Result<SessionMode, StoreError> {
    let mode = tx
        .query_row(
            "SELECT session_mode FROM wirings WHERE chat_id = ?1 AND group_id = ?2",
            params![chat_id, group_id],
            |r| r.get(0),
        )
        .optional()
        .ctx("read the wiring's session mode")?;
    Ok(mode.unwrap_or(SessionMode::Shared))
}

/// [`Store::resolve_session`] inside an open transaction.
pub(crate) fn resolve_session_tx(
    tx: &rusqlite::Connection,
    group_id: &str,
    key: SessionKey,
    now_ms: i64,
) -> Result<Session, StoreError> {
    let found = match key.scope {
        SessionScope::Chat => tx.query_row(
            &format!(
                "SELECT {SESSION_COLS} FROM sessions
                     WHERE group_id = ?1 AND chat_id = ?2 AND thread IS ?3 AND status = 'active'
                       AND scope = 'chat'"
            ),
            params![group_id, key.chat_id, key.thread],
            session_row,
        ),
        SessionScope::Group => tx.query_row(
            &format!(
                "SELECT {SESSION_COLS} FROM sessions
                     WHERE group_id = ?1 AND status = 'active' AND scope = 'group'"
            ),
            params![group_id],
            session_row,
        ),
    }
    .optional()
    .ctx("find active session")?;
    if let Some(mut session) = found {
        if now_ms > session.last_active {
            tx.execute(
                "UPDATE sessions SET last_active = ?2 WHERE id = ?1",
                params![session.id, now_ms],
            )
            .ctx("touch session")?;
            session.last_active = now_ms;
        }
        return Ok(session);
    }
    let session = Session {
        id: new_id("ses"),
        group_id: group_id.to_owned(),
        chat_id: key.chat_id,
        thread: key.thread,
        status: SessionStatus::Active,
        created_at: now_ms,
        last_active: now_ms,
        scope: key.scope,
    };
    tx.execute(
        &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            session.id,
            session.group_id,
            session.chat_id,
            session.thread,
            session.status,
            session.created_at,
            session.last_active,
            session.scope
        ],
    )
    .ctx("create session")?;
    tracing::info!(session = %session.id, group = %session.group_id, chat_id = session.chat_id, scope = %session.scope, "store: session created");
    Ok(session)
}

impl Store {
    /// Find the active session for (group, chat, thread) or create it; marks it active at `now_ms`.
    /// In shared mode the thread is ignored: the whole chat is one session. In agent-shared
    /// mode chat and thread are ignored: the group has one session (started by this chat).
    pub async fn resolve_session(
        &self,
        group_id: impl Into<String>,
        chat_id: i64,
        thread: Option<String>,
        mode: SessionMode,
        now_ms: i64,
    ) -> Result<Session, StoreError> {
        let group_id = group_id.into();
        let key = SessionKey::new(mode, chat_id, thread);
        self.write("resolve session", move |tx| {
            resolve_session_tx(tx, &group_id, key.clone(), now_ms)
        })
        .await
    }

    /// The session with this id.
    pub async fn session(&self, id: impl Into<String>) -> Result<Option<Session>, StoreError> {
        let id = id.into();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"),
                [&id],
                session_row,
            )
            .optional()
            .ctx("look up session")
        })
        .await
    }

    /// Close a session so the next message starts a fresh one; returns whether it was active.
    pub async fn close_session(
        &self,
        id: impl Into<String>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let id = id.into();
        self.write("close session", move |tx| {
            let n = tx
                .execute(
                    "UPDATE sessions SET status = 'closed', last_active = MAX(last_active, ?2)
                     WHERE id = ?1 AND status = 'active'",
                    params![id, now_ms],
                )
                .ctx("close session")?;
            Ok(n > 0)
        })
        .await
    }

    /// All sessions of a group, most recently active first.
    pub async fn sessions_for_group(
        &self,
        group_id: impl Into<String>,
    ) -> Result<Vec<Session>, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLS} FROM sessions WHERE group_id = ?1 ORDER BY last_active DESC, id"
                ))
                .ctx("list sessions")?;
            let rows = stmt.query_map([&group_id], session_row).ctx("list sessions")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list sessions")
        })
        .await
    }
}

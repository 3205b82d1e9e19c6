//! The web dashboard's sign-ins (see `nanoclaw-dashboard`): one-time login tokens and the
//! sessions they open, kept as digests; and a chat's transcript for the web chat.

use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

use crate::engine::Store;
use crate::error::{Ctx, StoreError};

/// One line of a chat's transcript: a message that came in or one that went out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TranscriptLine {
    /// `in` (someone wrote it) or `out` (the assistant or the host did).
    pub direction: &'static str,
    /// The row's id in its table (`inbound` or `outbound`).
    pub id: i64,
    /// Who wrote it (`in`), or the kind of message (`reply`, `message`, `error`) for `out`.
    pub from: String,
    pub text: String,
    /// Unix ms.
    pub at: i64,
    /// `in`: pending, processing, done, failed; `out`: pending, delivered, failed.
    pub state: String,
}

impl Store {
    /// Keeps a one-time login token (its digest) valid until `expires_at`; expired tokens and
    /// sessions are dropped on the way.
    pub async fn dashboard_add_login(
        &self,
        digest: String,
        now_ms: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write("keep a dashboard login token", move |tx| {
            tx.execute(
                "DELETE FROM dashboard_tokens WHERE expires_at <= ?1",
                [now_ms],
            )
            .ctx("drop expired dashboard tokens")?;
            tx.execute(
                "INSERT INTO dashboard_tokens (digest, kind, created_at, expires_at)
                 VALUES (?1, 'login', ?2, ?3)",
                params![digest, now_ms, expires_at],
            )
            .ctx("insert a dashboard login token")?;
            Ok(())
        })
        .await
    }

    /// Spends the login token `login` (a digest) and, in the same transaction, opens the
    /// session `session` with its CSRF token. `false`: the token is unknown, used or expired
    /// (nothing is opened).
    pub async fn dashboard_redeem_login(
        &self,
        login: String,
        session: String,
        csrf: String,
        now_ms: i64,
        session_expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.write("redeem a dashboard login token", move |tx| {
            let spent = tx
                .execute(
                    "DELETE FROM dashboard_tokens
                     WHERE digest = ?1 AND kind = 'login' AND expires_at > ?2",
                    params![login, now_ms],
                )
                .ctx("spend a dashboard login token")?;
            if spent == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO dashboard_tokens (digest, kind, csrf, created_at, expires_at)
                 VALUES (?1, 'session', ?2, ?3, ?4)",
                params![session, csrf, now_ms, session_expires_at],
            )
            .ctx("open a dashboard session")?;
            Ok(true)
        })
        .await
    }

    /// The CSRF token of the live session `session` (a digest); `None` when there is no such
    /// session or it expired.
    pub async fn dashboard_session(
        &self,
        session: String,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT csrf FROM dashboard_tokens
                 WHERE digest = ?1 AND kind = 'session' AND expires_at > ?2",
                params![session, now_ms],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .ctx("read a dashboard session")
        })
        .await
    }

    /// Ends the session `session` (a digest): signing out. `false` when there was none.
    pub async fn dashboard_end_session(&self, session: String) -> Result<bool, StoreError> {
        self.write("end a dashboard session", move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM dashboard_tokens WHERE digest = ?1 AND kind = 'session'",
                    [&session],
                )
                .ctx("delete a dashboard session")?;
            Ok(n > 0)
        })
        .await
    }

    /// The newest `limit` messages of chat `chat_id`, both ways, oldest first.
    pub async fn chat_transcript(
        &self,
        chat_id: i64,
        limit: usize,
    ) -> Result<Vec<TranscriptLine>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT * FROM (
                       SELECT 'in' AS direction, id, COALESCE(sender_name, sender) AS who, text,
                              received_at AS at, status AS state
                       FROM inbound WHERE chat_id = ?1
                       UNION ALL
                       SELECT 'out', id, kind, text, created_at, state
                       FROM outbound WHERE chat_id = ?1
                     ) ORDER BY at DESC, direction DESC, id DESC LIMIT ?2",
                )
                .ctx("prepare a chat transcript")?;
            let rows = stmt
                .query_map(params![chat_id, limit], |r| {
                    let direction: String = r.get(0)?;
                    Ok(TranscriptLine {
                        direction: if direction == "in" { "in" } else { "out" },
                        id: r.get(1)?,
                        from: r.get(2)?,
                        text: r.get(3)?,
                        at: r.get(4)?,
                        state: r.get(5)?,
                    })
                })
                .ctx("read a chat transcript")?;
            let mut lines = rows
                .collect::<Result<Vec<_>, _>>()
                .ctx("read a chat transcript")?;
            lines.reverse();
            Ok(lines)
        })
        .await
    }
}

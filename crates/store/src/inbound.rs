//! The inbound queue: messages from chats waiting for (or done with) an agent turn.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::engine::Store;
use crate::error::{Ctx, StoreError};
use crate::model::{
    Inbound, InboundStatus, InsertedInbound, NewInbound, NewOutbound, Outbound, RetryOutcome,
};
use crate::outbound::insert_outbound_tx;

const INBOUND_COLS: &str = "id, session_id, chat_id, platform_msg_id, sender, sender_name, text, thread, \
     received_at, status, tries, process_after, last_error, updated_at, task_run_id";

/// Backoff exponent cap: keeps `base · 2^n` far from overflow; saturation handles the rest.
const MAX_BACKOFF_SHIFT: u32 = 30;

fn inbound_row(row: &Row<'_>) -> rusqlite::Result<Inbound> {
    Ok(Inbound {
        id: row.get(0)?,
        session_id: row.get(1)?,
        chat_id: row.get(2)?,
        platform_msg_id: row.get(3)?,
        sender: row.get(4)?,
        sender_name: row.get(5)?,
        text: row.get(6)?,
        thread: row.get(7)?,
        received_at: row.get(8)?,
        status: row.get(9)?,
        tries: row.get(10)?,
        process_after: row.get(11)?,
        last_error: row.get(12)?,
        updated_at: row.get(13)?,
        task_run_id: row.get(14)?,
    })
}

fn inbound_by_id(conn: &Connection, id: i64) -> Result<Option<Inbound>, StoreError> {
    conn.query_row(
        &format!("SELECT {INBOUND_COLS} FROM inbound WHERE id = ?1"),
        [id],
        inbound_row,
    )
    .optional()
    .ctx("look up inbound")
}

/// `base · 2^(tries-1)`, saturating.
pub fn backoff_ms(backoff_base_ms: i64, tries: u32) -> i64 {
    let shift = tries.saturating_sub(1).min(MAX_BACKOFF_SHIFT);
    backoff_base_ms.max(0).saturating_mul(1_i64 << shift)
}

/// Queue the replies (skipping existing idempotency keys) and mark the rows `done`, inside a
/// transaction. Returns the newly inserted replies.
pub(crate) fn complete_turn_tx(
    tx: &Connection,
    inbound_ids: &[i64],
    replies: &[NewOutbound],
    now_ms: i64,
) -> Result<Vec<Outbound>, StoreError> {
    let mut inserted = Vec::with_capacity(replies.len());
    for reply in replies {
        if let Some(row) = insert_outbound_tx(tx, reply, now_ms)? {
            inserted.push(row);
        }
    }
    for id in inbound_ids {
        tx.execute(
            "UPDATE inbound SET status = 'done', updated_at = ?2 WHERE id = ?1",
            params![id, now_ms],
        )
        .ctx("mark inbound done")?;
    }
    Ok(inserted)
}

/// A row's status and tries, `None` when it does not exist.
fn status_and_tries(
    tx: &rusqlite::Connection,
    id: i64,
) -> Result<Option<(InboundStatus, u32)>, StoreError> {
    tx.query_row(
        "SELECT status, tries FROM inbound WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .ctx("read inbound tries")
}

/// Marks a row `failed` with its last error.
fn mark_failed(
    tx: &rusqlite::Connection,
    id: i64,
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE inbound SET status = 'failed', last_error = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, error, now_ms],
    )
    .ctx("fail inbound")?;
    Ok(())
}

/// The bookkeeping of rows that just became `failed`: their task runs end failed, and the notice
/// is queued (once, by its idempotency key).
fn finish_failed_tx(
    tx: &Connection,
    out: &mut RetryOutcome,
    error: &str,
    failure_notice: Option<&NewOutbound>,
    now_ms: i64,
) -> Result<(), StoreError> {
    if out.failed.is_empty() {
        return Ok(());
    }
    tracing::warn!(failed = ?out.failed, error = %error, "store: inbound messages gave up");
    out.failed_runs = crate::tasks::finish_runs_tx(
        tx,
        &out.failed,
        crate::tasks::RunStatus::Failed,
        (0, 0),
        Some(error),
        now_ms,
    )?;
    if let Some(notice) = failure_notice {
        out.notice = insert_outbound_tx(tx, notice, now_ms)?;
    }
    Ok(())
}

/// A due row, as [`Store::claim_pending`] picks its batch.
struct DueRow {
    id: i64,
    task_run_id: Option<i64>,
    chat_id: i64,
    thread: Option<String>,
    scope: crate::model::SessionScope,
}

/// The leading due rows that make one turn. A scheduled task's run is a turn of its own, never
/// batched with chat messages. In a group-wide session a turn answers one chat and thread (its
/// reply goes there), so the batch stops where another place's messages begin.
fn batch_ids(due: &[DueRow]) -> Vec<i64> {
    let Some(first) = due.first() else {
        return Vec::new();
    };
    if first.task_run_id.is_some() {
        return vec![first.id];
    }
    let same_place = |row: &&DueRow| {
        first.scope == crate::model::SessionScope::Chat
            || (row.chat_id == first.chat_id && row.thread == first.thread)
    };
    due.iter()
        .take_while(|row| row.task_run_id.is_none())
        .take_while(same_place)
        .map(|row| row.id)
        .collect()
}

impl Store {
    /// Store an inbound message as `pending`, due from `received_at`. A message re-delivered by the
    /// platform (same session and platform id) is not stored again: `duplicate` is set and `id` is the
    /// existing row.
    pub async fn insert_inbound(&self, m: NewInbound) -> Result<InsertedInbound, StoreError> {
        self.write("insert inbound", move |tx| insert_inbound_tx(tx, &m))
            .await
    }

    /// Finds (or starts) the message's session and stores the message in it, in ONE write
    /// transaction: the router's hot path (a message is one commit, not two). `m.session_id`
    /// is ignored; the session is resolved as [`Store::resolve_session`] does.
    pub async fn insert_inbound_for_group(
        &self,
        group_id: impl Into<String>,
        mode: crate::model::SessionMode,
        m: NewInbound,
    ) -> Result<(crate::model::Session, InsertedInbound), StoreError> {
        let group_id = group_id.into();
        let key = crate::sessions::SessionKey::new(mode, m.chat_id, m.thread.clone());
        self.write("store inbound in its session", move |tx| {
            let session =
                crate::sessions::resolve_session_tx(tx, &group_id, key.clone(), m.received_at)?;
            let m = NewInbound {
                session_id: session.id.clone(),
                ..m.clone()
            };
            let inserted = insert_inbound_tx(tx, &m)?;
            Ok((session, inserted))
        })
        .await
    }

    /// Atomically take up to `max` of the session's oldest due `pending` rows: they become `processing`
    /// with `tries += 1`. Two concurrent claims never return the same row.
    pub async fn claim_pending(
        &self,
        session_id: impl Into<String>,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<Inbound>, StoreError> {
        let session_id = session_id.into();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.write("claim pending inbound", move |tx| {
            let due: Vec<DueRow> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT i.id, i.task_run_id, i.chat_id, i.thread, s.scope
                         FROM inbound i JOIN sessions s ON s.id = i.session_id
                         WHERE i.session_id = ?1 AND i.status = 'pending' AND i.process_after <= ?2
                         ORDER BY i.received_at, i.id LIMIT ?3",
                    )
                    .ctx("select due inbound")?;
                let rows = stmt
                    .query_map(params![session_id, now_ms, max], |r| {
                        Ok(DueRow {
                            id: r.get(0)?,
                            task_run_id: r.get(1)?,
                            chat_id: r.get(2)?,
                            thread: r.get(3)?,
                            scope: r.get(4)?,
                        })
                    })
                    .ctx("select due inbound")?;
                rows.collect::<Result<_, _>>().ctx("select due inbound")?
            };
            let ids = batch_ids(&due);
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                tx.execute(
                    "UPDATE inbound SET status = 'processing', tries = tries + 1, updated_at = ?2 WHERE id = ?1",
                    params![id, now_ms],
                )
                .ctx("claim inbound")?;
                if let Some(row) = inbound_by_id(tx, id)? {
                    claimed.push(row);
                }
            }
            Ok(claimed)
        })
        .await
    }

    /// Finish a turn in ONE transaction: queue the replies (a reply whose idempotency key exists is
    /// skipped) and mark the inbound rows `done`. Returns the newly inserted replies. A scheduled
    /// task's turn ends with [`Store::complete_task_turn`], which also records the run.
    pub async fn complete_turn(
        &self,
        inbound_ids: Vec<i64>,
        replies: Vec<NewOutbound>,
        now_ms: i64,
    ) -> Result<Vec<Outbound>, StoreError> {
        self.write("complete turn", move |tx| {
            complete_turn_tx(tx, &inbound_ids, &replies, now_ms)
        })
        .await
    }

    /// After a failed turn, per row: below `max_tries` → back to `pending` due at
    /// `now + base·2^(tries-1)`; otherwise `failed`, and `failure_notice` is queued (its idempotency
    /// key makes it appear once however often this runs). Rows already `done`/`failed` are left alone.
    /// One transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn retry_or_fail(
        &self,
        inbound_ids: Vec<i64>,
        error: impl Into<String>,
        max_tries: u32,
        backoff_base_ms: i64,
        now_ms: i64,
        failure_notice: Option<NewOutbound>,
    ) -> Result<RetryOutcome, StoreError> {
        let error = error.into();
        self.write("retry or fail inbound", move |tx| {
            let mut out = RetryOutcome::default();
            for &id in &inbound_ids {
                let current = status_and_tries(tx, id)?;
                let Some((status, tries)) = current else {
                    tracing::warn!(
                        inbound = id,
                        "store: retry_or_fail on a missing inbound row, skipped"
                    );
                    continue;
                };
                if matches!(status, InboundStatus::Done | InboundStatus::Failed) {
                    continue;
                }
                if tries < max_tries {
                    let due = now_ms.saturating_add(backoff_ms(backoff_base_ms, tries));
                    tx.execute(
                        "UPDATE inbound SET status = 'pending', process_after = ?2, last_error = ?3,
                             updated_at = ?4
                         WHERE id = ?1",
                        params![id, due, error, now_ms],
                    )
                    .ctx("reschedule inbound")?;
                    out.retried.push(id);
                } else {
                    mark_failed(tx, id, &error, now_ms)?;
                    out.failed.push(id);
                }
            }
            finish_failed_tx(tx, &mut out, &error, failure_notice.as_ref(), now_ms)?;
            Ok(out)
        })
        .await
    }

    /// A claimed batch holds rows that already used up their tries (each restart while they
    /// were `processing` claimed them again): those rows alone become `failed` (with
    /// `failure_notice`, queued once), and the other rows of the batch go back to `pending`, due
    /// at once, with the try this claim counted given back — they were never tried with it.
    /// Rows not `processing` are left alone. One transaction.
    pub async fn fail_exhausted(
        &self,
        inbound_ids: Vec<i64>,
        max_tries: u32,
        error: impl Into<String>,
        now_ms: i64,
        failure_notice: Option<NewOutbound>,
    ) -> Result<RetryOutcome, StoreError> {
        let error = error.into();
        self.write("fail exhausted inbound", move |tx| {
            let mut out = RetryOutcome::default();
            for &id in &inbound_ids {
                let current = status_and_tries(tx, id)?;
                let Some((InboundStatus::Processing, tries)) = current else {
                    continue;
                };
                if tries > max_tries {
                    mark_failed(tx, id, &error, now_ms)?;
                    out.failed.push(id);
                } else {
                    tx.execute(
                        "UPDATE inbound SET status = 'pending', tries = MAX(tries - 1, 0), updated_at = ?2
                         WHERE id = ?1",
                        params![id, now_ms],
                    )
                    .ctx("release inbound")?;
                    out.retried.push(id);
                }
            }
            finish_failed_tx(tx, &mut out, &error, failure_notice.as_ref(), now_ms)?;
            Ok(out)
        })
        .await
    }

    /// Start-up after a crash: every `processing` row goes back to `pending`. Tries are kept, so a
    /// message that crashes the host every time still ends `failed`. Returns how many rows moved.
    pub async fn recover_interrupted(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.write("recover interrupted inbound", move |tx| {
            let n = tx
                .execute(
                    "UPDATE inbound SET status = 'pending', updated_at = ?1 WHERE status = 'processing'",
                    [now_ms],
                )
                .ctx("recover interrupted inbound")?;
            if n > 0 {
                tracing::info!(rows = n, "store: recovered inbound interrupted by a restart");
            }
            Ok(n)
        })
        .await
    }

    /// Puts claimed rows back to `pending` until `until_ms` without counting the try: used when
    /// the sandbox engine is unreachable, which says nothing about the message itself.
    pub async fn defer_claimed(
        &self,
        inbound_ids: Vec<i64>,
        until_ms: i64,
        reason: impl Into<String>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let reason = reason.into();
        self.write("defer claimed inbound", move |tx| {
            let mut n = 0;
            for id in &inbound_ids {
                n += tx
                    .execute(
                        "UPDATE inbound SET status = 'pending', tries = MAX(tries - 1, 0),
                                process_after = ?2, last_error = ?3, updated_at = ?4
                         WHERE id = ?1 AND status = 'processing'",
                        rusqlite::params![id, until_ms, reason, now_ms],
                    )
                    .ctx("defer claimed inbound")?;
            }
            Ok(n)
        })
        .await
    }

    /// Sessions that have `pending` rows due at `now_ms`, the one waiting longest first.
    pub async fn sessions_with_due_work(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT session_id FROM inbound
                     WHERE status = 'pending' AND process_after <= ?1
                     GROUP BY session_id ORDER BY MIN(process_after), MIN(id)",
                )
                .ctx("list sessions with due work")?;
            let rows = stmt
                .query_map([now_ms], |r| r.get(0))
                .ctx("list sessions with due work")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list sessions with due work")
        })
        .await
    }

    /// The earliest `process_after` among `pending` rows (may be in the past), to sleep until.
    pub async fn next_due_time(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT MIN(process_after) FROM inbound WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )
            .ctx("find next due inbound")
        })
        .await
    }

    /// The inbound row with this id.
    pub async fn inbound(&self, id: i64) -> Result<Option<Inbound>, StoreError> {
        self.read(move |conn| inbound_by_id(conn, id)).await
    }

    /// Every inbound row of a session, oldest first.
    pub async fn inbound_for_session(
        &self,
        session_id: impl Into<String>,
    ) -> Result<Vec<Inbound>, StoreError> {
        let session_id = session_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {INBOUND_COLS} FROM inbound WHERE session_id = ?1 ORDER BY received_at, id"
                ))
                .ctx("list inbound for session")?;
            let rows = stmt.query_map([&session_id], inbound_row).ctx("list inbound for session")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list inbound for session")
        })
        .await
    }
}

/// Inserts `m` unless its (session, platform message id) is stored already.
fn insert_inbound_tx(
    tx: &rusqlite::Connection,
    m: &NewInbound,
) -> Result<InsertedInbound, StoreError> {
    let n = tx
        .execute(
            "INSERT INTO inbound (session_id, chat_id, platform_msg_id, sender, sender_name, text,
                                  thread, received_at, status, tries, process_after, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?8, ?8)
             ON CONFLICT (session_id, chat_id, platform_msg_id) DO NOTHING",
            params![
                m.session_id,
                m.chat_id,
                m.platform_msg_id,
                m.sender,
                m.sender_name,
                m.text,
                m.thread,
                m.received_at
            ],
        )
        .ctx("insert inbound")?;
    if n == 1 {
        return Ok(InsertedInbound {
            id: tx.last_insert_rowid(),
            duplicate: false,
        });
    }
    let id: i64 = tx
        .query_row(
            "SELECT id FROM inbound WHERE session_id = ?1 AND chat_id = ?2 AND platform_msg_id = ?3",
            params![m.session_id, m.chat_id, m.platform_msg_id],
            |r| r.get(0),
        )
        .ctx("find duplicate inbound")?;
    tracing::debug!(inbound = id, platform_msg_id = %m.platform_msg_id, "store: duplicate inbound ignored");
    Ok(InsertedInbound {
        id,
        duplicate: true,
    })
}

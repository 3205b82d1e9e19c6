//! Host-wide switches that survive a restart: the owner's kill switch (`/pause` … `/resume`),
//! and ending turns the owner stopped (`/stop`) so they are never answered again.

use rusqlite::{OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use crate::engine::Store;
use crate::error::{Ctx, StoreError};

const PAUSED_KEY: &str = "paused";

/// The host is paused: who paused it and when (unix ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub by: String,
    pub since: i64,
}

impl Store {
    /// Whether the owner paused the host (`/pause`), and by whom.
    pub async fn paused(&self) -> Result<Option<Paused>, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT value, updated_at FROM host_state WHERE key = ?1",
                [PAUSED_KEY],
                |r| {
                    Ok(Paused {
                        by: r.get(0)?,
                        since: r.get(1)?,
                    })
                },
            )
            .optional()
            .ctx("read the pause state")
        })
        .await
    }

    /// Pauses the host (`by` says who) or, with `None`, resumes it. Returns the state before,
    /// so a second `/pause` can say it was already paused (and since when).
    pub async fn set_paused(
        &self,
        by: Option<String>,
        now_ms: i64,
    ) -> Result<Option<Paused>, StoreError> {
        self.write("set the pause state", move |tx| {
            let before = tx
                .query_row(
                    "SELECT value, updated_at FROM host_state WHERE key = ?1",
                    [PAUSED_KEY],
                    |r| {
                        Ok(Paused {
                            by: r.get(0)?,
                            since: r.get(1)?,
                        })
                    },
                )
                .optional()
                .ctx("read the pause state")?;
            match (&by, &before) {
                // Already paused: keep who paused it first and since when.
                (Some(_), Some(_)) => {}
                (Some(by), None) => {
                    tx.execute(
                        "INSERT INTO host_state (key, value, updated_at) VALUES (?1, ?2, ?3)",
                        params![PAUSED_KEY, by, now_ms],
                    )
                    .ctx("pause")?;
                }
                (None, _) => {
                    tx.execute("DELETE FROM host_state WHERE key = ?1", [PAUSED_KEY])
                        .ctx("resume")?;
                }
            }
            Ok(before)
        })
        .await
    }

    /// Ends a turn the owner stopped, in ONE transaction: its inbound rows still `processing`
    /// become `done` (with `reason` as their note, and no reply) so they are never answered
    /// again, not even after a restart; a scheduled task's run ends `failed` with `reason`,
    /// without counting towards `failing` (the task did nothing wrong). Returns how many rows
    /// were ended.
    pub async fn stop_turn(
        &self,
        inbound_ids: Vec<i64>,
        reason: impl Into<String>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let reason = reason.into();
        self.write("stop turn", move |tx| {
            let mut n = 0;
            for id in &inbound_ids {
                n += tx
                    .execute(
                        "UPDATE inbound SET status = 'done', last_error = ?2, updated_at = ?3
                         WHERE id = ?1 AND status = 'processing'",
                        params![id, reason, now_ms],
                    )
                    .ctx("mark a stopped message done")?;
                tx.execute(
                    "UPDATE task_runs SET status = 'failed', finished_at = ?3, error = ?2
                     WHERE status = 'queued'
                       AND id = (SELECT task_run_id FROM inbound WHERE id = ?1)",
                    params![id, reason, now_ms],
                )
                .ctx("end a stopped task run")?;
            }
            Ok(n)
        })
        .await
    }
}

//! Counts for the operator's overview (`nanoclaw status`): what is queued, what failed lately,
//! what waits for the owner. Read-only; each is one indexed or small query.

use serde::{Deserialize, Serialize};

use crate::engine::Store;
use crate::error::{Ctx, StoreError};

/// Messages waiting to be answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Stored and waiting for a turn (due now or backing off before a retry).
    pub pending: u64,
    /// In a turn right now (or left so by a crash, until the next start resumes them).
    pub processing: u64,
    /// Replies and messages waiting to be delivered.
    pub outbound: u64,
}

/// What failed since a point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCounts {
    /// Messages given up after their last try (the chat was told).
    pub messages: u64,
    /// Scheduled task runs that failed.
    pub task_runs: u64,
    /// Replies created since then that could not be delivered.
    pub deliveries: u64,
}

impl FailureCounts {
    pub fn total(&self) -> u64 {
        self.messages + self.task_runs + self.deliveries
    }
}

/// A `COUNT(*)` column (never negative).
fn count(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(column)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

impl Store {
    /// How many messages wait for a turn, are in one, and wait for delivery.
    pub async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT
                   (SELECT COUNT(*) FROM inbound WHERE status = 'pending'),
                   (SELECT COUNT(*) FROM inbound WHERE status = 'processing'),
                   (SELECT COUNT(*) FROM outbound WHERE state = 'pending')",
                [],
                |r| {
                    Ok(QueueCounts {
                        pending: count(r, 0)?,
                        processing: count(r, 1)?,
                        outbound: count(r, 2)?,
                    })
                },
            )
            .ctx("count queued messages")
        })
        .await
    }

    /// What failed at or after `since_ms`: messages given up, task runs, undeliverable replies.
    pub async fn failures_since(&self, since_ms: i64) -> Result<FailureCounts, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT
                   (SELECT COUNT(*) FROM inbound WHERE status = 'failed' AND updated_at >= ?1),
                   (SELECT COUNT(*) FROM task_runs
                      WHERE status = 'failed' AND COALESCE(finished_at, fired_at) >= ?1),
                   (SELECT COUNT(*) FROM outbound WHERE state = 'failed' AND created_at >= ?1)",
                [since_ms],
                |r| {
                    Ok(FailureCounts {
                        messages: count(r, 0)?,
                        task_runs: count(r, 1)?,
                        deliveries: count(r, 2)?,
                    })
                },
            )
            .ctx("count recent failures")
        })
        .await
    }

    /// Vault grants whose first use waits for the owner's `/approve N`.
    pub async fn pending_approval_count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM vault_grant_approvals WHERE state = 'pending'",
                [],
                |r| count(r, 0),
            )
            .ctx("count pending approvals")
        })
        .await
    }
}

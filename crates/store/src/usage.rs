//! Token usage per model turn.

use rusqlite::{Connection, params};

use crate::engine::Store;
use crate::error::{Ctx, StoreError};
use crate::model::{Usage, UsageTotals};

fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn totals(conn: &Connection, session_id: Option<&str>) -> Result<UsageTotals, StoreError> {
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
                COALESCE(SUM(cache_read), 0), COALESCE(SUM(cache_creation), 0)
         FROM turn_usage WHERE ?1 IS NULL OR session_id = ?1",
        [session_id],
        |r| {
            Ok(UsageTotals {
                turns: from_db(r.get(0)?),
                input_tokens: from_db(r.get(1)?),
                output_tokens: from_db(r.get(2)?),
                cache_read: from_db(r.get(3)?),
                cache_creation: from_db(r.get(4)?),
            })
        },
    )
    .ctx("sum usage")
}

impl Store {
    /// Record the token usage of one turn.
    pub async fn record_usage(
        &self,
        session_id: impl Into<String>,
        usage: Usage,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let session_id = session_id.into();
        self.write("record usage", move |tx| {
            tx.execute(
                "INSERT INTO turn_usage (session_id, input_tokens, output_tokens, cache_read, cache_creation,
                                         created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    session_id,
                    to_db(usage.input_tokens),
                    to_db(usage.output_tokens),
                    to_db(usage.cache_read),
                    to_db(usage.cache_creation),
                    now_ms
                ],
            )
            .ctx("record usage")?;
            Ok(())
        })
        .await
    }

    /// Usage summed over every recorded turn.
    pub async fn usage_totals(&self) -> Result<UsageTotals, StoreError> {
        self.read(|conn| totals(conn, None)).await
    }

    /// Usage summed over the turns of one session.
    pub async fn usage_for_session(
        &self,
        session_id: impl Into<String>,
    ) -> Result<UsageTotals, StoreError> {
        let session_id = session_id.into();
        self.read(move |conn| totals(conn, Some(&session_id))).await
    }
}

//! The audit log: one row per proxied request, chained by SHA-256 so an edited, removed or reordered
//! row is detected by [`Audit::verify`].

use nanoclaw_store::{AUDIT_GENESIS_HASH, AuditRecord, NewAudit, Store, StoreError, now_ms};
use sha2::{Digest, Sha256};

use crate::error::VaultError;

/// What the proxy did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Passed through untouched.
    Allow,
    /// Refused.
    Deny,
    /// Passed with a credential injected.
    Inject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Inject => "inject",
        }
    }
}

/// A request to record.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// Unix milliseconds; `None` = now.
    pub at: Option<i64>,
    pub group_folder: String,
    pub method: String,
    pub host: String,
    pub path: String,
    /// HTTP status returned to the agent (`None` if none was, e.g. a tunnel that failed).
    pub status: Option<u16>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub secret_name: Option<String>,
    pub decision: Decision,
    pub reason: String,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Row `id` does not fit the chain.
    #[error("the audit chain is broken at row {id}: {why}")]
    ChainBroken { id: i64, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle on the audit log (cheap to clone).
#[derive(Clone, Debug)]
pub struct Audit {
    store: Store,
}

/// SHA-256 over `prev_hash`, a newline and the canonical encoding of the row (a JSON array of every
/// column but `hash`, in schema order), as lower-case hex.
pub fn row_hash(row: &AuditRecord) -> String {
    let canonical = serde_json::json!([
        row.id,
        row.at,
        row.group_folder,
        row.method,
        row.host,
        row.path,
        row.status,
        row.bytes_up,
        row.bytes_down,
        row.secret_name,
        row.decision,
        row.reason,
    ]);
    let mut h = Sha256::new();
    h.update(row.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

impl Audit {
    pub fn new(store: Store) -> Audit {
        Audit { store }
    }

    /// Append a row. Runs in one write transaction on the store's single writer, so the chain never
    /// forks, even with several writers.
    pub async fn record(&self, e: AuditEntry) -> Result<AuditRecord, VaultError> {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let entry = NewAudit {
            at: e.at.unwrap_or_else(now_ms),
            group_folder: e.group_folder,
            method: e.method,
            host: e.host,
            path: e.path,
            status: e.status.map(i64::from),
            bytes_up: clamp(e.bytes_up),
            bytes_down: clamp(e.bytes_down),
            secret_name: e.secret_name,
            decision: e.decision.as_str().to_owned(),
            reason: e.reason,
        };
        Ok(self.store.audit_append(entry, row_hash).await?)
    }

    /// Rows after `after_id` (of one group, when given), oldest first.
    pub async fn rows(
        &self,
        after_id: i64,
        group: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, VaultError> {
        Ok(self.store.audit_rows(after_id, group, limit).await?)
    }

    /// Check the whole chain; returns the number of rows checked.
    pub async fn verify(&self) -> Result<usize, VerifyError> {
        const PAGE: usize = 1000;
        let mut prev_hash = AUDIT_GENESIS_HASH.to_owned();
        let mut prev_id = 0i64;
        let mut count = 0usize;
        loop {
            let rows = self.store.audit_rows(prev_id, None, PAGE).await?;
            if rows.is_empty() {
                return Ok(count);
            }
            for row in &rows {
                if row.prev_hash != prev_hash {
                    return Err(VerifyError::ChainBroken {
                        id: row.id,
                        why: if prev_id + 1 != row.id {
                            format!(
                                "its prev_hash does not match row {prev_id}: rows between were removed"
                            )
                        } else {
                            format!("its prev_hash does not match the hash of row {prev_id}")
                        },
                    });
                }
                if row_hash(row) != row.hash {
                    return Err(VerifyError::ChainBroken {
                        id: row.id,
                        why: "its contents changed after it was recorded (the hash does not match)"
                            .into(),
                    });
                }
                prev_hash.clone_from(&row.hash);
                prev_id = row.id;
                count += 1;
            }
        }
    }
}

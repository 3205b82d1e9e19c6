//! The egress proxy's decisions, recorded in the vault's hash-chained audit log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use nanoclaw_vault::{Audit, AuditEntry, Decision};
use tokio::sync::mpsc;

use nanoclaw_egress::{EgressAudit, EgressDecision, EgressRecord};

/// Records waiting for the writer; more are dropped (and the drop itself recorded).
pub const AUDIT_BACKLOG: usize = 4096;

/// Writes every egress decision to the tamper-evident audit table (`nanoclaw vault audit`).
/// One writer task takes records from a bounded queue, so a flood of requests cannot pile
/// up tasks; when the queue is full records are counted, and the count is written as a row
/// of its own once there is room, so the gap is visible in the log.
pub struct VaultAudit {
    audit: Audit,
    backlog: usize,
    /// Started on the first record (which is always made inside the runtime).
    tx: OnceLock<mpsc::Sender<AuditEntry>>,
    dropped: Arc<AtomicU64>,
}

impl VaultAudit {
    pub fn new(audit: Audit) -> VaultAudit {
        Self::with_backlog(audit, AUDIT_BACKLOG)
    }

    /// With a queue of `backlog` records (at least 1).
    pub fn with_backlog(audit: Audit, backlog: usize) -> VaultAudit {
        VaultAudit {
            audit,
            backlog: backlog.max(1),
            tx: OnceLock::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    fn sender(&self) -> &mpsc::Sender<AuditEntry> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.backlog);
            tokio::spawn(writer(self.audit.clone(), rx, Arc::clone(&self.dropped)));
            tx
        })
    }
}

async fn writer(audit: Audit, mut rx: mpsc::Receiver<AuditEntry>, dropped: Arc<AtomicU64>) {
    while let Some(entry) = rx.recv().await {
        if let Err(err) = audit.record(entry).await {
            tracing::error!(error = %err, "could not write an egress audit row");
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let summary = AuditEntry {
                at: None,
                group_folder: String::new(),
                method: "-".into(),
                host: "egress-proxy".into(),
                path: String::new(),
                status: None,
                bytes_up: 0,
                bytes_down: 0,
                secret_name: None,
                decision: Decision::Deny,
                reason: format!("{lost} audit records dropped: audit backlog full"),
            };
            if let Err(err) = audit.record(summary).await {
                tracing::error!(error = %err, lost, "could not write the dropped-records audit row");
            }
        }
    }
}

impl EgressAudit for VaultAudit {
    fn record(&self, e: EgressRecord) {
        let entry = AuditEntry {
            at: Some(e.time_ms),
            group_folder: e.group,
            method: e.method,
            host: format!("{}:{}", e.host, e.port),
            path: e.path.unwrap_or_default(),
            status: Some(e.status),
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            decision: match (e.decision, &e.secret) {
                (EgressDecision::Denied, _) => Decision::Deny,
                (EgressDecision::Allowed, Some(_)) => Decision::Inject,
                (EgressDecision::Allowed, None) => Decision::Allow,
            },
            secret_name: e.secret,
            reason: e.reason,
        };
        // The proxy must not wait on the database.
        match self.sender().try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!("egress audit backlog full; dropping records (counted)");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the egress audit writer is gone; a record was lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u16) -> EgressRecord {
        EgressRecord {
            time_ms: 1,
            group: "main".into(),
            method: "GET".into(),
            host: "example.com".into(),
            port: 80,
            path: Some(format!("/{n}")),
            status: 200,
            bytes_up: 0,
            bytes_down: 0,
            decision: EgressDecision::Allowed,
            reason: "allowed".into(),
            secret: None,
        }
    }

    #[tokio::test]
    async fn records_over_the_backlog_are_counted_in_a_row_of_their_own() {
        let store = nanoclaw_store::Store::open_in_memory().unwrap();
        let audit = Audit::new(store);
        let va = VaultAudit::with_backlog(audit.clone(), 2);
        // On this single-threaded runtime the writer cannot run until the test awaits.
        for n in 0..10 {
            va.record(rec(n));
        }
        let mut rows = Vec::new();
        for _ in 0..200 {
            rows = audit.rows(0, None, 100).await.unwrap();
            if rows.len() >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let reasons: Vec<_> = rows.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "allowed",
                "8 audit records dropped: audit backlog full",
                "allowed"
            ]
        );
        assert_eq!(audit.verify().await.unwrap(), 3);
    }
}

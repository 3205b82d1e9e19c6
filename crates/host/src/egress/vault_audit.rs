//! The egress proxy's decisions, recorded in the vault's hash-chained audit log.

use nanoclaw_vault::{Audit, AuditEntry, Decision};

use super::{EgressAudit, EgressDecision, EgressRecord};

/// Writes every egress decision to the tamper-evident audit table (`nanoclaw vault audit`).
pub struct VaultAudit {
    audit: Audit,
}

impl VaultAudit {
    pub fn new(audit: Audit) -> VaultAudit {
        VaultAudit { audit }
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
        // The proxy must not wait on the database; the store's single writer keeps the
        // chain in order.
        let audit = self.audit.clone();
        tokio::spawn(async move {
            if let Err(err) = audit.record(entry).await {
                tracing::error!(error = %err, "could not write an egress audit row");
            }
        });
    }
}

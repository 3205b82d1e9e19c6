//! `ADMIN` rows in the hash-chained audit log: changes to a group's settings or skills (and
//! refused attempts), next to the vault's egress rows, so one `nanoclaw vault audit` shows what
//! a group was allowed and who changed it.

/// Appends an `ADMIN` row for group `folder` at `path` (`/groups/<folder>/…`). A failure to
/// record is logged loudly: the change itself is in the store either way, and the owner must
/// hear of the gap.
pub async fn record(
    store: &nanoclaw_store::Store,
    folder: &str,
    path: String,
    allowed: bool,
    reason: String,
) {
    let recorded = nanoclaw_vault::Audit::new(store.clone())
        .record(nanoclaw_vault::AuditEntry {
            at: None,
            group_folder: folder.to_owned(),
            method: "ADMIN".into(),
            host: "nanoclaw".into(),
            path,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            secret_name: None,
            decision: if allowed {
                nanoclaw_vault::Decision::Allow
            } else {
                nanoclaw_vault::Decision::Deny
            },
            reason,
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(group = %folder, error = %e, "could not record an owner's change in the audit log");
    }
}

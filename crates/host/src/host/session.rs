//! Session workers: one per session with due messages, answering them one turn at a time.

use std::sync::Arc;

use tracing::Instrument as _;

use super::Inner;
use super::turn::run_turn;
use crate::now_ms;

/// Messages batched into one turn at most.
const MAX_BATCH: usize = 10;

/// Makes sure a worker is processing `session`.
pub(super) async fn kick(inner: &Arc<Inner>, session: String) {
    // Paused by the owner: the messages wait in the store; `/resume` wakes them.
    if super::kill_switch::is_paused(inner) {
        return;
    }
    let mut workers = inner.workers.lock().await;
    if workers.insert(session.clone()) {
        // The group is recorded by the first turn, which reads it anyway.
        // A root span: a session's work is nobody's child, whoever kicked it.
        let span = tracing::info_span!(
            parent: None,
            "session",
            session = %session,
            group = tracing::field::Empty
        );
        tokio::spawn(session_worker(Arc::clone(inner), session).instrument(span));
    }
}

/// Answers the session's due messages, one turn at a time, until none are left.
async fn session_worker(inner: Arc<Inner>, session_id: String) {
    let session_span = tracing::Span::current();
    loop {
        let batch = {
            let mut workers = inner.workers.lock().await;
            if super::kill_switch::is_paused(&inner) {
                workers.remove(&session_id);
                return;
            }
            match inner
                .store
                .claim_pending(session_id.clone(), now_ms(), MAX_BATCH)
                .await
            {
                Ok(batch) if !batch.is_empty() => batch,
                Ok(_) => {
                    workers.remove(&session_id);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming messages failed");
                    workers.remove(&session_id);
                    return;
                }
            }
        };
        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
        let turn_span = tracing::info_span!("turn", ids = ?ids);
        if let Err(e) = run_turn(&inner, &session_id, batch, &session_span)
            .instrument(turn_span)
            .await
        {
            tracing::error!(error = %e, "turn bookkeeping failed");
        }
    }
}

//! A turn that cannot be answered: its messages retried later, deferred while the sandbox
//! engine is down, or given up with a notice in their chat (and, for a scheduled task's run,
//! an alert in the owner's main chat).

use std::sync::Arc;

use nanoclaw_store::{Chat, Inbound, NewOutbound, OutboundKind};

use super::Inner;
use super::owner::owner_chat;
use super::turn::{TurnContext, platform_ids, remember_answers};
use crate::now_ms;

/// A message that keeps killing the host (each restart claims it again) must end too — but
/// only that message: the others in its batch go back to the queue untouched and are claimed
/// again right after (the worker loops). `true` when the batch was handled so.
pub(super) async fn give_up_exhausted(
    inner: &Arc<Inner>,
    ctx: &TurnContext,
    batch: &[Inbound],
) -> anyhow::Result<bool> {
    let session_id = ctx.session_id();
    let max_tries = inner.config.agents.max_tries;
    let exhausted: Vec<&Inbound> = batch.iter().filter(|m| m.tries > max_tries).collect();
    let Some(first) = exhausted.first() else {
        return Ok(false);
    };
    let error = format!("gave up after {} interrupted attempts", first.tries - 1);
    let notice = NewOutbound {
        session_id: Some(session_id.to_owned()),
        chat_id: ctx.chat.id,
        in_reply_to: exhausted.last().map(|m| m.id),
        // Keyed on the exhausted message: the released ones keep their own key free.
        idempotency_key: format!("error:{session_id}:{}", first.id),
        text: match ctx.task_id() {
            Some(id) => format!("Scheduled task {id} failed: {error}"),
            None => format!("Sorry, I could not answer that: {error}"),
        },
        kind: OutboundKind::Error,
        files: Vec::new(),
    };
    let outcome = inner
        .store
        .fail_exhausted(
            ctx.ids.clone(),
            max_tries,
            error.clone(),
            now_ms(),
            Some(notice),
        )
        .await?;
    for failed in &outcome.failed_runs {
        alert_task_failure(inner, &ctx.chat, failed, &error).await;
    }
    inner.delivery_wake.notify_one();
    Ok(true)
}

/// The sandbox engine is down: keep the messages, say so once, try again later.
pub(super) async fn defer_turn(
    inner: &Arc<Inner>,
    ctx: &TurnContext,
    error: String,
) -> anyhow::Result<()> {
    tracing::error!(%error, "sandbox runtime unreachable; messages kept for later");
    let session_id = ctx.session_id();
    let ids = &ctx.ids;
    let first_id = ctx.first_id();
    let now = now_ms();
    inner
        .store
        .defer_claimed(
            ids.to_vec(),
            now + (inner.config.agents.runtime_retry_secs.max(1) * 1000) as i64,
            error.clone(),
            now,
        )
        .await?;
    // Keyed per batch: the notice goes out once however many times the engine is retried.
    let notice = inner
        .store
        .insert_outbound(NewOutbound {
            session_id: Some(session_id.to_owned()),
            chat_id: ctx.chat.id,
            in_reply_to: None,
            idempotency_key: format!("deferred:{session_id}:{first_id}"),
            text: format!(
                "I can't start my sandbox right now ({error}). Your message is kept and I'll answer as soon as it is back."
            ),
            kind: OutboundKind::Message,
            files: Vec::new(),
        })
        .await?;
    if let Some(notice) = notice {
        let answers = platform_ids(inner, ids).await;
        remember_answers(inner, notice.id, &answers);
        inner.delivery_wake.notify_one();
    }
    inner.scheduler_wake.notify_one();
    Ok(())
}

/// A turn failed: retry it later, or give up and say so in its chat (for a scheduled task's
/// run, naming the task).
pub(super) async fn fail_turn(
    inner: &Arc<Inner>,
    ctx: &TurnContext,
    error: String,
    retryable: bool,
) -> anyhow::Result<()> {
    let session_id = ctx.session_id();
    let ids = &ctx.ids;
    let max_tries = if retryable {
        inner.config.agents.max_tries
    } else {
        1
    };
    let first_id = ctx.first_id();
    let notice = NewOutbound {
        session_id: Some(session_id.to_owned()),
        chat_id: ctx.chat.id,
        in_reply_to: ids.last().copied(),
        idempotency_key: format!("error:{session_id}:{first_id}"),
        text: match ctx.task_id() {
            Some(id) => format!("Scheduled task {id} failed: {error}"),
            None => format!("Sorry, I could not answer that: {error}"),
        },
        kind: OutboundKind::Error,
        files: Vec::new(),
    };
    let outcome = inner
        .store
        .retry_or_fail(
            ids.to_vec(),
            error.clone(),
            max_tries,
            (inner.config.agents.retry_backoff_secs * 1000) as i64,
            now_ms(),
            Some(notice),
        )
        .await?;
    if !outcome.retried.is_empty() {
        tracing::info!(messages = outcome.retried.len(), "turn will be retried");
        inner.scheduler_wake.notify_one();
    }
    if let Some(notice) = &outcome.notice {
        let answers = platform_ids(inner, &outcome.failed).await;
        remember_answers(inner, notice.id, &answers);
    }
    for failed in &outcome.failed_runs {
        alert_task_failure(inner, &ctx.chat, failed, &error).await;
    }
    if outcome.notice.is_some() || !outcome.failed_runs.is_empty() {
        inner.delivery_wake.notify_one();
    }
    Ok(())
}

/// A failed run is never silent: its own chat got the failure notice; the owner's main chat hears
/// of it too, and of a task that keeps failing.
async fn alert_task_failure(
    inner: &Arc<Inner>,
    task_chat: &Chat,
    failed: &nanoclaw_store::FailedRun,
    error: &str,
) {
    let main_chat = match owner_chat(&inner.store).await {
        Ok(Some(c)) => c,
        _ => {
            tracing::warn!(task = %failed.task_id, "no main chat to alert about a failed task run");
            return;
        }
    };
    let mut text = if main_chat.id == task_chat.id {
        String::new()
    } else {
        format!(
            "Scheduled task {} (chat {} on {}) failed: {error}",
            failed.task_id, task_chat.platform_id, task_chat.channel
        )
    };
    if failed.now_failing {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!(
            "Task {} has failed {} times in a row and is marked failing; it keeps its schedule. \
             See `nanoclaw tasks show {}`.",
            failed.task_id, failed.consecutive_failures, failed.task_id
        ));
    }
    if text.is_empty() {
        return;
    }
    let alert = NewOutbound {
        session_id: None,
        chat_id: main_chat.id,
        in_reply_to: None,
        idempotency_key: format!("task-alert:{}", failed.run_id),
        text,
        kind: OutboundKind::Error,
        files: Vec::new(),
    };
    if let Err(e) = inner.store.insert_outbound(alert).await {
        tracing::error!(task = %failed.task_id, error = %e, "could not queue a task failure alert");
    }
}

//! Delivery: stored outbound messages out through their channels, each marked delivered only
//! once, with every secret value redacted on the way (the leak guard).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nanoclaw_store::{Chat, NewOutbound, Outbound, OutboundKind};
use tokio::sync::Mutex;

use super::Inner;
use super::owner::owner_chat;
use crate::channel::{ChannelError, OutgoingFile, OutgoingMessage};
use crate::now_ms;

/// Delivery attempts before a message is marked failed.
const MAX_DELIVERY_TRIES: u32 = 5;
/// How soon a message for a platform channel that is not connected yet is tried again.
const PLATFORM_RETRY: Duration = Duration::from_secs(2);
/// Outbound rows read per pass.
const DELIVERY_BATCH: usize = 200;

/// Chats delivered to at once: each chat's messages go out in order, different chats in
/// parallel, so one slow or rate-limited platform does not hold up every other chat.
const PARALLEL_CHATS: usize = 32;

/// What to do after one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Go on with the chat's next message.
    Continue,
    /// Stop this chat for this pass; `retry_soon` when it should be tried again shortly.
    StopChat { retry_soon: bool },
    /// The platform asked to wait: leave the chat alone until then.
    Cooldown(tokio::time::Instant),
}

/// Delivers stored outbound messages through their channels.
pub(super) async fn delivery_loop(inner: Arc<Inner>) {
    let chats: Mutex<HashMap<i64, Chat>> = Mutex::new(HashMap::new());
    let mut cooldowns: HashMap<i64, tokio::time::Instant> = HashMap::new();
    loop {
        let notified = inner.delivery_wake.notified();
        // Checked per pass against the live secret versions (the vault rebuilds it only when
        // they changed), so a rotation is covered at once.
        let guard = match &inner.vault {
            Some(vault) => match vault.leak_guard().await {
                Ok(guard) => Some(guard),
                Err(e) => {
                    // Fail closed: without a working guard nothing leaves.
                    tracing::error!(error = %e, "the leak guard is unavailable; holding outgoing messages");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = notified => {}
                    }
                    continue;
                }
            },
            None => None,
        };
        let now = tokio::time::Instant::now();
        cooldowns.retain(|_, until| *until > now);
        let pass = deliver_pending(&inner, &chats, guard.as_deref(), &cooldowns).await;
        cooldowns.extend(pass.cooldowns);
        let mut wait = if pass.retry_soon {
            Some(Duration::from_secs(2))
        } else {
            None
        };
        if let Some(until) = cooldowns.values().min() {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        match wait {
            Some(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// What one pass over the queue found.
#[derive(Default)]
struct Pass {
    retry_soon: bool,
    cooldowns: Vec<(i64, tokio::time::Instant)>,
}

/// One pass over the outbound queue: each chat's rows in order, chats in parallel.
async fn deliver_pending(
    inner: &Arc<Inner>,
    chats: &Mutex<HashMap<i64, Chat>>,
    guard: Option<&nanoclaw_vault::LeakGuard>,
    cooldowns: &HashMap<i64, tokio::time::Instant>,
) -> Pass {
    let rows = match inner.store.pending_outbound(DELIVERY_BATCH).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "reading the outbound queue failed");
            return Pass {
                retry_soon: true,
                ..Pass::default()
            };
        }
    };
    // Rows come oldest first; grouping keeps that order within each chat.
    let mut by_chat: Vec<(i64, Vec<Outbound>)> = Vec::new();
    for row in rows {
        if cooldowns.contains_key(&row.chat_id) {
            continue;
        }
        match by_chat.iter_mut().find(|(chat, _)| *chat == row.chat_id) {
            Some((_, list)) => list.push(row),
            None => by_chat.push((row.chat_id, vec![row])),
        }
    }
    let results: Vec<(i64, Next)> = futures_util::stream::iter(by_chat)
        .map(|(chat_id, rows)| async move {
            let mut last = Next::Continue;
            for row in rows {
                last = deliver_one(inner, chats, guard, row).await;
                if last != Next::Continue {
                    break;
                }
            }
            (chat_id, last)
        })
        .buffer_unordered(PARALLEL_CHATS)
        .collect()
        .await;
    let mut pass = Pass::default();
    for (chat_id, next) in results {
        match next {
            Next::Continue => {}
            Next::StopChat { retry_soon } => pass.retry_soon |= retry_soon,
            Next::Cooldown(until) => pass.cooldowns.push((chat_id, until)),
        }
    }
    pass
}

/// Delivers one outbound row, unless its chat is parked or its channel is not running.
/// `true` when it failed and should be tried again soon.
async fn deliver_one(
    inner: &Arc<Inner>,
    chats: &Mutex<HashMap<i64, Chat>>,
    guard: Option<&nanoclaw_vault::LeakGuard>,
    row: Outbound,
) -> Next {
    const STOP: Next = Next::StopChat { retry_soon: false };
    if inner.parked_chats.lock().await.chats.contains(&row.chat_id) {
        return STOP;
    }
    let cached = chats.lock().await.get(&row.chat_id).cloned();
    let chat = match cached {
        Some(c) => c,
        None => match inner.store.chat(row.chat_id).await {
            Ok(Some(c)) => {
                chats.lock().await.insert(c.id, c.clone());
                c
            }
            _ => return STOP,
        },
    };
    let Some(channel) = inner.channels.get(&chat.channel) else {
        // The channel is not running (disabled in config): keep the message.
        inner.parked_chats.lock().await.chats.insert(chat.id);
        return STOP;
    };
    let reply_to = match row.in_reply_to {
        Some(id) => inner
            .store
            .inbound(id)
            .await
            .ok()
            .flatten()
            .map(|m| m.platform_msg_id),
        None => None,
    };
    let text = match guard {
        Some(guard) => guard_text(inner, guard, &row, &chat).await,
        None => row.text.clone(),
    };
    let answers = inner
        .answers
        .lock()
        .ok()
        .and_then(|map| map.get(&row.id).cloned())
        .unwrap_or_default();
    let files = match inner.store.outbound_files(row.id).await {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(outbound = row.id, error = %e, "reading a message's files failed");
            return Next::StopChat { retry_soon: true };
        }
    };
    let message = OutgoingMessage {
        outbound_id: row.id,
        idempotency_key: row.idempotency_key.clone(),
        chat_id: chat.platform_id.clone(),
        thread: row.thread.clone(),
        text,
        kind: row.kind.as_str().to_owned(),
        reply_to,
        answers,
        files: files
            .iter()
            .map(|f| OutgoingFile {
                file_name: f.file_name.clone(),
                path: f.path.clone().into(),
                mime_type: f.mime_type.clone(),
            })
            .collect(),
    };
    let reachable_seen = inner.parked_chats.lock().await.reachable_events;
    let delivered = channel.deliver(&message).await;
    let next = record_delivery(inner, &row, &chat, delivered, reachable_seen).await;
    if !files.is_empty() {
        forget_sent_files(inner, row.id, &files).await;
    }
    next
}

/// Removes the outbox copies of a message once it no longer waits for delivery (delivered or
/// given up); kept while it is pending, also across restarts.
async fn forget_sent_files(inner: &Arc<Inner>, id: i64, files: &[nanoclaw_store::OutboundFile]) {
    let pending = matches!(
        inner.store.outbound(id).await,
        Ok(Some(row)) if row.state == nanoclaw_store::OutboundState::Pending
    );
    if pending {
        return;
    }
    let Some(first) = files.first().map(|f| f.path.clone()) else {
        return;
    };
    let outbox = inner.paths.outbox_dir();
    let _ =
        tokio::task::spawn_blocking(move || crate::outbox::remove_copies(&outbox, &first)).await;
}

/// Records what became of a delivery attempt and says what to do next.
async fn record_delivery(
    inner: &Arc<Inner>,
    row: &Outbound,
    chat: &Chat,
    delivered: Result<Option<String>, ChannelError>,
    reachable_seen: u64,
) -> Next {
    match delivered {
        Ok(platform_id) => {
            if let Ok(mut map) = inner.answers.lock() {
                map.remove(&row.id);
            }
            if let Err(e) = inner
                .store
                .mark_delivered(row.id, platform_id, now_ms())
                .await
            {
                tracing::error!(outbound = row.id, error = %e, "recording a delivery failed");
            }
            Next::Continue
        }
        Err(ChannelError::NotConnected(why)) if chat.channel != crate::channel::terminal::NAME => {
            // A platform channel that is starting or reconnecting: try again shortly. (Parking
            // is for the terminal, whose clients say when they are back.)
            tracing::debug!(chat = %chat.platform_id, %why, "channel not connected; retrying soon");
            Next::Cooldown(tokio::time::Instant::now() + PLATFORM_RETRY)
        }
        Err(ChannelError::NotConnected(why)) => {
            tracing::debug!(chat = %chat.platform_id, %why, "chat unreachable; message kept");
            let mut parked = inner.parked_chats.lock().await;
            // A client that came back while this delivery was failing has already woken the
            // loop: parking now would strand the chat until the next client.
            if parked.reachable_events == reachable_seen {
                parked.chats.insert(chat.id);
            }
            Next::StopChat { retry_soon: false }
        }
        Err(ChannelError::Unclaimed(why)) => {
            // Tried again on the next pass (a client arriving wakes one); the chat's other
            // messages go on.
            tracing::debug!(outbound = row.id, %why, "message kept");
            Next::Continue
        }
        Err(ChannelError::RateLimited {
            platform,
            retry_after,
        }) => {
            // Not a failure: the platform said when to come back. No try is used up.
            tracing::info!(outbound = row.id, %platform, ?retry_after, "rate limited; waiting");
            Next::Cooldown(tokio::time::Instant::now() + retry_after)
        }
        Err(e) => {
            tracing::warn!(outbound = row.id, error = %e, "delivery failed");
            let tries = if e.is_retryable() {
                MAX_DELIVERY_TRIES
            } else {
                1
            };
            let state = inner
                .store
                .mark_delivery_failed(row.id, e.to_string(), tries)
                .await;
            if matches!(state, Ok(nanoclaw_store::OutboundState::Failed))
                && let Ok(mut map) = inner.answers.lock()
            {
                map.remove(&row.id);
            }
            // Later messages of the chat wait, so they are not shown before this one.
            Next::StopChat { retry_soon: true }
        }
    }
}

/// The text to deliver: with every secret value redacted. A redaction is logged and the
/// owner is told in the main chat.
async fn guard_text(
    inner: &Arc<Inner>,
    guard: &nanoclaw_vault::LeakGuard,
    row: &Outbound,
    chat: &Chat,
) -> String {
    if guard.is_empty() {
        return row.text.clone();
    }
    let hits = guard.scan(row.text.as_bytes());
    if hits.is_empty() {
        return row.text.clone();
    }
    let mut names: Vec<&str> = hits
        .iter()
        .map(|m| guard.secret_name(m.secret_index))
        .collect();
    names.sort_unstable();
    names.dedup();
    tracing::warn!(
        outbound = row.id,
        channel = %chat.channel,
        chat = %chat.platform_id,
        secrets = ?names,
        "redacted a secret from an outgoing chat message"
    );
    if let Ok(Some(owner_chat)) = owner_chat(&inner.store).await {
        let alert = NewOutbound {
            session_id: None,
            chat_id: owner_chat.id,
            in_reply_to: None,
            idempotency_key: format!("leak:{}", row.id),
            text: format!(
                "Security: a message to {}:{} contained the secret(s) {}; the values were redacted before it was sent.",
                chat.channel,
                chat.platform_id,
                names.join(", ")
            ),
            kind: OutboundKind::Error,
            files: Vec::new(),
        };
        if let Err(e) = inner.store.insert_outbound(alert).await {
            tracing::error!(error = %e, "could not queue the leak alert");
        }
        inner.delivery_wake.notify_one();
    }
    guard.redact(&row.text)
}

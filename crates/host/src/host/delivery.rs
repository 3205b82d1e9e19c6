//! Delivery: stored outbound messages out through their channels, each marked delivered only
//! once, with every secret value redacted on the way (the leak guard).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nanoclaw_store::{Chat, NewOutbound, Outbound, OutboundKind};

use super::Inner;
use super::owner::owner_chat;
use crate::channel::{ChannelError, OutgoingMessage};
use crate::now_ms;

/// Delivery attempts before a message is marked failed.
const MAX_DELIVERY_TRIES: u32 = 5;
/// Outbound rows read per pass.
const DELIVERY_BATCH: usize = 200;

/// Delivers stored outbound messages through their channels.
pub(super) async fn delivery_loop(inner: Arc<Inner>) {
    let mut chats: HashMap<i64, Chat> = HashMap::new();
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
        let retry_soon = deliver_pending(&inner, &mut chats, guard.as_deref()).await;
        if retry_soon {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = notified => {}
            }
        } else {
            notified.await;
        }
    }
}

/// One pass over the outbound queue. `true` when something should be tried again soon.
async fn deliver_pending(
    inner: &Arc<Inner>,
    chats: &mut HashMap<i64, Chat>,
    guard: Option<&nanoclaw_vault::LeakGuard>,
) -> bool {
    match inner.store.pending_outbound(DELIVERY_BATCH).await {
        Ok(rows) => {
            let mut retry_soon = false;
            for row in rows {
                retry_soon |= deliver_one(inner, chats, guard, row).await;
            }
            retry_soon
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the outbound queue failed");
            true
        }
    }
}

/// Delivers one outbound row, unless its chat is parked or its channel is not running.
/// `true` when it failed and should be tried again soon.
async fn deliver_one(
    inner: &Arc<Inner>,
    chats: &mut HashMap<i64, Chat>,
    guard: Option<&nanoclaw_vault::LeakGuard>,
    row: Outbound,
) -> bool {
    if inner.parked_chats.lock().await.chats.contains(&row.chat_id) {
        return false;
    }
    let chat = match chats.get(&row.chat_id) {
        Some(c) => c.clone(),
        None => match inner.store.chat(row.chat_id).await {
            Ok(Some(c)) => {
                chats.insert(c.id, c.clone());
                c
            }
            _ => return false,
        },
    };
    let Some(channel) = inner.channels.get(&chat.channel) else {
        // The channel is not running (disabled in config): keep the message.
        inner.parked_chats.lock().await.chats.insert(chat.id);
        return false;
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
    let message = OutgoingMessage {
        outbound_id: row.id,
        idempotency_key: row.idempotency_key.clone(),
        chat_id: chat.platform_id.clone(),
        thread: None,
        text,
        kind: row.kind.as_str().to_owned(),
        reply_to,
        answers,
    };
    let reachable_seen = inner.parked_chats.lock().await.reachable_events;
    let delivered = channel.deliver(&message).await;
    record_delivery(inner, &row, &chat, delivered, reachable_seen).await
}

/// Records what became of a delivery attempt. `true` when it should be tried again soon.
async fn record_delivery(
    inner: &Arc<Inner>,
    row: &Outbound,
    chat: &Chat,
    delivered: Result<Option<String>, ChannelError>,
    reachable_seen: u64,
) -> bool {
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
            false
        }
        Err(ChannelError::NotConnected(why)) => {
            tracing::debug!(chat = %chat.platform_id, %why, "chat unreachable; message kept");
            let mut parked = inner.parked_chats.lock().await;
            // A client that came back while this delivery was failing has already woken the
            // loop: parking now would strand the chat until the next client.
            if parked.reachable_events == reachable_seen {
                parked.chats.insert(chat.id);
            }
            false
        }
        Err(ChannelError::Unclaimed(why)) => {
            // Tried again on the next pass (a client arriving wakes one).
            tracing::debug!(outbound = row.id, %why, "message kept");
            false
        }
        Err(e) => {
            tracing::warn!(outbound = row.id, error = %e, "delivery failed");
            let state = inner
                .store
                .mark_delivery_failed(row.id, e.to_string(), MAX_DELIVERY_TRIES)
                .await;
            if matches!(state, Ok(nanoclaw_store::OutboundState::Failed))
                && let Ok(mut map) = inner.answers.lock()
            {
                map.remove(&row.id);
            }
            true
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
        };
        if let Err(e) = inner.store.insert_outbound(alert).await {
            tracing::error!(error = %e, "could not queue the leak alert");
        }
        inner.delivery_wake.notify_one();
    }
    guard.redact(&row.text)
}

//! The receive loop: `getUpdates` long polling
//! (<https://core.telegram.org/bots/api#getupdates>).
//!
//! Telegram keeps an update until a `getUpdates` call passes an `offset` above its
//! `update_id`. The loop sends a batch's messages to the host, waits for every ack, and only
//! then moves the offset (in memory and in the state store) past the updates the host has
//! settled. A crash in between means the batch comes again; the host drops what it already
//! stored by `platform_msg_id`, so nothing is lost and nothing is stored twice.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::{Backoff, ChannelEvent, HealthCell, InboundSink, StateStore};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::api::Api;
use crate::inbound::{self, BotIdentity};
use crate::types::Update;

/// The state-store key of the next update id to ask for.
pub const OFFSET_KEY: &str = "offset";

/// Everything the loop needs.
pub struct Poller {
    pub api: Arc<Api>,
    pub state: Arc<dyn StateStore>,
    pub health: Arc<HealthCell>,
    pub sink: InboundSink,
    pub poll_timeout_secs: u64,
    pub max_attachment_bytes: u64,
}

/// How a batch went.
enum Batch {
    /// Every update up to (not including) this id is settled.
    Settled(i64),
    /// The host did not settle one update; the offset may only move up to this id.
    Unsettled(i64),
    /// The host stopped listening.
    SinkClosed,
}

/// Reads the persisted offset (0: from the oldest update Telegram still has).
pub async fn load_offset(state: &dyn StateStore) -> Result<i64, nanoclaw_channel::ChannelError> {
    Ok(state
        .get(OFFSET_KEY)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

impl Poller {
    /// Runs until stopped (the task is aborted), the token is refused or the host goes away.
    pub async fn run(self, me: Option<BotIdentity>, mut offset: i64) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let Some(me) = self.identify(me, &mut backoff).await else {
            return;
        };
        // After an error the next call is a short poll, so health shows the link back at
        // once instead of after a whole long-poll timeout.
        let mut probe = false;
        loop {
            let timeout = if probe { 0 } else { self.poll_timeout_secs };
            match self.api.get_updates(offset, timeout).await {
                Ok(updates) => {
                    backoff.reset();
                    probe = false;
                    self.health.event();
                    let (next, settled) = match self.handle_batch(&me, offset, &updates).await {
                        Batch::Settled(next) => (next, true),
                        Batch::Unsettled(next) => (next, false),
                        Batch::SinkClosed => {
                            self.health.down("the host stopped taking messages");
                            return;
                        }
                    };
                    if next > offset {
                        offset = next;
                        self.save_offset(offset).await;
                    }
                    if !settled {
                        // The host could not store a message: ask again later for it.
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Err(e) if e.code() == Some(401) => {
                    tracing::error!(error = %e, "telegram: the bot token was refused");
                    self.health.down(e.to_string());
                    return;
                }
                Err(e) => {
                    // 409: another getUpdates consumer (a second instance) or a webhook; 429:
                    // told to wait; anything else: the link broke. All retried.
                    let wait = e.retry_after().unwrap_or_else(|| backoff.next_delay());
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "telegram: polling failed; retrying");
                    self.health.reconnecting(e.to_string());
                    probe = true;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The bot's identity, asking `getMe` until it answers; `None` when the token is refused.
    async fn identify(
        &self,
        known: Option<BotIdentity>,
        backoff: &mut Backoff,
    ) -> Option<BotIdentity> {
        if known.is_some() {
            return known;
        }
        loop {
            match self.api.get_me().await {
                Ok(me) => {
                    self.health.connected();
                    backoff.reset();
                    return Some(BotIdentity {
                        id: me.id,
                        username: me.username,
                    });
                }
                Err(e) if e.code() == Some(401) => {
                    self.health.down(e.to_string());
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "telegram: getMe failed; retrying");
                    self.health.reconnecting(e.to_string());
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn save_offset(&self, offset: i64) {
        if let Err(e) = self.state.put(OFFSET_KEY, &offset.to_string()).await {
            // Telegram already has the new offset; after a restart the host deduplicates.
            tracing::warn!(error = %e, offset, "telegram: could not persist the update offset");
            self.health
                .error(format!("persisting the update offset: {e}"));
        }
    }

    /// Sends the batch's messages to the host, then waits for their acks in order.
    async fn handle_batch(&self, me: &BotIdentity, offset: i64, updates: &[Value]) -> Batch {
        let mut pending: Vec<(i64, Option<oneshot::Receiver<_>>)> = Vec::new();
        for raw in updates {
            let Some(id) = raw.get("update_id").and_then(Value::as_i64) else {
                tracing::warn!(update = %truncate(raw), "telegram: update without update_id skipped");
                self.health.error("skipped an update without update_id");
                continue;
            };
            if id < offset {
                continue;
            }
            let ack = match self.event_for(me, id, raw).await {
                Some(mut event) => {
                    let (tx, rx) = oneshot::channel();
                    event.ack = Some(tx);
                    if self.sink.send(ChannelEvent::Inbound(event)).await.is_err() {
                        return Batch::SinkClosed;
                    }
                    Some(rx)
                }
                None => None,
            };
            pending.push((id, ack));
        }
        let mut next = offset;
        for (id, ack) in pending {
            if let Some(ack) = ack {
                match ack.await {
                    Ok(outcome) if outcome.is_settled() => {}
                    Ok(outcome) => {
                        tracing::warn!(
                            update_id = id,
                            ?outcome,
                            "telegram: the host did not store a message; it will come again"
                        );
                        self.health
                            .error(format!("update {id} not stored: {outcome:?}"));
                        return Batch::Unsettled(next);
                    }
                    Err(_) => {
                        tracing::warn!(
                            update_id = id,
                            "telegram: the host dropped a message unanswered; it will come again"
                        );
                        return Batch::Unsettled(next);
                    }
                }
            }
            next = next.max(id + 1);
        }
        Batch::Settled(next)
    }

    /// The event for one update; `None` for what the host does not get (the bot's own
    /// messages, other update kinds, malformed updates — logged and skipped).
    async fn event_for(
        &self,
        me: &BotIdentity,
        id: i64,
        raw: &Value,
    ) -> Option<nanoclaw_channel::InboundEvent> {
        let update: Update = match serde_json::from_value(raw.clone()) {
            Ok(update) => update,
            Err(e) => {
                tracing::warn!(update_id = id, error = %e, update = %truncate(raw), "telegram: malformed update skipped");
                self.health
                    .error(format!("skipped malformed update {id}: {e}"));
                return None;
            }
        };
        let message = update.message?;
        let mut event = inbound::describe(me, &message)?;
        let files = inbound::files(&message);
        if !files.is_empty() {
            inbound::attach(&self.api, files, self.max_attachment_bytes, &mut event).await;
        }
        Some(event)
    }
}

/// A raw update for a log line, cut short.
fn truncate(raw: &Value) -> String {
    let text = raw.to_string();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

//! The host's background loops: routing channel events, firing scheduled tasks, waking
//! sessions whose retries are due, and keeping the configured agents warm.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_store::SessionMode;
use tokio::sync::mpsc;

use super::Inner;
use super::owner::owner_chat;
use super::session::kick;
use crate::channel::{ChannelEvent, InboundEvent, RouteOutcome};
use crate::now_ms;

/// Hands channel events to the router (inbound messages) or to the loops they wake.
pub(super) async fn router_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<ChannelEvent>) {
    let lanes = Arc::new(super::lanes::Lanes::default());
    while let Some(event) = rx.recv().await {
        match event {
            ChannelEvent::Inbound(event) => lanes.dispatch(&inner, event),
            ChannelEvent::Wake => inner.look_again(),
            ChannelEvent::ChannelStatus { reply } => {
                let _ = reply.send(inner.channel_health());
            }
            ChannelEvent::RestartChannel { name, done } => {
                // Off the router loop: a restart may take a while (a slow platform).
                let inner = Arc::clone(&inner);
                tokio::spawn(async move {
                    let result = inner.restart_channel(&name).await;
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                });
            }
            ChannelEvent::HostStatus { reply } => {
                // Off the router loop: counting the queue reads the store.
                let inner = Arc::clone(&inner);
                tokio::spawn(async move {
                    let _ = reply.send(inner.host_state().await);
                });
            }
            ChannelEvent::Stop => {
                tracing::info!("the owner asked the host to stop (nanoclaw stop)");
                inner.stop_requested.send_replace(true);
            }
            ChannelEvent::Reachable { channel, chat_id } => {
                let chat = inner.store.chat_by_platform(channel, chat_id).await;
                let mut parked = inner.parked_chats.lock().await;
                parked.reachable_events += 1;
                if let Ok(Some(chat)) = chat {
                    parked.chats.remove(&chat.id);
                }
                drop(parked);
                inner.delivery_wake.notify_one();
            }
        }
    }
}

/// Stores an inbound message for the sessions it wakes (or takes it as an approval command)
/// and acknowledges it to its channel.
pub(super) async fn route_inbound(inner: &Arc<Inner>, mut event: InboundEvent) {
    let ack = event.ack.take();
    // The owner's `/approve …` / `/deny …` in the main chat never reach an agent.
    if let Some(done) = crate::approvals::intercept(&inner.store, &event).await {
        inner.delivery_wake.notify_one();
        tracing::debug!(channel = %event.channel, chat = %event.chat_id, outcome = ?done.outcome, "approval command");
        // Approved held messages go through as if they had just arrived.
        for held in done.replay {
            let outcome = route_event(inner, &held).await;
            tracing::info!(channel = %held.channel, chat = %held.chat_id, ?outcome, "replayed a held message");
        }
        if let Some(ack) = ack {
            let _ = ack.send(done.outcome);
        }
        return;
    }
    // The owner's kill switch (`/stop`, `/pause`, `/resume`), answered by the host.
    if let Some(outcome) = super::kill_switch::intercept(inner, &event).await {
        if let Some(ack) = ack {
            let _ = ack.send(outcome);
        }
        return;
    }
    // The owner's `/skills …` and `/skill-graph` in the main chat, answered by the host.
    if let Some(outcome) = crate::skills::chat::intercept(
        &inner.store,
        &inner.paths,
        &inner.tasks,
        inner.pool.runtime(),
        &event,
    )
    .await
    {
        inner.delivery_wake.notify_one();
        if let Some(ack) = ack {
            let _ = ack.send(outcome);
        }
        return;
    }
    // A skill's `/command` becomes its prompt for the groups that enabled the skill.
    crate::skills::chat::expand_command(&inner.store, &inner.paths, &mut event).await;
    let outcome = route_event(inner, &event).await;
    tracing::debug!(channel = %event.channel, chat = %event.chat_id, ?outcome, "routed");
    if let Some(ack) = ack {
        let _ = ack.send(outcome);
    }
}

/// Routes one message (stored, held or ignored), starts the sessions it wakes and tells the
/// owner what the owner must decide.
pub(super) async fn route_event(inner: &Arc<Inner>, event: &InboundEvent) -> RouteOutcome {
    let groups_dir = inner.paths.groups_dir();
    let ctx = crate::router::RouteContext {
        store: &inner.store,
        groups_dir: &groups_dir,
        unknown_chats: inner.config.channels.unknown_chats(&event.channel),
    };
    match crate::router::route(&ctx, event).await {
        Ok(routed) => {
            for session in &routed.sessions {
                kick(inner, session.clone()).await;
            }
            for (key, text) in &routed.owner_notices {
                super::owner::tell_owner(inner, key.clone(), text.clone()).await;
            }
            if routed.queued_outbound {
                inner.delivery_wake.notify_one();
            }
            routed.route_outcome()
        }
        Err(e) => {
            tracing::error!(error = %e, channel = %event.channel, "storing an inbound message failed");
            RouteOutcome::Failed(format!("could not store the message: {e}"))
        }
    }
}

/// Starts the agents of the groups in `agents.warm` (their known sessions; for the main
/// group, the owner's main chat's session) so first replies skip the sandbox start.
pub(super) async fn prewarm(inner: Arc<Inner>) {
    if super::kill_switch::is_paused(&inner) {
        tracing::info!("paused by the owner: no agent is kept warm until /resume");
        return;
    }
    for folder in inner.config.agents.warm.clone() {
        let group = match inner.store.group_by_folder(folder.as_str()).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                tracing::warn!(%folder, "agents.warm names a group that does not exist");
                continue;
            }
            Err(e) => {
                tracing::warn!(%folder, error = %e, "reading a warm group failed");
                continue;
            }
        };
        let mut sessions = inner
            .store
            .sessions_for_group(group.id.as_str())
            .await
            .unwrap_or_default();
        if sessions.is_empty()
            && group.is_main
            && let Ok(Some(chat)) = owner_chat(&inner.store).await
            && let Ok(session) = inner
                .store
                .resolve_session(
                    group.id.clone(),
                    chat.id,
                    None,
                    SessionMode::Shared,
                    now_ms(),
                )
                .await
        {
            sessions.push(session);
        }
        for session in sessions {
            if let Err(e) = inner.pool.prewarm(&session, &group).await {
                tracing::warn!(%folder, error = %e, "could not keep an agent warm");
            }
        }
    }
}

/// Fires scheduled tasks when due; sleeps until the next fire time (or a change) in between.
pub(super) async fn task_loop(inner: Arc<Inner>) {
    let mut paused = inner.paused.subscribe();
    loop {
        // Paused by the owner: nothing fires until `/resume`; what fell due meanwhile fires
        // then, once, as after downtime.
        let resumed = paused.wait_for(|p| !*p).await.is_ok();
        if !resumed {
            return;
        }
        let mut last_pass = inner.tasks.clock().now();
        match inner.tasks.fire_due().await {
            Ok(fired) => {
                last_pass = fired.at;
                if fired.handled > 0 {
                    // Late and skipped runs queue a notice for their chat.
                    inner.delivery_wake.notify_one();
                }
                for s in fired.sessions {
                    kick(&inner, s).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "firing scheduled tasks failed"),
        }
        inner.tasks.wait(last_pass).await;
    }
}

/// Sleeps until the next retry is due (no polling), then wakes those sessions.
pub(super) async fn scheduler_loop(inner: Arc<Inner>) {
    let mut paused = inner.paused.subscribe();
    loop {
        // Paused by the owner: messages wait in the store until `/resume`.
        let resumed = paused.wait_for(|p| !*p).await.is_ok();
        if !resumed {
            return;
        }
        let now = now_ms();
        match inner.store.sessions_with_due_work(now).await {
            Ok(sessions) => {
                for s in sessions {
                    kick(&inner, s).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "finding due work failed"),
        }
        let next = inner.store.next_due_time().await.ok().flatten();
        let notified = inner.scheduler_wake.notified();
        match next {
            Some(at) if at > now_ms() => {
                let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = notified => {}
                }
            }
            Some(_) => {
                // Due now but claimed by a running worker: wait for news.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Hands channel supervisors' alerts to [`alert_loop`].
pub(super) struct OwnerAlerts(pub mpsc::UnboundedSender<String>);

impl nanoclaw_channel::Alerts for OwnerAlerts {
    fn down_too_long(&self, channel: &str, health: &nanoclaw_channel::Health) {
        let minutes = (now_ms() - health.since).max(0) / 60_000;
        let why = health.last_error.as_deref().unwrap_or("no error recorded");
        let _ = self.0.send(format!(
            "The {channel} channel has been {} for {minutes} min: {why}. It keeps retrying on its own; \
             `nanoclaw channel status` shows more, `nanoclaw channel restart {channel}` retries now.",
            health.state.as_str()
        ));
    }

    fn recovered(&self, channel: &str, _health: &nanoclaw_channel::Health) {
        let _ = self
            .0
            .send(format!("The {channel} channel is connected again."));
    }
}

/// Tells the owner's main chat what the channel supervisors report.
pub(super) async fn alert_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(text) = rx.recv().await {
        let key = format!("channel-alert-{}-{}", now_ms(), rand_suffix());
        super::owner::tell_owner(&inner, key, text).await;
    }
}

fn rand_suffix() -> u32 {
    use rand::RngExt;
    rand::rng().random()
}

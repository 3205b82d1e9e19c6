//! The owner's main chat: the terminal channel's one chat, wired to the main group, and any
//! direct chat on a platform the owner made a main chat (`nanoclaw chats main`). Everything
//! the host tells the owner (failed task runs, redacted secrets, storage trouble, approvals,
//! channels down) goes to the newest such platform chat, else the terminal; only the owner's
//! main chats may decide approvals.

use std::sync::Arc;

use nanoclaw_store::{Chat, NewOutbound, OutboundKind, Store, StoreError};

use super::Inner;
use crate::channel::OutgoingMessage;

/// The channel of the owner's main chat.
pub(crate) const OWNER_CHANNEL: &str = "terminal";
/// The owner's main chat's id on [`OWNER_CHANNEL`].
pub(crate) const OWNER_CHAT_ID: &str = crate::channel::terminal::TERMINAL_CHAT_ID;

/// The owner's main chat for the host's notices: the newest platform chat the owner made a
/// main chat, else the terminal's (once the host has created it, at its first start).
pub async fn owner_chat(store: &Store) -> Result<Option<Chat>, StoreError> {
    for id in store.owner_chat_ids().await? {
        if let Some(chat) = store.chat(id).await? {
            return Ok(Some(chat));
        }
    }
    store.chat_by_platform(OWNER_CHANNEL, OWNER_CHAT_ID).await
}

/// Whether a message came from the owner's terminal, or from the dashboard's web chat (only
/// the owner signs in there, with a link minted from the data directory).
pub fn is_owner_chat(channel: &str, chat_id: &str) -> bool {
    (channel == OWNER_CHANNEL && chat_id == OWNER_CHAT_ID) || channel == nanoclaw_dashboard::NAME
}

/// Whether a message came from one of the owner's main chats (the terminal, or a platform chat
/// made a main chat).
pub async fn is_owner(store: &Store, channel: &str, chat_id: &str) -> Result<bool, StoreError> {
    if is_owner_chat(channel, chat_id) {
        return Ok(true);
    }
    let Some(chat) = store.chat_by_platform(channel, chat_id).await? else {
        return Ok(false);
    };
    Ok(store.owner_chat_ids().await?.contains(&chat.id))
}

/// The chat's id when `event` came from one of the owner's main chats that is wired to the main
/// group: the only place owner commands (`/approve`, `/skills` …) are answered. Members of any
/// other chat wired to main are not the owner.
pub async fn owner_command_chat(
    store: &Store,
    event: &crate::channel::InboundEvent,
) -> Result<Option<i64>, StoreError> {
    if !is_owner(store, &event.channel, &event.chat_id).await? {
        return Ok(None);
    }
    let Some(chat) = store
        .chat_by_platform(event.channel.clone(), event.chat_id.clone())
        .await?
    else {
        return Ok(None);
    };
    let wirings = store.wirings_for_chat(chat.id).await?;
    Ok(wirings.iter().any(|(_, g)| g.is_main).then_some(chat.id))
}

/// Queues `text` in the owner's chat `chat_id` as the host's answer to the owner command
/// `event` (`/approve`, `/skills`, `/stop` …), keyed `<what>:<channel>:<chat>:<message id>` so a
/// command the channel delivers twice is answered once. The outcome to acknowledge the command
/// with, and the answer's row id when it was queued now.
pub async fn queue_command_answer(
    store: &Store,
    chat_id: i64,
    event: &crate::channel::InboundEvent,
    what: &str,
    text: String,
    kind: OutboundKind,
) -> (crate::channel::RouteOutcome, Option<i64>) {
    use crate::channel::RouteOutcome;
    let row = NewOutbound {
        session_id: None,
        chat_id,
        in_reply_to: None,
        idempotency_key: format!(
            "{what}:{}:{}:{}",
            event.channel, event.chat_id, event.platform_msg_id
        ),
        text,
        kind,
        files: Vec::new(),
    };
    match store.insert_outbound(row).await {
        Ok(Some(row)) => (RouteOutcome::Accepted, Some(row.id)),
        Ok(None) => (RouteOutcome::Duplicate, None),
        Err(e) => (
            RouteOutcome::Failed(format!("could not queue the answer: {e}")),
            None,
        ),
    }
}

/// A message for the owner's main chat that must get out even when the database does not take
/// writes: stored when possible (delivered like any other), else handed to the channel directly.
pub(super) async fn tell_owner(inner: &Arc<Inner>, key: String, text: String) {
    if let Ok(Some(chat)) = owner_chat(&inner.store).await {
        let stored = inner
            .store
            .insert_outbound(NewOutbound {
                session_id: None,
                chat_id: chat.id,
                in_reply_to: None,
                idempotency_key: key.clone(),
                text: text.clone(),
                kind: OutboundKind::Error,
                files: Vec::new(),
            })
            .await;
        if stored.is_ok() {
            inner.delivery_wake.notify_one();
            return;
        }
    }
    let (channel_name, chat_id) = match owner_chat(&inner.store).await {
        Ok(Some(chat)) => (chat.channel, chat.platform_id),
        _ => (OWNER_CHANNEL.to_owned(), OWNER_CHAT_ID.to_owned()),
    };
    let Some(channel) = inner.channels.get(&channel_name) else {
        tracing::error!(%text, "no channel to tell the owner");
        return;
    };
    let message = OutgoingMessage {
        outbound_id: 0,
        idempotency_key: key,
        chat_id,
        thread: None,
        text,
        kind: OutboundKind::Error.as_str().to_owned(),
        reply_to: None,
        answers: Vec::new(),
        files: Vec::new(),
    };
    if let Err(e) = channel.deliver(&message).await {
        tracing::error!(error = %e, text = %message.text, "could not tell the owner");
    }
}

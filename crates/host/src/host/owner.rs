//! The owner's main chat: the terminal channel's one chat, wired to the main group. Everything
//! the host tells the owner (failed task runs, redacted secrets, storage trouble, approvals)
//! goes there, and only the owner's own chat there may decide approvals.

use std::sync::Arc;

use nanoclaw_store::{Chat, NewOutbound, OutboundKind, Store, StoreError};

use super::Inner;
use crate::channel::OutgoingMessage;

/// The channel of the owner's main chat.
pub(crate) const OWNER_CHANNEL: &str = "terminal";
/// The owner's main chat's id on [`OWNER_CHANNEL`].
pub(crate) const OWNER_CHAT_ID: &str = crate::channel::terminal::TERMINAL_CHAT_ID;

/// The owner's main chat, once the host has created it (at its first start).
pub async fn owner_chat(store: &Store) -> Result<Option<Chat>, StoreError> {
    store.chat_by_platform(OWNER_CHANNEL, OWNER_CHAT_ID).await
}

/// Whether a message came from the owner's main chat.
pub fn is_owner_chat(channel: &str, chat_id: &str) -> bool {
    channel == OWNER_CHANNEL && chat_id == OWNER_CHAT_ID
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
            })
            .await;
        if stored.is_ok() {
            inner.delivery_wake.notify_one();
            return;
        }
    }
    let Some(channel) = inner.channels.get(OWNER_CHANNEL) else {
        tracing::error!(%text, "no channel to tell the owner");
        return;
    };
    let message = OutgoingMessage {
        outbound_id: 0,
        idempotency_key: key,
        chat_id: OWNER_CHAT_ID.to_owned(),
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

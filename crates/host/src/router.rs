//! Routing: which agent groups an inbound message wakes, and storing it durably before
//! anything else happens.

use nanoclaw_store::{NewInbound, Store, StoreError};

use crate::channel::{InboundEvent, RouteOutcome};

/// Whether `text` addresses the assistant by `trigger` (case-insensitive, as a whole word:
/// "@Andy," and "hey @andy" match, "@Andyman" does not).
pub fn has_trigger(text: &str, trigger: &str) -> bool {
    let trigger = trigger.trim();
    if trigger.is_empty() {
        return false;
    }
    let lower = text.to_lowercase();
    let needle = trigger.to_lowercase();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before_ok = lower[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_word(c))
            || !needle.chars().next().is_some_and(is_word);
        let after_ok = lower[end..].chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            return true;
        }
        from = end;
    }
    false
}

/// The result of routing one message.
#[derive(Debug)]
pub struct Routed {
    pub outcome: RouteOutcome,
    /// Sessions that got a new inbound row and need a worker.
    pub sessions: Vec<String>,
}

/// Stores `event` for every agent group wired to its chat whose trigger rule it passes.
pub async fn route(store: &Store, event: &InboundEvent) -> Result<Routed, StoreError> {
    let chat = store
        .ensure_chat(
            event.channel.clone(),
            event.chat_id.clone(),
            event.chat_name.clone(),
            event.is_group,
        )
        .await?;
    let wirings = store.wirings_for_chat(chat.id).await?;
    if wirings.is_empty() {
        return Ok(Routed {
            outcome: RouteOutcome::Ignored(format!(
                "chat {}:{} is not wired to any agent group",
                event.channel, event.chat_id
            )),
            sessions: Vec::new(),
        });
    }
    let mut sessions = Vec::new();
    let mut any_stored = false;
    let mut any_duplicate = false;
    for (wiring, group) in wirings {
        if wiring.requires_trigger && !has_trigger(&event.text, &group.trigger) {
            continue;
        }
        let session = store
            .resolve_session(
                group.id.clone(),
                chat.id,
                event.thread.clone(),
                wiring.session_mode,
                event.received_at,
            )
            .await?;
        let inserted = store
            .insert_inbound(NewInbound {
                session_id: session.id.clone(),
                chat_id: chat.id,
                platform_msg_id: event.platform_msg_id.clone(),
                sender: event.sender.clone(),
                sender_name: event.sender_name.clone(),
                text: event.text.clone(),
                thread: event.thread.clone(),
                received_at: event.received_at,
            })
            .await?;
        if inserted.duplicate {
            any_duplicate = true;
        } else {
            any_stored = true;
            sessions.push(session.id);
        }
    }
    let outcome = if any_stored {
        RouteOutcome::Accepted
    } else if any_duplicate {
        RouteOutcome::Duplicate
    } else {
        RouteOutcome::Ignored("the message does not contain the trigger".into())
    };
    Ok(Routed { outcome, sessions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_matches_whole_words_case_insensitively() {
        assert!(has_trigger("@Andy what's up", "@Andy"));
        assert!(has_trigger("hey @andy, look", "@Andy"));
        assert!(has_trigger("ping @ANDY", "@Andy"));
        assert!(!has_trigger("@Andyman is here", "@Andy"));
        assert!(!has_trigger("no mention here", "@Andy"));
        assert!(has_trigger("Andy: hi", "Andy"));
        assert!(!has_trigger("Sandy: hi", "Andy"));
    }
}

//! The owner's approval of grants that need it, in the main chat: the egress proxy's
//! [`ApprovalNotifier`] posts the question there, and `/approve N` / `/deny N` — honoured
//! only from a chat wired to the main group — answer it.

use std::sync::Arc;

use nanoclaw_store::{ApprovalState, NewOutbound, OutboundKind, Store, StoreError};
use tokio::sync::Notify;

use crate::channel::{InboundEvent, RouteOutcome};
use nanoclaw_egress::{ApprovalNotifier, ApprovalRequest};

/// Posts "group G wants to use secret S on H" to the owner's terminal chat, once per request.
pub struct ChatApprovalNotifier {
    store: Store,
    delivery_wake: Arc<Notify>,
}

impl ChatApprovalNotifier {
    pub fn new(store: Store, delivery_wake: Arc<Notify>) -> ChatApprovalNotifier {
        ChatApprovalNotifier {
            store,
            delivery_wake,
        }
    }
}

#[async_trait::async_trait]
impl ApprovalNotifier for ChatApprovalNotifier {
    async fn approval_requested(&self, r: ApprovalRequest) {
        tracing::warn!(grant = r.grant_id, group = %r.group, secret = %r.secret, host = %r.host, "a grant waits for the owner's approval");
        let chat = match crate::host::owner_chat(&self.store).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::error!(
                    grant = r.grant_id,
                    "no main chat to ask for approval in; use `nanoclaw vault approvals`"
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not find the main chat to ask for approval");
                return;
            }
        };
        // Keyed by the pending row's time too: a grant id reused after a revoke asks again.
        let requested_at = match self.store.vault_approval(r.grant_id).await {
            Ok(Some(a)) => a.requested_at,
            _ => 0,
        };
        let text = format!(
            "Group {} wants to use the secret {} on {} (grant #{}). Reply `/approve {}` or `/deny {}`.",
            r.group, r.secret, r.host, r.grant_id, r.grant_id, r.grant_id
        );
        let row = NewOutbound {
            session_id: None,
            chat_id: chat.id,
            in_reply_to: None,
            idempotency_key: format!("approval:{}:{requested_at}", r.grant_id),
            text,
            kind: OutboundKind::Message,
            files: Vec::new(),
        };
        match self.store.insert_outbound(row).await {
            Ok(_) => self.delivery_wake.notify_one(),
            Err(e) => tracing::error!(error = %e, "could not queue the approval request"),
        }
    }
}

/// What an `/approve` or `/deny` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// `/approve N`: vault grant N.
    Grant,
    /// `/approve chat N`: the unknown chat of held message N.
    Chat,
    /// `/approve sender N`: the unknown sender of held message N.
    Sender,
}

/// `/approve N` → `Some((true, Grant, Ok(N)))`, `/deny chat N` → `Some((false, Chat, …))`; a
/// malformed number is `Err` with what was given; anything else is not a command (`None`).
pub fn parse_command(text: &str) -> Option<(bool, Subject, Result<i64, String>)> {
    let mut words = text.split_whitespace().peekable();
    let approve = match words.next()? {
        "/approve" => true,
        "/deny" => false,
        _ => return None,
    };
    let subject = match words.peek().copied() {
        Some("chat") => Subject::Chat,
        Some("sender") => Subject::Sender,
        _ => Subject::Grant,
    };
    if subject != Subject::Grant {
        words.next();
    }
    let rest: Vec<&str> = words.collect();
    let n = match rest.as_slice() {
        [n] => n
            .trim_start_matches('#')
            .parse::<i64>()
            .map_err(|_| (*n).to_owned()),
        _ => Err(rest.join(" ")),
    };
    Some((approve, subject, n))
}

/// What an intercepted command did: its outcome, and held messages to route again (approved).
pub struct Intercepted {
    pub outcome: RouteOutcome,
    pub replay: Vec<InboundEvent>,
}

/// Handles `/approve …` and `/deny …` when `event` comes from the owner's main chat: decides,
/// queues a confirmation in that chat and returns the outcome. `None` for anything else —
/// including such a command from any other chat, which stays an ordinary message.
pub async fn intercept(store: &Store, event: &InboundEvent) -> Option<Intercepted> {
    let (approve, subject, n) = parse_command(&event.text)?;
    let chat_id = match crate::host::owner_command_chat(store, event).await {
        Ok(Some(chat_id)) => chat_id,
        Ok(None) => return None,
        Err(e) => {
            return Some(Intercepted {
                outcome: RouteOutcome::Failed(format!("could not check who may approve: {e}")),
                replay: Vec::new(),
            });
        }
    };
    let decided = match subject {
        Subject::Grant => decide(store, approve, n)
            .await
            .map(|text| (text, Vec::new())),
        Subject::Chat | Subject::Sender => {
            crate::unknown::decide(store, approve, subject == Subject::Chat, n).await
        }
    };
    let (reply, replay) = match decided {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "recording an approval failed");
            (format!("Could not record that: {e}"), Vec::new())
        }
    };
    let (outcome, _) = crate::host::queue_command_answer(
        store,
        chat_id,
        event,
        "approval-reply",
        reply,
        OutboundKind::Message,
    )
    .await;
    Some(Intercepted { outcome, replay })
}

async fn decide(
    store: &Store,
    approve: bool,
    n: Result<i64, String>,
) -> Result<String, StoreError> {
    let verb = if approve { "approve" } else { "deny" };
    let n = match n {
        Ok(n) => n,
        Err(given) => {
            return Ok(format!(
                "`/{verb}` takes a grant number, e.g. `/{verb} 3` (got {given:?}); see `nanoclaw vault approvals`."
            ));
        }
    };
    let Some(a) = store
        .vault_decide_approval(n, approve, crate::now_ms())
        .await?
    else {
        return Ok(format!(
            "There is no grant #{n}; see `nanoclaw vault approvals` or `nanoclaw vault list`."
        ));
    };
    tracing::info!(
        grant = n,
        state = a.state.as_str(),
        "grant approval decided in the main chat"
    );
    Ok(match a.state {
        ApprovalState::Approved => format!(
            "Approved grant #{n}: group {} may use the secret {} on {}.",
            a.group_folder, a.secret_name, a.host
        ),
        _ => format!(
            "Denied grant #{n}: group {} may not use the secret {} on {}.",
            a.group_folder, a.secret_name, a.host
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_strictly() {
        use Subject::*;
        assert_eq!(parse_command("/approve 3"), Some((true, Grant, Ok(3))));
        assert_eq!(parse_command("  /deny #12 "), Some((false, Grant, Ok(12))));
        assert_eq!(
            parse_command("/approve"),
            Some((true, Grant, Err(String::new())))
        );
        assert_eq!(
            parse_command("/approve x"),
            Some((true, Grant, Err("x".to_owned())))
        );
        assert_eq!(parse_command("/approve chat 7"), Some((true, Chat, Ok(7))));
        assert_eq!(
            parse_command("/deny sender #2"),
            Some((false, Sender, Ok(2)))
        );
        assert_eq!(
            parse_command("/approve chat"),
            Some((true, Chat, Err(String::new())))
        );
        assert_eq!(parse_command("please /approve 3"), None);
        assert_eq!(parse_command("/approved 3"), None);
    }
}

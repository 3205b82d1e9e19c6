//! Chats and senders nobody has wired yet: ignored, held for the owner's approval (asked
//! once per chat or sender in the main chat; the messages are replayed on approval), or
//! wired by a one-time pairing code (`nanoclaw chats pair`).

use nanoclaw_store::{
    Chat, Group, Held, NewHeld, NewOutbound, OutboundKind, Pairing, SessionMode, Store, StoreError,
    TriggerRule, WiringOptions,
};

use crate::channel::InboundEvent;
use crate::router::{RouteContext, Routed, UnknownChats};

/// Routes a message from a chat no group is wired to.
pub async fn unknown_chat(
    ctx: &RouteContext<'_>,
    chat: &Chat,
    event: &InboundEvent,
) -> Result<Routed, StoreError> {
    let store = ctx.store;
    if store.is_chat_blocked(chat.id).await? {
        return Ok(ignored("the owner turned this chat away"));
    }
    let now = crate::now_ms();
    if store.has_pairing_code(event.channel.clone(), now).await?
        && let Some(code) = pairing_code_in(&event.text)
    {
        match store
            .use_pairing_code(event.channel.clone(), code, chat.id, event.is_group, now)
            .await?
        {
            Pairing::Paired { group_id } => return paired(ctx, chat, event, &group_id).await,
            Pairing::NoCode => {
                tracing::warn!(channel = %event.channel, chat = %event.chat_id, "a wrong pairing code was sent");
            }
        }
    }
    match ctx.unknown_chats {
        UnknownChats::Ignore => Ok(ignored(&format!(
            "chat {}:{} is not wired to any agent group",
            event.channel, event.chat_id
        ))),
        UnknownChats::Pair => Ok(ignored(
            "this chat is not paired; the owner can run `nanoclaw chats pair` and send the code here",
        )),
        UnknownChats::Ask => {
            // In a group chat only what addresses the bot is held: the owner is not asked
            // about every message of a busy room the bot was added to.
            if event.is_group && !addressed_to_main(store, event).await? {
                return Ok(ignored(
                    "an unwired group chat's message that does not address the bot",
                ));
            }
            let held = store
                .hold_message(new_held(chat, None, "unknown_chat", event))
                .await?;
            let mut routed = Routed::outcome_held("the owner was asked to allow this chat");
            if held.first && !held.duplicate {
                routed.owner_notices.push((
                    format!("held:{}", held.id),
                    format!(
                        "New {} on {}: {:?}. {} wrote: {:?}\nReply `/approve chat {}` to let it talk to the main group, or `/deny chat {}` to ignore it from now on.",
                        if chat.is_group { "group chat" } else { "direct chat" },
                        chat.channel,
                        chat.name,
                        who(event),
                        preview(&event.text),
                        held.id,
                        held.id
                    ),
                ));
            }
            Ok(duplicate_or(routed, held))
        }
    }
}

/// Holds a message whose sender is not on `group`'s allowlist for this chat.
pub async fn hold_sender(
    ctx: &RouteContext<'_>,
    chat: &Chat,
    group: &Group,
    event: &InboundEvent,
    routed: &mut Routed,
) -> Result<(), StoreError> {
    let held = ctx
        .store
        .hold_message(new_held(
            chat,
            Some(group.id.clone()),
            "unknown_sender",
            event,
        ))
        .await?;
    if held.first && !held.duplicate {
        routed.owner_notices.push((
            format!("held:{}", held.id),
            format!(
                "{} is not on the allowlist of {:?} ({}) for group {}. They wrote: {:?}\nReply `/approve sender {}` to allow them, or `/deny sender {}`.",
                who(event),
                chat.name,
                chat.channel,
                group.folder,
                preview(&event.text),
                held.id,
                held.id
            ),
        ));
    }
    Ok(())
}

/// `/approve chat N`, `/deny chat N` (`chat`), `/approve sender N`, `/deny sender N`: decides
/// held message N and every message waiting with it. Returns the owner's confirmation and,
/// when approved, the messages to route again.
pub async fn decide(
    store: &Store,
    approve: bool,
    chat: bool,
    n: Result<i64, String>,
) -> Result<(String, Vec<InboundEvent>), StoreError> {
    let (verb, what) = (
        if approve { "approve" } else { "deny" },
        if chat { "chat" } else { "sender" },
    );
    let n = match n {
        Ok(n) => n,
        Err(given) => {
            return Ok((
                format!(
                    "`/{verb} {what}` takes the number from the request, e.g. `/{verb} {what} 3` (got {given:?})."
                ),
                Vec::new(),
            ));
        }
    };
    let reason = if chat {
        "unknown_chat"
    } else {
        "unknown_sender"
    };
    match store.held_message(n).await? {
        Some(h) if h.reason == reason && h.state == "waiting" => {}
        Some(h) if h.reason == reason => {
            return Ok((
                format!("Request {n} was already decided ({}).", h.state),
                Vec::new(),
            ));
        }
        _ => return Ok((format!("There is no {what} request {n}."), Vec::new())),
    }
    let rows = store.decide_held(n, approve).await?;
    let Some(first) = rows.first() else {
        return Ok((format!("There is no {what} request {n}."), Vec::new()));
    };
    let Some(chat_row) = store.chat(first.chat_id).await? else {
        return Ok((
            format!("The chat of request {n} no longer exists."),
            Vec::new(),
        ));
    };
    if !approve {
        let text = if chat {
            format!(
                "Ignoring {:?} on {} from now on.",
                chat_row.name, chat_row.channel
            )
        } else {
            format!(
                "{} stays off the allowlist of {:?}.",
                first.sender, chat_row.name
            )
        };
        return Ok((text, Vec::new()));
    }
    let text = if chat {
        let main = store.main_group().await?.ok_or(StoreError::NotFound {
            what: "group",
            id: "main".into(),
        })?;
        let rule = if chat_row.is_group {
            TriggerRule::Mention
        } else {
            TriggerRule::Always
        };
        let mut options = WiringOptions::new(true, SessionMode::Shared);
        options.trigger_rule = rule;
        store.wire(chat_row.id, main.id.clone(), options).await?;
        format!(
            "{:?} on {} now talks to the main group ({}); {} held message(s) go through now. `nanoclaw chats wire` changes its rules.",
            chat_row.name,
            chat_row.channel,
            rule.as_str(),
            rows.len()
        )
    } else {
        let group_id = first.group_id.clone().unwrap_or_default();
        store
            .allow_sender(chat_row.id, group_id, first.sender.clone())
            .await?;
        format!(
            "{} may now talk in {:?}; {} held message(s) go through now.",
            first.sender,
            chat_row.name,
            rows.len()
        )
    };
    let replay = rows
        .into_iter()
        .map(|h| InboundEvent {
            channel: chat_row.channel.clone(),
            chat_id: chat_row.platform_id.clone(),
            chat_name: chat_row.name.clone(),
            is_group: chat_row.is_group,
            thread: h.thread,
            platform_msg_id: h.platform_msg_id,
            sender: h.sender,
            sender_name: h.sender_name,
            text: h.text,
            received_at: h.received_at,
            mentions_me: h.mentions_me,
            ..InboundEvent::default()
        })
        .collect();
    Ok((text, replay))
}

/// The chat was just paired: confirm in it and tell the owner.
async fn paired(
    ctx: &RouteContext<'_>,
    chat: &Chat,
    event: &InboundEvent,
    group_id: &str,
) -> Result<Routed, StoreError> {
    let group = ctx.store.group(group_id.to_owned()).await?;
    let folder = group
        .map(|g| g.folder)
        .unwrap_or_else(|| group_id.to_owned());
    ctx.store
        .insert_outbound(NewOutbound {
            session_id: None,
            chat_id: chat.id,
            in_reply_to: None,
            idempotency_key: format!("paired:{}:{}", chat.id, event.platform_msg_id),
            text: format!("Paired: this chat now talks to the {folder} group."),
            kind: OutboundKind::Message,
            files: Vec::new(),
        })
        .await?;
    let mut routed = Routed::outcome_accepted();
    routed.queued_outbound = true;
    routed.owner_notices.push((
        format!("paired:{}", chat.id),
        format!(
            "{} paired {:?} on {} with the {folder} group (`nanoclaw chats list` shows it).",
            who(event),
            chat.name,
            chat.channel
        ),
    ));
    Ok(routed)
}

/// Whether a message addresses the bot: the platform says so, or the main group's trigger.
async fn addressed_to_main(store: &Store, event: &InboundEvent) -> Result<bool, StoreError> {
    if event.mentions_me {
        return Ok(true);
    }
    let trigger = store.main_group().await?.map(|g| g.trigger);
    Ok(trigger.is_some_and(|t| crate::router::has_trigger(&event.text, &t)))
}

/// A pairing code is six digits; in a group the bot's @mention may come with it.
fn pairing_code_in(text: &str) -> Option<String> {
    let words: Vec<&str> = text
        .split_whitespace()
        .filter(|w| !w.starts_with('@') && !w.starts_with("<@"))
        .collect();
    match words.as_slice() {
        [code] if code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()) => {
            Some((*code).to_owned())
        }
        _ => None,
    }
}

fn new_held(
    chat: &Chat,
    group_id: Option<String>,
    reason: &'static str,
    event: &InboundEvent,
) -> NewHeld {
    NewHeld {
        chat_id: chat.id,
        group_id,
        reason,
        platform_msg_id: event.platform_msg_id.clone(),
        sender: event.sender.clone(),
        sender_name: event.sender_name.clone(),
        text: event.text.clone(),
        thread: event.thread.clone(),
        mentions_me: event.mentions_me,
        received_at: event.received_at,
    }
}

fn duplicate_or(routed: Routed, held: Held) -> Routed {
    if held.duplicate {
        Routed::outcome_duplicate()
    } else {
        routed
    }
}

fn ignored(why: &str) -> Routed {
    Routed::outcome_ignored(why)
}

fn who(event: &InboundEvent) -> String {
    match &event.sender_name {
        Some(name) => format!("{name} ({})", event.sender),
        None => event.sender.clone(),
    }
}

/// The start of an untrusted message, for the owner's notice.
fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_codes_are_six_digits_with_an_optional_mention() {
        assert_eq!(pairing_code_in("123456").as_deref(), Some("123456"));
        assert_eq!(
            pairing_code_in("@andy_bot 654321").as_deref(),
            Some("654321")
        );
        assert_eq!(
            pairing_code_in("<@U0BOT> 654321").as_deref(),
            Some("654321")
        );
        assert_eq!(pairing_code_in("my code is 123456"), None);
        assert_eq!(pairing_code_in("12345"), None);
        assert_eq!(pairing_code_in("12345a"), None);
    }
}

//! Routing: which agent groups an inbound message wakes, and storing it durably before
//! anything else happens.

use std::collections::HashMap;
use std::path::Path;

use nanoclaw_store::{Group, NewInbound, Store, StoreError, TriggerRule, UnknownSenders, Wiring};

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

/// What a channel's unknown chats get: `[channels.<name>] unknown_chats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownChats {
    /// Dropped (logged).
    Ignore,
    /// Held; the owner is asked once per chat in the main chat and the messages are replayed
    /// on approval.
    #[default]
    Ask,
    /// Only a chat that sends a live pairing code (`nanoclaw chats pair`) is wired.
    Pair,
}

impl UnknownChats {
    pub fn parse(text: &str) -> Option<UnknownChats> {
        match text {
            "ignore" => Some(UnknownChats::Ignore),
            "ask" => Some(UnknownChats::Ask),
            "pair" => Some(UnknownChats::Pair),
            _ => None,
        }
    }
}

/// What routing needs besides the message.
pub struct RouteContext<'a> {
    pub store: &'a Store,
    /// Where groups' folders live (inbound files go to `<folder>/inbox/`).
    pub groups_dir: &'a Path,
    /// The message's channel's policy for unknown chats.
    pub unknown_chats: UnknownChats,
}

/// The result of routing one message.
#[derive(Debug, Default)]
pub struct Routed {
    pub outcome: Option<RouteOutcome>,
    /// Sessions that got a new inbound row and need a worker.
    pub sessions: Vec<String>,
    /// What to tell the owner in the main chat: (idempotency key, text).
    pub owner_notices: Vec<(String, String)>,
    /// Outbound rows were queued (a pairing confirmation): delivery should look.
    pub queued_outbound: bool,
}

impl Routed {
    fn outcome(outcome: RouteOutcome) -> Routed {
        Routed {
            outcome: Some(outcome),
            ..Routed::default()
        }
    }

    pub fn outcome_accepted() -> Routed {
        Routed::outcome(RouteOutcome::Accepted)
    }

    pub fn outcome_duplicate() -> Routed {
        Routed::outcome(RouteOutcome::Duplicate)
    }

    pub fn outcome_ignored(why: &str) -> Routed {
        Routed::outcome(RouteOutcome::Ignored(why.to_owned()))
    }

    pub fn outcome_held(why: &str) -> Routed {
        Routed::outcome(RouteOutcome::Held(why.to_owned()))
    }

    /// The outcome (never empty once routing returned).
    pub fn route_outcome(&self) -> RouteOutcome {
        self.outcome
            .clone()
            .unwrap_or_else(|| RouteOutcome::Ignored("nothing to do".into()))
    }
}

/// Stores `event` for every agent group wired to its chat whose rules it passes; holds it
/// for the owner when its chat or sender is unknown and the policy says ask.
pub async fn route(ctx: &RouteContext<'_>, event: &InboundEvent) -> Result<Routed, StoreError> {
    if event.from_bot {
        // Two assistants answering each other would never stop.
        return Ok(Routed::outcome(RouteOutcome::Ignored(
            "messages from bots are not answered".into(),
        )));
    }
    let store = ctx.store;
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
        return crate::unknown::unknown_chat(ctx, &chat, event).await;
    }
    let mut routed = Routed::default();
    let mut any_stored = false;
    let mut any_duplicate = false;
    let mut held = false;
    for (wiring, group) in wirings {
        if !wiring.allows_sender(&event.sender) {
            if wiring.unknown_senders == UnknownSenders::Ask {
                crate::unknown::hold_sender(ctx, &chat, &group, event, &mut routed).await?;
                held = true;
            }
            continue;
        }
        if !triggered(&wiring, &group, event) {
            continue;
        }
        let text = with_attachments(ctx.groups_dir, &group, event).await;
        let (session, inserted) = store
            .insert_inbound_for_group(
                group.id.clone(),
                wiring.session_mode,
                NewInbound {
                    session_id: String::new(),
                    chat_id: chat.id,
                    platform_msg_id: event.platform_msg_id.clone(),
                    sender: event.sender.clone(),
                    sender_name: event.sender_name.clone(),
                    text,
                    thread: event.thread.clone(),
                    received_at: event.received_at,
                },
            )
            .await?;
        if inserted.duplicate {
            any_duplicate = true;
        } else {
            any_stored = true;
            routed.sessions.push(session.id);
        }
    }
    routed.outcome = Some(if any_stored {
        RouteOutcome::Accepted
    } else if any_duplicate {
        RouteOutcome::Duplicate
    } else if held {
        RouteOutcome::Held("the sender is not on the chat's allowlist; the owner was asked".into())
    } else {
        RouteOutcome::Ignored(
            "the message does not meet the chat's trigger rule or allowlist".into(),
        )
    });
    Ok(routed)
}

/// Whether `event` wakes `group` under `wiring`'s trigger rule.
fn triggered(wiring: &Wiring, group: &Group, event: &InboundEvent) -> bool {
    match wiring.trigger_rule {
        TriggerRule::Always => true,
        TriggerRule::Word => has_trigger(&event.text, &group.trigger),
        TriggerRule::Mention => event.mentions_me || has_trigger(&event.text, &group.trigger),
        TriggerRule::Regex => wiring
            .trigger_pattern
            .as_deref()
            .is_some_and(|p| regex_matches(p, &event.text)),
    }
}

/// Matches `pattern` (validated when the wiring was made) against `text`; compiled patterns
/// are kept, so a busy chat does not recompile per message.
fn regex_matches(pattern: &str, text: &str) -> bool {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Option<regex::Regex>>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() > 1024 {
        cache.clear();
    }
    let compiled = cache.entry(pattern.to_owned()).or_insert_with(|| {
        match compile_trigger_regex(pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                tracing::warn!(pattern, error = %e, "a wiring's trigger pattern does not compile");
                None
            }
        }
    });
    compiled.as_ref().is_some_and(|re| re.is_match(text))
}

/// Compiles a wiring's trigger pattern, with a size limit so a hostile pattern cannot eat
/// the host's memory.
pub fn compile_trigger_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
}

/// The message's text with its files saved to the group's inbox folder and listed, so the
/// agent finds them (`/workspace/group/inbox/…` in its sandbox). The writes go through
/// tokio's blocking pool: the router loop must not stall on a large file.
async fn with_attachments(groups_dir: &Path, group: &Group, event: &InboundEvent) -> String {
    if event.attachments.is_empty() {
        return event.text.clone();
    }
    let group_dir = groups_dir.join(&group.folder);
    let mut text = event.text.clone();
    for (i, file) in event.attachments.iter().enumerate() {
        // The message id only keeps names apart; the file's own name loses any path.
        let id: String = event
            .platform_msg_id
            .chars()
            .take(40)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{id}-{i}-{}", safe_file_name(&file.file_name, 100));
        let shown = format!(
            "{}/inbox/{name}",
            nanoclaw_protocol::contract::paths::WORKSPACE
        );
        // Never through a link the agent planted (see `inbox`).
        let (dir, file_name, data) = (group_dir.clone(), name.clone(), file.data.clone());
        let saved =
            tokio::task::spawn_blocking(move || crate::inbox::save(&dir, &file_name, &data))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match saved {
            Ok(()) => text.push_str(&format!(
                "\n[file: {shown} ({}, {} bytes)]",
                file.mime_type.as_deref().unwrap_or("unknown type"),
                file.data.len()
            )),
            Err(e) => {
                tracing::error!(group = %group.folder, file = %name, error = %e, "cannot save an inbound file");
                text.push_str(&format!("\n[file {name} could not be saved]"));
            }
        }
    }
    text
}

/// `name` reduced to letters, digits, `.`, `_` and `-` (no path, no leading dot), at most
/// `max` bytes: platform file names are untrusted.
pub fn safe_file_name(name: &str, max: usize) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let mut out: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    out.truncate(max);
    if out.is_empty() { "file".into() } else { out }
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

    #[test]
    fn file_names_from_platforms_cannot_leave_the_inbox() {
        assert_eq!(safe_file_name("../../etc/passwd", 100), "passwd");
        assert_eq!(safe_file_name("..\\..\\boot.ini", 100), "boot.ini");
        assert_eq!(safe_file_name(".bashrc", 100), "bashrc");
        assert_eq!(safe_file_name("photo 1 (2).jpg", 100), "photo_1__2_.jpg");
        assert_eq!(safe_file_name("", 100), "file");
        assert_eq!(safe_file_name(&"a".repeat(300), 100).len(), 100);
    }

    #[test]
    fn a_huge_trigger_pattern_is_refused() {
        assert!(compile_trigger_regex("(?i)^hey bot").is_ok());
        assert!(compile_trigger_regex("(a{1000}){1000}").is_err());
    }
}

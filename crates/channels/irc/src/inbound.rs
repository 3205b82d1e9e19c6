//! What the host gets from a PRIVMSG.
//!
//! A message in a channel is a group chat (chat id: the channel's name, case-folded, e.g.
//! `#ops`); a message to our nick (a query) is a direct message (chat id: the sender's nick,
//! case-folded). IRC has no @mentions: a channel message addresses the bot when our current
//! nick appears in it as a word (`andy: hi`, `andy, hi`, `hi andy`); a leading `andy:` is
//! taken off the text, as platforms keep an @mention out of it. CTCP ACTION (`/me`)
//! arrives as text; other CTCP requests (VERSION, PING…) are ignored, as are NOTICEs
//! (RFC 2812: a NOTICE must never be answered automatically), our own messages and the
//! nicks in `ignore_nicks` (other bots: two bots answering each other would never stop).

use nanoclaw_channel::InboundEvent;
use sha2::{Digest, Sha256};

use crate::NAME;
use crate::proto::{Message, fold, is_channel, strip_formatting};

/// Who we are right now and whom we do not listen to.
pub struct Context<'a> {
    /// Our current nick (it may differ from the configured one after a collision).
    pub nick: &'a str,
    /// Case-folded nicks whose messages are dropped.
    pub ignore: &'a [String],
}

/// The event for a PRIVMSG line; `None` for what the host does not get.
pub fn event_for(message: &Message, ctx: &Context<'_>, received_at: i64) -> Option<InboundEvent> {
    if message.command != "PRIVMSG" || message.params.len() < 2 {
        return None;
    }
    let sender = message.nick()?;
    let folded_sender = fold(sender);
    if folded_sender == fold(ctx.nick) || ctx.ignore.contains(&folded_sender) {
        return None;
    }
    let target = message.param(0);
    let raw = message.param(1);
    let text = match ctcp(raw) {
        Some(("ACTION", body)) => format!("* {sender} {body}"),
        Some((command, _)) => {
            tracing::debug!(%sender, command, "irc: CTCP request ignored");
            return None;
        }
        None => raw.to_owned(),
    };
    let text = strip_formatting(&text);
    let mentioned = mentions(&text, ctx.nick);
    // `andy: hi` is IRC's way to address someone, as an @mention elsewhere: the agent gets
    // "hi" (and a pairing code sent as `andy: 123456` is recognised).
    let text = without_address(&text, ctx.nick).to_owned();
    if text.trim().is_empty() {
        return None;
    }
    // STATUSMSG targets (`@#ops`: to the channel's operators) are still the channel.
    let channel = target.trim_start_matches(['@', '+', '%']);
    let is_group = is_channel(channel);
    let chat_id = if is_group {
        fold(channel)
    } else {
        folded_sender.clone()
    };
    let platform_msg_id = match message.tag("msgid") {
        Some(id) if !id.is_empty() => format!("msgid:{id}"),
        _ => hashed_id(
            message.tag("time"),
            received_at,
            &folded_sender,
            target,
            raw,
        ),
    };
    Some(InboundEvent {
        channel: NAME.to_owned(),
        chat_name: if is_group {
            channel.to_owned()
        } else {
            sender.to_owned()
        },
        chat_id,
        is_group,
        thread: None,
        platform_msg_id,
        sender: folded_sender,
        sender_name: Some(sender.to_owned()),
        mentions_me: !is_group || mentioned,
        text,
        received_at,
        from_bot: false,
        attachments: Vec::new(),
        ack: None,
    })
}

/// IRC gives messages no id unless the server sends IRCv3 `msgid`: a hash of when it was
/// sent (the server's `time` tag, else when we read it), who, where and what. Two identical
/// lines in the same millisecond are one message; a message can never come twice anyway
/// (IRC does not redeliver).
fn hashed_id(
    time: Option<&str>,
    received_at: i64,
    sender: &str,
    target: &str,
    text: &str,
) -> String {
    let mut hash = Sha256::new();
    match time {
        Some(t) => hash.update(t.as_bytes()),
        None => hash.update(received_at.to_string().as_bytes()),
    }
    for part in [sender, target, text] {
        hash.update([0u8]);
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    format!("h:{}", hex::encode(&digest[..16]))
}

/// `text` without a leading `nick:` or `nick,` addressed to us.
fn without_address<'a>(text: &'a str, nick: &str) -> &'a str {
    let trimmed = text.trim_start();
    let Some(head) = trimmed.get(..nick.len()) else {
        return text;
    };
    if fold(head) != fold(nick) {
        return text;
    }
    let rest = &trimmed[nick.len()..];
    match rest.strip_prefix([':', ',']) {
        Some(after) if after.is_empty() || after.starts_with(' ') => after.trim_start(),
        _ => text,
    }
}

/// `(COMMAND, body)` of a CTCP message (`\x01ACTION waves\x01`).
fn ctcp(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('\x01')?;
    let inner = inner.strip_suffix('\x01').unwrap_or(inner);
    Some(match inner.split_once(' ') {
        Some((command, body)) => (command, body),
        None => (inner, ""),
    })
}

fn is_nick_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "[]\\`_^{|}-".contains(c)
}

/// Whether `nick` appears in `text` as a word (not inside a longer nick: `andy` is not
/// mentioned by `andyb`).
pub fn mentions(text: &str, nick: &str) -> bool {
    let nick = fold(nick);
    if nick.is_empty() {
        return false;
    }
    let text = fold(text);
    let mut from = 0;
    while let Some(pos) = text[from..].find(&nick) {
        let start = from + pos;
        let end = start + nick.len();
        let before_ok = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_nick_char(c));
        let after_ok = text[end..].chars().next().is_none_or(|c| !is_nick_char(c));
        if before_ok && after_ok {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proto::parse;

    fn event(line: &str) -> Option<InboundEvent> {
        let ignore = vec!["otherbot".to_owned()];
        let ctx = Context {
            nick: "Andy",
            ignore: &ignore,
        };
        event_for(&parse(line).unwrap(), &ctx, 1_000)
    }

    #[test]
    fn channel_messages_are_groups_and_queries_are_dms() {
        let e = event(":Bob!~b@h PRIVMSG #Ops :andy: hi").unwrap();
        assert_eq!(
            (e.chat_id.as_str(), e.is_group, e.mentions_me),
            ("#ops", true, true)
        );
        assert_eq!(e.sender_name.as_deref(), Some("Bob"));
        assert_eq!(e.text, "hi", "the address is taken off");
        let e = event(":Bob!~b@h PRIVMSG #ops :just chatting").unwrap();
        assert!(!e.mentions_me);
        let e = event(":Bob!~b@h PRIVMSG Andy :hello").unwrap();
        assert_eq!(
            (e.chat_id.as_str(), e.is_group, e.mentions_me),
            ("bob", false, true)
        );
    }

    #[test]
    fn only_a_leading_address_to_us_is_taken_off() {
        assert_eq!(without_address("Andy: 123456", "andy"), "123456");
        assert_eq!(without_address("andy, hi there", "Andy"), "hi there");
        assert_eq!(without_address("andy:hi", "andy"), "andy:hi");
        assert_eq!(without_address("hi andy: x", "andy"), "hi andy: x");
        assert_eq!(without_address("bob: hi", "andy"), "bob: hi");
        assert_eq!(without_address("é", "andy"), "é");
    }

    #[test]
    fn mentions_are_whole_words() {
        for yes in ["andy: hi", "andy, hi", "hi andy", "hi ANDY!", "(andy)"] {
            assert!(mentions(yes, "Andy"), "{yes}");
        }
        for no in ["andyb: hi", "candy", "hi _andy", ""] {
            assert!(!mentions(no, "Andy"), "{no}");
        }
    }

    #[test]
    fn own_ignored_ctcp_and_notice_lines_are_dropped() {
        assert!(event(":Andy!~a@h PRIVMSG #ops :echo").is_none());
        assert!(event(":OtherBot!~o@h PRIVMSG #ops :andy hi").is_none());
        assert!(event(":Bob!~b@h PRIVMSG Andy :\x01VERSION\x01").is_none());
        assert!(event(":Bob!~b@h NOTICE Andy :hi").is_none());
        let action = event(":Bob!~b@h PRIVMSG #ops :\x01ACTION waves at andy\x01").unwrap();
        assert_eq!(action.text, "* Bob waves at andy");
        assert!(action.mentions_me);
    }

    #[test]
    fn the_server_msgid_is_the_id_else_a_stable_hash() {
        let e = event("@msgid=xyz :Bob!~b@h PRIVMSG #ops :hi").unwrap();
        assert_eq!(e.platform_msg_id, "msgid:xyz");
        let a = event("@time=2024-01-01T00:00:00.000Z :Bob!~b@h PRIVMSG #ops :hi").unwrap();
        let b = event("@time=2024-01-01T00:00:00.000Z :bob!~b@h PRIVMSG #ops :hi").unwrap();
        let c = event("@time=2024-01-01T00:00:01.000Z :Bob!~b@h PRIVMSG #ops :hi").unwrap();
        assert_eq!(a.platform_msg_id, b.platform_msg_id);
        assert_ne!(a.platform_msg_id, c.platform_msg_id);
    }
}

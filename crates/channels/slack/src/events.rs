//! Events API payloads (`message`, `app_mention`) and what becomes of them
//! (<https://api.slack.com/events/message>, <https://api.slack.com/events/app_mention>).

use serde::Deserialize;

use crate::api::Identity;

/// The part of a Socket Mode envelope's `payload.event` the channel reads.
#[derive(Debug, Deserialize)]
pub struct MessageEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub subtype: Option<String>,
    pub channel: String,
    /// `im`, `mpim`, `channel` or `group` (absent on `app_mention`).
    #[serde(default)]
    pub channel_type: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    /// The display name a `bot_message` was posted under.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    pub ts: String,
    #[serde(default)]
    pub thread_ts: Option<String>,
    /// Who started the thread a reply is in: a reply in the bot's thread addresses it.
    #[serde(default)]
    pub parent_user_id: Option<String>,
    #[serde(default)]
    pub files: Vec<SlackFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SlackFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub mimetype: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub url_private_download: Option<String>,
}

/// Message subtypes that carry something a person (or another bot) said; the others
/// (`message_changed`, `message_deleted`, `channel_join`, …) are housekeeping.
const SPOKEN_SUBTYPES: &[&str] = &[
    "file_share",
    "thread_broadcast",
    "bot_message",
    "me_message",
];

/// What to do with an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a message for the host (housekeeping, our own echo, another event type).
    Skip(&'static str),
    Deliver(Classified),
}

/// The routing facts of a message the host gets.
#[derive(Debug, PartialEq, Eq)]
pub struct Classified {
    pub is_dm: bool,
    pub mentions_me: bool,
    pub from_bot: bool,
    pub sender: String,
    /// The thread the message is in (`thread_ts`, when it is not the thread's parent).
    pub thread: Option<String>,
}

/// The id the host deduplicates by: a `ts` is unique only within its channel.
pub fn message_id(channel: &str, ts: &str) -> String {
    format!("{channel}:{ts}")
}

impl MessageEvent {
    pub fn classify(&self, me: &Identity) -> Verdict {
        if self.kind != "message" && self.kind != "app_mention" {
            return Verdict::Skip("not a message event");
        }
        if let Some(sub) = self.subtype.as_deref()
            && !SPOKEN_SUBTYPES.contains(&sub)
        {
            return Verdict::Skip("housekeeping subtype");
        }
        let own_bot = self.bot_id.is_some() && self.bot_id == me.bot_id;
        if own_bot || self.user.as_deref() == Some(me.user_id.as_str()) {
            return Verdict::Skip("our own message");
        }
        let from_bot = self.bot_id.is_some() || self.subtype.as_deref() == Some("bot_message");
        // `app_mention` has no channel_type; DM channel ids start with D.
        let is_dm = match self.channel_type.as_deref() {
            Some(kind) => kind == "im",
            None => self.channel.starts_with('D'),
        };
        let mention = format!("<@{}>", me.user_id);
        let mentions_me = self.kind == "app_mention"
            || is_dm
            || self.parent_user_id.as_deref() == Some(me.user_id.as_str())
            || self.text.as_deref().is_some_and(|t| t.contains(&mention));
        let sender = self
            .user
            .clone()
            .or_else(|| self.bot_id.clone())
            .unwrap_or_default();
        let thread = self.thread_ts.clone().filter(|t| *t != self.ts);
        Verdict::Deliver(Classified {
            is_dm,
            mentions_me,
            from_bot,
            sender,
            thread,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity {
            user_id: "UBOT".into(),
            bot_id: Some("BME".into()),
            user: "andy".into(),
            team: "T".into(),
        }
    }

    fn event(json: serde_json::Value) -> MessageEvent {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_channel_message_mentions_the_bot_only_when_it_names_it() {
        let plain = event(
            serde_json::json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"hi all","ts":"1.1"}),
        );
        let named = event(
            serde_json::json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"<@UBOT> hi","ts":"1.2","thread_ts":"1.0"}),
        );
        let Verdict::Deliver(p) = plain.classify(&me()) else {
            panic!()
        };
        assert!(!p.mentions_me && !p.is_dm && p.thread.is_none());
        let Verdict::Deliver(n) = named.classify(&me()) else {
            panic!()
        };
        assert!(n.mentions_me);
        assert_eq!(n.thread.as_deref(), Some("1.0"));
        let in_our_thread = event(
            serde_json::json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"thanks","ts":"1.4","thread_ts":"1.3","parent_user_id":"UBOT"}),
        );
        let Verdict::Deliver(t) = in_our_thread.classify(&me()) else {
            panic!()
        };
        assert!(
            t.mentions_me,
            "a reply in the bot's thread addresses the bot"
        );
    }

    #[test]
    fn own_messages_and_edits_are_skipped_other_bots_are_marked() {
        let own = event(
            serde_json::json!({"type":"message","channel":"C1","bot_id":"BME","user":"UBOT","text":"x","ts":"1.1"}),
        );
        assert!(matches!(own.classify(&me()), Verdict::Skip(_)));
        let edit = event(
            serde_json::json!({"type":"message","subtype":"message_changed","channel":"C1","ts":"1.1"}),
        );
        assert!(matches!(edit.classify(&me()), Verdict::Skip(_)));
        let other = event(
            serde_json::json!({"type":"message","subtype":"bot_message","channel":"C1","bot_id":"BOTHER","text":"<@UBOT> hey","ts":"1.3"}),
        );
        let Verdict::Deliver(o) = other.classify(&me()) else {
            panic!()
        };
        assert!(o.from_bot && o.mentions_me);
        assert_eq!(o.sender, "BOTHER");
    }
}

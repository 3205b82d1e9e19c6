//! whatsapp-rust's decrypted messages to [`InboundEvent`]s, following NanoClaw's WhatsApp
//! (Baileys) channel:
//!
//! - The chat id is the chat's JID without a device (`15550001111@s.whatsapp.net`,
//!   `120363…@g.us`). A chat or sender that arrives as a LID (`…@lid`) is given as the
//!   phone-number JID when the message names it (`sender_alt` / `recipient_alt`), so one
//!   person is one chat whichever form WhatsApp used.
//! - The account posts as the owner, so the owner's own messages are dropped — except in
//!   the self-chat ("Message yourself"), where the owner talks to the assistant. There, what
//!   the assistant sent itself (its message ids, remembered, or text that starts with its
//!   `Name: ` prefix after a restart) is dropped.
//! - A message addresses the assistant (`mentions_me`) in a 1:1 chat, in the self-chat,
//!   when it @mentions the account's number or LID (the mention is rewritten to
//!   `@<assistant name>` so text triggers match, as NanoClaw does), or when it replies to a
//!   message the assistant sent.
//! - Text, extended text, and the captions of images, videos and documents are the text;
//!   images, documents, audio/voice notes, videos and stickers carry a file to download.
//!   Reactions, polls, protocol messages, status posts and channels (newsletters) are
//!   skipped.

use std::collections::VecDeque;
use std::sync::Mutex;

use nanoclaw_channel::InboundEvent;
use whatsapp_rust::wacore::download::{Downloadable, MediaType};
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::wacore::types::message::MessageInfo;
use whatsapp_rust::wacore_binary::{Jid, JidExt};
use whatsapp_rust::waproto::whatsapp as wa;

/// Who the linked account is, and how its assistant signs.
#[derive(Debug, Clone, Default)]
pub struct Me {
    /// The account's phone-number JID (`15550001111@s.whatsapp.net`).
    pub pn: Option<Jid>,
    /// The account's LID (`1000…@lid`).
    pub lid: Option<Jid>,
    /// The assistant's name, e.g. `Andy`.
    pub assistant_name: String,
    /// Whether outgoing text carries the `Name: ` prefix.
    pub prefixed: bool,
}

impl Me {
    /// Whether `jid` is the account (any device, phone-number or LID form).
    pub fn is_me(&self, jid: &Jid) -> bool {
        [&self.pn, &self.lid]
            .into_iter()
            .flatten()
            .any(|me| me.user == jid.user && me.server == jid.server)
    }

    fn is_me_str(&self, jid: &str) -> bool {
        jid.parse::<Jid>().is_ok_and(|j| self.is_me(&j))
    }

    /// What the assistant puts before what it says (empty when not prefixed).
    pub fn prefix(&self) -> String {
        if self.prefixed {
            format!("{}: ", self.assistant_name)
        } else {
            String::new()
        }
    }
}

/// The ids of the messages the assistant sent lately (NanoClaw keeps 256).
#[derive(Debug, Default)]
pub struct SentIds(Mutex<VecDeque<String>>);

const SENT_IDS_KEPT: usize = 256;

impl SentIds {
    pub fn remember(&self, id: &str) {
        let mut ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ids.len() >= SENT_IDS_KEPT {
            ids.pop_front();
        }
        ids.push_back(id.to_string());
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|i| i == id)
    }
}

/// Who wrote the messages received lately, by message id: a reply quotes its author.
#[derive(Debug, Default)]
pub struct Authors(Mutex<VecDeque<(String, String)>>);

impl Authors {
    pub fn remember(&self, id: &str, author: &str) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= SENT_IDS_KEPT {
            known.pop_front();
        }
        known.push_back((id.to_string(), author.to_string()));
    }

    pub fn author(&self, id: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|(known, _)| known == id)
            .map(|(_, author)| author.clone())
    }
}

/// The author to name in a quote of message `id` in `chat`: the one remembered, else in a
/// 1:1 chat (or the self-chat) the chat itself; in a group an unknown author means no quote.
pub fn quoted_author(authors: &Authors, chat: &Jid, id: &str) -> Option<String> {
    authors
        .author(id)
        .or_else(|| (!chat.is_group()).then(|| chat.to_non_ad_string()))
}

/// A file that came with a message, still to be downloaded.
#[derive(Debug, Clone)]
pub enum Media {
    Image(wa::message::ImageMessage),
    Video(wa::message::VideoMessage),
    Audio(wa::message::AudioMessage),
    Document(wa::message::DocumentMessage),
    Sticker(wa::message::StickerMessage),
}

impl Media {
    pub fn downloadable(&self) -> &dyn Downloadable {
        match self {
            Media::Image(m) => m,
            Media::Video(m) => m,
            Media::Audio(m) => m,
            Media::Document(m) => m,
            Media::Sticker(m) => m,
        }
    }

    pub fn mime_type(&self) -> Option<String> {
        match self {
            Media::Image(m) => m.mimetype.clone(),
            Media::Video(m) => m.mimetype.clone(),
            Media::Audio(m) => m.mimetype.clone(),
            Media::Document(m) => m.mimetype.clone(),
            Media::Sticker(m) => m.mimetype.clone(),
        }
    }

    /// The size WhatsApp declares, if any.
    pub fn declared_size(&self) -> Option<u64> {
        self.downloadable().file_length()
    }

    /// A document's own name; for the others one made from the kind, the message id and
    /// the MIME type.
    pub fn file_name(&self, message_id: &str) -> String {
        if let Media::Document(d) = self
            && let Some(name) = d.file_name.as_deref().filter(|n| !n.trim().is_empty())
        {
            return name.to_string();
        }
        let kind = match self.downloadable().app_info() {
            MediaType::Image => "image",
            MediaType::Video => "video",
            MediaType::Audio => "audio",
            MediaType::Sticker => "sticker",
            _ => "file",
        };
        let ext = self
            .mime_type()
            .as_deref()
            .and_then(|m| m.split(';').next())
            .and_then(|m| m.split('/').nth(1))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .unwrap_or("bin")
            .to_string();
        let id: String = message_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        format!("{kind}-{id}.{ext}")
    }
}

/// A message mapped for the host: the event, and the file still to fetch.
#[derive(Debug)]
pub struct Mapped {
    pub event: InboundEvent,
    pub media: Option<Media>,
}

/// What the caller knows beyond the message itself.
#[derive(Debug, Default)]
pub struct Context<'a> {
    /// The group's subject, when known.
    pub group_subject: Option<&'a str>,
    /// The chat's phone-number JID when the caller resolved a LID chat through the
    /// account's LID map.
    pub resolved_chat: Option<Jid>,
}

/// The phone-number form of `jid` when `alt` gives one, else `jid` (without a device).
fn prefer_pn(jid: &Jid, alt: Option<&Jid>) -> Jid {
    match alt {
        Some(alt) if jid.is_lid() && alt.is_pn() => alt.to_non_ad(),
        _ => jid.to_non_ad(),
    }
}

/// Maps one decrypted message; `None` for one the host must not see.
pub fn to_event(
    me: &Me,
    sent: &SentIds,
    message: &wa::Message,
    info: &MessageInfo,
    context: &Context<'_>,
) -> Option<Mapped> {
    let source = &info.source;
    let chat = &source.chat;
    if chat.is_status_broadcast() || chat.is_newsletter() || chat.is_broadcast_list() {
        return None;
    }
    let self_chat = !source.is_group && me.is_me(chat);
    let base = message.get_base_message();
    let (text, media) = content(base)?;
    if source.is_from_me {
        let ours = sent.contains(&info.id)
            || (me.prefixed && !me.prefix().is_empty() && text.starts_with(&me.prefix()));
        if !self_chat || ours {
            tracing::debug!(id = %info.id, "whatsapp: the account's own message; dropped");
            return None;
        }
    }
    let context_info = context_info(base);
    let mentioned = context_info.is_some_and(|c| c.mentioned_jid.iter().any(|j| me.is_me_str(j)));
    let replies_to_us = context_info.is_some_and(|c| {
        c.participant.as_deref().is_some_and(|p| me.is_me_str(p))
            && c.stanza_id.as_deref().is_some_and(|id| {
                sent.contains(id)
                    || quoted_text(c).is_some_and(|t| me.prefixed && t.starts_with(&me.prefix()))
            })
    });
    let chat_jid = match &context.resolved_chat {
        Some(resolved) => resolved.to_non_ad(),
        None if source.is_from_me => prefer_pn(chat, source.recipient_alt.as_ref()),
        None => prefer_pn(chat, source.sender_alt.as_ref()),
    };
    let sender = prefer_pn(&source.sender, source.sender_alt.as_ref());
    let sender_name = Some(info.push_name.trim())
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let chat_name = if source.is_group {
        context
            .group_subject
            .map(str::to_string)
            .unwrap_or_else(|| format!("WhatsApp group {}", chat_jid.user))
    } else if self_chat {
        "Message yourself".to_string()
    } else {
        sender_name
            .clone()
            .unwrap_or_else(|| format!("+{}", chat_jid.user))
    };
    Some(Mapped {
        event: InboundEvent {
            channel: crate::NAME.to_string(),
            chat_id: chat_jid.to_string(),
            chat_name,
            is_group: source.is_group,
            thread: None,
            platform_msg_id: info.id.to_string(),
            sender: sender.to_string(),
            sender_name,
            text: rewrite_mentions(me, &text),
            received_at: info.timestamp.timestamp_millis(),
            mentions_me: !source.is_group || self_chat || mentioned || replies_to_us,
            from_bot: false,
            attachments: Vec::new(),
            ack: None,
        },
        media,
    })
}

/// The text and the file of a message; `None` for kinds nanoclaw does not handle.
fn content(base: &wa::Message) -> Option<(String, Option<Media>)> {
    if let Some(text) = base.text_content() {
        return Some((text.to_string(), None));
    }
    let caption = base.get_caption().unwrap_or_default().to_string();
    let media = if let Some(m) = base.image_message.as_option() {
        Media::Image(m.clone())
    } else if let Some(m) = base.video_message.as_option() {
        Media::Video(m.clone())
    } else if let Some(m) = base.document_message.as_option() {
        Media::Document(m.clone())
    } else if let Some(m) = base.audio_message.as_option() {
        Media::Audio(m.clone())
    } else if let Some(m) = base.sticker_message.as_option() {
        Media::Sticker(m.clone())
    } else {
        return None;
    };
    Some((caption, Some(media)))
}

/// The context (quote, mentions) of a text or media message.
fn context_info(base: &wa::Message) -> Option<&wa::ContextInfo> {
    base.extended_text_message
        .as_option()
        .and_then(|m| m.context_info.as_option())
        .or_else(|| {
            base.image_message
                .as_option()
                .and_then(|m| m.context_info.as_option())
        })
        .or_else(|| {
            base.video_message
                .as_option()
                .and_then(|m| m.context_info.as_option())
        })
        .or_else(|| {
            base.document_message
                .as_option()
                .and_then(|m| m.context_info.as_option())
        })
        .or_else(|| {
            base.audio_message
                .as_option()
                .and_then(|m| m.context_info.as_option())
        })
}

fn quoted_text(context: &wa::ContextInfo) -> Option<&str> {
    context
        .quoted_message
        .as_option()
        .and_then(|q| q.text_content().or_else(|| q.get_caption()))
}

/// `@15550001111` / `@1000…` (the account) becomes `@<assistant name>`.
fn rewrite_mentions(me: &Me, text: &str) -> String {
    let mut out = text.to_string();
    for jid in [&me.pn, &me.lid].into_iter().flatten() {
        out = out.replace(
            &format!("@{}", jid.user),
            &format!("@{}", me.assistant_name),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::wacore::types::message::MessageSource;
    use whatsapp_rust::waproto::buffa::MessageField;

    const ME_PN: &str = "15550001111@s.whatsapp.net";
    const ME_LID: &str = "100000012345678@lid";
    const FRIEND: &str = "16505551234@s.whatsapp.net";
    const GROUP: &str = "120363012345678901@g.us";

    fn me() -> Me {
        Me {
            pn: Some(ME_PN.parse().unwrap()),
            lid: Some(ME_LID.parse().unwrap()),
            assistant_name: "Andy".into(),
            prefixed: true,
        }
    }

    fn info(chat: &str, sender: &str, from_me: bool, id: &str) -> MessageInfo {
        let chat: Jid = chat.parse().unwrap();
        MessageInfo {
            source: MessageSource {
                is_group: chat.is_group(),
                chat,
                sender: sender.parse().unwrap(),
                is_from_me: from_me,
                ..Default::default()
            },
            id: id.into(),
            push_name: "Sheena".into(),
            timestamp: whatsapp_rust::wacore::chrono::DateTime::from_timestamp(1_739_321_024, 0)
                .unwrap(),
            ..Default::default()
        }
    }

    fn text(body: &str) -> wa::Message {
        wa::Message {
            conversation: Some(body.into()),
            ..Default::default()
        }
    }

    fn with_context(body: &str, context: wa::ContextInfo) -> wa::Message {
        wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some(body.into()),
                context_info: MessageField::some(context),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn map(message: &wa::Message, info: &MessageInfo) -> Option<InboundEvent> {
        to_event(
            &me(),
            &SentIds::default(),
            message,
            info,
            &Context::default(),
        )
        .map(|m| m.event)
    }

    #[test]
    fn a_direct_message_addresses_the_assistant() {
        let e = map(&text("hi"), &info(FRIEND, FRIEND, false, "3EB0A")).unwrap();
        assert_eq!(e.chat_id, FRIEND);
        assert_eq!(e.sender, FRIEND);
        assert!(!e.is_group && e.mentions_me && !e.from_bot);
        assert_eq!(e.sender_name.as_deref(), Some("Sheena"));
        assert_eq!(e.chat_name, "Sheena");
        assert_eq!(e.text, "hi");
        assert_eq!(e.platform_msg_id, "3EB0A");
        assert_eq!(e.received_at, 1_739_321_024_000);
    }

    #[test]
    fn a_lid_chat_is_given_as_the_phone_number_the_message_names() {
        let mut i = info("200000099999999@lid", "200000099999999@lid", false, "X");
        i.source.sender_alt = Some(FRIEND.parse().unwrap());
        let e = map(&text("hi"), &i).unwrap();
        assert_eq!(e.chat_id, FRIEND);
        assert_eq!(e.sender, FRIEND);
    }

    #[test]
    fn in_a_group_only_a_mention_of_the_account_or_a_reply_to_the_assistant_addresses_it() {
        let plain = map(&text("chatter"), &info(GROUP, FRIEND, false, "G1")).unwrap();
        assert!(plain.is_group && !plain.mentions_me);
        assert_eq!(plain.chat_id, GROUP);
        assert_eq!(plain.sender, FRIEND);

        let mention = with_context(
            "@100000012345678 what's up",
            wa::ContextInfo {
                mentioned_jid: vec![ME_LID.into()],
                ..Default::default()
            },
        );
        let e = map(&mention, &info(GROUP, FRIEND, false, "G2")).unwrap();
        assert!(e.mentions_me);
        assert_eq!(
            e.text, "@Andy what's up",
            "the mention reads as the assistant's name"
        );

        let someone_else = with_context(
            "@16505559999 hi",
            wa::ContextInfo {
                mentioned_jid: vec!["16505559999@s.whatsapp.net".into()],
                ..Default::default()
            },
        );
        assert!(
            !map(&someone_else, &info(GROUP, FRIEND, false, "G3"))
                .unwrap()
                .mentions_me
        );
    }

    #[test]
    fn a_reply_to_the_assistant_addresses_it_but_a_reply_to_the_owner_does_not() {
        let sent = SentIds::default();
        sent.remember("OURS");
        let reply = |stanza: &str, quoted: &str| {
            with_context(
                "yes",
                wa::ContextInfo {
                    stanza_id: Some(stanza.into()),
                    participant: Some(ME_PN.into()),
                    quoted_message: MessageField::some(text(quoted)),
                    ..Default::default()
                },
            )
        };
        let i = info(GROUP, FRIEND, false, "R1");
        let to_us = to_event(
            &me(),
            &sent,
            &reply("OURS", "anything"),
            &i,
            &Context::default(),
        );
        assert!(to_us.unwrap().event.mentions_me);
        // After a restart the id is forgotten; the prefix still tells.
        let after_restart = to_event(
            &me(),
            &SentIds::default(),
            &reply("OLD", "Andy: done"),
            &i,
            &Context::default(),
        );
        assert!(after_restart.unwrap().event.mentions_me);
        let to_owner = to_event(
            &me(),
            &sent,
            &reply("OWNER", "see you at 8"),
            &i,
            &Context::default(),
        );
        assert!(!to_owner.unwrap().event.mentions_me);
    }

    #[test]
    fn the_self_chat_is_the_owner_talking_and_the_assistant_echo_is_dropped() {
        let sent = SentIds::default();
        let owner = to_event(
            &me(),
            &sent,
            &text("remind me at 5"),
            &info(ME_PN, ME_PN, true, "S1"),
            &Context::default(),
        )
        .unwrap()
        .event;
        assert!(owner.mentions_me && !owner.is_group);
        assert_eq!(owner.chat_id, ME_PN);
        assert_eq!(owner.chat_name, "Message yourself");

        sent.remember("S2");
        assert!(
            to_event(
                &me(),
                &sent,
                &text("Andy: sure"),
                &info(ME_PN, ME_PN, true, "S2"),
                &Context::default()
            )
            .is_none(),
            "a message the assistant sent is not read back"
        );
        assert!(
            to_event(
                &me(),
                &sent,
                &text("Andy: from before a restart"),
                &info(ME_PN, ME_PN, true, "S3"),
                &Context::default()
            )
            .is_none(),
            "nor one with its prefix"
        );
        // The LID form of the self-chat is the self-chat too.
        assert!(
            map(&text("hello me"), &info(ME_LID, ME_LID, true, "S4"))
                .unwrap()
                .mentions_me
        );
    }

    #[test]
    fn the_owner_messages_elsewhere_are_dropped() {
        assert!(map(&text("see you"), &info(FRIEND, ME_PN, true, "O1")).is_none());
        assert!(map(&text("hi all"), &info(GROUP, ME_PN, true, "O2")).is_none());
    }

    #[test]
    fn an_image_with_a_caption_carries_the_caption_and_a_file() {
        let image = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some("look".into()),
                mimetype: Some("image/jpeg".into()),
                file_length: Some(1234),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mapped = to_event(
            &me(),
            &SentIds::default(),
            &image,
            &info(FRIEND, FRIEND, false, "3EB0IMG"),
            &Context::default(),
        )
        .unwrap();
        assert_eq!(mapped.event.text, "look");
        let media = mapped.media.unwrap();
        assert_eq!(media.declared_size(), Some(1234));
        assert_eq!(media.file_name("3EB0IMG"), "image-3EB0IMG.jpeg");
        let document = Media::Document(wa::message::DocumentMessage {
            file_name: Some("report.pdf".into()),
            ..Default::default()
        });
        assert_eq!(document.file_name("X"), "report.pdf");
    }

    #[test]
    fn a_quote_names_the_author_and_a_group_quote_of_an_unknown_author_is_left_out() {
        let authors = Authors::default();
        authors.remember("G1", FRIEND);
        let group: Jid = GROUP.parse().unwrap();
        let dm: Jid = FRIEND.parse().unwrap();
        assert_eq!(
            quoted_author(&authors, &group, "G1").as_deref(),
            Some(FRIEND)
        );
        assert_eq!(quoted_author(&authors, &group, "G9"), None);
        assert_eq!(quoted_author(&authors, &dm, "D1").as_deref(), Some(FRIEND));
    }

    #[test]
    fn statuses_channels_and_unhandled_kinds_are_skipped() {
        assert!(
            map(
                &text("story"),
                &info("status@broadcast", FRIEND, false, "B1")
            )
            .is_none()
        );
        let reaction = wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                text: Some("👍".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(map(&reaction, &info(FRIEND, FRIEND, false, "B2")).is_none());
    }

    #[test]
    fn a_group_is_named_by_its_subject_when_known() {
        let i = info(GROUP, FRIEND, false, "N1");
        let context = Context {
            group_subject: Some("Family"),
            resolved_chat: None,
        };
        let e = to_event(&me(), &SentIds::default(), &text("hi"), &i, &context)
            .unwrap()
            .event;
        assert_eq!(e.chat_name, "Family");
    }
}

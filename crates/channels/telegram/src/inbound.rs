//! A Bot API `Message` to the host's `InboundEvent`: who, where, whether it addresses the
//! bot, and its files (downloaded).

use nanoclaw_channel::{Attachment, InboundEvent};

use crate::api::Api;
use crate::types::{FileObject, Message, MessageEntity};

/// Who the bot is (from `getMe`).
#[derive(Debug, Clone)]
pub struct BotIdentity {
    pub id: i64,
    /// Without the `@`.
    pub username: Option<String>,
}

/// The id the channel gives a message: Telegram numbers messages per chat, so the chat is
/// part of it.
pub fn platform_msg_id(chat_id: i64, message_id: i64) -> String {
    format!("{chat_id}:{message_id}")
}

/// The Telegram message id inside a platform id made by [`platform_msg_id`] (a bare number
/// is taken as is).
pub fn message_id_of(platform_id: &str) -> Option<i64> {
    platform_id.rsplit(':').next()?.parse().ok()
}

/// The event for `message`, without attachments yet; `None` for the bot's own messages.
pub fn describe(me: &BotIdentity, message: &Message) -> Option<InboundEvent> {
    let from = message.from.as_ref();
    if from.is_some_and(|u| u.id == me.id) {
        return None;
    }
    let (sender, sender_name) = match (from, &message.sender_chat) {
        (_, Some(chat)) => (chat.id.to_string(), Some(chat.display_name())),
        (Some(user), None) => (user.id.to_string(), Some(user.display_name())),
        (None, None) => (message.chat.id.to_string(), None),
    };
    // Replies in ordinary supergroups carry a thread id too; only forum topics are threads.
    let thread = match (message.is_topic_message, message.message_thread_id) {
        (Some(true), Some(id)) => Some(id.to_string()),
        _ => None,
    };
    Some(InboundEvent {
        channel: crate::NAME.to_string(),
        chat_id: message.chat.id.to_string(),
        chat_name: message.chat.display_name(),
        is_group: !message.chat.is_private(),
        thread,
        platform_msg_id: platform_msg_id(message.chat.id, message.message_id),
        sender,
        sender_name,
        text: message
            .text
            .clone()
            .or_else(|| message.caption.clone())
            .unwrap_or_default(),
        received_at: message.date.saturating_mul(1000),
        mentions_me: mentions_me(me, message),
        from_bot: from.is_some_and(|u| u.is_bot),
        attachments: Vec::new(),
        ack: None,
    })
}

/// A DM, a reply to the bot, an `@botname` mention, a mention of the bot without a username,
/// or a `/command@botname`.
fn mentions_me(me: &BotIdentity, message: &Message) -> bool {
    if message.chat.is_private() {
        return true;
    }
    let replied_to_me = message
        .reply_to_message
        .as_ref()
        .and_then(|r| r.from.as_ref())
        .is_some_and(|u| u.id == me.id);
    if replied_to_me {
        return true;
    }
    let (text, entities) = match &message.text {
        Some(text) => (text.as_str(), &message.entities),
        None => (
            message.caption.as_deref().unwrap_or(""),
            &message.caption_entities,
        ),
    };
    entities.iter().any(|e| entity_is_me(me, text, e))
}

fn entity_is_me(me: &BotIdentity, text: &str, entity: &MessageEntity) -> bool {
    match entity.kind.as_str() {
        "text_mention" => entity.user.as_ref().is_some_and(|u| u.id == me.id),
        "mention" | "bot_command" => {
            let (Some(name), Some(said)) = (
                me.username.as_deref(),
                utf16_slice(text, entity.offset, entity.length),
            ) else {
                return false;
            };
            let said = said.to_ascii_lowercase();
            let handle = format!("@{}", name.to_ascii_lowercase());
            if entity.kind == "mention" {
                said == handle
            } else {
                said.ends_with(&handle)
            }
        }
        _ => false,
    }
}

/// Entity offsets and lengths count UTF-16 code units.
fn utf16_slice(text: &str, offset: usize, length: usize) -> Option<String> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let slice = units.get(offset..offset.checked_add(length)?)?;
    String::from_utf16(slice).ok()
}

/// A file that came with a message, before download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub file_id: String,
    pub file_name: String,
    pub mime_type: Option<String>,
    pub file_size: Option<u64>,
}

fn incoming(
    file: &FileObject,
    default_name: &str,
    ext: &str,
    default_mime: Option<&str>,
) -> Incoming {
    Incoming {
        file_id: file.file_id.clone(),
        file_name: file
            .file_name
            .clone()
            .unwrap_or_else(|| format!("{default_name}_{}{ext}", file.file_unique_id)),
        mime_type: file
            .mime_type
            .clone()
            .or_else(|| default_mime.map(str::to_string)),
        file_size: file.file_size,
    }
}

/// The files of `message`: the largest photo size, documents, voice notes, audio, video.
pub fn files(message: &Message) -> Vec<Incoming> {
    let mut out = Vec::new();
    if let Some(photo) = message.photo.iter().max_by_key(|p| p.width * p.height) {
        out.push(Incoming {
            file_id: photo.file_id.clone(),
            file_name: format!("photo_{}.jpg", photo.file_unique_id),
            mime_type: Some("image/jpeg".to_string()),
            file_size: photo.file_size,
        });
    }
    // An animation also comes as `document` (for old clients): take it once.
    if let Some(animation) = &message.animation {
        out.push(incoming(animation, "animation", ".mp4", Some("video/mp4")));
    } else if let Some(document) = &message.document {
        out.push(incoming(document, "document", "", None));
    }
    let others = [
        (&message.voice, "voice", ".ogg", Some("audio/ogg")),
        (&message.audio, "audio", "", None),
        (&message.video, "video", ".mp4", Some("video/mp4")),
        (&message.video_note, "video_note", ".mp4", Some("video/mp4")),
    ];
    for (file, name, ext, mime) in others {
        if let Some(file) = file {
            out.push(incoming(file, name, ext, mime));
        }
    }
    out
}

/// Downloads `files` into `event`; a file too large or unavailable becomes a note in the text
/// (the message itself still arrives).
pub async fn attach(api: &Api, files: Vec<Incoming>, cap: u64, event: &mut InboundEvent) {
    for file in files {
        match fetch(api, &file, cap).await {
            Ok(Some(data)) => event.attachments.push(Attachment {
                file_name: file.file_name,
                mime_type: file.mime_type,
                data,
            }),
            Ok(None) => note(
                event,
                format!(
                    "[attachment {} skipped: larger than {cap} bytes]",
                    file.file_name
                ),
            ),
            Err(e) => {
                tracing::warn!(file = %file.file_name, error = %e, "telegram: attachment not downloaded");
                note(
                    event,
                    format!("[attachment {} could not be downloaded]", file.file_name),
                );
            }
        }
    }
}

fn note(event: &mut InboundEvent, line: String) {
    if !event.text.is_empty() {
        event.text.push('\n');
    }
    event.text.push_str(&line);
}

async fn fetch(
    api: &Api,
    file: &Incoming,
    cap: u64,
) -> Result<Option<bytes::Bytes>, crate::api::ApiError> {
    if file.file_size.is_some_and(|size| size > cap) {
        return Ok(None);
    }
    let info = api.get_file(&file.file_id).await?;
    if info.file_size.is_some_and(|size| size > cap) {
        return Ok(None);
    }
    let Some(path) = info.file_path else {
        return Err(crate::api::ApiError::Transport {
            method: "getFile",
            detail: "no file_path (the file is not downloadable)".to_string(),
        });
    };
    api.download(&path, cap).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> BotIdentity {
        BotIdentity {
            id: 42,
            username: Some("Claw_Bot".to_string()),
        }
    }

    fn message(value: serde_json::Value) -> Message {
        serde_json::from_value(value).unwrap()
    }

    fn group(extra: serde_json::Value) -> Message {
        let mut base = json!({
            "message_id": 7, "date": 1700000000,
            "chat": {"id": -1001, "type": "supergroup", "title": "Team"},
            "from": {"id": 5, "is_bot": false, "first_name": "Ann", "last_name": "Lee"},
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        message(base)
    }

    #[test]
    fn a_mention_counts_utf16_offsets_and_ignores_case() {
        // "😀 " is three UTF-16 units, so the mention starts at 3.
        let m = group(json!({"text": "😀 @claw_bot hi",
            "entities": [{"type": "mention", "offset": 3, "length": 9}]}));
        let ev = describe(&me(), &m).unwrap();
        assert!(ev.mentions_me);
        assert!(ev.is_group);
        assert_eq!(ev.platform_msg_id, "-1001:7");
        assert_eq!(ev.sender_name.as_deref(), Some("Ann Lee"));
        assert_eq!(ev.received_at, 1_700_000_000_000);
        let other = group(json!({"text": "@someone hi",
            "entities": [{"type": "mention", "offset": 0, "length": 8}]}));
        assert!(!describe(&me(), &other).unwrap().mentions_me);
    }

    #[test]
    fn replies_text_mentions_and_commands_address_the_bot() {
        let reply = group(
            json!({"text": "yes", "reply_to_message": {"message_id": 3, "date": 0,
            "chat": {"id": -1001, "type": "supergroup"}, "from": {"id": 42, "is_bot": true, "first_name": "Claw"}}}),
        );
        assert!(describe(&me(), &reply).unwrap().mentions_me);
        let text_mention = group(json!({"text": "Claw hi",
            "entities": [{"type": "text_mention", "offset": 0, "length": 4, "user": {"id": 42, "is_bot": true, "first_name": "Claw"}}]}));
        assert!(describe(&me(), &text_mention).unwrap().mentions_me);
        let command = group(json!({"text": "/help@claw_bot",
            "entities": [{"type": "bot_command", "offset": 0, "length": 14}]}));
        assert!(describe(&me(), &command).unwrap().mentions_me);
        let plain = group(json!({"text": "hello all"}));
        assert!(!describe(&me(), &plain).unwrap().mentions_me);
    }

    #[test]
    fn own_messages_are_dropped_and_other_bots_marked() {
        let own =
            group(json!({"text": "hi", "from": {"id": 42, "is_bot": true, "first_name": "Claw"}}));
        assert!(describe(&me(), &own).is_none());
        let bot =
            group(json!({"text": "hi", "from": {"id": 9, "is_bot": true, "first_name": "Other"}}));
        assert!(describe(&me(), &bot).unwrap().from_bot);
    }

    #[test]
    fn topics_are_threads_but_reply_threads_are_not() {
        let topic = group(json!({"text": "x", "message_thread_id": 77, "is_topic_message": true}));
        assert_eq!(
            describe(&me(), &topic).unwrap().thread.as_deref(),
            Some("77")
        );
        let reply_thread = group(json!({"text": "x", "message_thread_id": 77}));
        assert_eq!(describe(&me(), &reply_thread).unwrap().thread, None);
    }

    #[test]
    fn the_largest_photo_and_each_file_are_taken_once() {
        let m = group(json!({"caption": "look",
            "photo": [{"file_id": "s", "file_unique_id": "us", "width": 90, "height": 90},
                      {"file_id": "l", "file_unique_id": "ul", "width": 1280, "height": 960}],
            "animation": {"file_id": "a", "file_unique_id": "ua", "file_name": "cat.mp4"},
            "document": {"file_id": "a", "file_unique_id": "ua", "file_name": "cat.mp4"},
            "voice": {"file_id": "v", "file_unique_id": "uv"}}));
        let names: Vec<String> = files(&m).into_iter().map(|f| f.file_name).collect();
        assert_eq!(names, vec!["photo_ul.jpg", "cat.mp4", "voice_uv.ogg"]);
        assert_eq!(describe(&me(), &m).unwrap().text, "look");
    }

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(message_id_of(&platform_msg_id(-1001, 7)), Some(7));
        assert_eq!(message_id_of("12"), Some(12));
        assert_eq!(message_id_of("x"), None);
    }
}

//! Webhook deliveries to [`InboundEvent`]s
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples>,
//! <https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/group/>).
//!
//! A delivery is `{"object":"whatsapp_business_account","entry":[{"changes":[{"field":
//! "messages","value":{"metadata":{…},"contacts":[…],"messages":[…],"statuses":[…]}}]}]}`.
//! Each message is parsed on its own, so one malformed message does not hide the others;
//! `statuses` (sent/delivered/read receipts) are ignored.
//!
//! - A 1:1 chat's id is the user's number (`from`); a message in a group made with the
//!   Groups API carries `group_id`, which is then the chat id.
//! - The business's own messages (`from` = the number's `display_phone_number`) are dropped.
//! - A message addresses the bot in every 1:1 chat; in a group when it replies to one of the
//!   business's messages (`context.from`) or @mentions the business number.

use bytes::Bytes;
use nanoclaw_channel::{Attachment, InboundEvent};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{Api, ApiError};

/// One `changes[].value` of the `messages` field.
#[derive(Debug, Deserialize)]
pub struct ChangeValue {
    pub metadata: Metadata,
    #[serde(default)]
    pub contacts: Vec<Contact>,
    #[serde(default)]
    pub messages: Vec<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub display_phone_number: String,
    pub phone_number_id: String,
}

#[derive(Debug, Deserialize)]
pub struct Contact {
    #[serde(default)]
    pub profile: Option<Profile>,
    pub wa_id: String,
}

#[derive(Debug, Deserialize)]
pub struct Profile {
    pub name: String,
}

/// A received message (the fields nanoclaw uses).
#[derive(Debug, Deserialize)]
pub struct Message {
    pub from: String,
    pub id: String,
    pub timestamp: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub text: Option<Text>,
    #[serde(default)]
    pub image: Option<Media>,
    #[serde(default)]
    pub document: Option<Media>,
    #[serde(default)]
    pub audio: Option<Media>,
    #[serde(default)]
    pub video: Option<Media>,
    #[serde(default)]
    pub sticker: Option<Media>,
    #[serde(default)]
    pub context: Option<Context>,
}

#[derive(Debug, Deserialize)]
pub struct Text {
    pub body: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Media {
    pub id: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Context {
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

impl Message {
    /// The media of an image, document, audio/voice, video or sticker message.
    pub fn media(&self) -> Option<&Media> {
        match self.kind.as_str() {
            "image" => self.image.as_ref(),
            "document" => self.document.as_ref(),
            "audio" => self.audio.as_ref(),
            "video" => self.video.as_ref(),
            "sticker" => self.sticker.as_ref(),
            _ => None,
        }
    }
}

/// The `changes[].value`s of a delivery's `messages` field (others, and wrong shapes, are
/// logged and skipped).
pub fn message_changes(delivery: &Value) -> Vec<ChangeValue> {
    let Some(entries) = delivery["entry"].as_array() else {
        tracing::warn!("whatsapp: a webhook delivery without an entry list; skipped");
        return Vec::new();
    };
    let mut values = Vec::new();
    for change in entries
        .iter()
        .filter_map(|e| e["changes"].as_array())
        .flatten()
    {
        if change["field"].as_str() != Some("messages") {
            continue;
        }
        match serde_json::from_value::<ChangeValue>(change["value"].clone()) {
            Ok(value) => values.push(value),
            Err(e) => tracing::warn!(error = %e, "whatsapp: a malformed change; skipped"),
        }
    }
    values
}

/// Builds the event for one message (attachments not yet downloaded), or `None` for a
/// message the host must not see (the business's own, a kind nanoclaw does not handle).
pub fn to_event(value: &ChangeValue, message: &Message) -> Option<InboundEvent> {
    let own = &value.metadata.display_phone_number;
    if !own.is_empty() && digits(&message.from) == digits(own) {
        tracing::debug!(id = %message.id, "whatsapp: the business's own message; dropped");
        return None;
    }
    let text = match (&message.text, message.media()) {
        (Some(text), _) if message.kind == "text" => text.body.clone(),
        (_, Some(media)) => media.caption.clone().unwrap_or_default(),
        _ => {
            tracing::debug!(id = %message.id, kind = %message.kind, "whatsapp: a message kind nanoclaw does not handle; skipped");
            return None;
        }
    };
    let sender_name = value
        .contacts
        .iter()
        .find(|c| c.wa_id == message.from)
        .and_then(|c| c.profile.as_ref())
        .map(|p| p.name.clone());
    let replies_to_us = message
        .context
        .as_ref()
        .and_then(|c| c.from.as_deref())
        .is_some_and(|from| !own.is_empty() && digits(from) == digits(own));
    let mentioned = !own.is_empty() && text.contains(&format!("@{}", digits(own)));
    let is_group = message.group_id.is_some();
    let chat_id = message
        .group_id
        .clone()
        .unwrap_or_else(|| message.from.clone());
    Some(InboundEvent {
        channel: crate::NAME.to_string(),
        chat_name: if is_group {
            format!("WhatsApp group {chat_id}")
        } else {
            sender_name
                .clone()
                .unwrap_or_else(|| format!("+{}", message.from))
        },
        chat_id,
        is_group,
        thread: None,
        platform_msg_id: message.id.clone(),
        sender: message.from.clone(),
        sender_name,
        text,
        received_at: message.timestamp.parse::<i64>().unwrap_or(0) * 1000,
        mentions_me: !is_group || replies_to_us || mentioned,
        from_bot: false,
        attachments: Vec::new(),
        ack: None,
    })
}

/// The digits of a phone number (`+1 555-0100` and `15550100` are the same number).
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// Downloads a message's media into `event` (a file over `max_bytes`, or one that cannot be
/// fetched, becomes a note in the text). Fails only when a retry may help (no answer,
/// 5xx), so the delivery is answered 500 and Meta sends it again.
pub async fn attach(
    api: &Api,
    message: &Message,
    event: &mut InboundEvent,
    max_bytes: u64,
) -> Result<(), ApiError> {
    let Some(media) = message.media() else {
        return Ok(());
    };
    let name = file_name(message, media);
    match fetch(api, media, max_bytes).await {
        Ok(Fetched::Data(data, mime)) => event.attachments.push(Attachment {
            file_name: name,
            mime_type: mime,
            data,
        }),
        Ok(Fetched::TooLarge(size)) => note(
            event,
            &format!("[{name} ({size} bytes) was not downloaded: larger than {max_bytes} bytes]"),
        ),
        Err(e) if e.status().is_some_and(|s| s < 500) => {
            tracing::warn!(error = %e, id = %message.id, "whatsapp: media refused; noted in the text");
            note(event, &format!("[{name} could not be downloaded: {e}]"));
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

enum Fetched {
    Data(Bytes, Option<String>),
    TooLarge(u64),
}

async fn fetch(api: &Api, media: &Media, max_bytes: u64) -> Result<Fetched, ApiError> {
    let info = api.media_info(&media.id).await?;
    if let Some(size) = info.file_size.filter(|s| *s > max_bytes) {
        return Ok(Fetched::TooLarge(size));
    }
    let data = api.download(&info.url).await?;
    if data.len() as u64 > max_bytes {
        return Ok(Fetched::TooLarge(data.len() as u64));
    }
    Ok(Fetched::Data(
        data,
        info.mime_type.or_else(|| media.mime_type.clone()),
    ))
}

fn note(event: &mut InboundEvent, text: &str) {
    if !event.text.is_empty() {
        event.text.push('\n');
    }
    event.text.push_str(text);
}

/// A document's own name; for photos, voice notes and videos one made from the type.
fn file_name(message: &Message, media: &Media) -> String {
    if let Some(name) = media.filename.as_deref().filter(|n| !n.trim().is_empty()) {
        return name.to_string();
    }
    let ext = media
        .mime_type
        .as_deref()
        .and_then(|m| m.split(';').next())
        .and_then(|m| m.split('/').nth(1))
        .unwrap_or("bin");
    format!("{}-{}.{ext}", message.kind, short_id(&message.id))
}

fn short_id(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .rev()
        .take(10)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(messages: Value) -> ChangeValue {
        serde_json::from_value(json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Sheena"}, "wa_id": "16505551234"}],
            "messages": messages,
        }))
        .unwrap()
    }

    fn event(m: Value) -> Option<InboundEvent> {
        let v = value(json!([m.clone()]));
        let message: Message = serde_json::from_value(m).unwrap();
        to_event(&v, &message)
    }

    #[test]
    fn a_direct_text_addresses_the_bot_and_names_the_sender() {
        let e = event(
            json!({"from": "16505551234", "id": "wamid.A", "timestamp": "1739321024",
            "type": "text", "text": {"body": "hi"}}),
        )
        .unwrap();
        assert_eq!(e.chat_id, "16505551234");
        assert!(!e.is_group && e.mentions_me && !e.from_bot);
        assert_eq!(e.sender_name.as_deref(), Some("Sheena"));
        assert_eq!(e.received_at, 1_739_321_024_000);
        assert_eq!(e.platform_msg_id, "wamid.A");
    }

    #[test]
    fn in_a_group_only_replies_and_mentions_address_the_bot() {
        let base = json!({"from": "16505551234", "group_id": "Y2FwaV9ncm91cDox", "timestamp": "1",
            "type": "text"});
        let mut plain = base.clone();
        plain["id"] = json!("wamid.P");
        plain["text"] = json!({"body": "chatter"});
        let e = event(plain).unwrap();
        assert!(e.is_group && !e.mentions_me);
        assert_eq!(e.chat_id, "Y2FwaV9ncm91cDox");
        let mut mention = base.clone();
        mention["id"] = json!("wamid.M");
        mention["text"] = json!({"body": "@15550001111 hello"});
        assert!(event(mention).unwrap().mentions_me);
        let mut reply = base;
        reply["id"] = json!("wamid.R");
        reply["text"] = json!({"body": "yes"});
        reply["context"] = json!({"from": "15550001111", "id": "wamid.OURS"});
        assert!(event(reply).unwrap().mentions_me);
    }

    #[test]
    fn the_business_own_messages_and_unhandled_kinds_are_dropped() {
        assert!(
            event(
                json!({"from": "15550001111", "id": "wamid.O", "timestamp": "1",
            "type": "text", "text": {"body": "echo"}})
            )
            .is_none()
        );
        assert!(
            event(
                json!({"from": "16505551234", "id": "wamid.L", "timestamp": "1",
            "type": "location", "location": {"latitude": 1.0, "longitude": 2.0}})
            )
            .is_none()
        );
    }

    #[test]
    fn media_captions_become_the_text_and_names_are_made_for_photos() {
        let m = json!({"from": "16505551234", "id": "wamid.HBgLMTY1MDM4", "timestamp": "1",
            "type": "image", "image": {"id": "123", "mime_type": "image/jpeg", "caption": "look"}});
        let e = event(m.clone()).unwrap();
        assert_eq!(e.text, "look");
        let message: Message = serde_json::from_value(m).unwrap();
        let name = file_name(&message, message.media().unwrap());
        assert_eq!(name, "image-gLMTY1MDM4.jpeg");
    }

    #[test]
    fn wrong_shapes_are_skipped_not_fatal() {
        assert!(message_changes(&json!({"entry": "oops"})).is_empty());
        let delivery = json!({"entry": [{"changes": [
            {"field": "messages", "value": {"no_metadata": true}},
            {"field": "account_update", "value": {}},
            {"field": "messages", "value": {"metadata": {"phone_number_id": "1"}, "messages": [{"id": 5}]}},
        ]}]});
        let values = message_changes(&delivery);
        assert_eq!(values.len(), 1);
        assert!(serde_json::from_value::<Message>(values[0].messages[0].clone()).is_err());
    }
}

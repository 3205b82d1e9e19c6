//! What a `/sync` answer holds for the channel: the next batch token, rooms the bot was
//! invited to, and the messages in joined rooms, read defensively (a homeserver relays
//! whatever other users' clients wrote: any field may be missing or of the wrong type).

use serde_json::Value;

/// A file attached to a message (`m.image`, `m.file`, `m.audio`, `m.video`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    pub name: String,
    pub mxc: String,
    pub mime: Option<String>,
    pub size: Option<u64>,
    /// A caption: the body, when the message names the file separately (`filename`).
    pub caption: Option<String>,
    /// In an encrypted room: the `file` object (key, iv, hash) the download decrypts with.
    pub file: Option<Value>,
}

/// One `m.room.message` (or an encrypted event) in a joined room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    pub room: String,
    pub event_id: String,
    pub sender: String,
    pub origin_server_ts: i64,
    pub msgtype: String,
    pub body: String,
    /// The thread's root event, for a message in a thread.
    pub thread_root: Option<String>,
    /// The event this replies to.
    pub in_reply_to: Option<String>,
    /// `m.mentions.user_ids` (intentional mentions, spec v1.7).
    pub mentioned: Vec<String>,
    pub media: Option<MediaRef>,
    /// `m.room.encrypted`: still to be decrypted.
    pub encrypted: bool,
    /// The whole event as received, for an encrypted one (what decryption reads).
    pub raw: Option<Value>,
}

impl RoomMessage {
    /// `m.notice` is how automated clients speak; the spec says never to answer one.
    pub fn is_notice(&self) -> bool {
        self.msgtype == "m.notice"
    }
}

/// A room whose sync timeline was cut: the events before `prev_batch` were not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub room: String,
    pub prev_batch: Option<String>,
}

/// One `/sync` answer, read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncBatch {
    pub next_batch: String,
    pub invites: Vec<String>,
    /// Who invited the bot, by room (the sender of the invite's `m.room.member` event).
    pub inviters: std::collections::HashMap<String, String>,
    pub messages: Vec<RoomMessage>,
    /// Joined rooms whose timeline was cut (`limited`): older messages are to be read
    /// with `/messages` from the timeline's `prev_batch`.
    pub gaps: Vec<Gap>,
    /// `to_device.events`, as received (end-to-end encryption reads them first).
    pub to_device: Vec<Value>,
    /// `device_one_time_keys_count.signed_curve25519`.
    pub one_time_keys: Option<u64>,
    /// `device_unused_fallback_key_types`, when the homeserver sent it.
    pub unused_fallback: Option<Vec<String>>,
    /// `device_lists.changed`: users whose devices changed.
    pub devices_changed: Vec<String>,
}

/// Reads a `/sync` answer. `None` when it has no `next_batch` (not a sync answer).
pub fn read_sync(v: &Value) -> Option<SyncBatch> {
    let next_batch = v.get("next_batch")?.as_str()?.to_owned();
    let mut batch = SyncBatch {
        next_batch,
        ..SyncBatch::default()
    };
    if let Some(invites) = v.pointer("/rooms/invite").and_then(Value::as_object) {
        batch.invites = invites.keys().cloned().collect();
        for (room, data) in invites {
            let inviter = data
                .pointer("/invite_state/events")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|e| {
                    e.get("type").and_then(Value::as_str) == Some("m.room.member")
                        && e.pointer("/content/membership").and_then(Value::as_str)
                            == Some("invite")
                })
                .and_then(|e| e.get("sender"))
                .and_then(Value::as_str);
            if let Some(inviter) = inviter {
                batch.inviters.insert(room.clone(), inviter.to_owned());
            }
        }
    }
    batch.to_device = v
        .pointer("/to_device/events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    batch.one_time_keys = v
        .pointer("/device_one_time_keys_count/signed_curve25519")
        .and_then(Value::as_u64);
    batch.unused_fallback = strings_at(v, "/device_unused_fallback_key_types");
    batch.devices_changed = strings_at(v, "/device_lists/changed").unwrap_or_default();
    let Some(joined) = v.pointer("/rooms/join").and_then(Value::as_object) else {
        return Some(batch);
    };
    for (room, data) in joined {
        if data.pointer("/timeline/limited").and_then(Value::as_bool) == Some(true) {
            batch.gaps.push(Gap {
                room: room.clone(),
                prev_batch: data
                    .pointer("/timeline/prev_batch")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        let Some(events) = data.pointer("/timeline/events").and_then(Value::as_array) else {
            continue;
        };
        for event in events {
            if let Some(message) = read_event(room, event) {
                batch.messages.push(message);
            }
        }
    }
    // Rooms come in map order; each room's events in timeline order. Across rooms, the
    // homeserver's timestamps order them.
    batch.messages.sort_by_key(|m| m.origin_server_ts);
    Some(batch)
}

/// The strings of the array at `pointer` (other elements skipped); `None` without an array.
fn strings_at(v: &Value, pointer: &str) -> Option<Vec<String>> {
    let array = v.pointer(pointer)?.as_array()?;
    Some(
        array
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    )
}

/// Reads one timeline event (also a decrypted one) into a message; `None` for what is not one.
pub fn read_event(room: &str, event: &Value) -> Option<RoomMessage> {
    let kind = event.get("type")?.as_str()?;
    let encrypted = match kind {
        "m.room.message" => false,
        "m.room.encrypted" => true,
        _ => return None,
    };
    let event_id = event.get("event_id")?.as_str()?.to_owned();
    let sender = event.get("sender")?.as_str()?.to_owned();
    let content = event.get("content")?;
    // A redacted message has empty content.
    let msgtype = content
        .get("msgtype")
        .and_then(Value::as_str)
        .unwrap_or(if encrypted { "m.room.encrypted" } else { "" })
        .to_owned();
    if msgtype.is_empty() {
        return None;
    }
    // An edit (`m.replace`) is not a new message.
    let relates = content.get("m.relates_to");
    if relates
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str)
        == Some("m.replace")
    {
        return None;
    }
    let thread_root = relates
        .filter(|r| r.get("rel_type").and_then(Value::as_str) == Some("m.thread"))
        .and_then(|r| r.get("event_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let in_reply_to = relates
        .and_then(|r| r.pointer("/m.in_reply_to/event_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mentioned = strings_at(content, "/m.mentions/user_ids").unwrap_or_default();
    let body = content
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let media = match msgtype.as_str() {
        "m.image" | "m.file" | "m.audio" | "m.video" => content
            .get("url")
            .or_else(|| content.pointer("/file/url"))
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("mxc://"))
            .map(|mxc| MediaRef {
                name: content
                    .get("filename")
                    .and_then(Value::as_str)
                    .unwrap_or(&body)
                    .to_owned(),
                mxc: mxc.to_owned(),
                mime: content
                    .pointer("/info/mimetype")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                size: content.pointer("/info/size").and_then(Value::as_u64),
                caption: content
                    .get("filename")
                    .and_then(Value::as_str)
                    .filter(|name| *name != body)
                    .map(|_| body.clone()),
                file: content.get("file").filter(|f| f.is_object()).cloned(),
            }),
        _ => None,
    };
    Some(RoomMessage {
        room: room.to_owned(),
        event_id,
        sender,
        origin_server_ts: event
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        msgtype,
        body,
        thread_root,
        in_reply_to,
        mentioned,
        media,
        encrypted,
        raw: encrypted.then(|| event.clone()),
    })
}

/// Whether `body` names `user` the way people write a mention without an intentional one:
/// the full id (`@andy:example.org`) or the localpart as a word (`andy: hi`, `hey andy`).
pub fn body_mentions(body: &str, user: &str) -> bool {
    if body.contains(user) {
        return true;
    }
    let local = user
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    !local.is_empty()
        && body
            .to_ascii_lowercase()
            .split(|c: char| !c.is_alphanumeric() && c != '_' && c != '-' && c != '.')
            .any(|word| word == local)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sync_answer_is_read_into_messages_invites_and_gaps() {
        let v = json!({
            "next_batch": "s2",
            "rooms": {
                "invite": {"!inv:hs": {"invite_state": {"events": [
                    {"type": "m.room.member", "sender": "@owner:hs", "state_key": "@andy:hs",
                     "content": {"membership": "invite"}}]}}},
                "join": {"!r:hs": {"timeline": {"limited": true, "prev_batch": "p1", "events": [
                    {"type": "m.room.member", "event_id": "$m", "sender": "@a:hs", "content": {}},
                    {"type": "m.room.message", "event_id": "$1", "sender": "@a:hs",
                     "origin_server_ts": 5,
                     "content": {"msgtype": "m.text", "body": "hi @andy:hs",
                                 "m.mentions": {"user_ids": ["@andy:hs"]},
                                 "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                                                  "m.in_reply_to": {"event_id": "$0"}}}},
                    {"type": "m.room.message", "event_id": "$2", "sender": "@a:hs",
                     "origin_server_ts": 6,
                     "content": {"msgtype": "m.file", "body": "x.pdf", "url": "mxc://hs/abc",
                                 "info": {"mimetype": "application/pdf", "size": 3}}},
                    {"type": "m.room.message", "event_id": "$3", "sender": "@a:hs",
                     "content": {"msgtype": "m.text", "body": "* fixed",
                                 "m.relates_to": {"rel_type": "m.replace", "event_id": "$1"}}},
                    {"type": "m.room.encrypted", "event_id": "$4", "sender": "@a:hs",
                     "origin_server_ts": 7, "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
                ]}}}
            }
        });
        let batch = read_sync(&v).unwrap();
        assert_eq!(batch.next_batch, "s2");
        assert_eq!(batch.invites, ["!inv:hs"]);
        assert_eq!(batch.inviters["!inv:hs"], "@owner:hs");
        assert_eq!(
            batch.gaps,
            [Gap {
                room: "!r:hs".into(),
                prev_batch: Some("p1".into())
            }]
        );
        assert_eq!(
            batch.messages.len(),
            3,
            "member events and edits are not messages"
        );
        let first = &batch.messages[0];
        assert_eq!(first.thread_root.as_deref(), Some("$root"));
        assert_eq!(first.in_reply_to.as_deref(), Some("$0"));
        assert_eq!(first.mentioned, ["@andy:hs"]);
        let file = batch.messages[1].media.clone().unwrap();
        assert_eq!(file.mxc, "mxc://hs/abc");
        assert_eq!(file.name, "x.pdf");
        assert!(batch.messages[2].encrypted);
    }

    #[test]
    fn wrong_shapes_are_skipped_not_fatal() {
        assert!(read_sync(&json!({"rooms": {}})).is_none());
        let v = json!({"next_batch": "s", "rooms": {"join": {"!r:hs": {"timeline": {"events": [
            {"type": "m.room.message"},
            {"type": "m.room.message", "event_id": 5, "sender": "@a:hs", "content": {}},
            {"type": "m.room.message", "event_id": "$x", "sender": "@a:hs", "content": {"msgtype": 3}},
            "not an object"
        ]}}}}});
        assert!(read_sync(&v).unwrap().messages.is_empty());
    }

    #[test]
    fn plain_mentions_are_words_not_substrings() {
        assert!(body_mentions("andy: deploy it", "@andy:hs"));
        assert!(body_mentions("hey Andy, you there?", "@andy:hs"));
        assert!(body_mentions("ping @andy:hs", "@andy:hs"));
        assert!(!body_mentions("sandy is here", "@andy:hs"));
    }
}

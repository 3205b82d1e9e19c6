//! The Bot API objects the channel reads (<https://core.telegram.org/bots/api#available-types>).
//! Only the fields used are declared; unknown fields are ignored, as the API adds new
//! ones often.

use serde::Deserialize;

/// `getUpdates` result element. Only `message` is asked for (`allowed_updates`).
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

impl User {
    pub fn display_name(&self) -> String {
        let full = match &self.last_name {
            Some(last) if !last.is_empty() => format!("{} {last}", self.first_name),
            _ => self.first_name.clone(),
        };
        if full.trim().is_empty() {
            self.username.clone().unwrap_or_else(|| self.id.to_string())
        } else {
            full
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

impl Chat {
    pub fn is_private(&self) -> bool {
        self.kind == "private"
    }

    pub fn display_name(&self) -> String {
        if let Some(title) = &self.title {
            return title.clone();
        }
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !name.is_empty() {
            return name;
        }
        self.username.clone().unwrap_or_else(|| self.id.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MessageEntity {
    #[serde(rename = "type")]
    pub kind: String,
    /// In UTF-16 code units.
    pub offset: usize,
    pub length: usize,
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhotoSize {
    pub file_id: String,
    pub file_unique_id: String,
    #[serde(default)]
    pub width: u64,
    #[serde(default)]
    pub height: u64,
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// Document, Audio, Voice, Video, VideoNote and Animation share these fields.
#[derive(Debug, Clone, Deserialize)]
pub struct FileObject {
    pub file_id: String,
    pub file_unique_id: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// The part of a replied-to message the channel looks at.
#[derive(Debug, Clone, Deserialize)]
pub struct RepliedMessage {
    #[serde(default)]
    pub from: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: i64,
    /// Unix seconds.
    pub date: i64,
    pub chat: Chat,
    #[serde(default)]
    pub from: Option<User>,
    /// For anonymous group admins and channel posts forwarded into a discussion group.
    #[serde(default)]
    pub sender_chat: Option<Chat>,
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    #[serde(default)]
    pub is_topic_message: Option<bool>,
    #[serde(default)]
    pub reply_to_message: Option<Box<RepliedMessage>>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub entities: Vec<MessageEntity>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub caption_entities: Vec<MessageEntity>,
    #[serde(default)]
    pub photo: Vec<PhotoSize>,
    #[serde(default)]
    pub document: Option<FileObject>,
    #[serde(default)]
    pub audio: Option<FileObject>,
    #[serde(default)]
    pub voice: Option<FileObject>,
    #[serde(default)]
    pub video: Option<FileObject>,
    #[serde(default)]
    pub video_note: Option<FileObject>,
    #[serde(default)]
    pub animation: Option<FileObject>,
}

/// `getMe`.
#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    pub id: i64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: String,
}

/// `getFile`.
#[derive(Debug, Clone, Deserialize)]
pub struct File {
    #[serde(default)]
    pub file_size: Option<u64>,
    /// Absent when the file cannot be downloaded (e.g. larger than the Bot API allows).
    #[serde(default)]
    pub file_path: Option<String>,
}

/// The part of a sent message the channel keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct SentMessage {
    pub message_id: i64,
}

/// `ResponseParameters` on an error.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseParameters {
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub migrate_to_chat_id: Option<i64>,
}

/// Every Bot API answer: `{"ok":true,"result":…}` or
/// `{"ok":false,"error_code":…,"description":…,"parameters":{…}}`.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub ok: bool,
    #[serde(default = "Option::default")]
    pub result: Option<T>,
    #[serde(default)]
    pub error_code: Option<u16>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<ResponseParameters>,
}

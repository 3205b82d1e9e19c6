//! The Discord API v10 objects the adapter reads, as documented at
//! <https://discord.com/developers/docs/resources/message> (Message, Attachment),
//! <https://discord.com/developers/docs/resources/channel> (Channel) and
//! <https://discord.com/developers/docs/topics/gateway-events> (payloads, READY,
//! GUILD_CREATE). Only the fields the adapter uses; unknown fields are ignored because
//! Discord adds fields without a version bump.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Gateway opcodes (<https://discord.com/developers/docs/topics/opcodes-and-status-codes>).
pub mod op {
    pub const DISPATCH: u8 = 0;
    pub const HEARTBEAT: u8 = 1;
    pub const IDENTIFY: u8 = 2;
    pub const RESUME: u8 = 6;
    pub const RECONNECT: u8 = 7;
    pub const INVALID_SESSION: u8 = 9;
    pub const HELLO: u8 = 10;
    pub const HEARTBEAT_ACK: u8 = 11;
}

/// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
pub const INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);

/// One gateway frame: `{"op", "d", "s", "t"}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Payload {
    pub op: u8,
    #[serde(default)]
    pub d: Value,
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(default)]
    pub t: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    pub heartbeat_interval: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
    #[serde(default)]
    pub bot: bool,
}

impl User {
    /// The name people see: the display name when set, else the username.
    pub fn display_name(&self) -> &str {
        self.global_name.as_deref().unwrap_or(&self.username)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub session_id: String,
    pub resume_gateway_url: String,
    pub user: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GuildMember {
    #[serde(default)]
    pub nick: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MessageAttachment {
    pub filename: String,
    pub size: u64,
    pub url: String,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// A `referenced_message`: only its author matters (a reply to the bot addresses it).
#[derive(Debug, Clone, Deserialize)]
pub struct Referenced {
    pub author: User,
}

/// A MESSAGE_CREATE's `d`: a message object plus `guild_id` and `member`.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: String,
    pub channel_id: String,
    #[serde(default)]
    pub guild_id: Option<String>,
    pub author: User,
    #[serde(default)]
    pub member: Option<GuildMember>,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub mentions: Vec<User>,
    #[serde(default)]
    pub attachments: Vec<MessageAttachment>,
    #[serde(default)]
    pub referenced_message: Option<Referenced>,
}

/// Channel types that are threads (ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD).
pub const THREAD_TYPES: [u8; 3] = [10, 11, 12];

#[derive(Debug, Clone, Deserialize)]
pub struct Channel {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
}

impl Channel {
    pub fn is_thread(&self) -> bool {
        THREAD_TYPES.contains(&self.kind)
    }
}

/// GUILD_CREATE's `d`: the guild's channels and the active threads the bot can see.
#[derive(Debug, Clone, Deserialize)]
pub struct GuildCreate {
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub threads: Vec<Channel>,
}

/// `GET /gateway/bot`.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayBot {
    pub url: String,
}

/// Discord's JSON error body: `{"code": 10003, "message": "Unknown Channel"}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiErrorBody {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// A 429's body: `{"message", "retry_after": 1.5, "global": false}`.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitBody {
    pub retry_after: f64,
    #[serde(default)]
    pub global: bool,
}

/// The created message (only the id is kept).
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub id: String,
}

/// Milliseconds since the Discord epoch (2015-01-01) sit in a snowflake's top 42 bits.
pub fn snowflake_ms(id: &str) -> Option<i64> {
    const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;
    let raw: u64 = id.parse().ok()?;
    i64::try_from(raw >> 22)
        .ok()
        .map(|ms| ms + DISCORD_EPOCH_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_time_matches_the_documented_example() {
        // The example from the Reference page: 175928847299117063 → 2016-04-30 11:18:25.796 UTC.
        assert_eq!(snowflake_ms("175928847299117063"), Some(1_462_015_105_796));
        assert_eq!(snowflake_ms("not a number"), None);
    }
}

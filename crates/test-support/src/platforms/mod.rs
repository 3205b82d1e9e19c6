//! Local servers that speak chat platforms' real wire protocols (endpoints, payload shapes,
//! status codes, error bodies, rate-limit headers, gateway opcodes and close codes), built
//! from each platform's public API documentation. The channel adapters' own tests and the
//! host's channel conformance suite (`crates/host/tests/suite/channel_conformance.rs`) run
//! against them through [`FakePlatform`].

pub mod telegram;

use std::time::Duration;

use async_trait::async_trait;

pub mod discord;
pub mod email;
pub mod irc;
pub mod matrix;
pub mod slack;
pub mod webhook;
pub mod whatsapp;

/// A chat on a fake platform, as the test sets it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChat {
    /// The platform's own id for the chat (a Telegram chat id, a Discord channel id, …).
    pub platform_id: String,
    /// A group chat (several people) rather than a direct message.
    pub is_group: bool,
    /// The user who speaks in it.
    pub user_id: String,
    pub user_name: String,
}

/// A message a fake user or bot posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The chat id as the adapter reports it (`InboundEvent::chat_id`).
    pub chat_id: String,
    /// The message id as the adapter reports it (`InboundEvent::platform_msg_id`).
    pub message_id: String,
}

/// Something the bot sent to the platform, as the platform recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The chat it went to (the platform's raw id).
    pub chat: String,
    pub text: String,
    /// Files sent with it: (file name, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// The thread / topic it went to, if any.
    pub thread: Option<String>,
    /// The message it replies to, if the platform records that.
    pub reply_to: Option<String>,
}

/// One platform's fake server, driven by the channel conformance suite.
///
/// Every fake keeps what the bot sent, lets the test post as users and as other bots, drop
/// live connections, make the next sends fail with the platform's real 429 (and its
/// retry-after), push a malformed event, and hold a send's response (accepted, not answered)
/// so the host can be killed between the send and its record.
#[async_trait]
pub trait FakePlatform: Send + Sync {
    /// The channel's name (`telegram`, `discord`, `slack`, …).
    fn channel(&self) -> &'static str;

    /// The `[channels.<name>]` table that points the adapter at this server (`enabled = true`
    /// included), as TOML text without the header.
    fn settings_toml(&self) -> String;

    /// The vault secrets the adapter needs: (name, value).
    fn secrets(&self) -> Vec<(String, String)>;

    /// The chats are wired by the channel's config (webhooks name their group), so the
    /// suite does not pair them. Default: `false` (paired with a code, as an owner does).
    fn chats_wired_by_config(&self) -> bool {
        false
    }

    /// The longest message the platform takes, as it counts length.
    fn max_message_len(&self) -> usize;

    /// Whether the platform has group chats (several people, the bot addressed or not);
    /// email has none: every mail to the bot is addressed to it.
    fn has_group_chats(&self) -> bool {
        true
    }

    /// A chat for the suite to use (`n` makes distinct chats).
    fn chat(&self, n: u32, is_group: bool) -> FakeChat;

    /// A user posts `text` in `chat` (in a group: addressing the bot as the platform does,
    /// when `mention`).
    async fn user_says(&self, chat: &FakeChat, text: &str, mention: bool) -> Posted;

    /// A user posts a file with a caption (addressing the bot).
    async fn user_sends_file(
        &self,
        chat: &FakeChat,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Posted;

    /// Another bot posts `text` in `chat`, addressing our bot.
    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted;

    /// The platform delivers `message` again (a redelivery after a reconnect, say).
    async fn redeliver(&self, chat: &FakeChat, message: &Posted);

    /// The platform sends an event the adapter cannot parse (bad JSON or wrong shapes).
    async fn push_malformed(&self, chat: &FakeChat);

    /// What the bot sent to `chat`, in the order the platform accepted it.
    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage>;

    /// Drops every live connection (long polls, websockets) once.
    async fn drop_connections(&self);

    /// Connections (or polls) the platform has accepted so far: rises after a reconnect.
    fn connections(&self) -> u64;

    /// The next `count` sends are answered with the platform's 429 and `retry_after`.
    fn rate_limit_sends(&self, count: u32, retry_after: Duration);

    /// When the last send refused by [`FakePlatform::rate_limit_sends`] was refused, and when
    /// the next send attempt came (to check the wait was honoured).
    fn rate_limit_log(&self) -> Vec<(std::time::Instant, std::time::Instant)>;

    /// From now on, sends are recorded but their responses withheld until
    /// [`FakePlatform::release_sends`] (to kill the host between a send and its record).
    fn hold_sends(&self);
    fn release_sends(&self);
    /// Sends received while held.
    fn held_sends(&self) -> usize;
}

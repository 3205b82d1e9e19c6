//! nanoclaw's Telegram channel, on the Bot API (<https://core.telegram.org/bots/api>).
//!
//! - **In**: `getUpdates` long polling ([`poll`]); the update offset is kept in the host's
//!   state store and moved only past updates the host has settled, so a crash re-delivers
//!   rather than loses (the host deduplicates by `platform_msg_id`, `"<chat id>:<message
//!   id>"`, as Telegram numbers messages per chat). Private chats, groups and supergroups,
//!   forum topics (`message_thread_id` → `thread`). A message addresses the bot when it is a
//!   DM, replies to the bot, or mentions it (`@username`, a `text_mention`, or
//!   `/command@username`); the text is kept as sent. The bot's own messages are dropped;
//!   other bots' are marked `from_bot`. Photos (largest size), documents, voice notes, audio
//!   and video are downloaded through `getFile` up to `max_attachment_bytes` (a larger one
//!   becomes a note in the text). Only `message` updates are asked for: an edit would either
//!   be dropped as a duplicate or answered a second time.
//! - **Out**: Markdown converted to MarkdownV2 ([`format`](mod@format)), split at 4,096 UTF-16 units,
//!   each part through the send ledger; a part Telegram cannot parse goes again as plain
//!   text. Files go as documents (the text as the caption when there is one file and the
//!   text fits 1,024 units). The first part replies to `reply_to`; `thread` goes to
//!   `message_thread_id`. Typing is `sendChatAction`.
//! - **After a crash**: a part that may or may not have been sent is *not* sent again
//!   (Telegram has no idempotency key and no way to list a bot's messages): at most once
//!   for that part, logged at warn. A part whose attempt failed earlier in the same process
//!   in a way that certainly sent nothing (429, 400, no connection) is sent again.
//! - **Errors**: 429 → [`ChannelError::RateLimited`] with `parameters.retry_after`; 401 →
//!   `Unauthorized` (and the receive loop goes down: the supervisor restarts it with
//!   backoff); 400/403 (chat not found, bot blocked) → `Rejected`; 409 (another
//!   `getUpdates` consumer) and network errors → reconnect with backoff.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use nanoclaw_channel::{
    Channel, ChannelError, ChannelRegistration, ChannelSetup, Health, HealthCell, InboundSink,
    OutgoingMessage, Progress, SecretSpec, SendLedger, StateStore,
};
use serde::Deserialize;
use tokio::task::JoinHandle;

pub mod api;
pub mod format;
pub mod inbound;
mod outbound;
pub mod poll;
pub mod types;

/// The channel's name.
pub const NAME: &str = "telegram";
/// The vault secret holding the bot token.
pub const TOKEN_SECRET: &str = "telegram.bot_token";
const DEFAULT_API_BASE: &str = "https://api.telegram.org";
const DEFAULT_MAX_ATTACHMENT: u64 = 20 * 1024 * 1024;

/// What the host lists and builds.
pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: NAME,
    summary: "Telegram bot (Bot API long polling): private chats, groups, forum topics, files",
    secrets: &[SecretSpec {
        name: TOKEN_SECRET,
        prompt: "Bot token from @BotFather",
        optional: false,
    }],
    modes: &[],
    settings: &[
        ("api_base", DEFAULT_API_BASE),
        ("poll_timeout_secs", "30"),
        ("max_attachment_bytes", "20971520"),
    ],
    settings_secrets: None,
    factory,
};

type BuiltChannel =
    Pin<Box<dyn std::future::Future<Output = Result<Arc<dyn Channel>, ChannelError>> + Send>>;

fn factory(setup: ChannelSetup) -> BuiltChannel {
    Box::pin(async move {
        let channel = TelegramChannel::from_setup(setup).await?;
        Ok(Arc::new(channel) as Arc<dyn Channel>)
    })
}

/// `[channels.telegram]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The Bot API server (a self-hosted `telegram-bot-api` works the same).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// How long one `getUpdates` call waits for updates.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u64,
    /// Larger inbound files are skipped with a note.
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_string()
}
fn default_poll_timeout() -> u64 {
    30
}
fn default_max_attachment() -> u64 {
    DEFAULT_MAX_ATTACHMENT
}

/// The Telegram channel.
pub struct TelegramChannel {
    api: Arc<api::Api>,
    config: TelegramConfig,
    state: Arc<dyn StateStore>,
    ledger: Arc<dyn SendLedger>,
    health: Arc<HealthCell>,
    receiver: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl TelegramChannel {
    pub async fn from_setup(setup: ChannelSetup) -> Result<TelegramChannel, ChannelError> {
        let config: TelegramConfig = setup.settings_as(NAME)?;
        let token = setup.require_secret(NAME, TOKEN_SECRET).await?;
        let api = api::Api::new(&config.api_base, token)?;
        Ok(TelegramChannel {
            api: Arc::new(api),
            config,
            state: setup.state,
            ledger: setup.ledger,
            health: Arc::new(HealthCell::default()),
            receiver: tokio::sync::Mutex::new(None),
        })
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Asks `getMe` once, then polls in a task. A refused token fails the start; any other
    /// failure is retried inside the task.
    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let mut receiver = self.receiver.lock().await;
        if let Some(old) = receiver.take() {
            old.abort();
        }
        self.health.starting();
        let offset = poll::load_offset(&*self.state).await?;
        let me = match self.api.get_me().await {
            Ok(me) => {
                self.health.connected();
                tracing::info!(bot = ?me.username, "telegram: connected");
                Some(inbound::BotIdentity {
                    id: me.id,
                    username: me.username,
                })
            }
            Err(e) if e.code() == Some(401) => {
                self.health.down(e.to_string());
                return Err(e.into_channel_error());
            }
            Err(e) => {
                tracing::warn!(error = %e, "telegram: getMe failed; retrying in the background");
                self.health.reconnecting(e.to_string());
                None
            }
        };
        let poller = poll::Poller {
            api: Arc::clone(&self.api),
            state: Arc::clone(&self.state),
            health: Arc::clone(&self.health),
            sink,
            poll_timeout_secs: self.config.poll_timeout_secs,
            max_attachment_bytes: self.config.max_attachment_bytes,
        };
        *receiver = Some(tokio::spawn(poller.run(me, offset)));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let result = outbound::deliver(&self.api, &*self.ledger, message).await;
        if let Err(e) = &result {
            self.health.error(e.to_string());
        }
        result
    }

    async fn progress(&self, chat_id: &str, _answers: &[String], progress: Progress) {
        if let Progress::Working = progress
            && let Err(e) = self.api.send_chat_action(chat_id, "typing").await
        {
            tracing::debug!(error = %e, "telegram: typing indicator not shown");
        }
    }

    /// sendChatAction: "The status is set for 5 seconds or less (when a message arrives from
    /// your bot, Telegram clients clear its typing status)".
    fn typing_lasts(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(5))
    }

    async fn verify(&self) -> Result<String, ChannelError> {
        let me = self
            .api
            .get_me()
            .await
            .map_err(api::ApiError::into_channel_error)?;
        Ok(match me.username {
            Some(username) => format!("@{username}"),
            None => me.first_name,
        })
    }

    fn health(&self) -> Health {
        self.health.snapshot()
    }

    async fn stop(&self) {
        if let Some(task) = self.receiver.lock().await.take() {
            task.abort();
        }
        self.health.stopped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_the_real_api_and_refuse_unknown_keys() {
        let table: toml::Table = toml::from_str("enabled = true").unwrap();
        let config: TelegramConfig = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(config.api_base, "https://api.telegram.org");
        assert_eq!(config.poll_timeout_secs, 30);
        assert_eq!(config.max_attachment_bytes, 20 * 1024 * 1024);
        let table: toml::Table = toml::from_str("enabled = true\napi_bsae = \"x\"").unwrap();
        assert!(
            toml::Value::Table(table)
                .try_into::<TelegramConfig>()
                .is_err()
        );
    }
}

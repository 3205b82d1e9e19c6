//! nanoclaw's Slack channel: Socket Mode for events (no public URL needed), the Web API for
//! replies and files.
//!
//! Receiving ([`socket`]): app mentions, DMs and channel messages, threads, shared files.
//! Sending: Markdown converted to mrkdwn ([`format`](mod@format)), split at 4,000 characters (Slack's
//! recommended limit; it truncates at 40,000), each part posted with `chat.postMessage` and
//! tagged with message metadata (`nanoclaw_part`: idempotency key and part number). A part
//! in doubt after a crash ([`SendAttempt::AfterCrash`]) is looked up among the channel's (or
//! thread's) recent messages by that metadata: found, it is not sent again. Files go out with
//! `files.getUploadURLExternal` → upload → `files.completeUploadExternal`; a file upload in
//! doubt cannot be looked up that way and is uploaded again.

pub mod api;
pub mod events;
pub mod format;
mod seen;
pub mod socket;

use std::sync::Arc;

use async_trait::async_trait;
use nanoclaw_channel::chunk::{self, Measure};
use nanoclaw_channel::{
    Channel, ChannelError, ChannelRegistration, ChannelSetup, Health, HealthCell, InboundSink,
    OutgoingMessage, Progress, SecretSpec, SendAttempt, SendLedger, send_parts,
};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::seen::Seen;

/// The channel's name.
pub const PLATFORM: &str = "slack";
/// Slack's recommended maximum message length (characters).
pub const MAX_MESSAGE_CHARS: usize = 4000;
const DEFAULT_API_BASE: &str = "https://slack.com/api";
const DEFAULT_MAX_ATTACHMENT_BYTES: u64 = 20 * 1024 * 1024;

pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: PLATFORM,
    summary: "Slack via Socket Mode (no public URL): app mentions, DMs, threads, files",
    secrets: &[
        SecretSpec {
            name: "slack.app_token",
            prompt: "App-level token xapp-… with connections:write",
            optional: false,
        },
        SecretSpec {
            name: "slack.bot_token",
            prompt: "Bot token xoxb-…",
            optional: false,
        },
    ],
    modes: &[],
    settings: &[
        ("api_base", DEFAULT_API_BASE),
        ("max_attachment_bytes", "20971520"),
    ],
    settings_secrets: None,
    factory: |setup| Box::pin(build(setup)),
};

/// `[channels.slack]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The Web API base (Enterprise Grid hosts and proxies use another).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Inbound files bigger than this are skipped with a note in the text.
    #[serde(default = "default_max_attachment_bytes")]
    pub max_attachment_bytes: u64,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_string()
}

fn default_max_attachment_bytes() -> u64 {
    DEFAULT_MAX_ATTACHMENT_BYTES
}

async fn build(setup: ChannelSetup) -> Result<Arc<dyn Channel>, ChannelError> {
    let config: SlackConfig = setup.settings_as(PLATFORM)?;
    let app_token = setup.require_secret(PLATFORM, "slack.app_token").await?;
    let bot_token = setup.require_secret(PLATFORM, "slack.bot_token").await?;
    let api = Api::new(&config.api_base, bot_token, app_token)?;
    Ok(Arc::new(SlackChannel::new(api, config, setup.ledger)))
}

pub struct SlackChannel {
    api: Arc<Api>,
    config: SlackConfig,
    ledger: Arc<dyn SendLedger>,
    health: Arc<HealthCell>,
    /// Survives restarts of the receive loop, so a redelivery after a restart is still
    /// recognized.
    seen: Arc<Seen>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl SlackChannel {
    pub fn new(api: Api, config: SlackConfig, ledger: Arc<dyn SendLedger>) -> SlackChannel {
        SlackChannel {
            api: Arc::new(api),
            config,
            ledger,
            health: Arc::new(HealthCell::default()),
            seen: Arc::new(Seen::default()),
            task: Mutex::new(None),
        }
    }

    /// Sends text part `index`; an in-doubt part is first looked for by its metadata.
    async fn send_text(
        api: &Api,
        message: &OutgoingMessage,
        text: &str,
        index: usize,
        attempt: SendAttempt,
    ) -> Result<Option<String>, ChannelError> {
        let chat = message.chat_id.as_str();
        let thread = message.thread.as_deref();
        let key = message.idempotency_key.as_str();
        if attempt == SendAttempt::AfterCrash
            && let Some(ts) = api.find_part(chat, thread, key, index).await?
        {
            tracing::info!(
                key,
                part = index,
                ts,
                "an in-doubt part was posted before the crash"
            );
            return Ok(Some(events::message_id(chat, &ts)));
        }
        let ts = api.post_message(chat, text, thread, key, index).await?;
        Ok(Some(events::message_id(chat, &ts)))
    }

    async fn send_file(
        api: &Api,
        message: &OutgoingMessage,
        file: &nanoclaw_channel::OutgoingFile,
    ) -> Result<Option<String>, ChannelError> {
        let data = tokio::fs::read(&file.path)
            .await
            .map_err(|e| ChannelError::Rejected {
                platform: PLATFORM.into(),
                detail: format!("reading {}: {e}", file.path.display()),
            })?;
        let id = api
            .upload_file(
                &message.chat_id,
                message.thread.as_deref(),
                &file.file_name,
                data,
            )
            .await?;
        Ok(Some(id))
    }
}

#[async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        self.stop().await;
        self.health.starting();
        let me = match self.api.auth_test().await {
            Ok(me) => me,
            Err(e) => {
                let e = ChannelError::from(e);
                self.health.down(e.to_string());
                return Err(e);
            }
        };
        let first = match socket::connect(&self.api).await {
            Ok(ws) => Some(ws),
            Err(e) if e.is_unauthorized() => {
                let e = e.into_channel_error();
                self.health.down(e.to_string());
                return Err(e);
            }
            Err(e) => {
                // The loop keeps trying with backoff.
                tracing::warn!(error = %e, "first slack connection failed");
                self.health.reconnecting(e.to_string());
                None
            }
        };
        if first.is_some() {
            self.health.connected();
        }
        let receiver = socket::Receiver::new(
            self.api.clone(),
            me,
            sink,
            self.health.clone(),
            self.seen.clone(),
            self.config.max_attachment_bytes,
        );
        *self.task.lock().await = Some(tokio::spawn(receiver.run(first)));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let text = format::to_mrkdwn(&message.text);
        let parts = if text.trim().is_empty() && !message.files.is_empty() {
            Vec::new()
        } else {
            chunk::split(&text, MAX_MESSAGE_CHARS, Measure::Chars)
        };
        let count = parts.len() + message.files.len();
        let api = &*self.api;
        let parts = &parts;
        send_parts(
            &*self.ledger,
            &message.idempotency_key,
            count,
            |i, attempt| async move {
                match parts.get(i) {
                    Some(text) => Self::send_text(api, message, text, i, attempt).await,
                    None => match message.files.get(i - parts.len()) {
                        Some(file) => Self::send_file(api, message, file).await,
                        None => Ok(None),
                    },
                }
            },
        )
        .await
    }

    /// Slack has no typing indicator for Socket Mode bots (the RTM `typing` message is gone
    /// with RTM), so progress is not shown.
    async fn progress(&self, _chat_id: &str, _answers: &[String], _progress: Progress) {}

    async fn verify(&self) -> Result<String, ChannelError> {
        let me = self.api.auth_test().await?;
        Ok(if me.team.is_empty() {
            me.user
        } else {
            format!("{} ({})", me.user, me.team)
        })
    }

    fn health(&self) -> Health {
        self.health.snapshot()
    }

    async fn stop(&self) {
        if let Some(task) = self.task.lock().await.take() {
            task.abort();
            self.health.stopped();
        }
    }
}

//! nanoclaw's Discord channel: messages arrive over the Gateway (a websocket, see
//! `gateway`), replies go out over REST (see `api`).
//!
//! Settings (`[channels.discord]`): `enabled`, `api_base` (default
//! `https://discord.com/api/v10`), `gateway_url` (default: asked from `GET /gateway/bot`),
//! `max_attachment_bytes` (default 20 MiB). Secret: `discord.bot_token`.
//!
//! Sends are exactly-once against the host's ledger; each part carries a `nonce` derived
//! from the message's idempotency key and part number with `enforce_nonce: true`. A part
//! in doubt after a crash ([`SendAttempt::AfterCrash`]) is therefore sent again with the
//! same nonce: if Discord created it within its nonce window ("the past few minutes"), it
//! returns that message instead of creating another. A host down for longer than that
//! window may show such a part twice.

mod api;
mod format;
mod gateway;
mod inbound;
mod model;
mod ratelimit;
mod session;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_channel::chunk::{self, Measure};
use nanoclaw_channel::{
    Channel, ChannelError, ChannelRegistration, ChannelSetup, Health, HealthCell, InboundSink,
    OutgoingFile, OutgoingMessage, Progress, SecretSpec, SendAttempt, SendLedger, send_parts,
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::gateway::Gateway;
use crate::inbound::Inbound;
use crate::session::SessionStore;

pub(crate) const PLATFORM: &str = "discord";
/// Discord's limit on a message's `content`, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// Files per message Discord accepts.
const MAX_FILES_PER_MESSAGE: usize = 10;
const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
const DEFAULT_MAX_ATTACHMENT_BYTES: u64 = 20 * 1024 * 1024;
/// How long `start` waits for the first connection before returning (it goes on inside).
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(15);
/// How long `stop` lets the dispatch handler finish what it was doing.
const STOP_GRACE: Duration = Duration::from_secs(1);
const TOKEN_SECRET: &str = "discord.bot_token";

pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: PLATFORM,
    summary: "Discord bot: server channels, threads and DMs over the Gateway",
    secrets: &[SecretSpec {
        name: TOKEN_SECRET,
        prompt: "Bot token from the Developer Portal",
        optional: false,
    }],
    modes: &[],
    settings: &[
        ("api_base", DEFAULT_API_BASE),
        ("gateway_url", ""),
        ("max_attachment_bytes", "20971520"),
    ],
    settings_secrets: None,
    factory: |setup| Box::pin(build(setup)),
};

/// `[channels.discord]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Empty: ask `GET /gateway/bot`.
    #[serde(default)]
    pub gateway_url: String,
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
    let config: DiscordConfig = setup.settings_as(PLATFORM)?;
    let token = setup.require_secret(PLATFORM, TOKEN_SECRET).await?;
    let api = Arc::new(Api::new(&config.api_base, token)?);
    let health = Arc::new(HealthCell::default());
    Ok(Arc::new(DiscordChannel {
        inbound: Arc::new(Inbound::new(
            Arc::clone(&api),
            Arc::clone(&health),
            config.max_attachment_bytes,
        )),
        sessions: Arc::new(SessionStore::new(setup.state)),
        gateway_url: Some(config.gateway_url).filter(|u| !u.is_empty()),
        ledger: setup.ledger,
        api,
        health,
        tasks: Mutex::new(None),
    }))
}

pub struct DiscordChannel {
    api: Arc<Api>,
    inbound: Arc<Inbound>,
    sessions: Arc<SessionStore>,
    health: Arc<HealthCell>,
    ledger: Arc<dyn SendLedger>,
    gateway_url: Option<String>,
    /// The gateway reader and the dispatch handler, while started.
    tasks: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

/// One message Discord gets: a chunk of the text and the files that go with it.
struct Part {
    content: String,
    files: Vec<OutgoingFile>,
}

#[async_trait]
impl Channel for DiscordChannel {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        self.stop().await;
        self.health.starting();
        let me = match self.api.me().await {
            Ok(me) => me,
            Err(e) => {
                self.health.down(e.to_string());
                return Err(e);
            }
        };
        self.inbound.set_bot(me).await;
        let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = oneshot::channel();
        let gateway = Gateway {
            api: Arc::clone(&self.api),
            sessions: Arc::clone(&self.sessions),
            health: Arc::clone(&self.health),
            dispatches: dispatch_tx,
            gateway_url: self.gateway_url.clone(),
        };
        let handler = tokio::spawn(Arc::clone(&self.inbound).run(
            dispatch_rx,
            sink,
            Arc::clone(&self.sessions),
        ));
        let reader = tokio::spawn(gateway.run(first_tx));
        *self.tasks.lock().await = Some((reader, handler));
        match tokio::time::timeout(FIRST_CONNECT_WAIT, first_rx).await {
            Ok(Ok(Err(e))) => Err(e),
            _ => Ok(()),
        }
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let target = message.thread.as_deref().unwrap_or(&message.chat_id);
        let parts = plan(message);
        let key = &message.idempotency_key;
        send_parts(&*self.ledger, key, parts.len(), |i, attempt| {
            let part = &parts[i];
            let mut payload = json!({
                "content": part.content,
                "nonce": nonce(key, i),
                "enforce_nonce": true,
                // Agent text must not ping @everyone, @here or roles.
                "allowed_mentions": { "parse": ["users"] },
            });
            if i == 0
                && let Some(reply_to) = &message.reply_to
            {
                payload["message_reference"] =
                    json!({ "message_id": reply_to, "fail_if_not_exists": false });
            }
            if attempt == SendAttempt::AfterCrash {
                tracing::info!(key, part = i, "discord: resending an in-doubt part with its nonce; Discord returns the first if it exists");
            }
            let files = part.files.clone();
            let api = Arc::clone(&self.api);
            async move { api.create_message(target, payload, files).await.map(Some) }
        })
        .await
    }

    async fn progress(&self, chat_id: &str, _answers: &[String], progress: Progress) {
        if let Progress::Working = progress
            && let Err(e) = self.api.typing(chat_id).await
        {
            tracing::debug!(chat_id, error = %e, "discord: typing indicator not shown");
        }
    }

    /// Trigger Typing Indicator: it "expires after 10 seconds" (or when the bot posts).
    fn typing_lasts(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(10))
    }

    async fn verify(&self) -> Result<String, ChannelError> {
        Ok(self.api.me().await?.username)
    }

    fn health(&self) -> Health {
        self.health.snapshot()
    }

    async fn stop(&self) {
        let Some((reader, handler)) = self.tasks.lock().await.take() else {
            return;
        };
        // The reader goes first; the handler then records what the host settles within
        // the grace (so a restart does not replay it) and ends, or is cut short.
        reader.abort();
        let _ = reader.await;
        let mut handler = handler;
        if tokio::time::timeout(STOP_GRACE, &mut handler)
            .await
            .is_err()
        {
            handler.abort();
        }
        // The handler saves the sequence when it ends; cut short, it saves here.
        self.sessions.flush().await;
        self.health.stopped();
    }
}

/// The text in 2,000-character chunks; files (ten per message) with the last chunk, more
/// in messages of their own.
fn plan(message: &OutgoingMessage) -> Vec<Part> {
    let text = format::to_discord(&message.text);
    let mut parts: Vec<Part> = chunk::split(&text, MAX_MESSAGE_CHARS, Measure::Chars)
        .into_iter()
        .map(|content| Part {
            content,
            files: Vec::new(),
        })
        .collect();
    let mut groups = message.files.chunks(MAX_FILES_PER_MESSAGE);
    if let (Some(first), Some(last)) = (groups.next(), parts.last_mut()) {
        last.files = first.to_vec();
    }
    parts.extend(groups.map(|g| Part {
        content: String::new(),
        files: g.to_vec(),
    }));
    parts
}

/// A stable nonce for part `index` of message `key`: Discord takes at most 25 characters.
fn nonce(key: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{key}:{index}").as_bytes());
    let mut text = hex::encode(digest);
    text.truncate(25);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_stable_short_and_distinct_per_part() {
        assert_eq!(nonce("k", 0), nonce("k", 0));
        assert_ne!(nonce("k", 0), nonce("k", 1));
        assert_ne!(nonce("k", 0), nonce("j", 0));
        assert_eq!(nonce("k", 0).len(), 25);
    }

    #[test]
    fn files_ride_on_the_last_chunk_ten_at_a_time() {
        let file = |n: usize| OutgoingFile {
            file_name: format!("f{n}"),
            path: format!("/tmp/f{n}").into(),
            mime_type: None,
        };
        let message = OutgoingMessage {
            text: "word ".repeat(500),
            files: (0..12).map(file).collect(),
            ..OutgoingMessage::default()
        };
        let parts = plan(&message);
        assert_eq!(parts.len(), 3);
        assert!(parts[0].files.is_empty());
        assert_eq!(parts[1].files.len(), 10);
        assert_eq!(parts[2].files.len(), 2);
        assert!(parts[2].content.is_empty());
    }

    #[test]
    fn settings_reject_unknown_keys_and_default_to_discord() {
        let config: DiscordConfig = toml::from_str("enabled = true").unwrap();
        assert_eq!(config.api_base, DEFAULT_API_BASE);
        assert_eq!(config.max_attachment_bytes, 20 * 1024 * 1024);
        assert!(toml::from_str::<DiscordConfig>("enabled = true\ntoken = \"x\"").is_err());
    }
}

//! nanoclaw's WhatsApp channel. One channel, `whatsapp`, with a `mode` setting.
//!
//! ## `mode = "cloud"` (the default): a business number on the WhatsApp Cloud API
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api>)
//!
//! - **In**: Meta posts signed webhook deliveries to a small server the channel runs on
//!   `listen` (default `127.0.0.1:8790`, path `webhook_path`); a reverse proxy or tunnel
//!   makes it public, and the app's webhook is subscribed to the `messages` field with the
//!   `whatsapp.verify_token` secret ([`webhook`]). Each delivery is answered 200 only once
//!   the host has settled every message in it, else 500 so Meta delivers it again; the
//!   host deduplicates by `platform_msg_id` (the `wamid`). Text, image, document,
//!   audio/voice, video and sticker messages (the caption is the text; files are
//!   downloaded with `GET /{media_id}` then the media URL, up to `max_attachment_bytes`,
//!   a larger one becomes a note). Every 1:1 chat addresses the bot; a Groups API group
//!   (`group_id`) does when a message replies to the business or @mentions its number
//!   ([`inbound`]). The business's own messages are dropped; WhatsApp has no bot accounts,
//!   so `from_bot` is never set.
//! - **Out**: Markdown to WhatsApp markup ([`format`](mod@format)), 4,096-character parts, files as
//!   documents, through the send ledger; a part in doubt after a crash is not sent again
//!   ([`outbound`]). Typing: the read receipt with `typing_indicator` on the last message
//!   the turn answers.
//! - **Errors** ([`api`]): HTTP 429 and Graph codes 4, 80007, 130429, 131056 →
//!   `RateLimited` (the `Retry-After` header if sent, else 60 s); HTTP 401/403 and code 190
//!   → `Unauthorized` (and at start the channel goes down, so the supervisor restarts it);
//!   other 4xx (100, 131026 undeliverable, 131047 outside the 24-hour window) →
//!   `Rejected`; no connection → `NotConnected`; 5xx and timeouts → `Failed`.
//!
//! ## `mode = "linked"`: a personal number as a linked device ([`linked`], feature `linked`)
//!
//! nanoclaw becomes one of the owner's linked devices (WhatsApp Web multi-device, through
//! the `whatsapp-rust` crate), as NanoClaw's Baileys channel does. `nanoclaw channel add
//! whatsapp --set mode=linked` shows a QR code in the terminal (and a pairing code when
//! `phone_number` is set) and waits until the phone links it. The session is one file in
//! the channel's directory, sealed with XChaCha20-Poly1305 under the vault secret
//! `whatsapp.session_key`. The assistant posts as the owner, so its messages start with
//! `<assistant name>: `, the owner's own messages are ignored except in "Message yourself",
//! and a group message addresses it when it mentions the owner's number or replies to it.
//! What is tested offline and what is not: see docs/CHANNELS.md.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use nanoclaw_channel::{
    Channel, ChannelError, ChannelRegistration, ChannelSetup, Health, HealthCell, InboundSink,
    OutgoingMessage, Progress, SecretSpec, SendLedger,
};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::task::JoinHandle;

pub mod api;
pub mod format;
pub mod inbound;
#[cfg(feature = "linked")]
pub mod linked;
pub mod outbound;
pub mod webhook;

/// The channel's name.
pub const NAME: &str = "whatsapp";
/// The vault secret holding the system-user access token.
pub const TOKEN_SECRET: &str = "whatsapp.access_token";
/// The vault secret holding the app secret (signs webhook deliveries).
pub const APP_SECRET: &str = "whatsapp.app_secret";
/// The vault secret holding the webhook subscription's verify token.
pub const VERIFY_TOKEN_SECRET: &str = "whatsapp.verify_token";
const DEFAULT_API_BASE: &str = "https://graph.facebook.com";
const DEFAULT_API_VERSION: &str = "v21.0";
const DEFAULT_LISTEN: &str = "127.0.0.1:8790";
const DEFAULT_WEBHOOK_PATH: &str = "/webhook/whatsapp";
const DEFAULT_MAX_ATTACHMENT: u64 = 20 * 1024 * 1024;

/// What the host lists and builds.
pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: NAME,
    summary: "WhatsApp: a Cloud API business number (signed webhooks in, Graph API out), or your own number as a linked device (mode=linked, QR code): chats, groups, files",
    secrets: &[
        SecretSpec {
            name: TOKEN_SECRET,
            prompt: "System-user access token (Business Settings → System users, whatsapp_business_messaging)",
            optional: false,
        },
        SecretSpec {
            name: APP_SECRET,
            prompt: "App secret (App settings → Basic), to check webhook signatures",
            optional: false,
        },
        SecretSpec {
            name: VERIFY_TOKEN_SECRET,
            prompt: "Verify token: any string, entered again in the app's webhook settings",
            optional: false,
        },
    ],
    settings: &[
        ("mode", "cloud"),
        ("phone_number_id", ""),
        ("api_base", DEFAULT_API_BASE),
        ("api_version", DEFAULT_API_VERSION),
        ("listen", DEFAULT_LISTEN),
        ("webhook_path", DEFAULT_WEBHOOK_PATH),
        ("max_attachment_bytes", "20971520"),
    ],
    modes: &[nanoclaw_channel::ModeSecrets {
        mode: "linked",
        secrets: &[],
        generated: &["whatsapp.session_key"],
    }],
    settings_secrets: None,
    factory,
};

type BuiltChannel =
    Pin<Box<dyn std::future::Future<Output = Result<Arc<dyn Channel>, ChannelError>> + Send>>;

fn factory(setup: ChannelSetup) -> BuiltChannel {
    Box::pin(async move {
        let config: WhatsAppConfig = setup.settings_as(NAME)?;
        match config.mode {
            Mode::Cloud => {
                let channel = CloudChannel::from_setup(config, setup).await?;
                Ok(Arc::new(channel) as Arc<dyn Channel>)
            }
            Mode::Linked => linked_channel(config, setup).await,
        }
    })
}

#[cfg(feature = "linked")]
async fn linked_channel(
    config: WhatsAppConfig,
    setup: ChannelSetup,
) -> Result<Arc<dyn Channel>, ChannelError> {
    let linked = linked::LinkedConfig {
        phone_number: config
            .phone_number
            .as_deref()
            .map(inbound::digits)
            .filter(|d| !d.is_empty()),
        max_attachment_bytes: config.max_attachment_bytes,
        link_timeout: std::time::Duration::from_secs(config.link_timeout_secs.max(10)),
        ws_url: config
            .ws_url
            .clone()
            .unwrap_or_else(|| linked::DEFAULT_WS_URL.to_string()),
        web_version: config
            .web_version
            .as_deref()
            .map(linked::parse_version)
            .transpose()?,
        assistant_has_own_number: config.assistant_has_own_number,
    };
    let channel = linked::LinkedChannel::from_setup(linked, setup).await?;
    Ok(Arc::new(channel) as Arc<dyn Channel>)
}

#[cfg(not(feature = "linked"))]
async fn linked_channel(
    _config: WhatsAppConfig,
    _setup: ChannelSetup,
) -> Result<Arc<dyn Channel>, ChannelError> {
    Err(ChannelError::Setup(
        "[channels.whatsapp] mode = \"linked\" is not in this build (built without the `linked` feature); use mode = \"cloud\""
            .to_string(),
    ))
}

/// How the channel reaches WhatsApp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A business number on the Cloud API.
    #[default]
    Cloud,
    /// A personal number as a linked device.
    Linked,
}

/// `[channels.whatsapp]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Mode,
    /// The Graph API server.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The business phone number's id (WhatsApp Manager → API setup), not the number.
    #[serde(default)]
    pub phone_number_id: String,
    /// Where the webhook server listens.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_webhook_path")]
    pub webhook_path: String,
    /// Larger inbound files are skipped with a note.
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
    /// Linked mode: the account's number (international, digits): `channel add` shows a
    /// pairing code besides the QR code.
    #[serde(default)]
    pub phone_number: Option<String>,
    /// Linked mode: how long `channel add` waits for the phone.
    #[serde(default = "default_link_timeout")]
    pub link_timeout_secs: u64,
    /// Linked mode: the WhatsApp Web socket (default `wss://web.whatsapp.com/ws/chat`).
    #[serde(default)]
    pub ws_url: Option<String>,
    /// Linked mode: the WhatsApp Web version to announce, e.g. `"2.3000.1017531287"`,
    /// instead of the one fetched from web.whatsapp.com.
    #[serde(default)]
    pub web_version: Option<String>,
    /// Linked mode: the assistant has a number of its own, so what it sends is not
    /// prefixed with its name.
    #[serde(default)]
    pub assistant_has_own_number: bool,
}

fn default_link_timeout() -> u64 {
    180
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_string()
}
fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_string()
}
fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_webhook_path() -> String {
    DEFAULT_WEBHOOK_PATH.to_string()
}
fn default_max_attachment() -> u64 {
    DEFAULT_MAX_ATTACHMENT
}

/// The Cloud API channel.
pub struct CloudChannel {
    api: Arc<api::Api>,
    config: WhatsAppConfig,
    app_secret: SecretString,
    verify_token: SecretString,
    ledger: Arc<dyn SendLedger>,
    health: Arc<HealthCell>,
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl CloudChannel {
    pub async fn from_setup(
        config: WhatsAppConfig,
        setup: ChannelSetup,
    ) -> Result<CloudChannel, ChannelError> {
        if config.phone_number_id.trim().is_empty() {
            return Err(ChannelError::Setup(
                "[channels.whatsapp] needs phone_number_id (WhatsApp Manager → API setup)"
                    .to_string(),
            ));
        }
        if !config.webhook_path.starts_with('/') {
            return Err(ChannelError::Setup(format!(
                "[channels.whatsapp] webhook_path must start with '/': {:?}",
                config.webhook_path
            )));
        }
        let token = setup.require_secret(NAME, TOKEN_SECRET).await?;
        let app_secret = setup.require_secret(NAME, APP_SECRET).await?;
        let verify_token = setup.require_secret(NAME, VERIFY_TOKEN_SECRET).await?;
        let api = api::Api::new(
            &config.api_base,
            &config.api_version,
            &config.phone_number_id,
            token,
        )?;
        Ok(CloudChannel {
            api: Arc::new(api),
            config,
            app_secret,
            verify_token,
            ledger: setup.ledger,
            health: Arc::new(HealthCell::default()),
            server: tokio::sync::Mutex::new(None),
        })
    }
}

#[async_trait]
impl Channel for CloudChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Checks the token once (a refused one fails the start), binds the webhook server and
    /// serves in a task; a failed bind is retried there with backoff.
    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let mut server = self.server.lock().await;
        if let Some(old) = server.take() {
            old.abort();
        }
        self.health.starting();
        match self.api.phone_number().await {
            Ok(number) => tracing::info!(
                name = %number.verified_name,
                number = %number.display_phone_number,
                "whatsapp: the token works"
            ),
            Err(e) if e.is_unauthorized() => {
                self.health.down(e.to_string());
                return Err(e.into_channel_error());
            }
            Err(e) => {
                tracing::warn!(error = %e, "whatsapp: could not check the number; serving the webhook anyway");
                self.health.error(e.to_string());
            }
        }
        let first = nanoclaw_channel::bind_first(
            &self.config.listen,
            &self.health,
            "whatsapp",
            "webhook server: ",
        )
        .await;
        let hook = Arc::new(webhook::Webhook {
            api: Arc::clone(&self.api),
            phone_number_id: self.config.phone_number_id.clone(),
            app_secret: self.app_secret.clone(),
            verify_token: self.verify_token.clone(),
            health: Arc::clone(&self.health),
            sink,
            max_attachment_bytes: self.config.max_attachment_bytes,
        });
        *server = Some(tokio::spawn(webhook::run(
            self.config.listen.clone(),
            self.config.webhook_path.clone(),
            hook,
            first,
        )));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let result = outbound::deliver(&self.api, &*self.ledger, message).await;
        if let Err(e) = &result {
            self.health.error(e.to_string());
        }
        result
    }

    /// Marks the newest answered message read with the typing indicator (WhatsApp shows
    /// it for up to 25 s or until the reply).
    async fn progress(&self, _chat_id: &str, answers: &[String], progress: Progress) {
        if let Progress::Working = progress
            && let Some(last) = answers.last()
            && let Err(e) = self.api.mark_read(last, true).await
        {
            tracing::debug!(error = %e, "whatsapp: typing indicator not shown");
        }
    }

    /// the typing indicator "will be dismissed once you respond, or after 25 seconds, whichever comes first".
    fn typing_lasts(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(25))
    }

    async fn verify(&self) -> Result<String, ChannelError> {
        let number = self
            .api
            .phone_number()
            .await
            .map_err(api::ApiError::into_channel_error)?;
        Ok(format!(
            "{} ({})",
            number.verified_name, number.display_phone_number
        ))
    }

    fn health(&self) -> Health {
        self.health.snapshot()
    }

    async fn stop(&self) {
        if let Some(task) = self.server.lock().await.take() {
            task.abort();
            // Wait for the listener to be dropped, so a restart can bind the port again.
            let _ = task.await;
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
        let config: WhatsAppConfig = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(config.mode, Mode::Cloud);
        assert_eq!(config.api_base, "https://graph.facebook.com");
        assert_eq!(config.api_version, "v21.0");
        assert_eq!(config.listen, "127.0.0.1:8790");
        assert_eq!(config.webhook_path, "/webhook/whatsapp");
        assert_eq!(config.max_attachment_bytes, 20 * 1024 * 1024);
        let table: toml::Table = toml::from_str("mode = \"linked\"").unwrap();
        let config: WhatsAppConfig = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(config.mode, Mode::Linked);
        for bad in ["enabled = true\napi_bsae = \"x\"", "mode = \"web\""] {
            let table: toml::Table = toml::from_str(bad).unwrap();
            assert!(
                toml::Value::Table(table)
                    .try_into::<WhatsAppConfig>()
                    .is_err()
            );
        }
    }
}

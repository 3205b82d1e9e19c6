//! nanoclaw's webhook channel: a generic inbound HTTP endpoint per hook.
//!
//! - **In** ([`server`]): `POST /hooks/<name>` on `listen` (default `127.0.0.1:8791`; put a
//!   reverse proxy or tunnel in front for the internet). Each hook is
//!   `[channels.webhook.hooks.<name>]` with its agent `group`, its signing `scheme`
//!   (`github` or `generic`, see [`sign`]), an optional `reply_url` and an optional
//!   `max_body_bytes`; its secret is the vault secret `webhook.<name>.secret`. The signature
//!   is checked on the raw body before anything parses it. A delivery becomes one message
//!   in the chat `hook:<name>` (sender: the hook's name, addressed to the assistant), framed
//!   as untrusted content ([`text`]), and is answered 202 only once the host has stored it
//!   durably. The delivery id (`X-GitHub-Delivery`, else `X-Webhook-Id`, else the
//!   signature) is the message's platform id, so a redelivery — also after a restart — is
//!   stored once (answered 200 `duplicate`); the signatures of stored deliveries are kept in
//!   the host's database, so the same signed bytes under a new (unsigned) delivery id are a
//!   duplicate too, also after a restart.
//! - **Out** ([`reply`]): with `reply_url`, the reply is POSTed there as JSON
//!   `{hook, text, in_reply_to, kind, part, parts, files}`, signed with the hook's secret in
//!   the generic scheme, with an `Idempotency-Key` per part, through the send ledger
//!   (a part in doubt after a crash is posted again with the same key: the receiver drops
//!   the duplicate). Without `reply_url`, the host sends replies to the owner's main chat
//!   ([`Channel::configured_chats`]).
//! - **Limits**: body over the hook's limit 413 (refused from `Content-Length`, or as soon
//!   as the bytes read pass it — never buffered beyond it), body not complete within
//!   `body_timeout_secs` 408, more than `max_in_flight` deliveries at once or more than
//!   `rate_per_minute` for one hook 429 with `Retry-After`, unknown hook 404, other methods
//!   405, bad or missing signature 401, a stale generic timestamp 401; every error body is
//!   `{"error": "..."}`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use nanoclaw_channel::{
    Channel, ChannelError, ChannelRegistration, ChannelSetup, ConfiguredChat, Health, HealthCell,
    InboundSink, OutgoingMessage, SendLedger,
};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::task::JoinHandle;

pub mod reply;
pub mod server;
pub mod sign;
pub mod text;

/// The channel's name.
pub const NAME: &str = "webhook";
/// Chats of this channel are `hook:<name>`.
pub const CHAT_PREFIX: &str = "hook:";
const DEFAULT_LISTEN: &str = "127.0.0.1:8791";

/// The vault secret of hook `name`.
pub fn secret_name(hook: &str) -> String {
    format!("webhook.{hook}.secret")
}

/// Every vault secret the settings name (one per configured hook).
fn settings_secrets(settings: &toml::Table) -> Vec<String> {
    settings
        .get("hooks")
        .and_then(toml::Value::as_table)
        .map(|hooks| hooks.keys().map(|k| secret_name(k)).collect())
        .unwrap_or_default()
}

/// What the host lists and builds.
pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: NAME,
    summary: "Webhooks: signed HTTP POSTs (GitHub's or a generic HMAC scheme) become turns for a group; replies to a URL or your main chat (`nanoclaw webhook add`)",
    secrets: &[],
    modes: &[],
    settings: &[("listen", DEFAULT_LISTEN)],
    settings_secrets: Some(settings_secrets),
    factory,
};

type BuiltChannel =
    Pin<Box<dyn std::future::Future<Output = Result<Arc<dyn Channel>, ChannelError>> + Send>>;

fn factory(setup: ChannelSetup) -> BuiltChannel {
    Box::pin(async move {
        let channel = WebhookChannel::from_setup(setup).await?;
        Ok(Arc::new(channel) as Arc<dyn Channel>)
    })
}

/// How a hook's deliveries are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// `X-Signature: t=<unix secs>,v1=<hex>` over `"<t>.<body>"`.
    Generic,
}

/// `[channels.webhook.hooks.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The folder of the agent group the deliveries go to.
    pub group: String,
    pub scheme: Scheme,
    /// Where replies are POSTed; none: the owner's main chat.
    #[serde(default)]
    pub reply_url: Option<String>,
    /// This hook's body limit (default: the channel's).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

/// `[channels.webhook]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The default body limit.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A body must arrive completely within this time (408 otherwise).
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Generic scheme: how far `t` may be from the receiver's clock.
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
    /// Deliveries handled at once; more get 429.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Deliveries one hook may make per minute; more get 429.
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    /// Replies longer than this (characters) are POSTed in parts.
    #[serde(default = "default_reply_max")]
    pub reply_max_chars: usize,
    /// Files attached to a reply, in total, at most (bytes); more fails the reply.
    #[serde(default = "default_reply_files")]
    pub reply_max_file_bytes: u64,
    #[serde(default)]
    pub hooks: BTreeMap<String, HookConfig>,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_body_timeout() -> u64 {
    10
}
fn default_replay_window() -> u64 {
    300
}
fn default_in_flight() -> usize {
    64
}
fn default_rate() -> u32 {
    120
}
fn default_reply_max() -> usize {
    65_536
}
fn default_reply_files() -> u64 {
    10 * 1024 * 1024
}

/// Whether `name` may name a hook (it is a URL path segment and part of a secret's name).
pub fn valid_hook_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// One configured hook with its secret.
#[derive(Clone)]
pub struct Hook {
    pub name: String,
    pub config: HookConfig,
    /// `None`: not in the vault; its deliveries are refused and the channel does not start.
    pub secret: Option<SecretString>,
}

impl WebhookConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ChannelError> {
        let bad = |m: String| Err(ChannelError::Setup(format!("[channels.webhook] {m}")));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "listen must be an address and port such as 127.0.0.1:8791, not {:?}",
                self.listen
            ));
        }
        for (name, hook) in &self.hooks {
            if !valid_hook_name(name) {
                return bad(format!(
                    "hook name {name:?}: use 1-64 lowercase letters, digits, '-' or '_'"
                ));
            }
            if hook.group.trim().is_empty() {
                return bad(format!("hooks.{name}.group is empty"));
            }
            if let Some(url) = &hook.reply_url {
                match reqwest::Url::parse(url) {
                    Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                    _ => {
                        return bad(format!(
                            "hooks.{name}.reply_url is not an http(s) URL: {url:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The webhook channel.
pub struct WebhookChannel {
    config: WebhookConfig,
    hooks: Arc<BTreeMap<String, Hook>>,
    replies: reply::Replier,
    health: Arc<HealthCell>,
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Remembered signatures, kept in the host's database (across restarts).
    seen: Arc<server::Seen>,
}

impl WebhookChannel {
    pub async fn from_setup(setup: ChannelSetup) -> Result<WebhookChannel, ChannelError> {
        let config: WebhookConfig = setup.settings_as(NAME)?;
        config.validate()?;
        let mut hooks = BTreeMap::new();
        for (name, hook) in &config.hooks {
            let secret = setup.secrets.secret(&secret_name(name)).await?;
            hooks.insert(
                name.clone(),
                Hook {
                    name: name.clone(),
                    config: hook.clone(),
                    secret,
                },
            );
        }
        let hooks = Arc::new(hooks);
        let ledger: Arc<dyn SendLedger> = setup.ledger;
        Ok(WebhookChannel {
            replies: reply::Replier::new(
                Arc::clone(&hooks),
                ledger,
                config.reply_max_chars,
                config.reply_max_file_bytes,
            )?,
            config,
            hooks,
            health: Arc::new(HealthCell::default()),
            server: tokio::sync::Mutex::new(None),
            seen: Arc::new(server::Seen::durable(setup.state)),
        })
    }

    /// Hooks whose secret is not in the vault.
    fn missing_secrets(&self) -> Vec<String> {
        self.hooks
            .values()
            .filter(|h| h.secret.is_none())
            .map(|h| secret_name(&h.name))
            .collect()
    }
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Binds the listener and serves in a task; a failed bind is retried there with
    /// backoff (health shows it). A hook without its secret fails the start: deliveries
    /// for it could never be checked.
    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let missing = self.missing_secrets();
        if !missing.is_empty() {
            let error = format!(
                "not in the vault: {}; run `nanoclaw webhook add NAME --group G` again",
                missing.join(", ")
            );
            self.health.down(error.clone());
            return Err(ChannelError::Setup(error));
        }
        let mut server = self.server.lock().await;
        if let Some(old) = server.take() {
            old.abort();
            let _ = old.await;
        }
        self.health.starting();
        let first =
            nanoclaw_channel::bind_first(&self.config.listen, &self.health, "webhook", "").await;
        let state = Arc::new(server::Server::new(
            &self.config,
            Arc::clone(&self.hooks),
            Arc::clone(&self.health),
            sink,
            Arc::clone(&self.seen),
        ));
        *server = Some(tokio::spawn(server::run(
            self.config.listen.clone(),
            state,
            first,
        )));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let result = self.replies.deliver(message).await;
        if let Err(e) = &result {
            self.health.error(e.to_string());
        }
        result
    }

    /// The listener address parses (checked when built) and every hook has its secret.
    async fn verify(&self) -> Result<String, ChannelError> {
        let missing = self.missing_secrets();
        if !missing.is_empty() {
            return Err(ChannelError::Setup(format!(
                "not in the vault: {}",
                missing.join(", ")
            )));
        }
        Ok(format!(
            "http://{}/hooks/<name> ({} hook{})",
            self.config.listen,
            self.hooks.len(),
            if self.hooks.len() == 1 { "" } else { "s" }
        ))
    }

    fn configured_chats(&self) -> Vec<ConfiguredChat> {
        self.hooks
            .values()
            .map(|h| ConfiguredChat {
                chat_id: format!("{CHAT_PREFIX}{}", h.name),
                name: format!("webhook {}", h.name),
                group: h.config.group.clone(),
                replies_to_owner: h.config.reply_url.is_none(),
            })
            .collect()
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
    fn settings_have_safe_defaults_and_refuse_mistakes() {
        let config: WebhookConfig = toml::Value::Table(
            toml::from_str("enabled = true\n[hooks.gh]\ngroup = \"main\"\nscheme = \"github\"\n")
                .unwrap(),
        )
        .try_into()
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:8791");
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.replay_window_secs, 300);
        assert_eq!(config.hooks["gh"].scheme, Scheme::Github);
        config.validate().unwrap();
        for bad in [
            "listen = \"localhost\"",
            "[hooks.Bad]\ngroup = \"main\"\nscheme = \"github\"",
            "[hooks.x]\ngroup = \"\"\nscheme = \"github\"",
            "[hooks.x]\ngroup = \"main\"\nscheme = \"github\"\nreply_url = \"file:///etc/passwd\"",
        ] {
            let config: WebhookConfig = toml::Value::Table(toml::from_str(bad).unwrap())
                .try_into()
                .unwrap();
            assert!(config.validate().is_err(), "{bad}");
        }
        for bad in [
            "[hooks.x]\ngroup = \"main\"\nscheme = \"sha1\"",
            "[hooks.x]\ngroup = \"main\"",
            "lisen = \"127.0.0.1:1\"",
        ] {
            let parsed: Result<WebhookConfig, _> =
                toml::Value::Table(toml::from_str(bad).unwrap()).try_into();
            assert!(parsed.is_err(), "{bad}");
        }
        let table: toml::Table =
            toml::from_str("[hooks.a]\ngroup = \"g\"\n[hooks.b]\ngroup = \"g\"").unwrap();
        assert_eq!(
            settings_secrets(&table),
            vec!["webhook.a.secret", "webhook.b.secret"]
        );
    }
}

//! How a channel is built: its registration, its settings and what the host lends it.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::channel::{Channel, ChannelError};
use crate::ledger::SendLedger;

/// Reads channel credentials from the vault (host side only).
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's value, `None` when it is not set.
    async fn secret(&self, name: &str) -> Result<Option<SecretString>, ChannelError>;

    /// Stores a secret the channel made itself (a key it generated), replacing any value.
    /// The default refuses: only a source backed by the vault can keep one.
    async fn put_secret(&self, name: &str, _value: SecretString) -> Result<(), ChannelError> {
        Err(ChannelError::Setup(format!(
            "the secret {name:?} cannot be stored here (no vault)"
        )))
    }
}

/// A channel's small durable state (cursors, offsets, resume tokens), scoped to the channel.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<String>, ChannelError>;
    async fn put(&self, key: &str, value: &str) -> Result<(), ChannelError>;
    /// Removes the values whose key starts with `prefix` and that were last written more
    /// than `age` ago; returns how many. For what a channel remembers per message
    /// (signatures seen, mails answered), which would otherwise grow forever.
    async fn forget_older(
        &self,
        prefix: &str,
        age: std::time::Duration,
    ) -> Result<usize, ChannelError>;
}

/// Forgets `state`'s values under `prefix` older than `age`, now and once a day, until the
/// task is aborted (run it beside the channel's receiver). `label` names the channel and
/// what is forgotten in logs.
pub async fn forget_older_daily(
    state: Arc<dyn StateStore>,
    prefix: &str,
    age: std::time::Duration,
    label: &str,
) {
    loop {
        match state.forget_older(prefix, age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(forgotten = n, "{label}: forgotten"),
            Err(e) => tracing::warn!(error = %e, "{label}: could not forget old entries"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
    }
}

/// Everything a factory gets.
pub struct ChannelSetup {
    /// The channel's `[channels.<name>]` table from config.toml (`enabled` included).
    pub settings: toml::Table,
    pub secrets: Arc<dyn SecretSource>,
    pub state: Arc<dyn StateStore>,
    pub ledger: Arc<dyn SendLedger>,
    /// The assistant's name (e.g. `Andy`), for platforms that prefix or mention it.
    pub assistant_name: String,
    /// A private directory for the channel's files (0700).
    pub data_dir: PathBuf,
}

impl ChannelSetup {
    /// Deserializes the settings table into the channel's own config type, naming the
    /// channel in the error.
    pub fn settings_as<T: serde::de::DeserializeOwned>(
        &self,
        channel: &str,
    ) -> Result<T, ChannelError> {
        toml::Value::Table(self.settings.clone())
            .try_into()
            .map_err(|e| ChannelError::Setup(format!("[channels.{channel}] in config.toml: {e}")))
    }

    /// The secret `name`, or an error telling the owner how to set it.
    pub async fn require_secret(
        &self,
        channel: &str,
        name: &str,
    ) -> Result<SecretString, ChannelError> {
        self.secrets.secret(name).await?.ok_or_else(|| {
            ChannelError::Setup(format!(
                "the {channel} channel needs the secret {name:?} in the vault; run `nanoclaw channel add {channel}`"
            ))
        })
    }
}

/// A boxed future, for factories in a `const` registry.
pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Builds a channel from its setup (does not start it).
pub type ChannelFactory =
    fn(ChannelSetup) -> BoxFuture<'static, Result<Arc<dyn Channel>, ChannelError>>;

/// A secret a channel needs, for `nanoclaw channel add`.
#[derive(Debug, Clone, Copy)]
pub struct SecretSpec {
    /// Vault name, e.g. `telegram.bot_token`.
    pub name: &'static str,
    /// What to ask the owner, e.g. "Bot token from @BotFather".
    pub prompt: &'static str,
    /// The channel works without it (an IRC server with no password): `channel add` takes
    /// an empty answer as "none" and stores nothing, and `channel list` does not call it
    /// missing.
    pub optional: bool,
}

/// The secrets of one value of a channel's `mode` setting, when they differ from the
/// channel's default [`ChannelRegistration::secrets`].
#[derive(Debug, Clone, Copy)]
pub struct ModeSecrets {
    /// The `mode` setting's value, e.g. `linked`.
    pub mode: &'static str,
    /// What `channel add` asks for in this mode.
    pub secrets: &'static [SecretSpec],
    /// Secrets the channel makes itself in this mode (never asked for; removed with the
    /// channel).
    pub generated: &'static [&'static str],
}

/// What a channel crate exports so the host can list, configure and build it.
#[derive(Clone, Copy)]
pub struct ChannelRegistration {
    pub name: &'static str,
    /// One line for `nanoclaw channel list`.
    pub summary: &'static str,
    /// What `channel add` asks for (unless a [`ModeSecrets`] for the configured mode says
    /// otherwise).
    pub secrets: &'static [SecretSpec],
    /// Modes whose secrets differ from `secrets`.
    pub modes: &'static [ModeSecrets],
    /// Settings keys `channel add` asks for (besides secrets), with their defaults.
    pub settings: &'static [(&'static str, &'static str)],
    /// Secrets named by the settings themselves, for channels configured per item (one
    /// secret per webhook: `webhook.<hook>.secret`). Asked for by the channel's own
    /// command; listed as missing and removed with the channel like the others.
    pub settings_secrets: Option<fn(&toml::Table) -> Vec<String>>,
    pub factory: ChannelFactory,
}

impl ChannelRegistration {
    /// The secrets to ask for with these settings (its `mode` picks among [`Self::modes`]).
    pub fn secrets_for(&self, settings: &toml::Table) -> &'static [SecretSpec] {
        self.mode_for(settings).map_or(self.secrets, |m| m.secrets)
    }

    /// Every secret these settings need: [`Self::secrets_for`] and the settings' own.
    pub fn secret_names_for(&self, settings: &toml::Table) -> Vec<String> {
        let mut names: Vec<String> = self
            .secrets_for(settings)
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        if let Some(named) = self.settings_secrets {
            names.extend(named(settings));
        }
        names
    }

    fn mode_for(&self, settings: &toml::Table) -> Option<&'static ModeSecrets> {
        let mode = settings.get("mode").and_then(toml::Value::as_str)?;
        self.modes.iter().find(|m| m.mode == mode)
    }

    /// Every secret name the channel may hold in the vault, in any mode.
    pub fn all_secret_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.secrets.iter().map(|s| s.name).collect();
        for mode in self.modes {
            names.extend(mode.secrets.iter().map(|s| s.name));
            names.extend(mode.generated.iter().copied());
        }
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl std::fmt::Debug for ChannelRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRegistration")
            .field("name", &self.name)
            .finish()
    }
}

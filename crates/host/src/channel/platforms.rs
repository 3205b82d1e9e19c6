//! Building the platform channels the configuration enables, lending each what it needs
//! from the host: its settings, its secrets (from the vault), a durable state store and the
//! send ledger (both in the host's database).

use std::sync::Arc;

use async_trait::async_trait;
use nanoclaw_channel::{ChannelSetup, PartState, SecretSource, SendLedger, StateStore};
use nanoclaw_store::{LedgerPart, Store};
use secrecy::SecretString;

use super::{Channel, ChannelError, ChannelRegistration};
use crate::config::{Config, Paths};

fn storage(e: nanoclaw_store::StoreError) -> ChannelError {
    ChannelError::Failed(format!("the host's database: {e}"))
}

/// A channel's state, in the `channel_state` table.
pub struct StoreState {
    store: Store,
    channel: String,
}

#[async_trait]
impl StateStore for StoreState {
    async fn get(&self, key: &str) -> Result<Option<String>, ChannelError> {
        self.store
            .channel_state(self.channel.clone(), key)
            .await
            .map_err(storage)
    }
    async fn put(&self, key: &str, value: &str) -> Result<(), ChannelError> {
        self.store
            .set_channel_state(self.channel.clone(), key, value)
            .await
            .map_err(storage)
    }
    async fn forget_older(
        &self,
        prefix: &str,
        age: std::time::Duration,
    ) -> Result<usize, ChannelError> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let before = nanoclaw_store::now_ms().saturating_sub(age_ms);
        self.store
            .forget_channel_state_before(self.channel.clone(), prefix, before)
            .await
            .map_err(storage)
    }
}

/// The send ledger, in the `channel_sends` table.
pub struct StoreLedger(pub Store);

#[async_trait]
impl SendLedger for StoreLedger {
    async fn part(&self, key: &str, part: u32) -> Result<PartState, ChannelError> {
        Ok(
            match self.0.ledger_part(key, part).await.map_err(storage)? {
                LedgerPart::Unsent => PartState::Unsent,
                LedgerPart::Sending => PartState::InDoubt,
                LedgerPart::Sent(id) => PartState::Sent(id),
            },
        )
    }
    async fn begin(&self, key: &str, part: u32) -> Result<(), ChannelError> {
        self.0.ledger_begin(key, part).await.map_err(storage)
    }
    async fn sent(&self, key: &str, part: u32, id: Option<&str>) -> Result<(), ChannelError> {
        self.0
            .ledger_sent(key, part, id.map(str::to_string))
            .await
            .map_err(storage)
    }
    async fn abandon(&self, key: &str, part: u32) -> Result<(), ChannelError> {
        self.0.ledger_abandon(key, part).await.map_err(storage)
    }
}

/// Channel credentials from the vault; without a vault there are none.
pub struct VaultSource(pub Option<nanoclaw_vault::Vault>);

#[async_trait]
impl SecretSource for VaultSource {
    async fn secret(&self, name: &str) -> Result<Option<SecretString>, ChannelError> {
        let Some(vault) = &self.0 else {
            return Err(ChannelError::Setup(format!(
                "the vault is not open, so the secret {name:?} cannot be read; run `nanoclaw doctor`"
            )));
        };
        match vault.reveal(name).await {
            Ok(value) => Ok(Some(value)),
            Err(nanoclaw_vault::VaultError::NoSuchSecret(_)) => Ok(None),
            Err(e) => Err(ChannelError::Setup(format!(
                "reading {name:?} from the vault: {e}"
            ))),
        }
    }

    async fn put_secret(&self, name: &str, value: SecretString) -> Result<(), ChannelError> {
        let Some(vault) = &self.0 else {
            return Err(ChannelError::Setup(format!(
                "the vault is not open, so the secret {name:?} cannot be stored; run `nanoclaw doctor`"
            )));
        };
        let exists = vault
            .list()
            .await
            .map_err(|e| ChannelError::Setup(format!("listing the vault: {e}")))?
            .iter()
            .any(|s| s.name == name);
        let stored = if exists {
            vault.rotate(name, value).await
        } else {
            vault.set(name, value).await
        };
        stored
            .map(|_| ())
            .map_err(|e| ChannelError::Setup(format!("storing {name:?} in the vault: {e}")))
    }
}

/// What the host lends the channels it builds.
#[derive(Clone)]
pub struct Backing {
    pub store: Store,
    pub vault: Option<nanoclaw_vault::Vault>,
    pub paths: Paths,
    pub assistant_name: String,
}

impl Backing {
    /// Builds (does not start) channel `registration` with `settings`.
    pub async fn build(
        &self,
        registration: &ChannelRegistration,
        settings: toml::Table,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        let data_dir = self.paths.channel_dir(registration.name);
        crate::config::create_private_dir(&data_dir)
            .map_err(|e| ChannelError::Setup(format!("creating {}: {e}", data_dir.display())))?;
        let mut settings = settings;
        for key in crate::config::ChannelsSection::HOST_KEYS {
            settings.remove(*key);
        }
        (registration.factory)(ChannelSetup {
            settings,
            secrets: Arc::new(VaultSource(self.vault.clone())),
            state: Arc::new(StoreState {
                store: self.store.clone(),
                channel: registration.name.to_string(),
            }),
            ledger: Arc::new(StoreLedger(self.store.clone())),
            assistant_name: self.assistant_name.clone(),
            data_dir,
        })
        .await
    }
}

/// The platform channels the configuration enables, built; one that cannot be built is
/// returned as its error (the host logs it and carries on with the others).
pub async fn build_enabled(
    config: &Config,
    backing: &Backing,
) -> Vec<(String, Result<Arc<dyn Channel>, ChannelError>)> {
    let mut out = Vec::new();
    for (name, settings) in config.channels.enabled_platforms() {
        let built = match super::registration(name) {
            Some(registration) => backing.build(&registration, settings.clone()).await,
            None => Err(ChannelError::Setup(format!(
                "this build has no {name} channel (built without its feature)"
            ))),
        };
        out.push((name.clone(), built));
    }
    out
}

/// A platform channel built on its first start, and built again on a start after a failed
/// build: a token added to the vault later (`nanoclaw channel add`, then `channel restart`)
/// is picked up without restarting the host.
pub struct LazyChannel {
    registration: ChannelRegistration,
    settings: toml::Table,
    backing: Backing,
    built: tokio::sync::Mutex<Option<Arc<dyn Channel>>>,
    /// The built channel, readable without waiting (health, delivery).
    current: std::sync::RwLock<Option<Arc<dyn Channel>>>,
}

impl LazyChannel {
    pub fn new(
        registration: ChannelRegistration,
        settings: toml::Table,
        backing: Backing,
    ) -> LazyChannel {
        LazyChannel {
            registration,
            settings,
            backing,
            built: tokio::sync::Mutex::new(None),
            current: std::sync::RwLock::new(None),
        }
    }

    fn current(&self) -> Option<Arc<dyn Channel>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Channel for LazyChannel {
    fn name(&self) -> &'static str {
        self.registration.name
    }

    async fn start(self: Arc<Self>, sink: super::InboundSink) -> Result<(), ChannelError> {
        let mut built = self.built.lock().await;
        let channel = match built.as_ref() {
            Some(channel) => Arc::clone(channel),
            None => {
                let channel = self
                    .backing
                    .build(&self.registration, self.settings.clone())
                    .await?;
                *built = Some(Arc::clone(&channel));
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::clone(&channel));
                channel
            }
        };
        drop(built);
        sync_configured_chats(
            &self.backing.store,
            self.registration.name,
            channel.configured_chats(),
        )
        .await?;
        channel.start(sink).await
    }

    fn configured_chats(&self) -> Vec<nanoclaw_channel::ConfiguredChat> {
        self.current()
            .map(|channel| channel.configured_chats())
            .unwrap_or_default()
    }

    async fn deliver(
        &self,
        message: &super::OutgoingMessage,
    ) -> Result<Option<String>, ChannelError> {
        match self.current() {
            Some(channel) => channel.deliver(message).await,
            None => Err(ChannelError::NotConnected(format!(
                "the {} channel is not set up",
                self.registration.name
            ))),
        }
    }

    async fn progress(&self, chat_id: &str, answers: &[String], progress: super::Progress) {
        if let Some(channel) = self.current() {
            channel.progress(chat_id, answers, progress).await;
        }
    }

    fn typing_lasts(&self) -> Option<std::time::Duration> {
        self.current().and_then(|channel| channel.typing_lasts())
    }

    async fn verify(&self) -> Result<String, ChannelError> {
        match self.current() {
            Some(channel) => channel.verify().await,
            None => {
                self.backing
                    .build(&self.registration, self.settings.clone())
                    .await?
                    .verify()
                    .await
            }
        }
    }

    async fn link(
        &self,
        show: &nanoclaw_channel::ShowToOwner<'_>,
    ) -> Result<Option<String>, ChannelError> {
        match self.current() {
            Some(channel) => channel.link(show).await,
            None => {
                self.backing
                    .build(&self.registration, self.settings.clone())
                    .await?
                    .link(show)
                    .await
            }
        }
    }

    fn health(&self) -> super::Health {
        match self.current() {
            Some(channel) => channel.health(),
            None => {
                let mut health = super::Health::always_up();
                health.state = super::LinkState::Starting;
                health
            }
        }
    }

    async fn stop(&self) {
        if let Some(channel) = self.current() {
            channel.stop().await;
        }
    }
}

/// Wires the chats a channel's configuration names ([`Channel::configured_chats`]) the way
/// the configuration says, at every start: each to its group (every message wakes it; a
/// wiring to another group from an earlier configuration is removed), and its replies to
/// the owner's main chat when it cannot show them itself.
pub async fn sync_configured_chats(
    store: &Store,
    channel: &str,
    chats: Vec<nanoclaw_channel::ConfiguredChat>,
) -> Result<(), ChannelError> {
    let failed = |e: nanoclaw_store::StoreError| {
        ChannelError::Setup(format!("wiring the {channel} channel's chats: {e}"))
    };
    for configured in chats {
        let group = store
            .group_by_folder(configured.group.clone())
            .await
            .map_err(failed)?
            .ok_or_else(|| {
                ChannelError::Setup(format!(
                    "{channel}: {} names the group {:?}, which does not exist (`nanoclaw group list`)",
                    configured.chat_id, configured.group
                ))
            })?;
        let chat = store
            .ensure_chat(
                channel,
                configured.chat_id.clone(),
                configured.name.clone(),
                false,
            )
            .await
            .map_err(failed)?;
        let wirings = store.wirings_for_chat(chat.id).await.map_err(failed)?;
        for (_, other) in wirings.iter().filter(|(_, g)| g.id != group.id) {
            store
                .unwire(chat.id, other.id.clone())
                .await
                .map_err(failed)?;
        }
        if !wirings.iter().any(|(_, g)| g.id == group.id) {
            store
                .wire(
                    chat.id,
                    group.id.clone(),
                    nanoclaw_store::WiringOptions::new(false, nanoclaw_store::SessionMode::Shared),
                )
                .await
                .map_err(failed)?;
        }
        let target = if configured.replies_to_owner {
            crate::host::owner_chat(store)
                .await
                .map_err(failed)?
                .map(|owner| owner.id)
        } else {
            None
        };
        store
            .set_reply_route(chat.id, target)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

//! `mode = "linked"`: the owner's personal number, with nanoclaw as one of its linked
//! devices (the WhatsApp Web multi-device protocol, through `whatsapp-rust`).
//!
//! - **Linking** ([`LinkedChannel::link`], run by `nanoclaw channel add whatsapp --set
//!   mode=linked`): a QR code in the terminal to scan from WhatsApp → Linked devices, and a
//!   pairing code as well when `phone_number` is set; it waits up to `link_timeout_secs`.
//! - **The session** ([`store`], [`seal`]) is one file in the channel's private directory,
//!   sealed under the vault secret `whatsapp.session_key` (made on first use). Only one
//!   process uses it at a time (a lock file next to it).
//! - **In** ([`events`]): every decrypted message goes through whatsapp-rust's inbound
//!   durability hook: WhatsApp is told the message arrived only once the host has settled
//!   it, so a crash makes WhatsApp deliver it again (the host deduplicates by message id).
//! - **Out** ([`outbound`]): parts prefixed with the assistant's name, through the ledger;
//!   typing is the chat's "composing" state.
//! - **Health**: connected; reconnecting with the shared [`Backoff`] (whatsapp-rust's own
//!   reconnect loop is turned off); down when the phone removed the device ("logged out;
//!   link again") or the channel was never linked ("not linked: run `nanoclaw channel add
//!   whatsapp`").

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_channel::{
    Backoff, Channel, ChannelError, ChannelSetup, Health, HealthCell, InboundSink, OutgoingMessage,
    Progress, SendLedger, ShowToOwner,
};
use tokio::task::JoinHandle;
use whatsapp_rust::Client;

pub mod events;
mod hook;
pub mod outbound;
pub mod qr;
mod run;
pub mod seal;
pub mod store;

use events::{Authors, Me, SentIds};
use seal::{SealedFile, SessionKey};
use store::SealedStore;

pub use seal::SESSION_KEY_SECRET;

/// The session file's name in the channel's directory.
const SESSION_FILE: &str = "linked-session";
const LOCK_FILE: &str = "linked-session.lock";
/// The WhatsApp Web endpoint whatsapp-rust dials by default.
pub const DEFAULT_WS_URL: &str = "wss://web.whatsapp.com/ws/chat";
/// What health says before the first link.
pub const NOT_LINKED: &str = "not linked: run `nanoclaw channel add whatsapp --set mode=linked`";
/// What health says after the phone removed this device.
pub const LOGGED_OUT: &str = "logged out: the phone removed this linked device; link again with `nanoclaw channel add whatsapp --set mode=linked`";

/// The linked mode's settings (from `[channels.whatsapp]`).
#[derive(Debug, Clone)]
pub struct LinkedConfig {
    /// The account's number in international form, digits only: a pairing code is shown
    /// besides the QR code.
    pub phone_number: Option<String>,
    pub max_attachment_bytes: u64,
    pub link_timeout: Duration,
    /// The WhatsApp Web socket (a relay, or a loopback address in tests).
    pub ws_url: String,
    /// A WhatsApp Web version to announce instead of the one fetched from web.whatsapp.com.
    pub web_version: Option<(u32, u32, u32)>,
    /// The assistant has a number of its own: no `Name: ` prefix on what it sends.
    pub assistant_has_own_number: bool,
}

/// Parses `2.3000.1017531287`.
pub fn parse_version(text: &str) -> Result<(u32, u32, u32), ChannelError> {
    let parts: Vec<u32> = text
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad_version(text))?;
    match parts[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(bad_version(text)),
    }
}

fn bad_version(text: &str) -> ChannelError {
    ChannelError::Setup(format!(
        "[channels.whatsapp] web_version {text:?}: write three numbers, e.g. \"2.3000.1017531287\""
    ))
}

/// State shared by the channel, its connection task and whatsapp-rust's callbacks.
pub(crate) struct Shared {
    pub config: LinkedConfig,
    pub assistant_name: String,
    pub health: HealthCell,
    pub sent: SentIds,
    /// Authors of recent inbound messages, for quotes.
    pub authors: Authors,
    /// The live client while a connection runs.
    pub client: RwLock<Option<Arc<Client>>>,
}

impl Shared {
    pub fn client(&self) -> Option<Arc<Client>> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_client(&self, client: Option<Arc<Client>>) {
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
    }

    /// The account as the client knows it now.
    pub fn me(&self, client: Option<&Client>) -> Me {
        Me {
            pn: client.and_then(Client::pn),
            lid: client.and_then(Client::lid),
            assistant_name: self.assistant_name.clone(),
            prefixed: !self.config.assistant_has_own_number,
        }
    }
}

/// The linked-device channel.
pub struct LinkedChannel {
    shared: Arc<Shared>,
    file: SealedFile,
    lock_path: PathBuf,
    ledger: Arc<dyn SendLedger>,
    /// The connection task, and the lock it holds.
    task: tokio::sync::Mutex<Option<(JoinHandle<()>, std::fs::File)>>,
}

impl LinkedChannel {
    pub async fn from_setup(
        config: LinkedConfig,
        setup: ChannelSetup,
    ) -> Result<LinkedChannel, ChannelError> {
        let key = SessionKey::load_or_create(&*setup.secrets).await?;
        Ok(LinkedChannel::new(config, key, setup))
    }

    fn new(config: LinkedConfig, key: SessionKey, setup: ChannelSetup) -> LinkedChannel {
        LinkedChannel {
            shared: Arc::new(Shared {
                config,
                assistant_name: setup.assistant_name,
                health: HealthCell::default(),
                sent: SentIds::default(),
                authors: Authors::default(),
                client: RwLock::new(None),
            }),
            file: SealedFile::new(setup.data_dir.join(SESSION_FILE), key),
            lock_path: setup.data_dir.join(LOCK_FILE),
            ledger: setup.ledger,
            task: tokio::sync::Mutex::new(None),
        }
    }

    /// Takes the session's lock: one process at a time uses a session.
    fn lock(&self) -> Result<std::fs::File, ChannelError> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&self.lock_path).map_err(|e| {
            ChannelError::Setup(format!("opening {}: {e}", self.lock_path.display()))
        })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(ChannelError::Setup(
                "another nanoclaw process is using the WhatsApp session (a running host?)"
                    .to_string(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(ChannelError::Setup(format!(
                "locking {}: {e}",
                self.lock_path.display()
            ))),
        }
    }

    /// Opens the linked session, or says why there is none to use.
    fn open_linked(&self) -> Result<Arc<SealedStore>, ChannelError> {
        if !self.file.exists() {
            let why = if self.file.logged_out_path().exists() {
                LOGGED_OUT
            } else {
                NOT_LINKED
            };
            return Err(ChannelError::Setup(why.to_string()));
        }
        Ok(Arc::new(SealedStore::open(self.file.clone())?))
    }
}

#[async_trait]
impl Channel for LinkedChannel {
    fn name(&self) -> &'static str {
        crate::NAME
    }

    /// Opens the session and connects in a task (reconnecting there with backoff). Fails
    /// when there is no usable session: never linked, logged out, or a file that does not
    /// open.
    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let mut task = self.task.lock().await;
        if let Some((old, _lock)) = task.take() {
            old.abort();
            let _ = old.await;
        }
        self.shared.health.starting();
        // The lock first: `channel add` may be linking this very file right now.
        let opened = self.lock().and_then(|lock| Ok((self.open_linked()?, lock)));
        let (store, lock) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let reason = match &e {
                    ChannelError::Setup(reason) => reason.clone(),
                    other => other.to_string(),
                };
                self.shared.health.down(reason);
                return Err(e);
            }
        };
        if !store.is_linked().await {
            self.shared.health.down(NOT_LINKED);
            return Err(ChannelError::Setup(NOT_LINKED.to_string()));
        }
        let handle = tokio::spawn(run::connection_loop(
            Arc::clone(&self.shared),
            store,
            self.file.clone(),
            sink,
        ));
        *task = Some((handle, lock));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let Some(client) = self.shared.client().filter(|c| c.is_logged_in()) else {
            return Err(ChannelError::NotConnected(
                "WhatsApp (linked device) is not connected".to_string(),
            ));
        };
        let me = self.shared.me(Some(&client));
        let sender = run::ClientSender(client, Arc::clone(&self.shared));
        let shared = &self.shared;
        let result = outbound::deliver(&sender, &me, &*self.ledger, message, &|id| {
            shared.sent.remember(id)
        })
        .await;
        if let Err(e) = &result {
            self.shared.health.error(e.to_string());
        }
        result
    }

    /// Shows "typing…" (the chat's composing state) while a turn works.
    async fn progress(&self, chat_id: &str, _answers: &[String], progress: Progress) {
        if let Progress::Working = progress
            && let Some(client) = self.shared.client()
            && let Ok(chat) = chat_id.parse()
            && let Err(e) = client.chatstate().send_composing(&chat).await
        {
            tracing::debug!(error = %e, "whatsapp: typing not shown");
        }
    }

    async fn link(&self, show: &ShowToOwner<'_>) -> Result<Option<String>, ChannelError> {
        if let Ok(store) = self.open_linked()
            && store.is_linked().await
        {
            return Ok(Some(format!(
                "{} (linked earlier; `nanoclaw channel remove whatsapp` first to link another number)",
                run::who(&store).await
            )));
        }
        let _lock = self.lock()?;
        run::link(&self.shared, &self.file, show).await
    }

    /// Reports the linked account from the session, without connecting: a second
    /// connection would push out the running host's.
    async fn verify(&self) -> Result<String, ChannelError> {
        let store = self.open_linked()?;
        if !store.is_linked().await {
            return Err(ChannelError::Setup(NOT_LINKED.to_string()));
        }
        Ok(format!("{} (linked device)", run::who(&store).await))
    }

    fn health(&self) -> Health {
        self.shared.health.snapshot()
    }

    async fn stop(&self) {
        if let Some((task, _lock)) = self.task.lock().await.take() {
            if let Some(client) = self.shared.client() {
                client.disconnect().await;
            }
            task.abort();
            let _ = task.await;
        }
        self.shared.set_client(None);
        self.shared.health.stopped();
    }
}

/// Reconnect waits: from one second up to five minutes.
pub(crate) fn backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
}

#[cfg(test)]
mod tests;

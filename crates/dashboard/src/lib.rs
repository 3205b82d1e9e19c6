//! nanoclaw's web dashboard, served by the host on a loopback address: chat with any agent
//! group (the web chat is a channel, `web`), the groups and how chats are wired to them,
//! scheduled tasks and their runs, the vault's grants and approvals, the audit log with its
//! chain verified, channel health, and each group's skill graph drawn.
//!
//! The page and its script are compiled into the binary (`assets/`). Sign-in and request
//! checks are in [`auth`]; what only the host knows comes through [`Backend`], which the host
//! implements; the web chat's live side (Server-Sent Events) is [`web_chat`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use nanoclaw_channel::{
    Channel, ChannelError, Health, HealthCell, InboundSink, OutgoingMessage, Progress,
};
use nanoclaw_store::Store;
use tokio::sync::Mutex;

pub mod auth;
mod server;
pub mod web_chat;

/// The web chat's channel name.
pub const NAME: &str = "web";
/// Where the dashboard listens unless the configuration says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7433";

/// Why the host could not answer the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The thing asked for does not exist (a group, a task, a grant).
    #[error("{0}")]
    NotFound(String),
    /// The request made no sense (the message says what was wrong).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// What the dashboard shows and does that only the host knows or may do. Lists come back as
/// JSON (the host's own report types, as `--json` prints them), passed to the page as they are.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The host itself: version, since when, runtime, agents, queue, pause, failures lately,
    /// approvals waiting, and every channel's health.
    async fn overview(&self) -> Result<serde_json::Value, BackendError>;
    /// Agent groups with their settings and the chats wired to each.
    async fn groups(&self) -> Result<serde_json::Value, BackendError>;
    /// Scheduled tasks, next fire time first.
    async fn tasks(&self) -> Result<serde_json::Value, BackendError>;
    /// One task's runs, newest first.
    async fn task_runs(&self, task_id: &str) -> Result<serde_json::Value, BackendError>;
    /// Changes a task as `nanoclaw tasks` does; the task as it is now.
    async fn change_task(
        &self,
        task_id: &str,
        change: TaskChange,
    ) -> Result<serde_json::Value, BackendError>;
    /// The vault's secrets (names only) with their grants, and the approvals asked for.
    async fn vault(&self) -> Result<serde_json::Value, BackendError>;
    /// Approves or denies the grant waiting for the owner's approval.
    async fn decide_approval(
        &self,
        grant: i64,
        approve: bool,
    ) -> Result<serde_json::Value, BackendError>;
    /// Audit rows with ids below `before` (newest first), at most `limit`.
    async fn audit(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<serde_json::Value, BackendError>;
    /// Walks the audit log's hash chain: `{"intact": true, "rows": N}` or where it breaks.
    async fn verify_audit(&self) -> Result<serde_json::Value, BackendError>;
    /// The skills installed for group `folder`, with their state.
    async fn skills(&self, folder: &str) -> Result<serde_json::Value, BackendError>;
    /// Group `folder`'s skill graph as an SVG document.
    async fn skill_graph_svg(&self, folder: &str) -> Result<String, BackendError>;
    /// Makes the web chat with group `folder` exist and wires it to the group; its chat id
    /// on this channel.
    async fn open_chat(&self, folder: &str) -> Result<String, BackendError>;
    /// The newest `limit` messages of the web chat with group `folder`.
    async fn transcript(
        &self,
        folder: &str,
        limit: usize,
    ) -> Result<serde_json::Value, BackendError>;
}

/// What the owner may do to a scheduled task from the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskChange {
    /// Run it once now (its schedule stays as it is).
    RunNow,
    Pause,
    Resume,
    Cancel,
}

/// `[dashboard]` in config.toml.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// A loopback `address:port` (port 0: any free port).
    pub listen: String,
    /// The assistant's name, for the page's title.
    pub assistant_name: String,
    /// Where the address really bound is written, for `nanoclaw dashboard`.
    pub addr_file: PathBuf,
}

/// The dashboard: a channel (its web chat) that also serves the rest of the UI.
pub struct Dashboard {
    config: DashboardConfig,
    store: Store,
    backend: OnceLock<Arc<dyn Backend>>,
    chats: Arc<web_chat::Subscribers>,
    health: Arc<HealthCell>,
    /// The address the server bound last (also written to `addr_file` for the CLI).
    bound: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Dashboard {
    /// A dashboard on `store`; refuses a listen address that is not loopback.
    pub fn new(config: DashboardConfig, store: Store) -> Result<Arc<Dashboard>, ChannelError> {
        if !auth::is_loopback(&config.listen) {
            return Err(ChannelError::Setup(format!(
                "[dashboard] listen = {:?}: the dashboard serves plain HTTP on a loopback address only \
                 (e.g. \"127.0.0.1:7433\"); reach it from another machine through `ssh -L 7433:127.0.0.1:7433 HOST`",
                config.listen
            )));
        }
        Ok(Arc::new(Dashboard {
            config,
            store,
            backend: OnceLock::new(),
            chats: Arc::new(web_chat::Subscribers::default()),
            health: Arc::new(HealthCell::default()),
            bound: Arc::new(std::sync::Mutex::new(None)),
            server: Mutex::new(None),
        }))
    }

    /// Lends the dashboard what only the host knows; before [`Channel::start`].
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        let _ = self.backend.set(backend);
    }
}

/// Reads the address a running dashboard bound (written at start); `None` when none did.
pub fn bound_addr(addr_file: &std::path::Path) -> Option<SocketAddr> {
    std::fs::read_to_string(addr_file).ok()?.trim().parse().ok()
}

#[async_trait]
impl Channel for Dashboard {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let Some(backend) = self.backend.get().cloned() else {
            return Err(ChannelError::Setup(
                "the dashboard was started without the host's backend".into(),
            ));
        };
        let mut server = self.server.lock().await;
        if let Some(old) = server.take() {
            old.abort();
            let _ = old.await;
        }
        self.health.starting();
        // A port taken (another nanoclaw?) is said in the health; [dashboard] listen moves it.
        let first = nanoclaw_channel::bind_first(
            &self.config.listen,
            &self.health,
            "dashboard",
            "dashboard: ",
        )
        .await;
        let state = server::Shared {
            config: self.config.clone(),
            store: self.store.clone(),
            backend,
            chats: Arc::clone(&self.chats),
            sink,
            bound: Arc::clone(&self.bound),
        };
        let health = Arc::clone(&self.health);
        *server = Some(tokio::spawn(server::run(state, first, health)));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        self.chats.deliver(message)
    }

    async fn progress(&self, chat_id: &str, _answers: &[String], progress: Progress) {
        self.chats.progress(chat_id, &progress);
    }

    fn health(&self) -> Health {
        let mut health = self.health.snapshot();
        let bound = self.bound.lock().ok().and_then(|b| *b);
        if let Some(addr) = bound {
            health.detail = Some(format!(
                "http://{addr}/ ({} browser(s) open)",
                self.chats.open()
            ));
        }
        health
    }

    async fn stop(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.abort();
            let _ = server.await;
        }
        self.chats.close_all();
        let _ = std::fs::remove_file(&self.config.addr_file);
        if let Ok(mut bound) = self.bound.lock() {
            *bound = None;
        }
        self.health.stopped();
    }
}

//! The host: wires channels, router, store, agents and delivery together.
//!
//! Durability rules: an inbound message is stored before it is acknowledged; a turn's
//! reply is stored in the same transaction that marks its messages done; delivery marks a
//! message delivered only once. After a crash, `processing` rows go back to `pending`
//! and are answered again; replies already stored are not produced twice.
//!
//! By job: `lock` (one host per data directory), `loops` (routing, task and retry loops),
//! `session` and `turn` (answering a session's messages), `failure` (turns that cannot be
//! answered), `requests` (what an agent may ask for), `delivery` (replies out, secrets
//! redacted) and `owner` (the owner's main chat).

mod dashboard;
mod delivery;
mod failure;
pub mod kill_switch;
mod lanes;
mod lock;
mod loops;
mod owner;
pub(crate) mod requests;
mod session;
mod turn;

pub use lock::{AlreadyRunning, holder as lock_holder};
pub use owner::{is_owner, is_owner_chat, owner_chat, owner_command_chat, queue_command_answer};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nanoclaw_sandbox::Runtime;
use nanoclaw_store::{NewGroup, SessionMode, Store};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

use crate::agents::AgentPool;
use crate::channel::{Channel, ChannelContext, ChannelEvent};
use crate::config::{Config, Paths};
use crate::now_ms;
use lock::HostLock;
use nanoclaw_egress::relay::{ModelUpstreams, Relay};

/// What a host is started with.
pub struct HostOptions {
    /// The data directory's layout (`$NANOCLAW_HOME`).
    pub paths: Paths,
    /// The loaded configuration.
    pub config: Config,
    /// The model providers the relay forwards to, with their credentials.
    pub upstreams: ModelUpstreams,
    /// Use this runtime instead of detecting one (tests, benchmarks).
    pub runtime: Option<Arc<dyn Runtime>>,
    /// The agent binary; found automatically when `None`.
    pub agent_binary: Option<PathBuf>,
    /// The vault's master key; `None` reads `NANOCLAW_MASTER_KEY`, the key file or the OS keyring.
    pub master_key: Option<nanoclaw_vault::MasterKey>,
    /// The scheduled tasks' clock; `None` is the system clock (tests pass a manual one).
    pub clock: Option<Arc<dyn crate::clock::Clock>>,
}

impl HostOptions {
    /// Options from `$NANOCLAW_HOME`, its config file and the environment.
    pub fn from_env() -> anyhow::Result<HostOptions> {
        let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
        let config = Config::load(&paths.config_file())?;
        Ok(HostOptions {
            paths,
            config,
            upstreams: ModelUpstreams::from_env(),
            runtime: None,
            agent_binary: None,
            master_key: None,
            clock: None,
        })
    }
}

/// A running host. Dropping it does not stop it; call [`Host::shutdown`].
pub struct Host {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    sink: mpsc::Sender<ChannelEvent>,
}

/// What the host's loops, workers and turns share.
struct Inner {
    store: Store,
    /// Scheduled tasks.
    tasks: Arc<crate::tasks::Scheduler>,
    config: Config,
    pool: Arc<AgentPool>,
    channels: HashMap<String, Arc<dyn Channel>>,
    /// Sessions with a running worker.
    workers: Mutex<HashSet<String>>,
    delivery_wake: Arc<Notify>,
    scheduler_wake: Notify,
    /// Chats whose channel said nobody is listening; skipped until reachable again.
    parked_chats: Mutex<ParkedChats>,
    /// Outbound rows of this run that answer several messages (a batched turn): their
    /// platform ids, so every sender's client gets the answer. Dropped once delivered; after a
    /// restart the clients that asked are gone anyway, and `in_reply_to` remains.
    answers: std::sync::Mutex<HashMap<i64, Vec<String>>>,
    runtime_error: Option<String>,
    /// Secrets; the leak guard scans outgoing chat messages for their values.
    vault: Option<nanoclaw_vault::Vault>,
    paths: Paths,
    /// Turns running now, and how to stop them (the kill switch, `kill_switch.rs`).
    running: kill_switch::RunningTurns,
    /// `true` while the owner's `/pause` holds (kept in the store across restarts).
    paused: tokio::sync::watch::Sender<bool>,
    /// The platform channels' supervisors, by channel name (set once they are started).
    supervisors: std::sync::OnceLock<HashMap<String, Arc<nanoclaw_channel::Supervisor>>>,
    /// When this host started (unix ms).
    started_at: i64,
    /// Becomes `true` when the owner asked the host to stop (`nanoclaw stop`).
    stop_requested: tokio::sync::watch::Sender<bool>,
    _lock: HostLock,
}

impl Inner {
    /// The database changed outside the message path (the owner's CLI, the dashboard): the
    /// task loop, the retry loop and delivery look at it again.
    fn look_again(&self) {
        self.tasks.wake();
        self.scheduler_wake.notify_one();
        self.delivery_wake.notify_one();
    }

    fn channel_health(&self) -> Vec<(String, nanoclaw_channel::Health)> {
        let mut out = Vec::new();
        for own in [crate::channel::terminal::NAME, nanoclaw_dashboard::NAME] {
            if let Some(channel) = self.channels.get(own) {
                out.push((channel.name().to_owned(), channel.health()));
            }
        }
        if let Some(supervisors) = self.supervisors.get() {
            let mut named: Vec<_> = supervisors.iter().collect();
            named.sort_by(|a, b| a.0.cmp(b.0));
            out.extend(
                named
                    .into_iter()
                    .map(|(name, s)| (name.clone(), s.health())),
            );
        }
        out
    }

    /// The live state `nanoclaw status` shows; the queue is read from the store.
    async fn host_state(&self) -> crate::channel::HostState {
        let queue = match self.store.queue_counts().await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "counting queued messages for status failed");
                nanoclaw_store::QueueCounts::default()
            }
        };
        crate::channel::HostState {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            runtime: self.pool.runtime_name().map(str::to_owned),
            runtime_error: self.runtime_error.clone(),
            live_agents: self.pool.live_count(),
            max_agents: self.config.agents.max_concurrent,
            busy_sessions: self.workers.lock().await.len(),
            queued_messages: queue.pending,
            processing_messages: queue.processing,
        }
    }

    /// Restarts platform channel `name` now.
    async fn restart_channel(&self, name: &str) -> Result<(), String> {
        let supervisor = self
            .supervisors
            .get()
            .and_then(|s| s.get(name))
            .ok_or_else(|| format!("no {name} channel is enabled in this host"))?;
        supervisor.restart().await
    }
}

/// The agent pool and what was found out while building it.
struct PoolParts {
    pool: Arc<AgentPool>,
    runtime_error: Option<String>,
    vault: Option<nanoclaw_vault::Vault>,
    delivery_wake: Arc<Notify>,
}

impl Host {
    /// Starts a host on the data directory of `options`: the lock, the store (interrupted
    /// messages resumed), the agent pool, the background loops and the enabled channels.
    pub async fn start(options: HostOptions) -> anyhow::Result<Host> {
        let HostOptions {
            paths,
            config,
            upstreams,
            runtime,
            agent_binary,
            master_key,
            clock,
        } = options;
        let lock = take_data_dir(&paths)?;
        let store = open_store(&paths, &config).await?;
        // Before any agent runs: nothing is being copied into the outbox right now.
        crate::outbox::sweep_unsent(&store, paths.outbox_dir()).await;
        crate::skills::builtin::write_at_start(&paths);
        crate::skills::snapshot::prune_unused(&store, &paths).await;
        let PoolParts {
            pool,
            runtime_error,
            vault,
            delivery_wake,
        } = build_pool(
            &store,
            &paths,
            &config,
            upstreams,
            runtime,
            agent_binary,
            master_key,
        )
        .await?;
        let terminal = crate::channel::build_terminal(&ChannelContext {
            config: &config,
            paths: &paths,
            warning: runtime_error.clone(),
        });
        let platforms = platform_channels(&config, &store, vault.clone(), &paths);
        let dashboard = build_dashboard(&config, &store, &paths)?;
        let dashboard_channel: Option<Arc<dyn Channel>> =
            dashboard.clone().map(|d| d as Arc<dyn Channel>);
        let channels: HashMap<String, Arc<dyn Channel>> = terminal
            .iter()
            .chain(platforms.iter())
            .chain(dashboard_channel.iter())
            .map(|c| (c.name().to_owned(), Arc::clone(c)))
            .collect();

        let paused = store
            .paused()
            .await
            .context("reading whether the owner paused the host")?;
        if let Some(p) = &paused {
            tracing::warn!(by = %p.by, "the owner paused this host: no agent runs until /resume");
        }
        let clock = clock.unwrap_or_else(|| Arc::new(crate::clock::SystemClock));
        let tasks = Arc::new(crate::tasks::Scheduler::new(store.clone(), clock, &config));
        let inner = Arc::new(Inner {
            store,
            tasks,
            config,
            pool,
            channels,
            workers: Mutex::new(HashSet::new()),
            delivery_wake,
            scheduler_wake: Notify::new(),
            parked_chats: Mutex::new(ParkedChats::default()),
            answers: std::sync::Mutex::new(HashMap::new()),
            runtime_error,
            vault,
            supervisors: std::sync::OnceLock::new(),
            running: kill_switch::RunningTurns::default(),
            paused: tokio::sync::watch::Sender::new(paused.is_some()),
            paths: paths.clone(),
            started_at: now_ms(),
            stop_requested: tokio::sync::watch::Sender::new(false),
            _lock: lock,
        });

        let (tx, rx) = mpsc::channel::<ChannelEvent>(1024);
        let mut tasks = spawn_loops(&inner, rx);
        if let Some(terminal) = terminal {
            Arc::clone(&terminal)
                .start(tx.clone())
                .await
                .context("starting the terminal channel")?;
        }
        if let Some(dashboard) = dashboard {
            dashboard.set_backend(dashboard::HostBackend::new(&inner));
            dashboard
                .start(tx.clone())
                .await
                .context("starting the dashboard")?;
        }
        tasks.extend(supervise_platforms(&inner, platforms, &tx));
        if !inner.config.agents.warm.is_empty() {
            tokio::spawn(loops::prewarm(Arc::clone(&inner)));
        }
        Ok(Host {
            inner,
            tasks,
            sink: tx,
        })
    }

    /// The host's database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The scheduled tasks.
    pub fn tasks(&self) -> &Arc<crate::tasks::Scheduler> {
        &self.inner.tasks
    }

    /// Where in-process channels (and tests) hand messages to the router.
    pub fn inbound_sink(&self) -> crate::channel::InboundSink {
        self.sink.clone()
    }

    /// Every channel's health, by name (the terminal first, then platforms by name).
    pub fn channel_health(&self) -> Vec<(String, nanoclaw_channel::Health)> {
        self.inner.channel_health()
    }

    /// Agents running right now: busy with a turn or idle and warm.
    pub fn live_agents(&self) -> usize {
        self.inner.pool.live_count()
    }

    /// Whether the owner paused the host (`/pause`; see `kill_switch.rs`).
    pub fn is_paused(&self) -> bool {
        kill_switch::is_paused(&self.inner)
    }

    /// The runtime agents run in, or why there is none.
    pub fn runtime(&self) -> Result<&'static str, String> {
        match &self.inner.runtime_error {
            Some(e) => Err(e.clone()),
            None => Ok(self.inner.pool.runtime_name().unwrap_or("unknown")),
        }
    }

    /// For a host started on demand by `nanoclaw chat`: returns `true` once no client has
    /// been connected for `linger` (the terminal channel then stops accepting); `false` at
    /// once when no channel can tell (the terminal channel is off).
    pub async fn until_unattended(&self, linger: Duration) -> bool {
        let watching = self
            .inner
            .channels
            .values()
            .map(|c| c.until_unattended(linger));
        futures_util::future::join_all(watching)
            .await
            .into_iter()
            .any(|unattended| unattended)
    }

    /// Returns once the owner asked this host to stop (`nanoclaw stop` over the terminal
    /// socket); whoever runs the host then shuts it down as on SIGTERM.
    pub async fn until_stop_requested(&self) {
        let mut asked = self.inner.stop_requested.subscribe();
        // The sender lives in `inner`, as long as `self`: `wait_for` only ends when asked.
        let _ = asked.wait_for(|asked| *asked).await;
    }

    /// Stops channels, background tasks and idle agents.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for channel in self.inner.channels.values() {
            channel.stop().await;
        }
        self.inner.pool.stop_all().await;
    }
}

/// Prepares the data directory and takes its lock; drops the sockets of a previous run's
/// sandboxes.
fn take_data_dir(paths: &Paths) -> anyhow::Result<HostLock> {
    paths
        .prepare()
        .with_context(|| format!("preparing the data directory {}", paths.home.display()))?;
    let lock = HostLock::acquire(&paths.host_lock())?;
    // Sandboxes of a previous run died with it (die-with-parent); drop their sockets.
    let stale = paths.run_dir().join("sandboxes");
    let _ = std::fs::remove_dir_all(&stale);
    crate::config::create_private_dir(&stale)?;
    Ok(lock)
}

/// The web dashboard, unless the configuration turns it off.
fn build_dashboard(
    config: &Config,
    store: &Store,
    paths: &Paths,
) -> anyhow::Result<Option<Arc<nanoclaw_dashboard::Dashboard>>> {
    if !config.dashboard.enabled {
        return Ok(None);
    }
    let dashboard = nanoclaw_dashboard::Dashboard::new(
        nanoclaw_dashboard::DashboardConfig {
            listen: config.dashboard.listen.clone(),
            assistant_name: config.assistant_name.clone(),
            addr_file: paths.dashboard_addr_file(),
        },
        store.clone(),
    )
    .context("setting up the dashboard")?;
    Ok(Some(dashboard))
}

/// The enabled platform channels, each built on its first start (see [`LazyChannel`]).
///
/// [`LazyChannel`]: crate::channel::platforms::LazyChannel
fn platform_channels(
    config: &Config,
    store: &Store,
    vault: Option<nanoclaw_vault::Vault>,
    paths: &Paths,
) -> Vec<Arc<dyn Channel>> {
    use crate::channel::platforms::{Backing, LazyChannel};
    let backing = Backing {
        store: store.clone(),
        vault,
        paths: paths.clone(),
        assistant_name: config.assistant_name.clone(),
    };
    config
        .channels
        .enabled_platforms()
        .filter_map(|(name, settings)| {
            let registration = crate::channel::registration(name)?;
            let channel: Arc<dyn Channel> = Arc::new(LazyChannel::new(
                registration,
                settings.clone(),
                backing.clone(),
            ));
            Some(channel)
        })
        .collect()
}

/// Starts each platform channel under a supervisor that restarts it alone when it goes down
/// and tells the owner when it stays down; returns the supervisors' tasks.
fn supervise_platforms(
    inner: &Arc<Inner>,
    platforms: Vec<Arc<dyn Channel>>,
    tx: &mpsc::Sender<ChannelEvent>,
) -> Vec<JoinHandle<()>> {
    use nanoclaw_channel::{Supervisor, SupervisorConfig};
    let (alert_tx, alert_rx) = mpsc::unbounded_channel();
    let alerts = Arc::new(loops::OwnerAlerts(alert_tx));
    let config = SupervisorConfig {
        alert_after: Duration::from_secs(inner.config.channels.alert_after_secs),
        ..SupervisorConfig::default()
    };
    let supervisors: HashMap<String, Arc<Supervisor>> = platforms
        .into_iter()
        .map(|channel| {
            let name = channel.name().to_owned();
            let supervisor = Supervisor::new(channel, tx.clone(), config.clone(), alerts.clone());
            (name, supervisor)
        })
        .collect();
    let mut tasks: Vec<JoinHandle<()>> = supervisors
        .values()
        .map(|s| tokio::spawn(Arc::clone(s).run()))
        .collect();
    tasks.push(tokio::spawn(loops::alert_loop(Arc::clone(inner), alert_rx)));
    let _ = inner.supervisors.set(supervisors);
    tasks
}

/// Opens the database, puts messages interrupted by the last shutdown back in the queue and
/// makes sure the main group and the owner's main chat exist.
async fn open_store(paths: &Paths, config: &Config) -> anyhow::Result<Store> {
    let store = crate::open_store(&paths.database(), false)
        .with_context(|| format!("opening {}", paths.database().display()))?;

    let recovered = store.recover_interrupted(now_ms()).await?;
    if recovered > 0 {
        tracing::warn!(
            messages = recovered,
            "resuming messages interrupted by the last shutdown"
        );
    }
    ensure_main_wiring(&store, config).await?;
    Ok(store)
}

/// The agent pool: the sandbox runtime and agent binary (or why there is none, logged), the
/// vault, the model relay and the egress proxy.
async fn build_pool(
    store: &Store,
    paths: &Paths,
    config: &Config,
    upstreams: ModelUpstreams,
    runtime: Option<Arc<dyn Runtime>>,
    agent_binary: Option<PathBuf>,
    master_key: Option<nanoclaw_vault::MasterKey>,
) -> anyhow::Result<PoolParts> {
    let runtime = match runtime {
        Some(r) => Ok(r),
        None => {
            let host_id = paths
                .host_id()
                .with_context(|| format!("reading {}/host-id", paths.home.display()))?;
            crate::runtime::select(config, &host_id).await
        }
    };
    let runtime_error = runtime.as_ref().err().cloned();
    if let Some(why) = &runtime_error {
        tracing::error!("no sandbox runtime: agents will not run. {why}");
    }
    let agent_binary = match agent_binary {
        Some(p) => Ok(p),
        None => crate::find_agent_binary(),
    };
    if let Err(why) = &agent_binary {
        tracing::error!("{why}");
    }
    if !upstreams.has(&config.model.provider) {
        tracing::warn!(
            provider = %config.model.provider,
            "no credentials for the configured model provider; agents will report it when asked"
        );
    }
    let vault = open_vault(store, master_key, &paths.home).await;
    let relay = Relay::with_limits(upstreams, vault.clone(), config.relay.to_limits())
        .context("building the model relay's HTTP client")?;
    let delivery_wake = Arc::new(Notify::new());
    let egress = build_egress(store, paths, vault.as_ref()).with_approval_notifier(Arc::new(
        crate::approvals::ChatApprovalNotifier::new(store.clone(), Arc::clone(&delivery_wake)),
    ));
    let pool = AgentPool::new(
        runtime,
        store.clone(),
        egress,
        relay,
        paths.clone(),
        config.clone(),
        agent_binary,
    );
    Ok(PoolParts {
        pool,
        runtime_error,
        vault,
        delivery_wake,
    })
}

/// The background loops: router, delivery, retries and scheduled tasks.
fn spawn_loops(inner: &Arc<Inner>, rx: mpsc::Receiver<ChannelEvent>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(loops::router_loop(Arc::clone(inner), rx)),
        tokio::spawn(delivery::delivery_loop(Arc::clone(inner))),
        tokio::spawn(loops::scheduler_loop(Arc::clone(inner))),
        tokio::spawn(loops::task_loop(Arc::clone(inner))),
    ]
}

/// The egress proxy. With a vault: its secrets are injected (TLS interception with the
/// local CA under `$NANOCLAW_HOME/ca/`, made on first use) and the leak guard scans what
/// the proxy can read. A CA that cannot be made leaves interception off (logged).
fn build_egress(
    store: &Store,
    paths: &Paths,
    vault: Option<&nanoclaw_vault::Vault>,
) -> nanoclaw_egress::EgressProxy {
    use nanoclaw_egress as eg;
    let policies = Arc::new(eg::StorePolicySource::new(store.clone()));
    let resolver = Arc::new(eg::SystemResolver);
    let audit = Arc::new(crate::egress_vault::VaultAudit::new(
        nanoclaw_vault::Audit::new(store.clone()),
    ));
    let Some(vault) = vault else {
        return eg::EgressProxy::build(policies, resolver, audit, Arc::new(eg::NoSecrets));
    };
    let secrets = Arc::new(crate::egress_vault::VaultSecrets::new(vault.clone()));
    let interception = eg::LocalCa::load_or_create(&paths.home.join(eg::ca::CA_DIR_NAME))
        .map_err(eg::EgressError::from)
        .map(|ca| eg::Interception {
            ca: Arc::new(ca),
            extra_upstream_roots: Vec::new(),
        });
    let built = interception.and_then(|i| {
        eg::EgressProxy::build_intercepting(
            policies.clone(),
            resolver.clone(),
            audit.clone(),
            secrets.clone(),
            i,
        )
    });
    match built {
        Ok(proxy) => proxy,
        Err(e) => {
            tracing::error!(error = %e, "egress TLS interception is off; secrets will not be injected");
            eg::EgressProxy::build(policies, resolver, audit, secrets)
        }
    }
}

/// The vault, when there is one to open. A vault that cannot be opened (wrong or missing
/// key) is reported and left closed: its secrets are unavailable, nothing is overwritten.
async fn open_vault(
    store: &Store,
    key: Option<nanoclaw_vault::MasterKey>,
    home: &std::path::Path,
) -> Option<nanoclaw_vault::Vault> {
    let opened = match key {
        Some(key) => nanoclaw_vault::Vault::open(store.clone(), key)
            .await
            .map(Some),
        None => match nanoclaw_vault::KeySources::for_home(home) {
            Ok(sources) => {
                nanoclaw_vault::Vault::open_default(store.clone(), &sources, false).await
            }
            Err(e) => Err(e),
        },
    };
    match opened {
        Ok(vault) => vault,
        Err(e) => {
            tracing::error!("the vault cannot be opened; its secrets are unavailable: {e}");
            None
        }
    }
}

/// The main group and the owner's main chat, wired together (idempotent; the CLI uses it too,
/// e.g. `channel add` before the host ever ran).
pub async fn ensure_main_wiring(store: &Store, config: &Config) -> anyhow::Result<()> {
    let group = store
        .ensure_group(NewGroup {
            name: "Main".into(),
            folder: "main".into(),
            trigger: Some(config.trigger.clone()),
            is_main: true,
            provider: None,
            model: None,
        })
        .await?;
    let chat = store
        .ensure_chat(
            owner::OWNER_CHANNEL,
            owner::OWNER_CHAT_ID,
            "Terminal",
            false,
        )
        .await?;
    // The owner's own chat: every message is for the assistant, no trigger needed.
    store
        .wire(
            chat.id,
            group.id.clone(),
            nanoclaw_store::WiringOptions::new(false, SessionMode::Shared),
        )
        .await?;
    Ok(())
}

/// Chats whose messages wait for a client to come back, and how many "a client is back"
/// events the host has seen: a delivery that found nobody parks its chat only when no such
/// event arrived while it was trying, so a client that connected meanwhile is never missed.
#[derive(Default)]
pub(super) struct ParkedChats {
    pub(super) chats: HashSet<i64>,
    pub(super) reachable_events: u64,
}

//! The host: wires channels, router, store, agents and delivery together.
//!
//! Durability rules: an inbound message is stored before it is acknowledged; a turn's
//! reply is stored in the same transaction that marks its messages done; delivery marks a
//! message delivered only once. After a crash, `processing` rows go back to `pending`
//! and are answered again; replies already stored are not produced twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nanoclaw_protocol::{
    AgentMessage, ChatMessage, ChatRef, HostMessage, RequestAction, RequestResult, ToolPhase, Turn,
};
use nanoclaw_sandbox::Runtime;
use nanoclaw_store::{
    Chat, Group, Inbound, NewGroup, NewOutbound, OutboundKind, RunStatus, SessionMode, Store,
    Usage as StoreUsage,
};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

use crate::agents::{AgentEvent, AgentPool};
use crate::channel::{
    Channel, ChannelContext, ChannelError, ChannelEvent, OutgoingMessage, Progress, RouteOutcome,
};
use crate::config::{Config, Paths};
use crate::log_limit::clean;
use crate::now_ms;
use nanoclaw_egress::relay::{ModelUpstreams, Relay};

/// Messages batched into one turn at most.
const MAX_BATCH: usize = 10;
/// Longest text the agent may send through `send_message`.
const MAX_AGENT_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest reply the host accepts from the agent (joined from `reply_part` frames); a longer
/// one fails the turn with a message saying so instead of being stored.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Delivery attempts before a message is marked failed.
const MAX_DELIVERY_TRIES: u32 = 5;

pub struct HostOptions {
    pub paths: Paths,
    pub config: Config,
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
    parked_chats: Mutex<HashSet<i64>>,
    /// Outbound rows of this run that answer several messages (a batched turn): their
    /// platform ids, so every sender's client gets the answer. Dropped once delivered; after a
    /// restart the clients that asked are gone anyway, and `in_reply_to` remains.
    answers: std::sync::Mutex<HashMap<i64, Vec<String>>>,
    runtime_error: Option<String>,
    /// Secrets; the leak guard scans outgoing chat messages for their values.
    vault: Option<nanoclaw_vault::Vault>,
    _lock: HostLock,
}

/// One host per data directory: a second would double-answer every message.
struct HostLock {
    _file: std::fs::File,
}

/// Another host holds the data directory's lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another nanoclaw host is already running with this data directory ({}); \
     use `nanoclaw chat` to talk to it, or stop it first",
    home.display()
)]
pub struct AlreadyRunning {
    pub home: PathBuf,
}

impl HostLock {
    fn acquire(path: &std::path::Path) -> anyhow::Result<HostLock> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(AlreadyRunning {
                home: path
                    .parent()
                    .and_then(|p| p.parent())
                    .unwrap_or(path)
                    .to_owned(),
            }
            .into());
        }
        Ok(HostLock { _file: file })
    }
}

impl Host {
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
        paths
            .prepare()
            .with_context(|| format!("preparing the data directory {}", paths.home.display()))?;
        let lock = HostLock::acquire(&paths.run_dir().join("host.lock"))?;
        // Sandboxes of a previous run died with it (die-with-parent); drop their sockets.
        let stale = paths.run_dir().join("sandboxes");
        let _ = std::fs::remove_dir_all(&stale);
        crate::config::create_private_dir(&stale)?;
        let store = crate::open_store(&paths.database(), false)
            .with_context(|| format!("opening {}", paths.database().display()))?;

        let recovered = store.recover_interrupted(now_ms()).await?;
        if recovered > 0 {
            tracing::warn!(
                messages = recovered,
                "resuming messages interrupted by the last shutdown"
            );
        }
        ensure_main_wiring(&store, &config).await?;

        let runtime = match runtime {
            Some(r) => Ok(r),
            None => {
                let host_id = paths
                    .host_id()
                    .with_context(|| format!("reading {}/host-id", paths.home.display()))?;
                crate::runtime::select(&config, &host_id).await
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
        let vault = open_vault(&store, master_key, &paths.home).await;
        let relay = Relay::with_limits(upstreams, vault.clone(), config.relay.to_limits())
            .context("building the model relay's HTTP client")?;
        let delivery_wake = Arc::new(Notify::new());
        let egress = build_egress(&store, &paths, vault.as_ref()).with_approval_notifier(Arc::new(
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

        let channel_list = crate::channel::build_enabled(&ChannelContext {
            config: &config,
            paths: &paths,
            warning: runtime_error.clone(),
        })?;
        let channels: HashMap<String, Arc<dyn Channel>> = channel_list
            .iter()
            .map(|c| (c.name().to_owned(), Arc::clone(c)))
            .collect();

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
            parked_chats: Mutex::new(HashSet::new()),
            answers: std::sync::Mutex::new(HashMap::new()),
            runtime_error,
            vault,
            _lock: lock,
        });

        let (tx, rx) = mpsc::channel::<ChannelEvent>(1024);
        let tasks = vec![
            tokio::spawn(router_loop(Arc::clone(&inner), rx)),
            tokio::spawn(delivery_loop(Arc::clone(&inner))),
            tokio::spawn(scheduler_loop(Arc::clone(&inner))),
            tokio::spawn(task_loop(Arc::clone(&inner))),
        ];
        for channel in channel_list {
            let name = channel.name();
            Arc::clone(&channel)
                .start(tx.clone())
                .await
                .with_context(|| format!("starting the {name} channel"))?;
            tracing::info!(channel = name, "channel started");
        }
        if !inner.config.agents.warm.is_empty() {
            tokio::spawn(prewarm(Arc::clone(&inner)));
        }
        Ok(Host {
            inner,
            tasks,
            sink: tx,
        })
    }

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

    /// Agents running right now: busy with a turn or idle and warm.
    pub fn live_agents(&self) -> usize {
        self.inner.pool.live_count()
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

    /// Stops channels, background tasks and idle agents.
    pub async fn shutdown(self) {
        for channel in self.inner.channels.values() {
            channel.stop().await;
        }
        for task in &self.tasks {
            task.abort();
        }
        self.inner.pool.stop_all().await;
    }
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

async fn ensure_main_wiring(store: &Store, config: &Config) -> anyhow::Result<()> {
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
            "terminal",
            crate::channel::terminal::TERMINAL_CHAT_ID,
            "Terminal",
            false,
        )
        .await?;
    // The owner's own chat: every message is for the assistant, no trigger needed.
    store
        .wire(chat.id, group.id.clone(), false, SessionMode::Shared)
        .await?;
    Ok(())
}

async fn router_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<ChannelEvent>) {
    while let Some(event) = rx.recv().await {
        match event {
            ChannelEvent::Inbound(mut event) => {
                let ack = event.ack.take();
                // The owner's `/approve N` / `/deny N` in the main chat never reach an agent.
                if let Some(outcome) = crate::approvals::intercept(&inner.store, &event).await {
                    inner.delivery_wake.notify_one();
                    tracing::debug!(channel = %event.channel, chat = %event.chat_id, ?outcome, "approval command");
                    if let Some(ack) = ack {
                        let _ = ack.send(outcome);
                    }
                    continue;
                }
                let outcome = match crate::router::route(&inner.store, &event).await {
                    Ok(routed) => {
                        for session in routed.sessions {
                            kick(&inner, session).await;
                        }
                        routed.outcome
                    }
                    Err(e) => {
                        tracing::error!(error = %e, channel = %event.channel, "storing an inbound message failed");
                        RouteOutcome::Failed(format!("could not store the message: {e}"))
                    }
                };
                tracing::debug!(channel = %event.channel, chat = %event.chat_id, ?outcome, "routed");
                if let Some(ack) = ack {
                    let _ = ack.send(outcome);
                }
            }
            ChannelEvent::Wake => {
                inner.tasks.wake();
                inner.scheduler_wake.notify_one();
                inner.delivery_wake.notify_one();
            }
            ChannelEvent::Reachable { channel, chat_id } => {
                if let Ok(Some(chat)) = inner.store.chat_by_platform(channel, chat_id).await {
                    inner.parked_chats.lock().await.remove(&chat.id);
                }
                inner.delivery_wake.notify_one();
            }
        }
    }
}

/// Starts the agents of the groups in `agents.warm` (their known sessions; for the main
/// group, the terminal's session) so first replies skip the sandbox start.
async fn prewarm(inner: Arc<Inner>) {
    for folder in inner.config.agents.warm.clone() {
        let group = match inner.store.group_by_folder(folder.as_str()).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                tracing::warn!(%folder, "agents.warm names a group that does not exist");
                continue;
            }
            Err(e) => {
                tracing::warn!(%folder, error = %e, "reading a warm group failed");
                continue;
            }
        };
        let mut sessions = inner
            .store
            .sessions_for_group(group.id.as_str())
            .await
            .unwrap_or_default();
        if sessions.is_empty()
            && group.is_main
            && let Ok(Some(chat)) = inner
                .store
                .chat_by_platform("terminal", crate::channel::terminal::TERMINAL_CHAT_ID)
                .await
            && let Ok(session) = inner
                .store
                .resolve_session(
                    group.id.clone(),
                    chat.id,
                    None,
                    SessionMode::Shared,
                    now_ms(),
                )
                .await
        {
            sessions.push(session);
        }
        for session in sessions {
            if let Err(e) = inner.pool.prewarm(&session, &group).await {
                tracing::warn!(%folder, error = %e, "could not keep an agent warm");
            }
        }
    }
}

/// Makes sure a worker is processing `session`.
async fn kick(inner: &Arc<Inner>, session: String) {
    let mut workers = inner.workers.lock().await;
    if workers.insert(session.clone()) {
        tokio::spawn(session_worker(Arc::clone(inner), session));
    }
}

/// Answers the session's due messages, one turn at a time, until none are left.
async fn session_worker(inner: Arc<Inner>, session_id: String) {
    loop {
        let batch = {
            let mut workers = inner.workers.lock().await;
            match inner
                .store
                .claim_pending(session_id.clone(), now_ms(), MAX_BATCH)
                .await
            {
                Ok(batch) if !batch.is_empty() => batch,
                Ok(_) => {
                    workers.remove(&session_id);
                    return;
                }
                Err(e) => {
                    tracing::error!(session = %session_id, error = %e, "claiming messages failed");
                    workers.remove(&session_id);
                    return;
                }
            }
        };
        if let Err(e) = run_turn(&inner, &session_id, batch).await {
            tracing::error!(session = %session_id, error = %e, "turn bookkeeping failed");
        }
    }
}

enum TurnEnd {
    Finished(Box<nanoclaw_protocol::TurnFinished>),
    Failed { error: String, retryable: bool },
}

async fn run_turn(inner: &Arc<Inner>, session_id: &str, batch: Vec<Inbound>) -> anyhow::Result<()> {
    let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
    // Every message of the turn gets its answer, not only the last one.
    let answers: Vec<String> = batch.iter().map(|m| m.platform_msg_id.clone()).collect();
    let first_id = ids.first().copied().unwrap_or_default();
    let session = inner
        .store
        .session(session_id.to_owned())
        .await?
        .context("session vanished")?;
    let group = inner
        .store
        .group(session.group_id.clone())
        .await?
        .context("agent group vanished")?;
    let chat = inner
        .store
        .chat(session.chat_id)
        .await?
        .context("chat vanished")?;
    // A scheduled task's run travels alone in its batch (see claim_pending).
    let task_run = match batch.first().and_then(|m| m.task_run_id) {
        Some(run_id) => task_for_run(inner, run_id).await,
        None => None,
    };
    let task_id = task_run.as_ref().map(|(task, _)| task.id.as_str());
    let tries = batch.iter().map(|m| m.tries).max().unwrap_or(1);
    tracing::info!(session = %session_id, group = %group.folder, messages = ids.len(), tries, "turn starting");

    // A message that keeps killing the host (each restart claims it again) must end too — but
    // only that message: the others in its batch go back to the queue untouched and are
    // claimed again right after (the worker loops).
    let max_tries = inner.config.agents.max_tries;
    let exhausted: Vec<&Inbound> = batch.iter().filter(|m| m.tries > max_tries).collect();
    if let Some(first) = exhausted.first() {
        let error = format!("gave up after {} interrupted attempts", first.tries - 1);
        let notice = NewOutbound {
            session_id: Some(session_id.to_owned()),
            chat_id: chat.id,
            in_reply_to: exhausted.last().map(|m| m.id),
            // Keyed on the exhausted message: the released ones keep their own key free.
            idempotency_key: format!("error:{session_id}:{}", first.id),
            text: match task_id {
                Some(id) => format!("Scheduled task {id} failed: {error}"),
                None => format!("Sorry, I could not answer that: {error}"),
            },
            kind: OutboundKind::Error,
        };
        let outcome = inner
            .store
            .fail_exhausted(ids, max_tries, error.clone(), now_ms(), Some(notice))
            .await?;
        for failed in &outcome.failed_runs {
            alert_task_failure(inner, &chat, failed, &error).await;
        }
        inner.delivery_wake.notify_one();
        return Ok(());
    }

    let mut agent = match inner.pool.acquire(&session, &group).await {
        Ok(agent) => agent,
        Err(e) if e.is_runtime_down() => {
            return defer_turn(inner, &chat, session_id, &ids, e.to_string()).await;
        }
        Err(e) => {
            tracing::error!(session = %session_id, error = %e, "could not start the agent");
            let retryable = e.is_retryable();
            return fail_turn(
                inner,
                &chat,
                session_id,
                &ids,
                task_id,
                e.to_string(),
                retryable,
            )
            .await;
        }
    };

    let turn_id = format!("{session_id}:{first_id}:{tries}");
    let zone = inner.tasks.zone_for(&group);
    let turn = HostMessage::Turn(Turn {
        turn_id: turn_id.clone(),
        messages: batch
            .iter()
            .map(|m| ChatMessage {
                id: m.id.to_string(),
                sender: m.sender.clone(),
                sender_name: m.sender_name.clone(),
                time: chrono::DateTime::from_timestamp_millis(m.received_at)
                    .unwrap_or_default()
                    .to_rfc3339(),
                chat: ChatRef {
                    channel: chat.channel.clone(),
                    chat_id: chat.platform_id.clone(),
                    thread: m.thread.clone(),
                },
                text: m.text.clone(),
            })
            .collect(),
        local_time: Some(inner.tasks.local_now(zone)),
        task: task_run
            .as_ref()
            .map(|(task, run)| inner.tasks.task_run_for_turn(task, run)),
    });
    if let Err(e) = agent.send(&turn).await {
        agent.kill().await;
        return fail_turn(
            inner,
            &chat,
            session_id,
            &ids,
            task_id,
            format!("the agent stopped: {e}"),
            true,
        )
        .await;
    }

    let channel = inner.channels.get(&chat.channel).cloned();
    let deadline = tokio::time::Instant::now() + inner.config.agents.turn_timeout();
    let mut sent_messages = 0u32;
    let mut reply_parts = String::new();
    let end = loop {
        let event = match tokio::time::timeout_at(deadline, agent.next_event()).await {
            Ok(event) => event,
            Err(_) => {
                break TurnEnd::Failed {
                    error: format!(
                        "the turn took longer than {}s and was stopped",
                        inner.config.agents.turn_timeout_secs
                    ),
                    retryable: true,
                };
            }
        };
        let msg = match event {
            AgentEvent::Message(msg) => msg,
            AgentEvent::Exited(why) => {
                break TurnEnd::Failed {
                    error: format!("the agent exited mid-turn ({why})"),
                    retryable: true,
                };
            }
        };
        match msg {
            AgentMessage::TextDelta { turn_id: t, text } if t == turn_id => {
                if let Some(ch) = &channel {
                    ch.progress(&chat.platform_id, &answers, Progress::TextDelta(text))
                        .await;
                }
            }
            AgentMessage::ToolActivity(activity) if activity.turn_id == turn_id => {
                if agent
                    .log
                    .admit(activity.tool.len() + activity.summary.len())
                {
                    tracing::info!(session = %session_id, tool = %clean(&activity.tool), phase = ?activity.phase, summary = %clean(&activity.summary), "tool");
                }
                if activity.phase == ToolPhase::Started
                    && let Some(ch) = &channel
                {
                    ch.progress(
                        &chat.platform_id,
                        &answers,
                        Progress::Tool {
                            tool: activity.tool,
                            summary: activity.summary,
                        },
                    )
                    .await;
                }
            }
            AgentMessage::Request(request) => {
                let result = handle_request(
                    inner,
                    session_id,
                    &group,
                    &chat,
                    TurnMessages {
                        first_id,
                        answers: &answers,
                    },
                    &mut sent_messages,
                    request.action,
                )
                .await;
                if let Err(why) = &result
                    && agent.log.admit(why.len())
                {
                    tracing::info!(session = %session_id, why = %clean(why), "agent request refused");
                }
                let reply = HostMessage::RequestResult(match result {
                    Ok(data) => RequestResult {
                        request_id: request.request_id,
                        ok: true,
                        error: None,
                        data,
                    },
                    Err(error) => RequestResult {
                        request_id: request.request_id,
                        ok: false,
                        error: Some(error),
                        data: serde_json::Value::Null,
                    },
                });
                if let Err(e) = agent.send(&reply).await {
                    break TurnEnd::Failed {
                        error: format!("the agent stopped: {e}"),
                        retryable: true,
                    };
                }
            }
            AgentMessage::ReplyPart { turn_id: t, text } if t == turn_id => {
                // A reply too long for one protocol line comes in parts (protocol 1.3).
                if reply_parts.len() + text.len() > MAX_REPLY_BYTES {
                    break TurnEnd::Failed {
                        error: format!(
                            "the reply is longer than {} MiB, too long to deliver; ask for a shorter answer or for the result in a file",
                            MAX_REPLY_BYTES / (1024 * 1024)
                        ),
                        retryable: false,
                    };
                }
                reply_parts.push_str(&text);
            }
            AgentMessage::TurnFinished(mut done) if done.turn_id == turn_id => {
                if !reply_parts.is_empty() {
                    if reply_parts.len() + done.reply.len() > MAX_REPLY_BYTES {
                        break TurnEnd::Failed {
                            error: format!(
                                "the reply is longer than {} MiB, too long to deliver; ask for a shorter answer or for the result in a file",
                                MAX_REPLY_BYTES / (1024 * 1024)
                            ),
                            retryable: false,
                        };
                    }
                    reply_parts.push_str(&done.reply);
                    done.reply = std::mem::take(&mut reply_parts);
                }
                break TurnEnd::Finished(Box::new(done));
            }
            AgentMessage::TurnFailed {
                turn_id: t,
                error,
                retryable,
            } if t == turn_id => {
                // The agent already retried its model calls with backoff; trying the whole
                // turn again would only keep the user waiting longer for the same error.
                tracing::debug!(session = %session_id, retryable, "agent reported a failed turn");
                break TurnEnd::Failed {
                    error,
                    retryable: false,
                };
            }
            AgentMessage::Log { level, message } => {
                if !agent.log.admit(message.len()) {
                    continue;
                }
                let message = clean(&message);
                match level {
                    nanoclaw_protocol::LogLevel::Error | nanoclaw_protocol::LogLevel::Warn => {
                        tracing::warn!(session = %session_id, "agent: {message}")
                    }
                    _ => tracing::debug!(session = %session_id, "agent: {message}"),
                }
            }
            AgentMessage::Fatal { error } => {
                break TurnEnd::Failed {
                    error: format!("the agent gave up: {error}"),
                    retryable: false,
                };
            }
            other => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let other = clean(&format!("{other:?}"));
                    if agent.log.admit(other.len()) {
                        tracing::debug!(session = %session_id, %other, "ignoring an agent message for another turn");
                    }
                }
            }
        }
    };
    match end {
        TurnEnd::Finished(done) => {
            // The agent's work is done; saving the reply must not hold its slot.
            inner.pool.release(agent).await;
            let done = *done;
            let mut replies = Vec::new();
            if !done.reply.trim().is_empty() {
                replies.push(NewOutbound {
                    session_id: Some(session_id.to_owned()),
                    chat_id: chat.id,
                    in_reply_to: ids.last().copied(),
                    idempotency_key: format!("reply:{session_id}:{first_id}"),
                    text: done.reply,
                    kind: OutboundKind::Reply,
                });
            }
            let task_status = task_run.is_some().then(|| {
                if done.precheck.as_ref().is_none_or(|p| p.woke) {
                    RunStatus::Ok
                } else {
                    RunStatus::Skipped
                }
            });
            let tokens = (done.usage.input_tokens, done.usage.output_tokens);
            save_turn(
                inner,
                session_id,
                &ids,
                &answers,
                replies,
                task_status,
                tokens,
            )
            .await;
            if let Err(e) = inner
                .store
                .record_usage(
                    session_id.to_owned(),
                    StoreUsage {
                        input_tokens: done.usage.input_tokens,
                        output_tokens: done.usage.output_tokens,
                        cache_read: done.usage.cache_read_input_tokens,
                        cache_creation: done.usage.cache_creation_input_tokens,
                    },
                    now_ms(),
                )
                .await
            {
                // Only the token counts are lost; the reply is stored.
                tracing::warn!(session = %session_id, error = %e, "recording token usage failed");
            }
            inner.delivery_wake.notify_one();
            tracing::info!(session = %session_id, "turn finished");
            Ok(())
        }
        TurnEnd::Failed { error, retryable } => {
            // The error may carry the sandbox's text: escaped and cut in the log record.
            tracing::warn!(session = %session_id, error = %clean(&error), retryable, "turn failed");
            // The agent's state is suspect after a failure; start fresh next time.
            agent.kill().await;
            fail_turn(inner, &chat, session_id, &ids, task_id, error, retryable).await
        }
    }
}

/// The messages a turn answers: the first one's row id (it keys the turn's outbound rows)
/// and every one's platform id.
#[derive(Clone, Copy)]
struct TurnMessages<'a> {
    first_id: i64,
    answers: &'a [String],
}

/// Longest wait between two attempts to save a finished turn.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Stores a finished turn: its replies and the completion of its messages (and of its task run),
/// in one transaction. A storage error (disk full, damaged table) is not the message's fault and
/// says nothing about the reply: the reply stays in memory and the save is retried with backoff
/// until it works, and the owner is told once. Should the host stop meanwhile, the messages are
/// still `processing` and are answered again after the restart (replies carry idempotency keys).
async fn save_turn(
    inner: &Arc<Inner>,
    session_id: &str,
    ids: &[i64],
    answers: &[String],
    replies: Vec<NewOutbound>,
    task_status: Option<RunStatus>,
    tokens: (u64, u64),
) {
    let mut delay = Duration::from_secs(1);
    let mut told = false;
    loop {
        let saved = match task_status {
            Some(status) => {
                inner
                    .store
                    .complete_task_turn(ids.to_vec(), replies.clone(), status, tokens, now_ms())
                    .await
            }
            None => inner
                .store
                .complete_turn(ids.to_vec(), replies.clone(), now_ms())
                .await
                .map(|stored| {
                    for row in stored {
                        remember_answers(inner, row.id, answers);
                    }
                }),
        };
        let Err(e) = saved else {
            if told {
                tracing::info!(session = %session_id, "the reply was saved after all");
            }
            return;
        };
        tracing::error!(session = %session_id, error = %e, retry_in = ?delay, "saving a finished turn failed; the reply is kept and the save retried");
        if !told {
            told = true;
            let first_id = ids.first().copied().unwrap_or_default();
            tell_owner(
                inner,
                format!("storage:{session_id}:{first_id}"),
                format!(
                    "I answered a message but could not save the reply: {e}. The reply is kept \
                     and saving is retried until it works; check free disk space and the \
                     database (`nanoclaw doctor`)."
                ),
            )
            .await;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(SAVE_RETRY_MAX);
    }
}

/// A message for the owner's main chat that must get out even when the database does not take
/// writes: stored when possible (delivered like any other), else handed to the channel directly.
async fn tell_owner(inner: &Arc<Inner>, key: String, text: String) {
    let main_chat = match inner
        .store
        .chat_by_platform("terminal", crate::channel::terminal::TERMINAL_CHAT_ID)
        .await
    {
        Ok(Some(chat)) => Some(chat),
        _ => None,
    };
    if let Some(chat) = &main_chat {
        let stored = inner
            .store
            .insert_outbound(NewOutbound {
                session_id: None,
                chat_id: chat.id,
                in_reply_to: None,
                idempotency_key: key.clone(),
                text: text.clone(),
                kind: OutboundKind::Error,
            })
            .await;
        if stored.is_ok() {
            inner.delivery_wake.notify_one();
            return;
        }
    }
    let Some(channel) = inner.channels.get("terminal") else {
        tracing::error!(%text, "no channel to tell the owner");
        return;
    };
    let message = OutgoingMessage {
        outbound_id: 0,
        idempotency_key: key,
        chat_id: crate::channel::terminal::TERMINAL_CHAT_ID.to_owned(),
        thread: None,
        text,
        kind: OutboundKind::Error.as_str().to_owned(),
        reply_to: None,
        answers: Vec::new(),
    };
    if let Err(e) = channel.deliver(&message).await {
        tracing::error!(error = %e, text = %message.text, "could not tell the owner");
    }
}

/// Checks and performs something the agent asked for. The agent is untrusted: it may only
/// message the chat its turn came from, within size limits.
async fn handle_request(
    inner: &Arc<Inner>,
    session_id: &str,
    group: &Group,
    chat: &Chat,
    turn: TurnMessages<'_>,
    sent_messages: &mut u32,
    action: RequestAction,
) -> Result<serde_json::Value, String> {
    let TurnMessages { first_id, answers } = turn;
    match action {
        RequestAction::SendMessage { text } => {
            if text.trim().is_empty() {
                return Err("send_message needs non-empty text".into());
            }
            if text.len() > MAX_AGENT_MESSAGE_BYTES {
                return Err(format!(
                    "message of {} bytes refused; the limit is {MAX_AGENT_MESSAGE_BYTES}",
                    text.len()
                ));
            }
            *sent_messages += 1;
            // Keyed by the turn's first message and its position in the turn, so a turn
            // retried after a crash does not send the same message twice.
            let key = format!("msg:{session_id}:{first_id}:{sent_messages}");
            let row = inner
                .store
                .insert_outbound(NewOutbound {
                    session_id: Some(session_id.to_owned()),
                    chat_id: chat.id,
                    in_reply_to: Some(first_id),
                    idempotency_key: key,
                    text,
                    kind: OutboundKind::Message,
                })
                .await
                .map_err(|e| format!("could not queue the message: {e}"))?;
            if let Some(row) = &row {
                remember_answers(inner, row.id, answers);
            }
            inner.delivery_wake.notify_one();
            Ok(serde_json::json!({ "queued": row.is_some() }))
        }
        RequestAction::ListGroups => {
            require_main(group, "list_groups")?;
            list_groups(&inner.store)
                .await
                .map_err(|e| format!("could not read the groups: {e}"))
        }
        RequestAction::RegisterChat {
            channel,
            chat_id,
            folder,
            name,
            requires_trigger,
        } => {
            require_main(group, "register_chat")?;
            register_chat(inner, channel, chat_id, folder, name, requires_trigger).await
        }
        action @ (RequestAction::ScheduleTask { .. }
        | RequestAction::ListTasks
        | RequestAction::UpdateTask { .. }
        | RequestAction::PauseTask { .. }
        | RequestAction::ResumeTask { .. }
        | RequestAction::CancelTask { .. }) => {
            crate::tasks::handle_request(&inner.store, &inner.tasks, group, chat, action).await
        }
    }
}

/// The task and run an inbound row carries out.
async fn task_for_run(
    inner: &Arc<Inner>,
    run_id: i64,
) -> Option<(nanoclaw_store::Task, nanoclaw_store::TaskRunRow)> {
    let run = inner.store.task_run(run_id).await.ok().flatten()?;
    let task = inner.store.task(run.task_id.clone()).await.ok().flatten()?;
    Some((task, run))
}

/// Admin actions are for the owner's main group only; other groups see just their own
/// folder.
fn require_main(group: &Group, action: &str) -> Result<(), String> {
    if group.is_main {
        Ok(())
    } else {
        tracing::warn!(group = %group.folder, action, "refused an admin request from a non-main group");
        Err(format!(
            "{action} is only available to the owner's main group; this is group {:?}",
            group.folder
        ))
    }
}

async fn list_groups(store: &Store) -> Result<serde_json::Value, nanoclaw_store::StoreError> {
    let groups = store.list_groups().await?;
    let mut chats_by_group: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for chat in store.list_chats().await? {
        for (wiring, group) in store.wirings_for_chat(chat.id).await? {
            chats_by_group
                .entry(group.id)
                .or_default()
                .push(serde_json::json!({
                    "channel": chat.channel,
                    "chat_id": chat.platform_id,
                    "name": chat.name,
                    "requires_trigger": wiring.requires_trigger,
                }));
        }
    }
    Ok(serde_json::Value::Array(
        groups
            .into_iter()
            .map(|g| {
                serde_json::json!({
                    "folder": g.folder,
                    "name": g.name,
                    "trigger": g.trigger,
                    "is_main": g.is_main,
                    "provider": g.provider,
                    "model": g.model,
                    "chats": chats_by_group.remove(&g.id).unwrap_or_default(),
                })
            })
            .collect(),
    ))
}

async fn register_chat(
    inner: &Arc<Inner>,
    channel: String,
    chat_id: String,
    folder: String,
    name: Option<String>,
    requires_trigger: bool,
) -> Result<serde_json::Value, String> {
    let valid_channel = !channel.is_empty()
        && channel.len() <= 32
        && channel
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid_channel {
        return Err(format!(
            "channel {channel:?} is not a channel type (lowercase letters, digits, - and _)"
        ));
    }
    if chat_id.trim().is_empty() || chat_id.len() > 256 {
        return Err("chat_id must be 1 to 256 characters".into());
    }
    let existing = inner
        .store
        .group_by_folder(folder.as_str())
        .await
        .map_err(|e| e.to_string())?;
    // A chat wired to the main group would let its members act as the owner (approvals,
    // admin requests): only the owner wires chats to main, from the CLI.
    if existing.as_ref().is_some_and(|g| g.is_main) {
        return Err(format!(
            "{folder:?} is the owner's main group; chats are wired to it by the owner, not by an agent"
        ));
    }
    let existed = existing.is_some();
    let group = inner
        .store
        .ensure_group(NewGroup {
            name: name.unwrap_or_else(|| folder.clone()),
            folder,
            trigger: Some(inner.config.trigger.clone()),
            is_main: false,
            provider: None,
            model: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    let chat = inner
        .store
        .ensure_chat(channel.as_str(), chat_id.as_str(), chat_id.as_str(), true)
        .await
        .map_err(|e| e.to_string())?;
    inner
        .store
        .wire(
            chat.id,
            group.id.clone(),
            requires_trigger,
            SessionMode::Shared,
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%channel, %chat_id, group = %group.folder, "chat registered by the main group");
    Ok(serde_json::json!({
        "group": group.folder,
        "created_group": !existed,
        "channel": channel,
        "chat_id": chat_id,
        "requires_trigger": requires_trigger,
    }))
}

/// The sandbox engine is down: keep the messages, say so once, try again later.
async fn defer_turn(
    inner: &Arc<Inner>,
    chat: &Chat,
    session_id: &str,
    ids: &[i64],
    error: String,
) -> anyhow::Result<()> {
    tracing::error!(session = %session_id, %error, "sandbox runtime unreachable; messages kept for later");
    let first_id = ids.first().copied().unwrap_or_default();
    let now = now_ms();
    inner
        .store
        .defer_claimed(
            ids.to_vec(),
            now + (inner.config.agents.runtime_retry_secs.max(1) * 1000) as i64,
            error.clone(),
            now,
        )
        .await?;
    // Keyed per batch: the notice goes out once however many times the engine is retried.
    let notice = inner
        .store
        .insert_outbound(NewOutbound {
            session_id: Some(session_id.to_owned()),
            chat_id: chat.id,
            in_reply_to: None,
            idempotency_key: format!("deferred:{session_id}:{first_id}"),
            text: format!(
                "I can't start my sandbox right now ({error}). Your message is kept and I'll answer as soon as it is back."
            ),
            kind: OutboundKind::Message,
        })
        .await?;
    if let Some(notice) = notice {
        let answers = platform_ids(inner, ids).await;
        remember_answers(inner, notice.id, &answers);
        inner.delivery_wake.notify_one();
    }
    inner.scheduler_wake.notify_one();
    Ok(())
}

/// Records which messages an outbound row answers (see `Inner::answers`).
fn remember_answers(inner: &Inner, outbound_id: i64, answers: &[String]) {
    if answers.len() < 2 {
        // `in_reply_to` says it already.
        return;
    }
    if let Ok(mut map) = inner.answers.lock() {
        map.insert(outbound_id, answers.to_vec());
    }
}

/// The platform ids of inbound rows.
async fn platform_ids(inner: &Inner, ids: &[i64]) -> Vec<String> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Ok(Some(m)) = inner.store.inbound(id).await {
            out.push(m.platform_msg_id);
        }
    }
    out
}

/// A turn failed: retry it later, or give up and say so in its chat. `task_id`: the scheduled
/// task whose run the turn was.
async fn fail_turn(
    inner: &Arc<Inner>,
    chat: &Chat,
    session_id: &str,
    ids: &[i64],
    task_id: Option<&str>,
    error: String,
    retryable: bool,
) -> anyhow::Result<()> {
    let max_tries = if retryable {
        inner.config.agents.max_tries
    } else {
        1
    };
    let first_id = ids.first().copied().unwrap_or_default();
    let notice = NewOutbound {
        session_id: Some(session_id.to_owned()),
        chat_id: chat.id,
        in_reply_to: ids.last().copied(),
        idempotency_key: format!("error:{session_id}:{first_id}"),
        text: match task_id {
            Some(id) => format!("Scheduled task {id} failed: {error}"),
            None => format!("Sorry, I could not answer that: {error}"),
        },
        kind: OutboundKind::Error,
    };
    let outcome = inner
        .store
        .retry_or_fail(
            ids.to_vec(),
            error.clone(),
            max_tries,
            (inner.config.agents.retry_backoff_secs * 1000) as i64,
            now_ms(),
            Some(notice),
        )
        .await?;
    if !outcome.retried.is_empty() {
        tracing::info!(session = %session_id, messages = outcome.retried.len(), "turn will be retried");
        inner.scheduler_wake.notify_one();
    }
    if let Some(notice) = &outcome.notice {
        let answers = platform_ids(inner, &outcome.failed).await;
        remember_answers(inner, notice.id, &answers);
    }
    for failed in &outcome.failed_runs {
        alert_task_failure(inner, chat, failed, &error).await;
    }
    if outcome.notice.is_some() || !outcome.failed_runs.is_empty() {
        inner.delivery_wake.notify_one();
    }
    Ok(())
}

/// A failed run is never silent: its own chat got the failure notice; the owner's main chat hears
/// of it too, and of a task that keeps failing.
async fn alert_task_failure(
    inner: &Arc<Inner>,
    task_chat: &Chat,
    failed: &nanoclaw_store::FailedRun,
    error: &str,
) {
    let main_chat = match inner
        .store
        .chat_by_platform("terminal", crate::channel::terminal::TERMINAL_CHAT_ID)
        .await
    {
        Ok(Some(c)) => c,
        _ => {
            tracing::warn!(task = %failed.task_id, "no main chat to alert about a failed task run");
            return;
        }
    };
    let mut text = if main_chat.id == task_chat.id {
        String::new()
    } else {
        format!(
            "Scheduled task {} (chat {} on {}) failed: {error}",
            failed.task_id, task_chat.platform_id, task_chat.channel
        )
    };
    if failed.now_failing {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!(
            "Task {} has failed {} times in a row and is marked failing; it keeps its schedule. \
             See `nanoclaw tasks show {}`.",
            failed.task_id, failed.consecutive_failures, failed.task_id
        ));
    }
    if text.is_empty() {
        return;
    }
    let alert = NewOutbound {
        session_id: None,
        chat_id: main_chat.id,
        in_reply_to: None,
        idempotency_key: format!("task-alert:{}", failed.run_id),
        text,
        kind: OutboundKind::Error,
    };
    if let Err(e) = inner.store.insert_outbound(alert).await {
        tracing::error!(task = %failed.task_id, error = %e, "could not queue a task failure alert");
    }
}

/// Fires scheduled tasks when due; sleeps until the next fire time (or a change) in between.
async fn task_loop(inner: Arc<Inner>) {
    loop {
        let mut last_pass = inner.tasks.clock().now();
        match inner.tasks.fire_due().await {
            Ok(fired) => {
                last_pass = fired.at;
                if fired.handled > 0 {
                    // Late and skipped runs queue a notice for their chat.
                    inner.delivery_wake.notify_one();
                }
                for s in fired.sessions {
                    kick(&inner, s).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "firing scheduled tasks failed"),
        }
        inner.tasks.wait(last_pass).await;
    }
}

/// Sleeps until the next retry is due (no polling), then wakes those sessions.
async fn scheduler_loop(inner: Arc<Inner>) {
    loop {
        let now = now_ms();
        match inner.store.sessions_with_due_work(now).await {
            Ok(sessions) => {
                for s in sessions {
                    kick(&inner, s).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "finding due work failed"),
        }
        let next = inner.store.next_due_time().await.ok().flatten();
        let notified = inner.scheduler_wake.notified();
        match next {
            Some(at) if at > now_ms() => {
                let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = notified => {}
                }
            }
            Some(_) => {
                // Due now but claimed by a running worker: wait for news.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// The text to deliver: with every secret value redacted. A redaction is logged and the
/// owner is told in the main chat.
async fn guard_text(
    inner: &Arc<Inner>,
    guard: &nanoclaw_vault::LeakGuard,
    row: &nanoclaw_store::Outbound,
    chat: &Chat,
) -> String {
    if guard.is_empty() {
        return row.text.clone();
    }
    let hits = guard.scan(row.text.as_bytes());
    if hits.is_empty() {
        return row.text.clone();
    }
    let mut names: Vec<&str> = hits
        .iter()
        .map(|m| guard.secret_name(m.secret_index))
        .collect();
    names.sort_unstable();
    names.dedup();
    tracing::warn!(
        outbound = row.id,
        channel = %chat.channel,
        chat = %chat.platform_id,
        secrets = ?names,
        "redacted a secret from an outgoing chat message"
    );
    if let Ok(Some(owner_chat)) = inner
        .store
        .chat_by_platform("terminal", crate::channel::terminal::TERMINAL_CHAT_ID)
        .await
    {
        let alert = NewOutbound {
            session_id: None,
            chat_id: owner_chat.id,
            in_reply_to: None,
            idempotency_key: format!("leak:{}", row.id),
            text: format!(
                "Security: a message to {}:{} contained the secret(s) {}; the values were redacted before it was sent.",
                chat.channel,
                chat.platform_id,
                names.join(", ")
            ),
            kind: OutboundKind::Error,
        };
        if let Err(e) = inner.store.insert_outbound(alert).await {
            tracing::error!(error = %e, "could not queue the leak alert");
        }
        inner.delivery_wake.notify_one();
    }
    guard.redact(&row.text)
}

/// Delivers stored outbound messages through their channels.
async fn delivery_loop(inner: Arc<Inner>) {
    let mut chats: HashMap<i64, Chat> = HashMap::new();
    loop {
        let notified = inner.delivery_wake.notified();
        let mut retry_soon = false;
        // Checked per pass against the live secret versions (the vault rebuilds it only when
        // they changed), so a rotation is covered at once.
        let guard = match &inner.vault {
            Some(vault) => match vault.leak_guard().await {
                Ok(guard) => Some(guard),
                Err(e) => {
                    // Fail closed: without a working guard nothing leaves.
                    tracing::error!(error = %e, "the leak guard is unavailable; holding outgoing messages");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = notified => {}
                    }
                    continue;
                }
            },
            None => None,
        };
        match inner.store.pending_outbound(200).await {
            Ok(rows) => {
                for row in rows {
                    if inner.parked_chats.lock().await.contains(&row.chat_id) {
                        continue;
                    }
                    let chat = match chats.get(&row.chat_id) {
                        Some(c) => c.clone(),
                        None => match inner.store.chat(row.chat_id).await {
                            Ok(Some(c)) => {
                                chats.insert(c.id, c.clone());
                                c
                            }
                            _ => continue,
                        },
                    };
                    let Some(channel) = inner.channels.get(&chat.channel) else {
                        // The channel is not running (disabled in config): keep the message.
                        inner.parked_chats.lock().await.insert(chat.id);
                        continue;
                    };
                    let reply_to = match row.in_reply_to {
                        Some(id) => inner
                            .store
                            .inbound(id)
                            .await
                            .ok()
                            .flatten()
                            .map(|m| m.platform_msg_id),
                        None => None,
                    };
                    let text = match &guard {
                        Some(guard) => guard_text(&inner, guard, &row, &chat).await,
                        None => row.text.clone(),
                    };
                    let answers = inner
                        .answers
                        .lock()
                        .ok()
                        .and_then(|map| map.get(&row.id).cloned())
                        .unwrap_or_default();
                    let message = OutgoingMessage {
                        outbound_id: row.id,
                        idempotency_key: row.idempotency_key.clone(),
                        chat_id: chat.platform_id.clone(),
                        thread: None,
                        text,
                        kind: row.kind.as_str().to_owned(),
                        reply_to,
                        answers,
                    };
                    match channel.deliver(&message).await {
                        Ok(platform_id) => {
                            if let Ok(mut map) = inner.answers.lock() {
                                map.remove(&row.id);
                            }
                            if let Err(e) = inner
                                .store
                                .mark_delivered(row.id, platform_id, now_ms())
                                .await
                            {
                                tracing::error!(outbound = row.id, error = %e, "recording a delivery failed");
                            }
                        }
                        Err(ChannelError::NotConnected(why)) => {
                            tracing::debug!(chat = %chat.platform_id, %why, "chat unreachable; message kept");
                            inner.parked_chats.lock().await.insert(chat.id);
                        }
                        Err(ChannelError::Unclaimed(why)) => {
                            // Tried again on the next pass (a client arriving wakes one).
                            tracing::debug!(outbound = row.id, %why, "message kept");
                        }
                        Err(e) => {
                            tracing::warn!(outbound = row.id, error = %e, "delivery failed");
                            let state = inner
                                .store
                                .mark_delivery_failed(row.id, e.to_string(), MAX_DELIVERY_TRIES)
                                .await;
                            if matches!(state, Ok(nanoclaw_store::OutboundState::Failed))
                                && let Ok(mut map) = inner.answers.lock()
                            {
                                map.remove(&row.id);
                            }
                            retry_soon = true;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the outbound queue failed");
                retry_soon = true;
            }
        }
        if retry_soon {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = notified => {}
            }
        } else {
            notified.await;
        }
    }
}

//! Agent lifecycle: spawning sandboxed agents, the handshake, the idle pool and the cap on
//! concurrent agents.
//!
//! One live agent per session. A worker takes the session's agent out of the pool for a
//! turn and puts it back afterwards; an agent left idle longer than the idle timeout is
//! stopped. At most `max_concurrent` agents live at once: a new one first evicts the
//! longest-idle agent, else waits for a slot (the queue).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nanoclaw_protocol::{
    AgentMessage, GroupInfo, Hello, HostMessage, LineReader, LineWriter, ModelConfig,
    PROTOCOL_MAJOR, PROTOCOL_MINOR,
};
use nanoclaw_sandbox::{Mount, RelayTransport, Runtime, SandboxControl, SandboxSpec, SandboxStdin};
use nanoclaw_store::{Group, Session};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::config::{Config, Paths, create_private_dir};
use crate::log_limit::{LogBudget, clean};
use nanoclaw_egress::relay::{Relay, RelayHandle};

/// Where things appear inside every sandbox.
pub const SANDBOX_WORKSPACE: &str = nanoclaw_protocol::contract::paths::WORKSPACE;
pub const SANDBOX_GLOBAL: &str = nanoclaw_protocol::contract::paths::GLOBAL;
pub const SANDBOX_RUN: &str = nanoclaw_protocol::contract::paths::RUN;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Seeded into a new group's folder; the agent keeps its memory here.
const GROUP_MEMORY_TEMPLATE: &str = "# Memory\n\nNotes this group's assistant keeps for itself: \
people, preferences, ongoing work. The assistant may edit this file.\n";
/// Seeded into the global memory folder; read-only to every agent.
const GLOBAL_MEMORY_TEMPLATE: &str = "# Standing instructions\n\nInstructions every agent \
group follows. Only the owner edits this file (agents see it read-only).\n\n- Be concise.\n";

/// What an agent process told the host, or that it is gone.
#[derive(Debug)]
pub enum AgentEvent {
    Message(AgentMessage),
    Exited(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no sandbox runtime is available, so no agent can run: {0}")]
    NoRuntime(String),
    #[error("preparing the sandbox failed: {0}")]
    Prepare(String),
    #[error(transparent)]
    Sandbox(#[from] nanoclaw_sandbox::SandboxError),
    #[error("the agent did not complete the handshake: {0}")]
    Handshake(String),
}

impl SpawnError {
    /// Whether trying again later could help (a missing runtime will not fix itself).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SpawnError::NoRuntime(_))
    }

    /// The runtime is there but not answering right now (e.g. the Docker engine is
    /// restarting): the message should wait for it, not count as a failed try.
    pub fn is_runtime_down(&self) -> bool {
        matches!(
            self,
            SpawnError::Sandbox(nanoclaw_sandbox::SandboxError::Unavailable { .. })
        )
    }
}

/// A running, handshaken agent.
pub struct LiveAgent {
    pub session_id: String,
    pub sandbox_name: String,
    writer: LineWriter<SandboxStdin>,
    events: mpsc::Receiver<AgentEvent>,
    control: Box<dyn SandboxControl>,
    _relay: RelayHandle,
    /// The sandbox's egress proxy socket (none for runtimes without one).
    _egress: Option<nanoclaw_egress::EgressHandle>,
    _permit: OwnedSemaphorePermit,
    run_dir: PathBuf,
    /// What this sandbox may still make the host log (shared with its output readers).
    pub log: LogBudget,
    /// The configuration it was started with. Model, zone, skills and MCP servers are fixed for
    /// an agent's life: when the group's would now be different, the pool starts a new one.
    hello: Option<Hello>,
    /// The skill set it was started with (names and content hashes): skills are mounts, fixed
    /// per sandbox, so an agent with another set is replaced before the next turn.
    skills_fingerprint: String,
}

impl LiveAgent {
    pub async fn send(&mut self, msg: &HostMessage) -> Result<(), nanoclaw_protocol::WriteError> {
        self.writer.send(msg).await
    }

    /// The next event; `Exited` once the process is gone.
    pub async fn next_event(&mut self) -> AgentEvent {
        self.events
            .recv()
            .await
            .unwrap_or_else(|| AgentEvent::Exited("agent output closed".into()))
    }

    /// Whether the sandbox is still running.
    pub fn is_alive(&mut self) -> bool {
        self.control.is_running()
    }

    /// Asks the agent to exit, then kills it if it does not.
    pub async fn stop(mut self) {
        let _ = self.writer.send(&HostMessage::Shutdown).await;
        if tokio::time::timeout(Duration::from_secs(2), self.control.wait())
            .await
            .is_err()
        {
            self.control.kill().await;
        }
    }

    /// Kills the agent at once.
    pub async fn kill(mut self) {
        self.control.kill().await;
    }
}

impl Drop for LiveAgent {
    fn drop(&mut self) {
        // Dropping the control stops the sandbox; the relay socket's folder goes too.
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

struct IdleAgent {
    agent: LiveAgent,
    since: Instant,
    generation: u64,
}

pub struct AgentPool {
    runtime: Result<Arc<dyn Runtime>, String>,
    store: nanoclaw_store::Store,
    egress: nanoclaw_egress::EgressProxy,
    relay: Arc<Relay>,
    paths: Paths,
    config: Config,
    agent_binary: Result<PathBuf, String>,
    idle: Mutex<HashMap<String, IdleAgent>>,
    /// Sessions kept warm (`agents.warm`): never stopped for idleness, never evicted.
    pinned: std::sync::Mutex<std::collections::HashSet<String>>,
    slots: Arc<Semaphore>,
    generation: std::sync::atomic::AtomicU64,
    me: Weak<AgentPool>,
}

impl AgentPool {
    pub fn new(
        runtime: Result<Arc<dyn Runtime>, String>,
        store: nanoclaw_store::Store,
        egress: nanoclaw_egress::EgressProxy,
        relay: Arc<Relay>,
        paths: Paths,
        config: Config,
        agent_binary: Result<PathBuf, String>,
    ) -> Arc<AgentPool> {
        let slots = Arc::new(Semaphore::new(config.agents.max_concurrent));
        Arc::new_cyclic(|me| AgentPool {
            runtime,
            store,
            egress,
            relay,
            paths,
            config,
            agent_binary,
            idle: Mutex::new(HashMap::new()),
            pinned: std::sync::Mutex::new(std::collections::HashSet::new()),
            slots,
            generation: std::sync::atomic::AtomicU64::new(0),
            me: me.clone(),
        })
    }

    /// The runtime agents run in, when there is one.
    pub fn runtime(&self) -> Option<&dyn Runtime> {
        self.runtime.as_ref().ok().map(|r| r.as_ref())
    }

    pub fn runtime_name(&self) -> Option<&'static str> {
        self.runtime.as_ref().ok().map(|r| r.name())
    }

    /// The session's live agent, spawning one if needed (possibly waiting for a slot).
    pub async fn acquire(&self, session: &Session, group: &Group) -> Result<LiveAgent, SpawnError> {
        // Read at every turn: skills enabled, disabled or changed since apply now.
        let skills = crate::skills::prepare(&self.store, &self.paths, group)
            .await
            .map_err(SpawnError::Prepare)?;
        // Taken out under the lock, which is dropped before a dead agent is killed.
        let idle = self.idle.lock().await.remove(&session.id);
        if let Some(mut idle) = idle {
            if !idle.agent.is_alive() {
                idle.agent.kill().await;
            } else if idle.agent.skills_fingerprint == skills.fingerprint
                && idle.agent.hello.as_ref() == Some(&self.hello(session, group, &skills))
            {
                return Ok(idle.agent);
            } else {
                // The owner changed the group (model, zone, skills …) since this agent started:
                // its conversation is kept in the group folder, so a new agent resumes it with
                // the new settings.
                tracing::info!(session = %session.id, group = %group.folder, "group settings or skills changed; starting a new agent");
                idle.agent.stop().await;
            }
        }
        let runtime = match &self.runtime {
            Ok(r) => Arc::clone(r),
            Err(why) => return Err(SpawnError::NoRuntime(why.clone())),
        };
        let permit = self.take_slot().await;
        self.spawn(runtime.as_ref(), session, group, permit, skills)
            .await
    }

    /// Returns an agent after a turn; it stays warm until the idle timeout.
    pub async fn release(&self, mut agent: LiveAgent) {
        if !agent.is_alive() {
            agent.kill().await;
            return;
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session_id = agent.session_id.clone();
        let replaced = self.idle.lock().await.insert(
            session_id.clone(),
            IdleAgent {
                agent,
                since: Instant::now(),
                generation,
            },
        );
        if let Some(old) = replaced {
            old.agent.kill().await;
        }
        if self.is_pinned(&session_id) {
            return;
        }
        let pool = self.me.clone();
        let idle_timeout = self.config.agents.idle_timeout();
        tokio::spawn(async move {
            tokio::time::sleep(idle_timeout).await;
            if let Some(pool) = pool.upgrade() {
                pool.expire(&session_id, generation).await;
            }
        });
    }

    fn is_pinned(&self, session_id: &str) -> bool {
        self.pinned
            .lock()
            .map(|p| p.contains(session_id))
            .unwrap_or(false)
    }

    /// Starts the session's agent ahead of its first message and keeps it warm.
    pub async fn prewarm(&self, session: &Session, group: &Group) -> Result<(), SpawnError> {
        if let Ok(mut pinned) = self.pinned.lock() {
            pinned.insert(session.id.clone());
        }
        let agent = self.acquire(session, group).await?;
        self.release(agent).await;
        tracing::info!(session = %session.id, group = %group.folder, "agent kept warm");
        Ok(())
    }

    async fn expire(&self, session_id: &str, generation: u64) {
        let mut idle = self.idle.lock().await;
        if idle.get(session_id).map(|a| a.generation) == Some(generation)
            && let Some(entry) = idle.remove(session_id)
        {
            drop(idle);
            tracing::info!(session = session_id, "stopping idle agent");
            entry.agent.stop().await;
        }
    }

    /// Number of agents alive (each holds one slot), busy or idle.
    pub fn live_count(&self) -> usize {
        self.config.agents.max_concurrent - self.slots.available_permits()
    }

    /// Stops every idle agent (shutdown).
    pub async fn stop_all(&self) {
        let agents: Vec<_> = self
            .idle
            .lock()
            .await
            .drain()
            .map(|(_, a)| a.agent)
            .collect();
        for agent in agents {
            agent.stop().await;
        }
    }

    async fn take_slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return permit;
            }
            // Full: make room by stopping the agent that has been idle longest.
            let oldest = {
                let mut idle = self.idle.lock().await;
                let key = idle
                    .iter()
                    .filter(|(k, _)| !self.is_pinned(k))
                    .min_by_key(|(_, a)| a.since)
                    .map(|(k, _)| k.clone());
                key.and_then(|k| idle.remove(&k))
            };
            match oldest {
                Some(entry) => {
                    tracing::info!(session = %entry.agent.session_id, "evicting idle agent to make room");
                    entry.agent.stop().await;
                }
                None => {
                    // Every slot is busy with a turn: queue for the next free one.
                    tracing::info!("agent cap reached; waiting for a free slot");
                    if let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await {
                        return permit;
                    }
                }
            }
        }
    }

    /// Starts the session's agent in a new sandbox and completes the handshake.
    async fn spawn(
        &self,
        runtime: &dyn Runtime,
        session: &Session,
        group: &Group,
        permit: OwnedSemaphorePermit,
        skills: crate::skills::Prepared,
    ) -> Result<LiveAgent, SpawnError> {
        let agent_binary = self
            .agent_binary
            .as_ref()
            .map_err(|e| SpawnError::Prepare(e.clone()))?
            .clone();
        let sandbox_name = format!(
            "nc-{}-{}",
            group.folder,
            crate::random_suffix(8).to_ascii_lowercase()
        );
        let group_dir = self.paths.group_dir(&group.folder);
        let global_dir = self.paths.global_dir();
        let run_dir = self.paths.sandbox_run_dir(&sandbox_name);
        prepare_dirs(&group_dir, &global_dir, &run_dir)
            .map_err(|e| SpawnError::Prepare(e.to_string()))?;
        let mut env = BTreeMap::new();
        let (relay, egress) = self
            .serve_sandbox(runtime, group, &sandbox_name, &run_dir, &mut env)
            .await?;
        let extra_mounts = self.extra_mounts(group).await?;
        let hello = self.hello(session, group, &skills);
        let timezone = hello.timezone.clone().unwrap_or_default();
        insert_base_env(&mut env, &timezone);
        let spec = SandboxSpec {
            name: sandbox_name.clone(),
            agent_binary,
            args: Vec::new(),
            mounts: sandbox_mounts(group_dir, global_dir, run_dir.clone(), extra_mounts)
                .into_iter()
                .chain(skills.mounts.iter().cloned())
                .collect(),
            env,
            workdir: SANDBOX_WORKSPACE.into(),
            limits: self.config.agents.limits.to_limits(),
        };
        let started = Instant::now();
        let process = runtime.spawn(&spec).await?;
        let services = SandboxServices {
            relay,
            egress,
            permit,
            run_dir,
        };
        let (mut agent, stderr_tail) = start_agent(process, session, sandbox_name, services);
        agent.skills_fingerprint = skills.fingerprint.clone();
        let (mut agent, agent_version) =
            handshake(agent, &HostMessage::Hello(hello.clone()), &stderr_tail).await?;
        agent.hello = Some(hello);
        tracing::info!(
            sandbox = %agent.sandbox_name,
            session = %session.id,
            runtime = runtime.name(),
            agent_version = %agent_version,
            spawn_ms = started.elapsed().as_millis() as u64,
            "agent ready"
        );
        Ok(agent)
    }

    /// The sandbox's way out: the model relay (a socket in its run folder, or a TCP port with a
    /// token) and, for socket runtimes, the egress proxy and its CA bundle. Sets the variables
    /// that tell the agent where they are.
    async fn serve_sandbox(
        &self,
        runtime: &dyn Runtime,
        group: &Group,
        sandbox_name: &str,
        run_dir: &std::path::Path,
        env: &mut BTreeMap<String, String>,
    ) -> Result<(RelayHandle, Option<nanoclaw_egress::EgressHandle>), SpawnError> {
        let mut egress = None;
        let relay = match runtime.relay_transport() {
            RelayTransport::UnixSocket => {
                env.insert(
                    nanoclaw_protocol::contract::env::MODEL_SOCKET.into(),
                    format!(
                        "{SANDBOX_RUN}/{}",
                        nanoclaw_protocol::contract::paths::MODEL_SOCKET_NAME
                    ),
                );
                // All other traffic: the egress proxy, deny by default; the socket is
                // the sandbox's identity, like the model relay's.
                egress = Some(
                    self.egress
                        .serve(
                            &run_dir.join(nanoclaw_egress::PROXY_SOCKET_NAME),
                            &group.folder,
                        )
                        .map_err(|e| SpawnError::Prepare(format!("egress proxy socket: {e}")))?,
                );
                env.insert(
                    nanoclaw_egress::EGRESS_SOCKET_ENV.into(),
                    format!("{SANDBOX_RUN}/{}", nanoclaw_egress::PROXY_SOCKET_NAME),
                );
                // TLS interception: the sandbox gets the local CA's certificate (never its
                // key) in a bundle with the system roots, and the secrets' placeholders.
                if let Some(ca) = self.egress.ca() {
                    ca.write_bundle(run_dir)
                        .map_err(|e| SpawnError::Prepare(format!("CA bundle: {e}")))?;
                    env.insert(
                        nanoclaw_egress::CA_BUNDLE_ENV.into(),
                        format!("{SANDBOX_RUN}/{}", nanoclaw_egress::SANDBOX_CA_BUNDLE),
                    );
                }
                env.extend(self.egress.placeholder_env(&group.folder).await);
                self.relay
                    .serve(
                        &run_dir.join(nanoclaw_protocol::contract::paths::MODEL_SOCKET_NAME),
                        sandbox_name,
                    )
                    .map_err(|e| SpawnError::Prepare(format!("model relay socket: {e}")))?
            }
            RelayTransport::Tcp { bind, host } => {
                let (handle, addr, token) = self
                    .relay
                    .serve_tcp(bind, sandbox_name)
                    .map_err(|e| SpawnError::Prepare(format!("model relay port on {bind}: {e}")))?;
                env.insert(
                    nanoclaw_protocol::contract::env::MODEL_TCP.into(),
                    format!("{host}:{}", addr.port()),
                );
                env.insert(nanoclaw_protocol::contract::env::MODEL_TOKEN.into(), token);
                handle
            }
        };
        Ok((relay, egress))
    }

    /// Extra folders: only what the owner's allowlist permits today (checked at every spawn,
    /// symlinks resolved); refusals are logged with the rule that refused them.
    async fn extra_mounts(&self, group: &Group) -> Result<Vec<Mount>, SpawnError> {
        let requested = self
            .store
            .group_mounts(group.id.as_str())
            .await
            .map_err(|e| SpawnError::Prepare(format!("reading the group's mounts: {e}")))?;
        if requested.is_empty() {
            return Ok(Vec::new());
        }
        let data_dir = self.paths.home.clone();
        Ok(
            crate::mounts::resolve_group_mounts_blocking(group.clone(), requested, data_dir)
                .await
                .map_err(|e| SpawnError::Prepare(format!("checking the group's mounts: {e}")))?
                .0,
        )
    }

    /// The handshake's `hello`: the session, its group and the model it uses.
    fn hello(&self, session: &Session, group: &Group, skills: &crate::skills::Prepared) -> Hello {
        let timezone = crate::group_zone(group, crate::host_zone(&self.config))
            .name()
            .to_owned();
        Hello {
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: PROTOCOL_MINOR,
            session_id: session.id.clone(),
            group: GroupInfo {
                id: group.id.clone(),
                name: group.name.clone(),
                folder: group.folder.clone(),
                is_main: group.is_main,
            },
            model: ModelConfig {
                provider: group
                    .provider
                    .clone()
                    .unwrap_or_else(|| self.config.model.provider.clone()),
                model: group
                    .model
                    .clone()
                    .unwrap_or_else(|| self.config.model.model.clone()),
                max_tokens: self.config.model.max_tokens,
                context_window: self.config.model.context_window,
                stream_idle_timeout_secs: Some(self.config.model.stream_idle_timeout_secs),
            },
            assistant_name: self.config.assistant_name.clone(),
            timezone: Some(timezone),
            skills: skills.skills.clone(),
            mcp_servers: session_mcp_servers(
                crate::mcp_servers::group_mcp_servers(&self.config.groups, &group.folder),
                &skills.mcp_servers,
            ),
        }
    }
}

/// What a live agent keeps alive for its sandbox while it runs.
struct SandboxServices {
    relay: RelayHandle,
    egress: Option<nanoclaw_egress::EgressHandle>,
    permit: OwnedSemaphorePermit,
    run_dir: PathBuf,
}

/// The session's MCP servers: the group's own from the config, then its enabled skills'. Names
/// must be unique in a session (tools are named `<server>__<tool>`): a skill's server whose name
/// the group or an earlier skill already uses is left out, with a warning naming both.
fn session_mcp_servers(
    mut servers: Vec<nanoclaw_protocol::McpServer>,
    from_skills: &[nanoclaw_protocol::McpServer],
) -> Vec<nanoclaw_protocol::McpServer> {
    for server in from_skills {
        if let Some(taken) = servers.iter().find(|s| s.name == server.name) {
            tracing::warn!(
                server = %server.name,
                skill = server.skill.as_deref().unwrap_or("?"),
                taken_by = taken.skill.as_deref().unwrap_or("the group's config"),
                "an MCP server name is already used in this session; the skill's server is left out"
            );
            continue;
        }
        servers.push(server.clone());
    }
    servers
}

/// The environment every sandbox gets besides its relay and egress variables.
fn insert_base_env(env: &mut BTreeMap<String, String>, timezone: &str) {
    env.insert("HOME".into(), SANDBOX_WORKSPACE.into());
    env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    env.insert("LANG".into(), "C.UTF-8".into());
    env.insert("TZ".into(), timezone.to_owned());
    env.insert(
        nanoclaw_protocol::contract::env::WORKSPACE.into(),
        SANDBOX_WORKSPACE.into(),
    );
    env.insert(
        nanoclaw_protocol::contract::env::GLOBAL_DIR.into(),
        SANDBOX_GLOBAL.into(),
    );
    if let Ok(level) = std::env::var("NANOCLAW_AGENT_LOG") {
        env.insert(nanoclaw_protocol::contract::env::LOG.into(), level);
    }
}

/// The group's folder (writable), the global memory and the run folder (read-only), then the
/// allowed extra folders.
fn sandbox_mounts(
    group_dir: PathBuf,
    global_dir: PathBuf,
    run_dir: PathBuf,
    extra_mounts: Vec<Mount>,
) -> Vec<Mount> {
    vec![
        Mount {
            host_path: group_dir,
            sandbox_path: SANDBOX_WORKSPACE.into(),
            writable: true,
        },
        Mount {
            host_path: global_dir,
            sandbox_path: SANDBOX_GLOBAL.into(),
            writable: false,
        },
        // Read-only: connecting to the socket needs no write access to the folder,
        // and the agent has no business creating files next to it.
        Mount {
            host_path: run_dir,
            sandbox_path: SANDBOX_RUN.into(),
            writable: false,
        },
    ]
    .into_iter()
    .chain(extra_mounts)
    .collect()
}

/// Wraps a started sandbox process as a live agent: its output read into events, its stderr
/// logged (and its last lines kept for a failed handshake's error).
fn start_agent(
    process: nanoclaw_sandbox::SandboxProcess,
    session: &Session,
    sandbox_name: String,
    services: SandboxServices,
) -> (LiveAgent, StderrTail) {
    let nanoclaw_sandbox::SandboxProcess {
        stdin,
        stdout,
        stderr,
        control,
    } = process;

    let (tx, rx) = mpsc::channel(256);
    let log = LogBudget::new(sandbox_name.clone());
    spawn_stdout_reader(stdout, tx, sandbox_name.clone(), log.clone());
    let stderr_tail = StderrTail::default();
    spawn_stderr_logger(
        stderr,
        sandbox_name.clone(),
        log.clone(),
        stderr_tail.clone(),
    );

    let agent = LiveAgent {
        session_id: session.id.clone(),
        sandbox_name,
        writer: LineWriter::new(stdin),
        events: rx,
        control,
        _relay: services.relay,
        _egress: services.egress,
        _permit: services.permit,
        run_dir: services.run_dir,
        log,
        hello: None,
        skills_fingerprint: String::new(),
    };
    (agent, stderr_tail)
}

/// Sends `hello` and waits for `ready` in the same protocol major version; returns the agent
/// and its version. An agent that fails the handshake is killed.
async fn handshake(
    mut agent: LiveAgent,
    hello: &HostMessage,
    stderr_tail: &StderrTail,
) -> Result<(LiveAgent, String), SpawnError> {
    if let Err(e) = agent.send(hello).await {
        agent.kill().await;
        return Err(SpawnError::Handshake(format!("sending hello: {e}")));
    }
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, agent.next_event()).await;
    match answer {
        Ok(AgentEvent::Message(AgentMessage::Ready(ready))) => {
            if ready.protocol_major != PROTOCOL_MAJOR {
                agent.kill().await;
                return Err(SpawnError::Handshake(format!(
                    "agent speaks protocol {}.{}, host speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; rebuild nanoclaw-agent from the same release",
                    ready.protocol_major, ready.protocol_minor
                )));
            }
            Ok((agent, ready.agent_version))
        }
        Ok(AgentEvent::Message(AgentMessage::Fatal { error })) => {
            agent.kill().await;
            Err(SpawnError::Handshake(format!(
                "{}{}",
                clean(&error),
                stderr_tail.note().await
            )))
        }
        Ok(AgentEvent::Message(other)) => {
            agent.kill().await;
            Err(SpawnError::Handshake(format!(
                "expected ready, got {}",
                clean(&format!("{other:?}"))
            )))
        }
        Ok(AgentEvent::Exited(why)) => {
            agent.kill().await;
            Err(SpawnError::Handshake(format!(
                "agent exited: {why}{}",
                stderr_tail.note().await
            )))
        }
        Err(_) => {
            agent.kill().await;
            Err(SpawnError::Handshake(format!(
                "no answer within {}s{}",
                HANDSHAKE_TIMEOUT.as_secs(),
                stderr_tail.note().await
            )))
        }
    }
}

fn prepare_dirs(
    group_dir: &std::path::Path,
    global_dir: &std::path::Path,
    run_dir: &std::path::Path,
) -> std::io::Result<()> {
    create_private_dir(group_dir)?;
    create_private_dir(global_dir)?;
    create_private_dir(run_dir)?;
    seed_memory(group_dir, GROUP_MEMORY_TEMPLATE)?;
    seed_memory(global_dir, GLOBAL_MEMORY_TEMPLATE)?;
    Ok(())
}

/// Writes a starting `AGENTS.md` into `dir` when it has no memory file. The group folder
/// is the agent's: anything there may be a symlink it planted, so nothing is followed —
/// `create_new` refuses any existing entry, dangling symlinks included.
fn seed_memory(dir: &std::path::Path, template: &str) -> std::io::Result<()> {
    use std::io::Write;
    if ["AGENTS.md", "CLAUDE.md"]
        .iter()
        .any(|name| std::fs::symlink_metadata(dir.join(name)).is_ok())
    {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join("AGENTS.md"))
    {
        Ok(mut f) => f.write_all(template.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn spawn_stdout_reader(
    stdout: nanoclaw_sandbox::SandboxOutput,
    tx: mpsc::Sender<AgentEvent>,
    sandbox: String,
    log: LogBudget,
) {
    tokio::spawn(async move {
        // 4 KiB reads: agents' lines are small, and a host holds one reader per live agent.
        let mut reader = LineReader::new(BufReader::with_capacity(4096, stdout));
        loop {
            match reader.next::<AgentMessage>().await {
                Ok(Some(msg)) => {
                    if tx.send(AgentEvent::Message(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = tx
                        .send(AgentEvent::Exited("agent closed its output".into()))
                        .await;
                    return;
                }
                Err(e) if e.is_recoverable() => {
                    // The agent is untrusted: a bad line is logged (within the sandbox's
                    // log budget) and skipped.
                    let error = clean(&e.to_string());
                    if log.admit(error.len()) {
                        tracing::warn!(sandbox = %sandbox, %error, "rejected a protocol line from the agent");
                    }
                }
                Err(e) => {
                    let _ = tx.send(AgentEvent::Exited(e.to_string())).await;
                    return;
                }
            }
        }
    });
}

/// The last lines a sandbox wrote to stderr, kept so a sandbox that dies before its
/// handshake (bwrap refusing a mount, the agent failing to start) says why in the error,
/// which is logged at the default level; the lines themselves go to the debug log.
#[derive(Clone, Default)]
struct StderrTail {
    lines: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    /// Set once stderr reached its end.
    done: Arc<tokio::sync::Notify>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl StderrTail {
    /// Lines kept, and characters per line quoted.
    const LINES: usize = 8;
    const CHARS: usize = 300;

    fn push(&self, line: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == Self::LINES {
                lines.pop_front();
            }
            lines.push_back(line.chars().take(Self::CHARS).collect());
        }
    }

    fn end(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        self.done.notify_waiters();
    }

    /// `; sandbox stderr: …` with what the sandbox said, after waiting briefly for the rest
    /// of it (the sandbox is gone or killed, so its stderr ends); empty when it said nothing.
    async fn note(&self) -> String {
        let notified = self.done.notified();
        if !self.ended.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tokio::time::timeout(Duration::from_secs(2), notified).await;
        }
        let lines = match self.lines.lock() {
            Ok(lines) => lines.iter().cloned().collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        if lines.is_empty() {
            String::new()
        } else {
            format!("; sandbox stderr: {}", lines.join(" | "))
        }
    }
}

fn spawn_stderr_logger(
    stderr: nanoclaw_sandbox::SandboxOutput,
    sandbox: String,
    log: LogBudget,
    tail: StderrTail,
) {
    use tokio::io::AsyncReadExt;
    /// Longest stderr line kept; the rest of a longer line is read and dropped, so a
    /// sandbox writing an endless line cannot make the host hold it.
    const MAX_LINE: u64 = 4096;
    tokio::spawn(async move {
        let _end = EndOnDrop(tail.clone());
        // Agents write little to stderr: a small read buffer per live agent is enough.
        let mut reader = BufReader::with_capacity(1024, stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') {
                // Over the cap: skip to the end of this line without keeping it.
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    match (&mut reader)
                        .take(MAX_LINE)
                        .read_until(b'\n', &mut sink)
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) if sink.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
            }
            let text = String::from_utf8_lossy(&line);
            // Kept whatever the log level: a sandbox that dies before its handshake says why.
            tail.push(&clean(text.trim_end()));
            // Read on even when nothing is logged, so the sandbox never blocks on a full pipe.
            if tracing::enabled!(tracing::Level::DEBUG) && log.admit(line.len()) {
                tracing::debug!(sandbox = %sandbox, "agent: {}", clean(text.trim_end()));
            }
        }
    });
}

/// Marks the tail ended however the logger task ends.
struct EndOnDrop(StderrTail);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_memory_never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        let group = dir.path().join("group");
        std::fs::create_dir(&group).unwrap();
        // A dangling link: following it would create a file outside the group folder.
        std::os::unix::fs::symlink(&outside, group.join("AGENTS.md")).unwrap();
        seed_memory(&group, "template").unwrap();
        assert!(!outside.exists());

        let fresh = dir.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        seed_memory(&fresh, "template").unwrap();
        assert_eq!(
            std::fs::read_to_string(fresh.join("AGENTS.md")).unwrap(),
            "template"
        );
    }
}

//! Configuration: `$NANOCLAW_HOME/config.toml` (commented, optional) plus the environment.
//!
//! Everything has a default, so nanoclaw runs with no config file at all. Secrets never
//! live here: model keys come from the environment (`ANTHROPIC_API_KEY`, …) and stay in
//! the host process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The commented config written by `nanoclaw config init` and on first start.
pub const DEFAULT_CONFIG_TOML: &str = r#"# nanoclaw configuration. Every setting is optional; the values shown are the defaults.

# The name people use to address the assistant. In chats other than the owner's main chat
# a message must contain the trigger (e.g. "@Andy") to wake the agent.
assistant_name = "Andy"
trigger = "@Andy"

# IANA time zone for the agents' sense of "now" and for scheduled tasks (empty: the host's
# zone). A group can have its own: `nanoclaw group set FOLDER --timezone Europe/Berlin`.
timezone = ""

[model]
# "anthropic" (Messages API) or "openai" (any OpenAI-compatible Chat Completions server:
# OpenAI, OpenRouter, Ollama, vLLM). Keys and base URLs come from the environment:
# ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN / ANTHROPIC_BASE_URL, OPENAI_API_KEY / OPENAI_BASE_URL.
# Numbers outside the range given in brackets are refused at start, naming the setting.
provider = "anthropic"
model = "claude-sonnet-4-5"
# Longest answer per model call [1 to 1000000].
max_tokens = 8192
# Tokens the model's context holds; older turns are summarized before it fills [4096 to 10000000].
context_window = 200000
# A model response that sends nothing for this many seconds (a stalled stream) is given up
# and retried by the agent, well before turn_timeout_secs. At least 1.
stream_idle_timeout_secs = 120

[agents]
# Where agents run: "docker" (Docker Engine or Podman's Docker-compatible socket),
# "native" (bubblewrap namespaces, Linux), "apple" (Apple's container, macOS), or "auto":
# Docker if the engine answers and the agent image is built, else native. No usable runtime
# means no agents: nanoclaw never runs an agent outside a sandbox. The environment variable
# NANOCLAW_RUNTIME, when set, wins over this.
runtime = "auto"
# Live agents at once; more sessions wait in a queue [1 to 256].
max_concurrent = 4
# An agent with no work for this long is stopped (it resumes its conversation when woken)
# [1 to 604800].
idle_timeout_secs = 600
# Groups (by folder) whose agents are started with the host and kept warm, so a first
# message does not wait for a sandbox to start. Each holds one of max_concurrent's slots.
warm = []
# Longest a single turn may take before the agent is stopped and the turn retried
# [10 to 86400].
turn_timeout_secs = 900
# Tries per message before the chat is told it failed [1 to 100].
max_tries = 3
# First retry delay; doubles with every try [0 to 3600].
retry_backoff_secs = 2
# While the sandbox engine (e.g. Docker) is unreachable, messages wait and are tried again
# this often; they are not counted as failed tries [1 to 3600].
runtime_retry_secs = 15

[agents.limits]
# Per agent sandbox: processes [16 to 1000000], memory [64 to 1048576 MB], size of one file
# [1 to 1048576 MB], open files [64 to 1048576].
max_processes = 256
max_memory_mb = 2048
max_file_mb = 512
max_open_files = 1024

[agents.docker]
# The agent image (`nanoclaw image build` makes it).
image = "nanoclaw-agent:latest"
# Engine socket; empty: $DOCKER_HOST, /var/run/docker.sock, then Podman's sockets.
socket = ""
# CPU cores an agent container may use; 0 means no limit [0, or 0.01 to 1024].
cpus = 0.0

[scheduler]
# A run that fell due while nanoclaw was not running: "run_once" runs it once at start and
# says it is late (several missed runs of one task still run once); "skip" records it as
# missed, says so in the task's chat and waits for the next fire time.
missed_runs = "run_once"
# A run starting more than this many seconds after its time counts as missed [1 to 604800].
late_after_secs = 60
# Scheduled tasks one group may have, so an agent cannot flood the scheduler [1 to 10000].
max_tasks_per_group = 100

[relay]
# The model relay (each sandbox's only way to its model) under a misbehaving sandbox.
# Connections one sandbox may hold open; more are answered 503 and closed at once.
max_connections_per_sandbox = 16
# Connections across every sandbox's relay, so sandboxes together cannot exhaust the host.
max_connections_total = 256
# Model requests one sandbox may have in flight at once; more are answered 429.
max_requests_in_flight = 4
# Seconds a client may take to send a request's head; an idle keep-alive connection is
# closed after this long too.
header_timeout_secs = 10
# Seconds a client may take to send a request's body once its head is in (408 otherwise).
body_timeout_secs = 60
# An answer from the model API that sends nothing for this many seconds is cut off.
upstream_idle_timeout_secs = 600

# Chat channels. Each platform has its own table, added by `nanoclaw channel add <name>`
# (tokens go to the vault, never here). The owner is told in the main chat once a channel
# has been down longer than alert_after_secs.
[channels]
alert_after_secs = 300
# The largest file an agent may send with a message (bytes; at most 10 files a message, and
# at most 40 times this waiting for delivery in all).
max_outgoing_file_bytes = 26214400

[channels.terminal]
enabled = true

[dashboard]
# The web dashboard the host serves (see docs/DASHBOARD.md): chat with any group, groups and
# wiring, tasks and their runs, the vault's grants and approvals, the audit log, channel
# health, skill graphs. Sign in with the one-time link `nanoclaw dashboard` prints.
enabled = true
# A loopback address only (it speaks plain HTTP; from another machine use an SSH tunnel).
# Port 0 picks a free port. The environment variable NANOCLAW_DASHBOARD_LISTEN wins over this.
listen = "127.0.0.1:7433"

[logs]
# The host writes its log as JSON lines to logs/nanoclaw.YYYY-MM-DD.jsonl in the data
# directory, one file per day (UTC); `nanoclaw logs` shows them. Daily files kept [1 to 3650].
keep_days = 7

# A group's own MCP servers (see docs/MCP.md): programs its agent starts inside the sandbox
# and talks to over stdin/stdout; their tools are offered as <name>__<tool>. The command must
# exist inside the sandbox (the host's /usr, or a folder mounted with `nanoclaw group mount`).
# Their network goes through the group's egress proxy like everything else in the sandbox.
# `env` is plain text here: no secrets (grant them through the vault instead).
# [groups.main.mcp_servers.time]
# command = "/usr/local/bin/mcp-server-time"
# args = ["--local-timezone", "Europe/Berlin"]
# env = { }
"#;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub assistant_name: String,
    pub trigger: String,
    pub timezone: String,
    pub model: ModelSection,
    pub agents: AgentsSection,
    pub scheduler: SchedulerSection,
    pub relay: RelaySection,
    pub channels: ChannelsSection,
    pub logs: LogsSection,
    pub dashboard: DashboardSection,
    /// `[groups.<folder>]`: per-group settings (its MCP servers).
    pub groups: std::collections::BTreeMap<String, crate::mcp_servers::GroupSection>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            assistant_name: "Andy".into(),
            trigger: "@Andy".into(),
            timezone: String::new(),
            model: ModelSection::default(),
            agents: AgentsSection::default(),
            scheduler: SchedulerSection::default(),
            relay: RelaySection::default(),
            channels: ChannelsSection::default(),
            logs: LogsSection::default(),
            dashboard: DashboardSection::default(),
            groups: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    pub provider: String,
    pub model: String,
    pub max_tokens: u32,
    pub context_window: u32,
    pub stream_idle_timeout_secs: u64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5".into(),
            max_tokens: 8192,
            context_window: 200_000,
            stream_idle_timeout_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsSection {
    pub runtime: String,
    pub max_concurrent: usize,
    pub idle_timeout_secs: u64,
    pub warm: Vec<String>,
    pub turn_timeout_secs: u64,
    pub max_tries: u32,
    pub retry_backoff_secs: u64,
    pub runtime_retry_secs: u64,
    pub limits: LimitsSection,
    pub docker: DockerSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSection {
    pub image: String,
    pub socket: String,
    pub cpus: f64,
}

impl Default for DockerSection {
    fn default() -> Self {
        Self {
            image: "nanoclaw-agent:latest".into(),
            socket: String::new(),
            cpus: 0.0,
        }
    }
}

impl Default for AgentsSection {
    fn default() -> Self {
        Self {
            runtime: "auto".into(),
            max_concurrent: 4,
            idle_timeout_secs: 600,
            warm: Vec::new(),
            turn_timeout_secs: 900,
            max_tries: 3,
            retry_backoff_secs: 2,
            runtime_retry_secs: 15,
            limits: LimitsSection::default(),
            docker: DockerSection::default(),
        }
    }
}

impl AgentsSection {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn turn_timeout(&self) -> Duration {
        Duration::from_secs(self.turn_timeout_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub max_processes: u64,
    pub max_memory_mb: u64,
    pub max_file_mb: u64,
    pub max_open_files: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_processes: 256,
            max_memory_mb: 2048,
            max_file_mb: 512,
            max_open_files: 1024,
        }
    }
}

impl LimitsSection {
    pub fn to_limits(&self) -> nanoclaw_sandbox::Limits {
        nanoclaw_sandbox::Limits {
            max_processes: self.max_processes,
            max_memory_bytes: self.max_memory_mb.saturating_mul(1024 * 1024),
            max_file_bytes: self.max_file_mb.saturating_mul(1024 * 1024),
            max_open_files: self.max_open_files,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSection {
    /// `run_once` or `skip`.
    pub missed_runs: String,
    pub late_after_secs: u64,
    pub max_tasks_per_group: usize,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            missed_runs: "run_once".into(),
            late_after_secs: 60,
            max_tasks_per_group: 100,
        }
    }
}

impl SchedulerSection {
    /// Whether missed runs are skipped (else run once, late).
    pub fn skip_missed(&self) -> bool {
        self.missed_runs == "skip"
    }
}

/// `[relay]`: limits and timeouts of the model relay (see `relay::RelayLimits`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySection {
    pub max_connections_per_sandbox: usize,
    pub max_connections_total: usize,
    pub max_requests_in_flight: usize,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub upstream_idle_timeout_secs: u64,
}

impl Default for RelaySection {
    fn default() -> Self {
        let limits = nanoclaw_egress::relay::RelayLimits::default();
        Self {
            max_connections_per_sandbox: limits.max_connections_per_sandbox,
            max_connections_total: limits.max_connections_total,
            max_requests_in_flight: limits.max_requests_in_flight,
            header_timeout_secs: limits.header_timeout.as_secs(),
            body_timeout_secs: limits.body_timeout.as_secs(),
            upstream_idle_timeout_secs: limits.upstream_idle_timeout.as_secs(),
        }
    }
}

impl RelaySection {
    pub fn to_limits(&self) -> nanoclaw_egress::relay::RelayLimits {
        nanoclaw_egress::relay::RelayLimits {
            max_connections_per_sandbox: self.max_connections_per_sandbox,
            max_connections_total: self.max_connections_total,
            max_requests_in_flight: self.max_requests_in_flight,
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            upstream_idle_timeout: Duration::from_secs(self.upstream_idle_timeout_secs),
        }
    }

    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            (
                "max_connections_per_sandbox",
                self.max_connections_per_sandbox as u64,
            ),
            ("max_connections_total", self.max_connections_total as u64),
            ("max_requests_in_flight", self.max_requests_in_flight as u64),
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            (
                "upstream_idle_timeout_secs",
                self.upstream_idle_timeout_secs,
            ),
        ] {
            // Zero would refuse every model call (or time out at once): never what is meant.
            if value == 0 {
                return Err(format!("relay.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelsSection {
    pub terminal: TerminalSection,
    /// Tell the owner in the main chat once a platform channel has been down this long.
    pub alert_after_secs: u64,
    /// The largest file an agent may send with a message, in bytes.
    pub max_outgoing_file_bytes: u64,
    /// Every other `[channels.<name>]` table: a platform channel's own settings, read by its
    /// crate (`enabled`, `api_base`, …). Names are checked against the channels this build has.
    #[serde(flatten)]
    pub platforms: std::collections::BTreeMap<String, toml::Table>,
}

impl Default for ChannelsSection {
    fn default() -> Self {
        Self {
            terminal: TerminalSection::default(),
            alert_after_secs: 300,
            max_outgoing_file_bytes: crate::outbox::DEFAULT_MAX_FILE_BYTES,
            platforms: std::collections::BTreeMap::new(),
        }
    }
}

impl ChannelsSection {
    /// The platform channels turned on (`enabled = true`), with their settings.
    pub fn enabled_platforms(&self) -> impl Iterator<Item = (&String, &toml::Table)> {
        self.platforms.iter().filter(|(_, table)| {
            table
                .get("enabled")
                .and_then(toml::Value::as_bool)
                .unwrap_or(false)
        })
    }

    /// Settings the host reads from a platform's table itself; the channel never sees them.
    pub const HOST_KEYS: &'static [&'static str] = &["unknown_chats"];

    /// What channel `name` does with messages from chats nobody wired (`unknown_chats`,
    /// default `ask`).
    pub fn unknown_chats(&self, name: &str) -> crate::router::UnknownChats {
        self.platforms
            .get(name)
            .and_then(|t| t.get("unknown_chats"))
            .and_then(toml::Value::as_str)
            .and_then(crate::router::UnknownChats::parse)
            .unwrap_or_default()
    }

    fn validate(&self) -> Result<(), String> {
        if self.alert_after_secs == 0 {
            return Err("channels.alert_after_secs must be at least 1".into());
        }
        let known = crate::channel::known_names();
        for (name, table) in &self.platforms {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "[channels.{name}]: this build has no channel called {name:?}; known: {}",
                    known.join(", ")
                ));
            }
            if let Some(value) = table.get("enabled")
                && !value.is_bool()
            {
                return Err(format!("channels.{name}.enabled must be true or false"));
            }
            if let Some(value) = table.get("unknown_chats")
                && value
                    .as_str()
                    .and_then(crate::router::UnknownChats::parse)
                    .is_none()
            {
                return Err(format!(
                    "channels.{name}.unknown_chats must be \"ignore\", \"ask\" or \"pair\""
                ));
            }
        }
        Ok(())
    }
}

/// `[logs]`: the host's daily JSON log files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsSection {
    /// Daily files kept (the newest).
    pub keep_days: u64,
}

impl Default for LogsSection {
    fn default() -> Self {
        Self { keep_days: 7 }
    }
}

/// `[dashboard]`: the web dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSection {
    pub enabled: bool,
    /// A loopback `address:port`.
    pub listen: String,
}

impl Default for DashboardSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: nanoclaw_dashboard::DEFAULT_LISTEN.into(),
        }
    }
}

impl DashboardSection {
    fn validate(&self) -> Result<(), String> {
        if !nanoclaw_dashboard::auth::is_loopback(&self.listen) {
            return Err(format!(
                "dashboard.listen = {:?}: give a loopback address and port such as \"127.0.0.1:7433\" \
                 (the dashboard speaks plain HTTP; from another machine use `ssh -L 7433:127.0.0.1:7433 HOST`)",
                self.listen
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TerminalSection {
    pub enabled: bool,
}

impl Default for TerminalSection {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not valid nanoclaw configuration: {message}Fix the file or move it aside to use the defaults."
    )]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads `path`; a missing file gives the defaults. `NANOCLAW_RUNTIME`, when set, wins over
    /// `agents.runtime` (one run on another sandbox without editing the file; tests pin it).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Self::load_file(path)?;
        if let Some(runtime) = std::env::var("NANOCLAW_RUNTIME")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            config.agents.runtime = runtime.trim().to_owned();
            config.validate().map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message: format!("{message} (from NANOCLAW_RUNTIME)"),
            })?;
        }
        if let Some(listen) = std::env::var("NANOCLAW_DASHBOARD_LISTEN")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            config.dashboard.listen = listen.trim().to_owned();
            config.validate().map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message: format!("{message} (from NANOCLAW_DASHBOARD_LISTEN)"),
            })?;
        }
        Ok(config)
    }

    fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.assistant_name.trim().is_empty() {
            return Err("assistant_name must not be empty".into());
        }
        self.channels.validate()?;
        self.dashboard.validate()?;
        if self.trigger.trim().is_empty() {
            return Err("trigger must not be empty".into());
        }
        if !["anthropic", "openai"].contains(&self.model.provider.as_str()) {
            return Err(format!(
                "model.provider = {:?}: use \"anthropic\" or \"openai\"",
                self.model.provider
            ));
        }
        if self.model.stream_idle_timeout_secs == 0 {
            return Err(
                "model.stream_idle_timeout_secs must be at least 1 (seconds a model stream may stay silent before it is retried)"
                    .into(),
            );
        }
        if !["auto", "docker", "native", "apple"].contains(&self.agents.runtime.as_str()) {
            return Err(format!(
                "agents.runtime = {:?}: use \"auto\", \"docker\", \"native\" or \"apple\"",
                self.agents.runtime
            ));
        }
        if self.agents.docker.image.trim().is_empty() {
            return Err("agents.docker.image must not be empty".into());
        }
        let cpus = self.agents.docker.cpus;
        if !(cpus.is_finite() && (cpus == 0.0 || (CPUS_RANGE.0..=CPUS_RANGE.1).contains(&cpus))) {
            return Err(format!(
                "agents.docker.cpus = {cpus}: allowed are 0 (no limit) or {} to {}",
                CPUS_RANGE.0, CPUS_RANGE.1
            ));
        }
        for (name, value, (min, max)) in self.numeric_settings() {
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "{name} = {value} is out of range: allowed are {min} to {max}"
                ));
            }
        }
        if !["run_once", "skip"].contains(&self.scheduler.missed_runs.as_str()) {
            return Err(format!(
                "scheduler.missed_runs = {:?}: use \"run_once\" or \"skip\"",
                self.scheduler.missed_runs
            ));
        }
        if !self.timezone.trim().is_empty()
            && let Err(e) = nanoclaw_schedule::parse_tz(self.timezone.trim())
        {
            return Err(format!("timezone: {e}"));
        }
        self.relay.validate()?;
        crate::mcp_servers::validate(&self.groups)?;
        Ok(())
    }
}

/// `agents.docker.cpus`, when not 0 (no limit).
const CPUS_RANGE: (f64, f64) = (0.01, 1024.0);

impl Config {
    /// Every integer setting with its allowed range (inclusive). A value outside it would make
    /// every message fail or the host misbehave (a zero turn timeout stops each turn at once,
    /// a zero process limit keeps the agent from starting), so it is refused at load.
    pub fn numeric_settings(&self) -> Vec<(&'static str, u64, (u64, u64))> {
        let a = &self.agents;
        let l = &a.limits;
        let s = &self.scheduler;
        vec![
            (
                "model.max_tokens",
                u64::from(self.model.max_tokens),
                (1, 1_000_000),
            ),
            (
                "model.context_window",
                u64::from(self.model.context_window),
                (4_096, 10_000_000),
            ),
            ("agents.max_concurrent", a.max_concurrent as u64, (1, 256)),
            (
                "agents.idle_timeout_secs",
                a.idle_timeout_secs,
                (1, 7 * 86_400),
            ),
            (
                "agents.turn_timeout_secs",
                a.turn_timeout_secs,
                (10, 86_400),
            ),
            ("agents.max_tries", u64::from(a.max_tries), (1, 100)),
            (
                "agents.retry_backoff_secs",
                a.retry_backoff_secs,
                (0, 3_600),
            ),
            (
                "agents.runtime_retry_secs",
                a.runtime_retry_secs,
                (1, 3_600),
            ),
            (
                "agents.limits.max_processes",
                l.max_processes,
                (16, 1_000_000),
            ),
            (
                "agents.limits.max_memory_mb",
                l.max_memory_mb,
                (64, 1_048_576),
            ),
            ("agents.limits.max_file_mb", l.max_file_mb, (1, 1_048_576)),
            (
                "agents.limits.max_open_files",
                l.max_open_files,
                (64, 1_048_576),
            ),
            (
                "scheduler.late_after_secs",
                s.late_after_secs,
                (1, 7 * 86_400),
            ),
            (
                "scheduler.max_tasks_per_group",
                s.max_tasks_per_group as u64,
                (1, 10_000),
            ),
            // Channels read a file whole before they upload it: at most 1 GiB.
            (
                "channels.max_outgoing_file_bytes",
                self.channels.max_outgoing_file_bytes,
                (1, 1 << 30),
            ),
            ("logs.keep_days", self.logs.keep_days, (1, 3650)),
        ]
    }
}

/// Where nanoclaw keeps its data: one directory, `$NANOCLAW_HOME` (default `~/.nanoclaw`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    /// `$NANOCLAW_HOME`, else `$HOME/.nanoclaw`.
    pub fn from_env() -> Result<Paths, String> {
        if let Some(home) = std::env::var_os("NANOCLAW_HOME").filter(|v| !v.is_empty()) {
            return Ok(Paths {
                home: PathBuf::from(home),
            });
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => Ok(Paths {
                home: PathBuf::from(h).join(".nanoclaw"),
            }),
            None => Err("neither NANOCLAW_HOME nor HOME is set; set NANOCLAW_HOME to the directory nanoclaw should keep its data in".into()),
        }
    }

    pub fn new(home: impl Into<PathBuf>) -> Paths {
        Paths { home: home.into() }
    }

    pub fn config_file(&self) -> PathBuf {
        self.home.join("config.toml")
    }
    pub fn database(&self) -> PathBuf {
        self.home.join("nanoclaw.db")
    }
    /// One folder per agent group; each is that group's only writable mount.
    pub fn groups_dir(&self) -> PathBuf {
        self.home.join("groups")
    }
    pub fn group_dir(&self, folder: &str) -> PathBuf {
        self.groups_dir().join(folder)
    }
    /// Global memory, mounted read-only into every sandbox.
    pub fn global_dir(&self) -> PathBuf {
        self.home.join("global")
    }
    /// Sockets: the terminal channel's and one relay socket per running sandbox.
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }
    pub fn terminal_socket(&self) -> PathBuf {
        self.run_dir().join("terminal.sock")
    }
    /// The address the running host's dashboard bound (`nanoclaw dashboard` reads it).
    pub fn dashboard_addr_file(&self) -> PathBuf {
        self.run_dir().join("dashboard.addr")
    }
    /// Held by the running host (one per data directory); it holds the host's pid.
    pub fn host_lock(&self) -> PathBuf {
        self.run_dir().join("host.lock")
    }
    pub fn sandbox_run_dir(&self, sandbox: &str) -> PathBuf {
        self.run_dir().join("sandboxes").join(sandbox)
    }
    /// A platform channel's private files (downloads in progress, session data).
    pub fn channel_dir(&self, channel: &str) -> PathBuf {
        self.home.join("channels").join(channel)
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
    /// The host's copies of files agents send, kept until their message is delivered. Never
    /// mounted into a sandbox.
    pub fn outbox_dir(&self) -> PathBuf {
        self.home.join("outbox")
    }

    /// A random id for this data directory, made on first use. Containers carry it, so a
    /// host removes only its own leftovers.
    pub fn host_id(&self) -> std::io::Result<String> {
        let file = self.home.join("host-id");
        match std::fs::read_to_string(&file) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let id = crate::random_suffix(16);
        if create_private_file(&file, id.as_bytes())? {
            return Ok(id);
        }
        // Another process made it first: theirs is the id.
        std::fs::read_to_string(&file).map(|id| id.trim().to_owned())
    }

    /// Creates the data directories with mode 0700 and writes the commented default
    /// config if there is none.
    pub fn prepare(&self) -> std::io::Result<()> {
        for dir in [
            self.home.clone(),
            self.groups_dir(),
            self.global_dir(),
            self.run_dir(),
            self.run_dir().join("sandboxes"),
            self.logs_dir(),
            self.outbox_dir(),
        ] {
            create_private_dir(&dir)?;
        }
        // Never replaces a config that exists, even one written a moment ago by a process
        // preparing the same directory.
        create_private_file(&self.config_file(), DEFAULT_CONFIG_TOML.as_bytes())?;
        Ok(())
    }
}

/// `mkdir -p` with mode 0700 on every directory it creates, and 0700 enforced on `dir`.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes a file readable only by its owner (created 0600, atomically replaced). The
/// temporary file has a name of its own, so processes writing at once never share one.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = write_temp_beside(path, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Creates `path` with `contents` (0600) unless it exists; readers never see it half
/// written. Returns whether this call created it.
pub fn create_private_file(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let tmp = write_temp_beside(path, contents)?;
    // A hard link appears complete, and fails when the name is taken.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// `contents` in a new 0600 file next to `path`, synced; its name is unique to this call.
fn write_temp_beside(path: &Path, contents: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        crate::random_suffix(8)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_text_parses_to_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let defaults = Config::default();
        assert_eq!(
            toml::to_string(&parsed).unwrap(),
            toml::to_string(&defaults).unwrap()
        );
    }

    #[test]
    fn missing_file_gives_defaults_and_bad_file_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(Config::load(&path).unwrap().trigger, "@Andy");

        std::fs::write(&path, "[model]\nprovider = \"gemini\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("model.provider") && err.contains("anthropic"),
            "{err}"
        );

        std::fs::write(&path, "[model]\nstream_idle_timeout_secs = 0\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("stream_idle_timeout_secs must be at least 1"),
            "{err}"
        );

        std::fs::write(&path, "[agents]\nmax_concurent = 3\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("max_concurent"), "{err}");

        std::fs::write(&path, "[relay]\nheader_timeout_secs = 0\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("relay.header_timeout_secs"), "{err}");

        // A channels setting beside the platform tables is a setting, not a platform.
        std::fs::write(&path, "[channels]\nmax_outgoing_file_bytes = 1024\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.channels.max_outgoing_file_bytes, 1024);
        assert!(config.channels.platforms.is_empty());
    }

    #[test]
    fn processes_preparing_a_fresh_data_dir_at_once_all_succeed_with_one_whole_config() {
        // Twenty at once, several rounds: with a shared temporary name, one's rename took
        // the file from under another ("No such file or directory").
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("home");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(20));
            let threads: Vec<_> = (0..20)
                .map(|_| {
                    let paths = Paths::new(&home);
                    let barrier = std::sync::Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        barrier.wait();
                        paths.prepare().map_err(|e| e.to_string())
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            let text = std::fs::read_to_string(Paths::new(&home).config_file()).unwrap();
            assert_eq!(text, DEFAULT_CONFIG_TOML);
            let leftovers: Vec<_> = std::fs::read_dir(&home)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }

    #[test]
    fn prepare_keeps_a_config_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::write(paths.config_file(), "trigger = \"@Bob\"\n").unwrap();
        paths.prepare().unwrap();
        assert_eq!(
            std::fs::read_to_string(paths.config_file()).unwrap(),
            "trigger = \"@Bob\"\n"
        );
    }

    #[test]
    fn every_numeric_setting_is_refused_outside_its_range_and_accepted_at_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (name, _, (min, max)) in Config::default().numeric_settings() {
            let (section, key) = name.rsplit_once('.').unwrap();
            let write =
                |v: u64| std::fs::write(&path, format!("[{section}]\n{key} = {v}\n")).unwrap();
            for ok in [min, max] {
                write(ok);
                Config::load(&path).unwrap_or_else(|e| panic!("{name} = {ok}: {e}"));
            }
            let mut bad = vec![max + 1];
            if min > 0 {
                bad.push(min - 1);
            }
            for v in bad {
                write(v);
                let err = Config::load(&path).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("{name} = {v}"))
                        && err.contains(&format!("{min} to {max}")),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn prepare_makes_private_dirs_and_a_commented_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("home"));
        paths.prepare().unwrap();
        for d in [paths.home.clone(), paths.groups_dir(), paths.run_dir()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let mode = std::fs::metadata(paths.config_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(paths.config_file()).unwrap();
        assert!(text.starts_with("# nanoclaw configuration"));
    }
}

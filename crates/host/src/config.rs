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
provider = "anthropic"
model = "claude-sonnet-4-5"
max_tokens = 8192
# Tokens the model's context holds; older turns are summarized before it fills.
context_window = 200000
# A model response that sends nothing for this many seconds (a stalled stream) is given up
# and retried by the agent, well before turn_timeout_secs. At least 1.
stream_idle_timeout_secs = 120

[agents]
# Where agents run: "docker" (Docker Engine or Podman's Docker-compatible socket),
# "native" (bubblewrap namespaces, Linux), "apple" (Apple's container, macOS), or "auto":
# Docker if the engine answers and the agent image is built, else native. No usable runtime
# means no agents: nanoclaw never runs an agent outside a sandbox.
runtime = "auto"
# Live agents at once; more sessions wait in a queue.
max_concurrent = 4
# An agent with no work for this long is stopped (it resumes its conversation when woken).
idle_timeout_secs = 600
# Groups (by folder) whose agents are started with the host and kept warm, so a first
# message does not wait for a sandbox to start. Each holds one of max_concurrent's slots.
warm = []
# Longest a single turn may take before the agent is stopped and the turn retried.
turn_timeout_secs = 900
# Tries per message before the chat is told it failed.
max_tries = 3
# First retry delay; doubles with every try.
retry_backoff_secs = 2
# While the sandbox engine (e.g. Docker) is unreachable, messages wait and are tried again
# this often; they are not counted as failed tries.
runtime_retry_secs = 15

[agents.limits]
max_processes = 256
max_memory_mb = 2048
max_file_mb = 512
max_open_files = 1024

[agents.docker]
# The agent image (`nanoclaw image build` makes it).
image = "nanoclaw-agent:latest"
# Engine socket; empty: $DOCKER_HOST, /var/run/docker.sock, then Podman's sockets.
socket = ""
# CPU cores an agent container may use; 0 means no limit.
cpus = 0.0

[scheduler]
# A run that fell due while nanoclaw was not running: "run_once" runs it once at start and
# says it is late (several missed runs of one task still run once); "skip" records it as
# missed, says so in the task's chat and waits for the next fire time.
missed_runs = "run_once"
# A run starting more than this many seconds after its time counts as missed.
late_after_secs = 60
# Scheduled tasks one group may have, so an agent cannot flood the scheduler.
max_tasks_per_group = 100

[channels.terminal]
enabled = true
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
    pub channels: ChannelsSection,
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
            channels: ChannelsSection::default(),
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsSection {
    pub terminal: TerminalSection,
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
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
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
        if !(self.agents.docker.cpus >= 0.0 && self.agents.docker.cpus.is_finite()) {
            return Err("agents.docker.cpus must be 0 (no limit) or a positive number".into());
        }
        if self.agents.max_concurrent == 0 {
            return Err("agents.max_concurrent must be at least 1".into());
        }
        if self.agents.max_tries == 0 {
            return Err("agents.max_tries must be at least 1".into());
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
        Ok(())
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
    pub fn sandbox_run_dir(&self, sandbox: &str) -> PathBuf {
        self.run_dir().join("sandboxes").join(sandbox)
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
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
        write_private_file(&file, id.as_bytes())?;
        Ok(id)
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
        ] {
            create_private_dir(&dir)?;
        }
        let config = self.config_file();
        if !config.exists() {
            write_private_file(&config, DEFAULT_CONFIG_TOML.as_bytes())?;
        }
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

/// Writes a file readable only by its owner (created 0600, atomically replaced).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
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

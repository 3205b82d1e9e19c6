//! Harness for the host's end-to-end tests: a real host (in-process or as a child
//! process), the real bubblewrap sandbox, the static agent, and the scripted model.
#![allow(dead_code)]
// Test harness: a failed precondition should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
use nanoclaw_host::channel::terminal::{ServerLine, TerminalClient};
use nanoclaw_host::config::{Config, Paths};
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_test_support::scripted_model::ScriptedModel;

pub const TEST_KEY: &str = "sk-ant-test-0123456789-SECRET";

pub fn config_for_tests() -> Config {
    let mut config = Config::default();
    // Deterministic: "auto" would pick Docker whenever an agent image happens to exist.
    config.agents.runtime = "native".into();
    config.agents.retry_backoff_secs = 0;
    config.agents.idle_timeout_secs = 60;
    config
}

pub async fn start_host(home: &Path, model: &ScriptedModel, config: Config) -> Host {
    Host::start(host_options(home, model, config, None))
        .await
        .expect("host starts")
}

/// The options `start_host` uses, with the scheduler on `clock` when given.
pub fn host_options(
    home: &Path,
    model: &ScriptedModel,
    config: Config,
    clock: Option<std::sync::Arc<dyn nanoclaw_host::clock::Clock>>,
) -> HostOptions {
    HostOptions {
        paths: Paths::new(home),
        config,
        upstreams: ModelUpstreams {
            anthropic: Some(Upstream {
                base_url: model.base_url(),
                auth: UpstreamAuth::XApiKey(TEST_KEY.into()),
            }),
            openai: None,
        },
        runtime: None,
        agent_binary: Some(nanoclaw_test_support::agent_binary()),
        master_key: None,
        clock,
    }
}

pub async fn connect_client(home: &Path) -> TerminalClient {
    let socket = Paths::new(home).terminal_socket();
    nanoclaw_test_support::eventually(30, "the terminal socket", || {
        let socket = socket.clone();
        async move { TerminalClient::connect(&socket).await.ok() }
    })
    .await
}

/// Sends `text` and returns the text of the reply (or error message) to it.
pub async fn ask(client: &mut TerminalClient, text: &str) -> (String, String) {
    let id = client.send(text).await.expect("send");
    wait_reply(client, &id).await
}

/// (kind, text) of the reply to message `id`.
pub async fn wait_reply(client: &mut TerminalClient, id: &str) -> (String, String) {
    let line = tokio::time::timeout(Duration::from_secs(120), client.reply_to(id))
        .await
        .expect("a reply within 120 s")
        .expect("reading from the host")
        .expect("the host kept the connection");
    match line {
        ServerLine::Message { kind, text, .. } => (kind, text),
        other => panic!("message was not accepted: {other:?}"),
    }
}

/// `nanoclaw run` as a child process, so a test can kill it like a crash would. Its
/// stderr (the log, at debug level) goes to `daemon.log` in `home`.
pub fn spawn_daemon(home: &Path, model: &ScriptedModel) -> Child {
    spawn_daemon_with_agent(home, model, &nanoclaw_test_support::agent_binary())
}

/// [`spawn_daemon`] with another program in place of the agent runner.
pub fn spawn_daemon_with_agent(home: &Path, model: &ScriptedModel, agent: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    nanoclaw_test_support::hermetic(cmd.arg("run").env_clear())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NANOCLAW_HOME", home)
        .env("NANOCLAW_LOG", "debug")
        .env("ANTHROPIC_BASE_URL", model.base_url())
        .env("ANTHROPIC_API_KEY", TEST_KEY)
        .env("NANOCLAW_AGENT_BIN", agent)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(home.join("daemon.log"))
                .expect("daemon log"),
        ))
        .spawn()
        .expect("spawning nanoclaw run")
}

/// The config that pins the sandbox runtime (native) for tests that run the `nanoclaw`
/// binary; write it into the home before the first command.
pub const NATIVE_CONFIG_TOML: &str = "[agents]\nruntime = \"native\"\nretry_backoff_secs = 0\n";

/// `nanoclaw ARGS` as a user runs it on `home`, with nothing from this machine's environment
/// but `PATH`, the model pinned to `model` (with the test key unless `key` is `None`).
pub fn nanoclaw_command(
    home: &Path,
    model: &ScriptedModel,
    key: Option<&str>,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NANOCLAW_HOME", home)
        .env("NO_COLOR", "1")
        .env("ANTHROPIC_BASE_URL", model.base_url())
        .env("NANOCLAW_AGENT_BIN", nanoclaw_test_support::agent_binary());
    if let Some(key) = key {
        cmd.env("ANTHROPIC_API_KEY", key);
    }
    cmd
}

/// Waits until no host holds `home` (its lock is free): hosts started by `nanoclaw chat`
/// stop on their own once their clients are gone.
pub async fn wait_until_no_host(home: &Path) {
    use std::os::fd::AsRawFd;
    let lock = Paths::new(home).run_dir().join("host.lock");
    nanoclaw_test_support::eventually(90, "the host to stop", || {
        let lock = lock.clone();
        async move {
            let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock) else {
                return Some(());
            };
            // SAFETY: flock on a descriptor we own.
            let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            free.then_some(())
        }
    })
    .await
}

/// A child process killed when the test ends, passing or failing.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

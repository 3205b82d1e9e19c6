//! Harness for the host's end-to-end tests: a real host (in-process or as a child
//! process), the real bubblewrap sandbox, the static agent, and the scripted model.
//! The benchmarks include this file too (`benches/common`), so a helper lives here once;
//! what does not need the host's types is in `nanoclaw-test-support`.
// Every binary including this file uses a part of it.
#![allow(dead_code, unused_imports)]
// Test harness: a failed precondition should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
use nanoclaw_host::channel::terminal::{ServerLine, TerminalClient};
use nanoclaw_host::channel::{ChannelEvent, InboundEvent, RouteOutcome};
use nanoclaw_host::config::{Config, Paths};
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_sandbox::image::{self, ImageBuild, ImageError, ImageKind, ImageStatus};
use nanoclaw_sandbox::{DockerRuntime, Runtime};
use nanoclaw_store::{Chat, Group, NewGroup, SessionMode, Store};
use nanoclaw_test_support::scripted_model::ScriptedModel;

pub use nanoclaw_test_support::KillOnDrop;

/// The Anthropic key the scripted model expects; it must never reach a sandbox.
pub const TEST_KEY: &str = "sk-ant-test-0123456789-SECRET";

/// The default config with the native runtime, no retry backoff and a 60 s idle timeout.
pub fn config_for_tests() -> Config {
    let mut config = Config::default();
    // Deterministic: "auto" would pick Docker whenever an agent image happens to exist.
    config.agents.runtime = "native".into();
    config.agents.retry_backoff_secs = 0;
    config.agents.idle_timeout_secs = 60;
    config.dashboard.listen = nanoclaw_test_support::ANY_LOOPBACK_PORT.into();
    config
}

/// Starts an in-process host on `home` with `model` as its upstream and the test agent.
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
        clock,
        ..options_with_agent(
            home,
            model,
            TEST_KEY,
            config,
            nanoclaw_test_support::agent_binary(),
        )
    }
}

/// A host on `home` with `config`, the scripted `model` as its Anthropic upstream (reached
/// with `key`) and `agent` as the agent runner; the runtime chosen from `config`.
pub fn options_with_agent(
    home: &Path,
    model: &ScriptedModel,
    key: &str,
    config: Config,
    agent: PathBuf,
) -> HostOptions {
    HostOptions {
        paths: Paths::new(home),
        config,
        upstreams: model_upstreams(model, key),
        runtime: None,
        agent_binary: Some(agent),
        master_key: None,
        clock: None,
    }
}

/// The scripted `model` as the only (Anthropic) upstream, reached with `key`.
pub fn model_upstreams(model: &ScriptedModel, key: &str) -> ModelUpstreams {
    ModelUpstreams {
        anthropic: Some(Upstream {
            base_url: model.base_url(),
            auth: UpstreamAuth::XApiKey(key.into()),
        }),
        openai: None,
    }
}

/// A client of the host on `home`, once its terminal socket accepts.
pub async fn connect_client(home: &Path) -> TerminalClient {
    connect_polling(
        &Paths::new(home).terminal_socket(),
        Duration::from_millis(20),
    )
    .await
}

/// A client on the terminal `socket`, trying every `poll` for up to 30 s.
pub async fn connect_polling(socket: &Path, poll: Duration) -> TerminalClient {
    nanoclaw_test_support::eventually_every(30, poll, "the terminal socket", || {
        let socket = socket.to_path_buf();
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
    daemon_command(home, model, TEST_KEY, agent)
        // As `nanoclaw_test_support::hermetic`, but the model URL is the scripted model's.
        .env("NANOCLAW_RUNTIME", "native")
        .env("NANOCLAW_LOG", "debug")
        .spawn()
        .expect("spawning nanoclaw run")
}

/// `nanoclaw run` on `home` with nothing from this machine's environment but `PATH`, the
/// scripted `model` reached with `key`, and `agent` as the agent runner. Its stderr (the
/// log) goes to `daemon.log` in `home`.
pub fn daemon_command(home: &Path, model: &ScriptedModel, key: &str, agent: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NANOCLAW_HOME", home)
        .env("ANTHROPIC_BASE_URL", model.base_url())
        .env("ANTHROPIC_API_KEY", key)
        .env("NANOCLAW_AGENT_BIN", agent)
        .env(
            "NANOCLAW_DASHBOARD_LISTEN",
            nanoclaw_test_support::ANY_LOOPBACK_PORT,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(home.join("daemon.log"))
                .expect("daemon log"),
        ));
    cmd
}

/// A config.toml that pins the sandbox runtime to `$runtime` (a literal) with no retry backoff;
/// one recipe, so the native and Docker configs differ only in the runtime.
macro_rules! pinned_runtime_config_toml {
    ($runtime:literal) => {
        concat!(
            "[agents]\nruntime = \"",
            $runtime,
            "\"\nretry_backoff_secs = 0\n"
        )
    };
}

/// The config that pins the sandbox runtime (native) for tests that run the `nanoclaw`
/// binary; write it into the home before the first command.
pub const NATIVE_CONFIG_TOML: &str = pinned_runtime_config_toml!("native");

/// As [`NATIVE_CONFIG_TOML`], but the Docker runtime with the agent image `image`.
pub fn docker_config_toml(image: &str) -> String {
    format!(
        "{}\n[agents.docker]\nimage = {image:?}\n",
        pinned_runtime_config_toml!("docker")
    )
}

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
        .env(
            "NANOCLAW_DASHBOARD_LISTEN",
            nanoclaw_test_support::ANY_LOOPBACK_PORT,
        )
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

/// The owner's main group and terminal chat, as the host made them.
pub async fn main_and_terminal(store: &Store) -> (Group, Chat) {
    let main = store.group_by_folder("main").await.unwrap().unwrap();
    let chat = store
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    (main, chat)
}

/// Docker with the minimal (busybox) agent image `tag`, built here without any registry —
/// every time when `rebuild`, else only when missing or outdated — probed, its containers
/// labelled `host_id`. The error is the engine's when none answers; later failures panic.
pub async fn minimal_docker_runtime(
    tag: &str,
    host_id: String,
    rebuild: bool,
) -> Result<DockerRuntime, ImageError> {
    ensure_agent_image(tag, ImageKind::Minimal, rebuild).await?;
    let runtime = DockerRuntime::connect(nanoclaw_sandbox::docker::DockerConfig {
        socket: None,
        image: tag.into(),
        cpus: None,
        host_id,
    })
    .await
    .expect("connecting to the engine");
    runtime.probe().await.expect("the minimal image is usable");
    Ok(runtime)
}

/// Makes sure the agent image `tag` of `kind` exists and is current — building it every time
/// when `rebuild`, else only when missing or outdated — without any registry: `kind` is
/// [`ImageKind::Minimal`] (the host's busybox) or [`ImageKind::Debootstrap`] (a Debian rootfs
/// from Debian's mirror; needs debootstrap and root). The error is the engine's when none
/// answers; later failures panic.
pub async fn ensure_agent_image(
    tag: &str,
    kind: ImageKind,
    rebuild: bool,
) -> Result<(), ImageError> {
    let engine = image::connect().await?;
    let current = !rebuild
        && image::try_image_status(&engine, tag)
            .await
            .expect("inspecting the image")
            == ImageStatus::Current;
    if !current {
        let started = std::time::Instant::now();
        // Only our own tag: an outdated image of ours is re-tagged, nothing else touched.
        image::build(
            &engine,
            &ImageBuild {
                tag: tag.into(),
                base: image::DEFAULT_BASE.into(),
                kind,
                containerfile: None,
                mirror: None,
                busybox: None,
                packages: Vec::new(),
            },
            &mut |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("building the {kind:?} agent image {tag}: {e}"));
        // A debootstrap build takes minutes: say where a slow test's time went.
        eprintln!(
            "built the {kind:?} agent image {tag} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Sends a message from `test:alice` into `channel`/`chat` and returns what the router did.
pub async fn inject(host: &Host, channel: &str, chat: &str, id: &str, text: &str) -> RouteOutcome {
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.inbound_sink()
        .send(ChannelEvent::Inbound(InboundEvent {
            channel: channel.into(),
            chat_id: chat.into(),
            chat_name: chat.into(),
            is_group: true,
            thread: None,
            platform_msg_id: id.into(),
            sender: "test:alice".into(),
            sender_name: Some("Alice".into()),
            text: text.into(),
            received_at: nanoclaw_host::now_ms(),
            ack: Some(tx),
            ..InboundEvent::default()
        }))
        .await
        .unwrap();
    rx.await.unwrap()
}

/// Wires `chat` on the (unregistered) `test` channel to a new group `folder`.
pub async fn wire_group(host: &Host, folder: &str, chat: &str, requires_trigger: bool) -> i64 {
    let store = host.store();
    let group = store
        .ensure_group(NewGroup {
            name: folder.into(),
            folder: folder.into(),
            trigger: Some("@Andy".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let chat = store.ensure_chat("test", chat, chat, true).await.unwrap();
    store
        .wire(
            chat.id,
            group.id,
            nanoclaw_store::WiringOptions::new(requires_trigger, SessionMode::Shared),
        )
        .await
        .unwrap();
    chat.id
}

/// An owner command (`/skills …`, `/stop`, …) from the terminal: sends `text` and returns the
/// host's answer to it (the next row queued for the owner's chat).
pub async fn owner_command(
    client: &mut TerminalClient,
    store: &Store,
    chat_id: i64,
    text: &str,
) -> String {
    let before = store.outbound_for_chat(chat_id).await.unwrap().len();
    client.send(text).await.unwrap();
    nanoclaw_test_support::eventually(30, text, || {
        let store = store.clone();
        async move {
            let rows = store.outbound_for_chat(chat_id).await.ok()?;
            rows.get(before).map(|o| o.text.clone())
        }
    })
    .await
}

/// The secret `github` (holding `value`) granted to group `folder` on api.github.com with the
/// owner's approval required, and asked for by that group's agent (as the egress proxy records
/// it): a grant waiting for the owner. Returns the grant.
pub async fn github_grant_waiting(
    vault: &nanoclaw_vault::Vault,
    folder: &str,
    value: &str,
) -> nanoclaw_store::VaultGrant {
    vault
        .set("github", nanoclaw_vault::SecretString::from(value))
        .await
        .unwrap();
    let grant = vault
        .grant(nanoclaw_vault::GrantRequest {
            secret_name: "github".into(),
            group_folder: folder.into(),
            host: "api.github.com".into(),
            path_prefix: String::new(),
            inject: "header:Authorization: Bearer {secret}".into(),
            needs_approval: true,
        })
        .await
        .unwrap();
    vault
        .store()
        .vault_request_approval(grant.id, folder, "api.github.com", nanoclaw_host::now_ms())
        .await
        .unwrap();
    grant
}

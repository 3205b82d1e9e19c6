//! `nanoclaw chat`: the terminal channel's client.
//!
//! With no host running, the first client starts one in the background (`nanoclaw run
//! --for-clients`, its own process group) and every client connects to it; clients starting
//! at once take turns on `run/start.lock`, so only one host is started. That host stops once
//! no client has been connected for [`CLIENT_HOST_LINGER`].

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use nanoclaw_host::channel::sanitize::for_terminal;
use nanoclaw_host::channel::terminal::{Scope, ServerLine, TerminalClient, answers_id};
use nanoclaw_host::config::{Config, Paths, create_private_dir};
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

/// How long a host started for clients stays up after its last client left: a script's next
/// `chat -m` finds it running.
pub const CLIENT_HOST_LINGER: Duration = Duration::from_secs(5);
/// How long a client waits for a host to answer (an old host finishing its shutdown and a
/// Docker probe included).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a connected host has to say welcome.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn chat(message: Option<String>, json: bool, timeout: u64) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let mut connected = connect_or_start(&paths).await?;
    if let Some(why) = &connected.warning {
        eprintln!("warning: agents cannot run here: {}", for_terminal(why));
    }
    let timeout = Duration::from_secs(timeout);
    let client = &mut connected.client;
    match message {
        Some(text) => {
            client
                .show(Scope::Own)
                .await
                .context("talking to the host")?;
            one_shot(client, &text, json, timeout).await
        }
        None if std::io::stdin().is_terminal() => {
            client
                .show(Scope::All)
                .await
                .context("talking to the host")?;
            eprintln!("connected to {}", for_terminal(&connected.assistant));
            super::chat_tty::interactive(client, &paths).await
        }
        None => {
            client
                .show(Scope::Own)
                .await
                .context("talking to the host")?;
            piped(client, timeout).await
        }
    }
}

/// A client connected to a host that said welcome.
pub struct Connected {
    pub client: TerminalClient,
    pub assistant: String,
    /// Why agents cannot run, when they cannot.
    pub warning: Option<String>,
}

/// Connects to the running host; without one, starts one in the background first.
pub async fn connect_or_start(paths: &Paths) -> anyhow::Result<Connected> {
    let socket = paths.terminal_socket();
    if let Some(connected) = try_connect(&socket).await {
        return Ok(connected);
    }
    // A broken config fails here, named, rather than in a background process.
    Config::load(&paths.config_file())?;
    create_private_dir(&paths.run_dir())
        .with_context(|| format!("creating {}", paths.run_dir().display()))?;
    let deadline = Instant::now() + START_TIMEOUT;

    // One client at a time starts a host; the others wait here and then connect to it.
    let lock_path = paths.run_dir().join("start.lock");
    let lock = open_lock_file(&lock_path)?;
    loop {
        if let Some(connected) = try_connect(&socket).await {
            return Ok(connected);
        }
        if try_flock(&lock) {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "no nanoclaw host answered on {} within {}s while another client was starting one; \
                 see {}",
                socket.display(),
                START_TIMEOUT.as_secs(),
                logs_hint(paths)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Held (the lock file stays open) until this function returns.
    if let Some(connected) = try_connect(&socket).await {
        return Ok(connected);
    }
    let stderr_path = paths.logs_dir().join("host-stderr.log");
    let mut child = spawn_host(paths, &stderr_path)?;
    loop {
        if let Some(connected) = try_connect(&socket).await {
            // Reaped in the background: the host outlives this client.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            drop(lock);
            return Ok(connected);
        }
        match child.try_wait() {
            Ok(Some(status)) if !status.success() => {
                let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let said: Vec<&str> = said.lines().rev().take(20).collect();
                let said: Vec<&str> = said.into_iter().rev().collect();
                anyhow::bail!(
                    "the nanoclaw host did not start ({status}):\n{}\n(log: {})",
                    for_terminal(&said.join("\n")),
                    logs_hint(paths)
                );
            }
            // Exited fine: another host serves this data directory; connect to it.
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "checking on the host process"),
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the nanoclaw host started but did not answer on {} within {}s; see {}",
                socket.display(),
                START_TIMEOUT.as_secs(),
                logs_hint(paths)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a host started for clients logs: `nanoclaw logs` reads its daily files.
fn logs_hint(paths: &Paths) -> String {
    format!("`nanoclaw logs` (files in {})", paths.logs_dir().display())
}

/// Connects and waits for the welcome; `None` when no host answers (none runs, or one is
/// shutting down and closed the connection).
async fn try_connect(socket: &Path) -> Option<Connected> {
    let mut client = TerminalClient::connect(socket).await.ok()?;
    match tokio::time::timeout(WELCOME_TIMEOUT, client.next()).await {
        Ok(Ok(Some(ServerLine::Welcome { assistant, warning }))) => Some(Connected {
            client,
            assistant,
            warning,
        }),
        _ => None,
    }
}

fn open_lock_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes the exclusive lock on `file` if it is free.
fn try_flock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// `nanoclaw run --for-clients` in its own process group (Ctrl-C in this terminal does not
/// reach it), with this environment; its stderr goes to `stderr_path`.
fn spawn_host(paths: &Paths, stderr_path: &PathBuf) -> anyhow::Result<std::process::Child> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the nanoclaw executable")?;
    create_private_dir(&paths.logs_dir())
        .with_context(|| format!("creating {}", paths.logs_dir().display()))?;
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(stderr_path)
        .with_context(|| format!("opening {}", stderr_path.display()))?;
    std::process::Command::new(&exe)
        .args(["run", "--for-clients"])
        .env("NANOCLAW_HOME", &paths.home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} run", exe.display()))
}

pub async fn one_shot(
    client: &mut TerminalClient,
    text: &str,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let id = client.send(text).await.context("sending the message")?;
    let color = super::color();
    let wait = async {
        while let Some(line) = client.next().await? {
            if answers_id(&line, &id)
                && let ServerLine::Message {
                    kind, text, key, ..
                } = &line
                && (kind == "reply" || kind == "error")
            {
                return Ok::<_, std::io::Error>(Ok((kind.clone(), text.clone(), key.clone())));
            }
            match line {
                ServerLine::Tool { tool, summary } if !json => {
                    print_tool(&tool, &summary, color);
                }
                ServerLine::Ack {
                    id: acked,
                    status,
                    detail,
                } if acked == id && status != "accepted" => {
                    return Ok(Err(format!(
                        "message {status}: {}",
                        detail.unwrap_or_default()
                    )));
                }
                ServerLine::Message { text, kind, .. } if kind == "message" && !json => {
                    println!("{}", for_terminal(&text));
                }
                _ => {}
            }
        }
        Ok(Err("the host closed the connection".to_owned()))
    };
    let result = tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow::anyhow!("no reply within {}s", timeout.as_secs()))??;
    match result {
        Ok((kind, text, key)) => {
            if json {
                // Exact text: JSON escapes every control character.
                println!(
                    "{}",
                    serde_json::json!({"message_id": id, "kind": kind, "reply": text, "key": key})
                );
            } else {
                println!("{}", for_terminal(&text));
            }
            Ok(if kind == "reply" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(why) => {
            if json {
                println!("{}", serde_json::json!({"message_id": id, "error": why}));
            } else {
                eprintln!("error: {}", for_terminal(&why));
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_tool(tool: &str, summary: &str, color: bool) {
    let tool = for_terminal(tool);
    let summary: String = for_terminal(summary).chars().take(160).collect();
    if color {
        eprintln!("\x1b[2m  ⚙ {tool}: {summary}\x1b[0m");
    } else {
        eprintln!("  [{tool}] {summary}");
    }
}

/// Input that is not a terminal: every non-empty line is one message, sent once the previous
/// one is answered; fails (exit 1) when any message got no proper answer.
async fn piped(client: &mut TerminalClient, timeout: Duration) -> anyhow::Result<ExitCode> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut code = ExitCode::SUCCESS;
    while let Some(line) = stdin.next_line().await.context("reading stdin")? {
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if one_shot(client, text, false, timeout).await? != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

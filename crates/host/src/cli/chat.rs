//! `nanoclaw chat`: the terminal channel's client.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use nanoclaw_host::channel::terminal::{ServerLine, TerminalClient};
use nanoclaw_host::config::Paths;
use nanoclaw_host::{Host, HostOptions};
use tokio::io::AsyncBufReadExt;

pub async fn chat(message: Option<String>, json: bool, timeout: u64) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let (mut client, embedded) = connect_or_start(&paths).await?;
    let code = match message {
        Some(text) => one_shot(&mut client, &text, json, Duration::from_secs(timeout)).await?,
        None => interactive(&mut client).await?,
    };
    if let Some(host) = embedded {
        host.shutdown().await;
    }
    Ok(code)
}

/// Connects to a running host; without one, starts the host in this process.
pub async fn connect_or_start(paths: &Paths) -> anyhow::Result<(TerminalClient, Option<Host>)> {
    if let Ok(client) = TerminalClient::connect(&paths.terminal_socket()).await {
        return Ok((client, None));
    }
    let options = HostOptions::from_env()?;
    super::init_logging(Some(&options.paths.logs_dir().join("nanoclaw.log")));
    let host = Host::start(options).await?;
    if let Err(why) = host.runtime() {
        eprintln!("warning: agents cannot run here: {why}");
    }
    let client = TerminalClient::connect(&paths.terminal_socket())
        .await
        .context("connecting to the in-process host")?;
    Ok((client, Some(host)))
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
            match line {
                ServerLine::Tool { tool, summary } if !json => {
                    print_tool(&tool, &summary, color);
                }
                ServerLine::Ack {
                    id: acked,
                    status,
                    detail,
                } if acked == id && status != "accepted" => {
                    return Ok::<_, std::io::Error>(Err(format!(
                        "message {status}: {}",
                        detail.unwrap_or_default()
                    )));
                }
                ServerLine::Message {
                    kind,
                    text,
                    reply_to,
                    key,
                } if reply_to.as_deref() == Some(id.as_str())
                    && (kind == "reply" || kind == "error") =>
                {
                    return Ok(Ok((kind, text, key)));
                }
                ServerLine::Message { text, kind, .. } if kind == "message" && !json => {
                    println!("{text}");
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
                println!(
                    "{}",
                    serde_json::json!({"message_id": id, "kind": kind, "reply": text, "key": key})
                );
            } else {
                println!("{text}");
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
                eprintln!("error: {why}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_tool(tool: &str, summary: &str, color: bool) {
    let summary: String = summary.chars().take(160).collect();
    if color {
        eprintln!("\x1b[2m  ⚙ {tool}: {summary}\x1b[0m");
    } else {
        eprintln!("  [{tool}] {summary}");
    }
}

async fn interactive(client: &mut TerminalClient) -> anyhow::Result<ExitCode> {
    let color = super::color();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    eprintln!("nanoclaw chat — type a message, Ctrl-D to leave.");
    prompt();
    let mut streaming = false;
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                let Some(line) = line? else { break };
                let text = line.trim();
                if text.is_empty() {
                    prompt();
                    continue;
                }
                client.send(text).await.context("sending the message")?;
            }
            line = client.next() => {
                let Some(line) = line? else {
                    eprintln!("\nthe host went away");
                    return Ok(ExitCode::FAILURE);
                };
                match line {
                    ServerLine::Welcome { assistant } => eprintln!("connected to {assistant}"),
                    ServerLine::Delta { text } => {
                        print!("{text}");
                        let _ = std::io::stdout().flush();
                        streaming = true;
                    }
                    ServerLine::Tool { tool, summary } => {
                        if streaming {
                            println!();
                            streaming = false;
                        }
                        print_tool(&tool, &summary, color);
                    }
                    ServerLine::Message { text, kind, .. } => {
                        if streaming && kind == "reply" {
                            // The text already streamed in; just end the line.
                            println!();
                        } else {
                            if streaming { println!(); }
                            if kind == "error" { eprintln!("! {text}"); } else { println!("{text}"); }
                        }
                        streaming = false;
                        prompt();
                    }
                    ServerLine::Ack { status, detail, .. } if status != "accepted" => {
                        eprintln!("({status}: {})", detail.unwrap_or_default());
                        prompt();
                    }
                    ServerLine::Error { error } => eprintln!("host: {error}"),
                    ServerLine::Ack { .. } => {}
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prompt() {
    eprint!("> ");
}

//! The real `nanoclaw-agent` in TCP relay mode (`NANOCLAW_MODEL_TCP` + `NANOCLAW_MODEL_TOKEN`),
//! as in a VM sandbox: every connection to the relay starts with the token, then the turn
//! runs exactly as over the Unix socket.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoclaw_protocol::contract::{self, RELAY_PREAMBLE_PREFIX};
use nanoclaw_protocol::{
    AgentMessage, ChatMessage, ChatRef, GroupInfo, Hello, HostMessage, LineReader, LineWriter,
    ModelConfig, PROTOCOL_MAJOR, PROTOCOL_MINOR, Turn,
};
use nanoclaw_scripted_model::{Scenario, ScriptedModel};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

/// Guards against a hung agent; never an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(60);
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A stand-in for the host's TCP relay: reads the preamble line of each connection, records
/// it, and forwards the rest to the scripted model only when it carries [`TOKEN`].
async fn token_relay(model: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let preambles = Arc::new(Mutex::new(Vec::new()));
    let seen = preambles.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                loop {
                    let byte = inbound.read_u8().await.unwrap();
                    if byte == b'\n' {
                        break;
                    }
                    line.push(byte);
                }
                let line = String::from_utf8(line).unwrap();
                let ok = line == format!("{RELAY_PREAMBLE_PREFIX}{TOKEN}");
                seen.lock().unwrap().push(line);
                if ok {
                    let mut upstream = TcpStream::connect(model).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                }
            });
        }
    });
    (addr, preambles)
}

fn hello() -> Hello {
    Hello {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        session_id: "s1".into(),
        group: GroupInfo {
            id: "g1".into(),
            name: "Test Group".into(),
            folder: "test".into(),
            is_main: false,
        },
        model: ModelConfig {
            provider: "anthropic".into(),
            model: "scripted-1".into(),
            max_tokens: 1024,
            context_window: 200_000,
            stream_idle_timeout_secs: None,
        },
        assistant_name: "Andy".into(),
        timezone: Some("UTC".into()),
        skills: Vec::new(),
        mcp_servers: Vec::new(),
    }
}

fn turn(text: &str) -> HostMessage {
    HostMessage::Turn(Turn {
        turn_id: "t1".into(),
        messages: vec![ChatMessage {
            id: "m-t1".into(),
            sender: "u1".into(),
            sender_name: Some("Alice".into()),
            time: "2025-01-01T12:00:00Z".into(),
            chat: ChatRef {
                channel: "terminal".into(),
                chat_id: "local".into(),
                thread: None,
            },
            text: text.into(),
        }],
        local_time: None,
        task: None,
    })
}

#[tokio::test]
async fn a_turn_runs_over_the_tcp_relay_with_the_token_first() {
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();
    let (relay, preambles) = token_relay(model.addr()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanoclaw-agent"))
        .env_clear()
        .env(contract::env::MODEL_TCP, relay.to_string())
        .env(contract::env::MODEL_TOKEN, TOKEN)
        .env(contract::env::WORKSPACE, ws.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", ws.path())
        .env(contract::env::LOG, "warn")
        .current_dir(ws.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = LineReader::new(BufReader::new(child.stdout.take().unwrap()));
    let mut next = async || {
        tokio::time::timeout(HANG_GUARD, out.next::<AgentMessage>())
            .await
            .expect("the agent stopped talking")
            .unwrap()
            .expect("the agent closed stdout")
    };

    LineWriter::new(&mut stdin)
        .send(&HostMessage::Hello(hello()))
        .await
        .unwrap();
    assert!(matches!(next().await, AgentMessage::Ready(_)));
    LineWriter::new(&mut stdin)
        .send(&turn("hello over tcp"))
        .await
        .unwrap();
    let finished = loop {
        match next().await {
            AgentMessage::TurnFinished(f) => break f,
            AgentMessage::TurnFailed { error, .. } => panic!("turn failed: {error}"),
            _ => {}
        }
    };

    assert!(
        finished.reply.contains("hello over tcp"),
        "{}",
        finished.reply
    );
    let preambles = preambles.lock().unwrap().clone();
    assert!(!preambles.is_empty());
    assert!(
        preambles
            .iter()
            .all(|line| *line == format!("{RELAY_PREAMBLE_PREFIX}{TOKEN}")),
        "{preambles:?}"
    );
    assert_eq!(model.requests().len(), 1);
    drop(stdin);
}

#[tokio::test]
async fn tcp_mode_without_a_token_is_a_clear_fatal_error() {
    let ws = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nanoclaw-agent"))
        .env_clear()
        .env(contract::env::MODEL_TCP, "127.0.0.1:9")
        .env(contract::env::WORKSPACE, ws.path())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("\"fatal\"") && stdout.contains(contract::env::MODEL_TOKEN),
        "{stdout}"
    );
}

//! The agent gives tool subprocesses a loopback HTTP proxy bridged to the host's egress
//! socket (`NANOCLAW_EGRESS_SOCKET`). A fake host proxy on a Unix socket answers every
//! request with what it received; the scripted model has `bash` print the proxy variables
//! and fetch a URL with curl. Run once as a plain process and once under bubblewrap with no
//! network but loopback (as in the real sandbox), when bwrap works here.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nanoclaw_protocol::contract;
use nanoclaw_protocol::{
    AgentMessage, ChatMessage, ChatRef, GroupInfo, Hello, HostMessage, LineReader, LineWriter,
    ModelConfig, PROTOCOL_MAJOR, PROTOCOL_MINOR, Turn,
};
use nanoclaw_scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener};
use tokio::process::Command;

const HANG_GUARD: Duration = Duration::from_secs(60);

/// Serves `listener` as a fake egress proxy: reads the request head and answers
/// `via-egress <request line>`.
fn fake_proxy(listener: UnixListener) {
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let mut first = String::new();
                r.read_line(&mut first).await.unwrap();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let body = format!("via-egress {}", first.trim());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                w.write_all(resp.as_bytes()).await.unwrap();
            });
        }
    });
}

/// The scripted model behind a Unix socket, like the host's model relay.
fn model_relay(listener: UnixListener, target: std::net::SocketAddr) {
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
            });
        }
    });
}

fn hello() -> Hello {
    Hello {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        session_id: "s1".into(),
        group: GroupInfo {
            id: "g1".into(),
            name: "Test".into(),
            folder: "test".into(),
            is_main: true,
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

fn turn() -> HostMessage {
    HostMessage::Turn(Turn {
        turn_id: "t1".into(),
        messages: vec![ChatMessage {
            id: "m1".into(),
            sender: "u1".into(),
            sender_name: Some("Alice".into()),
            time: "2025-01-01T12:00:00Z".into(),
            chat: ChatRef {
                channel: "terminal".into(),
                chat_id: "local".into(),
                thread: None,
            },
            text: "fetch it".into(),
        }],
        local_time: None,
        task: None,
    })
}

/// Runs one turn whose bash command prints the proxy env and curls a URL; returns the reply.
async fn run_turn(wrap: &[String], dir: &Path) -> String {
    let model = ScriptedModel::start(
        Scenario::new()
            .rule(
                Matcher::LastIsToolResult,
                Reply::text("RESULT: {{last_tool_result}}"),
            )
            .rule(
                Matcher::Always,
                Reply::text("fetching").with_tool_call(
                    "bash",
                    serde_json::json!({"command":
                        "env | grep -i -E '^(http|https|all|no)_proxy=' | sort; \
                         curl -sS --max-time 20 http://example.test/hello"}),
                ),
            ),
    )
    .await
    .unwrap();
    let model_sock = dir.join(contract::paths::MODEL_SOCKET_NAME);
    let egress_sock = dir.join(contract::paths::EGRESS_SOCKET_NAME);
    model_relay(UnixListener::bind(&model_sock).unwrap(), model.addr());
    fake_proxy(UnixListener::bind(&egress_sock).unwrap());
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();

    let agent = env!("CARGO_BIN_EXE_nanoclaw-agent");
    let mut cmd = match wrap.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(agent);
            c
        }
        None => Command::new(agent),
    };
    let mut child = cmd
        .env_clear()
        .env(contract::env::MODEL_SOCKET, &model_sock)
        .env(contract::env::EGRESS_SOCKET, &egress_sock)
        .env(contract::env::WORKSPACE, &ws)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &ws)
        .env(contract::env::LOG, "warn")
        .current_dir(&ws)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = LineReader::new(BufReader::new(child.stdout.take().unwrap()));
    let mut w = LineWriter::new(&mut stdin);
    w.send(&HostMessage::Hello(hello())).await.unwrap();
    w.send(&turn()).await.unwrap();
    let reply = loop {
        let msg = tokio::time::timeout(HANG_GUARD, out.next::<AgentMessage>())
            .await
            .expect("the agent stopped talking")
            .unwrap()
            .expect("the agent closed stdout");
        match msg {
            AgentMessage::TurnFinished(f) => break f.reply,
            AgentMessage::TurnFailed { error, .. } => panic!("turn failed: {error}"),
            AgentMessage::Fatal { error } => panic!("agent fatal: {error}"),
            _ => {}
        }
    };
    let mut w = LineWriter::new(&mut stdin);
    w.send(&HostMessage::Shutdown).await.unwrap();
    let _ = tokio::time::timeout(HANG_GUARD, child.wait()).await;
    reply
}

fn assert_went_through_the_bridge(reply: &str) {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
    ] {
        assert!(
            reply.contains(&format!("{var}=http://127.0.0.1:")),
            "{var} missing in {reply}"
        );
    }
    assert!(
        reply.contains("NO_PROXY=localhost,127.0.0.1,::1"),
        "{reply}"
    );
    assert!(
        reply.contains("no_proxy=localhost,127.0.0.1,::1"),
        "{reply}"
    );
    // curl sent an absolute-form request to the loopback proxy, which reached the socket.
    assert!(
        reply.contains("via-egress GET http://example.test/hello HTTP/1.1"),
        "{reply}"
    );
}

#[tokio::test]
async fn tool_subprocesses_get_the_proxy_env_and_reach_the_host_socket() {
    if which("curl").is_none() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reply = run_turn(&[], dir.path()).await;
    assert_went_through_the_bridge(&reply);
}

#[tokio::test]
async fn under_bwrap_without_network_the_bridge_is_the_way_out() {
    let (Some(bwrap), Some(_)) = (which("bwrap"), which("curl")) else {
        eprintln!("skipped: bwrap or curl is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let wrap: Vec<String> = [
        bwrap.as_str(),
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--bind",
        &d,
        &d,
        "--unshare-net",
        "--unshare-pid",
        "--die-with-parent",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // bwrap may be unusable here (no user namespaces): then say so and skip.
    let probe = std::process::Command::new(&bwrap)
        .args(&wrap[1..wrap.len() - 1])
        .args(["--", "/bin/true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: bwrap cannot create a sandbox here");
        return;
    }
    let reply = run_turn(&wrap, dir.path()).await;
    assert_went_through_the_bridge(&reply);
}

fn which(prog: &str) -> Option<String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

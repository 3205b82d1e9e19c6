//! The model relay as a sandbox and its owner meet it: where requests go (base URL and key are
//! independent settings), what it refuses to forward, and how it holds up against a hostile
//! client on a sandbox's relay socket.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use super::common;
use nanoclaw_egress::relay::{ModelUpstreams, Relay, RelayLimits, Upstream, UpstreamAuth};
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

const MASTER_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The real `nanoclaw` binary with nothing from this machine's environment but `PATH`.
fn nanoclaw(home: &TestHome, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path().join("user"))
        .env("XDG_CONFIG_HOME", home.path().join("xdg"))
        .env("NANOCLAW_HOME", home.path().join("data"))
        .env("NANOCLAW_MASTER_KEY", MASTER_KEY_HEX)
        .env("NANOCLAW_KEYRING", "off")
        .env("NO_COLOR", "1")
        .env(
            "NANOCLAW_DASHBOARD_LISTEN",
            nanoclaw_test_support::ANY_LOOPBACK_PORT,
        )
        .env("NANOCLAW_AGENT_BIN", nanoclaw_test_support::agent_binary());
    for (k, v) in env {
        cmd.env(k, v);
    }
    nanoclaw_test_support::output_with_stdin(&mut cmd, stdin.as_bytes())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `vault set PROVIDER` with the key, then `chat -m` with only the base URL in the
/// environment; returns the JSON reply.
async fn chat_with_vault_key(
    provider: &str,
    model_name: &str,
    base_env: &'static str,
    base_url: String,
    key: &'static str,
) -> serde_json::Value {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path().join("data")).unwrap();
    std::fs::write(
        home.path().join("data/config.toml"),
        format!(
            "[model]\nprovider = \"{provider}\"\nmodel = \"{model_name}\"\n\n[agents]\nruntime = \"native\"\nretry_backoff_secs = 0\n"
        ),
    )
    .unwrap();
    let provider = provider.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = nanoclaw(&home, &["vault", "set", &provider], &[], key);
        assert!(out.status.success(), "vault set: {}", text(&out.stderr));
        let out = nanoclaw(
            &home,
            &["chat", "-m", "who answers?", "--json", "--timeout", "120"],
            &[(base_env, &base_url)],
            "",
        );
        assert!(
            out.status.success(),
            "stdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_base_url_is_used_with_the_vault_key() {
    const KEY: &str = "sk-ant-from-the-vault-7Qx2";
    let model = ScriptedModel::start(Scenario::echo().with_api_key(KEY))
        .await
        .unwrap();
    let reply = chat_with_vault_key(
        "anthropic",
        "claude-sonnet-4-5",
        "ANTHROPIC_BASE_URL",
        model.base_url(),
        KEY,
    )
    .await;
    assert_eq!(reply["kind"], "reply", "{reply}");
    assert!(
        reply["reply"].as_str().unwrap().contains("who answers?"),
        "answered by the scripted model at the base URL: {reply}"
    );
    let requests = model.requests();
    assert!(!requests.is_empty(), "the base URL's server got the turn");
    assert!(
        requests.iter().all(|r| r.header("x-api-key") == Some(KEY)),
        "the vault's key is on every request: {:?}",
        requests
            .iter()
            .map(|r| r.header("x-api-key"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_base_url_is_used_with_the_vault_key() {
    const KEY: &str = "sk-openai-from-the-vault-9Rw4";
    let model = ScriptedModel::start(Scenario::echo().with_api_key(KEY))
        .await
        .unwrap();
    let reply = chat_with_vault_key(
        "openai",
        "gpt-test",
        "OPENAI_BASE_URL",
        format!("{}/v1", model.base_url()),
        KEY,
    )
    .await;
    assert_eq!(reply["kind"], "reply", "{reply}");
    assert!(
        reply["reply"].as_str().unwrap().contains("who answers?"),
        "{reply}"
    );
    let requests = model.requests();
    assert!(!requests.is_empty());
    let bearer = format!("Bearer {KEY}");
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str())),
        "the vault's key is on every request"
    );
}

/// The relay socket of the running sandbox of group `folder` (`run/sandboxes/nc-FOLDER-…`).
fn relay_socket(home: &std::path::Path, folder: &str) -> Option<std::path::PathBuf> {
    let dir = home.join("run/sandboxes");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let socket = e.path().join("model.sock");
        (name.starts_with(&format!("nc-{folder}-")) && socket.exists()).then_some(socket)
    })
}

/// One HTTP/1.1 request on a fresh connection to the relay socket: (status, body).
async fn post(socket: &std::path::Path, path: &str, body: &serde_json::Value) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // A refusal (429, 503) may be answered and the connection closed before the body is read:
    // a broken pipe here is the relay's right, its answer is what the test reads.
    let request = format!("{head}{body}");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let out = text(&out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_the_provider_would_fetch_by_url_never_leaves_the_relay() {
    use serde_json::json;
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(common::TEST_KEY))
        .await
        .unwrap();
    let host = common::start_host(home.path(), &model, common::config_for_tests()).await;
    let mut client = common::connect_client(home.path()).await;
    let (kind, _) = common::ask(&mut client, "wake up").await;
    assert_eq!(kind, "reply");
    let socket = relay_socket(home.path(), "main").expect("the main sandbox's relay socket");

    let url_image =
        json!({"type": "image", "source": {"type": "url", "url": "http://attacker.example/x.png"}});
    let anthropic = |content: serde_json::Value| {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
               "messages": [{"role": "user", "content": content}]})
    };
    let openai = |content: serde_json::Value| json!({"model": "gpt-test", "messages": [{"role": "user", "content": content}]});
    let before = model.requests().len();
    let attempts = [
        (
            "/anthropic/v1/messages",
            anthropic(json!([url_image.clone()])),
        ),
        (
            "/anthropic/v1/messages",
            anthropic(json!([{"type": "document",
                              "source": {"type": "url", "url": "https://attacker.example/a.pdf"}}])),
        ),
        (
            "/anthropic/v1/messages",
            // Nested: an image inside a tool result.
            anthropic(json!([{"type": "tool_result", "tool_use_id": "toolu_1",
                              "content": [{"type": "text", "text": "here"}, url_image.clone()]}])),
        ),
        (
            "/openai/chat/completions",
            openai(json!([{"type": "image_url",
                           "image_url": {"url": "https://attacker.example/x.png"}}])),
        ),
        (
            "/openai/chat/completions",
            openai(json!([{"type": "file", "file": {"file_id": "file-abc123"}}])),
        ),
    ];
    for (path, body) in &attempts {
        let (status, answer) = post(&socket, path, body).await;
        assert_eq!(status, 403, "{path} {body}: {answer}");
        assert!(
            answer.contains("egress policy") && answer.contains("base64"),
            "the refusal says why and what to do: {answer}"
        );
        assert!(!answer.contains("attacker.example"), "{answer}");
    }
    assert_eq!(
        model.requests().len(),
        before,
        "no URL-sourced content reached the provider"
    );

    // Inline (base64) content still goes through.
    let inline = anthropic(json!([{"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]));
    let (status, answer) = post(&socket, "/anthropic/v1/messages", &inline).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(model.requests().len(), before + 1);
    host.shutdown().await;
}

/// Wires chat `chat` of the (unregistered) `test` channel to a new group `folder` (no
/// trigger needed) and sends it one message; returns once the group's agent answered.
async fn wake_second_group(host: &nanoclaw_host::Host, folder: &str, chat: &str) {
    use nanoclaw_host::channel::{ChannelEvent, InboundEvent};
    use nanoclaw_store::{NewGroup, SessionMode};
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
    let chat_row = store.ensure_chat("test", chat, chat, true).await.unwrap();
    store
        .wire(
            chat_row.id,
            group.id,
            nanoclaw_store::WiringOptions::new(false, SessionMode::Shared),
        )
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.inbound_sink()
        .send(ChannelEvent::Inbound(InboundEvent {
            channel: "test".into(),
            chat_id: chat.into(),
            chat_name: chat.into(),
            is_group: true,
            thread: None,
            platform_msg_id: "m1".into(),
            sender: "test:mallory".into(),
            sender_name: Some("Mallory".into()),
            text: "hello".into(),
            received_at: nanoclaw_host::now_ms(),
            ack: Some(tx),
            ..InboundEvent::default()
        }))
        .await
        .unwrap();
    rx.await.unwrap();
    nanoclaw_test_support::eventually(120, "the second group's answer", || async {
        let out = store.outbound_for_chat(chat_row.id).await.unwrap();
        (!out.is_empty()).then_some(())
    })
    .await;
}

/// What became of one hostile connection.
#[derive(Default)]
struct Hostile {
    received: Vec<u8>,
    closed: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_connections_on_one_sandboxs_relay_is_capped_and_timed_out() {
    use tokio::io::AsyncWriteExt;
    const CAP: usize = 8;
    const FLOOD: usize = 200;
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(common::TEST_KEY))
        .await
        .unwrap();
    let mut config = common::config_for_tests();
    config.relay.max_connections_per_sandbox = CAP;
    config.relay.header_timeout_secs = 3;
    let host = common::start_host(home.path(), &model, config).await;
    wake_second_group(&host, "team", "room-1").await;
    let socket = relay_socket(home.path(), "team").expect("the team sandbox's relay socket");

    // The hostile client: far more connections than allowed, each starting a request head
    // it never finishes.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let _ = stream
            .write_all(b"POST /anthropic/v1/messages HTTP/1.1\r\n")
            .await;
        flood.push((stream, Hostile::default()));
    }

    // Meanwhile the owner's chat (another sandbox) is answered.
    let mut client = common::connect_client(home.path()).await;
    let (kind, reply) = common::ask(&mut client, "still there?").await;
    assert_eq!(kind, "reply", "{reply}");
    assert!(reply.contains("still there?"), "{reply}");

    // Dribble a header byte to every connection still open until the relay has closed them
    // all: the excess at once with a 503, the ones it took when their head is overdue.
    // (A liveness bound, not a speed assertion.)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    while flood.iter().any(|(_, s)| !s.closed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} hostile connections are still open after 90 s",
            flood.iter().filter(|(_, s)| !s.closed).count()
        );
        for (stream, seen) in flood.iter_mut().filter(|(_, s)| !s.closed) {
            let mut buf = [0u8; 1024];
            loop {
                match stream.try_read(&mut buf) {
                    Ok(0) => {
                        seen.closed = true;
                        break;
                    }
                    Ok(n) => seen.received.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        seen.closed = true;
                        break;
                    }
                }
            }
            if !seen.closed {
                // A failed write is a close the next read reports.
                let _ = stream.try_write(b"x");
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let refused: Vec<String> = flood
        .iter()
        .map(|(_, s)| text(&s.received))
        .filter(|r| r.starts_with("HTTP/1.1 503"))
        .collect();
    assert!(
        refused.len() >= FLOOD - CAP,
        "only {} of {FLOOD} connections were refused (limit {CAP})",
        refused.len()
    );
    assert!(
        refused[0].contains("connections open to the model relay, its limit"),
        "the refusal names the limit: {}",
        refused[0]
    );
    let timed_out = flood
        .iter()
        .filter(|(_, s)| !text(&s.received).starts_with("HTTP/1.1 503"))
        .count();
    assert!(
        (1..=CAP).contains(&timed_out),
        "{timed_out} connections were taken, then closed for their slow head"
    );

    // The flood is over: the sandbox gets its slots back, and the owner still gets answers.
    let (kind, _) = common::ask(&mut client, "and now?").await;
    assert_eq!(kind, "reply");
    let (status, answer) = post(
        &socket,
        "/anthropic/v1/messages",
        &serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    host.shutdown().await;
}

/// An upstream that accepts connections and never answers; returns its base URL and how many
/// connections it holds.
async fn silent_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    (base, count)
}

fn relay_to(base: String, limits: RelayLimits) -> std::sync::Arc<Relay> {
    Relay::with_limits(
        ModelUpstreams {
            anthropic: Some(Upstream {
                base_url: base,
                auth: UpstreamAuth::XApiKey(common::TEST_KEY.into()),
            }),
            openai: None,
        },
        None,
        limits,
    )
    .unwrap()
}

fn hi() -> serde_json::Value {
    serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped_slow_bodies_and_silent_upstreams_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (base, upstream_connections) = silent_upstream().await;
    let relay = relay_to(
        base,
        RelayLimits {
            max_requests_in_flight: 2,
            body_timeout: std::time::Duration::from_secs(1),
            upstream_idle_timeout: std::time::Duration::from_secs(20),
            ..RelayLimits::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("model.sock");
    let _handle = relay.serve(&socket, "nc-test-1").unwrap();

    // A body that never completes is answered 408 and does not hold the relay.
    let mut slow = tokio::net::UnixStream::connect(&socket).await.unwrap();
    slow.write_all(
        b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(60), slow.read(&mut answer))
        .await
        .expect("the relay answers a stalled body")
        .unwrap();
    let answer = text(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");

    // Two requests the upstream never answers fill the sandbox's in-flight limit...
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let socket = socket.clone();
            tokio::spawn(async move { post(&socket, "/anthropic/v1/messages", &hi()).await })
        })
        .collect();
    nanoclaw_test_support::eventually(30, "both requests at the upstream", || async {
        (upstream_connections.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    // ...so a third is refused at once, saying why.
    let (status, answer) = post(&socket, "/anthropic/v1/messages", &hi()).await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer.contains("2 model requests in flight"), "{answer}");
    assert_eq!(
        upstream_connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the refused request never reached the upstream"
    );
    // The silent upstream is cut off after its idle timeout, which frees the slots.
    for request in waiting {
        let (status, answer) = tokio::time::timeout(std::time::Duration::from_secs(120), request)
            .await
            .expect("the relay gives up on a silent upstream")
            .unwrap();
        assert_eq!(status, 502, "{answer}");
    }
    let upstream_before = upstream_connections.load(std::sync::atomic::Ordering::SeqCst);
    let next = tokio::spawn({
        let socket = socket.clone();
        async move { post(&socket, "/anthropic/v1/messages", &hi()).await }
    });
    nanoclaw_test_support::eventually(30, "the next request at the upstream", || async {
        (upstream_connections.load(std::sync::atomic::Ordering::SeqCst) > upstream_before)
            .then_some(())
    })
    .await;
    next.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_relay_connections_waiting_for_their_token_count_against_the_cap() {
    use tokio::io::AsyncReadExt;
    let (base, _) = silent_upstream().await;
    let relay = relay_to(
        base,
        RelayLimits {
            max_connections_per_sandbox: 4,
            ..RelayLimits::default()
        },
    );
    let (_handle, addr, _token) = relay
        .serve_tcp("127.0.0.1:0".parse().unwrap(), "nc-test-tcp")
        .unwrap();
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut refused = 0;
    for stream in &mut silent {
        // Every connection ends: refused at once, or after the preamble timeout.
        let mut out = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            stream.read_to_end(&mut out),
        )
        .await
        .expect("the relay closes a connection that sends no token");
        if read.is_ok() && text(&out).starts_with("HTTP/1.1 503") {
            assert!(text(&out).contains("its limit"), "{}", text(&out));
            refused += 1;
        }
    }
    assert_eq!(
        refused, 6,
        "all but the 4 the sandbox may hold were refused"
    );
}

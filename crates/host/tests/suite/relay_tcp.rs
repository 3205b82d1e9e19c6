//! The model relay over loopback TCP: only the sandbox's token opens it, and then it is the
//! same relay (same upstream, same host-side key) as over the Unix socket.

// Test helpers may panic: a panic is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use nanoclaw_egress::relay::{ModelUpstreams, Relay, Upstream, UpstreamAuth};
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "sk-ant-host-only";

async fn model_and_relay() -> (ScriptedModel, std::sync::Arc<Relay>) {
    let model = ScriptedModel::start(Scenario::echo().with_api_key(KEY))
        .await
        .unwrap();
    let relay = Relay::new(
        ModelUpstreams {
            anthropic: Some(Upstream {
                base_url: model.base_url(),
                auth: UpstreamAuth::XApiKey(KEY.into()),
            }),
            openai: None,
        },
        None,
    )
    .unwrap();
    (model, relay)
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A complete, credential-free Anthropic Messages request as the agent sends it.
fn messages_request() -> Vec<u8> {
    let body =
        r#"{"model":"claude-test","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    format!(
        "POST /anthropic/v1/messages HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n\
         anthropic-version: 2023-06-01\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `bytes` and reads until the relay closes; a reset counts as closed with nothing.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The relay may close before we finish writing; that is a refusal too.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    match stream.read_to_end(&mut out).await {
        Ok(_) => out,
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn the_right_token_reaches_the_model_with_the_hosts_key() {
    let (model, relay) = model_and_relay().await;
    let (_handle, addr, token) = relay.serve_tcp(loopback(), "g1").unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let mut bytes = format!("NANOCLAW-RELAY {token}\n").into_bytes();
    bytes.extend(messages_request());
    let response = String::from_utf8(exchange(addr, &bytes).await).unwrap();

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("echo: hi"), "{response}");
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("x-api-key"), Some(KEY));
}

#[tokio::test]
async fn a_wrong_token_is_closed_and_nothing_is_forwarded() {
    let (model, relay) = model_and_relay().await;
    let (_handle, addr, token) = relay.serve_tcp(loopback(), "g1").unwrap();
    // Same length, one digit different.
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let mut bytes = b"NANOCLAW-RELAY ".to_vec();
    bytes.extend(&wrong);
    bytes.push(b'\n');
    bytes.extend(messages_request());

    assert_eq!(exchange(addr, &bytes).await, b"");
    assert!(model.requests().is_empty());
}

#[tokio::test]
async fn another_sandboxs_token_does_not_open_this_port() {
    let (model, relay) = model_and_relay().await;
    let (_h1, addr1, _token1) = relay.serve_tcp(loopback(), "g1").unwrap();
    let (_h2, addr2, token2) = relay.serve_tcp(loopback(), "g2").unwrap();
    assert_ne!(addr1, addr2);
    let mut bytes = format!("NANOCLAW-RELAY {token2}\n").into_bytes();
    bytes.extend(messages_request());

    assert_eq!(exchange(addr1, &bytes).await, b"");
    assert!(model.requests().is_empty());
}

#[tokio::test]
async fn plain_http_without_a_preamble_is_closed_and_nothing_is_forwarded() {
    let (model, relay) = model_and_relay().await;
    let (_handle, addr, _token) = relay.serve_tcp(loopback(), "g1").unwrap();

    assert_eq!(exchange(addr, &messages_request()).await, b"");
    assert!(model.requests().is_empty());
}

#[tokio::test]
async fn a_silent_connection_is_closed_and_others_are_served_meanwhile() {
    let (model, relay) = model_and_relay().await;
    let (_handle, addr, token) = relay.serve_tcp(loopback(), "g1").unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();

    // A silent client does not hold up a good one.
    let mut bytes = format!("NANOCLAW-RELAY {token}\n").into_bytes();
    bytes.extend(messages_request());
    let response = String::from_utf8(exchange(addr, &bytes).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // The silent one is closed once the preamble deadline passes.
    let mut out = Vec::new();
    let closed = silent.read_to_end(&mut out).await;
    assert!(closed.is_err() || out.is_empty());
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn every_listener_gets_a_fresh_256_bit_token() {
    let (_model, relay) = model_and_relay().await;
    let (_h1, _, t1) = relay.serve_tcp(loopback(), "g1").unwrap();
    let (_h2, _, t2) = relay.serve_tcp(loopback(), "g1").unwrap();
    for token in [&t1, &t2] {
        assert_eq!(token.len(), 64, "{token}");
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    }
    assert_ne!(t1, t2);
}

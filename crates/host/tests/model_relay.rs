//! The model relay as a sandbox and its owner meet it: where requests go (base URL and key are
//! independent settings), what it refuses to forward, and how it holds up against a hostile
//! client on a sandbox's relay socket.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

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
        .env("NANOCLAW_AGENT_BIN", nanoclaw_test_support::agent_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
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
        requests.iter().map(|r| r.header("x-api-key")).collect::<Vec<_>>()
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

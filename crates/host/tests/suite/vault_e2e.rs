//! The vault in the running host: model keys come from it (rotation applies to the next
//! request, no restart) and secret values never reach a chat.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::common::*;
use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
use nanoclaw_host::channel::terminal::ServerLine;
use nanoclaw_host::config::Paths;
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_store::Store;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};
use nanoclaw_vault::{MasterKey, SecretString, Vault};

fn key() -> MasterKey {
    MasterKey::from_bytes([42u8; 32])
}

async fn vault(home: &TestHome) -> Vault {
    let store = Store::open(&home.path().join("nanoclaw.db")).unwrap();
    Vault::open(store, key()).await.unwrap()
}

async fn start(home: &TestHome, model: &ScriptedModel) -> Host {
    Host::start(HostOptions {
        paths: Paths::new(home.path()),
        config: config_for_tests(),
        upstreams: ModelUpstreams {
            // The environment's key is wrong on purpose: only the vault's works.
            anthropic: Some(Upstream {
                base_url: model.base_url(),
                auth: UpstreamAuth::XApiKey("stale-env-key".into()),
            }),
            openai: None,
        },
        runtime: None,
        agent_binary: Some(nanoclaw_test_support::agent_binary()),
        master_key: Some(key()),
        clock: None,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_key_comes_from_the_vault_and_rotation_needs_no_restart() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key("vault-key-v1"))
        .await
        .unwrap();
    let vault = vault(&home).await;
    vault
        .set("anthropic", SecretString::from("vault-key-v1".to_owned()))
        .await
        .unwrap();
    let host = start(&home, &model).await;
    let mut client = connect_client(home.path()).await;
    let (kind, _) = ask(&mut client, "first").await;
    assert_eq!(kind, "reply");

    vault
        .rotate("anthropic", SecretString::from("vault-key-v2".to_owned()))
        .await
        .unwrap();
    model.set_scenario(Scenario::echo().with_api_key("vault-key-v2"));
    let (kind, text) = ask(&mut client, "after rotation").await;
    assert_eq!(kind, "reply", "{text}");
    let keys: Vec<_> = model
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").unwrap_or("").to_owned())
        .collect();
    assert_eq!(keys.first().map(String::as_str), Some("vault-key-v1"));
    assert_eq!(keys.last().map(String::as_str), Some("vault-key-v2"));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_chat_reply_is_redacted_and_the_owner_is_alerted() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let vault = vault(&home).await;
    vault
        .set("anthropic", SecretString::from(TEST_KEY.to_owned()))
        .await
        .unwrap();
    vault
        .set(
            "github",
            SecretString::from("ghp_Zq8TESTsecretVALUE1234".to_owned()),
        )
        .await
        .unwrap();
    let host = start(&home, &model).await;
    let mut client = connect_client(home.path()).await;
    let id = client
        .send("please keep ghp_Zq8TESTsecretVALUE1234 safe")
        .await
        .unwrap();
    let mut alert = None;
    let reply = loop {
        if let ServerLine::Message { text, reply_to, .. } =
            client.next().await.unwrap().expect("connection open")
        {
            assert!(
                !text.contains("ghp_Zq8TESTsecretVALUE1234"),
                "leaked: {text}"
            );
            if reply_to.as_deref() == Some(id.as_str()) {
                break text;
            }
            alert = Some(text);
        }
    };
    assert!(reply.contains("[REDACTED:github]"), "{reply}");
    // The alert may come right after the reply.
    let alert = match alert {
        Some(a) => a,
        None => loop {
            if let ServerLine::Message { text, .. } = client.next().await.unwrap().unwrap() {
                break text;
            }
        },
    };
    assert!(
        alert.contains("github") && alert.contains("redacted"),
        "{alert}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_gets_placeholders_and_our_ca_never_the_secret() {
    use nanoclaw_test_support::scripted_model::{Matcher, Reply};
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(Matcher::LastIsToolResult, Reply::text("OUT[{{last_tool_result}}]"))
        .rule(
            Matcher::Always,
            Reply::tool_call(
                "bash",
                serde_json::json!({"command": "env | grep -E '^(NANOCLAW_SECRET_GITHUB|SSL_CERT_FILE)='; grep -c 'BEGIN CERTIFICATE' \"$SSL_CERT_FILE\"; K='ghp_Zq8TEST''secretVALUE1234'; env | grep -q \"$K\" && echo LEAKED-ENV; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f 2>/dev/null; done | grep -q \"$K\" && echo LEAKED-PROC; grep -rqs \"$K\" /workspace /run /tmp /opt && echo LEAKED-FILE; echo END"}),
            ),
        );
    let model = ScriptedModel::start(scenario).await.unwrap();
    let vault = vault(&home).await;
    vault
        .set("anthropic", SecretString::from(TEST_KEY.to_owned()))
        .await
        .unwrap();
    vault
        .set(
            "github",
            SecretString::from("ghp_Zq8TESTsecretVALUE1234".to_owned()),
        )
        .await
        .unwrap();
    vault
        .grant(nanoclaw_vault::GrantRequest {
            secret_name: "github".into(),
            group_folder: "main".into(),
            host: "api.github.com".into(),
            path_prefix: String::new(),
            inject: "header:Authorization: Bearer {secret}".into(),
            needs_approval: false,
        })
        .await
        .unwrap();
    let host = start(&home, &model).await;
    let mut client = connect_client(home.path()).await;
    let (kind, out) = ask(&mut client, "show me your environment").await;
    assert_eq!(kind, "reply", "{out}");
    assert!(out.contains("END"), "{out}");
    assert!(
        out.contains("NANOCLAW_SECRET_GITHUB=nanoclaw-placeholder-github-"),
        "tools get a placeholder: {out}"
    );
    assert!(
        out.contains("SSL_CERT_FILE=/run/nanoclaw/ca-bundle.pem"),
        "{out}"
    );
    assert!(!out.contains("LEAKED"), "{out}");
    // The bundle has the system roots plus ours.
    let certs: usize = out.lines().find_map(|l| l.trim().parse().ok()).unwrap_or(0);
    assert!(certs >= 2, "{out}");
    host.shutdown().await;
}

//! The owner approves a grant in the main chat; nobody else can.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::common::*;
use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
use nanoclaw_host::channel::terminal::TERMINAL_CHAT_ID;
use nanoclaw_host::channel::{ChannelEvent, InboundEvent, RouteOutcome};
use nanoclaw_host::config::Paths;
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_store::{ApprovalState, NewGroup, SessionMode, Store};
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};
use nanoclaw_vault::{MasterKey, Vault};

fn key() -> MasterKey {
    MasterKey::from_bytes([42u8; 32])
}

async fn inject(host: &Host, channel: &str, chat: &str, id: &str, text: &str) -> RouteOutcome {
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.inbound_sink()
        .send(ChannelEvent::Inbound(InboundEvent {
            channel: channel.into(),
            chat_id: chat.into(),
            chat_name: chat.into(),
            is_group: channel != "terminal",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_works_from_the_main_chat_only() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let store = Store::open(&home.path().join("nanoclaw.db")).unwrap();
    let vault = Vault::open(store.clone(), key()).await.unwrap();
    // The team's agent asked (as the egress proxy records it).
    let grant = github_grant_waiting(&vault, "team", "ghp_APPROVALtest0123456789").await;
    let host = Host::start(HostOptions {
        paths: Paths::new(home.path()),
        config: config_for_tests(),
        upstreams: ModelUpstreams {
            anthropic: Some(Upstream {
                base_url: model.base_url(),
                auth: UpstreamAuth::XApiKey(TEST_KEY.into()),
            }),
            openai: None,
        },
        runtime: None,
        agent_binary: Some(nanoclaw_test_support::agent_binary()),
        master_key: Some(key()),
        clock: None,
    })
    .await
    .unwrap();
    let team = store
        .ensure_group(NewGroup {
            name: "team".into(),
            folder: "team".into(),
            trigger: Some("@Andy".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let room = store
        .ensure_chat("test", "room-1", "room-1", true)
        .await
        .unwrap();
    store
        .wire(
            room.id,
            team.id,
            nanoclaw_store::WiringOptions::new(false, SessionMode::Shared),
        )
        .await
        .unwrap();

    // From the team's own chat it is an ordinary message for its agent.
    let cmd = format!("/approve {}", grant.id);
    let outcome = inject(&host, "test", "room-1", "t1", &cmd).await;
    assert_eq!(outcome, RouteOutcome::Accepted);
    let state = store.vault_approval(grant.id).await.unwrap().unwrap().state;
    assert_eq!(
        state,
        ApprovalState::Pending,
        "a non-main chat cannot approve"
    );

    // From the owner's main chat it approves, and the owner gets a confirmation there.
    let outcome = inject(&host, "terminal", TERMINAL_CHAT_ID, "m1", &cmd).await;
    assert_eq!(outcome, RouteOutcome::Accepted);
    let state = store.vault_approval(grant.id).await.unwrap().unwrap().state;
    assert_eq!(state, ApprovalState::Approved);
    let main_chat = store
        .chat_by_platform("terminal", TERMINAL_CHAT_ID)
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<String> = store
        .outbound_for_chat(main_chat.id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.text)
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains(&format!("Approved grant #{}", grant.id)) && t.contains("github")),
        "{texts:?}"
    );
    // The command never reached the main group's agent.
    let main = store.group_by_folder("main").await.unwrap().unwrap();
    for s in store.sessions_for_group(main.id.as_str()).await.unwrap() {
        assert!(
            store
                .inbound_for_session(s.id.as_str())
                .await
                .unwrap()
                .is_empty()
        );
    }

    // `/deny` then flips it.
    inject(
        &host,
        "terminal",
        TERMINAL_CHAT_ID,
        "m2",
        &format!("/deny {}", grant.id),
    )
    .await;
    let state = store.vault_approval(grant.id).await.unwrap().unwrap().state;
    assert_eq!(state, ApprovalState::Denied);

    // The team's message was answered by its agent like any other.
    eventually(60, "the team agent's reply", || async {
        let r = store.outbound_for_chat(room.id).await.unwrap();
        (!r.is_empty()).then_some(())
    })
    .await;
    host.shutdown().await;
}

//! The main group is the admin: it sees every group and wires chats. Other groups are
//! refused by the host, even when their agent asks directly.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use super::common::*;
use nanoclaw_egress::relay::ModelUpstreams;
use nanoclaw_host::Host;
use nanoclaw_host::HostOptions;
use nanoclaw_host::channel::{ChannelEvent, InboundEvent};
use nanoclaw_host::config::Paths;
use nanoclaw_store::{NewGroup, SessionMode};
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_group_lists_groups_and_registers_a_chat() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(Matcher::LastIsToolResult, Reply::text("RESULT[{{last_tool_result}}]"))
        .rule(
            Matcher::LastUserTextContains("wire the family chat".into()),
            Reply::tool_call(
                "register_chat",
                json!({"channel": "telegram", "chat_id": "-100200", "folder": "family", "name": "Family"}),
            ),
        )
        .rule(
            Matcher::LastUserTextContains("wire it to main".into()),
            Reply::tool_call(
                "register_chat",
                json!({"channel": "telegram", "chat_id": "-100300", "folder": "main"}),
            ),
        )
        .rule(
            Matcher::LastUserTextContains("which groups".into()),
            Reply::tool_call("list_groups", json!({})),
        );
    let model = ScriptedModel::start(scenario).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;

    let (_, wired) = ask(&mut client, "please wire the family chat").await;
    assert!(wired.contains("\"created_group\":true"), "{wired}");
    let store = host.store();
    let family = store.group_by_folder("family").await.unwrap().unwrap();
    assert!(!family.is_main);
    let chat = store
        .chat_by_platform("telegram", "-100200")
        .await
        .unwrap()
        .unwrap();
    let wirings = store.wirings_for_chat(chat.id).await.unwrap();
    assert_eq!(wirings.len(), 1);
    assert_eq!(wirings[0].1.folder, "family");
    assert!(wirings[0].0.requires_trigger());

    // Not even the main agent may wire a chat to the main group.
    let (_, refused) = ask(&mut client, "now wire it to main").await;
    assert!(refused.contains("owner's main group"), "{refused}");
    assert!(
        store
            .chat_by_platform("telegram", "-100300")
            .await
            .unwrap()
            .is_none()
    );

    let (_, groups) = ask(&mut client, "which groups are there?").await;
    assert!(groups.contains("\"folder\": \"main\""), "{groups}");
    assert!(groups.contains("\"folder\": \"family\""), "{groups}");
    assert!(groups.contains("-100200"), "{groups}");
    host.shutdown().await;
}

/// An agent (a Python stand-in) that asks the host to register a chat and reports what
/// the host said.
const REGISTERING_AGENT: &str = r#"#!/usr/bin/python3 -S
import json, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
def send(obj):
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()
for line in inp:
    msg = json.loads(line)
    if msg["type"] == "hello":
        send({"type": "ready", "protocol_major": 1, "protocol_minor": 1, "agent_version": "x"})
    elif msg["type"] == "turn":
        send({"type": "request", "request_id": "r1", "turn_id": msg["turn_id"],
              "action": {"action": "register_chat", "channel": "telegram", "chat_id": "666", "folder": "pwned"}})
        while True:
            m = json.loads(inp.readline())
            if m["type"] == "request_result":
                break
        send({"type": "turn_finished", "turn_id": msg["turn_id"],
              "reply": "ok=%s error=%s" % (m["ok"], m.get("error")),
              "usage": {"input_tokens": 0, "output_tokens": 0}})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_group_asking_for_admin_actions_is_refused_by_the_host() {
    let home = TestHome::new();
    let agent = home.path().join("registering-agent.py");
    std::fs::write(&agent, REGISTERING_AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = Host::start(HostOptions {
        paths: Paths::new(home.path()),
        config: config_for_tests(),
        upstreams: ModelUpstreams::default(),
        runtime: None,
        agent_binary: Some(agent),
        master_key: None,
        clock: None,
    })
    .await
    .unwrap();
    let store = host.store().clone();
    let team = store
        .ensure_group(NewGroup {
            name: "Team".into(),
            folder: "team".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let room = store
        .ensure_chat("test", "room", "Room", true)
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
    host.inbound_sink()
        .send(ChannelEvent::Inbound(InboundEvent {
            channel: "test".into(),
            chat_id: "room".into(),
            chat_name: "Room".into(),
            is_group: true,
            thread: None,
            platform_msg_id: "m1".into(),
            sender: "test:mallory".into(),
            sender_name: None,
            text: "register my chat".into(),
            received_at: nanoclaw_host::now_ms(),
            ack: None,
            ..InboundEvent::default()
        }))
        .await
        .unwrap();
    let reply = eventually(60, "the agent's report", || async {
        store
            .outbound_for_chat(room.id)
            .await
            .unwrap()
            .into_iter()
            .next()
            .map(|o| o.text)
    })
    .await;
    assert!(reply.starts_with("ok=False"), "{reply}");
    assert!(
        reply.contains("only available to the owner's main group"),
        "{reply}"
    );
    assert!(store.group_by_folder("pwned").await.unwrap().is_none());
    assert!(
        store
            .chat_by_platform("telegram", "666")
            .await
            .unwrap()
            .is_none()
    );
    host.shutdown().await;
}

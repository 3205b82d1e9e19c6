//! The main group is the admin: it sees every group and wires chats. Other groups are
//! refused by the host, even when their agent asks directly.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use super::common::*;
use nanoclaw_egress::relay::ModelUpstreams;
use nanoclaw_host::Host;
use nanoclaw_host::HostOptions;
use nanoclaw_host::channel::{ChannelEvent, InboundEvent, RouteOutcome};
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
        results = []
        for rid, action in [
            ("r1", {"action": "register_chat", "channel": "telegram", "chat_id": "666", "folder": "pwned"}),
            ("r2", {"action": "update_group", "group": "main", "trigger": "@Pwned"}),
        ]:
            send({"type": "request", "request_id": rid, "turn_id": msg["turn_id"], "action": action})
            while True:
                m = json.loads(inp.readline())
                if m["type"] == "request_result":
                    break
            results.append("ok=%s error=%s" % (m["ok"], m.get("error")))
        send({"type": "turn_finished", "turn_id": msg["turn_id"],
              "reply": " | ".join(results),
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
    let (registered, updated) = reply.split_once(" | ").unwrap();
    assert!(registered.starts_with("ok=False"), "{reply}");
    assert!(
        registered.contains("only available to the owner's main group"),
        "{reply}"
    );
    assert!(updated.starts_with("ok=False"), "{reply}");
    assert!(
        updated.contains("update_group is only available to the owner's main group"),
        "{reply}"
    );
    // The main group's trigger is untouched, and the attempt is in the audit log.
    if let Some(main) = store.main_group().await.unwrap() {
        assert_ne!(main.trigger, "@Pwned");
    }
    let audit = nanoclaw_vault::Audit::new(store.clone());
    let rows = audit.rows(0, Some("main".into()), 100).await.unwrap();
    assert!(
        rows.iter()
            .any(|r| r.decision == "deny" && r.reason.contains("update_group by team refused")),
        "{rows:?}"
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

/// "Change the trigger word to @Bob": the main group's agent asks the host, which changes the
/// group, audits it, and the group answers to the new word (with the new model) from its next
/// message on; a bad zone is refused and audited too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_changes_a_groups_trigger_and_model_from_the_main_chat() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("RESULT[{{last_tool_result}}]"),
        )
        .rule(
            Matcher::LastUserTextContains("family should answer to @Bob".into()),
            Reply::tool_call(
                "update_group",
                json!({"group": "family", "trigger": "@Bob", "model": "scripted-two"}),
            ),
        )
        .rule(
            Matcher::LastUserTextContains("family lives on Mars".into()),
            Reply::tool_call(
                "update_group",
                json!({"group": "family", "timezone": "Mars/Olympus"}),
            ),
        )
        .rule(Matcher::Always, Reply::text("ECHO {{last_user_text}}"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let family_chat = wire_group(&host, "family", "family-room", true).await;
    let store = host.store().clone();

    // The family's agent is warm with the old settings before the change.
    assert_eq!(
        inject(&host, "test", "family-room", "f1", "@Andy hello").await,
        RouteOutcome::Accepted
    );
    eventually(60, "the family's first reply", || async {
        let all = store.outbound_for_chat(family_chat).await.unwrap();
        (!all.is_empty()).then_some(())
    })
    .await;

    let mut client = connect_client(home.path()).await;
    let (_, changed) = ask(&mut client, "the family should answer to @Bob from now on").await;
    assert!(changed.contains(r#""setting":"trigger""#), "{changed}");
    assert!(changed.contains(r#""to":"@Bob""#), "{changed}");
    let family = store.group_by_folder("family").await.unwrap().unwrap();
    assert_eq!(family.trigger, "@Bob");
    assert_eq!(family.model.as_deref(), Some("scripted-two"));

    // The old word no longer wakes the group; the new one does, and its (new) agent uses the
    // new model although the old agent was still warm.
    let outcome = inject(&host, "test", "family-room", "f2", "@Andy are you there").await;
    assert!(
        matches!(outcome, RouteOutcome::Ignored(ref why) if why.contains("trigger")),
        "{outcome:?}"
    );
    assert_eq!(
        inject(&host, "test", "family-room", "f3", "@Bob are you there").await,
        RouteOutcome::Accepted
    );
    let second = eventually(60, "the family's second reply", || async {
        let all = store.outbound_for_chat(family_chat).await.unwrap();
        all.get(1).map(|o| o.text.clone())
    })
    .await;
    assert!(second.contains("@Bob are you there"), "{second}");
    let last_model = model
        .requests()
        .iter()
        .rev()
        .find(|r| r.body.to_string().contains("@Bob are you there"))
        .map(|r| r.body["model"].clone());
    assert_eq!(last_model, Some(json!("scripted-two")));

    let (_, refused) = ask(&mut client, "the family lives on Mars now").await;
    assert!(refused.contains("Mars/Olympus"), "{refused}");
    let family = store.group_by_folder("family").await.unwrap().unwrap();
    assert_eq!(family.timezone, None, "a refused change changes nothing");

    // Both attempts are in the audit chain, which still verifies.
    let audit = nanoclaw_vault::Audit::new(store.clone());
    let rows = audit.rows(0, Some("family".into()), 100).await.unwrap();
    let reasons: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.decision.clone(), r.reason.clone()))
        .collect();
    assert!(
        reasons.iter().any(|(d, r)| d == "allow"
            && r.contains(r#"trigger "@Andy" → "@Bob""#)
            && r.contains("update_group by main")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(d, r)| d == "deny" && r.contains("Mars/Olympus")),
        "{reasons:?}"
    );
    audit.verify().await.unwrap();
    host.shutdown().await;
}

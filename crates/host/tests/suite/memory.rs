//! The shared memory store end to end: the real host, sandbox, agent and scripted model. The
//! scripted model calls `memory_save` / `memory_search` / `memory_forget` and answers with the
//! tool's result, so what a reply shows is what the host's store gave the agent.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use super::common::*;
use nanoclaw_host::Host;
use nanoclaw_host::channel::{ChannelEvent, InboundEvent, RouteOutcome};
use nanoclaw_store::{NewGroup, SessionMode};
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};
use serde_json::{Value, json};

/// The model: saves or searches as the user's words say, then answers with the tool's result.
fn scenario() -> Scenario {
    let say = |needle: &str, tool: &str, input: Value| {
        (
            Matcher::last_user_text_contains(needle),
            Reply::tool_call(tool, input),
        )
    };
    let rules = [
        say(
            "remember the wifi",
            "memory_save",
            json!({"text": "The guest wifi password is hunter2-purple."}),
        ),
        say(
            "what is the wifi",
            "memory_search",
            json!({"query": "wifi password"}),
        ),
        say(
            "note the weather source",
            "memory_save",
            json!({"text": "Weather for Berlin comes from DWD.", "namespace": "skill:weather"}),
        ),
        say(
            "note the train",
            "memory_save",
            json!({"text": "Train to Berlin leaves Friday 9:04.", "namespace": "skill:travel"}),
        ),
        say(
            "travel plans for berlin",
            "memory_search",
            json!({"query": "berlin", "namespace": "skill:travel"}),
        ),
        say(
            "all about berlin",
            "memory_search",
            json!({"query": "berlin"}),
        ),
        say(
            "what is the safe code",
            "memory_search",
            json!({"query": "safe code"}),
        ),
        say(
            "remember the safe code",
            "memory_save",
            json!({"text": "The safe code is 4711."}),
        ),
        // Names memory 1: the first memory saved in this home (group A's).
        say("forget memory one", "memory_forget", json!({"id": 1})),
    ];
    let mut s = Scenario::new().with_api_key(TEST_KEY).rule(
        Matcher::LastIsToolResult,
        Reply::text("Tool said: {{last_tool_result}}"),
    );
    for (when, reply) in rules {
        s = s.rule(when, reply);
    }
    s.rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"))
}

/// `nanoclaw ARGS` on `home`, as the owner runs it.
fn nanoclaw(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    nanoclaw_test_support::hermetic(cmd.args(args).env_clear())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NANOCLAW_HOME", home)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

async fn start(home: &Path, model: &ScriptedModel) -> Host {
    // A host shut down just before may still hold the data directory's lock for a moment.
    eventually(30, "the host to start", || async {
        Host::start(host_options(home, model, config_for_tests(), None))
            .await
            .ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_saved_in_one_turn_is_found_later_across_skills_and_after_a_restart() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start(home.path(), &model).await;
    let mut client = connect_client(home.path()).await;

    let (kind, text) = ask(&mut client, "@Andy remember the wifi password").await;
    assert_eq!(kind, "reply", "{text}");
    assert!(
        text.contains("\"id\": 1") && text.contains("shared"),
        "{text}"
    );

    // A later turn finds it by search: the answer comes from the host's store.
    let (_, text) = ask(&mut client, "@Andy what is the wifi password?").await;
    assert!(text.contains("hunter2-purple"), "{text}");

    // Two skills' namespaces: one search finds both, a named namespace only its own.
    let (_, text) = ask(&mut client, "@Andy note the weather source").await;
    assert!(text.contains("skill:weather"), "{text}");
    let (_, text) = ask(&mut client, "@Andy note the train").await;
    assert!(text.contains("skill:travel"), "{text}");
    let (_, text) = ask(&mut client, "@Andy tell me all about berlin").await;
    assert!(
        text.contains("comes from DWD") && text.contains("leaves Friday"),
        "{text}"
    );
    let (_, text) = ask(&mut client, "@Andy travel plans for berlin?").await;
    assert!(text.contains("leaves Friday"), "{text}");
    assert!(!text.contains("DWD"), "only the travel skill's: {text}");

    // The owner sees what the agent saved.
    let out = nanoclaw(home.path(), &["memory", "search", "wifi", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["group"], "main");
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{found}");
    assert_eq!(
        results[0]["text"],
        "The guest wifi password is hunter2-purple."
    );
    assert_eq!(results[0]["id"], 1);
    let out = nanoclaw(home.path(), &["memory", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["total"], 3, "{listed}");
    assert_eq!(
        listed["memories"][0]["namespace"], "skill:travel",
        "most recent first: {listed}"
    );

    drop(client);
    host.shutdown().await;
    let host = start(home.path(), &model).await;
    let mut client = connect_client(home.path()).await;
    let (_, text) = ask(&mut client, "@Andy what is the wifi password?").await;
    assert!(text.contains("hunter2-purple"), "after a restart: {text}");

    // The owner forgets it; the agent no longer finds it.
    let out = nanoclaw(home.path(), &["memory", "forget", "1"]);
    assert!(out.status.success(), "{out:?}");
    let (_, text) = ask(&mut client, "@Andy what is the wifi password?").await;
    assert!(!text.contains("hunter2-purple"), "{text}");
    drop(client);
    host.shutdown().await;
}

async fn inject(host: &Host, chat: &str, id: &str, text: &str) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.inbound_sink()
        .send(ChannelEvent::Inbound(InboundEvent {
            channel: "test".into(),
            chat_id: chat.into(),
            chat_name: chat.into(),
            is_group: true,
            thread: None,
            platform_msg_id: id.into(),
            sender: "test:bob".into(),
            sender_name: Some("Bob".into()),
            text: text.into(),
            received_at: nanoclaw_host::now_ms(),
            ack: Some(tx),
            ..InboundEvent::default()
        }))
        .await
        .unwrap();
    assert_eq!(rx.await.unwrap(), RouteOutcome::Accepted);
}

/// The `n`th reply (1-based) in the chat.
async fn reply(host: &Host, chat_id: i64, n: usize) -> String {
    eventually(120, "the group's reply", || async {
        let all = host.store().outbound_for_chat(chat_id).await.unwrap();
        all.get(n - 1).map(|o| o.text.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_groups_agent_can_neither_find_nor_forget_a_memory_even_by_its_id() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start(home.path(), &model).await;
    let mut client = connect_client(home.path()).await;
    let (_, text) = ask(&mut client, "@Andy remember the safe code").await;
    assert!(text.contains("\"id\": 1"), "{text}");

    // Group B: its own chat on the test channel.
    let store = host.store().clone();
    let team = store
        .ensure_group(NewGroup {
            name: "team".into(),
            folder: "team".into(),
            trigger: Some("@Andy".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let chat = store
        .ensure_chat("test", "room-1", "room-1", true)
        .await
        .unwrap();
    store
        .wire(
            chat.id,
            team.id.clone(),
            nanoclaw_store::WiringOptions::new(true, SessionMode::Shared),
        )
        .await
        .unwrap();

    inject(&host, "room-1", "m1", "@Andy what is the safe code?").await;
    let text = reply(&host, chat.id, 1).await;
    assert!(text.contains("Tool said: []"), "{text}");
    assert!(!text.contains("4711"), "{text}");

    // Naming A's memory id: refused as unknown, and A's memory is still there.
    inject(&host, "room-1", "m2", "@Andy forget memory one").await;
    let text = reply(&host, chat.id, 2).await;
    assert!(text.contains("no memory 1 in this group"), "{text}");
    let (main, _) = main_and_terminal(&store).await;
    let kept = store.memory(main.id.clone(), 1).await.unwrap();
    assert_eq!(kept.unwrap().text, "The safe code is 4711.");
    assert_eq!(store.count_memories(team.id.clone()).await.unwrap(), 0);
    // The owner's CLI, asked for the team group, sees none of main's either.
    let out = nanoclaw(
        home.path(),
        &["memory", "search", "safe", "--group", "team", "--json"],
    );
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["results"], json!([]), "{found}");

    // Group A still finds it.
    let (_, text) = ask(&mut client, "@Andy what is the safe code?").await;
    assert!(text.contains("4711"), "{text}");
    drop(client);
    host.shutdown().await;
}

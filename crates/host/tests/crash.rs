//! The host is killed mid-turn; on restart the message is answered, and delivered once.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use nanoclaw_host::channel::terminal::ServerLine;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_killed_mid_turn_answers_after_restart_exactly_once() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("finished: {{last_tool_result}}"),
        )
        .rule(
            Matcher::LastUserTextContains("slow job".into()),
            Reply::text("working on it")
                .with_tool_call("bash", json!({"command": "sleep 2; echo slow-job-done"})),
        )
        .rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"));
    let model = ScriptedModel::start(scenario).await.unwrap();

    let mut daemon = spawn_daemon(home.path(), &model);
    let mut client = connect_client(home.path()).await;
    client
        .send_with_id("slow-1", "please run the slow job")
        .await
        .unwrap();
    // Wait until the sandboxed tool is running, then kill the host like a crash would.
    loop {
        match client.next().await.unwrap() {
            Some(ServerLine::Tool { tool, .. }) if tool == "bash" => break,
            Some(_) => {}
            None => panic!("host closed the connection before the tool ran"),
        }
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    drop(client);

    let mut daemon = spawn_daemon(home.path(), &model);
    let mut client = connect_client(home.path()).await;
    let (kind, text) = wait_reply(&mut client, "slow-1").await;
    assert_eq!(kind, "reply");
    assert!(text.contains("slow-job-done"), "{text}");

    // Replies arrive in order: once the next reply is here, a duplicate of the first
    // would have arrived already.
    let id = client.send("after the crash").await.unwrap();
    loop {
        match client.next().await.unwrap().expect("connection open") {
            ServerLine::Message { reply_to, text, .. } if reply_to.as_deref() == Some("slow-1") => {
                panic!("the reply was delivered twice: {text}");
            }
            ServerLine::Message { reply_to, text, .. }
                if reply_to.as_deref() == Some(id.as_str()) =>
            {
                assert!(text.contains("after the crash"));
                break;
            }
            _ => {}
        }
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // The database agrees: one reply to the slow job, delivered.
    let store = nanoclaw_store::Store::open(&home.path().join("nanoclaw.db")).unwrap();
    let chat = store
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    let out = store.outbound_for_chat(chat.id).await.unwrap();
    let finished: Vec<_> = out
        .iter()
        .filter(|o| o.text.contains("slow-job-done"))
        .collect();
    assert_eq!(finished.len(), 1, "{out:?}");
    assert_eq!(finished[0].state.as_str(), "delivered");
}

//! The host is killed mid-turn; on restart the message is answered, and delivered once.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::common::*;
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

/// The host died with message A in hand as often as `max_tries` allows; B arrived meanwhile.
/// After the next restart A alone is given up (and the chat told); B is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_retry_cap_does_not_take_its_batch_down_with_it() {
    use nanoclaw_store::{InboundStatus, NewInbound, Store, rusqlite};
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let mut config = config_for_tests();
    config.agents.max_tries = 2;

    // A first run makes the main group, the terminal chat and its session.
    let host = start_host(home.path(), &model, config.clone()).await;
    let mut client = connect_client(home.path()).await;
    let (kind, _) = ask(&mut client, "first").await;
    assert_eq!(kind, "reply");
    drop(client);
    host.shutdown().await;

    let db = home.path().join("nanoclaw.db");
    let (a, b, chat_id) = {
        let store = Store::open(&db).unwrap();
        let (session_id, chat_id): (String, i64) = store
            .call(|c| {
                Ok(
                    c.query_row("SELECT session_id, chat_id FROM inbound LIMIT 1", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?,
                )
            })
            .await
            .unwrap();
        let new = |id: &str, text: &str, at: i64| NewInbound {
            session_id: session_id.clone(),
            chat_id,
            platform_msg_id: id.into(),
            sender: "owner".into(),
            sender_name: None,
            text: text.into(),
            thread: None,
            received_at: at,
        };
        let now = nanoclaw_store::now_ms();
        let a = store
            .insert_inbound(new("a", "poison", now))
            .await
            .unwrap()
            .id;
        let b = store
            .insert_inbound(new("b", "innocent bystander", now + 1))
            .await
            .unwrap()
            .id;
        // A was being processed when the host died, for the `max_tries`-th time.
        store
            .call(move |c| {
                c.execute(
                    "UPDATE inbound SET status = 'processing', tries = 2 WHERE id = ?1",
                    rusqlite::params![a],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        (a, b, chat_id)
    };

    let host = nanoclaw_test_support::eventually(30, "the host to start again", || {
        let config = config.clone();
        let home = home.path().to_path_buf();
        let model = &model;
        async move {
            nanoclaw_host::Host::start(host_options(&home, model, config, None))
                .await
                .ok()
        }
    })
    .await;
    let store = host.store().clone();
    let b_row = nanoclaw_test_support::eventually(120, "B to be finished", || {
        let store = store.clone();
        async move {
            let row = store.inbound(b).await.unwrap().unwrap();
            matches!(row.status, InboundStatus::Done | InboundStatus::Failed).then_some(row)
        }
    })
    .await;
    assert_eq!(b_row.status, InboundStatus::Done, "{b_row:?}");
    assert_eq!(b_row.tries, 1, "B was not charged for A's batch: {b_row:?}");
    assert_eq!(
        store.inbound(a).await.unwrap().unwrap().status,
        InboundStatus::Failed
    );
    let out = store.outbound_for_chat(chat_id).await.unwrap();
    let to = |id: i64| out.iter().filter(move |o| o.in_reply_to == Some(id));
    assert!(
        to(b).any(|o| o.kind.as_str() == "reply" && o.text.contains("innocent bystander")),
        "{out:?}"
    );
    let notices: Vec<_> = to(a).filter(|o| o.kind.as_str() == "error").collect();
    assert_eq!(notices.len(), 1, "{out:?}");
    assert!(notices[0].text.contains("interrupted attempts"), "{out:?}");
    host.shutdown().await;
}

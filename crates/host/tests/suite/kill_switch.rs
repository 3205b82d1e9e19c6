//! The owner's kill switch end to end (real host, sandbox, agent and scripted model): `/stop`
//! kills a turn in the middle of a slow tool (no further tool runs, no reply, never answered
//! again), `/pause` holds messages and scheduled runs across a restart until `/resume`, and
//! the same words from a chat that is not the owner's stop nothing.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::common::*;
use chrono::{TimeZone, Utc};
use nanoclaw_host::Host;
use nanoclaw_host::channel::{ChannelEvent, InboundEvent, RouteOutcome};
use nanoclaw_host::clock::ManualClock;
use nanoclaw_host::config::Paths;
use nanoclaw_store::{InboundStatus, RunStatus, Store};
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};
use serde_json::json;

/// "slow …" runs a tool that marks its start, sleeps, then marks its end; a tool result is
/// reported; anything else is echoed.
fn scenario() -> Scenario {
    Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("tool finished: {{last_tool_result}}"),
        )
        .rule(
            Matcher::LastUserTextContains("slow".into()),
            Reply::text("Working on it.").with_tool_call(
                "bash",
                json!({"command": "touch /workspace/group/started && sleep 4 && touch /workspace/group/finished && echo done"}),
            ),
        )
        .rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"))
}

async fn texts(store: &Store, chat_id: i64) -> Vec<String> {
    store
        .outbound_for_chat(chat_id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.text)
        .collect()
}

/// Waits until the slow tool started in `folder`'s workspace.
async fn tool_started(home: &Path, folder: &str) {
    let marker = Paths::new(home).group_dir(folder).join("started");
    eventually(120, "the slow tool to start", || {
        let marker = marker.clone();
        async move { marker.exists().then_some(()) }
    })
    .await;
}

/// The ADMIN audit rows about the kill switch: (path, decision, reason).
async fn kill_switch_audit(store: &Store) -> Vec<(String, String, String)> {
    store
        .audit_rows(0, Some("main".into()), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == "ADMIN" && r.path.starts_with("/host/"))
        .map(|r| (r.path, r.decision, r.reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_turn_mid_tool_and_its_message_is_never_answered_again() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let store = host.store().clone();
    let (_, chat) = main_and_terminal(&store).await;

    // Answered as a reply to the command, as `nanoclaw chat -m /stop` waits for.
    let (kind, answer) = ask(&mut client, "/stop").await;
    assert_eq!(
        (kind.as_str(), answer.as_str()),
        ("reply", "Nothing was running.")
    );

    let slow = client.send("a slow job please").await.unwrap();
    tool_started(home.path(), "main").await;
    let answer = owner_command(&mut client, &store, chat.id, "/stop").await;
    assert!(
        answer.starts_with("Stopped 1 running turn: main (terminal:local)."),
        "{answer}"
    );
    assert!(answer.contains("will not be answered"), "{answer}");
    // The sandbox is gone at once: the tool's sleep never ends in a `finished` mark.
    eventually(10, "the agent to be stopped", || async {
        (host.live_agents() == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let workspace = Paths::new(home.path()).group_dir("main");
    assert!(
        !workspace.join("finished").exists(),
        "the tool ran on after /stop"
    );
    assert_eq!(
        model.requests().len(),
        1,
        "the model was asked again after /stop"
    );
    let said = texts(&store, chat.id).await;
    assert!(
        !said.iter().any(|t| t.contains("tool finished")),
        "a reply came: {said:?}"
    );
    let messages = inbound_rows(&store).await;
    let stopped = messages
        .iter()
        .find(|m| m.platform_msg_id == slow)
        .expect("the stopped message is stored");
    assert_eq!(stopped.status, InboundStatus::Done);
    assert!(
        stopped
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("stopped by the owner (/stop from chat terminal:local)")),
        "{stopped:?}"
    );

    // After a restart the stopped message is not answered again; new ones are.
    drop(client);
    host.shutdown().await;
    drop(store);
    let host = eventually(30, "the host to start again", || async {
        nanoclaw_host::Host::start(host_options(home.path(), &model, config_for_tests(), None))
            .await
            .ok()
    })
    .await;
    let mut client = connect_client(home.path()).await;
    let (_, text) = ask(&mut client, "hello again").await;
    assert!(
        text.starts_with("echo:") && text.contains("hello again"),
        "{text}"
    );
    let store = host.store().clone();
    let said = texts(&store, chat.id).await;
    assert!(
        !said
            .iter()
            .any(|t| t.contains("tool finished") || t.contains("Working on it")),
        "the stopped message was answered after the restart: {said:?}"
    );
    assert!(!workspace.join("finished").exists());
    let audit = kill_switch_audit(&store).await;
    assert!(
        audit.iter().any(|(p, d, r)| p == "/host/stop"
            && d == "allow"
            && r.contains("by chat terminal:local")
            && r.contains("Stopped 1 running turn")),
        "{audit:?}"
    );
    host.shutdown().await;
}

/// Every inbound row of every session.
async fn inbound_rows(store: &Store) -> Vec<nanoclaw_store::Inbound> {
    let mut out = Vec::new();
    for group in store.list_groups().await.unwrap() {
        for session in store.sessions_for_group(group.id.as_str()).await.unwrap() {
            out.extend(store.inbound_for_session(session.id).await.unwrap());
        }
    }
    out
}

/// A host on `home` whose scheduler reads `clock`.
async fn start_with_clock(home: &Path, model: &ScriptedModel, clock: &Arc<ManualClock>) -> Host {
    let clock = Arc::clone(clock) as Arc<dyn nanoclaw_host::clock::Clock>;
    // A host shut down just before may still hold the data directory's lock for a moment.
    eventually(30, "the host to start", || async {
        Host::start(host_options(
            home,
            model,
            config_for_tests(),
            Some(clock.clone()),
        ))
        .await
        .ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_messages_and_due_tasks_across_a_restart_and_resume_runs_both() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).unwrap(),
    ));
    let host = start_with_clock(home.path(), &model, &clock).await;
    let mut client = connect_client(home.path()).await;
    let store = host.store().clone();
    let (main, chat) = main_and_terminal(&store).await;
    let task = host
        .tasks()
        .create(
            &main,
            chat.id,
            "Report the weather.".into(),
            "every 5m",
            None,
            false,
            "test".into(),
        )
        .await
        .unwrap();

    let answer = owner_command(&mut client, &store, chat.id, "/pause").await;
    assert!(answer.starts_with("Paused: no agent starts"), "{answer}");
    assert!(host.is_paused());
    let waiting = client.send("hello while paused").await.unwrap();
    clock.advance(Duration::from_secs(5 * 60));
    // Nothing runs: not the message, not the due task.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(model.requests().is_empty(), "{:?}", model.requests());
    assert_eq!(host.live_agents(), 0);
    assert!(
        store
            .task_runs(task.id.clone(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = owner_command(&mut client, &store, chat.id, "/pause").await;
    assert!(again.starts_with("Already paused"), "{again}");

    // The pause survives a restart.
    drop(client);
    host.shutdown().await;
    drop(store);
    let host = start_with_clock(home.path(), &model, &clock).await;
    assert!(host.is_paused(), "the pause was forgotten by the restart");
    // `nanoclaw status` says so too (from the database).
    let mut status = nanoclaw_command(home.path(), &model, Some(TEST_KEY), &["status", "--json"]);
    let out = tokio::task::spawn_blocking(move || status.output().unwrap())
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["paused"]["by"]
            .as_str()
            .is_some_and(|by| by.contains("terminal")),
        "{report}"
    );
    let mut client = connect_client(home.path()).await;
    let store = host.store().clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(model.requests().is_empty(), "{:?}", model.requests());
    assert!(
        store
            .task_runs(task.id.clone(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Resumed: the waiting message is answered and the due task runs, once.
    let answer = owner_command(&mut client, &store, chat.id, "/resume").await;
    assert!(answer.starts_with("Resumed (paused since"), "{answer}");
    assert!(!host.is_paused());
    let runs = eventually(120, "the task's run", || {
        let store = store.clone();
        let task = task.id.clone();
        async move {
            let runs = store.task_runs(task, 10).await.ok()?;
            (runs.len() == 1 && runs[0].status == RunStatus::Ok).then_some(runs)
        }
    })
    .await;
    assert_eq!(runs.len(), 1);
    eventually(120, "the waiting message's answer", || {
        let store = store.clone();
        async move {
            texts(&store, chat.id)
                .await
                .iter()
                .any(|t| t.starts_with("echo:") && t.contains("hello while paused"))
                .then_some(())
        }
    })
    .await;
    let rows = inbound_rows(&store).await;
    assert!(
        rows.iter()
            .any(|m| m.platform_msg_id == waiting && m.status == InboundStatus::Done)
    );
    let audit = kill_switch_audit(&store).await;
    for path in ["/host/pause", "/host/resume"] {
        assert!(
            audit.iter().any(|(p, d, _)| p == path && d == "allow"),
            "{path}: {audit:?}"
        );
    }
    host.shutdown().await;
}

/// A message in chat `chat` of the `test` channel.
fn team_event(id: &str, text: &str) -> InboundEvent {
    InboundEvent {
        channel: "test".into(),
        chat_id: "team-room".into(),
        chat_name: "Team room".into(),
        is_group: true,
        platform_msg_id: id.into(),
        sender: "sam".into(),
        sender_name: Some("Sam".into()),
        text: text.into(),
        received_at: nanoclaw_host::now_ms(),
        ..InboundEvent::default()
    }
}

async fn send(host: &Host, mut event: InboundEvent) -> RouteOutcome {
    let (tx, rx) = tokio::sync::oneshot::channel();
    event.ack = Some(tx);
    host.inbound_sink()
        .send(ChannelEvent::Inbound(event))
        .await
        .unwrap();
    rx.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_from_a_chat_that_is_not_the_owners_stops_nothing_and_stop_here_stops_only_its_chat() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let store = host.store().clone();
    let (_, owner) = main_and_terminal(&store).await;
    // A team room where every message counts (no trigger needed).
    let room = wire_group(&host, "team", "team-room", false).await;

    assert_eq!(
        send(&host, team_event("t1", "slow team job")).await,
        RouteOutcome::Accepted
    );
    tool_started(home.path(), "team").await;
    // Sam's /stop is an ordinary message for the team's agent: refused as a command, audited.
    assert_eq!(
        send(&host, team_event("t2", "/stop")).await,
        RouteOutcome::Accepted
    );
    let audit = kill_switch_audit(&store).await;
    assert!(
        audit.iter().any(|(p, d, r)| p == "/host/stop"
            && d == "deny"
            && r.contains("chat test:team-room, which is not one of the owner's main chats")),
        "{audit:?}"
    );

    // The owner's Ctrl-C path: `/stop here` stops the owner's chat's turn only.
    client.send("slow owner job").await.unwrap();
    tool_started(home.path(), "main").await;
    let answer = owner_command(&mut client, &store, owner.id, "/stop here").await;
    assert!(
        answer.starts_with("Stopped 1 running turn: main (terminal:local)."),
        "{answer}"
    );

    // The team's turn was never stopped: its tool ran to the end and both messages got answers.
    eventually(120, "the team's answers", || {
        let store = store.clone();
        async move {
            let said = texts(&store, room).await;
            (said
                .iter()
                .any(|t| t.contains("tool finished") && t.contains("done"))
                && said
                    .iter()
                    .any(|t| t.starts_with("echo:") && t.contains("/stop")))
            .then_some(())
        }
    })
    .await;
    assert!(
        Paths::new(home.path())
            .group_dir("team")
            .join("finished")
            .exists()
    );
    assert!(
        !Paths::new(home.path())
            .group_dir("main")
            .join("finished")
            .exists()
    );
    let said = texts(&store, owner.id).await;
    assert!(
        !said.iter().any(|t| t.contains("tool finished")),
        "{said:?}"
    );
    host.shutdown().await;
}

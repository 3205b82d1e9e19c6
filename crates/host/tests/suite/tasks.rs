//! Scheduled tasks end to end: the real host, sandbox, agent and scripted model, with the scheduler
//! on a clock the test moves.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::common::*;
use chrono::{DateTime, TimeZone, Utc};
use nanoclaw_host::Host;
use nanoclaw_host::channel::terminal::{ServerLine, TerminalClient};
use nanoclaw_host::clock::ManualClock;
use nanoclaw_host::config::{Config, Paths};
use nanoclaw_store::{RunStatus, Store, TaskStatus};
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Fault, Matcher, Reply, Scenario, ScriptedModel};
use serde_json::json;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

async fn start(
    home: &Path,
    model: &ScriptedModel,
    config: Config,
    clock: &Arc<ManualClock>,
) -> Host {
    let clock = Arc::clone(clock) as Arc<dyn nanoclaw_host::clock::Clock>;
    // A host shut down just before may still hold the data directory's lock for a moment.
    nanoclaw_test_support::eventually(30, "the host to start", || async {
        Host::start(host_options(
            home,
            model,
            config.clone(),
            Some(clock.clone()),
        ))
        .await
        .ok()
    })
    .await
}

/// The next delivered message whose text contains `needle`.
async fn message_containing(client: &mut TerminalClient, needle: &str) -> String {
    let wait = async {
        loop {
            match client.next().await.unwrap() {
                Some(ServerLine::Message { text, .. }) if text.contains(needle) => return text,
                Some(_) => {}
                None => panic!("the host closed the connection"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .unwrap_or_else(|_| panic!("no message containing {needle:?} within 120 s"))
}

async fn wait_run(store: &Store, task_id: &str, runs: usize) -> Vec<nanoclaw_store::TaskRunRow> {
    nanoclaw_test_support::eventually(120, "the task's runs to finish", || async {
        let all = store.task_runs(task_id.to_owned(), 100).await.unwrap();
        (all.len() >= runs && all.iter().all(|r| r.status != RunStatus::Queued)).then_some(all)
    })
    .await
}

fn berlin_config() -> Config {
    let mut config = config_for_tests();
    config.timezone = "Europe/Berlin".into();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_weekday_at_9am_becomes_a_cron_task_in_the_users_zone_and_fires_on_time() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::All(vec![
                Matcher::LastIsToolResult,
                Matcher::Not(Box::new(Matcher::last_user_text_contains("scheduled-task"))),
            ]),
            Reply::text("Scheduled. {{last_tool_result}}"),
        )
        .rule(
            Matcher::last_user_text_contains("scheduled-task"),
            Reply::text("Pipeline overview: 3 open deals, 1 closing this week."),
        )
        .rule(
            Matcher::last_user_text_contains("every weekday morning at 9am"),
            Reply::tool_call(
                "schedule_task",
                json!({"prompt": "Send an overview of the sales pipeline.", "schedule": "0 9 * * 1-5"}),
            ),
        )
        .rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    // Thursday 2026-11-26, 08:00 in Berlin.
    let clock = Arc::new(ManualClock::new(utc(2026, 11, 26, 7, 0)));
    let host = start(home.path(), &model, berlin_config(), &clock).await;
    let mut client = connect_client(home.path()).await;

    let (kind, text) = ask(
        &mut client,
        "@Andy send an overview of the sales pipeline every weekday morning at 9am",
    )
    .await;
    assert_eq!(kind, "reply", "{text}");
    // The model was told the user's local time and zone, so "9am" is 9am in Berlin.
    let first = &model.requests()[0];
    let sent = first.body.to_string();
    assert!(sent.contains("Europe/Berlin"), "{sent}");
    assert!(
        sent.contains("Thursday, 2026-11-26 08:00 (UTC+01:00)"),
        "{sent}"
    );

    let store = host.store().clone();
    let tasks = store.list_tasks(None).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    assert!(task.schedule.contains("0 9 * * 1-5"), "{}", task.schedule);
    assert_eq!(task.timezone, "Europe/Berlin");
    assert_eq!(task.status, TaskStatus::Active);
    // 09:00 CET is 08:00 UTC.
    assert_eq!(
        task.next_run_at,
        Some(utc(2026, 11, 26, 8, 0).timestamp_millis())
    );
    assert!(text.contains(&task.id), "the reply names the task: {text}");

    // Nothing fires before its time.
    clock.set(utc(2026, 11, 26, 7, 59));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store
            .task_runs(task.id.clone(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // 09:00 Thursday: the run happens and its answer reaches the chat.
    clock.set(utc(2026, 11, 26, 8, 0));
    let overview = message_containing(&mut client, "Pipeline overview").await;
    assert!(overview.contains("3 open deals"));
    let runs = wait_run(&store, &task.id, 1).await;
    assert_eq!(runs[0].status, RunStatus::Ok);
    assert_eq!(
        runs[0].scheduled_for,
        utc(2026, 11, 26, 8, 0).timestamp_millis()
    );
    assert!(runs[0].input_tokens > 0, "tokens are recorded: {runs:?}");
    let task = store.task(task.id.clone()).await.unwrap().unwrap();
    assert_eq!(
        task.next_run_at,
        Some(utc(2026, 11, 27, 8, 0).timestamp_millis())
    );

    // Friday 09:00, then nothing until Monday 09:00.
    clock.set(utc(2026, 11, 27, 8, 0));
    message_containing(&mut client, "Pipeline overview").await;
    wait_run(&store, &task.id, 2).await;
    let task = store.task(task.id.clone()).await.unwrap().unwrap();
    assert_eq!(
        task.next_run_at,
        Some(utc(2026, 11, 30, 8, 0).timestamp_millis())
    );

    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precheck_that_says_no_skips_the_model_and_one_that_says_yes_wakes_it() {
    let home = TestHome::new();
    let scenario = Scenario::new().with_api_key(TEST_KEY).rule(
        Matcher::Always,
        Reply::text("woken with: {{last_user_text}}"),
    );
    let model = ScriptedModel::start(scenario).await.unwrap();
    let clock = Arc::new(ManualClock::new(utc(2026, 6, 1, 10, 0)));
    let host = start(home.path(), &model, berlin_config(), &clock).await;
    let mut client = connect_client(home.path()).await;
    let store = host.store().clone();
    let (main, chat) = main_and_terminal(&store).await;
    // The script wakes the agent only when the flag file exists in the group's workspace.
    let script = "if [ -f new-mail ]; then echo '{\"wakeAgent\": true, \"data\": {\"unread\": 2}}'; \
                  else echo '{\"wakeAgent\": false}'; fi";
    let task = host
        .tasks()
        .create(
            &main,
            chat.id,
            "Summarize new mail.".into(),
            "every 5m",
            Some(script.into()),
            false,
            "test".into(),
        )
        .await
        .unwrap();

    clock.advance(Duration::from_secs(5 * 60));
    let runs = wait_run(&store, &task.id, 1).await;
    assert_eq!(runs[0].status, RunStatus::Skipped);
    assert_eq!(runs[0].input_tokens, 0);
    assert!(
        model.requests().is_empty(),
        "the model was called: {:?}",
        model.requests()
    );

    let workspace = Paths::new(home.path()).group_dir("main");
    std::fs::write(workspace.join("new-mail"), "x").unwrap();
    clock.advance(Duration::from_secs(5 * 60));
    let text = message_containing(&mut client, "woken with").await;
    assert!(
        text.contains("unread"),
        "the script's data reached the model: {text}"
    );
    let runs = wait_run(&store, &task.id, 2).await;
    assert_eq!(runs[0].status, RunStatus::Ok);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_runs_are_never_silent_and_repeated_failures_mark_the_task_failing() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(Matcher::Always, Reply::text("fine: {{last_user_text}}"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let clock = Arc::new(ManualClock::new(utc(2026, 6, 1, 10, 0)));
    let host = start(home.path(), &model, berlin_config(), &clock).await;
    let mut client = connect_client(home.path()).await;
    let store = host.store().clone();
    let (main, chat) = main_and_terminal(&store).await;
    let task = host
        .tasks()
        .create(
            &main,
            chat.id,
            "Check the build.".into(),
            "every 1m",
            None,
            true,
            "test".into(),
        )
        .await
        .unwrap();

    for n in 1..=3 {
        model.push_fault(Fault::status(
            400,
            "invalid_request_error",
            "prompt is broken",
        ));
        clock.advance(Duration::from_secs(60));
        let text = message_containing(&mut client, "failed").await;
        assert!(text.contains(&task.id), "the alert names the task: {text}");
        let runs = wait_run(&store, &task.id, n).await;
        assert_eq!(runs[0].status, RunStatus::Failed, "{runs:?}");
        assert!(runs[0].error.is_some());
    }
    let failing = message_containing(&mut client, "marked failing").await;
    assert!(failing.contains("3 times"), "{failing}");
    let t = store.task(task.id.clone()).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Failing);
    assert!(t.next_run_at.is_some(), "a failing task keeps its schedule");

    // A good run clears it.
    clock.advance(Duration::from_secs(60));
    message_containing(&mut client, "fine:").await;
    wait_run(&store, &task.id, 4).await;
    let t = store.task(task.id.clone()).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Active);
    assert_eq!(t.consecutive_failures, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_missed_while_down_run_once_and_say_they_are_late() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(Matcher::Always, Reply::text("hourly report"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let clock = Arc::new(ManualClock::new(utc(2026, 6, 1, 10, 0)));
    let host = start(home.path(), &model, berlin_config(), &clock).await;
    let store = host.store().clone();
    let (main, chat) = main_and_terminal(&store).await;
    let task = host
        .tasks()
        .create(
            &main,
            chat.id,
            "Report.".into(),
            "every 1h",
            None,
            false,
            "test".into(),
        )
        .await
        .unwrap();
    host.shutdown().await;
    drop(store);

    // Down for three and a half hours: three runs were due.
    clock.set(utc(2026, 6, 1, 13, 30));
    let host = start(home.path(), &model, berlin_config(), &clock).await;
    let mut client = connect_client(home.path()).await;
    let late = message_containing(&mut client, "late").await;
    assert!(late.contains(&task.id), "{late}");
    message_containing(&mut client, "hourly report").await;
    let store = host.store().clone();
    let runs = wait_run(&store, &task.id, 1).await;
    assert_eq!(runs.len(), 1, "missed runs collapse into one: {runs:?}");
    assert_eq!(runs[0].status, RunStatus::Ok);
    assert_eq!(
        runs[0].scheduled_for,
        utc(2026, 6, 1, 11, 0).timestamp_millis()
    );
    assert!(runs[0].late_ms >= 2 * 3600 * 1000);
    // The schedule keeps its anchor: the next run is on the hour, not an hour after the late one.
    let t = store.task(task.id.clone()).await.unwrap().unwrap();
    assert_eq!(
        t.next_run_at,
        Some(utc(2026, 6, 1, 14, 0).timestamp_millis())
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_skip_policy_missed_runs_are_recorded_and_announced_but_not_run() {
    let home = TestHome::new();
    let model = ScriptedModel::start(
        Scenario::new()
            .with_api_key(TEST_KEY)
            .rule(Matcher::Always, Reply::text("should not run")),
    )
    .await
    .unwrap();
    let mut config = berlin_config();
    config.scheduler.missed_runs = "skip".into();
    let clock = Arc::new(ManualClock::new(utc(2026, 6, 1, 10, 0)));
    let host = start(home.path(), &model, config.clone(), &clock).await;
    let store = host.store().clone();
    let (main, chat) = main_and_terminal(&store).await;
    let task = host
        .tasks()
        .create(
            &main,
            chat.id,
            "Report.".into(),
            "0 14 * * *",
            None,
            false,
            "test".into(),
        )
        .await
        .unwrap();
    host.shutdown().await;
    drop(store);

    clock.set(utc(2026, 6, 1, 18, 0));
    let host = start(home.path(), &model, config, &clock).await;
    let mut client = connect_client(home.path()).await;
    let notice = message_containing(&mut client, "Skipped").await;
    // 14:00 in Berlin (CEST) is 12:00 UTC.
    assert!(notice.contains("2026-06-01 14:00:00 CEST"), "{notice}");
    let store = host.store().clone();
    let runs = wait_run(&store, &task.id, 1).await;
    assert_eq!(runs[0].status, RunStatus::Missed);
    assert!(model.requests().is_empty());
    let t = store.task(task.id.clone()).await.unwrap().unwrap();
    assert_eq!(
        t.next_run_at,
        Some(utc(2026, 6, 2, 12, 0).timestamp_millis())
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_manage_only_their_own_groups_tasks() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(utc(2026, 6, 1, 10, 0)));
    let host = start(home.path(), &model, berlin_config(), &clock).await;
    let store = host.store().clone();
    let family = store
        .ensure_group(nanoclaw_store::NewGroup {
            name: "Family".into(),
            folder: "family".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let family_chat = store
        .ensure_chat("telegram", "-100", "Family", true)
        .await
        .unwrap();
    store
        .wire(
            family_chat.id,
            family.id.clone(),
            nanoclaw_store::WiringOptions::new(true, nanoclaw_store::SessionMode::Shared),
        )
        .await
        .unwrap();
    let main = store.group_by_folder("main").await.unwrap().unwrap();
    let main_chat = store
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    let main_task = host
        .tasks()
        .create(
            &main,
            main_chat.id,
            "Owner's.".into(),
            "every 1h",
            None,
            false,
            "test".into(),
        )
        .await
        .unwrap();

    use nanoclaw_protocol::RequestAction as A;
    let tasks = host.tasks();
    let family_asks =
        |action| nanoclaw_host::tasks::handle_request(&store, tasks, &family, &family_chat, action);
    // The family group cannot see, pause or cancel the owner's task, nor tell it exists.
    let listed = family_asks(A::ListTasks).await.unwrap();
    assert_eq!(listed, json!([]));
    let err = family_asks(A::CancelTask {
        task_id: main_task.id.clone(),
    })
    .await
    .unwrap_err();
    assert!(err.contains("no task"), "{err}");
    let err = family_asks(A::ScheduleTask {
        prompt: "x".into(),
        schedule: "every 1h".into(),
        script: None,
        isolated: false,
        group: Some("main".into()),
    })
    .await
    .unwrap_err();
    assert!(err.contains("only the owner's main group"), "{err}");
    let err = family_asks(A::ScheduleTask {
        prompt: "Remind everyone".into(),
        schedule: "every 10 seconds".into(),
        script: None,
        isolated: false,
        group: None,
    })
    .await
    .unwrap_err();
    assert!(
        err.contains("minute"),
        "too-frequent intervals are refused with a reason: {err}"
    );
    let own = family_asks(A::ScheduleTask {
        prompt: "Remind everyone about dinner".into(),
        schedule: "0 18 * * *".into(),
        script: None,
        isolated: false,
        group: None,
    })
    .await
    .unwrap();
    assert_eq!(own["group"], "family");
    assert_eq!(own["timezone"], "Europe/Berlin");

    // The main group sees and manages both.
    let main_asks =
        |action| nanoclaw_host::tasks::handle_request(&store, tasks, &main, &main_chat, action);
    let all = main_asks(A::ListTasks).await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let family_task = own["task_id"].as_str().unwrap().to_owned();
    let paused = main_asks(A::PauseTask {
        task_id: family_task.clone(),
    })
    .await
    .unwrap();
    assert_eq!(paused["status"], "paused");
    let resumed = main_asks(A::ResumeTask {
        task_id: family_task.clone(),
    })
    .await
    .unwrap();
    assert_eq!(resumed["status"], "active");
    // 18:00 Berlin in June is 16:00 UTC.
    assert_eq!(resumed["next_run"], "2026-06-01T18:00:00+02:00");
    let updated = main_asks(A::UpdateTask {
        task_id: family_task.clone(),
        prompt: None,
        schedule: Some("30 17 * * *".into()),
        script: None,
    })
    .await
    .unwrap();
    assert_eq!(updated["next_run"], "2026-06-01T17:30:00+02:00");
    let cancelled = main_asks(A::CancelTask {
        task_id: family_task.clone(),
    })
    .await
    .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let err = main_asks(A::ResumeTask {
        task_id: family_task,
    })
    .await
    .unwrap_err();
    assert!(err.contains("cancelled"), "{err}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_during_a_run_runs_it_exactly_once_after_restart() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("nightly report: {{last_tool_result}}"),
        )
        .rule(
            Matcher::last_user_text_contains("scheduled-task"),
            Reply::text("collecting")
                .with_tool_call("bash", json!({"command": "sleep 2; echo backup-checked"})),
        )
        .rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let mut daemon = spawn_daemon(home.path(), &model);
    let mut client = connect_client(home.path()).await;

    // The owner's task, due in a moment (the daemon runs on the real clock).
    let store = Store::open(&home.path().join("nanoclaw.db")).unwrap();
    let (main, chat) = main_and_terminal(&store).await;
    let due = Utc::now() + chrono::Duration::milliseconds(500);
    let schedule = nanoclaw_schedule::Schedule::Once { at: due };
    let task = store
        .create_task(nanoclaw_store::NewTask {
            group_id: main.id.clone(),
            chat_id: chat.id,
            prompt: "Check last night's backup.".into(),
            script: None,
            schedule: serde_json::to_string(&schedule).unwrap(),
            timezone: "UTC".into(),
            isolated: false,
            next_run_at: Some(due.timestamp_millis()),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    client.wake().await.unwrap();

    // Kill the host while the run's tool is working, like a crash.
    loop {
        match client.next().await.unwrap() {
            Some(ServerLine::Tool { tool, .. }) if tool == "bash" => break,
            Some(_) => {}
            None => panic!("host closed the connection before the run's tool started"),
        }
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    drop(client);

    let mut daemon = spawn_daemon(home.path(), &model);
    let mut client = connect_client(home.path()).await;
    let report = message_containing(&mut client, "nightly report").await;
    assert!(report.contains("backup-checked"), "{report}");
    let runs = wait_run(&store, &task.id, 1).await;
    // Let a duplicate, if any, be delivered before counting.
    let (_, echo) = ask(&mut client, "ping after the run").await;
    assert!(echo.contains("ping after the run"));
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    assert_eq!(runs.len(), 1, "one run: {runs:?}");
    assert_eq!(runs[0].status, RunStatus::Ok);
    let out = store.outbound_for_chat(chat.id).await.unwrap();
    let reports: Vec<_> = out
        .iter()
        .filter(|o| o.text.contains("nightly report"))
        .collect();
    assert_eq!(reports.len(), 1, "delivered once: {out:?}");
    assert_eq!(reports[0].state.as_str(), "delivered");
    let t = store.task(task.id.clone()).await.unwrap().unwrap();
    assert_eq!(
        t.status,
        TaskStatus::Done,
        "a one-off is done after its run"
    );
    assert_eq!(t.next_run_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_in_another_chat_also_alerts_the_owners_main_chat() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(utc(2026, 6, 1, 10, 0)));
    let host = start(home.path(), &model, berlin_config(), &clock).await;
    let store = host.store().clone();
    let (_, main_chat) = main_and_terminal(&store).await;
    let family = store
        .ensure_group(nanoclaw_store::NewGroup {
            name: "Family".into(),
            folder: "family".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let family_chat = store
        .ensure_chat("telegram", "-100", "Family", true)
        .await
        .unwrap();
    store
        .wire(
            family_chat.id,
            family.id.clone(),
            nanoclaw_store::WiringOptions::new(true, nanoclaw_store::SessionMode::Shared),
        )
        .await
        .unwrap();
    let task = host
        .tasks()
        .create(
            &family,
            family_chat.id,
            "Plan dinner.".into(),
            "every 1h",
            None,
            false,
            "test".into(),
        )
        .await
        .unwrap();

    model.push_fault(Fault::status(
        400,
        "invalid_request_error",
        "prompt is broken",
    ));
    clock.advance(Duration::from_secs(3600));
    let runs = wait_run(&store, &task.id, 1).await;
    assert_eq!(runs[0].status, RunStatus::Failed);
    // The task's own chat hears of it (queued for Telegram), and so does the owner.
    let in_family = store.outbound_for_chat(family_chat.id).await.unwrap();
    assert!(
        in_family.iter().any(|o| o
            .text
            .contains(&format!("Scheduled task {} failed", task.id))),
        "{in_family:?}"
    );
    let to_owner = nanoclaw_test_support::eventually(30, "the owner's alert", || async {
        let out = store.outbound_for_chat(main_chat.id).await.unwrap();
        out.into_iter().find(|o| o.text.contains(&task.id))
    })
    .await;
    assert!(to_owner.text.contains("on telegram"), "{}", to_owner.text);
    assert!(
        to_owner.text.contains("prompt is broken"),
        "{}",
        to_owner.text
    );
    host.shutdown().await;
}

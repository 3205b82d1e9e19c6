//! Scheduled tasks in the store: exactly-once firing, run history, failing, turn isolation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nanoclaw_store::{
    FireTask, InboundStatus, NewGroup, NewInbound, NewTask, RunStatus, SessionMode, Store,
    TASK_FAILING_AFTER, TaskChanges, TaskStatus,
};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    group_id: String,
    chat_id: i64,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nanoclaw.db");
    fixture_at(dir, &path).await
}

async fn fixture_at(dir: tempfile::TempDir, path: &std::path::Path) -> Fixture {
    let store = Store::open(path).unwrap();
    let group = store
        .ensure_group(NewGroup {
            name: "Main".into(),
            folder: "main".into(),
            is_main: true,
            ..NewGroup::default()
        })
        .await
        .unwrap();
    let chat = store
        .ensure_chat("terminal", "local", "Terminal", false)
        .await
        .unwrap();
    store
        .wire(
            chat.id,
            &group.id,
            nanoclaw_store::WiringOptions::new(false, SessionMode::Shared),
        )
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        group_id: group.id,
        chat_id: chat.id,
    }
}

async fn task(f: &Fixture, next: i64) -> nanoclaw_store::Task {
    f.store
        .create_task(NewTask {
            group_id: f.group_id.clone(),
            chat_id: f.chat_id,
            prompt: "Report.".into(),
            script: None,
            schedule: r#"{"kind":"interval","every_secs":60,"anchor":"2026-01-01T00:00:00Z"}"#
                .into(),
            timezone: "UTC".into(),
            isolated: false,
            next_run_at: Some(next),
            created_by: "test".into(),
        })
        .await
        .unwrap()
}

fn fire(task_id: &str, scheduled_for: i64, next: Option<i64>) -> FireTask {
    FireTask {
        task_id: task_id.into(),
        scheduled_for,
        next_run_at: next,
        manual: false,
        now_ms: scheduled_for + 5,
        due_ms: scheduled_for + 5,
        text: "Report.".into(),
        notice: None,
    }
}

#[tokio::test]
async fn a_due_run_fires_once_even_when_two_firings_race() {
    let f = fixture().await;
    let t = task(&f, 60_000).await;
    let (a, b) = tokio::join!(
        f.store.fire_task(fire(&t.id, 60_000, Some(120_000))),
        f.store.fire_task(fire(&t.id, 60_000, Some(120_000))),
    );
    let fired: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(fired.len(), 1, "exactly one firing wins: {fired:?}");
    let runs = f.store.task_runs(t.id.clone(), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Queued);
    assert_eq!(runs[0].inbound_id, Some(fired[0].inbound_id));
    let inbound = f.store.inbound(fired[0].inbound_id).await.unwrap().unwrap();
    assert_eq!(inbound.task_run_id, Some(fired[0].run_id));
    assert_eq!(inbound.text, "Report.");
    let t = f.store.task(t.id.clone()).await.unwrap().unwrap();
    assert_eq!(t.next_run_at, Some(120_000));
    // The same time again (a restart that read the old next_run_at) fires nothing.
    assert!(
        f.store
            .fire_task(fire(&t.id, 60_000, Some(120_000)))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_task_changed_paused_or_cancelled_meanwhile_does_not_fire() {
    let f = fixture().await;
    let t = task(&f, 60_000).await;
    f.store
        .update_task(
            t.id.clone(),
            TaskChanges {
                schedule: Some((t.schedule.clone(), Some(90_000))),
                ..TaskChanges::default()
            },
        )
        .await
        .unwrap();
    assert!(
        f.store
            .fire_task(fire(&t.id, 60_000, Some(120_000)))
            .await
            .unwrap()
            .is_none()
    );

    f.store
        .set_task_status(t.id.clone(), TaskStatus::Paused, None)
        .await
        .unwrap();
    assert!(
        f.store
            .fire_task(fire(&t.id, 90_000, Some(150_000)))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        f.store.next_task_due().await.unwrap(),
        None,
        "a paused task is never due"
    );

    f.store
        .set_task_status(t.id.clone(), TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let err = f
        .store
        .set_task_status(t.id.clone(), TaskStatus::Active, Some(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(
        f.store
            .task_runs(t.id.clone(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_one_off_is_done_after_its_run_and_next_due_skips_it() {
    let f = fixture().await;
    let once = task(&f, 10_000).await;
    let later = task(&f, 50_000).await;
    assert_eq!(f.store.next_task_due().await.unwrap(), Some(10_000));
    assert_eq!(f.store.due_tasks(10_000, 10).await.unwrap().len(), 1);
    f.store
        .fire_task(fire(&once.id, 10_000, None))
        .await
        .unwrap()
        .unwrap();
    let once = f.store.task(once.id.clone()).await.unwrap().unwrap();
    assert_eq!(once.status, TaskStatus::Done);
    assert_eq!(f.store.next_task_due().await.unwrap(), Some(50_000));
    assert_eq!(later.status, TaskStatus::Active);
}

#[tokio::test]
async fn a_task_run_is_a_turn_of_its_own() {
    let f = fixture().await;
    let session = f
        .store
        .resolve_session(&f.group_id, f.chat_id, None, SessionMode::Shared, 1)
        .await
        .unwrap();
    let chat_msg = |id: &str, at: i64| NewInbound {
        session_id: session.id.clone(),
        chat_id: f.chat_id,
        platform_msg_id: id.into(),
        sender: "u".into(),
        sender_name: None,
        text: id.into(),
        thread: None,
        received_at: at,
    };
    f.store.insert_inbound(chat_msg("m1", 100)).await.unwrap();
    f.store.insert_inbound(chat_msg("m2", 101)).await.unwrap();
    let t = task(&f, 60_000).await;
    let mut run = fire(&t.id, 60_000, Some(120_000));
    run.due_ms = 102;
    f.store.fire_task(run).await.unwrap().unwrap();
    f.store.insert_inbound(chat_msg("m3", 103)).await.unwrap();

    let texts = |b: Vec<nanoclaw_store::Inbound>| b.into_iter().map(|m| m.text).collect::<Vec<_>>();
    let b1 = f
        .store
        .claim_pending(session.id.clone(), 1_000, 10)
        .await
        .unwrap();
    assert_eq!(texts(b1.clone()), ["m1", "m2"]);
    f.store
        .complete_turn(b1.iter().map(|m| m.id).collect(), vec![], 1_000)
        .await
        .unwrap();
    let b2 = f
        .store
        .claim_pending(session.id.clone(), 1_000, 10)
        .await
        .unwrap();
    assert_eq!(texts(b2.clone()), ["Report."]);
    assert!(b2[0].task_run_id.is_some());
    f.store
        .complete_task_turn(vec![b2[0].id], vec![], RunStatus::Skipped, (0, 0), 1_000)
        .await
        .unwrap();
    let b3 = f
        .store
        .claim_pending(session.id.clone(), 1_000, 10)
        .await
        .unwrap();
    assert_eq!(texts(b3), ["m3"]);
    let runs = f.store.task_runs(t.id.clone(), 10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Skipped);
    assert_eq!(
        f.store.inbound(b2[0].id).await.unwrap().unwrap().status,
        InboundStatus::Done
    );
}

#[tokio::test]
async fn repeated_failures_mark_a_task_failing_and_a_success_clears_it() {
    let f = fixture().await;
    let t = task(&f, 60_000).await;
    let mut at = 60_000;
    for n in 1..=TASK_FAILING_AFTER {
        let fired = f
            .store
            .fire_task(fire(&t.id, at, Some(at + 60_000)))
            .await
            .unwrap()
            .unwrap();
        let claimed = f
            .store
            .claim_pending(fired.session_id.clone(), at + 10, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let out = f
            .store
            .retry_or_fail(vec![fired.inbound_id], "model said no", 1, 0, at + 10, None)
            .await
            .unwrap();
        assert_eq!(out.failed_runs.len(), 1);
        assert_eq!(out.failed_runs[0].consecutive_failures, n);
        assert_eq!(out.failed_runs[0].now_failing, n == TASK_FAILING_AFTER);
        at += 60_000;
    }
    let failing = f.store.task(t.id.clone()).await.unwrap().unwrap();
    assert_eq!(failing.status, TaskStatus::Failing);
    assert_eq!(failing.next_run_at, Some(at), "still scheduled");
    let runs = f.store.task_runs(t.id.clone(), 10).await.unwrap();
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Failed && r.error.as_deref() == Some("model said no"))
    );

    let fired = f
        .store
        .fire_task(fire(&t.id, at, Some(at + 60_000)))
        .await
        .unwrap()
        .unwrap();
    f.store
        .complete_task_turn(
            vec![fired.inbound_id],
            vec![],
            RunStatus::Ok,
            (120, 30),
            at + 10,
        )
        .await
        .unwrap();
    let healthy = f.store.task(t.id.clone()).await.unwrap().unwrap();
    assert_eq!(healthy.status, TaskStatus::Active);
    assert_eq!(healthy.consecutive_failures, 0);
    let last = &f.store.task_runs(t.id.clone(), 1).await.unwrap()[0];
    assert_eq!(
        (last.status, last.input_tokens, last.output_tokens),
        (RunStatus::Ok, 120, 30)
    );
}

#[tokio::test]
async fn a_skipped_missed_run_is_recorded_announced_and_moves_the_task_on() {
    let f = fixture().await;
    let t = task(&f, 60_000).await;
    assert!(
        f.store
            .skip_missed_run(
                t.id.clone(),
                60_000,
                Some(600_000),
                500_000,
                "missed it".into()
            )
            .await
            .unwrap()
    );
    // Twice is a no-op.
    assert!(
        !f.store
            .skip_missed_run(
                t.id.clone(),
                60_000,
                Some(600_000),
                500_000,
                "missed it".into()
            )
            .await
            .unwrap()
    );
    let runs = f.store.task_runs(t.id.clone(), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Missed);
    assert_eq!(runs[0].late_ms, 440_000);
    let out = f.store.outbound_for_chat(f.chat_id).await.unwrap();
    assert_eq!(out.iter().filter(|o| o.text == "missed it").count(), 1);
    let t = f.store.task(t.id.clone()).await.unwrap().unwrap();
    assert_eq!(t.next_run_at, Some(600_000));
}

#[tokio::test]
async fn tasks_survive_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nanoclaw.db");
    let f = fixture_at(tempfile::tempdir().unwrap(), &path).await;
    let id = task(&f, 60_000).await.id;
    drop(f);
    let store = Store::open(&path).unwrap();
    let t = store.task(id).await.unwrap().unwrap();
    assert_eq!(t.next_run_at, Some(60_000));
    assert_eq!(t.status, TaskStatus::Active);
}

#[tokio::test]
async fn a_task_of_an_agent_shared_chat_runs_in_the_groups_conversation() {
    let f = fixture().await;
    f.store
        .wire(
            f.chat_id,
            &f.group_id,
            nanoclaw_store::WiringOptions::new(false, SessionMode::AgentShared),
        )
        .await
        .unwrap();
    let elsewhere = f
        .store
        .ensure_chat("slack", "C9", "Work", true)
        .await
        .unwrap();
    let (group_session, _) = f
        .store
        .insert_inbound_for_group(
            &f.group_id,
            SessionMode::AgentShared,
            NewInbound {
                session_id: String::new(),
                chat_id: elsewhere.id,
                platform_msg_id: "x".into(),
                sender: "u".into(),
                sender_name: None,
                text: "hi".into(),
                thread: None,
                received_at: 1,
            },
        )
        .await
        .unwrap();
    let t = task(&f, 60_000).await;
    let fired = f
        .store
        .fire_task(fire(&t.id, 60_000, Some(120_000)))
        .await
        .unwrap()
        .unwrap();
    let run = f.store.inbound(fired.inbound_id).await.unwrap().unwrap();
    assert_eq!(run.session_id, group_session.id);
    assert_eq!(
        run.chat_id, f.chat_id,
        "the run still answers in the task's chat"
    );
}

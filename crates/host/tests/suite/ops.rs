//! The operator's surface as a user runs it against a real `nanoclaw run`: `status`, `logs`,
//! `stop`.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use super::common::*;
use nanoclaw_store::Store;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};
use nanoclaw_vault::{MasterKey, Vault};

/// `nanoclaw ARGS` on `home` (off the async runtime: it blocks until the command ends).
async fn run(home: &std::path::Path, model: &ScriptedModel, args: &[&str]) -> Output {
    let mut cmd = nanoclaw_command(home, model, Some(TEST_KEY), args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A task due in an hour, a task run that failed an hour ago (and one two days ago, which
/// no longer counts), and a grant waiting for the owner's approval.
async fn seed(store: &Store) -> String {
    let (main, chat) = main_and_terminal(store).await;
    let now = nanoclaw_host::now_ms();
    let schedule = nanoclaw_schedule::Schedule::cron("0 9 * * *").unwrap();
    let task = store
        .create_task(nanoclaw_store::NewTask {
            group_id: main.id.clone(),
            chat_id: chat.id,
            prompt: "Water the plants.".into(),
            script: None,
            schedule: serde_json::to_string(&schedule).unwrap(),
            timezone: "UTC".into(),
            isolated: false,
            next_run_at: Some(now + 3_600_000),
            created_by: "agent:main".into(),
        })
        .await
        .unwrap();
    let id = task.id.clone();
    store
        .call(move |conn| {
            for (ago, status) in [(3_600_000, "failed"), (2 * 86_400_000, "failed")] {
                conn.execute(
                    "INSERT INTO task_runs (task_id, scheduled_for, fired_at, finished_at, status, error)
                     VALUES (?1, ?2, ?2, ?2, ?3, 'boom')",
                    nanoclaw_store::rusqlite::params![id, now - ago, status],
                )
                .unwrap();
            }
            Ok(())
        })
        .await
        .unwrap();
    let vault = Vault::open(store.clone(), MasterKey::from_bytes([7u8; 32]))
        .await
        .unwrap();
    github_grant_waiting(&vault, "main", "ghp_STATUStest0123456789").await;
    task.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_running_host_its_agents_tasks_failures_and_approvals() {
    let home = TestHome::new();
    std::fs::write(home.path().join("config.toml"), NATIVE_CONFIG_TOML).unwrap();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let mut daemon = spawn_daemon(home.path(), &model);
    let mut client = connect_client(home.path()).await;
    let store = nanoclaw_host::open_store(&home.path().join("nanoclaw.db"), false).unwrap();
    let task_id = seed(&store).await;

    let out = run(home.path(), &model, &["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["host_running"], true);
    assert!(s["paused"].is_null(), "{s}");
    assert_eq!(s["host"]["pid"], daemon.id());
    assert_eq!(s["host"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["host"]["runtime"], "native");
    let started = s["host"]["started_at"].as_str().unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(started).unwrap();
    let age = chrono::Utc::now().signed_duration_since(started);
    assert!(
        age.num_seconds() >= 0 && age.num_seconds() < 600,
        "{started}"
    );
    assert_eq!(s["agents"]["live"], 0, "no message yet, no agent: {s}");
    assert_eq!(s["agents"]["max"], 4);
    assert_eq!(s["channels"][0]["name"], "terminal");
    assert_eq!(s["queue"]["waiting"], 0);
    assert_eq!(s["tasks_due_next"][0]["task_id"], task_id.as_str());
    assert_eq!(s["tasks_due_next"][0]["group"], "main");
    assert_eq!(
        s["failures_last_24h"]["task_runs"], 1,
        "the run two days ago is not counted: {s}"
    );
    assert_eq!(s["failures_last_24h"]["total"], 1);
    assert_eq!(s["approvals_waiting"], 1);

    // A message starts an agent, which stays warm after its reply: the host says so.
    let (kind, _) = ask(&mut client, "hello").await;
    assert_eq!(kind, "reply");
    let out = run(home.path(), &model, &["status", "--json"]).await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["agents"]["live"], 1, "{s}");

    // The same for people.
    let out = run(home.path(), &model, &["status"]).await;
    let shown = text(&out);
    assert!(
        shown.contains(&format!("host: running (pid {})", daemon.id())),
        "{shown}"
    );
    assert!(shown.contains("runtime: native"), "{shown}");
    assert!(shown.contains("agents: 1 live of 4"), "{shown}");
    assert!(shown.contains("vault approvals waiting: 1"), "{shown}");
    assert!(shown.contains("failures in the last 24 h: 1"), "{shown}");
    assert!(shown.contains(&task_id), "{shown}");

    // `nanoclaw stop` shuts it down cleanly (exit status 0, as on SIGTERM) and waits for it.
    drop(client);
    let out = run(home.path(), &model, &["stop"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("stopped the host (pid {})", daemon.id())),
        "{}",
        text(&out)
    );
    let exited = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    assert!(exited.success(), "a clean shutdown: {exited}");
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    assert!(log.contains("nanoclaw stop"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
    // Nothing left to stop: said so, exit 3.
    let out = run(home.path(), &model, &["stop"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("no nanoclaw host is running"),
        "{}",
        text(&out)
    );
    // No host: exit 3, and what the database knows is still shown.
    let out = run(home.path(), &model, &["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["host_running"], false);
    assert!(s["host"].is_null());
    assert_eq!(s["tasks_due_next"][0]["task_id"], task_id.as_str());
    assert_eq!(s["approvals_waiting"], 1);
    let out = run(home.path(), &model, &["status"]).await;
    assert!(text(&out).contains("host: not running"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_logs_json_lines_to_private_daily_files_that_logs_reads_filters_and_follows() {
    use std::os::unix::fs::PermissionsExt;
    let home = TestHome::new();
    std::fs::write(home.path().join("config.toml"), NATIVE_CONFIG_TOML).unwrap();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let _daemon = KillOnDrop(spawn_daemon(home.path(), &model));
    let mut client = connect_client(home.path()).await;
    let (kind, _) = ask(&mut client, "hello").await;
    assert_eq!(kind, "reply");

    let logs_dir = home.path().join("logs");
    let files = nanoclaw_host::logs::files(&logs_dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&files[0]), 0o600);
    assert_eq!(mode(&logs_dir), 0o700);
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(!bytes.contains(&0x1b), "no ANSI escape in the log file");
    for line in String::from_utf8(bytes).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    // The terminal (here: stderr into daemon.log) keeps its human format.
    let stderr = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    assert!(stderr.contains("nanoclaw is ready"), "{stderr}");
    assert!(!stderr.trim_start().starts_with('{'), "{stderr}");

    // For people: one line per entry, the turn's group among its spans.
    let out = run(home.path(), &model, &["logs", "--group", "main"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(shown.contains("turn finished"), "{shown}");
    assert!(
        shown
            .lines()
            .all(|l| l.contains("group=main") || l.contains("folder=main")),
        "{shown}"
    );
    assert!(!shown.contains('\x1b'), "no colour when piped");
    // Raw: the file's lines.
    let out = run(home.path(), &model, &["logs", "--json", "--since", "10m"]).await;
    let raw = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(raw.lines().count() > 3, "{raw}");
    assert!(raw.lines().all(|l| l.starts_with('{')), "{raw}");
    let out = run(home.path(), &model, &["logs", "--group", "nobody"]).await;
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let out = run(home.path(), &model, &["logs", "--since", "2050-01-01"]).await;
    assert!(out.stdout.is_empty(), "nothing after a future --since");
    let out = run(home.path(), &model, &["logs", "--since", "yesterday"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--since \"yesterday\""),
        "{}",
        text(&out)
    );

    // -f prints what is written from now on.
    let mut follow = KillOnDrop(
        nanoclaw_command(
            home.path(),
            &model,
            None,
            &["logs", "-f", "--group", "main"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The backlog first (the last 10 lines), then the new turn.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {}
    let (kind, _) = ask(&mut client, "again").await;
    assert_eq!(kind, "reply");
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            if line.contains("turn finished") {
                return line;
            }
        }
        panic!("logs -f ended");
    })
    .await
    .expect("logs -f shows the new turn");
    assert!(seen.contains("group=main"), "{seen}");
}

//! The `nanoclaw` command line as a user runs it.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use super::common::TEST_KEY;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

fn nanoclaw(home: &TestHome, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    nanoclaw_test_support::hermetic(cmd.args(args).env_clear())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NANOCLAW_HOME", home.path())
        .env("NO_COLOR", "1")
        .env("NANOCLAW_AGENT_BIN", nanoclaw_test_support::agent_binary());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn demo_runs_a_sandboxed_command_offline_and_says_the_model_is_scripted() {
    let home = TestHome::new();
    let out = nanoclaw(&home, &["demo"], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("SCRIPTED"), "{stderr}");
    let kernel = text(&Command::new("uname").arg("-r").output().unwrap().stdout);
    assert!(stdout.contains(kernel.trim()), "{stdout}");
    assert!(
        stderr.contains("uname -sr"),
        "the tool use is shown: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_message_without_a_running_host_starts_one_and_prints_the_reply() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let base = model.base_url();
    let out = tokio::task::spawn_blocking(move || {
        let out = nanoclaw(
            &home,
            &["chat", "-m", "ping from a script", "--json"],
            &[
                ("ANTHROPIC_BASE_URL", &base),
                ("ANTHROPIC_API_KEY", TEST_KEY),
            ],
        );
        (out, home)
    })
    .await
    .unwrap()
    .0;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["kind"], "reply");
    assert!(
        reply["reply"]
            .as_str()
            .unwrap()
            .contains("ping from a script"),
        "{reply}"
    );
}

#[test]
fn without_a_sandbox_no_agent_runs_and_the_user_is_told_how_to_fix_it() {
    let home = TestHome::new();
    let out = nanoclaw(
        &home,
        &["chat", "-m", "hello"],
        &[
            ("NANOCLAW_BWRAP", "/nonexistent/bwrap"),
            ("ANTHROPIC_API_KEY", TEST_KEY),
        ],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("no sandbox runtime"), "{all}");
    assert!(all.contains("bubblewrap") || all.contains("bwrap"), "{all}");

    let out = nanoclaw(
        &home,
        &["doctor", "--json"],
        &[("NANOCLAW_BWRAP", "/nonexistent/bwrap")],
    );
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let runtime = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sandbox runtime")
        .unwrap();
    assert_eq!(runtime["ok"], false);
}

/// A host user whose group is root (gid 0) would give its sandboxes group root on the host:
/// doctor fails on it, naming it, and no agent runs.
#[test]
fn doctor_fails_when_sandboxes_would_map_to_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to start nanoclaw as uid 65534 gid 0");
        return;
    }
    let home = TestHome::new();
    home.write_config("[agents]\nruntime = \"native\"\n");
    std::os::unix::fs::chown(home.path(), Some(65534), Some(0)).unwrap();
    std::os::unix::fs::chown(home.path().join("config.toml"), Some(65534), Some(0)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=0", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_nanoclaw"))
        .args(["doctor", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NANOCLAW_HOME", home.path())
        .env("NO_COLOR", "1")
        .env("NANOCLAW_AGENT_BIN", nanoclaw_test_support::agent_binary())
        .env("ANTHROPIC_API_KEY", TEST_KEY);
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sandbox user")
        .unwrap_or_else(|| panic!("no sandbox user check: {report}"))
        .clone();
    assert_eq!(check["ok"], false, "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.contains("gid 0") && detail.contains("root"),
        "{detail}"
    );
}

#[test]
fn a_broken_config_is_reported_with_the_offending_setting() {
    let home = TestHome::new();
    home.write_config("[agents]\nmax_concurrent = \"lots\"\n");
    let out = nanoclaw(&home, &["config", "show"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("max_concurrent") && err.contains("config.toml"),
        "{err}"
    );

    home.write_config("# fine\n[model]\nmodel = \"claude-opus-4-1\"\n");
    let out = nanoclaw(&home, &["config", "show", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["model"]["model"], "claude-opus-4-1");
    assert_eq!(config["trigger"], "@Andy");
}

#[test]
fn a_groups_model_can_be_changed_from_the_cli() {
    let home = TestHome::new();
    // The demo-free way to create the database: one doctor run does not; a chat does.
    let out = nanoclaw(&home, &["group", "list"], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("start nanoclaw once"));

    let out = nanoclaw(&home, &["chat", "-m", "hi", "--timeout", "60"], &[]);
    // No key and the pinned model URL answers nobody: the answer is an error that says so,
    // but the database now exists.
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("could not reach the anthropic API")
            || text(&out.stderr).contains("could not reach the anthropic API"),
        "the failure is named: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = nanoclaw(
        &home,
        &[
            "group",
            "set",
            "main",
            "--provider",
            "openai",
            "--model",
            "gpt-4.1-mini",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = nanoclaw(&home, &["group", "list", "--json"], &[]);
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(groups[0]["folder"], "main");
    assert_eq!(groups[0]["provider"], "openai");
    assert_eq!(groups[0]["model"], "gpt-4.1-mini");

    let out = nanoclaw(
        &home,
        &["group", "set", "main", "--provider", "gemini"],
        &[],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("gemini"));

    // A group's own time zone, by IANA name; a misspelt one is refused with a suggestion.
    let out = nanoclaw(
        &home,
        &["group", "set", "main", "--timezone", "Berlin"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Europe/Berlin"),
        "{}",
        text(&out.stderr)
    );
    let out = nanoclaw(
        &home,
        &["group", "set", "main", "--timezone", "America/New_York"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = nanoclaw(&home, &["group", "list", "--json"], &[]);
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(groups[0]["timezone"], "America/New_York");
    let out = nanoclaw(&home, &["group", "list"], &[]);
    assert!(text(&out.stdout).contains("America/New_York"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_shown_paused_resumed_run_and_cancelled_from_the_cli() {
    let home = TestHome::new();
    // The database, with the owner's main group and terminal chat, as the host makes them.
    let store = nanoclaw_store::Store::open(&home.path().join("nanoclaw.db")).unwrap();
    let main = store
        .ensure_group(nanoclaw_store::NewGroup {
            name: "Main".into(),
            folder: "main".into(),
            is_main: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let chat = store
        .ensure_chat("terminal", "local", "Terminal", false)
        .await
        .unwrap();
    let schedule = nanoclaw_schedule::Schedule::cron("0 9 * * 1-5").unwrap();
    let next = schedule
        .next_after(chrono::Utc::now(), nanoclaw_schedule::Tz::Europe__Berlin)
        .unwrap();
    let task = store
        .create_task(nanoclaw_store::NewTask {
            group_id: main.id.clone(),
            chat_id: chat.id,
            prompt: "Send an overview of the sales pipeline.".into(),
            script: None,
            schedule: serde_json::to_string(&schedule).unwrap(),
            timezone: "Europe/Berlin".into(),
            isolated: false,
            next_run_at: Some(next.timestamp_millis()),
            created_by: "agent:main".into(),
        })
        .await
        .unwrap();
    let run = |args: Vec<String>| {
        let home = home.path().to_path_buf();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
                nanoclaw_test_support::hermetic(cmd.args(&args).env_clear())
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .env("HOME", &home)
                    .env("NANOCLAW_HOME", &home)
                    .env("NO_COLOR", "1");
                cmd.output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let out = run(args(&["tasks", "list", "--json"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["task_id"], task.id.as_str());
    assert_eq!(listed[0]["schedule"], "cron 0 9 * * 1-5 (Europe/Berlin)");
    // The next fire time is shown in the task's zone: 09:00 CET or CEST.
    let next_local = listed[0]["next_run_local"].as_str().unwrap();
    assert!(next_local.contains(" 09:00:00 CE"), "{next_local}");
    let out = run(args(&["tasks", "list"])).await;
    assert!(text(&out.stdout).contains(&task.id));
    assert!(text(&out.stdout).contains("09:00:00"));

    let out = run(args(&["tasks", "pause", &task.id, "--json"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let paused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paused["task"]["status"], "paused");
    assert!(paused["task"].get("next_run").is_none());

    let out = run(args(&["tasks", "resume", &task.id])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("next run"),
        "{}",
        text(&out.stdout)
    );

    // No host is running: the run is queued for when it starts, and the user is told.
    let out = run(args(&["tasks", "run-now", &task.id])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("not running"),
        "{}",
        text(&out.stdout)
    );
    let out = run(args(&["tasks", "show", &task.id, "--json"])).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["runs"][0]["status"], "queued");
    assert_eq!(shown["runs"][0]["manual"], true);
    assert_eq!(shown["upcoming"].as_array().unwrap().len(), 5);
    let out = run(args(&["tasks", "show", &task.id])).await;
    assert!(
        text(&out.stdout).contains("(run now)"),
        "{}",
        text(&out.stdout)
    );

    let out = run(args(&["tasks", "cancel", &task.id])).await;
    assert!(out.status.success());
    let out = run(args(&["tasks", "resume", &task.id])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cancelled"),
        "{}",
        text(&out.stderr)
    );
    let out = run(args(&["tasks", "show", "task-nope"])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nanoclaw tasks list"),
        "{}",
        text(&out.stderr)
    );
}

/// Another process keeps the database's write lock for longer than the busy timeout: a CLI
/// command waits, says who holds the lock, and succeeds once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_command_waits_for_a_locked_database_and_says_who_holds_it() {
    use std::io::BufRead;
    let home = TestHome::new();
    let db = home.path().join("nanoclaw.db");
    let store = nanoclaw_store::Store::open(&db).unwrap();
    store
        .ensure_group(nanoclaw_store::NewGroup {
            name: "Main".into(),
            folder: "main".into(),
            is_main: true,
            ..Default::default()
        })
        .await
        .unwrap();
    store.close();

    let locker = nanoclaw_store::rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    let mut child = nanoclaw_test_support::hermetic(cmd.env_clear())
        .args(["group", "set", "main", "--model", "claude-opus-4-1"])
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NANOCLAW_HOME", home.path())
        .env("NO_COLOR", "1")
        // Much shorter than the lock is held (until the wait is reported).
        .env("NANOCLAW_DB_BUSY_TIMEOUT_MS", "200")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let waiting = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.contains("locked") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "the command did not report waiting for the lock: {seen:?} (exit: {:?})",
                child.try_wait()
            ),
        }
    };
    assert!(
        waiting.contains(&format!("pid {}", std::process::id())),
        "the lock holder (this test) is named: {waiting}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting: {waiting}"
    );

    locker.execute_batch("COMMIT").unwrap();
    let out = child.wait_with_output().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(out.status.success(), "{seen:?} {rest:?}");
    assert!(
        !rest.iter().any(|l| l.contains("migration")),
        "not reported as a migration: {rest:?}"
    );
    let out = nanoclaw(&home, &["group", "list", "--json"], &[]);
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(groups[0]["model"], "claude-opus-4-1");
}

/// A database cut to 0 bytes is not taken for a new one: nothing starts, the user is told what
/// happened and how to restore or start fresh, and the file is left as it is.
#[test]
fn a_database_truncated_to_zero_bytes_is_refused_not_replaced() {
    let home = TestHome::new();
    // A first command made the database (and has exited); then it was truncated.
    let out = nanoclaw(&home, &["vault", "list"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let db = home.path().join("nanoclaw.db");
    assert!(std::fs::metadata(&db).unwrap().len() > 0);
    std::fs::File::create(&db).unwrap();
    // (`run` and `chat` open it the same way; `run` is left out so a regression fails rather
    // than starting a daemon that never exits.)
    for args in [&["group", "list"][..], &["chat", "-m", "hi"]] {
        let out = nanoclaw(&home, args, &[]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("0 bytes") && err.contains("backup") && err.contains("start fresh"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");
}

/// A setting that would make every message fail is refused at start with its allowed range.
#[test]
fn a_numeric_setting_out_of_range_is_refused_with_the_allowed_range() {
    let home = TestHome::new();
    home.write_config("[agents]\nturn_timeout_secs = 0\n");
    for args in [&["config", "show"][..], &["chat", "-m", "hi"]] {
        let out = nanoclaw(&home, args, &[]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("agents.turn_timeout_secs = 0") && err.contains("10 to 86400"),
            "{args:?}: {err}"
        );
    }
    home.write_config("[agents.limits]\nmax_processes = 0\n");
    let out = nanoclaw(&home, &["config", "show"], &[]);
    assert!(text(&out.stderr).contains("agents.limits.max_processes = 0"));
}

/// `nanoclaw doctor --json` (runtime pinned to native, model URL unreachable unless `env` says
/// otherwise): (all ok, the checks by name).
fn doctor(home: &TestHome, env: &[(&str, &str)]) -> (bool, serde_json::Value) {
    let out = nanoclaw(home, &["doctor", "--json"], env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.success(), report["ok"] == true, "{report}");
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c.clone()))
        .collect::<serde_json::Map<_, _>>();
    (report["ok"] == true, serde_json::Value::Object(checks))
}

/// A failed check that fails the doctor, with `words` in its detail.
fn assert_fails(report: &(bool, serde_json::Value), name: &str, words: &[&str]) {
    let check = &report.1[name];
    assert!(!report.0, "the doctor fails: {}", report.1);
    assert_eq!(check["ok"], false, "{check}");
    assert!(check.get("optional").is_none(), "not optional: {check}");
    let detail = check["detail"].as_str().unwrap();
    for w in words {
        assert!(detail.contains(w), "{w:?} in {detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_api_key_with_the_provider() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let base = model.base_url();
    let report = tokio::task::block_in_place(|| {
        doctor(
            &home,
            &[
                ("ANTHROPIC_BASE_URL", &base),
                ("ANTHROPIC_API_KEY", TEST_KEY),
            ],
        )
    });
    assert!(report.0, "a healthy setup passes: {}", report.1);
    assert_eq!(report.1["model credentials"]["ok"], true);
    assert!(model.requests().iter().any(|r| r.path == "/v1/models"));

    let report = tokio::task::block_in_place(|| {
        doctor(
            &home,
            &[
                ("ANTHROPIC_BASE_URL", &base),
                ("ANTHROPIC_API_KEY", "sk-ant-wrong"),
            ],
        )
    });
    assert_fails(
        &report,
        "model credentials",
        &["rejected", "401", "ANTHROPIC_API_KEY"],
    );

    // Unreachable: a warning only.
    let report = tokio::task::block_in_place(|| doctor(&home, &[("ANTHROPIC_API_KEY", TEST_KEY)]));
    let check = &report.1["model credentials"];
    assert_eq!(
        (check["ok"].clone(), check["optional"].clone()),
        (false.into(), true.into())
    );
    assert!(report.0, "{}", report.1);
}

#[test]
fn doctor_fails_a_damaged_truncated_or_unwritable_data_dir() {
    let home = TestHome::new();
    let db = home.path().join("nanoclaw.db");
    std::fs::write(
        &db,
        b"this is not a database, it was overwritten by something else..",
    )
    .unwrap();
    assert_fails(
        &doctor(&home, &[]),
        "database",
        &["cannot be read as a database", "backup"],
    );
    std::fs::write(&db, b"").unwrap();
    assert_fails(
        &doctor(&home, &[]),
        "database",
        &["0 bytes", "backup", "start fresh"],
    );

    // A data dir that cannot be made: its parent is a file.
    let blocker = home.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let inner = blocker.join("home");
    let report = doctor(&home, &[("NANOCLAW_HOME", inner.to_str().unwrap())]);
    assert_fails(
        &report,
        "data directory",
        &["cannot create or write", "NANOCLAW_HOME"],
    );
}

#[test]
fn doctor_fails_a_missing_or_wrong_master_key_while_secrets_exist() {
    use std::io::Write;
    let home = TestHome::new();
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    let mut child = nanoclaw_test_support::hermetic(cmd.env_clear())
        .args(["vault", "set", "github"])
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NANOCLAW_HOME", home.path())
        .env("NANOCLAW_KEYRING", "off")
        .env("NANOCLAW_MASTER_KEY", key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ghp_secretvalue")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let off = ("NANOCLAW_KEYRING", "off");
    let report = doctor(&home, &[off, ("NANOCLAW_MASTER_KEY", key)]);
    assert_eq!(report.1["vault master key"]["ok"], true, "{}", report.1);
    assert_fails(
        &doctor(&home, &[off]),
        "vault master key",
        &["no master key", "NANOCLAW_MASTER_KEY"],
    );
    let wrong = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    assert_fails(
        &doctor(&home, &[off, ("NANOCLAW_MASTER_KEY", wrong)]),
        "vault master key",
        &["does not match"],
    );
}

#[test]
fn doctor_fails_a_dead_docker_socket_when_docker_is_meant() {
    let home = TestHome::new();
    let report = doctor(&home, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_fails(
        &report,
        "docker image",
        &["not reachable", "agents.runtime"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_a_group_whose_provider_has_no_key() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let store = nanoclaw_store::Store::open(&home.path().join("nanoclaw.db")).unwrap();
    store
        .ensure_group(nanoclaw_store::NewGroup {
            name: "Work".into(),
            folder: "work".into(),
            provider: Some("openai".into()),
            model: Some("gpt-4.1-mini".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let base = model.base_url();
    let env = [
        ("ANTHROPIC_BASE_URL", base.as_str()),
        ("ANTHROPIC_API_KEY", TEST_KEY),
    ];
    let report = tokio::task::block_in_place(|| doctor(&home, &env));
    assert_fails(
        &report,
        "group providers",
        &["group work", "openai", "OPENAI_API_KEY"],
    );
    // With a key for it, the group is fine.
    let openai_base = format!("{base}/openai/v1");
    let env = [
        env[0],
        env[1],
        ("OPENAI_BASE_URL", openai_base.as_str()),
        ("OPENAI_API_KEY", TEST_KEY),
    ];
    let report = tokio::task::block_in_place(|| doctor(&home, &env));
    assert_eq!(report.1["group providers"]["ok"], true, "{}", report.1);
}

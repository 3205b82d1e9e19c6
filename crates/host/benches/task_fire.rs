//! Scheduled-task fire jitter and idle cost with 10,000 tasks defined.
//!
//! - jitter: a task's scheduled time → its turn read by the (warm) agent. The agent is the fake
//!   Python agent of `common` (inside the real bubblewrap sandbox), which stamps the
//!   CLOCK_REALTIME nanoseconds at which it read the turn; each measured task's prompt is its own
//!   scheduled time, echoed back in the reply. The path: the scheduler's sleep ends → due tasks
//!   read from SQLite → the run fired (one transaction: run row, inbound row, task advanced) →
//!   session worker claims it → stdin write → the agent reads it.
//! - idle: the host process's CPU time (user + system, `/proc/self/stat`) over 10 s with 10,000
//!   tasks defined and none due.
//!
//! The measured one-off tasks fire 100 ms apart among 10,000 others due in the next days (cron,
//! interval and one-off mixes), all in one group, so each run also pays for the others' rows.
//!
//! Run: `cargo bench -p nanoclaw --bench task_fire` (needs /usr/bin/python3). `BENCH_N` sets the
//! number of measured runs (default 200).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::*;
use nanoclaw_host::channel::terminal::ServerLine;
use nanoclaw_host::config::Paths;
use nanoclaw_schedule::Schedule;
use nanoclaw_store::NewTask;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

const DEFINED: usize = 10_000;
const SPACING_MS: i64 = 100;

fn main() {
    if !Path::new("/usr/bin/python3").is_file() {
        println!("task_fire skipped: /usr/bin/python3 (the fake agent's interpreter) is missing");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

async fn run() {
    print_machine();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = write_fake_agent(dir.path());
    let model = ScriptedModel::start(Scenario::echo().with_api_key(BENCH_KEY))
        .await
        .expect("scripted model");
    let home = TestHome::new();
    let host = start_host(home.path(), &model, agent).await;
    let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
    // Warm-up: spawns the sandbox and the fake agent for the terminal chat's session, which the
    // tasks' runs share.
    let _ = ask(&mut client, "warmup", "warm up").await;

    let store = host.store().clone();
    let (main, chat) = main_and_terminal(&store).await;
    let measured = iterations(200);
    let now = Utc::now();
    let new_task = |schedule: Schedule, next: i64, prompt: String| NewTask {
        group_id: main.id.clone(),
        chat_id: chat.id,
        prompt,
        script: None,
        schedule: serde_json::to_string(&schedule).unwrap(),
        timezone: "Europe/Berlin".into(),
        isolated: false,
        next_run_at: Some(next),
        created_by: "bench".into(),
    };
    // The background: crons, intervals and one-offs, none due during the bench.
    let tz = nanoclaw_schedule::Tz::Europe__Berlin;
    let start = std::time::Instant::now();
    for i in 0..DEFINED - measured {
        let schedule = match i % 3 {
            0 => Schedule::cron(&format!("{} {} * * *", i % 60, (i / 60) % 24)).unwrap(),
            1 => Schedule::Interval {
                every_secs: 3600 + (i as u64 % 3600),
                anchor: now + chrono::Duration::hours(2),
            },
            _ => Schedule::Once {
                at: now + chrono::Duration::days(1) + chrono::Duration::seconds(i as i64),
            },
        };
        let after = now + chrono::Duration::hours(1);
        let next = schedule.next_after(after, tz).unwrap();
        store
            .create_task(new_task(
                schedule,
                next.timestamp_millis(),
                format!("background {i}"),
            ))
            .await
            .unwrap();
    }
    // The measured one-offs, 100 ms apart from 2 s on.
    let first_due = Utc::now().timestamp_millis() + 2_000;
    for k in 0..measured as i64 {
        let due = first_due + k * SPACING_MS;
        let at = chrono::DateTime::from_timestamp_millis(due).unwrap();
        store
            .create_task(new_task(Schedule::Once { at }, due, format!("due={due}")))
            .await
            .unwrap();
    }
    println!(
        "defined {DEFINED} tasks in {:.1} s ({measured} measured)",
        start.elapsed().as_secs_f64()
    );
    host.tasks().wake();

    let mut jitter = Vec::with_capacity(measured);
    while jitter.len() < measured {
        let line = tokio::time::timeout(Duration::from_secs(60), client.next())
            .await
            .expect("a run within 60 s")
            .expect("reading")
            .expect("connection open");
        if let ServerLine::Message { text, .. } = line
            && text.contains("first=due=")
        {
            let due_ms = field(&text, "first=due");
            jitter.push(duration_ns(field(&text, "recv") - due_ms * 1_000_000));
        }
    }
    print_header(&format!(
        "scheduled task fire jitter, {DEFINED} tasks defined, warm agent"
    ));
    print_row("scheduled time -> turn read by the agent", &jitter);

    // Idle: 10,000 tasks, none due in the next hour.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let used = cpu_time() - before;
    println!();
    println!(
        "idle with {DEFINED} tasks defined: {} ms of CPU in 10 s ({:.3} % of one core)",
        used.as_millis(),
        used.as_secs_f64() / 10.0 * 100.0
    );
    drop(client);
    host.shutdown().await;
}

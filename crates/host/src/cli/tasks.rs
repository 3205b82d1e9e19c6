//! `nanoclaw tasks …`: scheduled tasks from the owner's terminal. Changes go to the database and a
//! running host is told to look again (over its terminal socket), so they apply at once.

use std::process::ExitCode;
use std::sync::Arc;

use nanoclaw_host::channel::terminal::Scope;
use nanoclaw_host::clock::SystemClock;
use nanoclaw_host::config::Paths;
use nanoclaw_host::tasks::{Scheduler, TaskView, run_view};
use nanoclaw_store::{Store, Task};

struct Ctx {
    paths: Paths,
    store: Store,
    tasks: Scheduler,
}

fn open() -> anyhow::Result<Ctx> {
    let (paths, config, store) = super::open_existing()?;
    let tasks = Scheduler::new(store.clone(), Arc::new(SystemClock), &config);
    Ok(Ctx {
        paths,
        store,
        tasks,
    })
}

async fn find(ctx: &Ctx, task_id: &str) -> anyhow::Result<Task> {
    ctx.store
        .task(task_id.to_owned())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no task {task_id:?}; see `nanoclaw tasks list`"))
}

/// Tell a running host to look at the database again. `false`: no host is running.
async fn wake_host(paths: &Paths) -> bool {
    match nanoclaw_host::channel::terminal::TerminalClient::connect(&paths.terminal_socket()).await
    {
        // Shown nothing: a client that only pokes the host must not take queued messages.
        Ok(mut client) => client.show(Scope::Own).await.is_ok() && client.wake().await.is_ok(),
        Err(_) => false,
    }
}

pub async fn list(group: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = open()?;
    let group_id = match &group {
        Some(f) => Some(
            ctx.store
                .group_by_folder(f.as_str())
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!("no group with folder {f:?}; see `nanoclaw group list`")
                })?
                .id,
        ),
        None => None,
    };
    let views: Vec<TaskView> = ctx
        .tasks
        .views(&ctx.store.list_tasks(group_id).await?)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!(
            "no scheduled tasks; ask the assistant, e.g. \"@Andy every weekday at 9am send me an overview\""
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<10} {:<9} {:<36} {:<34} prompt",
        "id", "group", "status", "schedule", "next run"
    );
    for v in views {
        let prompt: String = v
            .prompt
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(40)
            .collect();
        println!(
            "{:<22} {:<10} {:<9} {:<36} {:<34} {}",
            v.task_id,
            v.group,
            v.status,
            v.schedule,
            v.next_run_local.as_deref().unwrap_or("-"),
            prompt
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(task_id: String, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = open()?;
    let task = find(&ctx, &task_id).await?;
    let view = ctx.tasks.view(&task).await;
    let tz = nanoclaw_schedule::parse_tz(&task.timezone).unwrap_or(nanoclaw_schedule::Tz::UTC);
    let runs: Vec<_> = ctx
        .store
        .task_runs(task.id.clone(), 20)
        .await?
        .iter()
        .map(|r| run_view(r, tz))
        .collect();
    let upcoming: Vec<String> = match (
        serde_json::from_str::<nanoclaw_schedule::Schedule>(&task.schedule),
        task.next_run_at,
    ) {
        (Ok(schedule), Some(next)) => {
            let from = chrono::DateTime::from_timestamp_millis(next - 1).unwrap_or_default();
            schedule
                .upcoming(from, tz, 5)
                .into_iter()
                .map(|t| nanoclaw_schedule::format_local(t, tz))
                .collect()
        }
        _ => Vec::new(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "task": view,
                "script": task.script,
                "upcoming": upcoming,
                "runs": runs,
                "created_by": task.created_by,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("task      {}", view.task_id);
    println!("group     {}", view.group);
    println!(
        "status    {}{}",
        view.status,
        if view.consecutive_failures > 0 {
            format!(" ({} failed runs in a row)", view.consecutive_failures)
        } else {
            String::new()
        }
    );
    println!("schedule  {}", view.schedule);
    println!(
        "context   {}",
        if view.isolated {
            "isolated (a fresh conversation each run)"
        } else {
            "the group's conversation"
        }
    );
    println!("created   by {}", task.created_by);
    println!("prompt    {}", view.prompt.replace('\n', "\n          "));
    if let Some(script) = &task.script {
        println!("pre-check {}", script.replace('\n', "\n          "));
    }
    if upcoming.is_empty() {
        println!("next      -");
    } else {
        println!("next      {}", upcoming.join("\n          "));
    }
    if runs.is_empty() {
        println!("runs      none yet");
    } else {
        println!("runs (newest first):");
        for r in &runs {
            let mut line = format!(
                "  #{:<5} {:<8} due {}",
                r.run_id,
                r.status.to_string(),
                r.scheduled_for
            );
            if r.manual {
                line.push_str(" (run now)");
            } else if r.late_secs > 0 {
                line.push_str(&format!(" late {}s", r.late_secs));
            }
            if r.input_tokens + r.output_tokens > 0 {
                line.push_str(&format!(" tokens {}/{}", r.input_tokens, r.output_tokens));
            }
            if let Some(e) = &r.error {
                line.push_str(&format!(" error: {e}"));
            }
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A change the owner makes to a task.
#[derive(Clone, Copy, Debug)]
pub enum Change {
    RunNow,
    Pause,
    Resume,
    Cancel,
}

pub async fn change(task_id: String, change: Change, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = open()?;
    let task = find(&ctx, &task_id).await?;
    let mut run = None;
    let task = match change {
        Change::RunNow => {
            run = Some(ctx.tasks.run_now(&task).await?);
            task
        }
        Change::Pause => ctx.tasks.pause(&task).await?,
        Change::Resume => ctx.tasks.resume(&task).await?,
        Change::Cancel => ctx.tasks.cancel(&task).await?,
    };
    let host_running = wake_host(&ctx.paths).await;
    let view = ctx.tasks.view(&task).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "task": view,
                "run_id": run.as_ref().map(|r| r.run_id),
                "host_running": host_running,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let what = match change {
        Change::RunNow => format!(
            "queued a run of {}{}",
            view.task_id,
            if host_running {
                "; the answer goes to the task's chat"
            } else {
                "; nanoclaw is not running, so it runs when nanoclaw starts"
            }
        ),
        Change::Pause => format!("paused {}", view.task_id),
        Change::Resume => format!(
            "resumed {}; next run {}",
            view.task_id,
            view.next_run_local.as_deref().unwrap_or("-")
        ),
        Change::Cancel => format!("cancelled {}", view.task_id),
    };
    println!("{what}");
    Ok(ExitCode::SUCCESS)
}

//! `nanoclaw status`: is the host up (since when, which version and runtime), how are its
//! channels and agents, what is queued, what is due next, what failed lately, and what waits
//! for the owner. Live state comes from the running host over its terminal socket; the rest
//! from the database, so most of it shows even when no host runs.

use std::process::ExitCode;
use std::sync::Arc;

use nanoclaw_host::channel::HostState;
use nanoclaw_host::channel::terminal::{ChannelReport, ClientLine, ServerLine, TerminalClient};
use nanoclaw_host::config::Paths;
use nanoclaw_store::{FailureCounts, QueueCounts};
use serde::Serialize;

/// How many upcoming task runs the overview lists.
const TASKS_SHOWN: usize = 5;
/// The window of "failures lately".
const FAILURE_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// What the running host says about itself.
pub struct Live {
    pub host: HostState,
    pub channels: Vec<ChannelReport>,
}

/// Asks the host on `paths` for its live state and its channels' health; `None` when no host
/// answers on the terminal socket.
pub async fn live(paths: &Paths) -> anyhow::Result<Option<Live>> {
    let Ok(mut client) = TerminalClient::connect(&paths.terminal_socket()).await else {
        return Ok(None);
    };
    let host = match client.admin(&ClientLine::HostStatus).await? {
        Some(ServerLine::Host { host }) => host,
        _ => return Ok(None),
    };
    let channels = match client.admin(&ClientLine::ChannelStatus).await? {
        Some(ServerLine::Channels { channels }) => channels,
        _ => return Ok(None),
    };
    Ok(Some(Live { host, channels }))
}

/// The host part of `status --json`.
#[derive(Serialize)]
struct HostJson {
    pid: u32,
    version: String,
    /// RFC 3339, UTC.
    started_at: String,
    uptime_secs: i64,
    runtime: Option<String>,
    runtime_error: Option<String>,
}

#[derive(Serialize)]
struct AgentsJson {
    live: usize,
    max: usize,
    busy_sessions: usize,
}

#[derive(Serialize)]
struct QueueJson {
    /// Messages waiting for a turn.
    waiting: u64,
    /// Messages in a turn now.
    in_turn: u64,
    /// Replies waiting to be delivered.
    replies: u64,
}

#[derive(Serialize)]
struct PausedJson {
    by: String,
    since: String,
}

#[derive(Serialize)]
struct FailuresJson {
    messages: u64,
    task_runs: u64,
    deliveries: u64,
    total: u64,
}

/// `nanoclaw status --json`: field names are stable (scripts read them).
#[derive(Serialize)]
struct StatusJson {
    version: &'static str,
    host_running: bool,
    host: Option<HostJson>,
    channels: Vec<ChannelReport>,
    agents: Option<AgentsJson>,
    queue: QueueJson,
    queued_replies: u64,
    held_for_you: usize,
    approvals_waiting: u64,
    /// Set while the owner's `/pause` holds every agent and scheduled run (until `/resume`).
    paused: Option<PausedJson>,
    failures_last_24h: FailuresJson,
    tasks_due_next: Vec<nanoclaw_host::tasks::TaskView>,
}

/// What the database says, whether a host runs or not.
#[derive(Default)]
struct Stored {
    queue: QueueCounts,
    held: usize,
    approvals: u64,
    paused: Option<nanoclaw_store::Paused>,
    failures: FailureCounts,
    tasks: Vec<nanoclaw_host::tasks::TaskView>,
}

async fn stored() -> anyhow::Result<Stored> {
    let Ok((_, config, store)) = super::open_existing() else {
        // No database yet: nothing is queued, nothing failed.
        return Ok(Stored::default());
    };
    let now = nanoclaw_host::now_ms();
    let scheduler = nanoclaw_host::tasks::Scheduler::new(
        store.clone(),
        Arc::new(nanoclaw_host::clock::SystemClock),
        &config,
    );
    // Due by the end of time: every scheduled task, soonest first.
    let due = store.due_tasks(i64::MAX, TASKS_SHOWN).await?;
    Ok(Stored {
        queue: store.queue_counts().await?,
        held: store.waiting_messages().await?.len(),
        approvals: store.pending_approval_count().await?,
        paused: store.paused().await?,
        failures: store.failures_since(now - FAILURE_WINDOW_MS).await?,
        tasks: scheduler.views(&due).await?,
    })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// "3d 4h", "2h 5m", "40s": how long, for people.
fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Prints the overview. Exit 0 when the host runs with every channel up, 2 when one is
/// down, 3 when the host is not running.
pub async fn status(json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let live = live(&paths).await?;
    let stored = stored().await?;
    let now = nanoclaw_host::now_ms();
    // Live counts when the host answers: it knows what its workers hold right now.
    let queue = QueueJson {
        waiting: live
            .as_ref()
            .map_or(stored.queue.pending, |l| l.host.queued_messages),
        in_turn: live
            .as_ref()
            .map_or(stored.queue.processing, |l| l.host.processing_messages),
        replies: stored.queue.outbound,
    };
    let running = live.is_some();
    let all_up = live
        .as_ref()
        .is_some_and(|l| l.channels.iter().all(|r| r.health.is_up()));
    let report = StatusJson {
        version: env!("CARGO_PKG_VERSION"),
        host_running: running,
        host: live.as_ref().map(|l| HostJson {
            pid: l.host.pid,
            version: l.host.version.clone(),
            started_at: rfc3339(l.host.started_at),
            uptime_secs: (now - l.host.started_at).max(0) / 1000,
            runtime: l.host.runtime.clone(),
            runtime_error: l.host.runtime_error.clone(),
        }),
        agents: live.as_ref().map(|l| AgentsJson {
            live: l.host.live_agents,
            max: l.host.max_agents,
            busy_sessions: l.host.busy_sessions,
        }),
        channels: live.map(|l| l.channels).unwrap_or_default(),
        queued_replies: stored.queue.outbound,
        queue,
        held_for_you: stored.held,
        approvals_waiting: stored.approvals,
        paused: stored.paused.map(|p| PausedJson {
            by: p.by,
            since: rfc3339(p.since),
        }),
        failures_last_24h: FailuresJson {
            messages: stored.failures.messages,
            task_runs: stored.failures.task_runs,
            deliveries: stored.failures.deliveries,
            total: stored.failures.total(),
        },
        tasks_due_next: stored.tasks,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&paths, &report);
    }
    Ok(if !running {
        ExitCode::from(3)
    } else if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn print_human(paths: &Paths, r: &StatusJson) {
    println!("nanoclaw {}", r.version);
    match &r.host {
        Some(h) => {
            let other = if h.version != r.version {
                format!(", version {}", h.version)
            } else {
                String::new()
            };
            println!(
                "host: running (pid {}{other}) since {} (up {})",
                h.pid,
                h.started_at,
                human_duration(h.uptime_secs)
            );
            match (&h.runtime, &h.runtime_error) {
                (_, Some(why)) => println!("runtime: none, agents cannot run: {why}"),
                (Some(name), None) => println!("runtime: {name}"),
                (None, None) => println!("runtime: unknown"),
            }
        }
        None => match nanoclaw_host::host::lock_holder(&paths.host_lock()) {
            Some(pid) => println!(
                "host: a host{} holds {} but does not answer on its terminal socket \
                 (is [channels.terminal] enabled?)",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                paths.home.display()
            ),
            None => println!(
                "host: not running (start it with `nanoclaw run` or `nanoclaw service start`)"
            ),
        },
    }
    if let Some(p) = &r.paused {
        println!(
            "PAUSED since {} by {}: no agent or scheduled run starts until /resume in the main chat",
            p.since, p.by
        );
    }
    if let Some(a) = &r.agents {
        println!(
            "agents: {} live of {} at most, {} session(s) in a turn",
            a.live, a.max, a.busy_sessions
        );
    }
    println!(
        "queue: {} message(s) waiting for a turn, {} in a turn",
        r.queue.waiting, r.queue.in_turn
    );
    if r.host.is_some() {
        super::channel::print_reports(&r.channels);
    }
    println!("replies waiting to be delivered: {}", r.queued_replies);
    println!(
        "messages held for your decision: {} (`nanoclaw chats list`)",
        r.held_for_you
    );
    println!(
        "vault approvals waiting: {} (`nanoclaw vault approvals`)",
        r.approvals_waiting
    );
    let f = &r.failures_last_24h;
    println!(
        "failures in the last 24 h: {} ({} message(s) given up, {} task run(s), {} undeliverable repl(ies)){}",
        f.total,
        f.messages,
        f.task_runs,
        f.deliveries,
        if f.total > 0 {
            "; see `nanoclaw logs --since 24h`"
        } else {
            ""
        }
    );
    if r.tasks_due_next.is_empty() {
        println!("tasks due next: none");
    } else {
        println!("tasks due next:");
        for t in &r.tasks_due_next {
            let prompt: String = t
                .prompt
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(50)
                .collect();
            println!(
                "  {:<34} {:<10} {:<22} {}",
                t.next_run_local.as_deref().unwrap_or("-"),
                t.group,
                t.task_id,
                nanoclaw_host::channel::sanitize::for_terminal(&prompt)
            );
        }
    }
}

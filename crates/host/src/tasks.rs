//! Scheduled tasks: creating and changing them (for agents' requests and the CLI alike) and firing
//! them when due.
//!
//! Firing is one store transaction per run (record the run, queue its turn, advance the task), so a
//! run is never fired twice and a due run survives a crash. The next fire time is computed from the
//! schedule and the time that was due, never from when a run finished, so nothing drifts. The loop
//! sleeps until the next fire time (or a change); with nothing due it does no work at all.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nanoclaw_schedule::{Schedule, Tz};
use nanoclaw_store::{
    FireTask, FiredRun, Group, NewTask, Store, StoreError, Task, TaskChanges, TaskRunRow,
    TaskStatus,
};
use serde::Serialize;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{Config, SchedulerSection};

/// Longest prompt a task may have.
pub const MAX_PROMPT_BYTES: usize = 16 * 1024;
/// Longest pre-check script.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Due tasks read at once; more are read in the next round of the same pass.
const FIRE_BATCH: usize = 256;
/// Rounds of one firing pass at most.
const MAX_FIRE_PASSES: usize = 1_000;

/// What went wrong with a task operation. Messages go to agents and CLI users as they are.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    Invalid(String),
    #[error("no task {0:?} here; see list_tasks (or `nanoclaw tasks list`)")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A task as agents and the CLI see it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub group: String,
    pub prompt: String,
    pub schedule: String,
    pub timezone: String,
    pub status: TaskStatus,
    /// RFC 3339 in the task's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// For people: "2026-11-27 09:00:00 CET (+01:00)".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_local: Option<String>,
    pub isolated: bool,
    pub has_script: bool,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunView>,
}

/// One run as agents and the CLI see it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: i64,
    pub status: nanoclaw_store::RunStatus,
    pub scheduled_for: String,
    pub late_secs: i64,
    pub manual: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one [`Scheduler::fire_due`] pass did.
#[derive(Debug, Default)]
pub struct Fired {
    /// The clock reading the pass fired by.
    pub at: DateTime<Utc>,
    /// Sessions that got a run's turn to answer.
    pub sessions: Vec<String>,
    /// Due tasks looked at (fired, skipped as missed, or changed meanwhile); each may have queued a
    /// notice for its chat.
    pub handled: usize,
}

/// The scheduler: task operations plus the firing loop's steps.
pub struct Scheduler {
    store: Store,
    clock: Arc<dyn Clock>,
    wake: Notify,
    settings: SchedulerSection,
    host_tz: Tz,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn rfc3339_in(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339()
}

/// The first line of a prompt, shortened, for notices.
fn short(prompt: &str) -> String {
    let line = prompt.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(60).collect();
    if out.len() < line.len() || prompt.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

impl Scheduler {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: &Config) -> Scheduler {
        Scheduler {
            store,
            clock,
            wake: Notify::new(),
            settings: config.scheduler.clone(),
            host_tz: crate::host_zone(config),
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Tasks changed: recompute when to wake.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The group's zone: its own, else the host's.
    pub fn zone_for(&self, group: &Group) -> Tz {
        crate::group_zone(group, self.host_tz)
    }

    fn task_zone(task: &Task) -> Tz {
        nanoclaw_schedule::parse_tz(&task.timezone).unwrap_or(Tz::UTC)
    }

    fn parse_stored(task: &Task) -> Result<Schedule, TaskError> {
        serde_json::from_str(&task.schedule).map_err(|e| {
            TaskError::Invalid(format!("task {} has an unreadable schedule: {e}", task.id))
        })
    }

    fn check_prompt(prompt: &str) -> Result<(), TaskError> {
        if prompt.trim().is_empty() {
            return Err(TaskError::Invalid(
                "the task's prompt is empty; say what should be done at each run".into(),
            ));
        }
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(TaskError::Invalid(format!(
                "the task's prompt is {} bytes; the limit is {MAX_PROMPT_BYTES}",
                prompt.len()
            )));
        }
        Ok(())
    }

    fn check_script(script: &str) -> Result<(), TaskError> {
        if script.len() > MAX_SCRIPT_BYTES {
            return Err(TaskError::Invalid(format!(
                "the pre-check script is {} bytes; the limit is {MAX_SCRIPT_BYTES}",
                script.len()
            )));
        }
        Ok(())
    }

    /// A new task's own checks: a prompt, and sizes within the limits. (Whether its group has
    /// room for it is the agent request's check, in `host::requests`.)
    pub fn check_new_task(prompt: &str, script: Option<&str>) -> Result<(), TaskError> {
        Self::check_prompt(prompt)?;
        if let Some(s) = script.filter(|s| !s.trim().is_empty()) {
            Self::check_script(s)?;
        }
        Ok(())
    }

    /// How many live tasks one group may have.
    pub fn max_tasks_per_group(&self) -> usize {
        self.settings.max_tasks_per_group
    }

    /// Parse `text` in `tz` and find its first fire time from now.
    fn plan(&self, text: &str, tz: Tz) -> Result<(Schedule, DateTime<Utc>), TaskError> {
        let now = self.clock.now();
        let schedule =
            Schedule::parse(text, now, tz).map_err(|e| TaskError::Invalid(e.to_string()))?;
        let next = schedule.next_after(now, tz).ok_or_else(|| {
            TaskError::Invalid(format!(
                "the schedule {text:?} never fires after {}",
                nanoclaw_schedule::format_local(now, tz)
            ))
        })?;
        Ok((schedule, next))
    }

    /// Create a task for `group`, answering in `chat_id`. Agents' requests are authorized (and the
    /// group's room checked) in `host::requests` first.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        group: &Group,
        chat_id: i64,
        prompt: String,
        schedule_text: &str,
        script: Option<String>,
        isolated: bool,
        created_by: String,
    ) -> Result<Task, TaskError> {
        Self::check_new_task(&prompt, script.as_deref())?;
        let script = script.filter(|s| !s.trim().is_empty());
        let tz = self.zone_for(group);
        let (schedule, next) = self.plan(schedule_text, tz)?;
        let task = self
            .store
            .create_task(NewTask {
                group_id: group.id.clone(),
                chat_id,
                prompt,
                script,
                schedule: serde_json::to_string(&schedule)
                    .map_err(|e| TaskError::Invalid(e.to_string()))?,
                timezone: tz.name().to_owned(),
                isolated,
                next_run_at: Some(ms(next)),
                created_by,
            })
            .await?;
        tracing::info!(task = %task.id, group = %group.folder, schedule = %schedule.describe(tz), next = %next, "task scheduled");
        self.wake();
        Ok(task)
    }

    /// Change a task's prompt, schedule or script (`Some("")` removes the script).
    pub async fn update(
        &self,
        task: &Task,
        prompt: Option<String>,
        schedule_text: Option<&str>,
        script: Option<String>,
    ) -> Result<Task, TaskError> {
        if let Some(p) = &prompt {
            Self::check_prompt(p)?;
        }
        if let Some(s) = &script {
            Self::check_script(s)?;
        }
        let tz = Self::task_zone(task);
        let schedule = match schedule_text {
            Some(text) => {
                let (schedule, next) = self.plan(text, tz)?;
                let json = serde_json::to_string(&schedule)
                    .map_err(|e| TaskError::Invalid(e.to_string()))?;
                // A paused task keeps no fire time until it is resumed.
                let next = (task.status != TaskStatus::Paused).then_some(ms(next));
                Some((json, next))
            }
            None => None,
        };
        let changes = TaskChanges {
            prompt,
            script: script.map(|s| (!s.trim().is_empty()).then_some(s)),
            schedule,
        };
        let task = self
            .store
            .update_task(task.id.clone(), changes)
            .await
            .map_err(invalid_store)?;
        self.wake();
        Ok(task)
    }

    pub async fn pause(&self, task: &Task) -> Result<Task, TaskError> {
        let task = self
            .store
            .set_task_status(task.id.clone(), TaskStatus::Paused, None)
            .await
            .map_err(invalid_store)?;
        self.wake();
        Ok(task)
    }

    /// Resume a paused task from now: runs it missed while paused are not made up. A one-off whose
    /// time passed while paused runs at once.
    pub async fn resume(&self, task: &Task) -> Result<Task, TaskError> {
        let now = self.clock.now();
        let schedule = Self::parse_stored(task)?;
        let next = match schedule {
            Schedule::Once { at } => at.max(now),
            other => other
                .next_after(now, Self::task_zone(task))
                .ok_or_else(|| TaskError::Invalid(format!("task {} never fires again", task.id)))?,
        };
        let task = self
            .store
            .set_task_status(task.id.clone(), TaskStatus::Active, Some(ms(next)))
            .await
            .map_err(invalid_store)?;
        self.wake();
        Ok(task)
    }

    pub async fn cancel(&self, task: &Task) -> Result<Task, TaskError> {
        let task = self
            .store
            .set_task_status(task.id.clone(), TaskStatus::Cancelled, None)
            .await
            .map_err(invalid_store)?;
        self.wake();
        Ok(task)
    }

    /// Run a task now, outside its schedule (which does not move).
    pub async fn run_now(&self, task: &Task) -> Result<FiredRun, TaskError> {
        let now = self.clock.now();
        let fired = self
            .store
            .fire_task(FireTask {
                task_id: task.id.clone(),
                scheduled_for: ms(now),
                next_run_at: None,
                manual: true,
                now_ms: ms(now),
                due_ms: crate::now_ms(),
                text: task.prompt.clone(),
                notice: None,
            })
            .await
            .map_err(invalid_store)?;
        fired.ok_or_else(|| {
            TaskError::Invalid(format!("task {} was already run at this instant", task.id))
        })
    }

    /// The earliest fire time, if any task is scheduled.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.store.next_task_due().await?.map(from_ms))
    }

    /// Fire every task due by the clock. A task with several fire times due (a pass that came a
    /// little late for a frequent schedule) is fired for each, in order, until it is caught up.
    pub async fn fire_due(&self) -> Result<Fired, StoreError> {
        let now = self.clock.now();
        let mut fired = Fired {
            at: now,
            ..Fired::default()
        };
        // Bounded, so a task the database keeps refusing cannot hold the loop; `wait` retries.
        for _ in 0..MAX_FIRE_PASSES {
            let due = self.store.due_tasks(ms(now), FIRE_BATCH).await?;
            if due.is_empty() {
                break;
            }
            let mut progressed = 0;
            for task in due {
                fired.handled += 1;
                match self.fire_one(&task, now).await {
                    Ok(session) => {
                        progressed += 1;
                        if let Some(session) = session
                            && !fired.sessions.contains(&session)
                        {
                            fired.sessions.push(session);
                        }
                    }
                    Err(e) => tracing::error!(task = %task.id, error = %e, "firing a task failed"),
                }
            }
            if progressed == 0 {
                break;
            }
        }
        Ok(fired)
    }

    async fn fire_one(&self, task: &Task, now: DateTime<Utc>) -> Result<Option<String>, TaskError> {
        let Some(due_at) = task.next_run_at else {
            return Ok(None);
        };
        let schedule = match Self::parse_stored(task) {
            Ok(s) => s,
            Err(e) => {
                // Never leave it due forever: pause it and say why in the log.
                tracing::error!(task = %task.id, error = %e, "pausing a task whose schedule cannot be read");
                self.store
                    .set_task_status(task.id.clone(), TaskStatus::Paused, None)
                    .await?;
                return Ok(None);
            }
        };
        let tz = Self::task_zone(task);
        let scheduled = from_ms(due_at);
        let late = now - scheduled;
        let missed = late > chrono::Duration::seconds(self.settings.late_after_secs as i64);
        // The next fire time comes from the one that was due, so nothing drifts; after downtime, from
        // now, so the runs missed meanwhile collapse into this one.
        let mut next = schedule.next_after(if missed { now } else { scheduled }, tz);
        // Fire times are stored in whole milliseconds; a schedule with finer times must still move on.
        while let Some(n) = next.filter(|n| ms(*n) <= due_at) {
            next = schedule.next_after(n, tz);
        }
        let when = nanoclaw_schedule::format_local(scheduled, tz);
        if missed && self.settings.skip_missed() {
            let next_text = next
                .map(|n| format!(" Next run: {}.", nanoclaw_schedule::format_local(n, tz)))
                .unwrap_or_default();
            let notice = format!(
                "Skipped scheduled task {} (\"{}\") due at {when}: nanoclaw was not running (or was paused) then.{next_text}",
                task.id,
                short(&task.prompt)
            );
            let skipped = self
                .store
                .skip_missed_run(task.id.clone(), due_at, next.map(ms), ms(now), notice)
                .await?;
            if skipped {
                tracing::warn!(task = %task.id, due = %when, "missed run skipped (policy: skip)");
            }
            return Ok(None);
        }
        let notice = missed.then(|| {
            format!(
                "Running scheduled task {} (\"{}\") late: it was due at {when}, while nanoclaw was not running (or was paused).",
                task.id,
                short(&task.prompt)
            )
        });
        let fired = self
            .store
            .fire_task(FireTask {
                task_id: task.id.clone(),
                scheduled_for: due_at,
                next_run_at: next.map(ms),
                manual: false,
                now_ms: ms(now),
                due_ms: crate::now_ms(),
                text: task.prompt.clone(),
                notice,
            })
            .await?;
        Ok(fired.map(|f| {
            tracing::info!(task = %task.id, run = f.run_id, due = %when, late_ms = ms(now) - due_at, "task fired");
            f.session_id
        }))
    }

    /// Sleep until the next task is due or tasks change. `last_pass`: the clock reading the last
    /// [`Scheduler::fire_due`] pass used. A task still due by then could not be fired (the database
    /// failed); it is tried again after a pause rather than in a busy loop.
    pub async fn wait(&self, last_pass: DateTime<Utc>) {
        let woken = self.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match self.next_due().await {
            Ok(Some(at)) if at <= last_pass => {
                tracing::warn!(due = %at, "a due task could not be fired; trying again in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    _ = woken => {}
                }
            }
            Ok(Some(at)) if at <= self.clock.now() => {}
            Ok(Some(at)) => {
                tokio::select! {
                    _ = self.clock.sleep_until(at) => {}
                    _ = woken => {}
                }
            }
            Ok(None) => woken.await,
            Err(e) => {
                tracing::error!(error = %e, "reading the next task due failed");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    _ = woken => {}
                }
            }
        }
    }

    /// A task for people and agents.
    pub async fn view(&self, task: &Task) -> TaskView {
        let folder = match self.store.group(task.group_id.clone()).await {
            Ok(Some(g)) => g.folder,
            _ => task.group_id.clone(),
        };
        self.view_in(task, &folder).await
    }

    /// Many tasks for people and agents, the groups read once.
    pub async fn views(&self, tasks: &[Task]) -> Result<Vec<TaskView>, StoreError> {
        let folders: std::collections::HashMap<String, String> = self
            .store
            .list_groups()
            .await?
            .into_iter()
            .map(|g| (g.id, g.folder))
            .collect();
        let mut views = Vec::with_capacity(tasks.len());
        for task in tasks {
            let folder = folders.get(&task.group_id).unwrap_or(&task.group_id);
            views.push(self.view_in(task, folder).await);
        }
        Ok(views)
    }

    async fn view_in(&self, task: &Task, group_folder: &str) -> TaskView {
        let tz = Self::task_zone(task);
        let schedule = Self::parse_stored(task)
            .map(|s| s.describe(tz))
            .unwrap_or_else(|e| e.to_string());
        let last_run = self
            .store
            .task_runs(task.id.clone(), 1)
            .await
            .ok()
            .and_then(|runs| runs.into_iter().next())
            .map(|r| run_view(&r, tz));
        TaskView {
            task_id: task.id.clone(),
            group: group_folder.to_owned(),
            prompt: task.prompt.clone(),
            schedule,
            timezone: task.timezone.clone(),
            status: task.status,
            next_run: task.next_run_at.map(|t| rfc3339_in(from_ms(t), tz)),
            next_run_local: task
                .next_run_at
                .map(|t| nanoclaw_schedule::format_local(from_ms(t), tz)),
            isolated: task.isolated,
            has_script: task.script.is_some(),
            consecutive_failures: task.consecutive_failures,
            last_run,
        }
    }

    /// What the agent is told about a task's run.
    pub fn task_run_for_turn(&self, task: &Task, run: &TaskRunRow) -> nanoclaw_protocol::TaskRun {
        let tz = Self::task_zone(task);
        let late_secs = run.late_ms / 1000;
        nanoclaw_protocol::TaskRun {
            task_id: task.id.clone(),
            scheduled_for: rfc3339_in(from_ms(run.scheduled_for), tz),
            late_by_secs: (!run.manual
                && run.late_ms > (self.settings.late_after_secs as i64) * 1000)
                .then_some(late_secs.max(0) as u64),
            script: task.script.clone(),
            isolated: task.isolated,
        }
    }

    /// The current time in `tz`, for the agent's context line.
    pub fn local_now(&self, tz: Tz) -> String {
        rfc3339_in(self.clock.now(), tz)
    }

    /// The host's zone.
    pub fn host_tz(&self) -> Tz {
        self.host_tz
    }
}

/// One run for people and agents.
pub fn run_view(r: &TaskRunRow, tz: Tz) -> RunView {
    RunView {
        run_id: r.id,
        status: r.status,
        scheduled_for: rfc3339_in(from_ms(r.scheduled_for), tz),
        late_secs: r.late_ms / 1000,
        manual: r.manual,
        finished_at: r.finished_at.map(|t| rfc3339_in(from_ms(t), tz)),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        error: r.error.clone(),
    }
}

/// The store's "cannot" errors are the user's to read, not internal failures.
fn invalid_store(e: StoreError) -> TaskError {
    match e {
        StoreError::Invalid(m) => TaskError::Invalid(m),
        StoreError::NotFound { id, .. } => TaskError::NotFound(id),
        other => TaskError::Store(other),
    }
}

/// An agent's task request, checked (see `host::requests`, where every agent request is
/// authorized); kept here under its old name for callers of the task API.
pub use crate::host::requests::task_request as handle_request;

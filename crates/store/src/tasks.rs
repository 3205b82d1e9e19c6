//! Scheduled tasks and their run history. The store knows nothing of cron: the host computes fire
//! times and hands them in; the store makes firing atomic and exactly-once.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::engine::{Store, new_id};
use crate::error::{Ctx, StoreError};
use crate::model::NewOutbound;
use crate::outbound::insert_outbound_tx;
use crate::sessions::{SessionKey, resolve_session_tx, wiring_mode_tx};

/// Failed runs in a row after which a task is marked `failing`.
pub const TASK_FAILING_AFTER: u32 = 3;

crate::model::text_enum!(
    /// Lifecycle of a task.
    TaskStatus {
        Active => "active",
        Paused => "paused",
        /// A one-off that ran, or a schedule with no more fire times.
        Done => "done",
        Cancelled => "cancelled",
        /// Still scheduled, but its last runs failed.
        Failing => "failing",
    }
);

crate::model::text_enum!(
    /// Outcome of one run.
    RunStatus {
        /// Fired; its turn is queued or in progress.
        Queued => "queued",
        Ok => "ok",
        /// The pre-check script said there was nothing to do; the model was not called.
        Skipped => "skipped",
        Failed => "failed",
        /// Due while the host was down, and skipped by the missed-run policy.
        Missed => "missed",
    }
);

/// A stored task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub group_id: String,
    pub chat_id: i64,
    pub prompt: String,
    pub script: Option<String>,
    /// The schedule as JSON (nanoclaw-schedule's `Schedule`).
    pub schedule: String,
    pub timezone: String,
    pub isolated: bool,
    pub status: TaskStatus,
    /// Unix ms of the next fire; `None` when there is none.
    pub next_run_at: Option<i64>,
    pub consecutive_failures: u32,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Input of [`Store::create_task`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    pub group_id: String,
    pub chat_id: i64,
    pub prompt: String,
    pub script: Option<String>,
    pub schedule: String,
    pub timezone: String,
    pub isolated: bool,
    pub next_run_at: Option<i64>,
    pub created_by: String,
}

/// Changes for [`Store::update_task`]; `None` keeps a field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskChanges {
    pub prompt: Option<String>,
    /// `Some(None)` removes the script.
    pub script: Option<Option<String>>,
    /// A new schedule with its next fire time.
    pub schedule: Option<(String, Option<i64>)>,
}

/// One run of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRunRow {
    pub id: i64,
    pub task_id: String,
    pub scheduled_for: i64,
    pub fired_at: i64,
    pub finished_at: Option<i64>,
    pub status: RunStatus,
    pub late_ms: i64,
    pub manual: bool,
    pub inbound_id: Option<i64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub error: Option<String>,
}

/// Input of [`Store::fire_task`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FireTask {
    pub task_id: String,
    /// The fire time being run: the task's current `next_run_at` (compare-and-set), or for a manual
    /// run the time it was asked for.
    pub scheduled_for: i64,
    /// The task's next fire after this one; `None` ends it (`done`).
    pub next_run_at: Option<i64>,
    /// A manual run (`run-now`): does not move the schedule.
    pub manual: bool,
    /// When the run is fired (host clock).
    pub now_ms: i64,
    /// Unix ms the queued turn is due (the host's real clock).
    pub due_ms: i64,
    /// The inbound text the turn carries (the prompt).
    pub text: String,
    /// A message to queue in the task's chat with the run (e.g. "running late").
    pub notice: Option<String>,
}

/// What [`Store::fire_task`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredRun {
    pub run_id: i64,
    pub inbound_id: i64,
    pub session_id: String,
}

/// A run that ended failed, for alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRun {
    pub task_id: String,
    pub run_id: i64,
    pub consecutive_failures: u32,
    /// This failure made the task `failing`.
    pub now_failing: bool,
}

const TASK_COLS: &str = "id, group_id, chat_id, prompt, script, schedule, timezone, isolated, status, \
     next_run_at, consecutive_failures, created_by, created_at, updated_at";
const RUN_COLS: &str = "id, task_id, scheduled_for, fired_at, finished_at, status, late_ms, manual, \
     inbound_id, input_tokens, output_tokens, error";

fn task_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: r.get(0)?,
        group_id: r.get(1)?,
        chat_id: r.get(2)?,
        prompt: r.get(3)?,
        script: r.get(4)?,
        schedule: r.get(5)?,
        timezone: r.get(6)?,
        isolated: r.get(7)?,
        status: r.get(8)?,
        next_run_at: r.get(9)?,
        consecutive_failures: r.get(10)?,
        created_by: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

fn run_row(r: &Row<'_>) -> rusqlite::Result<TaskRunRow> {
    Ok(TaskRunRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        scheduled_for: r.get(2)?,
        fired_at: r.get(3)?,
        finished_at: r.get(4)?,
        status: r.get(5)?,
        late_ms: r.get(6)?,
        manual: r.get(7)?,
        inbound_id: r.get(8)?,
        input_tokens: r.get::<_, i64>(9)?.max(0) as u64,
        output_tokens: r.get::<_, i64>(10)?.max(0) as u64,
        error: r.get(11)?,
    })
}

fn task_by_id(conn: &Connection, id: &str) -> Result<Option<Task>, StoreError> {
    conn.query_row(
        &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
        [id],
        task_row,
    )
    .optional()
    .ctx("look up task")
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "task",
        id: id.to_owned(),
    }
}

/// Record the end of the runs carried by `inbound_ids` (those still `queued`), inside a transaction.
/// A failure counts towards `failing`; a success clears it.
pub(crate) fn finish_runs_tx(
    tx: &Connection,
    inbound_ids: &[i64],
    status: RunStatus,
    tokens: (u64, u64),
    error: Option<&str>,
    now_ms: i64,
) -> Result<Vec<FailedRun>, StoreError> {
    let mut failed = Vec::new();
    for id in inbound_ids {
        let run: Option<(i64, String)> = tx
            .query_row(
                "SELECT r.id, r.task_id FROM inbound i JOIN task_runs r ON r.id = i.task_run_id
                 WHERE i.id = ?1 AND r.status = 'queued'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx("find the run of an inbound row")?;
        let Some((run_id, task_id)) = run else {
            continue;
        };
        tx.execute(
            "UPDATE task_runs SET status = ?2, finished_at = ?3, input_tokens = ?4, output_tokens = ?5,
                 error = ?6
             WHERE id = ?1",
            params![
                run_id,
                status,
                now_ms,
                i64::try_from(tokens.0).unwrap_or(i64::MAX),
                i64::try_from(tokens.1).unwrap_or(i64::MAX),
                error
            ],
        )
        .ctx("finish task run")?;
        if status == RunStatus::Failed {
            let (count, was): (u32, TaskStatus) = tx
                .query_row(
                    "UPDATE tasks SET consecutive_failures = consecutive_failures + 1, updated_at = ?2
                     WHERE id = ?1 RETURNING consecutive_failures, status",
                    params![task_id, now_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ctx("count task failures")?;
            let now_failing = count >= TASK_FAILING_AFTER && was == TaskStatus::Active;
            if now_failing {
                tx.execute(
                    "UPDATE tasks SET status = 'failing' WHERE id = ?1",
                    [&task_id],
                )
                .ctx("mark task failing")?;
            }
            failed.push(FailedRun {
                task_id,
                run_id,
                consecutive_failures: count,
                now_failing,
            });
        } else {
            tx.execute(
                "UPDATE tasks SET consecutive_failures = 0, updated_at = ?2,
                     status = CASE status WHEN 'failing' THEN 'active' ELSE status END
                 WHERE id = ?1",
                params![task_id, now_ms],
            )
            .ctx("clear task failures")?;
        }
    }
    Ok(failed)
}

impl Store {
    /// Store a new task (`active`).
    pub async fn create_task(&self, t: NewTask) -> Result<Task, StoreError> {
        self.write("create task", move |tx| {
            let id = new_id("task");
            let now = crate::engine::now_ms();
            tx.execute(
                &format!(
                    "INSERT INTO tasks ({TASK_COLS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?9, 0, ?10, ?11, ?11)"
                ),
                params![
                    id,
                    t.group_id,
                    t.chat_id,
                    t.prompt,
                    t.script,
                    t.schedule,
                    t.timezone,
                    t.isolated,
                    t.next_run_at,
                    t.created_by,
                    now
                ],
            )
            .ctx("insert task")?;
            task_by_id(tx, &id)?.ok_or_else(|| not_found(&id))
        })
        .await
    }

    /// The task with this id.
    pub async fn task(&self, id: impl Into<String>) -> Result<Option<Task>, StoreError> {
        let id = id.into();
        self.read(move |conn| task_by_id(conn, &id)).await
    }

    /// Tasks, optionally of one group, soonest first (then the rest by creation).
    pub async fn list_tasks(&self, group_id: Option<String>) -> Result<Vec<Task>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TASK_COLS} FROM tasks WHERE ?1 IS NULL OR group_id = ?1
                     ORDER BY next_run_at IS NULL, next_run_at, created_at, id"
                ))
                .ctx("list tasks")?;
            let rows = stmt.query_map([&group_id], task_row).ctx("list tasks")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list tasks")
        })
        .await
    }

    /// Change a task's prompt, script or schedule. Finished and cancelled tasks cannot change.
    pub async fn update_task(
        &self,
        id: impl Into<String>,
        changes: TaskChanges,
    ) -> Result<Task, StoreError> {
        let id = id.into();
        self.write("update task", move |tx| {
            let task = task_by_id(tx, &id)?.ok_or_else(|| not_found(&id))?;
            if matches!(task.status, TaskStatus::Done | TaskStatus::Cancelled) {
                return Err(StoreError::Invalid(format!(
                    "task {id} is {} and cannot change; schedule a new one",
                    task.status
                )));
            }
            let now = crate::engine::now_ms();
            if let Some(prompt) = &changes.prompt {
                tx.execute(
                    "UPDATE tasks SET prompt = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, prompt, now],
                )
                .ctx("update task prompt")?;
            }
            if let Some(script) = &changes.script {
                tx.execute(
                    "UPDATE tasks SET script = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, script, now],
                )
                .ctx("update task script")?;
            }
            if let Some((schedule, next)) = &changes.schedule {
                tx.execute(
                    "UPDATE tasks SET schedule = ?2, next_run_at = ?3, updated_at = ?4 WHERE id = ?1",
                    params![id, schedule, next, now],
                )
                .ctx("update task schedule")?;
            }
            task_by_id(tx, &id)?.ok_or_else(|| not_found(&id))
        })
        .await
    }

    /// Move a task to `status` (pause, resume, cancel), with its next fire time. Only sensible moves
    /// are allowed: a cancelled or finished task stays so.
    pub async fn set_task_status(
        &self,
        id: impl Into<String>,
        status: TaskStatus,
        next_run_at: Option<i64>,
    ) -> Result<Task, StoreError> {
        let id = id.into();
        self.write("set task status", move |tx| {
            let task = task_by_id(tx, &id)?.ok_or_else(|| not_found(&id))?;
            let allowed = match (task.status, status) {
                (TaskStatus::Done | TaskStatus::Cancelled, _) => false,
                (TaskStatus::Active | TaskStatus::Failing, TaskStatus::Paused) => true,
                (TaskStatus::Paused, TaskStatus::Active) => true,
                (_, TaskStatus::Cancelled) => true,
                _ => false,
            };
            if !allowed {
                return Err(StoreError::Invalid(format!(
                    "task {id} is {}; it cannot become {status}",
                    task.status
                )));
            }
            tx.execute(
                "UPDATE tasks SET status = ?2, next_run_at = ?3, updated_at = ?4,
                     consecutive_failures = CASE WHEN ?2 = 'active' THEN 0 ELSE consecutive_failures END
                 WHERE id = ?1",
                params![id, status, next_run_at, crate::engine::now_ms()],
            )
            .ctx("set task status")?;
            task_by_id(tx, &id)?.ok_or_else(|| not_found(&id))
        })
        .await
    }

    /// The earliest fire time of any scheduled task (may be in the past).
    pub async fn next_task_due(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT MIN(next_run_at) FROM tasks WHERE status IN ('active', 'failing')",
                [],
                |r| r.get(0),
            )
            .ctx("find the next task due")
        })
        .await
    }

    /// Scheduled tasks due at `now_ms`, most overdue first.
    pub async fn due_tasks(&self, now_ms: i64, max: usize) -> Result<Vec<Task>, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TASK_COLS} FROM tasks
                     WHERE status IN ('active', 'failing') AND next_run_at <= ?1
                     ORDER BY next_run_at, id LIMIT ?2"
                ))
                .ctx("list due tasks")?;
            let rows = stmt
                .query_map(params![now_ms, max], task_row)
                .ctx("list due tasks")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list due tasks")
        })
        .await
    }

    /// Fire a run in ONE transaction: record it (unique per task and scheduled time), queue its turn
    /// in the task's chat session, and advance the task. `Ok(None)`: nothing fired — the task changed
    /// meanwhile (its `next_run_at` is no longer `scheduled_for`, or it was paused or cancelled), or
    /// this run was already fired.
    pub async fn fire_task(&self, f: FireTask) -> Result<Option<FiredRun>, StoreError> {
        self.write("fire task", move |tx| {
            let Some(task) = task_by_id(tx, &f.task_id)? else {
                return Ok(None);
            };
            let scheduled = matches!(task.status, TaskStatus::Active | TaskStatus::Failing);
            if f.manual {
                if matches!(task.status, TaskStatus::Done | TaskStatus::Cancelled) {
                    return Err(StoreError::Invalid(format!(
                        "task {} is {}; it cannot run",
                        task.id, task.status
                    )));
                }
            } else if !scheduled || task.next_run_at != Some(f.scheduled_for) {
                return Ok(None);
            }
            let inserted = tx
                .execute(
                    "INSERT INTO task_runs (task_id, scheduled_for, fired_at, status, late_ms, manual)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5)
                     ON CONFLICT (task_id, scheduled_for) DO NOTHING",
                    params![
                        task.id,
                        f.scheduled_for,
                        f.now_ms,
                        (f.now_ms - f.scheduled_for).max(0),
                        f.manual
                    ],
                )
                .ctx("record task run")?;
            if inserted == 0 {
                if !f.manual {
                    // Already fired (this exact time): move the task on, so it is not due forever.
                    tx.execute(
                        "UPDATE tasks SET next_run_at = ?2, updated_at = ?3,
                             status = CASE WHEN ?2 IS NULL THEN 'done' ELSE status END
                         WHERE id = ?1",
                        params![task.id, f.next_run_at, f.now_ms],
                    )
                    .ctx("advance an already fired task")?;
                }
                return Ok(None);
            }
            let run_id = tx.last_insert_rowid();
            // Runs use the chat's shared session (its ongoing conversation, unless isolated).
            // The run joins the conversation the task's chat is in (the group's, when the
            // chat is wired agent-shared).
            let mode = wiring_mode_tx(tx, &task.group_id, task.chat_id)?;
            let key = SessionKey::new(mode, task.chat_id, None);
            let session = resolve_session_tx(tx, &task.group_id, key, f.due_ms)?;
            tx.execute(
                "INSERT INTO inbound (session_id, chat_id, platform_msg_id, sender, sender_name, text,
                                      thread, received_at, status, tries, process_after, updated_at,
                                      task_run_id)
                 VALUES (?1, ?2, ?3, 'scheduler', ?4, ?5, NULL, ?6, 'pending', 0, ?6, ?6, ?7)",
                params![
                    session.id,
                    task.chat_id,
                    format!("task:{}:{}", task.id, f.scheduled_for),
                    format!("scheduled task {}", task.id),
                    f.text,
                    f.due_ms,
                    run_id
                ],
            )
            .ctx("queue the task's turn")?;
            let inbound_id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE task_runs SET inbound_id = ?2 WHERE id = ?1",
                params![run_id, inbound_id],
            )
            .ctx("link task run")?;
            if !f.manual {
                let status = if f.next_run_at.is_some() {
                    task.status
                } else {
                    TaskStatus::Done
                };
                tx.execute(
                    "UPDATE tasks SET next_run_at = ?2, status = ?3, updated_at = ?4 WHERE id = ?1",
                    params![task.id, f.next_run_at, status, f.now_ms],
                )
                .ctx("advance task")?;
            }
            if let Some(text) = &f.notice {
                insert_outbound_tx(
                    tx,
                    &NewOutbound {
                        session_id: Some(session.id.clone()),
                        chat_id: task.chat_id,
                        in_reply_to: None,
                        idempotency_key: format!("task-notice:{run_id}"),
                        text: text.clone(),
                        kind: crate::model::OutboundKind::Message,
                        files: Vec::new(),
                    },
                    f.due_ms,
                )?;
            }
            Ok(Some(FiredRun {
                run_id,
                inbound_id,
                session_id: session.id,
            }))
        })
        .await
    }

    /// A run missed while the host was down, skipped by policy: recorded as `missed`, the task
    /// advanced, and `notice` queued in its chat. `false`: the task changed meanwhile.
    pub async fn skip_missed_run(
        &self,
        task_id: impl Into<String>,
        scheduled_for: i64,
        next_run_at: Option<i64>,
        now_ms: i64,
        notice: String,
    ) -> Result<bool, StoreError> {
        let task_id = task_id.into();
        self.write("skip missed task run", move |tx| {
            let Some(task) = task_by_id(tx, &task_id)? else {
                return Ok(false);
            };
            if !matches!(task.status, TaskStatus::Active | TaskStatus::Failing)
                || task.next_run_at != Some(scheduled_for)
            {
                return Ok(false);
            }
            let inserted = tx
                .execute(
                    "INSERT INTO task_runs (task_id, scheduled_for, fired_at, finished_at, status, late_ms)
                     VALUES (?1, ?2, ?3, ?3, 'missed', ?4)
                     ON CONFLICT (task_id, scheduled_for) DO NOTHING",
                    params![task_id, scheduled_for, now_ms, (now_ms - scheduled_for).max(0)],
                )
                .ctx("record missed run")?;
            if inserted == 0 {
                return Ok(false);
            }
            let run_id = tx.last_insert_rowid();
            let status = if next_run_at.is_some() {
                task.status
            } else {
                TaskStatus::Done
            };
            tx.execute(
                "UPDATE tasks SET next_run_at = ?2, status = ?3, updated_at = ?4 WHERE id = ?1",
                params![task_id, next_run_at, status, now_ms],
            )
            .ctx("advance task")?;
            insert_outbound_tx(
                tx,
                &NewOutbound {
                    session_id: None,
                    chat_id: task.chat_id,
                    in_reply_to: None,
                    idempotency_key: format!("task-notice:{run_id}"),
                    text: notice.clone(),
                    kind: crate::model::OutboundKind::Message,
                    files: Vec::new(),
                },
                now_ms,
            )?;
            Ok(true)
        })
        .await
    }

    /// Finish a task turn in ONE transaction: queue the replies, mark the inbound rows `done`, and
    /// record the run's outcome (`ok` or `skipped`) and tokens.
    pub async fn complete_task_turn(
        &self,
        inbound_ids: Vec<i64>,
        replies: Vec<NewOutbound>,
        status: RunStatus,
        tokens: (u64, u64),
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write("complete task turn", move |tx| {
            crate::inbound::complete_turn_tx(tx, &inbound_ids, &replies, now_ms)?;
            finish_runs_tx(tx, &inbound_ids, status, tokens, None, now_ms)?;
            Ok(())
        })
        .await
    }

    /// The runs of a task, newest first.
    pub async fn task_runs(
        &self,
        task_id: impl Into<String>,
        max: usize,
    ) -> Result<Vec<TaskRunRow>, StoreError> {
        let task_id = task_id.into();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLS} FROM task_runs WHERE task_id = ?1
                     ORDER BY scheduled_for DESC, id DESC LIMIT ?2"
                ))
                .ctx("list task runs")?;
            let rows = stmt
                .query_map(params![task_id, max], run_row)
                .ctx("list task runs")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list task runs")
        })
        .await
    }

    /// The run with this id.
    pub async fn task_run(&self, id: i64) -> Result<Option<TaskRunRow>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {RUN_COLS} FROM task_runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()
            .ctx("look up task run")
        })
        .await
    }
}

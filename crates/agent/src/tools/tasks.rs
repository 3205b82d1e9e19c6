//! Scheduled tasks: `schedule_task`, `list_tasks`, `update_task`, `pause_task`,
//! `resume_task` and `cancel_task`. The host owns the tasks: it parses schedules, authorizes
//! every request (a group manages only its own tasks, the main group all) and runs them.

use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_protocol::RequestAction;
use serde_json::{Value, json};

use super::{
    SUMMARY_CHARS, Tool, ToolContext, ToolOutput, not_this_action, parse_action, str_field,
};
use crate::format::truncate_chars;
use crate::precheck;
use crate::provider::ToolSpec;

pub struct ScheduleTaskTool;
pub struct ListTasksTool;
pub struct UpdateTaskTool;
pub struct PauseTaskTool;
pub struct ResumeTaskTool;
pub struct CancelTaskTool;

const TIMEOUT: Duration = Duration::from_secs(30);

/// How to write a schedule; shared by `schedule_task` and `update_task`.
const SCHEDULE_HELP: &str = "One of: a 5-field cron expression \"minute hour day-of-month \
     month day-of-week\", evaluated in the user's time zone shown in the <context> line (every \
     weekday at 9am: \"0 9 * * 1-5\"; Mondays at 8:30: \"30 8 * * 1\"; the 1st of each month \
     at noon: \"0 12 1 * *\"); a repeating interval \"every 30m\" or \"every 2h\"; a one-off \
     relative time \"in 20 minutes\"; or a one-off local date-time \"2026-11-27 09:00\" (also \
     in the user's zone).";

/// How to write a prompt; shared by `schedule_task` and `update_task`.
const PROMPT_HELP: &str = "What you will be asked at each run, as a self-contained \
     instruction: the run may not see this conversation, so name everything it needs, e.g. \
     \"Look up today's weather forecast for Berlin and tell the user whether to take an \
     umbrella.\", not \"do that again\".";

fn script_help() -> String {
    format!(
        "Optional pre-check: a bash script run in the workspace before each run, without \
         calling the model, so cheap polling spends no tokens. Use one for anything that checks \
         more than a few times a day (a web page, a price, new files). Its last stdout line \
         must be JSON {{\"wakeAgent\": true|false, \"data\": …}}: false ends the run quietly; \
         true wakes you with `data` shown in <precheck-data>. Example: \
         `n=$(ls inbox | wc -l); if [ \"$n\" -gt 0 ]; then echo \"{{\\\"wakeAgent\\\": true, \
         \\\"data\\\": {{\\\"files\\\": $n}}}}\"; else echo '{{\"wakeAgent\": false}}'; fi`. It \
         may keep state in files in the workspace to notice changes, reaches the network \
         through the same proxy as bash, and must finish within {} s; a non-zero exit or a \
         last line of another shape fails the run.",
        precheck::TIMEOUT.as_secs()
    )
}

/// Sends `action` and turns the host's answer into the tool's output: the host's data as
/// pretty JSON (or `done` when it sent none), or why it refused.
async fn ask_host(ctx: &ToolContext, action: RequestAction, what: &str, done: &str) -> ToolOutput {
    let refused = format!("the host refused to {what}");
    match super::ask_host(ctx, action, TIMEOUT, &refused).await {
        Ok(data) if data.is_null() => ToolOutput::ok(done),
        Ok(data) => {
            ToolOutput::ok(serde_json::to_string_pretty(&data).unwrap_or_else(|_| data.to_string()))
        }
        Err(refused) => refused,
    }
}

/// `Err` naming `field` when `value` is blank.
fn non_empty(tool: &str, field: &str, value: &str) -> Result<(), ToolOutput> {
    if value.trim().is_empty() {
        Err(ToolOutput::error(format!(
            "invalid input for {tool}: `{field}` is empty"
        )))
    } else {
        Ok(())
    }
}

/// Models often send `""` for an optional field they mean to leave out.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// `schedule_task`'s action with a non-empty prompt and schedule, the schedule trimmed and
/// blank optional fields left out.
fn checked_schedule(tool: &str, mut action: RequestAction) -> Result<RequestAction, ToolOutput> {
    let RequestAction::ScheduleTask {
        prompt,
        schedule,
        script,
        group,
        ..
    } = &mut action
    else {
        return Err(not_this_action(tool));
    };
    non_empty(tool, "prompt", prompt)?;
    non_empty(tool, "schedule", schedule)?;
    *schedule = schedule.trim().to_owned();
    *script = given(script.take());
    *group = given(group.take());
    Ok(action)
}

#[async_trait]
impl Tool for ScheduleTaskTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "schedule_task".into(),
            description: format!(
                "Schedule a task: at each run you are given `prompt` in this chat and your \
                 answer is sent to the chat. Use it for reminders, recurring reports and \
                 watching for changes. Schedule formats: {SCHEDULE_HELP} Returns the task as \
                 the host stored it: its id, how the schedule was understood and the next run \
                 time; tell the user the next run time so a misunderstanding shows at once."
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "prompt": {"type": "string", "description": PROMPT_HELP},
                    "schedule": {"type": "string", "description": SCHEDULE_HELP},
                    "script": {"type": "string", "description": script_help()},
                    "isolated": {
                        "type": "boolean",
                        "description": "true: each run starts in a fresh, empty conversation \
                                        that neither sees nor changes this chat's ongoing \
                                        conversation (good for routine reports). Default \
                                        false: runs continue this chat's conversation."
                    },
                    "group": {
                        "type": "string",
                        "description": "Main group only: the folder of the group the task \
                                        belongs to. Leave out for this group."
                    }
                },
                "required": ["prompt", "schedule"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(
            &format!(
                "{}: {}",
                str_field(input, "schedule"),
                str_field(input, "prompt")
            ),
            SUMMARY_CHARS,
        )
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let tool = "schedule_task";
        let action = match parse_action(tool, input).and_then(|a| checked_schedule(tool, a)) {
            Ok(action) => action,
            Err(e) => return e,
        };
        ask_host(ctx, action, "schedule the task", "task scheduled").await
    }
}

#[async_trait]
impl Tool for ListTasksTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_tasks".into(),
            description: "List the scheduled tasks of this group (in the main group: of every \
                          group) with their ids, prompts, schedules, next run times and whether \
                          they are paused. Use it to find a task's id before changing it."
                .into(),
            input_schema: json!({"type": "object", "properties": {}}),
        }
    }

    fn summary(&self, _input: &Value) -> String {
        "scheduled tasks".into()
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        match parse_action("list_tasks", input) {
            Ok(action) => ask_host(ctx, action, "list the tasks", "[]").await,
            Err(e) => e,
        }
    }
}

/// `update_task`'s action with a non-empty task id and at least one change; a blank prompt
/// or schedule is a mistake, a blank script means "remove it" (sent as `""`).
fn checked_update(tool: &str, mut action: RequestAction) -> Result<RequestAction, ToolOutput> {
    let RequestAction::UpdateTask {
        task_id,
        prompt,
        schedule,
        script,
    } = &mut action
    else {
        return Err(not_this_action(tool));
    };
    non_empty(tool, "task_id", task_id)?;
    for (field, value) in [("prompt", &*prompt), ("schedule", &*schedule)] {
        if let Some(v) = value {
            non_empty(tool, field, v)?;
        }
    }
    if prompt.is_none() && schedule.is_none() && script.is_none() {
        return Err(ToolOutput::error(
            "invalid input for update_task: give at least one of `prompt`, `schedule`, \
             `script`",
        ));
    }
    *task_id = task_id.trim().to_owned();
    if let Some(s) = schedule {
        *s = s.trim().to_owned();
    }
    if let Some(s) = script
        && s.trim().is_empty()
    {
        s.clear();
    }
    Ok(action)
}

#[async_trait]
impl Tool for UpdateTaskTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "update_task".into(),
            description: "Change a scheduled task's prompt, schedule or pre-check script; only \
                          the fields you give change. Same formats as schedule_task. Find the \
                          id with list_tasks."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string"},
                    "prompt": {"type": "string", "description": PROMPT_HELP},
                    "schedule": {"type": "string", "description": SCHEDULE_HELP},
                    "script": {
                        "type": "string",
                        "description": format!("{} An empty string removes the pre-check.", script_help())
                    }
                },
                "required": ["task_id"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(str_field(input, "task_id"), SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let tool = "update_task";
        let action = match parse_action(tool, input).and_then(|a| checked_update(tool, a)) {
            Ok(action) => action,
            Err(e) => return e,
        };
        ask_host(ctx, action, "update the task", "task updated").await
    }
}

fn task_id_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"task_id": {"type": "string", "description": "the id from list_tasks"}},
        "required": ["task_id"]
    })
}

/// The action of pause/resume/cancel from its input: a non-empty task id, trimmed.
fn task_id_action(tool: &str, input: Value) -> Result<RequestAction, ToolOutput> {
    let mut action = parse_action(tool, input)?;
    let (RequestAction::PauseTask { task_id }
    | RequestAction::ResumeTask { task_id }
    | RequestAction::CancelTask { task_id }) = &mut action
    else {
        return Err(not_this_action(tool));
    };
    non_empty(tool, "task_id", task_id)?;
    *task_id = task_id.trim().to_owned();
    Ok(action)
}

#[async_trait]
impl Tool for PauseTaskTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "pause_task".into(),
            description: "Pause a scheduled task: it does not run until resume_task. Find the \
                          id with list_tasks."
                .into(),
            input_schema: task_id_schema(),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(str_field(input, "task_id"), SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        match task_id_action("pause_task", input) {
            Ok(action) => ask_host(ctx, action, "pause the task", "task paused").await,
            Err(e) => e,
        }
    }
}

#[async_trait]
impl Tool for ResumeTaskTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "resume_task".into(),
            description: "Resume a paused task: it runs again from its next scheduled time \
                          (runs missed while paused are skipped)."
                .into(),
            input_schema: task_id_schema(),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(str_field(input, "task_id"), SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        match task_id_action("resume_task", input) {
            Ok(action) => ask_host(ctx, action, "resume the task", "task resumed").await,
            Err(e) => e,
        }
    }
}

#[async_trait]
impl Tool for CancelTaskTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "cancel_task".into(),
            description: "Delete a scheduled task for good (pause_task stops it for a while \
                          instead). Find the id with list_tasks."
                .into(),
            input_schema: task_id_schema(),
        }
    }

    fn summary(&self, input: &Value) -> String {
        truncate_chars(str_field(input, "task_id"), SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        match task_id_action("cancel_task", input) {
            Ok(action) => ask_host(ctx, action, "cancel the task", "task cancelled").await,
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;
    use nanoclaw_protocol::{AgentMessage, RequestResult};

    /// Runs `tool` with `input` while a fake host answers its one request with `answer`;
    /// returns the action the host saw and the tool's output.
    async fn with_host(
        tool: &dyn Tool,
        input: Value,
        answer: RequestResult,
    ) -> (RequestAction, ToolOutput) {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = ctx(dir.path());
        let host = ctx.host.clone();
        let fake_host = tokio::spawn(async move {
            let Some(AgentMessage::Request(req)) = rx.recv().await else {
                panic!("expected a request");
            };
            assert_eq!(req.turn_id, "t1");
            host.resolve(RequestResult {
                request_id: req.request_id,
                ..answer
            });
            req.action
        });
        let out = tool.run(input, &ctx).await;
        (fake_host.await.unwrap(), out)
    }

    fn ok(data: Value) -> RequestResult {
        RequestResult {
            request_id: String::new(),
            ok: true,
            error: None,
            data,
        }
    }

    #[tokio::test]
    async fn schedule_task_sends_the_fields_and_shows_the_hosts_data() {
        let (action, out) = with_host(
            &ScheduleTaskTool,
            json!({"prompt": "Say good morning.", "schedule": " 0 9 * * 1-5 ", "script": "",
                   "isolated": true}),
            ok(json!({"task_id": "t-7", "next_run": "2026-11-27T09:00:00+01:00"})),
        )
        .await;
        assert_eq!(
            action,
            RequestAction::ScheduleTask {
                prompt: "Say good morning.".into(),
                schedule: "0 9 * * 1-5".into(),
                script: None,
                isolated: true,
                group: None,
            }
        );
        assert!(!out.is_error, "{out:?}");
        assert!(
            out.content.contains("\"task_id\": \"t-7\""),
            "{}",
            out.content
        );
    }

    #[tokio::test]
    async fn a_refusal_names_the_action_and_the_reason() {
        let (action, out) = with_host(
            &CancelTaskTool,
            json!({"task_id": "t-9"}),
            RequestResult {
                ok: false,
                error: Some("task t-9 belongs to another group".into()),
                ..ok(Value::Null)
            },
        )
        .await;
        assert_eq!(
            action,
            RequestAction::CancelTask {
                task_id: "t-9".into()
            }
        );
        assert!(out.is_error);
        assert_eq!(
            out.content,
            "the host refused to cancel the task: task t-9 belongs to another group"
        );
    }

    #[tokio::test]
    async fn update_task_passes_an_empty_script_to_remove_it() {
        let (action, out) = with_host(
            &UpdateTaskTool,
            json!({"task_id": "t-1", "script": ""}),
            ok(Value::Null),
        )
        .await;
        assert_eq!(
            action,
            RequestAction::UpdateTask {
                task_id: "t-1".into(),
                prompt: None,
                schedule: None,
                script: Some(String::new()),
            }
        );
        assert_eq!(out, ToolOutput::ok("task updated"));
    }

    #[tokio::test]
    async fn blank_or_missing_fields_are_refused_without_asking_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = ctx(dir.path());
        let cases: [(&dyn Tool, Value, &str); 5] = [
            (
                &ScheduleTaskTool,
                json!({"prompt": " ", "schedule": "every 2h"}),
                "`prompt` is empty",
            ),
            (
                &ScheduleTaskTool,
                json!({"prompt": "x", "schedule": ""}),
                "`schedule` is empty",
            ),
            (
                &UpdateTaskTool,
                json!({"task_id": "t-1"}),
                "at least one of",
            ),
            (
                &UpdateTaskTool,
                json!({"task_id": "t-1", "schedule": " "}),
                "`schedule` is empty",
            ),
            (&PauseTaskTool, json!({"task_id": ""}), "`task_id` is empty"),
        ];
        for (tool, input, expected) in cases {
            let out = tool.run(input, &ctx).await;
            assert!(out.is_error && out.content.contains(expected), "{out:?}");
        }
        ctx.host.outbox().flush().await;
        assert!(rx.try_recv().is_err(), "a refused input reached the host");
    }

    #[tokio::test]
    async fn a_malformed_call_gets_serdes_error_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = ctx(dir.path());
        let cases: [(&dyn Tool, Value, &str); 5] = [
            (
                &ScheduleTaskTool,
                json!({"prompt": "x"}),
                "invalid input for schedule_task: missing field `schedule`",
            ),
            (
                &ScheduleTaskTool,
                json!({"prompt": "x", "schedule": "every 2h", "isolated": "yes"}),
                "invalid input for schedule_task: invalid type: string \"yes\", expected a boolean",
            ),
            (
                &UpdateTaskTool,
                json!({"prompt": "x"}),
                "invalid input for update_task: missing field `task_id`",
            ),
            (
                &CancelTaskTool,
                json!("t-1"),
                "invalid input for cancel_task: expected an object",
            ),
            (
                &ListTasksTool,
                json!([]),
                "invalid input for list_tasks: expected an object",
            ),
        ];
        for (tool, input, expected) in cases {
            let out = tool.run(input, &ctx).await;
            assert!(out.is_error, "{out:?}");
            assert_eq!(out.content, expected);
        }
        ctx.host.outbox().flush().await;
        assert!(rx.try_recv().is_err(), "a malformed call reached the host");
    }

    #[tokio::test]
    async fn the_example_pre_check_in_the_description_works() {
        let help = script_help();
        let example = help
            .split("Example: `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .unwrap();
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("inbox")).unwrap();
        let quiet = precheck::run(example, ws.path()).await.unwrap();
        assert!(!quiet.wake, "{quiet:?}");
        std::fs::write(ws.path().join("inbox/a.txt"), "a").unwrap();
        std::fs::write(ws.path().join("inbox/b.txt"), "b").unwrap();
        let woke = precheck::run(example, ws.path()).await.unwrap();
        assert!(woke.wake);
        assert_eq!(woke.data, json!({"files": 2}));
    }

    #[tokio::test]
    async fn list_tasks_shows_the_hosts_list() {
        let (action, out) = with_host(
            &ListTasksTool,
            json!({}),
            ok(json!([{"task_id": "t-1", "schedule": "every 30m"}])),
        )
        .await;
        assert_eq!(action, RequestAction::ListTasks);
        assert!(out.content.contains("every 30m"), "{}", out.content);
    }
}

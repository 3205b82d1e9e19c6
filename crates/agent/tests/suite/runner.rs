//! Runs the real `nanoclaw-agent` binary (outside any sandbox) against the scripted model,
//! reached through a Unix socket the test serves, as the host relay would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nanoclaw_protocol::contract;
use nanoclaw_protocol::{
    AgentMessage, ChatMessage, ChatRef, GroupInfo, Hello, HostMessage, LineReader, LineWriter,
    LogLevel, ModelConfig, PROTOCOL_MAJOR, PROTOCOL_MINOR, PrecheckOutcome, Request, RequestAction,
    RequestResult, TaskRun, ToolPhase, Turn, TurnFinished, Usage,
};
use nanoclaw_scripted_model::{Fault, Matcher, Reply, Scenario, ScriptedModel};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Guards against a hung agent; never an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The scripted model behind a Unix socket, like the host's model relay.
pub(super) struct Relay {
    _dir: tempfile::TempDir,
    pub(super) socket: PathBuf,
    pub(super) model: ScriptedModel,
}

pub(super) async fn relay(scenario: Scenario) -> Relay {
    let model = ScriptedModel::start(scenario).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join(contract::paths::MODEL_SOCKET_NAME);
    let listener = UnixListener::bind(&socket).unwrap();
    let target = model.addr();
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
            });
        }
    });
    Relay {
        _dir: dir,
        socket,
        model,
    }
}

pub(super) struct Agent {
    child: Child,
    stdin: ChildStdin,
    out: LineReader<BufReader<ChildStdout>>,
}

impl Agent {
    pub(super) fn spawn(workspace: &Path, socket: &Path) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nanoclaw-agent"))
            .env_clear()
            .env(contract::env::MODEL_SOCKET, socket)
            .env(contract::env::WORKSPACE, workspace)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", workspace)
            .env(contract::env::LOG, "warn")
            .current_dir(workspace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = LineReader::new(BufReader::new(child.stdout.take().unwrap()));
        Agent { child, stdin, out }
    }

    pub(super) async fn send(&mut self, msg: &HostMessage) {
        let mut w = LineWriter::new(&mut self.stdin);
        w.send(msg).await.unwrap();
    }

    async fn send_raw(&mut self, line: &[u8]) {
        self.stdin.write_all(line).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    pub(super) async fn next(&mut self) -> AgentMessage {
        tokio::time::timeout(HANG_GUARD, self.out.next::<AgentMessage>())
            .await
            .expect("the agent stopped talking")
            .unwrap()
            .expect("the agent closed stdout")
    }

    /// Messages up to and including the turn's end (finished or failed).
    pub(super) async fn until_turn_end(&mut self) -> Vec<AgentMessage> {
        let mut seen = Vec::new();
        loop {
            let msg = self.next().await;
            let end = matches!(
                msg,
                AgentMessage::TurnFinished(_) | AgentMessage::TurnFailed { .. }
            );
            seen.push(msg);
            if end {
                return seen;
            }
        }
    }

    pub(super) async fn handshake(&mut self, hello: Hello) {
        self.send(&HostMessage::Hello(hello)).await;
        match self.next().await {
            AgentMessage::Ready(r) => {
                assert_eq!(r.protocol_major, PROTOCOL_MAJOR);
                assert_eq!(r.agent_version, env!("CARGO_PKG_VERSION"));
            }
            other => panic!("expected ready, got {other:?}"),
        }
    }

    pub(super) async fn exit_code(mut self) -> i32 {
        drop(self.stdin);
        tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("the agent did not exit")
            .unwrap()
            .code()
            .unwrap_or(-1)
    }
}

pub(super) fn hello(provider: &str, session: &str) -> Hello {
    Hello {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        session_id: session.into(),
        group: GroupInfo {
            id: "g1".into(),
            name: "Test Group".into(),
            folder: "test".into(),
            is_main: true,
        },
        model: ModelConfig {
            provider: provider.into(),
            model: "scripted-1".into(),
            max_tokens: 1024,
            context_window: 200_000,
            stream_idle_timeout_secs: None,
        },
        assistant_name: "Andy".into(),
        timezone: Some("UTC".into()),
        skills: Vec::new(),
        mcp_servers: Vec::new(),
    }
}

pub(super) fn turn(id: &str, text: &str) -> HostMessage {
    HostMessage::Turn(Turn {
        turn_id: id.into(),
        messages: vec![ChatMessage {
            id: format!("m-{id}"),
            sender: "u1".into(),
            sender_name: Some("Alice".into()),
            time: "2025-01-01T12:00:00Z".into(),
            chat: ChatRef {
                channel: "terminal".into(),
                chat_id: "local".into(),
                thread: None,
            },
            text: text.into(),
        }],
        local_time: None,
        task: None,
    })
}

pub(super) fn finished(msgs: &[AgentMessage]) -> &TurnFinished {
    match msgs.last() {
        Some(AgentMessage::TurnFinished(f)) => f,
        other => panic!("expected the turn to finish, got {other:?} after {msgs:?}"),
    }
}

/// Every plain text the model was sent in the request's messages.
fn request_text(body: &Value) -> String {
    body["messages"].to_string()
}

async fn bash_turn_with(provider: &str) {
    let relay = relay(Scenario::demo_uname()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello(provider, "s1")).await;
    agent.send(&turn("t1", "which kernel?")).await;
    let msgs = agent.until_turn_end().await;

    let expected = std::process::Command::new("uname")
        .arg("-sr")
        .output()
        .unwrap();
    let expected = String::from_utf8(expected.stdout).unwrap();
    let done = finished(&msgs);
    assert_eq!(done.turn_id, "t1");
    assert!(
        done.reply.contains(expected.trim()),
        "reply {:?} should quote {:?}",
        done.reply,
        expected.trim()
    );
    assert!(done.usage.input_tokens > 0, "{:?}", done.usage);

    let streamed: String = msgs
        .iter()
        .filter_map(|m| match m {
            AgentMessage::TextDelta { turn_id, text } if turn_id == "t1" => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(streamed.contains("Let me check"), "{streamed}");
    assert!(streamed.contains(expected.trim()), "{streamed}");

    let activity: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            AgentMessage::ToolActivity(a) => Some((a.tool.as_str(), a.phase, a.summary.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        activity,
        vec![
            ("bash", ToolPhase::Started, "uname -sr"),
            ("bash", ToolPhase::Finished, "uname -sr")
        ]
    );

    // The conversation reached the model with the formatted, escaped chat message.
    let first = &relay.model.requests()[0];
    let sent = request_text(&first.body);
    assert!(sent.contains("sender=\\\"Alice\\\""), "{sent}");
    assert!(sent.contains("which kernel?"), "{sent}");

    agent.send(&HostMessage::Shutdown).await;
    assert_eq!(agent.exit_code().await, 0);
}

#[tokio::test]
async fn bash_turn_quotes_tool_output_over_anthropic() {
    bash_turn_with("anthropic").await;
}

#[tokio::test]
async fn bash_turn_quotes_tool_output_over_openai() {
    bash_turn_with("openai").await;
}

#[tokio::test]
async fn send_message_round_trips_through_the_host() {
    let scenario = Scenario::new()
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("tool said: {{last_tool_result}}"),
        )
        .rule(
            Matcher::Always,
            Reply::tool_call("send_message", json!({"text": "working on it"})),
        );
    let relay = relay(scenario).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    agent.send(&turn("t1", "do it")).await;

    let request = loop {
        match agent.next().await {
            AgentMessage::Request(r) => break r,
            AgentMessage::ToolActivity(_)
            | AgentMessage::TextDelta { .. }
            | AgentMessage::Log { .. } => {}
            other => panic!("expected a request, got {other:?}"),
        }
    };
    assert_eq!(request.turn_id, "t1");
    assert_eq!(
        request.action,
        RequestAction::SendMessage {
            text: "working on it".into(),
            files: Vec::new()
        }
    );
    agent
        .send(&HostMessage::RequestResult(RequestResult {
            request_id: request.request_id,
            ok: true,
            error: None,
            data: Value::Null,
        }))
        .await;
    let msgs = agent.until_turn_end().await;
    assert_eq!(finished(&msgs).reply, "tool said: message sent");
}

#[tokio::test]
async fn malformed_line_is_skipped_with_a_warning() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    agent.send_raw(b"{this is not json\n").await;
    match agent.next().await {
        AgentMessage::Log { level, message } => {
            assert_eq!(level, LogLevel::Warn);
            assert!(message.contains("malformed"), "{message}");
        }
        other => panic!("expected a warning, got {other:?}"),
    }
    agent.send(&turn("t1", "still there?")).await;
    let msgs = agent.until_turn_end().await;
    assert!(finished(&msgs).reply.contains("still there?"));
}

#[tokio::test]
async fn version_mismatch_is_fatal() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    h.protocol_major = PROTOCOL_MAJOR + 1;
    agent.send(&HostMessage::Hello(h)).await;
    match agent.next().await {
        AgentMessage::Fatal { error } => {
            assert!(error.contains("protocol version mismatch"), "{error}")
        }
        other => panic!("expected fatal, got {other:?}"),
    }
    assert_ne!(agent.exit_code().await, 0);
}

#[tokio::test]
async fn unknown_provider_is_fatal_and_lists_the_known_ones() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.send(&HostMessage::Hello(hello("gemini", "s1"))).await;
    match agent.next().await {
        AgentMessage::Fatal { error } => {
            assert!(error.contains("gemini"), "{error}");
            assert!(
                error.contains("anthropic") && error.contains("openai"),
                "{error}"
            );
        }
        other => panic!("expected fatal, got {other:?}"),
    }
    assert_ne!(agent.exit_code().await, 0);
}

#[tokio::test]
async fn restart_resumes_the_conversation() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();

    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "sess-9")).await;
    agent
        .send(&turn("t1", "my favourite fruit is banana"))
        .await;
    finished(&agent.until_turn_end().await);
    agent.send(&HostMessage::Shutdown).await;
    assert_eq!(agent.exit_code().await, 0);

    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "sess-9")).await;
    agent.send(&turn("t2", "what is my favourite fruit?")).await;
    finished(&agent.until_turn_end().await);
    let last = relay.model.requests().pop().unwrap();
    let sent = request_text(&last.body);
    assert!(
        sent.contains("banana"),
        "the resumed request lacks the first turn: {sent}"
    );
    assert!(
        sent.contains("echo: "),
        "the first answer is missing: {sent}"
    );
}

#[tokio::test]
async fn provider_error_fails_the_turn_and_rolls_it_back() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    relay.model.push_fault(Fault::status(
        400,
        "invalid_request_error",
        "messages: text content blocks must be non-empty",
    ));
    agent.send(&turn("t1", "FIRST-ATTEMPT")).await;
    let msgs = agent.until_turn_end().await;
    match msgs.last() {
        Some(AgentMessage::TurnFailed {
            turn_id,
            error,
            retryable,
        }) => {
            assert_eq!(turn_id, "t1");
            assert!(error.contains("must be non-empty"), "{error}");
            assert!(!retryable);
        }
        other => panic!("expected the turn to fail, got {other:?}"),
    }
    agent.send(&turn("t2", "SECOND")).await;
    let msgs = agent.until_turn_end().await;
    assert!(finished(&msgs).reply.contains(">SECOND</message>"));
    let last = relay.model.requests().pop().unwrap();
    assert!(
        !request_text(&last.body).contains("FIRST-ATTEMPT"),
        "the failed turn was not rolled back"
    );
}

#[tokio::test]
async fn long_conversation_is_compacted_with_a_summary() {
    let scenario = Scenario::new()
        .rule(
            Matcher::system_contains("You are compacting a conversation"),
            Reply::text("SUMMARY-OF-EARLIER-TALK"),
        )
        .rule(Matcher::Always, Reply::text("ok"));
    let relay = relay(scenario).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    // Small enough that a few long messages cross 75% of it.
    h.model.context_window = 6_000;
    agent.handshake(h).await;
    let mut compacted = false;
    for i in 0..12 {
        agent
            .send(&turn(
                &format!("t{i}"),
                &format!("note {i}: {}", "lorem ipsum ".repeat(250)),
            ))
            .await;
        for m in agent.until_turn_end().await {
            if let AgentMessage::Log { message, .. } = &m
                && message.contains("compacted the conversation")
            {
                compacted = true;
            }
            if let AgentMessage::TurnFailed { error, .. } = &m {
                panic!("turn failed: {error}");
            }
        }
        if compacted {
            break;
        }
    }
    assert!(compacted, "the conversation never got compacted");
    let reqs = relay.model.requests();
    let last = reqs.last().unwrap();
    let sent = request_text(&last.body);
    assert!(sent.contains("<conversation_summary>"), "{sent}");
    assert!(sent.contains("SUMMARY-OF-EARLIER-TALK"), "{sent}");
    assert!(
        !sent.contains("note 0:"),
        "the oldest turn should be summarized away"
    );
    // Memory and instructions stay in the system prompt.
    assert!(last.body["system"].to_string().contains("You are Andy"));
}

#[tokio::test]
async fn shutdown_right_after_a_turn_still_answers_it() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    agent.send(&turn("t1", "quick one")).await;
    agent.send(&HostMessage::Shutdown).await;
    let msgs = agent.until_turn_end().await;
    assert!(finished(&msgs).reply.contains("quick one"));
    // stdin stays open here: the shutdown alone ends the session.
    let code = tokio::time::timeout(HANG_GUARD, agent.child.wait())
        .await
        .expect("the agent did not exit after shutdown")
        .unwrap();
    assert_eq!(code.code(), Some(0));
}

fn task_turn(id: &str, text: &str, task: TaskRun) -> HostMessage {
    let HostMessage::Turn(mut turn) = turn(id, text) else {
        unreachable!()
    };
    turn.task = Some(task);
    HostMessage::Turn(turn)
}

fn task(id: &str, script: Option<&str>, isolated: bool) -> TaskRun {
    TaskRun {
        task_id: id.into(),
        scheduled_for: "2026-11-26T09:00:00+01:00".into(),
        late_by_secs: None,
        script: script.map(Into::into),
        isolated,
    }
}

/// The error of a failed turn, and whether it is retryable.
fn failure(msgs: &[AgentMessage]) -> (&str, bool) {
    match msgs.last() {
        Some(AgentMessage::TurnFailed {
            error, retryable, ..
        }) => (error, *retryable),
        other => panic!("expected the turn to fail, got {other:?} after {msgs:?}"),
    }
}

/// The next request the agent sends the host (tool activity and text pass by).
async fn next_request(agent: &mut Agent) -> Request {
    loop {
        match agent.next().await {
            AgentMessage::Request(r) => return r,
            AgentMessage::ToolActivity(_)
            | AgentMessage::TextDelta { .. }
            | AgentMessage::Log { .. } => {}
            other => panic!("expected a request, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn precheck_that_does_not_wake_skips_the_model_and_the_conversation() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    agent
        .send(&turn("t1", "my favourite fruit is banana"))
        .await;
    finished(&agent.until_turn_end().await);

    let script = "echo 'checking the inbox…'; echo '{\"wakeAgent\": false, \"data\": {\"n\": 0}}'";
    agent
        .send(&task_turn(
            "t2",
            "TASK-PROMPT report new mail",
            task("t-mail", Some(script), false),
        ))
        .await;
    let msgs = agent.until_turn_end().await;
    let done = finished(&msgs);
    assert_eq!(done.reply, "");
    assert_eq!(done.usage, Usage::default());
    assert_eq!(
        done.precheck,
        Some(PrecheckOutcome {
            woke: false,
            data: json!({"n": 0})
        })
    );
    assert_eq!(relay.model.requests().len(), 1, "the model was called");

    agent.send(&turn("t3", "anything new?")).await;
    finished(&agent.until_turn_end().await);
    let sent = request_text(&relay.model.requests().pop().unwrap().body);
    assert!(sent.contains("banana"), "{sent}");
    assert!(
        !sent.contains("TASK-PROMPT"),
        "the skipped run entered the conversation: {sent}"
    );
}

#[tokio::test]
async fn precheck_that_wakes_hands_its_data_to_the_model() {
    let relay = relay(Scenario::new().rule(Matcher::Always, Reply::text("3 new mails"))).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    let mut run = task(
        "t-mail",
        Some("echo '{\"wakeAgent\": true, \"data\": {\"n\": 3}}'"),
        false,
    );
    run.late_by_secs = Some(540);
    agent.send(&task_turn("t1", "Report new mail.", run)).await;
    let msgs = agent.until_turn_end().await;
    let done = finished(&msgs);
    assert_eq!(done.reply, "3 new mails");
    assert_eq!(
        done.precheck,
        Some(PrecheckOutcome {
            woke: true,
            data: json!({"n": 3})
        })
    );
    let requests = relay.model.requests();
    assert_eq!(requests.len(), 1);
    let sent = request_text(&requests[0].body);
    assert!(
        sent.contains(r#"<precheck-data>{\"n\":3}</precheck-data>"#),
        "{sent}"
    );
    assert!(
        sent.contains(
            r#"<scheduled-task id=\"t-mail\" scheduled_for=\"2026-11-26T09:00:00+01:00\" late_by_secs=\"540\"/>"#
        ),
        "{sent}"
    );
    assert!(sent.contains("This is a scheduled run of a task"), "{sent}");
    assert!(sent.contains("Report new mail."), "{sent}");
}

#[tokio::test]
async fn failing_precheck_fails_the_turn_with_its_status_and_stderr() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    agent
        .send(&task_turn(
            "t1",
            "Report new mail.",
            task("t-mail", Some("echo 'token expired' >&2; exit 3"), false),
        ))
        .await;
    let msgs = agent.until_turn_end().await;
    let (error, retryable) = failure(&msgs);
    assert!(
        error.starts_with("the task's pre-check script failed"),
        "{error}"
    );
    assert!(error.contains("status 3"), "{error}");
    assert!(error.contains("token expired"), "{error}");
    assert!(!retryable);
    assert!(relay.model.requests().is_empty(), "the model was called");
}

#[tokio::test]
async fn precheck_with_a_last_line_of_another_shape_fails_the_turn() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "s1")).await;
    agent
        .send(&task_turn(
            "t1",
            "Report new mail.",
            task(
                "t-mail",
                Some("echo '{\"wakeAgent\": true}'; echo all done"),
                false,
            ),
        ))
        .await;
    let msgs = agent.until_turn_end().await;
    let (error, retryable) = failure(&msgs);
    assert!(
        error.starts_with("the task's pre-check script failed"),
        "{error}"
    );
    assert!(error.contains("last stdout line"), "{error}");
    assert!(error.contains("all done"), "{error}");
    assert!(!retryable);
    assert!(relay.model.requests().is_empty(), "the model was called");
}

#[tokio::test]
async fn isolated_task_turn_neither_sees_nor_changes_the_conversation() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "sess-iso")).await;
    agent
        .send(&turn("t1", "my favourite fruit is banana"))
        .await;
    finished(&agent.until_turn_end().await);

    agent
        .send(&task_turn(
            "t2",
            "TASK-REPORT: summarize the week",
            task("t-weekly", None, true),
        ))
        .await;
    let msgs = agent.until_turn_end().await;
    assert!(
        finished(&msgs).reply.contains("TASK-REPORT"),
        "{:?}",
        finished(&msgs)
    );
    let task_request = request_text(&relay.model.requests().pop().unwrap().body);
    assert!(
        !task_request.contains("banana"),
        "the isolated run saw the conversation: {task_request}"
    );

    // In memory…
    agent.send(&turn("t3", "what is my favourite fruit?")).await;
    finished(&agent.until_turn_end().await);
    let sent = request_text(&relay.model.requests().pop().unwrap().body);
    assert!(sent.contains("banana"), "{sent}");
    assert!(!sent.contains("TASK-REPORT"), "{sent}");
    agent.send(&HostMessage::Shutdown).await;
    assert_eq!(agent.exit_code().await, 0);

    // …and on disk.
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    agent.handshake(hello("anthropic", "sess-iso")).await;
    agent.send(&turn("t4", "and my favourite colour?")).await;
    finished(&agent.until_turn_end().await);
    let sent = request_text(&relay.model.requests().pop().unwrap().body);
    assert!(sent.contains("banana"), "{sent}");
    assert!(!sent.contains("TASK-REPORT"), "{sent}");
}

#[tokio::test]
async fn schedule_task_round_trips_through_the_host_in_any_group() {
    let scenario = Scenario::new()
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("tool said: {{last_tool_result}}"),
        )
        .rule(
            Matcher::Always,
            Reply::tool_call(
                "schedule_task",
                json!({
                    "prompt": "Tell the user good morning and today's first appointment.",
                    "schedule": "0 9 * * 1-5",
                    "script": "echo '{\"wakeAgent\": true}'",
                    "isolated": true
                }),
            ),
        );
    let relay = relay(scenario).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    h.group.is_main = false;
    agent.handshake(h).await;
    agent
        .send(&turn("t1", "say good morning every weekday at 9"))
        .await;

    let request = next_request(&mut agent).await;
    assert_eq!(request.turn_id, "t1");
    assert_eq!(
        request.action,
        RequestAction::ScheduleTask {
            prompt: "Tell the user good morning and today's first appointment.".into(),
            schedule: "0 9 * * 1-5".into(),
            script: Some("echo '{\"wakeAgent\": true}'".into()),
            isolated: true,
            group: None,
        }
    );
    agent
        .send(&HostMessage::RequestResult(RequestResult {
            request_id: request.request_id,
            ok: true,
            error: None,
            data: json!({
                "task_id": "t-abc",
                "next_run": "2026-11-27T09:00:00+01:00",
                "describe": "cron 0 9 * * 1-5 (Europe/Berlin)"
            }),
        }))
        .await;
    let msgs = agent.until_turn_end().await;
    let reply = &finished(&msgs).reply;
    assert!(reply.starts_with("tool said: "), "{reply}");
    assert!(reply.contains("\"task_id\": \"t-abc\""), "{reply}");
    assert!(
        reply.contains("\"next_run\": \"2026-11-27T09:00:00+01:00\""),
        "{reply}"
    );

    // A group that is not the main one has every task tool (the host decides per request).
    let tools: Vec<String> = relay.model.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    for name in [
        "schedule_task",
        "list_tasks",
        "update_task",
        "pause_task",
        "resume_task",
        "cancel_task",
    ] {
        assert!(tools.iter().any(|t| t == name), "{name} missing: {tools:?}");
    }
    assert!(!tools.iter().any(|t| t == "list_groups"), "{tools:?}");
}

#[tokio::test]
async fn context_line_shows_the_hosts_local_time_and_zone() {
    let relay = relay(Scenario::echo()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    h.timezone = Some("Europe/Berlin".into());
    agent.handshake(h).await;
    let HostMessage::Turn(mut t) = turn("t1", "what time is it?") else {
        unreachable!()
    };
    t.local_time = Some("2026-11-26T09:12:00+01:00".into());
    agent.send(&HostMessage::Turn(t)).await;
    finished(&agent.until_turn_end().await);
    let sent = request_text(&relay.model.requests()[0].body);
    assert!(
        sent.contains(
            r#"<context now=\"Thursday, 2026-11-26 09:12 (UTC+01:00)\" timezone=\"Europe/Berlin\" />"#
        ),
        "{sent}"
    );
}

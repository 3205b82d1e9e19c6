//! MCP servers and skill script tools, through the real agent binary: real MCP servers from
//! PyPI (the reference `mcp-server-time`, and a server on the MCP Python SDK for failures)
//! started as the agent's children, called by the scripted model.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoclaw_protocol::{
    AgentMessage, HostMessage, LogLevel, McpServer, SkillInfo, SkillTool, ToolPhase,
};
use nanoclaw_scripted_model::{Matcher, Reply, Scenario};
use serde_json::{Value, json};

use super::runner::{Agent, finished, hello, relay, turn};

/// Where `scripts/prerequisites --tests` installs the MCP servers; `NANOCLAW_MCP_VENV`
/// overrides it.
const MCP_VENV: &str = "/opt/nanoclaw-tests/mcp";

fn venv() -> PathBuf {
    let venv = std::env::var_os("NANOCLAW_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MCP_VENV));
    assert!(
        venv.join("bin/mcp-server-time").exists(),
        "the MCP test servers are not installed at {}: run scripts/prerequisites --tests",
        venv.display()
    );
    venv
}

fn time_server() -> McpServer {
    McpServer {
        name: "time".into(),
        command: venv().join("bin/mcp-server-time").display().to_string(),
        args: vec!["--local-timezone".into(), "UTC".into()],
        env: Default::default(),
        skill: None,
    }
}

fn faults_server() -> McpServer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_faults.py");
    McpServer {
        name: "faults".into(),
        command: venv().join("bin/python").display().to_string(),
        args: vec![script.display().to_string()],
        env: [
            ("FAULTS_GREETING".to_owned(), "hello".to_owned()),
            // Routing variables stay the agent's: this one must not reach the server.
            ("HTTP_PROXY".to_owned(), "http://evil.example:1".to_owned()),
        ]
        .into(),
        skill: None,
    }
}

/// The model calls tool `name` with `input` when the user's text contains `keyword`, and
/// answers `R[<the tool's result>]` once it has the result.
fn calling(rules: &[(&str, &str, Value)]) -> Scenario {
    let mut scenario = Scenario::new().rule(
        Matcher::LastIsToolResult,
        Reply::text("R[{{last_tool_result}}]"),
    );
    for (keyword, name, input) in rules {
        scenario = scenario.rule(
            Matcher::LastUserTextContains((*keyword).into()),
            Reply::tool_call(*name, input.clone()),
        );
    }
    scenario.rule(Matcher::Always, Reply::text("nothing to do"))
}

/// The reply to `text` and the phase the tool call ended in.
async fn ask(agent: &mut Agent, id: &str, text: &str) -> (String, Option<ToolPhase>) {
    agent.send(&turn(id, text)).await;
    let msgs = agent.until_turn_end().await;
    let phase = msgs.iter().rev().find_map(|m| match m {
        AgentMessage::ToolActivity(a) if a.phase != ToolPhase::Started => Some(a.phase),
        _ => None,
    });
    (finished(&msgs).reply.clone(), phase)
}

/// The content of the newest tool result the model was sent.
fn last_tool_result(relay: &super::runner::Relay) -> String {
    let last = relay.model.requests().pop().expect("a model request");
    let messages = last.body["messages"].as_array().expect("messages");
    messages
        .iter()
        .rev()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|block| block["type"] == "tool_result")
        .map(|block| match &block["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .expect("a tool result")
}

/// Tool names the model was offered in its latest request.
fn offered(relay: &super::runner::Relay) -> Vec<String> {
    let last = relay.model.requests().pop().expect("a model request");
    last.body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_model_calls_the_real_time_server_and_reads_its_answer() {
    let relay = relay(calling(&[(
        "time",
        "time__get_current_time",
        json!({"timezone": "Europe/Berlin"}),
    )]))
    .await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    h.mcp_servers = vec![time_server()];
    agent.handshake(h).await;

    let (reply, phase) = ask(&mut agent, "t1", "what time is it in Berlin?").await;
    assert_eq!(phase, Some(ToolPhase::Finished), "{reply}");
    let tools = offered(&relay);
    assert!(
        tools.contains(&"time__get_current_time".to_owned())
            && tools.contains(&"time__convert_time".to_owned())
            && tools.contains(&"bash".to_owned()),
        "{tools:?}"
    );
    // The server's answer, as the reference server gives it: JSON with the zone's time.
    let json_start = reply.find('{').expect("a JSON answer");
    let answer: Value = serde_json::from_str(
        reply[json_start..]
            .strip_suffix(']')
            .expect("the reply ends with the result"),
    )
    .unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(answer["timezone"], "Europe/Berlin", "{reply}");
    let at = chrono::DateTime::parse_from_rfc3339(answer["datetime"].as_str().unwrap()).unwrap();
    let offset = at.offset().local_minus_utc();
    assert!(
        offset == 3600 || offset == 7200,
        "Berlin is UTC+1 or +2: {at}"
    );
    let off_by = (chrono::Utc::now() - at.to_utc()).num_seconds().abs();
    assert!(off_by < 600, "the server's clock is the real one: {at}");

    agent.send(&HostMessage::Shutdown).await;
    assert_eq!(agent.exit_code().await, 0);
}

#[tokio::test]
async fn server_failures_become_tool_errors_and_the_session_goes_on() {
    let relay = relay(calling(&[
        ("say", "faults__echo", json!({"text": "hi"})),
        ("picture", "faults__picture", json!({})),
        ("broken", "faults__fails", json!({})),
        ("bulky", "faults__huge", json!({"chars": 200000})),
        ("crash", "faults__crash", json!({})),
        ("no-such", "faults__nope", json!({})),
    ]))
    .await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    let missing = McpServer {
        name: "ghost".into(),
        command: "/nonexistent/mcp-server-ghost".into(),
        args: Vec::new(),
        env: Default::default(),
        skill: Some("spooky".into()),
    };
    h.mcp_servers = vec![missing, faults_server()];
    agent.handshake(h).await;

    // The server that cannot start is reported to the host; the other one works.
    match agent.next().await {
        AgentMessage::Log { level, message } => {
            assert_eq!(level, LogLevel::Warn);
            assert!(
                message.contains("`ghost`")
                    && message.contains("skill `spooky`")
                    && message.contains("/nonexistent/mcp-server-ghost"),
                "{message}"
            );
        }
        other => panic!("expected a warning about the missing server, got {other:?}"),
    }

    let (reply, phase) = ask(&mut agent, "t1", "say hi").await;
    assert_eq!(phase, Some(ToolPhase::Finished), "{reply}");
    assert!(reply.contains("echo:hi"), "{reply}");
    assert!(
        reply.contains("env:hello"),
        "the entry's env reaches it: {reply}"
    );
    assert!(
        reply.contains("proxy:-"),
        "HTTP_PROXY is not the entry's to set: {reply}"
    );
    let cwd = std::fs::canonicalize(ws.path()).unwrap();
    assert!(reply.contains(&format!("cwd:{}", cwd.display())), "{reply}");
    let pid: i32 = reply
        .split("pid:")
        .nth(1)
        .and_then(|p| p.trim_end_matches(']').trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {reply}"));
    let tools = offered(&relay);
    assert!(!tools.iter().any(|t| t.starts_with("ghost__")), "{tools:?}");

    let (reply, phase) = ask(&mut agent, "t2", "a picture please").await;
    assert_eq!(phase, Some(ToolPhase::Finished));
    assert!(
        reply.contains("[image: image/png, 108 bytes, not shown]"),
        "{reply}"
    );

    let (reply, phase) = ask(&mut agent, "t3", "this is broken").await;
    assert_eq!(phase, Some(ToolPhase::Failed), "{reply}");
    assert!(reply.contains("the thing is broken"), "{reply}");

    let (_, phase) = ask(&mut agent, "t4", "something bulky").await;
    assert_eq!(phase, Some(ToolPhase::Finished));
    // What the model was sent (its own reply is cut by max_tokens).
    let result = last_tool_result(&relay);
    assert!(
        result.starts_with("HEADxxx") && result.ends_with("xxxTAIL"),
        "the result keeps its beginning and end: {}",
        &result[result.len() - 100..]
    );
    assert!(
        result.contains("characters cut"),
        "a note says what was cut"
    );
    assert!(
        result.len() < 31_000,
        "the result is capped: {}",
        result.len()
    );

    let (reply, phase) = ask(&mut agent, "t5", "unknown tool no-such").await;
    assert_eq!(phase, Some(ToolPhase::Failed), "{reply}");
    assert!(reply.contains("unknown tool `faults__nope`"), "{reply}");

    let (reply, phase) = ask(&mut agent, "t6", "crash now").await;
    assert_eq!(phase, Some(ToolPhase::Failed), "{reply}");
    assert!(
        reply.contains("`faults` stopped") && reply.contains("crashing on purpose"),
        "the error names the server and quotes its stderr: {reply}"
    );

    // Its tools now fail at once; the session itself goes on.
    let (reply, phase) = ask(&mut agent, "t7", "say hi again").await;
    assert_eq!(phase, Some(ToolPhase::Failed), "{reply}");
    assert!(reply.contains("`faults` stopped"), "{reply}");
    let (reply, _) = ask(&mut agent, "t8", "hello?").await;
    assert_eq!(reply, "nothing to do");

    agent.send(&HostMessage::Shutdown).await;
    assert_eq!(agent.exit_code().await, 0);
    assert!(gone(pid).await, "the crashed server is gone");
}

#[tokio::test]
async fn servers_are_stopped_when_the_agent_exits() {
    let relay = relay(calling(&[("say", "faults__echo", json!({"text": "x"}))])).await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    h.mcp_servers = vec![faults_server()];
    agent.handshake(h).await;
    let (reply, _) = ask(&mut agent, "t1", "say it").await;
    let pid: i32 = reply
        .split("pid:")
        .nth(1)
        .and_then(|p| p.trim_end_matches(']').trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {reply}"));
    assert!(running(pid), "the server runs during the session");
    agent.send(&HostMessage::Shutdown).await;
    assert_eq!(agent.exit_code().await, 0);
    assert!(gone(pid).await, "the server {pid} outlived the agent");
}

#[tokio::test]
async fn a_skill_script_tool_gets_json_in_and_gives_its_output_back() {
    let skill_dir = tempfile::tempdir().unwrap();
    let script = skill_dir.path().join("scripts/weather.sh");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(
        &script,
        "#!/bin/sh\nread -r input\necho \"forecast for $input: sunny\"\n",
    )
    .unwrap();
    std::fs::write(skill_dir.path().join("secret.txt"), "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tool = |name: &str, script: &str| SkillTool {
        name: name.into(),
        description: "The weather.".into(),
        script: script.into(),
        input_schema: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }),
    };

    let relay = relay(calling(&[
        ("weather", "weather__forecast", json!({"city": "Oslo"})),
        ("forgot", "weather__forecast", json!({})),
    ]))
    .await;
    let ws = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(ws.path(), &relay.socket);
    let mut h = hello("anthropic", "s1");
    h.skills = vec![SkillInfo {
        name: "weather".into(),
        description: "Weather forecasts".into(),
        path: skill_dir.path().display().to_string(),
        tools: vec![
            tool("forecast", "scripts/weather.sh"),
            tool("escape", "../../etc/passwd"),
        ],
    }];
    agent.handshake(h).await;

    // The escaping tool is refused with a warning; the good one is offered.
    match agent.next().await {
        AgentMessage::Log { level, message } => {
            assert_eq!(level, LogLevel::Warn);
            assert!(
                message.contains("`escape`") && message.contains("not a path inside"),
                "{message}"
            );
        }
        other => panic!("expected a warning about the escaping script, got {other:?}"),
    }
    let (reply, phase) = ask(&mut agent, "t1", "weather in Oslo?").await;
    assert_eq!(phase, Some(ToolPhase::Finished), "{reply}");
    assert_eq!(reply, r#"R[forecast for {"city":"Oslo"}: sunny]"#);
    let tools = offered(&relay);
    assert!(tools.contains(&"weather__forecast".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"weather__escape".to_owned()), "{tools:?}");

    let (reply, phase) = ask(&mut agent, "t2", "I forgot the city").await;
    assert_eq!(phase, Some(ToolPhase::Failed), "{reply}");
    assert!(
        reply.contains("missing required field(s) `city`"),
        "{reply}"
    );
}

/// Whether `pid` runs (a zombie does not).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

/// Whether `pid` has stopped, waiting a while for it to (a guard, not a speed check).
async fn gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

//! What goes between a sandbox and the host, at the limits: replies longer than a protocol
//! line, a model stream that stalls, a sandbox that floods the host's log, and logs that
//! must stay plain text. Through the real host, the bubblewrap sandbox and the agent.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use super::common::*;
use nanoclaw_protocol::MAX_LINE_BYTES;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Fault, Matcher, Reply, Scenario, ScriptedModel};

/// The config every test here pins: the native runtime (see `config_for_tests`).
const NATIVE_CONFIG: &str = "[agents]\nruntime = \"native\"\nretry_backoff_secs = 0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_longer_than_a_protocol_line_is_delivered_whole() {
    let home = TestHome::new();
    // Five words of a MiB each (the scripted model streams word by word), then an end mark:
    // the reply is well over the 4 MiB line limit.
    let word = "x".repeat(1024 * 1024);
    let long = format!("{}THE-END", format!("{word} ").repeat(5));
    assert!(long.len() > MAX_LINE_BYTES);
    let model = ScriptedModel::start(
        Scenario::new()
            .with_api_key(TEST_KEY)
            .rule(Matcher::Always, Reply::text(long.clone())),
    )
    .await
    .unwrap();
    let mut config = config_for_tests();
    // The scripted model cuts replies to max_tokens (about four bytes a token).
    config.model.max_tokens = 4_000_000;
    let host = start_host(home.path(), &model, config).await;
    let mut client = connect_client(home.path()).await;

    let (kind, text) = ask(&mut client, "write me a very long answer").await;
    assert_eq!(kind, "reply", "{}", &text[..text.len().min(300)]);
    assert_eq!(text.len(), long.len());
    assert!(text == long, "the reply arrives whole and in order");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_model_stream_is_retried_and_answered_without_waiting_for_the_turn_timeout() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    // The first answer starts, streams a little, then goes silent with the connection open.
    model.push_fault(Fault::stream_stall(3));
    let mut config = config_for_tests();
    config.model.stream_idle_timeout_secs = 2;
    // Far longer than `ask` waits: only the idle timeout can bring the answer in time.
    config.agents.turn_timeout_secs = 3600;
    let host = start_host(home.path(), &model, config).await;
    let mut client = connect_client(home.path()).await;

    let (kind, text) = ask(&mut client, "are you still there?").await;
    assert_eq!(kind, "reply", "{text}");
    assert!(text.contains("are you still there?"), "{text}");
    assert_eq!(
        model.requests().len(),
        2,
        "the stalled request was given up and sent again"
    );
    host.shutdown().await;
}

/// Stands in for the agent: on a turn it floods stderr (with escape sequences), `log`
/// messages and rejected lines, then answers.
const FLOODING_AGENT: &str = r#"#!/usr/bin/python3 -S
import json, sys
inp, out, err = sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer
def send(obj):
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()
for line in inp:
    msg = json.loads(line)
    kind = msg.get("type")
    if kind == "hello":
        send({"type": "ready", "protocol_major": 1, "protocol_minor": 3, "agent_version": "flood"})
    elif kind == "turn":
        noise = b"\x1b[31mFLOOD\x1b[0m " + b"z" * 1000 + b"\n"
        for _ in range(30000):
            err.write(noise)
        err.flush()
        for i in range(3000):
            send({"type": "log", "level": "warn", "message": "\x1b[2Jlog flood %d " % i + "w" * 1000})
            out.write(b"not json \x1b[31m" + b"q" * 1000 + b"\n")
        send({"type": "turn_finished", "turn_id": msg["turn_id"], "reply": "flooded",
              "usage": {"input_tokens": 1, "output_tokens": 1}})
    elif kind == "shutdown":
        break
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_flooding_the_host_log_is_cut_off_and_the_log_stays_plain() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG);
    let agent = home.path().join("flooding-agent.py");
    std::fs::write(&agent, FLOODING_AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = ScriptedModel::start(Scenario::echo()).await.unwrap();

    // The daemon logs at debug level to a file, where every stderr line would be written.
    let mut daemon = spawn_daemon_with_agent(home.path(), &model, &agent);
    let mut client = connect_client(home.path()).await;
    let (kind, text) = ask(&mut client, "flood the log").await;
    assert_eq!((kind.as_str(), text.as_str()), ("reply", "flooded"));
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let log = std::fs::read(home.path().join("daemon.log")).unwrap();
    // The sandbox sent about 36 MB (30 MB of stderr alone).
    assert!(
        log.len() < 2 * 1024 * 1024,
        "the host log grew to {} bytes",
        log.len()
    );
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("over its log budget"),
        "the log says the sandbox's lines are suppressed"
    );
    assert!(
        !log.contains(&0x1b),
        "no escape sequence (the sandbox's or colour codes) reaches a log file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG);
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    // stderr is a file here, as under a service manager writing to a log file.
    let mut daemon = spawn_daemon(home.path(), &model);
    let mut client = connect_client(home.path()).await;
    let (kind, _) = ask(&mut client, "hello").await;
    assert_eq!(kind, "reply");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let log = std::fs::read(home.path().join("daemon.log")).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("turn finished"),
        "the daemon logged the turn"
    );
    assert!(!log.contains(&0x1b), "no ANSI escape in the log file");

    // `nanoclaw chat -m` starts a host that logs to the daily files in logs/.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .args(["chat", "-m", "hi there"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NANOCLAW_HOME", home.path())
        .env("NANOCLAW_LOG", "debug")
        .env(
            "NANOCLAW_DASHBOARD_LISTEN",
            nanoclaw_test_support::ANY_LOOPBACK_PORT,
        )
        .env("ANTHROPIC_BASE_URL", model.base_url())
        .env("ANTHROPIC_API_KEY", TEST_KEY)
        .env("NANOCLAW_AGENT_BIN", nanoclaw_test_support::agent_binary())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files = nanoclaw_host::logs::files(&home.path().join("logs")).unwrap();
    let file = std::fs::read(files.last().expect("a daily log file")).unwrap();
    assert!(!file.is_empty());
    assert!(!file.contains(&0x1b), "no ANSI escape in the log files");
    assert!(
        !output.stderr.contains(&0x1b),
        "no colour on a piped stderr"
    );
}

//! Files an agent sends with `send_message`, end to end through a real host, the native
//! sandbox and the Telegram fake: what a hostile agent names is refused with a reason it can
//! read and nothing reaches the chat; a file waiting for delivery survives a crash.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_host::config::Paths;
use nanoclaw_test_support::eventually;
use nanoclaw_test_support::platforms::telegram::FakeTelegram;
use nanoclaw_test_support::platforms::{FakeChat, FakePlatform};
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario};
use serde_json::json;

use super::common::TEST_KEY;
use super::conformance::{Harness, REPORT_BYTES, files_sent, outbox_entries};

/// The limit the attack tests run with, so "too large" needs only a small file.
const TEST_LIMIT: u64 = 4096;
const SECRET: &str = "HOST-SECRET-never-sent";

/// One way a hostile agent tries to send a file it must not: the shell command it runs first
/// (if any), the path it names, and what the refusal it gets back must say.
struct Attack {
    name: &'static str,
    command: Option<String>,
    path: String,
    reason: &'static str,
}

fn attacks(home: &std::path::Path) -> Vec<Attack> {
    let secret = home.join("secret.txt").display().to_string();
    vec![
        Attack {
            name: "dotdot",
            command: None,
            // groups/main/../../secret.txt is the secret in NANOCLAW_HOME.
            path: "../../secret.txt".into(),
            reason: "leaves the group folder",
        },
        Attack {
            name: "absolute",
            command: None,
            path: secret.clone(),
            reason: "outside the group folder",
        },
        Attack {
            name: "symlink",
            // The link's target is the host's path: a host that followed it would read it.
            command: Some(format!("ln -sf {secret} leak.txt")),
            path: "/workspace/group/leak.txt".into(),
            reason: "is a symbolic link",
        },
        Attack {
            name: "linked folder",
            command: Some(format!("ln -sfn {} hostdir", home.display())),
            path: "hostdir/secret.txt".into(),
            reason: "is a symbolic link",
        },
        Attack {
            name: "fifo",
            command: Some("rm -f pipe && mkfifo pipe".into()),
            path: "pipe".into(),
            reason: "it is a fifo",
        },
        Attack {
            name: "too large",
            command: Some(format!("head -c {} /dev/zero > big.bin", TEST_LIMIT + 1)),
            path: "big.bin".into(),
            reason: "the limit is 4096 bytes",
        },
    ]
}

fn attack_scenario(attacks: &[Attack]) -> Scenario {
    let mut scenario = Scenario::new().with_api_key(TEST_KEY).rule(
        Matcher::LastIsToolResult,
        Reply::text("RESULT[{{last_tool_result}}]"),
    );
    for attack in attacks {
        let send = json!({"text": format!("stolen by {}", attack.name), "files": [attack.path]});
        let reply = match &attack.command {
            Some(command) => Reply::tool_call("bash", json!({ "command": command }))
                .with_tool_call("send_message", send),
            None => Reply::tool_call("send_message", send),
        };
        scenario = scenario.rule(
            Matcher::last_user_text_contains(format!("attack {};", attack.name)),
            reply,
        );
    }
    scenario
}

/// Every text sent to `chat`, once `count` of them are the agent's answers (`RESULT[…]`).
async fn answers(fake: &dyn FakePlatform, chat: &FakeChat, count: usize) -> Vec<String> {
    eventually(120, &format!("answer #{count}"), || async {
        let texts: Vec<String> = fake.sent(chat).await.into_iter().map(|m| m.text).collect();
        (texts.iter().filter(|t| t.contains("RESULT")).count() >= count).then_some(texts)
    })
    .await
}

async fn telegram() -> Arc<dyn FakePlatform> {
    Arc::new(FakeTelegram::start().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_agent_gets_a_reason_and_sends_nothing() {
    let fake = telegram().await;
    let h = Harness::with_config(Arc::clone(&fake), |config| {
        config.channels.max_outgoing_file_bytes = TEST_LIMIT;
    })
    .await;
    std::fs::write(h.home.path().join("secret.txt"), SECRET).unwrap();
    let attacks = attacks(h.home.path());
    h.model.set_scenario(attack_scenario(&attacks));
    let chat = fake.chat(1, false);
    h.pair(&chat).await;
    for (done, attack) in attacks.iter().enumerate() {
        fake.user_says(&chat, &format!("attack {};", attack.name), true)
            .await;
        let texts = answers(fake.as_ref(), &chat, done + 1).await;
        let answer = texts.iter().rev().find(|t| t.contains("RESULT")).unwrap();
        assert!(
            answer.contains("refused") && answer.contains(attack.reason),
            "{}: the agent was told {answer:?}",
            attack.name
        );
        assert!(
            files_sent(fake.as_ref(), &chat).await.is_empty(),
            "{}: a file reached the chat",
            attack.name
        );
        assert!(
            !texts.iter().any(|t| t.contains("stolen by")),
            "{}: the message went out without its file",
            attack.name
        );
        assert!(
            outbox_entries(h.home.path()).is_empty(),
            "{}: a copy was kept",
            attack.name
        );
    }
    for m in fake.sent(&chat).await {
        assert!(!m.text.contains(SECRET), "the secret was sent: {m:?}");
    }
}

/// The host is killed (-9) while a message with a file waits out a rate limit; the agent's
/// own file is gone by then. After the restart the file still arrives, byte for byte, from
/// the host's copy, and the copy is removed once it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_waiting_for_delivery_survives_a_crash() {
    let fake = telegram().await;
    let mut h = Harness::new(Arc::clone(&fake)).await;
    let chat = fake.chat(1, false);
    h.pair(&chat).await;
    h.start_daemon().await;
    // The first send is refused with a long wait, so the message stays queued.
    fake.rate_limit_sends(1, Duration::from_secs(3600));
    fake.user_says(&chat, "send me the report", true).await;
    let log = h.home.path().join("daemon.log");
    eventually(120, "the send refused and waiting", || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("rate limited; waiting").then_some(())
        }
    })
    .await;
    h.kill_daemon();
    assert!(files_sent(fake.as_ref(), &chat).await.is_empty());
    assert_eq!(outbox_entries(h.home.path()).len(), 1, "the copy is kept");
    std::fs::remove_file(
        Paths::new(h.home.path())
            .group_dir("main")
            .join("out/report.bin"),
    )
    .unwrap();

    h.start_daemon().await;
    h.wait_sent(&chat, "message sent with 1 file").await;
    assert_eq!(
        files_sent(fake.as_ref(), &chat).await,
        vec![("report.bin".to_owned(), REPORT_BYTES.to_vec())]
    );
    assert!(
        !fake.rate_limit_log().is_empty(),
        "the refused send was tried again"
    );
    assert!(outbox_entries(h.home.path()).is_empty());
}

/// The terminal has no upload: the owner is told the file's name and size and where the host
/// keeps it for them (the outbox copy itself goes once delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_shows_where_a_sent_file_is_kept() {
    use nanoclaw_host::channel::terminal::ServerLine;
    let home = nanoclaw_test_support::TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(Matcher::LastIsToolResult, Reply::text("done"))
        .rule(
            Matcher::Always,
            Reply::tool_call(
                "bash",
                json!({"command": super::conformance::REPORT_COMMAND}),
            )
            .with_tool_call(
                "send_message",
                json!({"text": "the report", "files": ["out/report.bin"]}),
            ),
        );
    let model = nanoclaw_test_support::scripted_model::ScriptedModel::start(scenario)
        .await
        .unwrap();
    let host =
        super::common::start_host(home.path(), &model, super::common::config_for_tests()).await;
    let mut client = super::common::connect_client(home.path()).await;
    let id = client.send("send me the report").await.unwrap();
    let shown = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match client.next().await.unwrap() {
                Some(ServerLine::Message { kind, text, .. }) if kind == "message" => break text,
                Some(_) => {}
                None => panic!("the host closed the connection"),
            }
        }
    })
    .await
    .expect("the message within 120 s");
    let expected = format!(
        "the report\n[file: report.bin ({} bytes): ",
        REPORT_BYTES.len()
    );
    assert!(shown.starts_with(&expected), "{shown:?}");
    let kept = shown[expected.len()..].trim_end_matches(']');
    assert!(
        kept.starts_with(
            &Paths::new(home.path())
                .channel_dir("terminal")
                .display()
                .to_string()
        ),
        "{kept}"
    );
    assert_eq!(std::fs::read(kept).unwrap(), REPORT_BYTES);
    let (_, reply) = super::common::wait_reply(&mut client, &id).await;
    assert_eq!(reply, "done");
    assert!(outbox_entries(home.path()).is_empty());
    host.shutdown().await;
}

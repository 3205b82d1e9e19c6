//! `nanoclaw chat` clients as users and scripts run them: many at once, with or without a
//! running host, piped input, and agent text that tries to drive the owner's terminal.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Output, Stdio};
use std::time::Duration;

use super::common::*;
use nanoclaw_host::channel::terminal::{Scope, ServerLine};
use nanoclaw_host::config::Paths;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use serde_json::json;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `n` `nanoclaw chat -m token-<i>` at once; returns (token, output) per client.
async fn concurrent_chats(
    home: &TestHome,
    model: &ScriptedModel,
    n: usize,
) -> Vec<(String, Output)> {
    let children: Vec<_> = (0..n)
        .map(|i| {
            let token = format!("token{i}x{}", nanoclaw_host::random_suffix(4));
            let child = nanoclaw_command(
                home.path(),
                model,
                Some(TEST_KEY),
                &["chat", "-m", &token, "--timeout", "150"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            (token, child)
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|(token, child)| (token, child.wait_with_output().unwrap()))
            .collect()
    })
    .await
    .unwrap()
}

fn assert_each_got_its_own_reply(results: &[(String, Output)]) {
    let failed: Vec<String> = results
        .iter()
        .filter(|(token, out)| {
            !(out.status.success() && text(&out.stdout).contains(token.as_str()))
        })
        .map(|(token, out)| {
            format!(
                "{token}: {} stdout={:?} stderr={:?}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} clients did not get the reply to their message:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_against_a_running_host_each_get_the_reply_to_their_own_message() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG_TOML);
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let _daemon = KillOnDrop(spawn_daemon(home.path(), &model));
    drop(connect_client(home.path()).await);

    // Most of them arrive while the first turn runs and are answered in batched turns.
    let results = concurrent_chats(&home, &model, 20).await;
    assert_each_got_its_own_reply(&results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_with_no_host_running_start_one_and_each_get_their_reply() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG_TOML);
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();

    let results = concurrent_chats(&home, &model, 20).await;
    assert_each_got_its_own_reply(&results);

    // Started for clients, the host stops by itself once they are all gone.
    wait_until_no_host(home.path()).await;
    assert!(!Paths::new(home.path()).terminal_socket().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_client_left_stays_queued_until_a_client_that_shows_it_connects() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG_TOML);
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("slept for {{last_user_text}}"),
        )
        .rule(
            Matcher::last_user_text_contains("slow-question"),
            Reply::tool_call("bash", json!({"command": "sleep 2; echo done"})),
        )
        .rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let _daemon = KillOnDrop(spawn_daemon(home.path(), &model));

    // A script's client that is waiting for answers of its own (it asked nothing yet).
    let mut bystander = connect_client(home.path()).await;
    bystander.show(Scope::Own).await.unwrap();
    // `chat -m` that gives up: it asks, then goes away before the answer.
    let mut leaver = connect_client(home.path()).await;
    leaver.show(Scope::Own).await.unwrap();
    let slow_id = leaver.send("slow-question").await.unwrap();
    loop {
        if let Some(ServerLine::Ack { id, status, .. }) = leaver.next().await.unwrap()
            && id == slow_id
        {
            assert_eq!(status, "accepted");
            break;
        }
    }
    drop(leaver);

    // The bystander's own question is answered in the next turn: by then the slow reply was
    // stored and offered for delivery while only the bystander was connected.
    let (kind, reply) = ask(&mut bystander, "bystander-question").await;
    assert_eq!(kind, "reply");
    assert!(reply.contains("bystander-question"), "{reply}");
    let store = nanoclaw_store::Store::open(&Paths::new(home.path()).database()).unwrap();
    let chat = store
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    let rows = store.outbound_for_chat(chat.id).await.unwrap();
    let slow = rows
        .iter()
        .find(|r| r.text.contains("slept for"))
        .expect("the slow reply is stored");
    assert_eq!(
        slow.state.as_str(),
        "pending",
        "a client that did not ask for it and does not show it threw it away"
    );

    // The owner opens `nanoclaw chat`: the whole chat, the kept reply included.
    let mut owner = connect_client(home.path()).await;
    let shown = loop {
        match owner.next().await.unwrap().expect("connection open") {
            ServerLine::Message { text, .. } if text.contains("slept for") => break text,
            _ => {}
        }
    };
    assert!(shown.contains("slow-question"), "{shown}");
    nanoclaw_test_support::eventually(30, "the reply recorded as delivered", || {
        let store = store.clone();
        async move {
            let rows = store.outbound_for_chat(chat.id).await.ok()?;
            rows.iter()
                .any(|r| r.text.contains("slept for") && r.state.as_str() == "delivered")
                .then_some(())
        }
    })
    .await;
}

/// Agent text with what a terminal would act on: clipboard write (OSC 52), title (OSC 0),
/// screen clear and cursor moves (CSI), C1 CSI, a DCS string and a bidi override.
const HOSTILE: &str = "\u{1b}]52;c;SGFja2Vk\u{7}VISIBLE-A\u{1b}[2J\u{1b}[1;1H\u{1b}]0;pwned-title\u{1b}\\\
                       VISIBLE-B\u{9b}31mVISIBLE-C\u{1b}Pdcs-payload\u{1b}\\\u{202e}VISIBLE-D\r\u{8}";

fn assert_terminal_safe(what: &str, out: &str) {
    assert!(!out.contains('\u{1b}'), "ESC in {what}: {out:?}");
    assert!(
        !out.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
        "C1 control in {what}: {out:?}"
    );
    assert!(
        !out.contains('\u{202e}'),
        "bidi override in {what}: {out:?}"
    );
    assert!(!out.contains('\r'), "carriage return in {what}: {out:?}");
    assert!(!out.contains("pwned-title"), "{what}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_text_reaches_the_terminal_without_control_sequences() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG_TOML);
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text(format!("FINAL {HOSTILE} tool said [{{{{last_tool_result}}}}]")),
        )
        .rule(
            Matcher::Always,
            Reply::text(HOSTILE)
                .with_tool_call("send_message", json!({"text": format!("NOTE {HOSTILE}")}))
                .with_tool_call(
                    "bash",
                    json!({"command": format!("printf '\\033]52;c;SGFja2Vk\\007TOOL-OUT\\033[2J'; : '{HOSTILE}'")}),
                ),
        );
    let model = ScriptedModel::start(scenario).await.unwrap();

    let out = tokio::task::spawn_blocking({
        let cmd = nanoclaw_command(home.path(), &model, Some(TEST_KEY), &["chat", "-m", "hi"]);
        move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_terminal_safe("the reply", &stdout);
    assert!(
        !stdout.contains("SGFja2Vk"),
        "the clipboard payload is not text: {stdout:?}"
    );
    assert_terminal_safe("the tool activity", &stderr);
    for visible in [
        "FINAL",
        "VISIBLE-A",
        "VISIBLE-B",
        "VISIBLE-C",
        "VISIBLE-D",
        "TOOL-OUT",
        "NOTE",
    ] {
        assert!(stdout.contains(visible), "{visible} missing: {stdout:?}");
    }
    assert!(
        stderr.contains("[bash]"),
        "the tool use is shown: {stderr:?}"
    );

    // --json keeps the exact text (JSON escapes the controls).
    let out = tokio::task::spawn_blocking({
        let cmd = nanoclaw_command(
            home.path(),
            &model,
            Some(TEST_KEY),
            &["chat", "-m", "again", "--json"],
        );
        move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!out.stdout.contains(&0x1b), "raw ESC in JSON output");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        reply["reply"].as_str().unwrap().contains(HOSTILE),
        "{reply}"
    );
    wait_until_no_host(home.path()).await;
}

/// `printf … | nanoclaw chat` with `stdin` as its input.
async fn piped_chat(
    home: &TestHome,
    model: &ScriptedModel,
    key: Option<&str>,
    stdin: &str,
) -> Output {
    let mut cmd = nanoclaw_command(home.path(), model, key, &["chat", "--timeout", "150"]);
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        nanoclaw_test_support::output_with_stdin(&mut cmd, stdin.as_bytes())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_input_is_sent_line_by_line_and_each_line_is_answered_before_exit() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG_TOML);
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();

    let out = piped_chat(&home, &model, Some(TEST_KEY), "first-line\n\nsecond-line\n").await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let first = stdout.find("first-line").expect("first line answered");
    let second = stdout.find("second-line").expect("second line answered");
    assert!(first < second, "answers in order: {stdout}");
    assert_eq!(
        stdout.matches("echo:").count(),
        2,
        "one answer per line, the empty line skipped: {stdout}"
    );
    wait_until_no_host(home.path()).await;

    // No key: a base URL alone means a keyless server, which here refuses the request; the
    // script learns it from the exit status, and the provider's reason is shown.
    let out = piped_chat(&home, &model, None, "hi\n").await;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("authentication_error"),
        "the failure is named: {all}"
    );
    wait_until_no_host(home.path()).await;
}

/// A reply left undelivered (its host died first) makes the restarted host find nobody to
/// deliver to and park the chat; a one-shot client (`chat -m`, showing only its own replies)
/// that connects afterwards must still get the answer to its question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_client_gets_its_reply_even_when_an_old_reply_parked_the_chat() {
    let home = TestHome::new();
    home.write_config(NATIVE_CONFIG_TOML);
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    // A first host creates the chat, then dies.
    let mut first = spawn_daemon(home.path(), &model);
    let mut client = connect_client(home.path()).await;
    let (kind, _) = ask(&mut client, "hello").await;
    assert_eq!(kind, "reply");
    drop(client);
    first.kill().unwrap();
    first.wait().unwrap();
    // A reply it stored but never delivered.
    let store = nanoclaw_store::Store::open(&Paths::new(home.path()).database()).unwrap();
    let chat = store
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    store
        .insert_outbound(nanoclaw_store::NewOutbound {
            session_id: None,
            chat_id: chat.id,
            in_reply_to: None,
            idempotency_key: "left-behind".into(),
            text: "an answer nobody took".into(),
            kind: nanoclaw_store::OutboundKind::Reply,
            files: Vec::new(),
        })
        .await
        .unwrap();
    drop(store);

    // The restarted host tries it with no client connected (and parks the chat) before the
    // one-shot client arrives.
    let _second = KillOnDrop(spawn_daemon(home.path(), &model));
    let probe = connect_polling(
        &Paths::new(home.path()).terminal_socket(),
        Duration::from_millis(20),
    )
    .await;
    drop(probe);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut one_shot = connect_client(home.path()).await;
    one_shot.show(Scope::Own).await.unwrap();
    let (kind, reply) = tokio::time::timeout(
        Duration::from_secs(30),
        ask(&mut one_shot, "my own question"),
    )
    .await
    .expect("the one-shot client got no reply: its chat stayed parked");
    assert_eq!(kind, "reply");
    assert!(reply.contains("my own question"), "{reply}");
}

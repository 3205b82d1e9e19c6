//! End to end: a message goes in, a sandboxed agent runs a tool, the reply comes out.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::common::*;
use nanoclaw_host::channel::terminal::ServerLine;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use serde_json::json;

/// A scenario that runs `command` in bash when the user's text contains `keyword`, then
/// answers with the tool's output.
fn probe(keyword: &str, command: &str) -> (Matcher, Reply) {
    (
        Matcher::LastUserTextContains(keyword.into()),
        Reply::text("running").with_tool_call("bash", json!({ "command": command })),
    )
}

fn probing_scenario(probes: &[(&str, &str)]) -> Scenario {
    let mut scenario = Scenario::new().with_api_key(TEST_KEY).rule(
        Matcher::LastIsToolResult,
        Reply::text("OUT[{{last_tool_result}}]"),
    );
    for (k, c) in probes {
        let (m, r) = probe(k, c);
        scenario = scenario.rule(m, r);
    }
    scenario.rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_runs_bash_in_the_sandbox_and_the_reply_is_delivered() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::demo_uname().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;

    let id = client.send("which kernel is this?").await.unwrap();
    let mut saw_tool = false;
    let mut streamed = String::new();
    let reply = loop {
        match client.next().await.unwrap().expect("connection open") {
            ServerLine::Tool { tool, summary } => {
                assert_eq!(tool, "bash");
                assert!(summary.contains("uname"), "{summary}");
                saw_tool = true;
            }
            ServerLine::Delta { text } => streamed.push_str(&text),
            ServerLine::Message {
                kind,
                text,
                reply_to,
                ..
            } if reply_to.as_deref() == Some(&id) => {
                assert_eq!(kind, "reply");
                break text;
            }
            _ => {}
        }
    };
    assert!(saw_tool, "the terminal shows the tool the agent used");
    assert!(
        streamed.contains("Let me check"),
        "reply text streams in: {streamed}"
    );
    let kernel = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .unwrap();
    let kernel = String::from_utf8_lossy(&kernel.stdout).trim().to_owned();
    assert!(
        reply.contains("I ran `uname -sr` in my sandbox") && reply.contains(&kernel),
        "reply quotes the sandboxed command's output: {reply}"
    );

    // The relay injected the key; the agent never sent one of its own.
    let requests = model.requests();
    assert!(requests.len() >= 2, "a tool round trip is two model calls");
    for r in &requests {
        assert_eq!(r.header("x-api-key"), Some(TEST_KEY));
    }

    // The books: message done, reply delivered once.
    let store = host.store().clone();
    let chat = store
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    let out = store.outbound_for_chat(chat.id).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state.as_str(), "delivered");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_has_no_network_no_key_and_no_host_files() {
    let home = TestHome::new();
    // A file the agent must not see: the host's database lives in the same home.
    let host_secret = home.path().join("host-only-secret.txt");
    std::fs::write(&host_secret, "HOST-ONLY-CONTENT").unwrap();
    let db = home.path().join("nanoclaw.db");
    let probes = [
        (
            "probe-env",
            "env; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>/dev/null; echo END",
        ),
        (
            "probe-files",
            &*format!(
                "cat {} 2>&1; ls {} 2>&1; cat /etc/shadow 2>&1; ls /root 2>&1; id -u; echo END",
                host_secret.display(),
                db.display()
            ),
        ),
        (
            "probe-net",
            "cat /proc/net/dev; (exec 3<>/dev/tcp/1.1.1.1/80) 2>&1 && echo CONNECTED; (exec 3<>/dev/tcp/127.0.0.1/1) 2>&1; echo END",
        ),
        (
            "probe-write",
            "touch /usr/evil 2>&1; touch /workspace/global/evil 2>&1; echo ok > /workspace/group/mine && echo WROTE; echo END",
        ),
    ];
    let model = ScriptedModel::start(probing_scenario(&probes))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;

    let (_, env) = ask(&mut client, "probe-env").await;
    assert!(env.contains("END"), "{env}");
    assert!(
        !env.contains(TEST_KEY),
        "the API key leaked into the sandbox: {env}"
    );
    assert!(!env.contains("ANTHROPIC"), "{env}");

    let (_, files) = ask(&mut client, "probe-files").await;
    assert!(files.contains("END"), "{files}");
    assert!(!files.contains("HOST-ONLY-CONTENT"), "{files}");
    assert!(files.contains("No such file"), "{files}");
    assert!(!files.contains("root:"), "/etc/shadow readable: {files}");
    assert!(files.contains("1000"), "runs as uid 1000: {files}");

    let (_, net) = ask(&mut client, "probe-net").await;
    assert!(net.contains("END"), "{net}");
    assert!(!net.contains("CONNECTED"), "{net}");
    assert!(net.contains("lo:"), "{net}");
    assert!(!net.contains("eth0"), "{net}");

    let (_, write) = ask(&mut client, "probe-write").await;
    assert!(write.contains("WROTE"), "{write}");
    assert!(
        write.contains("Read-only file system") || write.contains("Permission denied"),
        "{write}"
    );
    assert!(home.path().join("groups/main/mine").exists());
    assert!(!home.path().join("global/evil").exists());
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_dies_mid_turn_is_retried_and_answers_once() {
    let home = TestHome::new();
    let command = "if [ -f /workspace/group/.died ]; then echo survived; else touch /workspace/group/.died; kill -9 $PPID; fi";
    let model = ScriptedModel::start(probing_scenario(&[("die-once", command)]))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let (kind, text) = ask(&mut client, "die-once").await;
    assert_eq!(kind, "reply");
    assert!(text.contains("survived"), "{text}");
    let store = host.store().clone();
    let chat = store
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.outbound_for_chat(chat.id).await.unwrap().len(), 1);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_error_reaches_the_chat_as_a_clear_message() {
    let home = TestHome::new();
    // The model wants a different key than the host holds: 401 authentication_error.
    let model = ScriptedModel::start(Scenario::echo().with_api_key("some-other-key"))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let (kind, text) = ask(&mut client, "hello").await;
    assert_eq!(kind, "error");
    assert!(
        text.contains("authentication_error") || text.contains("401"),
        "{text}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_terminal_input_gets_an_error_and_the_connection_survives() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    client.send_raw(b"this is not json\n").await.unwrap();
    loop {
        if let ServerLine::Error { error } = client.next().await.unwrap().unwrap() {
            assert!(error.contains("unreadable"), "{error}");
            break;
        }
    }
    let (kind, text) = ask(&mut client, "still there?").await;
    assert_eq!(kind, "reply");
    assert!(text.contains("still there?"), "{text}");

    // A re-sent message (same id) is stored once and answered once.
    client.send_with_id("dup-1", "once only").await.unwrap();
    let (_, first) = wait_reply(&mut client, "dup-1").await;
    assert!(first.contains("once only"));
    client.send_with_id("dup-1", "once only").await.unwrap();
    loop {
        if let ServerLine::Ack { id, status, .. } = client.next().await.unwrap().unwrap()
            && id == "dup-1"
        {
            assert_eq!(status, "duplicate");
            break;
        }
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_group_gets_its_answer_through_the_relay() {
    use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
    use nanoclaw_host::config::Paths;
    use nanoclaw_host::{Host, HostOptions};

    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::demo_uname().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let mut config = config_for_tests();
    config.model.provider = "openai".into();
    config.model.model = "gpt-4.1-mini".into();
    let host = Host::start(HostOptions {
        paths: Paths::new(home.path()),
        config,
        upstreams: ModelUpstreams {
            anthropic: None,
            openai: Some(Upstream {
                // As OPENAI_BASE_URL is written for OpenAI itself: with the /v1.
                base_url: format!("{}/v1", model.base_url()),
                auth: UpstreamAuth::Bearer(TEST_KEY.into()),
            }),
        },
        runtime: None,
        agent_binary: Some(nanoclaw_test_support::agent_binary()),
        master_key: None,
        clock: None,
    })
    .await
    .unwrap();
    let mut client = connect_client(home.path()).await;
    let (kind, text) = ask(&mut client, "which kernel?").await;
    assert_eq!(kind, "reply");
    assert!(text.contains("I ran `uname -sr` in my sandbox"), "{text}");
    let requests = model.requests();
    assert!(requests.len() >= 2);
    for r in &requests {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TEST_KEY}").as_str())
        );
        assert_eq!(r.body["model"], "gpt-4.1-mini");
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_traffic_goes_through_the_egress_proxy_which_denies_by_default() {
    let home = TestHome::new();
    let probes = [(
        "probe-egress",
        "env | grep -c '^HTTPS_PROXY=http://127.0.0.1:'; curl -sS --max-time 10 http://example.com/ 2>&1; echo; curl -sS --max-time 10 https://example.com/ 2>&1; echo END",
    )];
    let model = ScriptedModel::start(probing_scenario(&probes))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let (_, out) = ask(&mut client, "probe-egress").await;
    assert!(out.contains("END"), "{out}");
    assert!(
        out.starts_with("OUT[1"),
        "tools get the proxy in their environment: {out}"
    );
    assert!(
        out.contains("example.com is not in group main's allowed domains"),
        "plain HTTP is refused with the rule: {out}"
    );
    assert!(out.contains("403"), "CONNECT is refused too: {out}");

    // Every decision is in the tamper-evident audit log.
    let audit = nanoclaw_vault::Audit::new(host.store().clone());
    let rows = nanoclaw_test_support::eventually(30, "two audit rows", || {
        let audit = audit.clone();
        async move {
            let rows = audit.rows(0, None, 100).await.ok()?;
            (rows.len() >= 2).then_some(rows)
        }
    })
    .await;
    assert!(
        rows.iter()
            .all(|r| r.group_folder == "main" && r.host.starts_with("example.com"))
    );
    assert!(audit.verify().await.is_ok());
    host.shutdown().await;
}

/// The database refuses the reply (a trigger standing in for a full disk or a damaged table):
/// the owner hears of it, the message is neither lost nor failed, and once the cause is gone
/// the reply arrives — with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_saved_is_kept_and_saved_once_storage_works() {
    use nanoclaw_store::InboundStatus;
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let store = host.store().clone();
    store
        .call(|c| {
            c.execute_batch(
                "CREATE TRIGGER test_disk_full BEFORE INSERT ON outbound
                 BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let mut client = connect_client(home.path()).await;
    let id = client.send("keep this safe").await.unwrap();

    // The owner is told, in the main chat, what went wrong.
    let notice = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        loop {
            if let ServerLine::Message {
                kind,
                text,
                reply_to,
                ..
            } = client.next().await.unwrap().expect("connection open")
            {
                assert_ne!(
                    reply_to.as_deref(),
                    Some(id.as_str()),
                    "answered early: {text}"
                );
                assert_eq!(kind, "error", "{text}");
                break text;
            }
        }
    })
    .await
    .expect("the owner is told within 120 s");
    assert!(
        notice.contains("could not save the reply") && notice.contains("disk is full"),
        "{notice}"
    );
    // The message is still in hand, not failed, not lost.
    let rows = store
        .call(|c| {
            let mut stmt = c.prepare("SELECT status FROM inbound")?;
            let rows = stmt.query_map([], |r| r.get::<_, InboundStatus>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(rows, [InboundStatus::Processing]);

    // The disk has room again.
    store
        .call(|c| {
            c.execute_batch("DROP TRIGGER test_disk_full")?;
            Ok(())
        })
        .await
        .unwrap();
    let (kind, text) = wait_reply(&mut client, &id).await;
    assert_eq!(kind, "reply");
    assert!(text.contains("keep this safe"), "{text}");
    host.shutdown().await;
}

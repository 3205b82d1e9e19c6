//! Routing and lifecycle: triggers, wiring, the agent cap and idle timeout, send_message.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::common::*;
use nanoclaw_host::Host;
use nanoclaw_host::channel::RouteOutcome;
use nanoclaw_host::channel::terminal::ServerLine;
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};
use serde_json::json;

async fn replies(host: &Host, chat_id: i64) -> Vec<String> {
    host.store()
        .outbound_for_chat(chat_id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chats_need_the_trigger_and_unwired_chats_are_ignored() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let chat = wire_group(&host, "team", "room-1", true).await;

    let outcome = inject(&host, "test", "room-1", "m1", "just chatting").await;
    assert!(
        matches!(outcome, RouteOutcome::Ignored(ref why) if why.contains("trigger")),
        "{outcome:?}"
    );
    // An unwired chat reaches no agent: it waits for the owner (unknown_chats = "ask").
    let outcome = inject(&host, "test", "room-2", "m2", "@Andy hello?").await;
    assert!(
        matches!(outcome, RouteOutcome::Held(ref why) if why.contains("owner")),
        "{outcome:?}"
    );

    let outcome = inject(&host, "test", "room-1", "m3", "hey @andy, how are you").await;
    assert_eq!(outcome, RouteOutcome::Accepted);
    let texts = eventually(60, "the reply to the triggered message", || async {
        let r = replies(&host, chat).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains("how are you"), "{texts:?}");
    // Only the triggered message reached the model.
    assert!(
        model
            .requests()
            .iter()
            .all(|r| !r.body.to_string().contains("just chatting"))
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_beyond_the_cap_wait_their_turn_and_idle_agents_stop() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let mut config = config_for_tests();
    config.agents.max_concurrent = 1;
    config.agents.idle_timeout_secs = 1;
    let host = start_host(home.path(), &model, config).await;
    let chats = [
        wire_group(&host, "alpha", "room-a", false).await,
        wire_group(&host, "beta", "room-b", false).await,
        wire_group(&host, "gamma", "room-c", false).await,
    ];
    for (i, room) in ["room-a", "room-b", "room-c"].iter().enumerate() {
        let outcome = inject(
            &host,
            "test",
            room,
            &format!("m{i}"),
            &format!("hi from {room}"),
        )
        .await;
        assert_eq!(outcome, RouteOutcome::Accepted);
    }
    let mut most_alive = 0;
    eventually(90, "all three groups answered", || {
        most_alive = most_alive.max(host.live_agents());
        let host = &host;
        async move {
            for chat in chats {
                if replies(host, chat).await.is_empty() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    assert!(
        most_alive <= 1,
        "the cap of one live agent was exceeded: {most_alive}"
    );
    for (chat, room) in chats.iter().zip(["room-a", "room-b", "room-c"]) {
        let r = replies(&host, *chat).await;
        assert_eq!(r.len(), 1);
        assert!(r[0].contains(room), "{r:?}");
    }
    // With nothing to do, the last agent stops after the idle timeout.
    eventually(30, "the idle agent to stop", || async {
        (host.live_agents() == 0).then_some(())
    })
    .await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_reaches_the_chat_before_the_final_reply() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(Matcher::LastIsToolResult, Reply::text("all done"))
        .rule(
            Matcher::Always,
            Reply::tool_call("send_message", json!({"text": "working on it…"})),
        );
    let model = ScriptedModel::start(scenario).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let id = client.send("do the thing").await.unwrap();
    let mut seen = Vec::new();
    loop {
        if let ServerLine::Message {
            kind,
            text,
            reply_to,
            ..
        } = client.next().await.unwrap().expect("connection open")
        {
            seen.push((kind.clone(), text));
            if kind == "reply" && reply_to.as_deref() == Some(id.as_str()) {
                break;
            }
        }
    }
    assert_eq!(
        seen,
        vec![
            ("message".to_owned(), "working on it…".to_owned()),
            ("reply".to_owned(), "all done".to_owned())
        ]
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_group_has_its_agent_running_before_the_first_message() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let mut config = config_for_tests();
    config.agents.warm = vec!["main".into()];
    config.agents.idle_timeout_secs = 1;
    let host = start_host(home.path(), &model, config).await;
    eventually(60, "the warm agent to start", || async {
        (host.live_agents() == 1).then_some(())
    })
    .await;
    assert!(model.requests().is_empty(), "warming calls no model");
    // Well past the idle timeout, the warm agent is still there.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(host.live_agents(), 1);
    let mut client = connect_client(home.path()).await;
    let (kind, text) = ask(&mut client, "hello warm").await;
    assert_eq!(kind, "reply");
    assert!(text.contains("hello warm"));
    assert_eq!(
        host.live_agents(),
        1,
        "the warm agent answered; no second one"
    );
    host.shutdown().await;
}

/// A sandbox engine that is down for the first `down_for` spawns (like a Docker daemon
/// restarting), then works (the native sandbox underneath).
struct FlakyRuntime {
    down_for: std::sync::atomic::AtomicU32,
    inner: nanoclaw_sandbox::NativeRuntime,
}

#[async_trait::async_trait]
impl nanoclaw_sandbox::Runtime for FlakyRuntime {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn probe(&self) -> Result<(), nanoclaw_sandbox::SandboxError> {
        Ok(())
    }
    async fn spawn(
        &self,
        spec: &nanoclaw_sandbox::SandboxSpec,
    ) -> Result<nanoclaw_sandbox::SandboxProcess, nanoclaw_sandbox::SandboxError> {
        use std::sync::atomic::Ordering;
        if self
            .down_for
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(nanoclaw_sandbox::SandboxError::Unavailable {
                runtime: "flaky",
                reason: "the engine is restarting".into(),
                fix: "wait".into(),
            });
        }
        self.inner.spawn(spec).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_an_unreachable_engine_and_are_answered_when_it_returns() {
    use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
    use nanoclaw_host::HostOptions;
    use nanoclaw_host::config::Paths;

    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let mut config = config_for_tests();
    config.agents.runtime_retry_secs = 1;
    config.agents.max_tries = 1; // waiting must not spend tries
    let host = Host::start(HostOptions {
        paths: Paths::new(home.path()),
        config,
        upstreams: ModelUpstreams {
            anthropic: Some(Upstream {
                base_url: model.base_url(),
                auth: UpstreamAuth::XApiKey(TEST_KEY.into()),
            }),
            openai: None,
        },
        runtime: Some(std::sync::Arc::new(FlakyRuntime {
            down_for: std::sync::atomic::AtomicU32::new(3),
            inner: nanoclaw_sandbox::NativeRuntime::detect().unwrap(),
        })),
        agent_binary: Some(nanoclaw_test_support::agent_binary()),
        master_key: None,
        clock: None,
    })
    .await
    .unwrap();
    let mut client = connect_client(home.path()).await;
    let id = client.send("are you there?").await.unwrap();
    let mut notices = Vec::new();
    let reply = loop {
        if let ServerLine::Message {
            kind,
            text,
            reply_to,
            ..
        } = client.next().await.unwrap().expect("connection open")
        {
            if reply_to.as_deref() == Some(id.as_str()) {
                break (kind, text);
            }
            notices.push(text);
        }
    };
    assert_eq!(reply.0, "reply", "{reply:?}");
    assert!(reply.1.contains("are you there?"));
    assert_eq!(notices.len(), 1, "the chat is told once: {notices:?}");
    assert!(notices[0].contains("can't start my sandbox"), "{notices:?}");
    assert!(notices[0].contains("restarting"), "{notices:?}");
    host.shutdown().await;
}

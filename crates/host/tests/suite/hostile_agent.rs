//! The agent is untrusted: garbage, oversized lines, forged turn ids and over-limit
//! requests from it are refused, logged and survived. The "agent" here is a small Python
//! script run inside the real sandbox in place of nanoclaw-agent.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use super::common::*;
use nanoclaw_egress::relay::ModelUpstreams;
use nanoclaw_host::config::Paths;
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_test_support::TestHome;

const HOSTILE_AGENT: &str = r#"#!/usr/bin/python3 -S
import json, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
def raw(b):
    out.write(b)
    out.flush()
def send(obj):
    raw(json.dumps(obj).encode() + b"\n")
while True:
    line = inp.readline()
    if not line:
        break
    msg = json.loads(line)
    kind = msg.get("type")
    if kind == "hello":
        send({"type": "ready", "protocol_major": 1, "protocol_minor": 0, "agent_version": "hostile"})
    elif kind == "turn":
        tid = msg["turn_id"]
        raw(b"this is not json\n")
        raw(b'{"type":"launch_missiles"}\n')
        raw(b"x" * (5 * 1024 * 1024) + b"\n")
        # A reply for a turn that does not exist must not complete this one.
        send({"type": "turn_finished", "turn_id": "forged", "reply": "FORGED", "usage": {"input_tokens": 0, "output_tokens": 0}})
        send({"type": "request", "request_id": "r1", "turn_id": tid,
              "action": {"action": "send_message", "text": "y" * (100 * 1024)}})
        result = None
        while result is None:
            m = json.loads(inp.readline())
            if m.get("type") == "request_result":
                result = m
        send({"type": "turn_finished", "turn_id": tid,
              "reply": "survived ok=%s error=%s" % (result["ok"], result.get("error")),
              "usage": {"input_tokens": 1, "output_tokens": 1}})
    elif kind == "shutdown":
        break
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_agent_is_contained_and_the_host_keeps_serving() {
    let home = TestHome::new();
    let agent = home.path().join("hostile-agent.py");
    std::fs::write(&agent, HOSTILE_AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();

    let host = Host::start(HostOptions {
        paths: Paths::new(home.path()),
        config: config_for_tests(),
        upstreams: ModelUpstreams::default(),
        runtime: None,
        agent_binary: Some(agent),
        master_key: None,
        clock: None,
    })
    .await
    .unwrap();
    let mut client = connect_client(home.path()).await;

    for round in 0..2 {
        let (kind, text) = ask(&mut client, &format!("round {round}")).await;
        assert_eq!(kind, "reply");
        assert!(text.starts_with("survived ok=False"), "{text}");
        assert!(
            text.contains("limit"),
            "the refusal names the limit: {text}"
        );
        assert!(!text.contains("FORGED"));
    }
    let chat = host
        .store()
        .chat_by_platform("terminal", "local")
        .await
        .unwrap()
        .unwrap();
    let out = host.store().outbound_for_chat(chat.id).await.unwrap();
    assert_eq!(
        out.len(),
        2,
        "only the two real replies were stored: {out:?}"
    );
    assert!(out.iter().all(|o| !o.text.contains("yyyy")));
    host.shutdown().await;
}

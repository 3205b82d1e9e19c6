//! A fake agent runner in Python: it speaks the host↔agent protocol and stamps each reply
//! with when it read the turn and when it answered, so a benchmark measures the host alone.

use std::path::{Path, PathBuf};

/// The fake agent. `-S`: skip `site`, nothing from outside the standard library is needed.
pub const FAKE_AGENT: &str = r#"#!/usr/bin/python3 -S
import json, sys, time
inp, out = sys.stdin.buffer, sys.stdout.buffer
def send(obj):
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()
while True:
    line = inp.readline()
    if not line:
        break
    received = time.time_ns()
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    kind = msg.get("type")
    if kind == "hello":
        send({"type": "ready", "protocol_major": 1, "protocol_minor": 0, "agent_version": "bench-fake"})
    elif kind == "turn":
        first = msg["messages"][0]["text"] if msg.get("messages") else ""
        reply = "recv=%d sent=%d first=%s" % (received, time.time_ns(), first)
        send({"type": "turn_finished", "turn_id": msg["turn_id"], "reply": reply,
              "usage": {"input_tokens": 0, "output_tokens": 0}})
    elif kind == "shutdown":
        break
"#;

/// Writes [`FAKE_AGENT`] into `dir` (made world-readable: the sandbox user must read it).
pub fn write_fake_agent(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let agent = dir.join("fake-agent.py");
    std::fs::write(&agent, FAKE_AGENT).expect("writing the fake agent");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    agent
}

/// The integer field `name=` of a fake agent's reply.
pub fn field(reply: &str, name: &str) -> i128 {
    reply
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("the fake agent's reply lacks {name}: {reply}"))
}

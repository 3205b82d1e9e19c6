//! Shared pieces of the host benchmarks: latency statistics, an in-process host with the
//! scripted model, and process inspection through `/proc`.
//!
//! Benches are test code: a failed precondition should stop the run loudly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
use nanoclaw_host::channel::terminal::{ServerLine, TerminalClient};
use nanoclaw_host::config::{Config, Paths};
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_sandbox::Runtime;
use nanoclaw_test_support::scripted_model::ScriptedModel;

pub const BENCH_KEY: &str = "sk-ant-bench-0123456789-SECRET";

/// Iterations: `default`, or `$BENCH_N` when set (for quick or longer runs).
pub fn iterations(default: usize) -> usize {
    std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(default)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

pub fn print_header(title: &str) {
    println!();
    println!("## {title}");
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"
    );
}

/// Prints one row: n, p50, p95, p99, max, mean (milliseconds).
pub fn print_row(name: &str, samples: &[Duration]) {
    if samples.is_empty() {
        println!("{name:<44} {:>5} (no samples)", 0);
        return;
    }
    if std::env::var_os("BENCH_DUMP").is_some() {
        let all: Vec<String> = samples.iter().map(|d| ms(*d)).collect();
        println!("{name}: samples in order (ms): {}", all.join(" "));
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let total: Duration = sorted.iter().sum();
    let mean = total / sorted.len() as u32;
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        name,
        sorted.len(),
        ms(percentile(&sorted, 50.0)),
        ms(percentile(&sorted, 95.0)),
        ms(percentile(&sorted, 99.0)),
        ms(sorted[sorted.len() - 1]),
        ms(mean)
    );
}

/// The agent runner the host puts in the sandbox: `$NANOCLAW_AGENT_BIN`, else the
/// release musl build when present (what ships), else the debug build the tests use.
pub fn bench_agent_binary() -> PathBuf {
    if std::env::var_os("NANOCLAW_AGENT_BIN").is_none() {
        let release = nanoclaw_test_support::workspace_root()
            .join("target/x86_64-unknown-linux-musl/release/nanoclaw-agent");
        if release.is_file() {
            return release;
        }
    }
    nanoclaw_test_support::agent_binary()
}

/// Test-like configuration: agents stay warm for the whole run.
pub fn bench_config() -> Config {
    let mut config = Config::default();
    config.agents.retry_backoff_secs = 0;
    config.agents.idle_timeout_secs = 600;
    config
}

pub fn upstreams(model: &ScriptedModel) -> ModelUpstreams {
    ModelUpstreams {
        anthropic: Some(Upstream {
            base_url: model.base_url(),
            auth: UpstreamAuth::XApiKey(BENCH_KEY.into()),
        }),
        openai: None,
    }
}

/// Starts an in-process host on `home` (runtime detected and probed, like `nanoclaw run`).
pub async fn start_host(home: &Path, model: &ScriptedModel, agent_binary: PathBuf) -> Host {
    start_host_with(home, model, agent_binary, bench_config(), None).await
}

/// Starts an in-process host on `home` with `config` and, when given, an already-probed
/// `runtime` (else detected and probed from `config`, like `nanoclaw run`).
pub async fn start_host_with(
    home: &Path,
    model: &ScriptedModel,
    agent_binary: PathBuf,
    config: Config,
    runtime: Option<Arc<dyn Runtime>>,
) -> Host {
    Host::start(HostOptions {
        paths: Paths::new(home),
        config,
        upstreams: upstreams(model),
        runtime,
        agent_binary: Some(agent_binary),
        master_key: None,
        clock: None,
    })
    .await
    .expect("host starts")
}

/// Connects to the host's terminal socket, retrying every millisecond for up to 30 s.
pub async fn connect(socket: &Path) -> TerminalClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TerminalClient::connect(socket).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "terminal socket {} never accepted: {e}",
                    socket.display()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Sends `text` and waits for the reply; returns the reply text. Panics on an error
/// reply: a benchmark of failures would be meaningless.
pub async fn ask(client: &mut TerminalClient, id: &str, text: &str) -> String {
    client.send_with_id(id, text).await.expect("send");
    let line = tokio::time::timeout(Duration::from_secs(120), client.reply_to(id))
        .await
        .expect("a reply within 120 s")
        .expect("reading from the host")
        .expect("the host kept the connection");
    match line {
        ServerLine::Message { kind, text, .. } if kind == "reply" => text,
        other => panic!("message {id} was not answered: {other:?}"),
    }
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, comparable across processes).
pub fn epoch_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`, …).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Every live descendant of `pid` (found through the parent pid in `/proc/*/stat`).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The command name may contain spaces and parentheses: parse after the last ')'.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, pp)| *pp == parent) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

/// `/proc/<pid>/comm`, trimmed.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A short description of the machine for the report.
pub fn print_machine() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    println!("machine: {cores} cores, {cpu}, kernel {}", kernel.trim());
}

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

pub fn duration_ns(ns: i128) -> Duration {
    Duration::from_nanos(ns.max(0) as u64)
}

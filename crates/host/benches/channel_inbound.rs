//! Channels (issue 11): inbound latency under load per platform, and host RSS with all four
//! platform channels connected.
//!
//! 1. For each platform (telegram, discord, slack, whatsapp): the platform's local fake
//!    server (`nanoclaw_test_support::platforms`) and an in-process host with that channel
//!    enabled against it, its secrets in the vault. 100 direct-message chats, each wired to
//!    the main group with the `always` rule (through the host's store, with the chat id the
//!    adapter reports), so 100 sessions and 100 agents; `agents.max_concurrent` is raised to
//!    128 and `idle_timeout_secs` is 600, so every agent stays warm. One warm-up message per
//!    chat starts the 100 agents; then a paced loop posts `$BENCH_RATE` (default 1,000)
//!    messages/s for `$BENCH_SECS` (default 5) seconds, round robin over the chats (10 msg/s
//!    per chat). Each message carries a unique marker; the bench stamps CLOCK_REALTIME right
//!    before `user_says`. The agent is a small Python program in the real bubblewrap sandbox
//!    that stamps CLOCK_REALTIME when it reads a turn and answers with that stamp and every
//!    marker of the turn; the answers come back through the channel to the fake, where the
//!    bench reads them. Latency = turn read − posted, per message (a message batched into a
//!    turn with others counts up to that turn's read stamp). It covers the fake's delivery
//!    (long poll / websocket / webhook), the adapter's parsing, the host's router (SQLite
//!    inbound row, ack), the session worker, the agent pool and the pipe into the sandbox.
//! 2. RSS: `nanoclaw run` (this package's release binary) as a child process, all four
//!    channels enabled, each against its own fake; VmRSS from /proc once all four report
//!    connected and 1 s idle, then after a burst (25 chats per platform, 4 messages each,
//!    100 agents) once every message was answered and 1 s idle. The agents' sandboxes are
//!    separate processes, reported separately.
//!
//! 3. The issue-12 channels against REAL servers on loopback, when named in
//!    `BENCH_PLATFORMS` (e.g. `email,matrix,irc,webhook`): Dovecot + Postfix (root needed),
//!    Synapse (`scripts/prerequisites --tests`), ngircd, and the webhook channel's signing
//!    client — the same drivers as the conformance suite. Their drivers have fewer users
//!    (4 mail senders, 3 hooks; 10 rooms or DMs for Matrix and IRC), and the servers are far
//!    slower than the fakes, so run them at a low `BENCH_RATE` (e.g. 20). Latency includes
//!    the server: Synapse's /sync wake-up, Dovecot's IDLE notification.
//!
//! Every run also prints the machine's CPU use from the first post to the last answer (busy
//! share of both cores, busy time per message), which says whether a rate saturates it.
//!
//! Run: `cargo bench -p nanoclaw --bench channel_inbound` (needs bwrap and /usr/bin/python3).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nanoclaw_host::channel::LinkState;
use nanoclaw_host::config::{Config, Paths};
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_store::{SessionMode, Store, WiringOptions};
use nanoclaw_test_support::platforms::discord::FakeDiscord;
use nanoclaw_test_support::platforms::email::FakeEmail;
use nanoclaw_test_support::platforms::irc::FakeIrc;
use nanoclaw_test_support::platforms::matrix::FakeMatrix;
use nanoclaw_test_support::platforms::slack::FakeSlack;
use nanoclaw_test_support::platforms::telegram::FakeTelegram;
use nanoclaw_test_support::platforms::webhook::FakeWebhook;
use nanoclaw_test_support::platforms::whatsapp::FakeWhatsApp;
use nanoclaw_test_support::platforms::{FakeChat, FakePlatform};
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};
use nanoclaw_test_support::{KillOnDrop, TestHome, eventually};
use nanoclaw_vault::{MasterKey, SecretString, Vault};

/// Chats per platform on the local fakes; the real servers have fewer users (see
/// [`chats_for`]).
const CHATS: u32 = 100;
/// The issue-11 platforms, measured when `BENCH_PLATFORMS` is not set.
const FAKE_PLATFORMS: [&str; 4] = ["telegram", "discord", "slack", "whatsapp"];
/// The issue-12 platforms, against real servers (named in `BENCH_PLATFORMS` to run).
const REAL_PLATFORMS: [&str; 4] = ["email", "matrix", "irc", "webhook"];
const MASTER_KEY: [u8; 32] = [7u8; 32];
const MASTER_KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

/// The fake agent: answers `turn` with `recv <ns>` and every `bm…` word of the turn's
/// messages, so each message's marker comes back with the time its turn was read.
const MARKER_AGENT: &str = r#"#!/usr/bin/python3 -S
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
        send({"type": "ready", "protocol_major": 1, "protocol_minor": 0, "agent_version": "bench-marker"})
    elif kind == "turn":
        words = []
        for m in msg.get("messages") or []:
            words += [w for w in (m.get("text") or "").split() if w.startswith("bm")]
        send({"type": "turn_finished", "turn_id": msg["turn_id"],
              "reply": "recv %d %s" % (received, " ".join(words)),
              "usage": {"input_tokens": 0, "output_tokens": 0}})
    elif kind == "shutdown":
        break
"#;

fn main() {
    if !Path::new("/usr/bin/python3").is_file() {
        println!(
            "channel_inbound skipped: /usr/bin/python3 (the fake agent's interpreter) is missing"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| *v > 0.0)
        .unwrap_or(default)
}

async fn run() {
    print_machine();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = write_marker_agent(dir.path());
    let model = ScriptedModel::start(Scenario::echo().with_api_key(BENCH_KEY))
        .await
        .expect("scripted model");
    let rate = env_num("BENCH_RATE", 1000.0);
    let secs = env_num("BENCH_SECS", 5.0);
    let only = std::env::var("BENCH_PLATFORMS").unwrap_or_default();

    let mut results = Vec::new();
    for name in FAKE_PLATFORMS.into_iter().chain(REAL_PLATFORMS) {
        let named = only.split(',').any(|p| p == name);
        if !named && (!only.is_empty() || REAL_PLATFORMS.contains(&name)) {
            continue;
        }
        let fake = start_fake(name).await;
        let chats = chats_for(name);
        let result = measure_platform(fake, &model, &agent, rate, secs, chats).await;
        results.push((name, result));
    }
    print_header(&format!(
        "inbound posted on the platform's server -> turn read by the warm agent, target {rate:.0} msg/s for {secs:.0} s"
    ));
    for (name, r) in &results {
        print_row(&format!("{name} ({} chats)", r.chats), &r.latencies);
    }
    println!();
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>12} {:>12}",
        "channel",
        "posted",
        "answered",
        "turns",
        "msg/s",
        "max/turn",
        "cpu busy",
        "cpu/msg",
        "host/msg"
    );
    for (name, r) in &results {
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>10.0} {:>12} {:>9.0}% {:>9.3} ms {:>9.3} ms",
            name,
            r.posted,
            r.answered,
            r.turns,
            r.achieved_rate,
            r.max_batch,
            r.machine_busy * 100.0,
            r.cpu_per_message.as_secs_f64() * 1e3,
            r.process_cpu_per_message.as_secs_f64() * 1e3,
        );
    }
    println!(
        "cpu busy: the machine's busy share of all cores from the first post to the last answer; \
         cpu/msg: that busy time per message (bench, fakes, host, agents, anything else running); \
         host/msg: this process's (host, fakes, posting loop) share of it"
    );

    if std::env::var_os("BENCH_SKIP_RSS").is_none() {
        measure_rss(&model, &agent).await;
    }
}

fn write_marker_agent(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let agent = dir.join("marker-agent.py");
    std::fs::write(&agent, MARKER_AGENT).expect("writing the fake agent");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    agent
}

async fn start_fake(name: &str) -> Arc<dyn FakePlatform> {
    match name {
        "telegram" => Arc::new(FakeTelegram::start().await),
        "discord" => Arc::new(FakeDiscord::start().await),
        "slack" => Arc::new(FakeSlack::start().await),
        "whatsapp" => Arc::new(FakeWhatsApp::start().await),
        // Real servers: Dovecot + Postfix (needs root), Synapse, ngircd, and the webhook
        // channel's signing client.
        "email" => Arc::new(FakeEmail::start().await),
        "matrix" => Arc::new(FakeMatrix::start().await),
        "irc" => Arc::new(FakeIrc::start().await),
        "webhook" => Arc::new(FakeWebhook::start().await),
        other => panic!("no fake for {other}"),
    }
}

/// Chats (so agents) per platform: 100 on the fakes; the real servers' drivers have a fixed
/// set of users (4 mail senders, 3 configured hooks) or make one room or DM per chat (10).
/// `BENCH_CHATS` overrides where the driver allows it.
fn chats_for(name: &str) -> u32 {
    let fixed = match name {
        "email" => Some(4),
        "webhook" => Some(3),
        _ => None,
    };
    let default = if REAL_PLATFORMS.contains(&name) {
        10
    } else {
        CHATS
    };
    match (fixed, env_num("BENCH_CHATS", 0.0) as u32) {
        (Some(n), _) => n,
        (None, 0) => default,
        (None, n) => n,
    }
}

/// Bench config: native sandbox, every one of the 100 agents warm for the whole run.
fn config() -> Config {
    let mut config = bench_config();
    config.agents.runtime = "native".into();
    config.agents.max_concurrent = 128;
    config.agents.idle_timeout_secs = 600;
    config
}

/// The platforms' secrets, sealed into the vault of `home` before the host starts.
async fn seed_vault(home: &Path, fakes: &[Arc<dyn FakePlatform>]) {
    let paths = Paths::new(home);
    paths.prepare().unwrap();
    let store = nanoclaw_host::open_store(&paths.database(), false).unwrap();
    let vault = Vault::open(store, MasterKey::from_bytes(MASTER_KEY))
        .await
        .unwrap();
    for fake in fakes {
        for (name, value) in fake.secrets() {
            vault.set(&name, SecretString::from(value)).await.unwrap();
        }
    }
}

/// Wires `chats` of `fake` to the main group, every message waking it (DMs: the chat id the
/// adapter reports is the platform's chat id, `Posted.chat_id`).
async fn wire(store: &Store, fake: &dyn FakePlatform, chats: &[FakeChat]) {
    let main = store.main_group().await.unwrap().expect("the main group");
    for chat in chats {
        let row = store
            .ensure_chat(fake.channel(), chat.platform_id.clone(), "", false)
            .await
            .unwrap();
        store
            .wire(
                row.id,
                main.id.clone(),
                WiringOptions::new(false, SessionMode::Shared),
            )
            .await
            .unwrap();
    }
}

struct PlatformResult {
    chats: u32,
    latencies: Vec<Duration>,
    posted: usize,
    answered: usize,
    turns: usize,
    max_batch: usize,
    achieved_rate: f64,
    /// The machine's CPU from the first post to the last answer: busy share of all cores,
    /// and busy CPU time per message (everything: bench, fakes, host, agents).
    machine_busy: f64,
    cpu_per_message: Duration,
    /// The bench's own process (host, fakes and posting loop; not the agents): CPU time per
    /// message.
    process_cpu_per_message: Duration,
}

/// What the agents answered in `chats` so far: marker → the turn's read stamp, plus the
/// number of turns and the largest batch.
async fn answers(
    fake: &dyn FakePlatform,
    chats: &[FakeChat],
) -> (HashMap<String, i128>, usize, usize) {
    let mut out = HashMap::new();
    let (mut turns, mut max_batch) = (0, 0);
    for chat in chats {
        for sent in fake.sent(chat).await {
            let words: Vec<&str> = sent.text.split_whitespace().collect();
            let Some(recv) = (words.first() == Some(&"recv"))
                .then(|| words.get(1).and_then(|w| w.parse::<i128>().ok()))
                .flatten()
            else {
                continue;
            };
            let markers: Vec<&str> = words[2..]
                .iter()
                .copied()
                .filter(|w| w.starts_with("bm"))
                .collect();
            turns += 1;
            max_batch = max_batch.max(markers.len());
            for m in markers {
                out.insert(m.to_owned(), recv);
            }
        }
    }
    (out, turns, max_batch)
}

/// Waits (up to `secs`) until every marker in `want` came back; returns what came back.
async fn wait_answers(
    fake: &dyn FakePlatform,
    chats: &[FakeChat],
    want: &HashSet<String>,
    secs: u64,
) -> (HashMap<String, i128>, usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = answers(fake, chats).await;
        if want.iter().all(|m| got.0.contains_key(m)) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn measure_platform(
    fake: Arc<dyn FakePlatform>,
    model: &ScriptedModel,
    agent: &Path,
    rate: f64,
    secs: f64,
    chat_count: u32,
) -> PlatformResult {
    let name = fake.channel();
    let home = TestHome::new();
    seed_vault(home.path(), std::slice::from_ref(&fake)).await;
    let mut config = config();
    let table: toml::Table = toml::from_str(&fake.settings_toml()).expect("the fake's settings");
    config.channels.platforms.insert(name.to_owned(), table);
    let host = Host::start(HostOptions {
        master_key: Some(MasterKey::from_bytes(MASTER_KEY)),
        ..options_with_agent(home.path(), model, BENCH_KEY, config, agent.to_path_buf())
    })
    .await
    .expect("host starts");
    eventually(60, &format!("{name} connected"), || async {
        host.channel_health()
            .iter()
            .any(|(n, h)| n == name && h.state == LinkState::Connected)
            .then_some(())
    })
    .await;

    let chats: Vec<FakeChat> = (1..=chat_count).map(|n| fake.chat(n, false)).collect();
    if !fake.chats_wired_by_config() {
        wire(host.store(), fake.as_ref(), &chats).await;
    }

    // Warm-up: one message per chat starts its agent (100 sandboxes).
    let mut want = HashSet::new();
    for (n, chat) in chats.iter().enumerate() {
        let marker = format!("bmw{n}");
        fake.user_says(chat, &format!("{marker} warm up"), false)
            .await;
        want.insert(marker);
    }
    let (got, _, _) = wait_answers(fake.as_ref(), &chats, &want, 120).await;
    assert!(
        want.iter().all(|m| got.contains_key(m)),
        "{name}: only {} of {} warm-up messages answered",
        want.iter().filter(|m| got.contains_key(*m)).count(),
        want.len()
    );
    let live = host.live_agents();
    if live != chat_count as usize {
        println!("{name}: {live} agents live after the warm-up, not {chat_count}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The paced run.
    let total = (rate * secs).round() as usize;
    let mut posted_at: Vec<i128> = Vec::with_capacity(total);
    let cpu_before = machine_cpu_ticks().unwrap_or_default();
    let process_before = process_cpu_ticks(std::process::id()).unwrap_or_default();
    let started = Instant::now();
    let mut i = 0usize;
    while i < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
        while i < due {
            let chat = &chats[i % chats.len()];
            let text = format!("bm{i} message {i} for the bench");
            posted_at.push(epoch_ns());
            fake.user_says(chat, &text, false).await;
            i += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let achieved_rate = total as f64 / started.elapsed().as_secs_f64();
    // Collecting every answer reads all the fake's sent messages under its lock, which
    // would slow the messages still in flight: first wait, cheaply, for the last one.
    let last_chat = &chats[(total - 1) % chats.len()];
    let last = format!("bm{}", total - 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline
        && !fake
            .sent(last_chat)
            .await
            .iter()
            .any(|m| m.text.split_whitespace().any(|w| w == last))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Up to the last answer (within the 100 ms poll above): the run's whole CPU cost.
    let cpu_after = machine_cpu_ticks().unwrap_or_default();
    let process_after = process_cpu_ticks(std::process::id()).unwrap_or_default();
    let busy_ticks = cpu_after.0.saturating_sub(cpu_before.0);
    let all_ticks = cpu_after.1.saturating_sub(cpu_before.1).max(1);
    let per_message = |ticks: u64| {
        Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND as f64 / total.max(1) as f64)
    };
    let want: HashSet<String> = (0..total).map(|i| format!("bm{i}")).collect();
    let (got, turns, max_batch) = wait_answers(fake.as_ref(), &chats, &want, 120).await;
    let mut latencies = Vec::with_capacity(total);
    for (i, posted) in posted_at.iter().enumerate() {
        if let Some(recv) = got.get(&format!("bm{i}")) {
            latencies.push(duration_ns(recv - posted));
        }
    }
    let answered = latencies.len();
    if answered < total {
        println!(
            "{name}: {} of {total} messages were not answered within 120 s",
            total - answered
        );
    }
    host.shutdown().await;
    PlatformResult {
        latencies,
        posted: total,
        answered,
        // The warm-up turns are not counted.
        turns: turns.saturating_sub(chat_count as usize),
        chats: chat_count,
        max_batch,
        achieved_rate,
        machine_busy: busy_ticks as f64 / all_ticks as f64,
        cpu_per_message: per_message(busy_ticks),
        process_cpu_per_message: per_message(process_after.saturating_sub(process_before)),
    }
}

/// The daemon's config file: native sandbox, warm agents, all four channels.
fn daemon_config(fakes: &[Arc<dyn FakePlatform>]) -> String {
    let mut toml = String::from(
        "[agents]\nruntime = \"native\"\nretry_backoff_secs = 0\nmax_concurrent = 128\nidle_timeout_secs = 600\n",
    );
    for fake in fakes {
        toml.push_str(&format!(
            "\n[channels.{}]\n{}\n",
            fake.channel(),
            fake.settings_toml()
        ));
    }
    toml
}

/// Every platform channel of the daemon on `home` reports connected.
async fn daemon_connected(home: &Path, names: &[&str]) -> bool {
    use nanoclaw_host::channel::terminal::{ClientLine, ServerLine, TerminalClient};
    let socket = Paths::new(home).terminal_socket();
    let Ok(mut client) = TerminalClient::connect(&socket).await else {
        return false;
    };
    match client.admin(&ClientLine::ChannelStatus).await {
        Ok(Some(ServerLine::Channels { channels })) => names.iter().all(|name| {
            channels
                .iter()
                .any(|r| r.name == *name && r.health.state == LinkState::Connected)
        }),
        _ => false,
    }
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

async fn measure_rss(model: &ScriptedModel, agent: &Path) {
    let fakes: Vec<Arc<dyn FakePlatform>> = vec![
        start_fake("telegram").await,
        start_fake("discord").await,
        start_fake("slack").await,
        start_fake("whatsapp").await,
    ];
    let names: Vec<&str> = fakes.iter().map(|f| f.channel()).collect();
    let home = TestHome::new();
    seed_vault(home.path(), &fakes).await;
    std::fs::write(home.path().join("config.toml"), daemon_config(&fakes)).unwrap();
    let child: Child = daemon_command(home.path(), model, BENCH_KEY, agent)
        .env("NANOCLAW_MASTER_KEY", MASTER_KEY_HEX)
        .spawn()
        .expect("spawning nanoclaw run");
    let mut daemon = KillOnDrop(child);
    let pid = daemon.0.id();
    let home_path = home.path().to_path_buf();
    eventually(60, "all four channels connected in the daemon", || {
        let (home, names) = (home_path.clone(), names.clone());
        async move { daemon_connected(&home, &names).await.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = status_kb(pid, "VmRSS");
    let idle_anon = smaps_rollup_kb(pid, "Anonymous");
    let idle_threads = status_kb(pid, "Threads");

    // The burst: 25 chats per platform, 4 messages each, all wired `always`.
    let store = nanoclaw_host::open_store(&Paths::new(home.path()).database(), false).unwrap();
    let mut per_fake = Vec::new();
    for fake in &fakes {
        let chats: Vec<FakeChat> = (1..=25).map(|n| fake.chat(n, false)).collect();
        wire(&store, fake.as_ref(), &chats).await;
        per_fake.push(chats);
    }
    let mut wants: Vec<HashSet<String>> = vec![HashSet::new(); fakes.len()];
    for round in 0..4 {
        for (f, fake) in fakes.iter().enumerate() {
            for (n, chat) in per_fake[f].iter().enumerate() {
                let marker = format!("bmr{round}c{n}");
                fake.user_says(chat, &format!("{marker} burst"), false)
                    .await;
                wants[f].insert(marker);
            }
        }
    }
    for (f, fake) in fakes.iter().enumerate() {
        let (got, _, _) = wait_answers(fake.as_ref(), &per_fake[f], &wants[f], 120).await;
        let missing = wants[f].iter().filter(|m| !got.contains_key(*m)).count();
        assert_eq!(missing, 0, "{}: burst messages unanswered", fake.channel());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = status_kb(pid, "VmRSS");
    let after_anon = smaps_rollup_kb(pid, "Anonymous");
    let after_threads = status_kb(pid, "Threads");
    let hwm = status_kb(pid, "VmHWM");
    let sandboxes: Vec<(u32, u64)> = descendants(pid)
        .into_iter()
        .filter_map(|p| Some((p, status_kb(p, "VmRSS")?)))
        .collect();
    let agents = sandboxes
        .iter()
        .filter(|(p, _)| comm(*p) != "bwrap")
        .count();
    let sandbox_kb: u64 = sandboxes.iter().map(|(_, kb)| kb).sum();
    stop(&mut daemon.0);

    println!();
    println!("## `nanoclaw run` with telegram, discord, slack and whatsapp connected (VmRSS)");
    println!("{:<60} {:>10}", "measurement", "MB");
    println!(
        "{:<60} {:>10}",
        "host, all four connected, 1 s idle",
        mb(idle)
    );
    println!(
        "{:<60} {:>10}",
        "  of which anonymous (heap, stacks)",
        mb(idle_anon)
    );
    println!(
        "{:<60} {:>10}",
        "  threads",
        idle_threads.map_or("n/a".into(), |t| t.to_string())
    );
    println!(
        "{:<60} {:>10}",
        "host, after a burst (400 messages, 100 chats), 1 s idle",
        mb(after)
    );
    println!(
        "{:<60} {:>10}",
        "  of which anonymous (heap, stacks)",
        mb(after_anon)
    );
    println!(
        "{:<60} {:>10}",
        "  threads",
        after_threads.map_or("n/a".into(), |t| t.to_string())
    );
    println!("{:<60} {:>10}", "host, peak (VmHWM)", mb(hwm));
    println!(
        "{:<60} {:>10}",
        format!(
            "agent sandboxes: {} processes, {agents} of them not bwrap",
            sandboxes.len()
        ),
        mb(Some(sandbox_kb))
    );
}

/// SIGTERM, then wait (the daemon shuts down its agents on SIGTERM).
fn stop(child: &mut Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

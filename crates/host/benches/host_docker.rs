//! First reply and warm turns with the agent in a Docker container, against the same host on
//! the native (bubblewrap) sandbox. An in-process host, the real `nanoclaw-agent`, the scripted
//! model (`Scenario::echo()`) behind the host's relay; each figure is timed from the terminal
//! client's send to the reply it reads.
//!
//! - first reply, cold agent: a fresh host with no warm agents, so the message waits for the
//!   sandbox to start, the `hello`/`ready` handshake and the turn;
//! - first reply, warm pool: a fresh host with `agents.warm = ["main"]`; the message is sent
//!   once the agent is live (`Host::live_agents() == 1`) plus a settle time for its handshake;
//! - warm turns: one host, one warm-up message, then N sequential messages.
//!
//! Docker runs the minimal (busybox) agent image, built here through the Engine API without any
//! registry (`nanoclaw-agent-bench:minimal`, kept between runs, rebuilt only when its recipe
//! changed). Containers carry this run's own host id; the bench checks none is left over.
//! Skips, saying so, when no Docker engine answers.
//!
//! Run: `cargo bench -p nanoclaw --bench host_docker` (`BENCH_N=…` changes the warm-turn
//! count, `BENCH_FIRST_N=…` the first-reply count).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nanoclaw_host::config::Paths;
use nanoclaw_sandbox::{DockerRuntime, NativeRuntime, Runtime};
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

/// The bench's own image tag, so it never rebuilds or removes an image someone else uses.
const IMAGE_TAG: &str = "nanoclaw-agent-bench:minimal";
/// After the warm agent is live, time for its sandbox start and handshake to finish, so the
/// first message measures a ready agent (Docker cold spawn is well under this).
const WARM_SETTLE: Duration = Duration::from_secs(2);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

struct Target {
    name: &'static str,
    runtime: Arc<dyn Runtime>,
    cold: Vec<Duration>,
    warm_first: Vec<Duration>,
    turns: Vec<Duration>,
}

async fn run() {
    let Some(docker) = docker_runtime().await else {
        return;
    };
    let native = NativeRuntime::detect().expect("bubblewrap is installed");
    native.probe().await.expect("the native sandbox works here");

    print_machine();
    let agent = bench_agent_binary();
    println!("agent binary: {}", agent.display());
    println!("docker image: {IMAGE_TAG} (minimal, busybox); warm settle {WARM_SETTLE:?}");
    let model = ScriptedModel::start(Scenario::echo().with_api_key(BENCH_KEY))
        .await
        .expect("scripted model");

    let mut targets = [
        Target {
            name: "docker",
            runtime: Arc::clone(&docker) as Arc<dyn Runtime>,
            cold: Vec::new(),
            warm_first: Vec::new(),
            turns: Vec::new(),
        },
        Target {
            name: "native",
            runtime: Arc::new(native),
            cold: Vec::new(),
            warm_first: Vec::new(),
            turns: Vec::new(),
        },
    ];

    // One host per runtime first: warms the page cache and the engine, and checks the host
    // really runs agents in the runtime it was given.
    for target in &targets {
        let home = TestHome::new();
        let host = start(&home, &model, &agent, target, false).await;
        assert_eq!(host.runtime(), Ok(target.name), "host runtime");
        let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
        let reply = ask(&mut client, "warmup", "warm up").await;
        assert!(reply.contains("warm up"), "unexpected reply: {reply}");
        drop(client);
        host.shutdown().await;
    }

    // First replies: runtimes alternate so a change in machine load hits both alike.
    let first_n = first_iterations(15);
    for i in 0..first_n {
        for target in targets.iter_mut() {
            let sample = first_reply(&model, &agent, target, false, i).await;
            target.cold.push(sample);
            let sample = first_reply(&model, &agent, target, true, i).await;
            target.warm_first.push(sample);
        }
    }

    // Warm turns on one host per runtime.
    let n = iterations(100);
    for target in targets.iter_mut() {
        let home = TestHome::new();
        let host = start(&home, &model, &agent, target, false).await;
        let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
        let reply = ask(&mut client, "warmup", "warm up").await;
        assert!(reply.contains("warm up"), "unexpected reply: {reply}");
        for i in 0..n {
            let text = format!("message {i}");
            let started = Instant::now();
            let reply = ask(&mut client, &format!("m{i}"), &text).await;
            target.turns.push(started.elapsed());
            assert!(reply.contains(&text), "unexpected reply: {reply}");
        }
        drop(client);
        host.shutdown().await;
    }

    print_header("first reply and warm turns (client send -> reply received)");
    for target in &targets {
        print_row(
            &format!("{}: first reply, cold agent", target.name),
            &target.cold,
        );
        print_row(
            &format!("{}: first reply, warm pool", target.name),
            &target.warm_first,
        );
        print_row(&format!("{}: warm turns", target.name), &target.turns);
    }
    let p50 = |samples: &[Duration]| {
        let mut sorted = samples.to_vec();
        sorted.sort();
        sorted[(sorted.len() - 1) / 2].as_secs_f64() * 1000.0
    };
    let (d, nat) = (&targets[0], &targets[1]);
    println!();
    println!(
        "docker - native, p50: first reply cold {:+.3} ms; first reply warm pool {:+.3} ms; warm turns {:+.3} ms",
        p50(&d.cold) - p50(&nat.cold),
        p50(&d.warm_first) - p50(&nat.warm_first),
        p50(&d.turns) - p50(&nat.turns),
    );

    // Every container this run made carries its host id; none should be left behind.
    let leftover = docker
        .remove_orphans(&HashSet::new())
        .await
        .expect("listing this run's containers");
    println!("containers of this run left over (now removed): {leftover}");
    assert_eq!(leftover, 0, "agent containers outlived their host");
}

/// A fresh host (and so a fresh agent); returns client send → reply for its first message.
async fn first_reply(
    model: &ScriptedModel,
    agent: &Path,
    target: &Target,
    warm: bool,
    i: usize,
) -> Duration {
    let home = TestHome::new();
    let host = start(&home, model, agent, target, warm).await;
    let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
    if warm {
        let deadline = Instant::now() + Duration::from_secs(60);
        while host.live_agents() < 1 {
            assert!(Instant::now() < deadline, "the warm agent never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(WARM_SETTLE).await;
    }
    let id = format!("{}-{i}", if warm { "w" } else { "c" });
    let started = Instant::now();
    let reply = ask(&mut client, &id, "hello").await;
    let elapsed = started.elapsed();
    assert!(reply.contains("hello"), "unexpected reply: {reply}");
    drop(client);
    host.shutdown().await;
    // Let the stopped agent's sandbox go before the next start.
    tokio::time::sleep(Duration::from_millis(50)).await;
    elapsed
}

async fn start(
    home: &TestHome,
    model: &ScriptedModel,
    agent: &Path,
    target: &Target,
    warm: bool,
) -> nanoclaw_host::Host {
    let mut config = bench_config();
    if warm {
        config.agents.warm = vec!["main".into()];
    }
    start_host_with(
        home.path(),
        model,
        agent.to_path_buf(),
        config,
        Some(Arc::clone(&target.runtime)),
    )
    .await
}

/// `$BENCH_FIRST_N` when set, else `default`.
fn first_iterations(default: usize) -> usize {
    std::env::var("BENCH_FIRST_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(default)
}

/// Docker with the minimal agent image (built when missing or outdated), probed; `None`, said
/// loudly, when no engine answers.
async fn docker_runtime() -> Option<Arc<DockerRuntime>> {
    let host_id = format!("bench-{}", std::process::id());
    match minimal_docker_runtime(IMAGE_TAG, host_id, false).await {
        Ok(runtime) => Some(Arc::new(runtime)),
        Err(e) => {
            println!("SKIPPED host_docker: no Docker engine answers here ({e})");
            None
        }
    }
}

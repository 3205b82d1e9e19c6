//! End-to-end latency with the real agent and the scripted model: terminal client sends a
//! message → the host routes and stores it → the sandboxed `nanoclaw-agent` (warm) asks the
//! scripted model through the relay → the reply is stored and delivered → the client has it.
//!
//! Also: the first reply after a host start (the agent is spawned, handshaken and then
//! answers: "cold agent").
//!
//! Run: `cargo bench -p nanoclaw --bench host_e2e` (`BENCH_N=…` changes the sample count).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use nanoclaw_host::config::Paths;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    print_machine();
    let agent = bench_agent_binary();
    println!("agent binary: {}", agent.display());
    let model = ScriptedModel::start(Scenario::echo().with_api_key(BENCH_KEY))
        .await
        .expect("scripted model");

    // Warm agent: one host, one session, N sequential messages.
    let n = iterations(300);
    let home = TestHome::new();
    let host = start_host(home.path(), &model, agent.clone()).await;
    let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
    let reply = ask(&mut client, "warmup", "warm up").await;
    assert!(reply.contains("warm up"), "unexpected reply: {reply}");
    let mut warm = Vec::with_capacity(n);
    for i in 0..n {
        let text = format!("message {i}");
        let started = Instant::now();
        let reply = ask(&mut client, &format!("m{i}"), &text).await;
        warm.push(started.elapsed());
        assert!(reply.contains(&text), "unexpected reply: {reply}");
    }
    drop(client);
    host.shutdown().await;

    // Cold agent: a fresh host (and so a fresh agent) for each first message.
    let cold_n = iterations(10).min(30);
    let mut cold = Vec::with_capacity(cold_n);
    for i in 0..cold_n {
        let home = TestHome::new();
        let host = start_host(home.path(), &model, agent.clone()).await;
        let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
        let started = Instant::now();
        let reply = ask(&mut client, &format!("c{i}"), "hello").await;
        cold.push(started.elapsed());
        assert!(reply.contains("hello"), "unexpected reply: {reply}");
        drop(client);
        host.shutdown().await;
        // Let the sandbox of the stopped agent go before the next start.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    print_header("end to end, scripted model (client send -> reply received)");
    print_row("warm agent", &warm);
    print_row("cold agent (spawn + handshake + turn)", &cold);
}

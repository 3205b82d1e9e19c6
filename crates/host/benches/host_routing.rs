//! Routing latency: inbound message received → turn written to the (warm) agent's stdin.
//!
//! The host has no timing hook on that path, so the agent measures it: the agent binary is
//! a small Python script (run by `/usr/bin/python3` inside the real bubblewrap sandbox) that
//! speaks the protocol (docs/PROTOCOL.md): it answers `hello` with `ready` and each `turn`
//! with `turn_finished`, whose reply carries the CLOCK_REALTIME nanoseconds at which it read
//! the turn line and at which it wrote the answer. The bench takes its own realtime stamp
//! just before the client writes the message, so
//!
//! - routing  = agent read the turn − client sent (terminal socket → channel → router →
//!   SQLite inbound row → session worker claim → agent pool → stdin write → pipe read),
//! - delivery = client read the reply − agent wrote `turn_finished` (stdout read → SQLite
//!   outbound row + inbound done → delivery loop → terminal socket),
//! - round trip = both plus the fake agent's own (tiny) work.
//!
//! Both clocks are the same CLOCK_REALTIME (bubblewrap does not create a time namespace).
//! Python's own read/parse adds a few microseconds to routing (it is counted, not removed).
//!
//! Run: `cargo bench -p nanoclaw --bench host_routing` (needs /usr/bin/python3).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use nanoclaw_host::channel::terminal::ServerLine;
use nanoclaw_host::config::Paths;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

fn main() {
    if !Path::new("/usr/bin/python3").is_file() {
        println!(
            "host_routing skipped: /usr/bin/python3 (the fake agent's interpreter) is missing"
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

async fn run() {
    print_machine();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = write_fake_agent(dir.path());

    // The model is never called (the fake agent answers itself); the host wants one configured.
    let model = ScriptedModel::start(Scenario::echo().with_api_key(BENCH_KEY))
        .await
        .expect("scripted model");
    let home = TestHome::new();
    let host = start_host(home.path(), &model, agent).await;
    let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
    // Warm-up: spawns the sandbox and the fake agent.
    let _ = ask(&mut client, "warmup", "warm up").await;

    let n = iterations(500);
    let (mut routing, mut delivery, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let id = format!("r{i}");
        let sent = epoch_ns();
        client.send_with_id(&id, "ping").await.expect("send");
        let line = tokio::time::timeout(Duration::from_secs(30), client.reply_to(&id))
            .await
            .expect("a reply within 30 s")
            .expect("reading")
            .expect("connection open");
        let received = epoch_ns();
        let ServerLine::Message { kind, text, .. } = line else {
            panic!("message {id} was not answered: {line:?}");
        };
        assert_eq!(kind, "reply", "{text}");
        routing.push(duration_ns(field(&text, "recv") - sent));
        delivery.push(duration_ns(received - field(&text, "sent")));
        total.push(duration_ns(received - sent));
    }
    drop(client);
    host.shutdown().await;

    print_header("host overhead with a fake agent (warm), terminal channel");
    print_row("routing: client send -> turn read by agent", &routing);
    print_row("delivery: agent reply -> client read", &delivery);
    print_row("round trip through the host", &total);
}

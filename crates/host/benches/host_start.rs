//! Host start to ready, and idle memory.
//!
//! 1. In process: `Host::start` on a fresh home until the terminal socket accepts a
//!    connection; with the sandbox runtime detected and probed (what `nanoclaw run` does)
//!    and with a runtime probed once beforehand (the host's own work only).
//! 2. The `nanoclaw run` binary (this package's release build, `CARGO_BIN_EXE_nanoclaw`)
//!    as a child process: exec until the terminal socket accepts a connection, polled
//!    every millisecond (so up to ~1 ms of the figure is polling granularity).
//! 3. Idle RSS of that process (VmRSS from /proc) after 1 s idle, then after one completed
//!    turn with the real agent and the scripted model (the agent's sandbox processes are
//!    separate processes and reported separately).
//!
//! Run: `cargo bench -p nanoclaw --bench host_start`.

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nanoclaw_host::config::Paths;
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_sandbox::{NativeRuntime, Runtime};
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

const NANOCLAW: &str = env!("CARGO_BIN_EXE_nanoclaw");

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
    println!("nanoclaw binary: {NANOCLAW}");
    let model = ScriptedModel::start(Scenario::echo().with_api_key(BENCH_KEY))
        .await
        .expect("scripted model");
    let n = iterations(30);

    // 1a. In process, runtime detected and probed.
    let mut probed = Vec::with_capacity(n);
    for _ in 0..n {
        let home = TestHome::new();
        let started = Instant::now();
        let host = start_host(home.path(), &model, agent.clone()).await;
        let client = connect(&Paths::new(home.path()).terminal_socket()).await;
        probed.push(started.elapsed());
        assert!(
            host.runtime().is_ok(),
            "no sandbox runtime: {:?}",
            host.runtime()
        );
        drop(client);
        host.shutdown().await;
    }

    // 1b. In process, with a runtime probed once up front.
    let mut config = bench_config();
    config.dashboard.enabled = !dashboard_off();
    let native = NativeRuntime::detect().expect("bwrap");
    native.probe().await.expect("probe");
    let native: Arc<dyn Runtime> = Arc::new(native);
    let mut own = Vec::with_capacity(n);
    for _ in 0..n {
        let home = TestHome::new();
        let started = Instant::now();
        let host = Host::start(HostOptions {
            paths: Paths::new(home.path()),
            config: config.clone(),
            upstreams: upstreams(&model),
            runtime: Some(Arc::clone(&native)),
            agent_binary: Some(agent.clone()),
            master_key: None,
            clock: None,
        })
        .await
        .expect("host starts");
        let client = connect(&Paths::new(home.path()).terminal_socket()).await;
        own.push(started.elapsed());
        drop(client);
        host.shutdown().await;
    }

    // 2. The binary.
    let mut binary = Vec::with_capacity(n);
    for _ in 0..n {
        let home = TestHome::new();
        let socket = Paths::new(home.path()).terminal_socket();
        let started = Instant::now();
        let mut daemon = spawn_daemon(home.path(), &model, &agent);
        connect(&socket).await;
        binary.push(started.elapsed());
        stop(&mut daemon);
    }

    print_header("start to ready (terminal socket accepts), fresh home each time");
    print_row("in process, runtime detected + probed", &probed);
    print_row("in process, runtime given (host work only)", &own);
    print_row("`nanoclaw run` binary, exec -> socket", &binary);

    // 3. Idle memory of the binary.
    let home = TestHome::new();
    let mut daemon = spawn_daemon(home.path(), &model, &agent);
    let pid = daemon.id();
    let mut client = connect(&Paths::new(home.path()).terminal_socket()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = status_kb(pid, "VmRSS");
    let reply = ask(&mut client, "mem-1", "hello").await;
    assert!(reply.contains("hello"), "unexpected reply: {reply}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_rss = status_kb(pid, "VmRSS");
    let after_hwm = status_kb(pid, "VmHWM");
    let sandbox: Vec<(u32, String, u64)> = descendants(pid)
        .into_iter()
        .filter_map(|p| Some((p, comm(p), status_kb(p, "VmRSS")?)))
        .collect();
    drop(client);
    stop(&mut daemon);

    println!();
    println!("## idle memory of `nanoclaw run` (VmRSS after 1 s idle)");
    println!("{:<52} {:>10}", "measurement", "MB");
    let mb = |kb: Option<u64>| kb.map_or("n/a".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!("{:<52} {:>10}", "host, idle, no turn yet", mb(idle_rss));
    println!(
        "{:<52} {:>10}",
        "host, idle, after one turn (agent warm)",
        mb(after_rss)
    );
    println!("{:<52} {:>10}", "host, peak (VmHWM) so far", mb(after_hwm));
    for (p, name, kb) in &sandbox {
        println!(
            "{:<52} {:>10}",
            format!("  sandbox process {p} ({name})"),
            mb(Some(*kb))
        );
    }
    let total: u64 = after_rss.unwrap_or(0) + sandbox.iter().map(|(_, _, kb)| kb).sum::<u64>();
    println!(
        "{:<52} {:>10}",
        "host + warm agent sandbox, total",
        mb(Some(total))
    );
}

/// `BENCH_NO_DASHBOARD=1`: the host without its web dashboard, to see what serving it costs.
fn dashboard_off() -> bool {
    std::env::var("BENCH_NO_DASHBOARD").is_ok_and(|v| v == "1")
}

/// `nanoclaw run` as a child process, environment as in the host's tests (`spawn_daemon`).
fn spawn_daemon(home: &Path, model: &ScriptedModel, agent: &Path) -> Child {
    if dashboard_off() {
        std::fs::write(home.join("config.toml"), "[dashboard]\nenabled = false\n")
            .expect("writing config.toml");
    }
    daemon_command(home, model, BENCH_KEY, agent)
        .spawn()
        .expect("spawning nanoclaw run")
}

/// SIGTERM, then wait (the daemon shuts down its agents on SIGTERM).
fn stop(child: &mut Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

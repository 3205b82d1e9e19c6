//! Shared pieces of the host benchmarks: an in-process host with the scripted model (through
//! the tests' harness, `tests/suite/common.rs`, so no helper is written twice), plus the latency
//! tables, fake agent and `/proc` figures of `nanoclaw-test-support`.
//!
//! Benches are test code: a failed precondition should stop the run loudly. Each bench uses
//! a part of what is here (hence the unused items and re-exports allowed).
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nanoclaw_egress::relay::ModelUpstreams;
use nanoclaw_host::channel::terminal::TerminalClient;
use nanoclaw_host::config::Config;
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_sandbox::Runtime;
use nanoclaw_test_support::scripted_model::ScriptedModel;

#[path = "../../tests/suite/common.rs"]
mod harness;

pub use harness::{daemon_command, main_and_terminal, minimal_docker_runtime, options_with_agent};
pub use nanoclaw_test_support::bench::{
    agent_binary as bench_agent_binary, duration_ns, epoch_ns, iterations, print_header,
    print_machine, print_row,
};
pub use nanoclaw_test_support::fake_agent::{FAKE_AGENT, field, write_fake_agent};
pub use nanoclaw_test_support::procfs::{
    TICKS_PER_SECOND, comm, descendants, machine_cpu_ticks, process_cpu_ticks, smaps_rollup_kb,
    status_kb,
};

/// The Anthropic key the scripted model of a benchmark expects.
pub const BENCH_KEY: &str = "sk-ant-bench-0123456789-SECRET";

/// Test-like configuration: agents stay warm for the whole run.
pub fn bench_config() -> Config {
    let mut config = Config::default();
    config.agents.retry_backoff_secs = 0;
    config.agents.idle_timeout_secs = 600;
    config.dashboard.listen = "127.0.0.1:0".into();
    config
}

/// The scripted `model` as the only upstream, reached with [`BENCH_KEY`].
pub fn upstreams(model: &ScriptedModel) -> ModelUpstreams {
    harness::model_upstreams(model, BENCH_KEY)
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
        runtime,
        ..options_with_agent(home, model, BENCH_KEY, config, agent_binary)
    })
    .await
    .expect("host starts")
}

/// Connects to the host's terminal socket, retrying every millisecond for up to 30 s.
pub async fn connect(socket: &Path) -> TerminalClient {
    harness::connect_polling(socket, Duration::from_millis(1)).await
}

/// Sends `text` and waits for the reply; returns the reply text. Panics on an error
/// reply: a benchmark of failures would be meaningless.
pub async fn ask(client: &mut TerminalClient, id: &str, text: &str) -> String {
    client.send_with_id(id, text).await.expect("send");
    let (kind, text) = harness::wait_reply(client, id).await;
    assert_eq!(kind, "reply", "message {id} was not answered: {text}");
    text
}

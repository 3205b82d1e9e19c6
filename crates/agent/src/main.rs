//! `nanoclaw-agent`: started by the host inside the sandbox; speaks the protocol on
//! stdin/stdout. Diagnostics go to stderr only.

use nanoclaw_agent::{AgentEnv, run};
use nanoclaw_protocol::{AgentMessage, encode_line};
use std::io::Write;
use tracing_subscriber::EnvFilter;

fn main() {
    // Before anything else, while single-threaded: tools must never reach the protocol
    // pipes through /proc (see `init`).
    let protected = nanoclaw_agent::init::protect();
    let init = match protected {
        Ok(()) if std::process::id() == 1 => nanoclaw_agent::init::become_init(),
        _ => Ok(()),
    };
    let filter = std::env::var(nanoclaw_protocol::contract::env::LOG)
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    // Fail closed: an agent whose pipes tools could write to must not run.
    if let Err(e) = protected {
        fatal_exit(&format!(
            "cannot make the agent process non-dumpable (prctl PR_SET_DUMPABLE): {e}"
        ));
    }
    if let Err(e) = init {
        fatal_exit(&format!("cannot start the agent under its own pid 1: {e}"));
    }

    let env = match AgentEnv::from_env() {
        Ok(env) => env,
        Err(e) => fatal_exit(&e.to_string()),
    };
    // Egress: bound before the runtime exists, so the proxy variables can be set while the
    // process is still single-threaded; every tool subprocess inherits them.
    let egress = match nanoclaw_agent::bridge::PreparedEgress::from_env() {
        Ok(e) => e,
        Err(e) => fatal_exit(&format!(
            "cannot open the loopback egress proxy bridge: {e}"
        )),
    };
    if let Some(egress) = &egress {
        for (name, value) in egress.env() {
            // SAFETY: no other thread exists yet (the runtime is built below), so nothing
            // can read the environment concurrently.
            unsafe { std::env::set_var(name, value) };
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal_exit(&format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(async {
        let _egress = match egress.map(|e| e.start()).transpose() {
            Ok(bridge) => bridge,
            Err(e) => fatal_exit(&format!("cannot start the egress proxy bridge: {e}")),
        };
        run(env, tokio::io::stdin(), tokio::io::stdout()).await
    });
    // Exit without dropping the runtime: its stdin reader may sit in a blocking read.
    std::process::exit(code);
}

fn fatal_exit(error: &str) -> ! {
    tracing::error!(%error, "fatal");
    if let Ok(line) = encode_line(&AgentMessage::Fatal {
        error: error.to_owned(),
    }) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
    std::process::exit(nanoclaw_agent::runner::EXIT_FATAL);
}

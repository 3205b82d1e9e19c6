use std::process::ExitCode;

use nanoclaw_host::{Host, HostOptions};

pub async fn run() -> anyhow::Result<ExitCode> {
    super::init_logging(None);
    let options = HostOptions::from_env()?;
    let home = options.paths.home.clone();
    let host = Host::start(options).await?;
    match host.runtime() {
        Ok(name) => tracing::info!(home = %home.display(), runtime = name, "nanoclaw is ready"),
        Err(why) => {
            tracing::error!(home = %home.display(), "nanoclaw is up but cannot run agents: {why}")
        }
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    host.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

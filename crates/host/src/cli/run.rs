use std::process::ExitCode;
use std::time::Duration;

use nanoclaw_host::host::AlreadyRunning;
use nanoclaw_host::{Host, HostOptions};

/// How long a host started for clients waits for an older host to finish shutting down.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// `nanoclaw run`. `for_clients`: started in the background by `nanoclaw chat`; logs to the
/// data dir's log file and stops once no client has been connected for a while.
pub async fn run(for_clients: bool) -> anyhow::Result<ExitCode> {
    let paths = nanoclaw_host::config::Paths::from_env().map_err(anyhow::Error::msg)?;
    // An invalid config is reported when the host loads it, just below.
    let keep_days = nanoclaw_host::config::Config::load(&paths.config_file())
        .map(|c| c.logs.keep_days)
        .unwrap_or(nanoclaw_host::config::LogsSection::default().keep_days);
    // A host started for clients has no terminal of its own: its log is the files alone.
    super::init_logging(super::LogTo::Host {
        paths: &paths,
        keep_days: usize::try_from(keep_days).unwrap_or(usize::MAX),
        stderr: !for_clients,
    });
    let Some(host) = start(for_clients).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    let home = paths.home.display().to_string();
    match host.runtime() {
        Ok(name) => tracing::info!(%home, runtime = name, for_clients, "nanoclaw is ready"),
        Err(why) => {
            tracing::error!(%home, "nanoclaw is up but cannot run agents: {why}")
        }
    }
    if for_clients {
        tokio::select! {
            _ = wait_for_signal() => {}
            () = host.until_stop_requested() => {}
            unattended = host.until_unattended(super::chat::CLIENT_HOST_LINGER) => {
                if !unattended {
                    tracing::error!("the terminal channel is off, so no client can connect; stopping");
                    host.shutdown().await;
                    anyhow::bail!("nanoclaw chat needs the terminal channel ([channels.terminal] enabled = true)");
                }
            }
        }
    } else {
        // SIGTERM, Ctrl-C, or `nanoclaw stop`: the same clean shutdown.
        tokio::select! {
            _ = wait_for_signal() => {}
            () = host.until_stop_requested() => {}
        }
    }
    tracing::info!("shutting down");
    host.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Starts the host. For clients, a host still holding the data dir is waited for: one that is
/// shutting down lets go shortly; `None` when another host answers clients meanwhile.
async fn start(for_clients: bool) -> anyhow::Result<Option<Host>> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        let options = HostOptions::from_env()?;
        let socket = options.paths.terminal_socket();
        match Host::start(options).await {
            Ok(host) => return Ok(Some(host)),
            Err(e) if for_clients && e.downcast_ref::<AlreadyRunning>().is_some() => {
                if nanoclaw_host::channel::terminal::TerminalClient::connect(&socket)
                    .await
                    .is_ok()
                {
                    tracing::info!("another nanoclaw host serves this data directory");
                    return Ok(None);
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
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

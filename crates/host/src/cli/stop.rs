//! `nanoclaw stop`: asks the running host, over its terminal socket, to shut down as it does
//! on SIGTERM, and waits until it has let go of the data directory.

use std::process::ExitCode;
use std::time::Duration;

use nanoclaw_host::channel::terminal::{ClientLine, ServerLine, TerminalClient};
use nanoclaw_host::config::Paths;
use nanoclaw_host::host::lock_holder;

/// How often the host's lock is looked at while it shuts down.
const POLL: Duration = Duration::from_millis(100);

/// Exit 0 once the host is gone, 3 when none was running, 1 when it could not be asked or
/// did not stop within `timeout`.
pub async fn stop(timeout: Duration) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let lock = paths.host_lock();
    let asked = match TerminalClient::connect(&paths.terminal_socket()).await {
        Ok(mut client) => match client.admin(&ClientLine::Stop).await {
            Ok(Some(ServerLine::Stopping { pid })) => Some(pid),
            // A host already on its way out closes the connection: wait for it below.
            Ok(_) | Err(_) => None,
        },
        Err(_) => None,
    };
    let Some(holder) = lock_holder(&lock) else {
        match asked {
            Some(pid) => println!("stopped the host (pid {pid})"),
            None => eprintln!(
                "no nanoclaw host is running on {}; nothing to stop",
                paths.home.display()
            ),
        }
        return Ok(if asked.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        });
    };
    let pid = asked.or(holder);
    let named = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    if asked.is_none() {
        // Holding the lock but not answering: its terminal channel is off (or it hangs).
        let how = pid.map_or_else(
            || "`nanoclaw service stop`, or SIGTERM to the process".to_owned(),
            |p| format!("`kill {p}` (SIGTERM stops it cleanly) or `nanoclaw service stop`"),
        );
        anyhow::bail!(
            "a nanoclaw host{named} holds {} but does not answer on {} (is [channels.terminal] \
             enabled?); stop it with {how}",
            paths.home.display(),
            paths.terminal_socket().display()
        );
    }
    eprintln!("stopping the host{named}…");
    let deadline = tokio::time::Instant::now() + timeout;
    while lock_holder(&lock).is_some() {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the host{named} is still shutting down after {} s; wait, or end it with `kill -9 {}`",
                timeout.as_secs(),
                pid.map_or_else(|| "PID".to_owned(), |p| p.to_string())
            );
        }
        tokio::time::sleep(POLL).await;
    }
    println!("stopped the host{named}");
    Ok(ExitCode::SUCCESS)
}

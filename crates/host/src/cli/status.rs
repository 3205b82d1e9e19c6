//! `nanoclaw status`: is the host up, how are its channels, and what is waiting.

use std::process::ExitCode;

use nanoclaw_host::config::Paths;

/// Prints the overview. Exit 0 when the host runs with every channel up, 2 when one is
/// down, 3 when the host is not running.
pub async fn status(json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let channels = super::channel::running_reports(&paths).await?;
    // What is queued is in the database, whether the host runs or not.
    let (queued_replies, waiting_for_you) = match super::open_existing() {
        Ok((_, _, store)) => (
            store.pending_outbound(10_000).await?.len(),
            store.waiting_messages().await?.len(),
        ),
        Err(_) => (0, 0),
    };
    let running = channels.is_some();
    let channels = channels.unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "host_running": running,
                "channels": channels,
                "queued_replies": queued_replies,
                "held_for_you": waiting_for_you,
            }))?
        );
    } else {
        println!("nanoclaw {}", env!("CARGO_PKG_VERSION"));
        if running {
            println!("host: running");
            super::channel::print_reports(&channels);
        } else {
            println!("host: not running (start it with `nanoclaw run`)");
        }
        println!("replies waiting to be delivered: {queued_replies}");
        println!("messages held for your decision: {waiting_for_you} (`nanoclaw chats list`)");
    }
    Ok(if !running {
        ExitCode::from(3)
    } else if channels.iter().all(|r| r.health.is_up()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

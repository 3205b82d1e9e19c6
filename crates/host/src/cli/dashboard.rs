//! `nanoclaw dashboard`: prints a one-time link that signs this browser in to the running
//! host's web dashboard. Whoever can run this can read the data directory; the link is the
//! only way in.

use std::process::ExitCode;

use nanoclaw_host::config::Paths;
use serde::Serialize;

#[derive(Serialize)]
struct LinkJson {
    url: String,
    /// RFC 3339, UTC: the link works once, until then.
    expires_at: String,
}

/// Exit 0 with the link; 3 when no host runs; 1 when the dashboard is off or not serving.
pub async fn dashboard(json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let (_, config, store) = super::open_existing()?;
    if !config.dashboard.enabled {
        anyhow::bail!(
            "the dashboard is off: set `enabled = true` under [dashboard] in {} and restart the host",
            paths.config_file().display()
        );
    }
    let Some(live) = super::status::live(&paths).await? else {
        eprintln!(
            "no nanoclaw host is running on {}; start it with `nanoclaw run` (or `nanoclaw service start`) and run this again",
            paths.home.display()
        );
        return Ok(ExitCode::from(3));
    };
    let web = live
        .channels
        .iter()
        .find(|c| c.name == nanoclaw_dashboard::NAME);
    let addr = nanoclaw_dashboard::bound_addr(&paths.dashboard_addr_file());
    let (Some(web), Some(addr)) = (web, addr) else {
        anyhow::bail!(
            "the running host serves no dashboard (it started before the dashboard was enabled?); restart it with `nanoclaw stop` and `nanoclaw run`"
        );
    };
    if !web.health.is_up() {
        anyhow::bail!(
            "the dashboard is not serving: {}",
            web.health
                .last_error
                .as_deref()
                .unwrap_or(web.health.state.as_str())
        );
    }
    let now = nanoclaw_store::now_ms();
    let token = nanoclaw_dashboard::auth::mint_login(&store, now).await?;
    let url = format!("http://{addr}/login?token={token}");
    let expires =
        chrono::DateTime::from_timestamp_millis(now + nanoclaw_dashboard::auth::LOGIN_TTL_MS)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&LinkJson {
                url,
                expires_at: expires
            })?
        );
    } else {
        println!("{url}");
        eprintln!(
            "open it in a browser on this machine (it works once, for {} minutes); from elsewhere: `ssh -L {port}:{addr} HOST`, then the same link",
            nanoclaw_dashboard::auth::LOGIN_TTL_MS / 60_000,
            port = addr.port()
        );
    }
    Ok(ExitCode::SUCCESS)
}

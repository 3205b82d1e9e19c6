//! `nanoclaw logs`: the host's daily JSON log files, human-readable (or raw with `--json`),
//! filtered by group and time, optionally followed as they grow (across the daily rotation).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use nanoclaw_host::config::Paths;
use nanoclaw_host::logs::{self, Entry, Filter, Follower};

/// How often `-f` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Lines shown before following when neither `--since` nor `--lines` says otherwise.
const FOLLOW_BACKLOG: usize = 10;

pub struct LogsArgs {
    pub follow: bool,
    pub group: Option<String>,
    pub since: Option<String>,
    pub lines: Option<usize>,
    pub json: bool,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let dir = paths.logs_dir();
    let filter = Filter {
        group: args.group.clone(),
        since: args
            .since
            .as_deref()
            .map(|s| logs::parse_since(s, chrono::Utc::now()))
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    // Colour for a person at a terminal only (and never with NO_COLOR).
    let color = {
        use std::io::IsTerminal;
        !args.json && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
    };
    let last = match (args.lines, args.follow, &filter.since) {
        (Some(n), _, _) => Some(n),
        (None, true, None) => Some(FOLLOW_BACKLOG),
        _ => None,
    };
    let mut out = std::io::stdout();
    let show = |out: &mut std::io::Stdout, entry: &Entry| -> std::io::Result<()> {
        if args.json {
            writeln!(out, "{}", entry.raw)
        } else {
            writeln!(out, "{}", entry.human(color))
        }
    };
    // Started before the backlog is read, so nothing written meanwhile is missed.
    let mut follower = if args.follow {
        Some(Follower::at_end(&dir)?)
    } else {
        None
    };
    let backlog = {
        let dir = dir.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || logs::read_all(&dir, &filter, last)).await??
    };
    if backlog.is_empty() && logs::files(&dir)?.is_empty() && follower.is_none() {
        eprintln!(
            "no log files in {} yet: the host writes them while it runs (`nanoclaw run`, \
             `nanoclaw service start`)",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for entry in &backlog {
        if show(&mut out, entry).is_err() {
            // The reader went away (`nanoclaw logs | head`): nothing more to do.
            return Ok(ExitCode::SUCCESS);
        }
    }
    let _ = out.flush();
    let Some(follower) = follower.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        for line in follower.poll()? {
            let Some(entry) = Entry::parse(&line) else {
                continue;
            };
            if filter.keeps(&entry) && show(&mut out, &entry).is_err() {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if out.flush().is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

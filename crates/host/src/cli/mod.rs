//! Command implementations.

pub mod channel;
pub mod chat;
pub mod chat_tty;
pub mod chats;
pub mod config;
pub mod dashboard;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
pub mod group;
pub mod image;
pub mod logs;
pub mod memory;
pub mod run;
pub mod service;
pub mod setup;
pub mod skills;
pub mod status;
pub mod stop;
pub mod tasks;
pub mod vault;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::path::Path;

use nanoclaw_host::config::{Config, Paths};
use nanoclaw_store::Store;

/// The data dir's paths, config and database, for commands that need a host to have run once.
pub fn open_existing() -> anyhow::Result<(Paths, Config, Store)> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let config = Config::load(&paths.config_file())?;
    let db = paths.database();
    if !db.exists() {
        anyhow::bail!(
            "no nanoclaw database at {} yet; start nanoclaw once (`nanoclaw chat` or `nanoclaw run`)",
            db.display()
        );
    }
    let store = nanoclaw_host::open_store(&db, true)?;
    Ok((paths, config, store))
}

/// The group named by `folder` (`--group`), or the owner's main group.
pub async fn group_or_main(
    store: &Store,
    folder: Option<String>,
) -> anyhow::Result<nanoclaw_store::Group> {
    match folder {
        Some(f) => store.group_by_folder(f.as_str()).await?.ok_or_else(|| {
            anyhow::anyhow!("no group with folder {f:?}; see `nanoclaw group list`")
        }),
        None => store
            .main_group()
            .await?
            .ok_or_else(|| anyhow::anyhow!("there is no main group yet; name one with --group")),
    }
}

/// Where a process logs.
pub enum LogTo<'a> {
    /// One plain-text file, never coloured (the demo's in-process host).
    File(&'a Path),
    /// The host: JSON lines in the data dir's daily files (`logs/`, newest `keep_days` kept),
    /// and, when `stderr`, the terminal's human format too.
    Host {
        paths: &'a nanoclaw_host::config::Paths,
        keep_days: usize,
        stderr: bool,
    },
}

/// Starts logging. `NANOCLAW_LOG` sets the filter (default `info`); `NANOCLAW_LOG_FORMAT=json`
/// makes stderr JSON too. Stderr is coloured only when it is a terminal and `NO_COLOR` is
/// unset; files never are. A log directory that cannot be opened is said on stderr, and
/// the host runs on without its files.
pub fn init_logging(to: LogTo<'_>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};
    type Boxed = Box<dyn Layer<Registry> + Send + Sync>;
    let filter =
        || EnvFilter::try_from_env("NANOCLAW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("NANOCLAW_LOG_FORMAT").is_ok_and(|v| v == "json");
    let mut layers: Vec<Boxed> = Vec::new();
    let stderr = match to {
        LogTo::File(path) => {
            if let Some(dir) = path.parent() {
                let _ = nanoclaw_host::config::create_private_dir(dir);
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok();
            match file {
                Some(f) if json => layers.push(
                    fmt::layer()
                        .json()
                        .with_writer(std::sync::Mutex::new(f))
                        .with_filter(filter())
                        .boxed(),
                ),
                Some(f) => layers.push(
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(std::sync::Mutex::new(f))
                        .with_filter(filter())
                        .boxed(),
                ),
                None => {}
            }
            false
        }
        LogTo::Host {
            paths,
            keep_days,
            stderr,
        } => {
            match nanoclaw_host::logs::DailyFiles::open(&paths.logs_dir(), keep_days) {
                Ok(files) => layers.push(
                    fmt::layer()
                        .json()
                        .with_writer(files)
                        .with_filter(filter())
                        .boxed(),
                ),
                Err(e) => eprintln!(
                    "warning: cannot write the log files in {}: {e}; logging to stderr only",
                    paths.logs_dir().display()
                ),
            }
            stderr
        }
    };
    if stderr {
        if json {
            layers.push(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter())
                    .boxed(),
            );
        } else {
            // Colour only for a person at a terminal: stderr redirected to a file, a pipe or
            // journald gets plain text.
            layers.push(
                fmt::layer()
                    .with_ansi(color())
                    .with_writer(std::io::stderr)
                    .with_filter(filter())
                    .boxed(),
            );
        }
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

/// Whether to use colour on stderr.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

//! Command implementations.

pub mod channel;
pub mod chat;
pub mod chat_tty;
pub mod chats;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
pub mod group;
pub mod image;
pub mod memory;
pub mod run;
pub mod skills;
pub mod status;
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

/// Logs to stderr (the daemon) or to `file` (an in-process host behind `chat`; never
/// coloured). Stderr is coloured only when it is a terminal and `NO_COLOR` is unset.
/// `NANOCLAW_LOG` sets the filter (default `info`); `NANOCLAW_LOG_FORMAT=json` for JSON.
pub fn init_logging(file: Option<&Path>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("NANOCLAW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("NANOCLAW_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let writer = file.and_then(|path| {
        if let Some(dir) = path.parent() {
            let _ = nanoclaw_host::config::create_private_dir(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    match (writer, json) {
        (Some(f), true) => {
            let _ = builder
                .json()
                .with_writer(std::sync::Mutex::new(f))
                .try_init();
        }
        (Some(f), false) => {
            let _ = builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init();
        }
        (None, true) => {
            let _ = builder.json().with_writer(std::io::stderr).try_init();
        }
        (None, false) => {
            // Colour only for a person at a terminal: stderr redirected to a file, a pipe or
            // journald gets plain text.
            let _ = builder
                .with_ansi(color())
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
}

/// Whether to use colour on stderr.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

//! The nanoclaw host: one small process that receives chat messages from channels, routes
//! them to agent groups, stores them durably, runs each session's agent in a sandbox and
//! delivers the replies.
//!
//! Message path: channel → [`router`] → store (inbound row) → session worker
//! ([`host`]) → [`agents`] (sandboxed agent over the protocol) → store (outbound row) →
//! delivery → channel. See docs/ARCHITECTURE.md.

pub mod admin_audit;
pub mod agents;
pub mod approvals;
pub mod channel;
pub mod chat_ui;
pub mod clock;
pub mod config;
pub mod egress_vault;
pub mod group_settings;
pub mod host;
pub mod inbox;
pub mod log_limit;
pub mod logs;
pub mod mcp_servers;
pub mod memory;
pub mod mounts;
pub mod outbox;
pub mod router;
pub mod runtime;
pub mod service;
pub mod skills;
pub mod tasks;
pub mod unknown;

pub use host::{Host, HostOptions};

use std::path::PathBuf;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A random string of `len` characters from `[a-z0-9]`.
pub fn random_suffix(len: usize) -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The host's zone: the configured one, else the machine's (`TZ`, `/etc/localtime`,
/// `/etc/timezone`), else UTC. A configured name that is not a zone was refused when the config
/// was loaded; should one get here anyway, UTC.
pub fn host_zone(config: &config::Config) -> nanoclaw_schedule::Tz {
    match config.timezone.trim() {
        "" => nanoclaw_schedule::host_tz(),
        name => nanoclaw_schedule::parse_tz(name).unwrap_or(nanoclaw_schedule::Tz::UTC),
    }
}

/// A group's zone: its own (`nanoclaw group set --timezone`), else `host`.
pub fn group_zone(
    group: &nanoclaw_store::Group,
    host: nanoclaw_schedule::Tz,
) -> nanoclaw_schedule::Tz {
    group
        .timezone
        .as_deref()
        .and_then(|name| nanoclaw_schedule::parse_tz(name).ok())
        .unwrap_or(host)
}

/// Finds the `nanoclaw-agent` binary: `$NANOCLAW_AGENT_BIN`, next to this executable, or
/// the static build in the cargo target directory.
pub fn find_agent_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NANOCLAW_AGENT_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "NANOCLAW_AGENT_BIN points to {}, which is not a file",
                p.display()
            ))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        {
            candidates.push(dir.join("nanoclaw-agent"));
            // Running from a cargo target dir (target/<profile>/ or target/<profile>/deps/):
            // the agent is built for musl under target/x86_64-unknown-linux-musl/<profile>/.
            let release_first = exe.to_string_lossy().contains("/release/");
            let profiles = if release_first {
                ["release", "debug"]
            } else {
                ["debug", "release"]
            };
            for ancestor in dir.ancestors().skip(1).take(3) {
                for profile in profiles {
                    candidates.push(
                        ancestor
                            .join("x86_64-unknown-linux-musl")
                            .join(profile)
                            .join("nanoclaw-agent"),
                    );
                }
            }
        }
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "the agent runner (nanoclaw-agent) was not found next to nanoclaw; build it with \
             `cargo build --release -p nanoclaw-agent --target x86_64-unknown-linux-musl` \
             or set NANOCLAW_AGENT_BIN"
            .to_owned()
    })
}

/// Opens the database at `path`. Another process holding its write lock is waited for, never an
/// error; `show_waiting` also tells a CLI user on stderr who holds it and for how long they have
/// waited. `NANOCLAW_DB_BUSY_TIMEOUT_MS` sets how long one attempt waits (default 5000).
pub fn open_store(
    path: &std::path::Path,
    show_waiting: bool,
) -> Result<nanoclaw_store::Store, nanoclaw_store::StoreError> {
    let busy_timeout = std::env::var("NANOCLAW_DB_BUSY_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(
            nanoclaw_store::DEFAULT_BUSY_TIMEOUT,
            std::time::Duration::from_millis,
        );
    let on_lock_wait: Option<nanoclaw_store::LockWaitFn> = if show_waiting {
        Some(std::sync::Arc::new(|wait: &nanoclaw_store::LockWait| {
            eprintln!(
                "nanoclaw: the database {} is locked by {}; waiting for it ({}s so far, Ctrl-C to give up)",
                wait.path.display(),
                wait.holder_or_unknown(),
                wait.waited.as_secs()
            );
        }))
    } else {
        None
    };
    nanoclaw_store::Store::open_with(
        path,
        nanoclaw_store::StoreOptions {
            busy_timeout,
            on_lock_wait,
        },
    )
}

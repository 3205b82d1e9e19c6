//! Shared test helpers: the static agent binary, temporary nanoclaw homes, and the
//! scripted model server (re-exported from `nanoclaw-scripted-model`); for the benchmarks,
//! latency tables ([`bench`](mod@bench)), a fake agent ([`fake_agent`]) and `/proc` figures ([`procfs`]);
//! a real headless Chromium and screenshot comparison for browser tests ([`browser`]).
//! Nothing here knows the host's types: what needs them stays with the host's tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

pub use nanoclaw_scripted_model as scripted_model;

pub mod bench;
pub mod browser;
pub mod fake_agent;
pub mod mail;
pub mod matrix;
pub mod platforms;
pub mod procfs;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The static `nanoclaw-agent` (x86_64-unknown-linux-musl, debug). `NANOCLAW_AGENT_BIN`
/// overrides; `scripts/test` builds it before the tests. When it is missing it is built
/// here, so a plain `cargo test` works too.
pub fn agent_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("NANOCLAW_AGENT_BIN") {
            return PathBuf::from(p);
        }
        let path = target_dir()
            .join("x86_64-unknown-linux-musl")
            .join("debug")
            .join("nanoclaw-agent");
        if path.is_file() && std::env::var_os("NANOCLAW_REBUILD_AGENT").is_none() {
            return path;
        }
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "nanoclaw-agent",
                "--target",
                "x86_64-unknown-linux-musl",
            ])
            .status()
            .expect("running cargo to build nanoclaw-agent");
        assert!(
            status.success(),
            "building nanoclaw-agent for x86_64-unknown-linux-musl failed \
             (needs `rustup target add x86_64-unknown-linux-musl` and musl-tools)"
        );
        assert!(path.is_file(), "{} missing after build", path.display());
        path
    })
    .clone()
}

/// A closed local port: a model URL that fails at once instead of reaching a real API.
pub const UNREACHABLE_MODEL_URL: &str = "http://127.0.0.1:9";

/// Pins what a `nanoclaw` child process would otherwise take from the machine: the sandbox
/// runtime (`auto` picks Docker wherever an engine and the agent image exist) and the model URL
/// (the vendor's real API once a key is set), and the dashboard's port (any free one: tests run
/// side by side, and a developer's own nanoclaw may hold the default). Call it after
/// `env_clear`; a test's own `.env` afterwards wins.
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    cmd.env("NANOCLAW_RUNTIME", "native")
        .env("ANTHROPIC_BASE_URL", UNREACHABLE_MODEL_URL)
        .env("NANOCLAW_DASHBOARD_LISTEN", ANY_LOOPBACK_PORT)
}

/// A dashboard address for tests: loopback, any free port.
pub const ANY_LOOPBACK_PORT: &str = "127.0.0.1:0";

/// Runs `cmd` with `stdin` as its standard input (the way secrets reach the CLI) and returns
/// its captured output.
pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).expect("writing the command's stdin");
    }
    child.wait_with_output().expect("waiting for the command")
}

/// A temporary `$NANOCLAW_HOME`, removed on drop.
pub struct TestHome {
    dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> TestHome {
        TestHome {
            dir: tempfile::Builder::new()
                .prefix("nanoclaw-test-")
                .tempdir()
                .expect("creating a temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `config.toml`.
    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.dir.path().join("config.toml"), toml).expect("writing config.toml");
    }
}

impl Default for TestHome {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits until `f` returns `Some`, polling every 20 ms, failing after `secs` seconds with
/// `what` (a liveness bound, not a speed assertion).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(secs, Duration::from_millis(20), what, f).await
}

/// [`eventually`], polling every `poll` (a benchmark that times readiness polls finely).
pub async fn eventually_every<T, F, Fut>(secs: u64, poll: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// A child process killed when the test ends, passing or failing.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

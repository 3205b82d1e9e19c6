//! The `apple` runtime: the agent runs in a lightweight Linux VM started by Apple's
//! [`container`](https://github.com/apple/container) CLI (macOS on Apple silicon, `container`
//! ≥ 0.12). Like the native runtime runs `bwrap`, it runs `container run --rm -i …` as a child
//! process whose stdio is the agent's stdio.
//!
//! **Not exercised in CI**: CI runs on Linux, where this runtime is always unavailable. Only the
//! command line it builds is unit-tested, against the flags apple/container documents
//! (`docs/command-reference.md`) and parses (`Parser.swift`).
//!
//! # What is enforced, and by whom
//!
//! | Guarantee | Mechanism |
//! |---|---|
//! | isolation | a VM per sandbox (Virtualization.framework), its own kernel |
//! | non-root user inside | `--user 1000:1000`, `--cap-drop ALL` |
//! | no network but loopback | [`AppleNetwork::None`] (the default): `--network none --no-dns`. **Weaker with [`AppleNetwork::Attached`]**, see below |
//! | filesystem | the image's root filesystem read-only (`--read-only`), tmpfs `/tmp` and `/run`, exactly the spec's mounts (`--mount type=bind,…[,readonly]`), the agent's directory read-only at `/opt/nanoclaw` |
//! | environment | exactly `spec.env`, passed in an env file (0600, removed when the sandbox ends) so values never appear in the host's process list; the image's own `ENV` entries that `spec.env` does not override remain |
//! | reaping, signals | `--init` |
//! | `max_memory_bytes` | `--memory` (rounded up to MiB): the VM's RAM, which includes the guest kernel |
//! | `max_processes`, `max_open_files`, `max_file_bytes` | `--ulimit nproc=`, `nofile=`, `fsize=` (exact: uid 1000 has no other task in the VM); `core=0` |
//!
//! # What it cannot give
//!
//! - **The model relay needs the network.** A host Unix socket cannot be mounted into the VM
//!   (virtiofs shares directories, not sockets), so the agent reaches the relay over TCP
//!   (`NANOCLAW_MODEL_TCP` + `NANOCLAW_MODEL_TOKEN`), and the host's loopback is not the VM's:
//!   the VM must be attached to a network ([`AppleNetwork::Attached`], e.g. `default`) and the
//!   relay must listen on that network's host address. An attached VM can reach **anything**
//!   the host's NAT reaches, not only the relay: weaker than the native and docker runtimes.
//!   [`AppleRuntime::network_warning`] says so and `spawn` logs it at warn for every sandbox.
//!   With [`AppleNetwork::None`] the agent has no way to reach its model.
//! - Bind mounts must be directories (apple/container refuses files), so the agent binary's
//!   whole directory is visible read-only at `/opt/nanoclaw`: install the agent in a directory
//!   of its own. It runs as `/opt/nanoclaw/<its file name>`.
//! - The agent must be a Linux binary for the VM's architecture (arm64 on Apple silicon:
//!   `aarch64-unknown-linux-musl`), and the image must already be pulled
//!   (`container image pull IMAGE`).
//! - Paths containing `,` or `=` cannot be expressed in `--mount` and are refused.
//! - Killing the `container` CLI does not stop the VM, so stopping a sandbox also runs
//!   `container delete --force NAME` (in the background).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::bwrap::{RUN_SIZE_BYTES, TMP_SIZE_BYTES, ValidSpec};
use crate::process::{Cleanup, ProcessControl};
use crate::{Runtime, SandboxError, SandboxProcess, SandboxSpec};

const RUNTIME: &str = "apple";
/// Environment variable naming the `container` CLI to use instead of `container` on `PATH`.
pub const CONTAINER_CLI_ENV: &str = "NANOCLAW_CONTAINER_CLI";
/// The image the agent runs in unless [`AppleRuntime::with_image`] says otherwise.
pub const DEFAULT_IMAGE: &str = "docker.io/library/alpine:3.22";
/// Oldest `container` with every flag used here (`--cap-drop` arrived in 0.12.0).
pub const MIN_VERSION: (u32, u32, u32) = (0, 12, 0);
/// Label put on every sandbox container, valued with the sandbox name.
pub const LABEL: &str = "nanoclaw.sandbox";
/// Prefix of container names: `nanoclaw-<sandbox name>`.
pub const NAME_PREFIX: &str = "nanoclaw-";
const SANDBOX_USER: &str = "1000:1000";
/// Where the agent binary's directory is mounted.
const AGENT_DIR: &str = "/opt/nanoclaw";
const MIB: u64 = 1024 * 1024;

const INSTALL_FIX: &str = "Install Apple's container (https://github.com/apple/container/releases, \
     macOS 26 on Apple silicon recommended), run `container system start`, or set \
     NANOCLAW_CONTAINER_CLI to the `container` binary";

/// Which network the sandbox VM is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppleNetwork {
    /// `--network none`: loopback only. The agent cannot reach the model relay.
    None,
    /// `--network NAME`: needed to reach the relay over TCP; the VM can then reach whatever
    /// the host's NAT reaches (see [`AppleRuntime::network_warning`]).
    Attached(String),
}

/// The Apple `container` runtime.
#[derive(Debug, Clone)]
pub struct AppleRuntime {
    cli: PathBuf,
    image: String,
    network: AppleNetwork,
    cpus: Option<u32>,
}

impl AppleRuntime {
    /// Uses the given `container` binary, [`DEFAULT_IMAGE`] and no network. Checks nothing:
    /// call [`Runtime::probe`] for that.
    pub fn new(cli: impl Into<PathBuf>) -> Self {
        Self {
            cli: cli.into(),
            image: DEFAULT_IMAGE.to_owned(),
            network: AppleNetwork::None,
            cpus: None,
        }
    }

    /// Finds `container` (`$NANOCLAW_CONTAINER_CLI`, else `PATH`). Unavailable off macOS.
    pub fn detect() -> Result<Self, SandboxError> {
        if !cfg!(target_os = "macos") {
            return Err(not_macos());
        }
        let cli = match std::env::var_os(CONTAINER_CLI_ENV) {
            Some(path) if !path.is_empty() => {
                let path = PathBuf::from(path);
                if !crate::bwrap::is_executable(&path) {
                    return Err(unavailable(
                        format!(
                            "{CONTAINER_CLI_ENV}={} is not an executable file",
                            path.display()
                        ),
                        INSTALL_FIX.to_owned(),
                    ));
                }
                path
            }
            _ => crate::bwrap::find_on_path("container").ok_or_else(|| {
                unavailable(
                    "Apple's `container` CLI was not found on PATH".to_owned(),
                    INSTALL_FIX.to_owned(),
                )
            })?,
        };
        Ok(Self::new(cli))
    }

    /// The OCI image the agent runs in (it must contain what the agent's tools need, e.g. `sh`).
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// The network sandboxes are attached to (default [`AppleNetwork::None`]).
    pub fn with_network(mut self, network: AppleNetwork) -> Self {
        self.network = network;
        self
    }

    /// CPUs per sandbox VM (`--cpus`); unset, `container` uses its default.
    pub fn with_cpus(mut self, cpus: u32) -> Self {
        self.cpus = Some(cpus);
        self
    }

    pub fn cli_path(&self) -> &Path {
        &self.cli
    }

    pub fn image(&self) -> &str {
        &self.image
    }

    pub fn network(&self) -> &AppleNetwork {
        &self.network
    }

    /// Why this configuration is weaker than the other runtimes, if it is.
    pub fn network_warning(&self) -> Option<String> {
        match &self.network {
            AppleNetwork::None => None,
            AppleNetwork::Attached(name) => Some(format!(
                "apple runtime: sandboxes are attached to the container network `{name}` so \
                 they can reach the model relay over TCP; they can also reach anything the \
                 host's NAT reaches (the internet, the LAN), unlike the native and docker \
                 runtimes, which allow loopback only"
            )),
        }
    }

    /// The container name used for `spec` (`nanoclaw-<name>`).
    pub fn container_name(spec_name: &str) -> String {
        format!("{NAME_PREFIX}{spec_name}")
    }

    /// The `container` command line (without the program) for `spec`, with the env file at
    /// `env_file`. The env file's content is [`AppleRuntime::env_file_contents`].
    pub fn command_line(
        &self,
        spec: &SandboxSpec,
        env_file: &Path,
    ) -> Result<Vec<OsString>, SandboxError> {
        let valid = validate(spec)?;
        Ok(build_args(self, &valid, env_file))
    }

    /// The `--env-file` content for `spec`: one `KEY=VALUE` line per variable.
    pub fn env_file_contents(spec: &SandboxSpec) -> Result<String, SandboxError> {
        Ok(env_file(&validate(spec)?))
    }

    async fn cli_output(&self, args: &[&str]) -> Result<std::process::Output, CliError> {
        let mut command = tokio::process::Command::new(&self.cli);
        command
            .args(args)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let command_line = || format!("{} {}", self.cli.display(), args.join(" "));
        match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(source)) => Err(CliError::Run {
                command: command_line(),
                source,
            }),
            Err(_) => Err(CliError::Timeout {
                command: command_line(),
            }),
        }
    }
}

/// Why asking the `container` CLI something failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("running `{command}` failed: {source}")]
    Run {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` did not answer within 30 s")]
    Timeout { command: String },
}

#[async_trait]
impl Runtime for AppleRuntime {
    /// With a network attached, the relay is a token-checked TCP port on the host side of
    /// the default container network (`192.168.64.1`); without one, nothing reaches the VM.
    fn relay_transport(&self) -> crate::RelayTransport {
        match &self.network {
            AppleNetwork::None => crate::RelayTransport::UnixSocket,
            AppleNetwork::Attached(_) => crate::RelayTransport::Tcp {
                bind: std::net::SocketAddr::from(([192, 168, 64, 1], 0)),
                host: "192.168.64.1".to_owned(),
            },
        }
    }

    fn name(&self) -> &'static str {
        RUNTIME
    }

    async fn probe(&self) -> Result<(), SandboxError> {
        if !cfg!(target_os = "macos") {
            return Err(not_macos());
        }
        let output = self
            .cli_output(&["--version"])
            .await
            .map_err(|reason| unavailable(reason.to_string(), INSTALL_FIX.to_owned()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = crate::bwrap::parse_version(&text).ok_or_else(|| {
            unavailable(
                format!(
                    "`{} --version` printed {:?}, not a container version",
                    self.cli.display(),
                    text.trim()
                ),
                INSTALL_FIX.to_owned(),
            )
        })?;
        if version < MIN_VERSION {
            return Err(unavailable(
                format!(
                    "container {}.{}.{} is too old (need {}.{}.{} or newer)",
                    version.0, version.1, version.2, MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
                ),
                "Upgrade it from https://github.com/apple/container/releases".to_owned(),
            ));
        }
        let status = self
            .cli_output(&["system", "status"])
            .await
            .map_err(|reason| unavailable(reason.to_string(), INSTALL_FIX.to_owned()))?;
        if !status.status.success() {
            let said = String::from_utf8_lossy(&status.stdout).trim().to_owned();
            return Err(unavailable(
                format!("the container services are not running: {said}"),
                "Run `container system start`".to_owned(),
            ));
        }
        if let Some(warning) = self.network_warning() {
            tracing::warn!("{warning}");
        }
        Ok(())
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError> {
        let valid = validate(spec)?;
        let spawn_error = |source: std::io::Error| SandboxError::Spawn {
            runtime: RUNTIME,
            source,
        };
        if let Some(warning) = self.network_warning() {
            tracing::warn!(sandbox = %valid.name, "{warning}");
        }
        let env_path = write_env_file(&valid.name, &env_file(&valid)).map_err(spawn_error)?;
        let args = build_args(self, &valid, &env_path);
        let mut command = tokio::process::Command::new(&self.cli);
        command
            .args(&args)
            // `--ssh` is never passed, but nothing of the host's agent socket should be near.
            .env_remove("SSH_AUTH_SOCK")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tracing::debug!(sandbox = %valid.name, cli = %self.cli.display(), ?args, "starting sandbox");
        let container = AppleRuntime::container_name(&valid.name);
        let cleanup = cleanup_for(self.cli.clone(), container, env_path.clone());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_file(&env_path);
                return Err(spawn_error(error));
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill().await;
            cleanup();
            return Err(spawn_error(std::io::Error::other(
                "container child has no piped stdio",
            )));
        };
        Ok(SandboxProcess {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            control: Box::new(ProcessControl::new(child, Some(cleanup))),
        })
    }
}

/// Removes the env file and the container. Killing the CLI leaves the VM running, so the
/// container is force-deleted; after a normal exit `--rm` already removed it and this fails
/// quietly. It runs on a thread so that dropping a control never blocks the async runtime.
fn cleanup_for(cli: PathBuf, container: String, env_path: PathBuf) -> Cleanup {
    Box::new(move || {
        let _ = std::fs::remove_file(&env_path);
        let spawned = std::thread::Builder::new()
            .name("apple-cleanup".into())
            .spawn(move || {
                let result = std::process::Command::new(&cli)
                    .args(["delete", "--force", &container])
                    .env_remove("SSH_AUTH_SOCK")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if let Err(error) = result {
                    tracing::warn!(%container, %error, "could not run `container delete`");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start the apple sandbox cleanup thread");
        }
    })
}

/// Writes the env file, readable by this user only, under a fresh name.
fn write_env_file(name: &str, contents: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    static FILES: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "nanoclaw-apple-{}-{}-{name}.env",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    if let Err(error) = file.write_all(contents.as_bytes()) {
        let _ = std::fs::remove_file(&path);
        return Err(error);
    }
    Ok(path)
}

fn invalid(message: String) -> SandboxError {
    SandboxError::InvalidSpec(message)
}

/// The native runtime's validation plus what the `container` CLI cannot express.
fn validate(spec: &SandboxSpec) -> Result<ValidSpec, SandboxError> {
    let valid = crate::bwrap::validate(spec)?;
    for mount in &valid.mounts {
        if !mount.host_path.is_dir() {
            return Err(invalid(format!(
                "mount source {} is not a directory; Apple's container can only mount directories",
                mount.host_path.display()
            )));
        }
        mount_value("mount source", &mount.host_path)?;
        mount_value("mount destination", &mount.sandbox_path)?;
    }
    let (dir, file) = agent_location(&valid.agent_binary)?;
    mount_value("agent binary directory", dir)?;
    if file.contains(['/', ',', '=']) {
        return Err(invalid(format!(
            "agent binary name {file:?} must not contain `,` or `=`"
        )));
    }
    for (key, value) in &valid.env {
        if key.starts_with('#') || key.chars().any(char::is_whitespace) {
            return Err(invalid(format!(
                "environment variable name {key:?} must not start with `#` or contain whitespace"
            )));
        }
        // The env file is split on every Unicode newline (Foundation's `.newlines`).
        if value.contains([
            '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
        ]) {
            return Err(invalid(format!(
                "environment variable {key} contains a line break, which Apple's container cannot pass"
            )));
        }
    }
    Ok(valid)
}

/// A path as a `--mount` value: `,` separates directives and `=` truncates values there.
fn mount_value<'a>(what: &str, path: &'a Path) -> Result<&'a str, SandboxError> {
    let text = path.to_str().ok_or_else(|| {
        invalid(format!(
            "{what} {} is not valid UTF-8, which Apple's container cannot mount",
            path.display()
        ))
    })?;
    if text.contains([',', '=']) {
        return Err(invalid(format!(
            "{what} {text} contains `,` or `=`, which Apple's container `--mount` cannot express"
        )));
    }
    Ok(text)
}

/// The agent binary's directory and file name.
fn agent_location(binary: &Path) -> Result<(&Path, &str), SandboxError> {
    let dir = binary.parent().filter(|dir| !dir.as_os_str().is_empty());
    let file = binary.file_name().and_then(|name| name.to_str());
    match (dir, file) {
        (Some(dir), Some(file)) => Ok((dir, file)),
        _ => Err(invalid(format!(
            "agent binary {} has no directory or no UTF-8 file name",
            binary.display()
        ))),
    }
}

fn env_file(valid: &ValidSpec) -> String {
    let mut out = String::new();
    for (key, value) in &valid.env {
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('\n');
    }
    out
}

/// Where the agent runs inside: `/opt/nanoclaw/<file name>` (= [`crate::AGENT_BINARY_PATH`] when the
/// binary is called `nanoclaw-agent`).
fn agent_entrypoint(file: &str) -> String {
    format!("{AGENT_DIR}/{file}")
}

/// `MiB` rounded up, at least 1.
fn mebibytes(bytes: u64) -> u64 {
    bytes.div_ceil(MIB).max(1)
}

fn build_args(runtime: &AppleRuntime, valid: &ValidSpec, env_file: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    let name = AppleRuntime::container_name(&valid.name);
    let label = format!("{LABEL}={}", valid.name);
    push(&["run", "--rm", "-i", "--name", &name, "--label", &label]);
    match &runtime.network {
        AppleNetwork::None => push(&["--network", "none", "--no-dns"]),
        AppleNetwork::Attached(network) => push(&["--network", network]),
    }
    push(&[
        "--read-only",
        "--cap-drop",
        "ALL",
        "--init",
        "--user",
        SANDBOX_USER,
    ]);
    let limits = &valid.limits;
    let memory = format!("{}M", mebibytes(limits.max_memory_bytes));
    push(&["--memory", &memory]);
    if let Some(cpus) = runtime.cpus {
        push(&["--cpus", &cpus.to_string()]);
    }
    for (kind, value) in [
        ("nproc", limits.max_processes),
        ("nofile", limits.max_open_files),
        ("fsize", limits.max_file_bytes),
        ("core", 0),
    ] {
        push(&["--ulimit", &format!("{kind}={value}:{value}")]);
    }
    // The root is read-only: scratch space first, so the spec's mounts can sit under /run.
    for (target, size) in [("/tmp", TMP_SIZE_BYTES), ("/run", RUN_SIZE_BYTES)] {
        let mount = format!(
            "type=tmpfs,target={target},size={}M,mode=1777",
            mebibytes(size)
        );
        push(&["--mount", &mount]);
    }
    for mount in &valid.mounts {
        // validate() checked both are UTF-8 without `,` or `=`.
        let mut value = format!(
            "type=bind,source={},target={}",
            mount.host_path.display(),
            mount.sandbox_path.display()
        );
        if !mount.writable {
            value.push_str(",readonly");
        }
        push(&["--mount", &value]);
    }
    let (dir, file) = match agent_location(&valid.agent_binary) {
        Ok(location) => location,
        // validate() accepted it; keep the builder total anyway.
        Err(_) => (Path::new("/"), "nanoclaw-agent"),
    };
    let agent = format!(
        "type=bind,source={},target={AGENT_DIR},readonly",
        dir.display()
    );
    push(&["--mount", &agent]);
    args.push("--env-file".into());
    args.push(env_file.as_os_str().to_owned());
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["--workdir", &valid.workdir.to_string_lossy()]);
    push(&["--entrypoint", &agent_entrypoint(file)]);
    push(&[&runtime.image]);
    // Everything after the image is passed through to the agent untouched.
    args.extend(valid.args.iter().map(OsString::from));
    args
}

fn not_macos() -> SandboxError {
    unavailable(
        "Apple's container runs on macOS only".to_owned(),
        "Use the native (bubblewrap) or docker runtime on this system".to_owned(),
    )
}

fn unavailable(reason: String, fix: String) -> SandboxError {
    SandboxError::Unavailable {
        runtime: RUNTIME,
        reason,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AGENT_BINARY_PATH, Limits, Mount};
    use std::collections::BTreeMap;

    struct Fixture {
        _dir: tempfile::TempDir,
        work: PathBuf,
        global: PathBuf,
        spec: SandboxSpec,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let work = root.join("work");
        let global = root.join("global");
        let bin = root.join("bin");
        for d in [&work, &global, &bin] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let agent = bin.join("nanoclaw-agent");
        std::fs::write(&agent, "#!/bin/sh\n").expect("write agent");
        let mut env = BTreeMap::new();
        env.insert("HOME".to_owned(), "/workspace/group".to_owned());
        env.insert(
            "NANOCLAW_MODEL_TCP".to_owned(),
            "192.168.64.1:4000".to_owned(),
        );
        env.insert("NANOCLAW_MODEL_TOKEN".to_owned(), "secret-token".to_owned());
        let spec = SandboxSpec {
            name: "g1".into(),
            agent_binary: agent,
            args: vec!["--serve".into(), "x y".into()],
            mounts: vec![
                Mount {
                    host_path: work.clone(),
                    sandbox_path: "/workspace/group".into(),
                    writable: true,
                },
                Mount {
                    host_path: global.clone(),
                    sandbox_path: "/workspace/global".into(),
                    writable: false,
                },
            ],
            env,
            workdir: "/workspace/group".into(),
            limits: Limits {
                max_processes: 128,
                max_memory_bytes: 512 * MIB + 1,
                max_file_bytes: 64 * MIB,
                max_open_files: 256,
            },
        };
        Fixture {
            _dir: dir,
            work,
            global,
            spec,
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn find(args: &[String], window: &[&str]) -> Option<usize> {
        args.windows(window.len())
            .position(|w| w.iter().zip(window).all(|(a, b)| a == b))
    }

    fn args_for(runtime: &AppleRuntime, spec: &SandboxSpec) -> Vec<String> {
        strings(
            &runtime
                .command_line(spec, Path::new("/tmp/x.env"))
                .expect("valid spec"),
        )
    }

    #[test]
    fn runs_removed_interactive_named_and_labelled() {
        let f = fixture();
        let args = args_for(&AppleRuntime::new("/usr/local/bin/container"), &f.spec);
        assert_eq!(&args[..3], ["run", "--rm", "-i"]);
        assert!(
            find(&args, &["--name", "nanoclaw-g1"]).is_some(),
            "{args:?}"
        );
        assert!(find(&args, &["--label", "nanoclaw.sandbox=g1"]).is_some());
        // Never a TTY: the protocol is a byte stream.
        assert!(!args.iter().any(|a| a == "-t" || a == "--tty" || a == "-it"));
    }

    #[test]
    fn isolation_flags_are_present_and_no_network_by_default() {
        let f = fixture();
        let runtime = AppleRuntime::new("container");
        let args = args_for(&runtime, &f.spec);
        assert!(
            find(&args, &["--network", "none", "--no-dns"]).is_some(),
            "{args:?}"
        );
        assert!(args.contains(&"--read-only".to_owned()));
        assert!(args.contains(&"--init".to_owned()));
        assert!(find(&args, &["--cap-drop", "ALL"]).is_some());
        assert!(find(&args, &["--user", "1000:1000"]).is_some());
        assert!(
            !args
                .iter()
                .any(|a| a == "--ssh" || a.starts_with("--publish"))
        );
        assert_eq!(runtime.network_warning(), None);
    }

    #[test]
    fn an_attached_network_is_used_and_warned_about() {
        let f = fixture();
        let runtime =
            AppleRuntime::new("container").with_network(AppleNetwork::Attached("default".into()));
        let args = args_for(&runtime, &f.spec);
        assert!(find(&args, &["--network", "default"]).is_some(), "{args:?}");
        assert!(!args.contains(&"none".to_owned()));
        let warning = runtime.network_warning().expect("a warning");
        assert!(
            warning.contains("`default`") && warning.contains("internet"),
            "{warning}"
        );
    }

    #[test]
    fn mounts_are_read_only_or_writable_as_specified() {
        let f = fixture();
        let args = args_for(&AppleRuntime::new("container"), &f.spec);
        let rw = format!(
            "type=bind,source={},target=/workspace/group",
            f.work.display()
        );
        let ro = format!(
            "type=bind,source={},target=/workspace/global,readonly",
            f.global.display()
        );
        let rw_at = find(&args, &["--mount", &rw]).expect("rw mount");
        let ro_at = find(&args, &["--mount", &ro]).expect("ro mount");
        let run_at = args
            .iter()
            .position(|a| a.starts_with("type=tmpfs,target=/run,"))
            .expect("/run tmpfs");
        assert!(run_at < rw_at && rw_at < ro_at, "{args:?}");
        assert!(
            args.iter()
                .any(|a| a == "type=tmpfs,target=/tmp,size=256M,mode=1777")
        );
        // The agent's directory, read-only, and the agent is the entrypoint.
        let bin = f.spec.agent_binary.parent().expect("dir");
        let agent = format!(
            "type=bind,source={},target=/opt/nanoclaw,readonly",
            bin.display()
        );
        assert!(find(&args, &["--mount", &agent]).is_some(), "{args:?}");
        assert!(find(&args, &["--entrypoint", AGENT_BINARY_PATH]).is_some());
    }

    #[test]
    fn image_then_agent_arguments_come_last() {
        let f = fixture();
        let runtime = AppleRuntime::new("container").with_image("example.com/agent-base:1");
        let args = args_for(&runtime, &f.spec);
        let tail = find(&args, &["example.com/agent-base:1", "--serve", "x y"]).expect("tail");
        assert_eq!(tail + 3, args.len(), "{args:?}");
        assert!(find(&args, &["--workdir", "/workspace/group"]).is_some());
    }

    #[test]
    fn env_goes_through_a_file_never_the_command_line() {
        let f = fixture();
        let args = args_for(&AppleRuntime::new("container"), &f.spec);
        assert!(find(&args, &["--env-file", "/tmp/x.env"]).is_some());
        assert!(!args.iter().any(|a| a == "-e" || a == "--env"));
        assert!(!args.iter().any(|a| a.contains("secret-token")), "{args:?}");
        let file = AppleRuntime::env_file_contents(&f.spec).expect("env");
        assert_eq!(
            file,
            "HOME=/workspace/group\nNANOCLAW_MODEL_TCP=192.168.64.1:4000\nNANOCLAW_MODEL_TOKEN=secret-token\n"
        );
    }

    #[test]
    fn limits_become_memory_and_ulimits() {
        let f = fixture();
        let args = args_for(&AppleRuntime::new("container").with_cpus(2), &f.spec);
        // 512 MiB + 1 byte rounds up.
        assert!(find(&args, &["--memory", "513M"]).is_some(), "{args:?}");
        assert!(find(&args, &["--cpus", "2"]).is_some());
        for ulimit in [
            "nproc=128:128",
            "nofile=256:256",
            "fsize=67108864:67108864",
            "core=0:0",
        ] {
            assert!(find(&args, &["--ulimit", ulimit]).is_some(), "{ulimit}");
        }
        let without_cpus = args_for(&AppleRuntime::new("container"), &f.spec);
        assert!(!without_cpus.contains(&"--cpus".to_owned()));
    }

    #[test]
    fn rejects_specs_the_cli_cannot_express() {
        type Mutation = Box<dyn Fn(&mut SandboxSpec, &Path)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "only mount directories",
                Box::new(|s, root| {
                    let file = root.join("file.txt");
                    std::fs::write(&file, "x").expect("write");
                    s.mounts[0].host_path = file;
                }),
            ),
            (
                "cannot express",
                Box::new(|s, root| {
                    let odd = root.join("a,readonly=b");
                    std::fs::create_dir(&odd).expect("mkdir");
                    s.mounts[0].host_path = odd;
                }),
            ),
            (
                "cannot express",
                Box::new(|s, _| s.mounts[1].sandbox_path = "/workspace/x,y".into()),
            ),
            (
                "line break",
                Box::new(|s, _| {
                    s.env.insert("A".into(), "one\ntwo".into());
                }),
            ),
            (
                "whitespace",
                Box::new(|s, _| {
                    s.env.insert("A B".into(), "x".into());
                }),
            ),
            // The native runtime's checks apply too.
            (
                "runtime provides",
                Box::new(|s, _| s.mounts[0].sandbox_path = "/opt/nanoclaw/x".into()),
            ),
            ("sandbox name", Box::new(|s, _| s.name = "../x".into())),
        ];
        let runtime = AppleRuntime::new("container");
        for (expected, mutate) in cases {
            let mut f = fixture();
            let root = f.work.parent().expect("root").to_path_buf();
            mutate(&mut f.spec, &root);
            let error = runtime
                .command_line(&f.spec, Path::new("/tmp/x.env"))
                .expect_err(expected)
                .to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
            assert!(error.starts_with("invalid sandbox spec"), "{error}");
        }
    }

    #[test]
    fn reads_the_cli_version_line() {
        let line = "container CLI version 1.2.0 (build: release, commit: 0a1b2c3)\n";
        assert_eq!(crate::bwrap::parse_version(line), Some((1, 2, 0)));
        assert!(
            crate::bwrap::parse_version("container CLI version 0.11.0").unwrap_or_default()
                < MIN_VERSION
        );
    }

    #[test]
    fn env_file_is_private_to_the_user() {
        use std::os::unix::fs::PermissionsExt;
        let path = write_env_file("perm-test", "A=1\n").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        let content = std::fs::read_to_string(&path).expect("read");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(content, "A=1\n");
    }

    #[cfg(not(target_os = "macos"))]
    #[tokio::test]
    async fn off_macos_the_runtime_is_unavailable_with_a_fix() {
        let runtime = AppleRuntime::new("/usr/bin/true");
        let error = runtime.probe().await.expect_err("not macOS").to_string();
        assert!(error.contains("macOS only"), "{error}");
        assert!(error.contains("native"), "{error}");
        let error = AppleRuntime::detect().expect_err("not macOS").to_string();
        assert!(error.contains("macOS only"), "{error}");
        assert_eq!(runtime.name(), "apple");
    }
}

//! One MCP server: a stdio child spoken to with rmcp's client.

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nanoclaw_protocol::McpServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::{ClientLifecycleMode, ClientServiceExt, Peer, RoleClient, ServiceError};
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::watch;

use crate::tools::{Capture, pump, signal};

/// The end of a server's stderr kept for error messages.
const STDERR_TAIL_BYTES: usize = 2048;
/// How long a stopping server's exit status and last stderr lines are waited for.
const GRACE: Duration = Duration::from_secs(2);

/// Why a server could not be started. The message names the cause and, when the server
/// wrote any, the end of its error output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// Why a call got no result. The message is for the model.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallError(String);

/// A tool the server offers, as it listed it.
#[derive(Debug, Clone)]
pub struct RemoteTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// A running server and what it offers.
pub struct McpConnection {
    name: String,
    /// Keeps rmcp's service task (and the transport) alive.
    _service: Mutex<Option<RunningService<RoleClient, ClientConfig>>>,
    peer: Peer<RoleClient>,
    protocol: String,
    tools: Vec<RemoteTool>,
    /// The child's process group, killed as a whole.
    pgid: Option<i32>,
    /// How the child ended, once it has (`None` while it runs).
    exit: watch::Receiver<Option<String>>,
    stderr: Capture,
    /// Turns true once the child's stderr is closed (all of it is in `stderr`).
    stderr_done: watch::Receiver<bool>,
}

impl McpConnection {
    /// Spawns `spec` in `cwd`, does the MCP handshake (the current revision's `server/discover`,
    /// falling back to `initialize` for older servers) and lists its tools, all within
    /// `timeout`.
    pub async fn start(
        spec: &McpServer,
        cwd: &Path,
        timeout: Duration,
    ) -> Result<McpConnection, StartError> {
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: killing it stops whatever the server started too.
            .process_group(0)
            .kill_on_drop(true);
        // The agent's environment (proxy variables included) plus the entry's own; the
        // variables that route traffic through the host stay the agent's.
        for (key, value) in &spec.env {
            if nanoclaw_protocol::contract::env::is_routing_var(key) {
                tracing::warn!(server = %spec.name, variable = %key, "ignored a reserved environment variable");
                continue;
            }
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().map_err(|e| {
            StartError(format!(
                "cannot start `{}`: {e}{}",
                spec.command,
                if e.kind() == std::io::ErrorKind::NotFound {
                    " (is it installed in the sandbox and on PATH, or given as an absolute path?)"
                } else {
                    ""
                }
            ))
        })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let stderr = Capture::new(0, STDERR_TAIL_BYTES);
        let (stderr_tx, stderr_done) = watch::channel(false);
        if let Some(err) = child.stderr.take() {
            let capture = stderr.clone();
            tokio::spawn(async move {
                pump(err, capture).await;
                let _ = stderr_tx.send(true);
            });
        }
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(StartError(
                "the server's stdio pipes were not opened".into(),
            ));
        };
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => match s.code() {
                    Some(code) => format!("exit code {code}"),
                    None => format!("killed by signal {}", signal(s)),
                },
                Err(e) => format!("exit status unknown: {e}"),
            };
            let _ = exit_tx.send(Some(status));
        });

        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("nanoclaw-agent", env!("CARGO_PKG_VERSION")),
        );
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::LATEST],
            legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
        };
        let handshake = async {
            let service = config
                .serve_with_lifecycle((stdout, stdin), lifecycle)
                .await
                .map_err(|e| format!("the MCP handshake failed: {e}"))?;
            let tools = service
                .peer()
                .list_all_tools()
                .await
                .map_err(|e| format!("listing its tools failed: {e}"))?;
            Ok::<_, String>((service, tools))
        };
        let mut exit_rx = exit.clone();
        let started = tokio::select! {
            done = tokio::time::timeout(timeout, handshake) => match done {
                Ok(done) => done,
                Err(_) => Err(format!(
                    "no answer to the MCP handshake within {} s", timeout.as_secs()
                )),
            },
            status = exited(&mut exit_rx) => {
                Err(format!("it exited during the MCP handshake ({status})"))
            }
        };
        let (service, listed) = match started {
            Ok(started) => started,
            Err(what) => {
                // Unless it already exited (then its group id may be reused).
                if let (Some(pgid), None) = (pgid, exit.borrow().as_ref()) {
                    kill_group(pgid);
                }
                let mut done = stderr_done.clone();
                let _ = tokio::time::timeout(GRACE, done.wait_for(|d| *d)).await;
                return Err(StartError(format!("{what}{}", stderr_note(&stderr))));
            }
        };
        let protocol = service
            .peer()
            .peer_info()
            .map(|info| info.protocol_version.to_string())
            .unwrap_or_default();
        let tools = listed
            .into_iter()
            .map(|t| RemoteTool {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect();
        Ok(McpConnection {
            name: spec.name.clone(),
            peer: service.peer().clone(),
            _service: Mutex::new(Some(service)),
            protocol,
            tools,
            pgid,
            exit,
            stderr,
            stderr_done,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tools(&self) -> &[RemoteTool] {
        &self.tools
    }

    /// The protocol revision the server and the agent agreed on.
    pub fn protocol_version(&self) -> &str {
        &self.protocol
    }

    /// Calls `tool` with `arguments` (an object, or `null` for none). The server stopping, a
    /// protocol error and no answer within `timeout` are errors; `isError` results are not
    /// (they are results the model reads as errors).
    pub async fn call(
        &self,
        tool: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<CallToolResult, CallError> {
        let status = self.exit.borrow().clone();
        if let Some(status) = status {
            return Err(self.stopped(&status).await);
        }
        let mut params = CallToolRequestParams::new(tool.to_owned());
        match arguments {
            Value::Object(map) => params = params.with_arguments(map),
            Value::Null => {}
            _ => {
                return Err(CallError(format!(
                    "invalid input for {}: expected an object",
                    self.name
                )));
            }
        }
        let mut exit = self.exit.clone();
        tokio::select! {
            result = tokio::time::timeout(timeout, self.peer.call_tool(params)) => match result {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(e)) => Err(self.call_failed(tool, e).await),
                Err(_) => Err(CallError(format!(
                    "the MCP server `{}` did not answer the call to `{tool}` within {} s; the \
                     call was abandoned",
                    self.name,
                    timeout.as_secs()
                ))),
            },
            status = exited(&mut exit) => Err(self.stopped(&status).await),
        }
    }

    async fn call_failed(&self, tool: &str, e: ServiceError) -> CallError {
        match e {
            ServiceError::McpError(data) => CallError(format!(
                "the MCP server `{}` refused the call to `{tool}`: {} (JSON-RPC error {})",
                self.name, data.message, data.code.0
            )),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                // The pipe closes as the process dies: give its exit a moment to be seen.
                let mut exit = self.exit.clone();
                let status = tokio::time::timeout(GRACE, exited(&mut exit))
                    .await
                    .unwrap_or_else(|_| "its connection closed".into());
                self.stopped(&status).await
            }
            other => CallError(format!(
                "the call to `{tool}` on the MCP server `{}` failed: {other}",
                self.name
            )),
        }
    }

    async fn stopped(&self, status: &str) -> CallError {
        // Its last words explain the most; they may still be in the pipe.
        let mut done = self.stderr_done.clone();
        let _ = tokio::time::timeout(GRACE, done.wait_for(|d| *d)).await;
        CallError(format!(
            "the MCP server `{}` stopped ({status}); its tools are unavailable for the rest of \
             this session{}",
            self.name,
            stderr_note(&self.stderr)
        ))
    }

    /// Kills the server's process group unless it has already exited.
    pub fn kill(&self) {
        if self.exit.borrow().is_some() {
            return;
        }
        if let Some(pgid) = self.pgid {
            kill_group(pgid);
        }
    }
}

/// Waits until the child has exited; its status.
async fn exited(exit: &mut watch::Receiver<Option<String>>) -> String {
    let status = exit
        .wait_for(Option::is_some)
        .await
        .map(|status| status.clone().unwrap_or_default());
    match status {
        Ok(status) => status,
        // The watcher task is gone only when the runtime shuts down.
        Err(_) => std::future::pending().await,
    }
}

/// ". Its last error output: …" when the server wrote any.
fn stderr_note(stderr: &Capture) -> String {
    let text = stderr.text();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(". Its last error output:\n{text}")
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory involved.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        tracing::debug!(pgid, error = %std::io::Error::last_os_error(), "killing an MCP server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The failure-test server on the MCP Python SDK (see tests/fixtures/mcp_faults.py), from
    /// the venv `scripts/prerequisites --tests` installs.
    fn faults() -> McpServer {
        let venv = std::env::var_os("NANOCLAW_MCP_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/nanoclaw-tests/mcp"));
        assert!(
            venv.join("bin/python").exists(),
            "the MCP test servers are not installed at {}: run scripts/prerequisites --tests",
            venv.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_faults.py");
        McpServer {
            name: "faults".into(),
            command: venv.join("bin/python").display().to_string(),
            args: vec![script.display().to_string()],
            env: Default::default(),
            skill: None,
        }
    }

    #[tokio::test]
    async fn a_call_without_an_answer_in_time_is_abandoned_and_the_server_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let conn = McpConnection::start(&faults(), dir.path(), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(conn.tools().iter().any(|t| t.name == "slow"));
        // The SDK speaks both eras; the agent picks the current one.
        assert_eq!(conn.protocol_version(), "2026-07-28");
        let err = conn
            .call(
                "slow",
                serde_json::json!({"seconds": 30}),
                Duration::from_secs(1),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`faults` did not answer the call to `slow` within 1 s"),
            "{err}"
        );
        let ok = conn
            .call(
                "echo",
                serde_json::json!({"text": "still here"}),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(
            format!("{:?}", ok.content).contains("echo:still here"),
            "{ok:?}"
        );
        conn.kill();
    }

    #[tokio::test]
    async fn a_server_that_is_not_an_mcp_server_fails_to_start_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let spec = McpServer {
            name: "liar".into(),
            command: "/bin/sh".into(),
            args: vec!["-c".into(), "echo 'no MCP here' >&2; exit 7".into()],
            env: Default::default(),
            skill: None,
        };
        let err = McpConnection::start(&spec, dir.path(), Duration::from_secs(60))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no MCP here"), "{err}");
    }

    #[test]
    fn proxy_and_nanoclaw_variables_are_reserved() {
        for name in [
            "HTTPS_PROXY",
            "no_proxy",
            "SSL_CERT_FILE",
            "NANOCLAW_MODEL_TOKEN",
        ] {
            assert!(
                nanoclaw_protocol::contract::env::is_routing_var(name),
                "{name}"
            );
        }
        assert!(!nanoclaw_protocol::contract::env::is_routing_var(
            "GITHUB_TOKEN"
        ));
    }
}

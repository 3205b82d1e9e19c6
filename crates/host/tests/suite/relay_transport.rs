//! The host wires the TCP relay for runtimes whose sandboxes cannot receive a Unix socket
//! (VMs). No VM here, so a test double runs the agent as a plain child process — NOT a
//! sandbox, only a way to check the host's side: port, token, environment, relay.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::common::*;
use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
use nanoclaw_host::config::Paths;
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_sandbox::{
    RelayTransport, Runtime, SandboxControl, SandboxError, SandboxProcess, SandboxSpec,
};
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

struct TcpOnlyTestRuntime {
    seen_env: std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>,
}

struct ChildControl(tokio::process::Child);

#[async_trait::async_trait]
impl SandboxControl for ChildControl {
    fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
    async fn wait(&mut self) -> Option<i32> {
        self.0.wait().await.ok().and_then(|s| s.code())
    }
    async fn kill(&mut self) {
        let _ = self.0.kill().await;
    }
}

#[async_trait::async_trait]
impl Runtime for TcpOnlyTestRuntime {
    fn name(&self) -> &'static str {
        "tcp-test"
    }
    fn relay_transport(&self) -> RelayTransport {
        RelayTransport::Tcp {
            bind: "127.0.0.1:0".parse().unwrap(),
            host: "127.0.0.1".into(),
        }
    }
    async fn probe(&self) -> Result<(), SandboxError> {
        Ok(())
    }
    async fn spawn(&self, spec: &SandboxSpec) -> Result<SandboxProcess, SandboxError> {
        self.seen_env.lock().unwrap().push(spec.env.clone());
        let workspace = spec
            .mounts
            .iter()
            .find(|m| m.sandbox_path == spec.workdir)
            .map(|m| m.host_path.clone())
            .unwrap();
        let mut child = tokio::process::Command::new(&spec.agent_binary)
            .env_clear()
            .envs(&spec.env)
            .env("NANOCLAW_WORKSPACE", &workspace)
            .env_remove("NANOCLAW_GLOBAL_DIR")
            .current_dir(&workspace)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Ok(SandboxProcess {
            stdin: Box::pin(child.stdin.take().unwrap()),
            stdout: Box::pin(child.stdout.take().unwrap()),
            stderr: Box::pin(child.stderr.take().unwrap()),
            control: Box::new(ChildControl(child)),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_runtime_gets_a_token_checked_tcp_relay_instead_of_a_socket() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let runtime = Arc::new(TcpOnlyTestRuntime {
        seen_env: std::sync::Mutex::new(Vec::new()),
    });
    let host = Host::start(HostOptions {
        paths: Paths::new(home.path()),
        config: config_for_tests(),
        upstreams: ModelUpstreams {
            anthropic: Some(Upstream {
                base_url: model.base_url(),
                auth: UpstreamAuth::XApiKey(TEST_KEY.into()),
            }),
            openai: None,
        },
        runtime: Some(runtime.clone()),
        agent_binary: Some(nanoclaw_test_support::agent_binary()),
        master_key: None,
        clock: None,
    })
    .await
    .unwrap();
    let mut client = connect_client(home.path()).await;
    let (kind, text) = ask(&mut client, "over tcp").await;
    assert_eq!(kind, "reply", "{text}");
    assert!(text.contains("over tcp"));
    let env = runtime.seen_env.lock().unwrap()[0].clone();
    assert!(!env.contains_key("NANOCLAW_MODEL_SOCKET"));
    assert!(env["NANOCLAW_MODEL_TCP"].starts_with("127.0.0.1:"));
    assert_eq!(env["NANOCLAW_MODEL_TOKEN"].len(), 64);
    assert!(
        !env.values().any(|v| v.contains(TEST_KEY)),
        "the model key never goes to the sandbox"
    );
    // The relay added the key on the host side.
    assert!(
        model
            .requests()
            .iter()
            .all(|r| r.header("x-api-key") == Some(TEST_KEY))
    );
    host.shutdown().await;
}

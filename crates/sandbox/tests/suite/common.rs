//! Helpers shared by the native and Docker sandbox tests: a fixture folder with a tiny
//! shell "agent" that runs the command given as its first argument, and running a
//! sandbox to completion.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use nanoclaw_sandbox::{Limits, Mount, SandboxProcess, SandboxSpec};
use tokio::io::AsyncReadExt;

pub const SECRET: &str = "s3cr3t-host-value-5b1f";
pub const FAKE_KEY: &str = "sk-ant-fake-key-do-not-leak-9c2e";

static HOST_ENV: Once = Once::new();

/// Puts secrets into the test process's environment, which the sandbox must not see.
pub fn set_host_secrets() {
    HOST_ENV.call_once(|| {
        // SAFETY: set once, before this test's sandboxes start; no test reads these
        // variables through libc concurrently.
        unsafe {
            std::env::set_var("NANOCLAW_TEST_SECRET", SECRET);
            std::env::set_var("ANTHROPIC_API_KEY", FAKE_KEY);
        }
    });
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub struct Fixture {
    dir: tempfile::TempDir,
    /// `PATH` inside: the native sandbox sees the host's /usr/bin, the busybox image /bin.
    path_env: &'static str,
}

impl Fixture {
    pub fn new(path_env: &'static str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = dir.path().join("agent");
        std::fs::write(&agent, "#!/bin/sh\neval \"$1\"\n").expect("write agent");
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for sub in ["work", "ro", "outside"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(dir.path().join("ro/readme.txt"), "read only data\n").expect("write ro");
        std::fs::write(dir.path().join("outside/secret-marker-7f3a.txt"), SECRET)
            .expect("write outside");
        // World-accessible so a non-root bwrap can bind them.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        std::fs::set_permissions(
            dir.path().join("work"),
            std::fs::Permissions::from_mode(0o777),
        )
        .expect("chmod work");
        Self { dir, path_env }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    pub fn spec(&self, name: &str, command: &str) -> SandboxSpec {
        SandboxSpec {
            name: format!("test-{name}-{}", std::process::id()),
            agent_binary: self.path("agent"),
            args: vec![command.to_string()],
            mounts: vec![
                Mount {
                    host_path: self.path("work"),
                    sandbox_path: "/workspace".into(),
                    writable: true,
                },
                Mount {
                    host_path: self.path("ro"),
                    sandbox_path: "/workspace/ro".into(),
                    writable: false,
                },
            ],
            env: BTreeMap::from([
                ("PATH".to_string(), self.path_env.to_string()),
                ("HOME".to_string(), "/workspace".to_string()),
                ("NANOCLAW_GROUP".to_string(), "g1".to_string()),
            ]),
            workdir: "/workspace".into(),
            limits: Limits::default(),
        }
    }
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub async fn finish(process: SandboxProcess) -> Output {
    let SandboxProcess {
        stdin,
        mut stdout,
        mut stderr,
        mut control,
    } = process;
    drop(stdin);
    let collected = tokio::time::timeout(Duration::from_secs(60), async {
        let mut out = String::new();
        let mut err = String::new();
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a.expect("read stdout");
        b.expect("read stderr");
        let status = control.wait().await;
        (status, out, err)
    })
    .await
    .expect("sandbox did not finish within 60 s");
    Output {
        code: collected.0,
        stdout: collected.1,
        stderr: collected.2,
    }
}

//! Native (bubblewrap) sandbox spawn latency: `NativeRuntime::spawn` called → first byte
//! the sandboxed program writes on stdout read by the caller. The "agent" is a `/bin/sh`
//! script that prints one line and exits, so the figure is the sandbox's cost (namespaces,
//! mounts, rlimits, cgroup when writable, exec) plus a shell start, nothing of the agent.
//! The spec mirrors the host's: three mounts (group rw, global ro, run rw), a small
//! environment and the default limits.
//!
//! Run: `cargo bench -p nanoclaw-sandbox --bench sandbox_spawn` (`BENCH_N=…` to change n).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nanoclaw_sandbox::{Limits, Mount, NativeRuntime, Runtime, SandboxProcess, SandboxSpec};
use tokio::io::AsyncReadExt;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

fn iterations(default: usize) -> usize {
    std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(default)
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = dir.path().join("agent");
    std::fs::write(&agent, "#!/bin/sh\necho x\n").expect("write agent");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for sub in ["group", "global", "run"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        std::fs::set_permissions(dir.path().join(sub), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let runtime = NativeRuntime::detect().expect("bubblewrap is installed");
    runtime
        .probe()
        .await
        .expect("the native runtime works here");
    let (major, minor, patch) = runtime.version();
    println!(
        "machine: {} cores, kernel {}; bubblewrap {major}.{minor}.{patch}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    let spec = |i: usize| SandboxSpec {
        name: format!("bench-{}-{i}", std::process::id()),
        agent_binary: agent.clone(),
        args: Vec::new(),
        mounts: vec![
            Mount {
                host_path: dir.path().join("group"),
                sandbox_path: "/workspace/group".into(),
                writable: true,
            },
            Mount {
                host_path: dir.path().join("global"),
                sandbox_path: "/workspace/global".into(),
                writable: false,
            },
            Mount {
                host_path: dir.path().join("run"),
                sandbox_path: "/run/nanoclaw".into(),
                writable: true,
            },
        ],
        env: BTreeMap::from([
            ("HOME".to_owned(), "/workspace/group".to_owned()),
            ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ]),
        workdir: "/workspace/group".into(),
        limits: Limits::default(),
    };

    // Warm-up: page cache, bwrap binary, dynamic loader.
    for i in 0..5 {
        let process = runtime.spawn(&spec(i)).await.expect("spawn");
        finish(process).await;
    }

    let n = iterations(100);
    let mut call = Vec::with_capacity(n);
    let mut first_byte = Vec::with_capacity(n);
    for i in 0..n {
        let spec = spec(i + 1000);
        let started = Instant::now();
        let mut process = runtime.spawn(&spec).await.expect("spawn");
        call.push(started.elapsed());
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(30), process.stdout.read(&mut byte))
            .await
            .expect("output within 30 s")
            .expect("reading stdout");
        first_byte.push(started.elapsed());
        assert_eq!(read, 1, "the sandboxed script printed nothing");
        assert_eq!(byte[0], b'x');
        finish(process).await;
    }

    println!();
    println!("## native sandbox spawn (bubblewrap), /bin/sh script agent");
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"
    );
    row("spawn() returned", &call);
    row("spawn() -> first stdout byte", &first_byte);
}

/// Waits for the sandbox to exit and runs the runtime's cleanup (not timed).
async fn finish(process: SandboxProcess) {
    let SandboxProcess {
        stdin,
        mut stdout,
        stderr,
        mut control,
    } = process;
    drop(stdin);
    drop(stderr);
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest).await;
    let _ = control.wait().await;
}

fn row(name: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let pct = |p: f64| {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    let mean = sorted.iter().sum::<Duration>() / sorted.len().max(1) as u32;
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        name,
        sorted.len(),
        ms(pct(50.0)),
        ms(pct(95.0)),
        ms(pct(99.0)),
        ms(sorted[sorted.len() - 1]),
        ms(mean)
    );
}

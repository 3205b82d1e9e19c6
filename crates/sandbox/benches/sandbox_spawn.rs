//! Sandbox spawn latency, per runtime: `Runtime::spawn` called → first byte the sandboxed
//! program writes on stdout read by the caller. Every iteration is a new sandbox (the cold
//! path the host takes for each agent). The "agent" is a `/bin/sh` script that prints one
//! line and exits, so the figure is the runtime's cost (namespaces or container create,
//! attach and start, mounts, limits) plus a shell start, nothing of the agent. The spec
//! mirrors the host's: three mounts (group rw, global ro, run rw), a small environment and
//! the default limits.
//!
//! Native (bubblewrap) always; Docker when an engine answers, with the minimal agent image
//! (`nanoclaw image build --minimal`, built here) or `$NANOCLAW_BENCH_IMAGE`.
//!
//! Run: `cargo bench -p nanoclaw-sandbox --bench sandbox_spawn` (`BENCH_N=…` to change n).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nanoclaw_sandbox::docker::DockerConfig;
use nanoclaw_sandbox::{
    DockerRuntime, Limits, Mount, NativeRuntime, Runtime, SandboxProcess, SandboxSpec,
};
use tokio::io::AsyncReadExt;

const BENCH_IMAGE: &str = "nanoclaw-bench-busybox:minimal";

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

    let native = NativeRuntime::detect().expect("bubblewrap is installed");
    native.probe().await.expect("the native runtime works here");
    let (major, minor, patch) = native.version();
    println!(
        "machine: {} cores, kernel {}; bubblewrap {major}.{minor}.{patch}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    measure(
        "native sandbox spawn (bubblewrap)",
        &native,
        dir.path(),
        100,
    )
    .await;

    match docker().await {
        Some(docker) => {
            measure(
                &format!("docker sandbox spawn ({})", docker.image()),
                &docker,
                dir.path(),
                30,
            )
            .await
        }
        None => println!("\n## docker sandbox spawn: skipped (no engine answers here)"),
    }
}

/// Docker with the bench image, or `None` when no engine answers.
async fn docker() -> Option<DockerRuntime> {
    use nanoclaw_sandbox::image::{self, ImageBuild, ImageKind};
    let engine = image::connect().await.ok()?;
    let tag = match std::env::var("NANOCLAW_BENCH_IMAGE") {
        Ok(tag) => tag,
        Err(_) => {
            let build = ImageBuild {
                tag: BENCH_IMAGE.into(),
                kind: ImageKind::Minimal,
                ..Default::default()
            };
            image::build(&engine, &build, &mut |_| {})
                .await
                .expect("building the minimal bench image");
            BENCH_IMAGE.to_owned()
        }
    };
    let runtime = DockerRuntime::connect(DockerConfig {
        socket: None,
        image: tag,
        cpus: None,
        host_id: format!("bench-{}", std::process::id()),
    })
    .await
    .ok()?;
    runtime.probe().await.expect("the bench image is usable");
    Some(runtime)
}

fn spec(dir: &Path, i: usize) -> SandboxSpec {
    SandboxSpec {
        name: format!("bench-{}-{i}", std::process::id()),
        agent_binary: dir.join("agent"),
        args: Vec::new(),
        mounts: vec![
            Mount {
                host_path: dir.join("group"),
                sandbox_path: "/workspace/group".into(),
                writable: true,
            },
            Mount {
                host_path: dir.join("global"),
                sandbox_path: "/workspace/global".into(),
                writable: false,
            },
            Mount {
                host_path: dir.join("run"),
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
    }
}

async fn measure(title: &str, runtime: &dyn Runtime, dir: &Path, default_n: usize) {
    // Warm-up: page cache, binaries, the engine's image cache.
    for i in 0..3 {
        let process = runtime.spawn(&spec(dir, i)).await.expect("spawn");
        finish(process).await;
    }
    let n = iterations(default_n);
    let mut call = Vec::with_capacity(n);
    let mut first_byte = Vec::with_capacity(n);
    for i in 0..n {
        let spec = spec(dir, i + 1000);
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
    println!("## {title}, /bin/sh script agent");
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"
    );
    row("spawn() returned", &call);
    row("spawn() -> first stdout byte", &first_byte);
}

/// Waits for the sandbox to exit and releases it (not timed).
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

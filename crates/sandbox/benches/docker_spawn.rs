//! Docker sandbox spawn latency: `DockerRuntime::spawn` called → first byte the containerised
//! program writes on stdout read by the caller. Every iteration is a new container (create,
//! attach, start: the "cold" path the host takes for each agent); only the image is cached.
//! The "agent" is a `/bin/sh` script that prints one line and exits, so the figure is the
//! engine's cost plus a shell start, nothing of the agent. The spec mirrors the host's: three
//! mounts (group rw, global ro, run rw), a small environment and the default limits.
//!
//! The image is `$NANOCLAW_BENCH_IMAGE` when set (e.g. the real `nanoclaw-agent:latest`),
//! else a busybox-only image imported from the host's `/bin/busybox` (the tests' image).
//!
//! Run: `cargo bench -p nanoclaw-sandbox --bench docker_spawn` (`BENCH_N=…` to change n).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use nanoclaw_sandbox::docker::DockerConfig;
use nanoclaw_sandbox::{DockerRuntime, Limits, Mount, Runtime, SandboxProcess, SandboxSpec};
use tokio::io::AsyncReadExt;

const TEST_IMAGE: &str = "nanoclaw-test-busybox:latest";
/// Same rootfs and revision label as crates/sandbox/tests/docker.rs: both share one import.
const IMAGE_REVISION: &str = "4";
const REVISION_LABEL: &str = "org.nanoclaw.test-image-revision";
const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "id", "echo", "sleep", "touch", "mkdir", "env", "wc", "head", "tr", "rm",
    "dd", "nc", "grep", "hostname", "test",
];

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

    let image = std::env::var("NANOCLAW_BENCH_IMAGE").unwrap_or_else(|_| TEST_IMAGE.to_string());
    let runtime = DockerRuntime::connect(DockerConfig {
        socket: None,
        image: image.clone(),
        cpus: None,
        host_id: format!("bench-{}", std::process::id()),
    })
    .await
    .expect("a Docker or Podman engine answers");
    if image == TEST_IMAGE {
        import_test_image(runtime.socket().to_str().expect("utf-8 socket")).await;
    }
    runtime
        .probe()
        .await
        .expect("the docker runtime works here");
    println!(
        "machine: {} cores, kernel {}; engine socket {}; image {image}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        runtime.socket().display(),
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

    // Warm-up: page cache, engine caches.
    for i in 0..3 {
        let process = runtime.spawn(&spec(i)).await.expect("spawn");
        finish(process).await;
    }

    let n = iterations(30);
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
        assert_eq!(read, 1, "the containerised script printed nothing");
        assert_eq!(byte[0], b'x');
        finish(process).await;
    }

    println!();
    println!("## docker sandbox spawn (new container each time), /bin/sh script agent");
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"
    );
    row("spawn() returned", &call);
    row("spawn() -> first stdout byte", &first_byte);
}

/// Waits for the container to exit (AutoRemove then removes it; not timed).
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

/// Imports the busybox test image unless this revision is already there.
async fn import_test_image(socket: &str) {
    let docker = Docker::connect_with_unix(
        socket,
        60,
        &bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )
    .expect("bollard client");
    let current = docker
        .inspect_image(TEST_IMAGE)
        .await
        .ok()
        .and_then(|image| image.config)
        .and_then(|config| config.labels)
        .and_then(|labels| labels.get(REVISION_LABEL).cloned());
    if current.as_deref() == Some(IMAGE_REVISION) {
        return;
    }
    let (repo, tag) = TEST_IMAGE.split_once(':').expect("tagged");
    let options = CreateImageOptions {
        from_src: Some("-".to_string()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        changes: vec![format!("LABEL {REVISION_LABEL}={IMAGE_REVISION}")],
        ..Default::default()
    };
    let mut progress = docker.create_image(
        Some(options),
        Some(bollard::body_full(busybox_rootfs().into())),
        None,
    );
    while let Some(step) = progress.next().await {
        step.expect("importing the test image");
    }
}

/// A rootfs with a static busybox and a few applet links, as a tar in memory.
fn busybox_rootfs() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for path in ["bin", "etc", "tmp", "run", "proc", "sys", "dev", "opt"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if path == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        builder
            .append_data(&mut header, path, std::io::empty())
            .expect("dir entry");
    }
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(busybox.len() as u64);
    builder
        .append_data(&mut header, "bin/busybox", busybox.as_slice())
        .expect("busybox entry");
    for applet in APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("applet link");
    }
    for (path, body) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/workspace:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\nagent:x:1000:\n"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(body.len() as u64);
        builder
            .append_data(&mut header, path, body.as_bytes())
            .expect("etc entry");
    }
    builder.into_inner().expect("tar")
}

//! Real Docker (or Podman) sandboxes, probed from the inside by a tiny shell "agent" that
//! runs the command given as its first argument. The image is a busybox-only rootfs the
//! test imports itself (no registry needed). Skipped, loudly, only when no engine answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, CreateImageOptions};
use futures_util::StreamExt;
use nanoclaw_sandbox::docker::{
    CONTAINER_PREFIX, DockerConfig, LABEL_HOST, LABEL_IMAGE_VERSION, LABEL_MANAGED, LABEL_SANDBOX,
};
use nanoclaw_sandbox::{
    AGENT_BINARY_PATH, DockerRuntime, Limits, Runtime, SandboxError, SandboxProcess, SandboxSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::*;

const IMAGE: &str = "nanoclaw-test-busybox:latest";
static IMPORT: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);

fn host_id() -> String {
    format!("test-{}", std::process::id())
}

fn config(image: &str, host_id: String) -> DockerConfig {
    DockerConfig {
        socket: None,
        image: image.to_string(),
        cpus: Some(1.0),
        host_id,
    }
}

/// The runtime, with the test image imported; `None` (after a loud message) when no engine
/// answers on this machine.
async fn runtime_with(host_id: String) -> Option<DockerRuntime> {
    let runtime = match DockerRuntime::connect(config(IMAGE, host_id)).await {
        Ok(runtime) => runtime,
        Err(error @ SandboxError::Unavailable { .. }) => {
            eprintln!("\n!!! SKIPPED: no Docker/Podman engine answers here: {error} !!!\n");
            return None;
        }
        Err(error) => panic!("connect: {error}"),
    };
    ensure_image(&engine(&runtime)).await;
    Some(runtime)
}

async fn runtime() -> Option<DockerRuntime> {
    runtime_with(host_id()).await
}

fn engine(runtime: &DockerRuntime) -> Docker {
    let socket = runtime.socket().to_str().expect("utf-8 socket");
    // The test engine is Docker 20.10 / Podman: API 1.41 is understood by both.
    Docker::connect_with_unix(
        socket,
        60,
        &bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )
    .expect("bollard client")
}

/// Builds the test image once per run: the same minimal (busybox) image `nanoclaw image
/// build --minimal` makes, so the tests run what users can build without a registry.
async fn ensure_image(docker: &Docker) {
    let mut done = IMPORT.lock().await;
    if *done {
        return;
    }
    nanoclaw_sandbox::image::build(
        docker,
        &nanoclaw_sandbox::image::ImageBuild {
            tag: IMAGE.into(),
            kind: nanoclaw_sandbox::image::ImageKind::Minimal,
            ..Default::default()
        },
        &mut |_| {},
    )
    .await
    .expect("building the minimal test image");
    *done = true;
}

async fn run_spec(runtime: &DockerRuntime, spec: &SandboxSpec) -> Output {
    let process = runtime.spawn(spec).await.expect("spawn sandbox");
    finish(process).await
}

/// Whether the engine still has a container of that name.
async fn container_exists(docker: &Docker, name: &str) -> bool {
    match docker.inspect_container(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(error) => panic!("inspect {name}: {error}"),
    }
}

async fn wait_until_removed(docker: &Docker, name: &str) {
    for _ in 0..100 {
        if !container_exists(docker, name).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("container {name} still exists after 10 s");
}

#[tokio::test]
async fn probe_succeeds_with_the_image() {
    let Some(runtime) = runtime().await else {
        return;
    };
    assert_eq!(runtime.name(), "docker");
    assert_eq!(runtime.image(), IMAGE);
    runtime.probe().await.expect("probe");
}

#[tokio::test]
async fn probe_names_the_build_command_when_the_image_is_missing() {
    if runtime().await.is_none() {
        return;
    }
    let runtime = DockerRuntime::connect(config("nanoclaw-test-missing:nope", host_id()))
        .await
        .expect("connect");
    match runtime.probe().await {
        Err(error @ SandboxError::Unavailable { .. }) => {
            let message = error.to_string();
            assert!(message.contains("nanoclaw image build"), "{message}");
            assert!(message.contains("nanoclaw-test-missing:nope"), "{message}");
        }
        other => panic!("expected Unavailable, got {:?}", other.err()),
    }
    let fixture = Fixture::new("/bin");
    match runtime.spawn(&fixture.spec("noimage", "true")).await {
        Err(error @ SandboxError::Unavailable { .. }) => {
            assert!(
                error.to_string().contains("nanoclaw image build"),
                "{error}"
            );
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("spawned without an image"),
    }
}

#[tokio::test]
async fn probe_reports_an_outdated_image() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let docker = engine(&runtime);
    let outdated = "nanoclaw-test-busybox:outdated";
    let (repo, tag) = outdated.split_once(':').expect("tagged");
    let mut progress = docker.create_image(
        Some(CreateImageOptions {
            from_src: Some("-".to_string()),
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            changes: vec![format!("LABEL {LABEL_IMAGE_VERSION}=0-outdated")],
            ..Default::default()
        }),
        Some(bollard::body_full(
            nanoclaw_sandbox::image::minimal_rootfs(
                &std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox"),
                &["sh".to_owned()],
            )
            .expect("rootfs"),
        )),
        None,
    );
    while let Some(step) = progress.next().await {
        step.expect("importing the outdated image");
    }
    let runtime = DockerRuntime::connect(config(outdated, host_id()))
        .await
        .expect("connect");
    let error = runtime.probe().await.expect_err("outdated image");
    let message = error.to_string();
    assert!(
        matches!(error, SandboxError::Unavailable { .. }),
        "{message}"
    );
    assert!(message.contains("outdated"), "{message}");
    assert!(message.contains("nanoclaw image build"), "{message}");
}

/// An engine that answers the ping, then drops every connection: what a daemon that dies
/// between two requests looks like.
#[tokio::test]
async fn an_engine_gone_mid_spawn_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("engine.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let server = tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            if first {
                first = false;
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Type: text/plain\r\n\
                          Content-Length: 2\r\n\r\nOK",
                    )
                    .await;
            }
            drop(stream);
        }
    });
    let mut config = config(IMAGE, host_id());
    config.socket = Some(socket);
    let runtime = DockerRuntime::connect(config).await.expect("ping answered");
    let fixture = Fixture::new("/bin");
    match runtime.spawn(&fixture.spec("gone", "true")).await {
        Err(error @ SandboxError::Unavailable { .. }) => {
            let message = error.to_string();
            assert!(message.contains("did not answer"), "{message}");
            assert!(message.contains("engine.sock"), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("spawned on a dead engine"),
    }
    server.abort();
}

#[tokio::test]
async fn connect_to_a_dead_socket_is_unavailable_with_a_fix() {
    let mut config = config(IMAGE, host_id());
    config.socket = Some("/nonexistent/docker.sock".into());
    let error = DockerRuntime::connect(config)
        .await
        .expect_err("no engine there");
    assert!(matches!(error, SandboxError::Unavailable { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("/nonexistent/docker.sock"), "{message}");
    assert!(message.contains("DOCKER_HOST"), "{message}");
}

#[tokio::test]
async fn stdio_is_piped_to_the_agent() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let process = runtime
        .spawn(&fixture.spec(
            "stdio",
            "read line; echo \"got:$line\"; echo err >&2; exit 3",
        ))
        .await
        .expect("spawn");
    let SandboxProcess {
        mut stdin,
        stdout,
        stderr,
        control,
    } = process;
    stdin
        .write_all(b"{\"hello\":1}\n")
        .await
        .expect("write stdin");
    let out = finish(SandboxProcess {
        stdin,
        stdout,
        stderr,
        control,
    })
    .await;
    assert_eq!(out.stdout, "got:{\"hello\":1}\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.code, Some(3));
}

#[tokio::test]
async fn closing_stdin_gives_the_agent_eof() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let mut process = runtime
        .spawn(&fixture.spec("eof", "cat; echo done"))
        .await
        .expect("spawn");
    process.stdin.write_all(b"abc\n").await.expect("write");
    // finish() drops stdin: cat must see EOF and the agent end on its own.
    let out = finish(process).await;
    assert_eq!(out.stdout, "abc\ndone\n");
    assert_eq!(out.code, Some(0));
}

#[tokio::test]
async fn runs_as_an_unprivileged_user_without_capabilities() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let out = run_spec(
        &runtime,
        &fixture.spec(
            "uid",
            "id -u; id -g; hostname; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; pwd",
        ),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_ne!(lines[0], "0", "must not run as root: {}", out.stdout);
    if is_root() {
        let user = nanoclaw_sandbox::SandboxUser::for_this_host();
        assert_eq!(lines[0], user.uid.to_string());
        assert_eq!(lines[1], user.gid.to_string());
    } else {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(lines[0], unsafe { libc::geteuid() }.to_string());
    }
    assert_eq!(lines[2], "nanoclaw");
    assert_eq!(lines[3], "CapEff:\t0000000000000000");
    assert_eq!(lines[4], "NoNewPrivs:\t1");
    assert_eq!(lines[5], "/workspace");
}

/// The attacks of a sandbox on a root host: `kernel.core_pattern` (runs a program as host
/// root on a crash), a setuid file planted in the group folder, files owned by root.
#[tokio::test]
async fn sandbox_cannot_become_host_root() {
    use std::os::unix::fs::MetadataExt;
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let out = run_spec(
        &runtime,
        &fixture.spec(
            "root-attacks",
            // Writing back the current value: harmless should it succeed.
            "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern && echo core_pattern=written; \
             grep -E ' /proc/sys ' /proc/self/mountinfo; \
             cp /bin/busybox /workspace/rootshell && chmod 4755 /workspace/rootshell; \
             mkdir /workspace/made && echo x > /workspace/made/file; echo done",
        ),
    )
    .await;
    assert!(out.stdout.contains("done"), "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("core_pattern=written"),
        "{}",
        out.stdout
    );
    let sys = out
        .stdout
        .lines()
        .find(|line| line.contains(" /proc/sys "))
        .unwrap_or_else(|| panic!("/proc/sys is not a mount of its own: {}", out.stdout));
    let options = sys.split_whitespace().nth(5).unwrap_or_default();
    assert!(options.split(',').any(|o| o == "ro"), "{sys}");
    for name in ["work/rootshell", "work/made", "work/made/file"] {
        let meta = std::fs::symlink_metadata(fixture.path(name)).expect(name);
        assert!(
            meta.uid() != 0 && meta.gid() != 0,
            "{name} belongs to host {}:{} (mode {:o})",
            meta.uid(),
            meta.gid(),
            meta.mode()
        );
    }
}

#[tokio::test]
async fn filesystem_write_permissions() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let command = format!(
        "touch /rootfile 2>/dev/null && echo root-writable; \
         touch /bin/x 2>/dev/null && echo bin-writable; \
         touch /etc/x 2>/dev/null && echo etc-writable; \
         echo data > /workspace/out.txt && echo work-ok; \
         cat /workspace/ro/readme.txt; \
         touch /workspace/ro/new 2>/dev/null && echo ro-writable; \
         echo x > {agent} 2>/dev/null && echo agent-writable; \
         test -x {agent} && echo agent-exec; \
         echo t > /tmp/t && echo tmp-ok; \
         cat {outside} 2>/dev/null && echo outside-visible",
        agent = AGENT_BINARY_PATH,
        outside = fixture.path("outside/secret-marker-7f3a.txt").display(),
    );
    let out = run_spec(&runtime, &fixture.spec("fs", &command)).await;
    assert!(!out.stdout.contains("writable"), "{}", out.stdout);
    assert!(!out.stdout.contains("outside-visible"), "{}", out.stdout);
    assert!(!out.stdout.contains(SECRET), "{}", out.stdout);
    for ok in ["work-ok", "read only data", "agent-exec", "tmp-ok"] {
        assert!(
            out.stdout.contains(ok),
            "missing {ok}: {}{}",
            out.stdout,
            out.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(fixture.path("work/out.txt")).expect("written file on host"),
        "data\n"
    );
    assert!(!fixture.path("ro/new").exists());
}

#[tokio::test]
async fn only_loopback_and_no_route_out() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let out = run_spec(
        &runtime,
        &fixture.spec(
            "net",
            "cat /proc/net/dev; echo ---; ls /sys/class/net; echo ---; \
             nc -w 5 1.1.1.1 80 </dev/null 2>&1; echo connect=$?",
        ),
    )
    .await;
    let mut parts = out.stdout.split("---");
    let devices = parts.next().expect("devices");
    let interfaces: Vec<&str> = devices
        .lines()
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains('|'))
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{}", out.stdout);
    let class: Vec<&str> = parts.next().expect("class").split_whitespace().collect();
    assert_eq!(class, vec!["lo"], "{}", out.stdout);
    // (busybox `wget` crashes in this static build; `nc` makes the same connect(2).)
    let connect = parts.next().expect("connect");
    assert!(connect.contains("Network is unreachable"), "{connect}");
    assert!(connect.contains("connect=1"), "{connect}");
}

#[tokio::test]
async fn host_environment_does_not_leak() {
    set_host_secrets();
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let out = run_spec(
        &runtime,
        &fixture.spec(
            "env",
            "env; echo ---; cat /proc/1/environ /proc/[0-9]*/environ | tr '\\0' '\\n'",
        ),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for leaked in [
        SECRET,
        FAKE_KEY,
        "NANOCLAW_TEST_SECRET",
        "ANTHROPIC_API_KEY",
        "CARGO",
    ] {
        assert!(
            !out.stdout.contains(leaked),
            "{leaked} leaked:\n{}",
            out.stdout
        );
    }
    let (env, environs) = out.stdout.split_once("---").expect("separator");
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|line| line.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort();
    // sh adds PWD and SHLVL; the engine always adds HOSTNAME (Podman also `container`).
    names.retain(|name| !matches!(*name, "PWD" | "SHLVL" | "HOSTNAME" | "container"));
    assert_eq!(names, vec!["HOME", "NANOCLAW_GROUP", "PATH"], "{env}");
    assert!(environs.contains("NANOCLAW_GROUP=g1"), "{environs}");
}

#[tokio::test]
async fn limits_are_applied() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let mut spec = fixture.spec(
        "limits",
        "cat /proc/self/limits; \
         echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max); \
         echo pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max); \
         dd if=/dev/zero of=/workspace/big bs=1M count=20 2>&1; echo dd=$?",
    );
    spec.limits = Limits {
        max_processes: 100,
        max_memory_bytes: 256 * 1024 * 1024,
        max_file_bytes: 10 * 1024 * 1024,
        max_open_files: 200,
    };
    let out = run_spec(&runtime, &spec).await;
    let limit = |name: &str| -> (String, String) {
        let line = out
            .stdout
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {}", out.stdout));
        let mut fields = line[name.len()..].split_whitespace();
        (
            fields.next().expect("soft").into(),
            fields.next().expect("hard").into(),
        )
    };
    assert_eq!(limit("Max open files"), ("200".into(), "200".into()));
    assert_eq!(
        limit("Max file size"),
        ("10485760".into(), "10485760".into())
    );
    assert_eq!(limit("Max core file size"), ("0".into(), "0".into()));
    assert!(out.stdout.contains("mem=268435456\n"), "{}", out.stdout);
    assert!(out.stdout.contains("pids=100\n"), "{}", out.stdout);
    // Writing past max_file_bytes fails.
    assert!(!out.stdout.contains("dd=0"), "{}", out.stdout);
    let written = std::fs::metadata(fixture.path("work/big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(written <= 10 * 1024 * 1024, "{written}");
}

#[tokio::test]
async fn process_limit_stops_a_fork_loop() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let fixture = Fixture::new("/bin");
    let mut spec = fixture.spec(
        "pids",
        "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo started",
    );
    spec.limits.max_processes = 10;
    let out = run_spec(&runtime, &spec).await;
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource temporarily unavailable"),
        "expected fork failures past 10 processes; stdout={} stderr={}",
        out.stdout,
        out.stderr
    );
}

#[tokio::test]
async fn labels_while_running_and_kill_removes_the_container() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let docker = engine(&runtime);
    let fixture = Fixture::new("/bin");
    let spec = fixture.spec("kill", "echo up; sleep 30");
    let container = format!("{CONTAINER_PREFIX}{}", spec.name);
    let mut process = runtime.spawn(&spec).await.expect("spawn");
    let mut buf = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(30), process.stdout.read_exact(&mut buf))
        .await
        .expect("started within 30 s")
        .expect("sandbox started");
    assert_eq!(&buf, b"up\n");
    assert!(process.control.is_running());

    let inspected = docker
        .inspect_container(&container, None)
        .await
        .expect("container exists while running");
    let labels = inspected.config.and_then(|c| c.labels).expect("labels");
    assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
    assert_eq!(labels.get(LABEL_HOST), Some(&host_id()));
    assert_eq!(labels.get(LABEL_SANDBOX), Some(&spec.name));

    process.control.kill().await;
    assert!(!container_exists(&docker, &container).await, "kill removes");
    process.control.kill().await; // idempotent
    let code = tokio::time::timeout(Duration::from_secs(30), process.control.wait())
        .await
        .expect("wait returns after kill");
    assert_ne!(code, Some(0), "a killed agent did not succeed");
    assert!(!process.control.is_running());
}

#[tokio::test]
async fn dropping_the_process_removes_the_container() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let docker = engine(&runtime);
    let fixture = Fixture::new("/bin");
    let spec = fixture.spec("drop", "echo up; sleep 30");
    let container = format!("{CONTAINER_PREFIX}{}", spec.name);
    let mut process = runtime.spawn(&spec).await.expect("spawn");
    let mut buf = [0u8; 3];
    process.stdout.read_exact(&mut buf).await.expect("started");
    drop(process);
    wait_until_removed(&docker, &container).await;
}

#[tokio::test]
async fn remove_orphans_removes_only_unkept_containers_of_this_host() {
    // A host id of its own, so the other tests' sandboxes are not this test's orphans.
    let own_host = format!("orphans-{}", std::process::id());
    let Some(runtime) = runtime_with(own_host.clone()).await else {
        return;
    };
    let docker = engine(&runtime);
    let fixture = Fixture::new("/bin");
    let kept_spec = fixture.spec("kept", "echo up; sleep 30");
    let kept_container = format!("{CONTAINER_PREFIX}{}", kept_spec.name);
    let mut kept = runtime.spawn(&kept_spec).await.expect("spawn kept");
    let mut buf = [0u8; 3];
    kept.stdout
        .read_exact(&mut buf)
        .await
        .expect("kept started");

    // What a crashed host leaves behind: a labelled container nobody tracks.
    let orphan = format!("{CONTAINER_PREFIX}orphan-{}", std::process::id());
    let foreign = format!("{CONTAINER_PREFIX}foreign-{}", std::process::id());
    for (name, host) in [(&orphan, own_host.as_str()), (&foreign, "another-host")] {
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(IMAGE.to_string()),
                    cmd: Some(vec!["sleep".into(), "30".into()]),
                    labels: Some(HashMap::from([
                        (LABEL_MANAGED.to_string(), "true".to_string()),
                        (LABEL_HOST.to_string(), host.to_string()),
                    ])),
                    ..Default::default()
                },
            )
            .await
            .expect("create orphan");
    }

    let keep = HashSet::from([kept_spec.name.clone()]);
    let removed = runtime.remove_orphans(&keep).await.expect("remove orphans");
    assert_eq!(removed, 1);
    assert!(!container_exists(&docker, &orphan).await, "orphan removed");
    assert!(
        container_exists(&docker, &kept_container).await,
        "kept one stays"
    );
    assert!(
        container_exists(&docker, &foreign).await,
        "another host's container stays"
    );
    assert!(kept.control.is_running());

    kept.kill().await;
    docker
        .remove_container(
            &foreign,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("cleanup foreign");
}

#[tokio::test]
async fn invalid_specs_are_rejected_before_starting() {
    let Some(runtime) = runtime().await else {
        return;
    };
    let docker = engine(&runtime);
    let fixture = Fixture::new("/bin");
    let mut relative = fixture.spec("bad", "true");
    relative.mounts[0].sandbox_path = "workspace".into();
    let mut missing = fixture.spec("bad", "true");
    missing.mounts[0].host_path = fixture.path("does-not-exist");
    let mut dotdot = fixture.spec("bad", "true");
    dotdot.mounts[1].sandbox_path = "/workspace/../etc".into();
    let mut name = fixture.spec("bad", "true");
    name.name = "a/b".into();
    let container = format!("{CONTAINER_PREFIX}{}", fixture.spec("bad", "true").name);
    for (spec, expected) in [
        (relative, "absolute"),
        (missing, "does-not-exist"),
        (dotdot, "`..`"),
        (name, "sandbox name"),
    ] {
        match runtime.spawn(&spec).await {
            Err(SandboxError::InvalidSpec(message)) => {
                assert!(
                    message.contains(expected),
                    "{message} should mention {expected}"
                )
            }
            Err(other) => panic!("expected InvalidSpec, got {other}"),
            Ok(_) => panic!("spec with {expected} problem was accepted"),
        }
    }
    assert!(!container_exists(&docker, &container).await);
}

#[tokio::test]
async fn installed_packages_are_read_from_the_images_dpkg_database_without_running_it() {
    use nanoclaw_sandbox::image::{self, ImageBuild, ImageKind};
    use std::collections::BTreeSet;
    let Some(runtime) = runtime().await else {
        return;
    };
    let docker = engine(&runtime);
    // The minimal image has no dpkg: it provides no packages.
    assert_eq!(
        runtime.installed_packages().await.unwrap(),
        Some(BTreeSet::new())
    );

    // An image built on it whose Containerfile records the packages it is given as apt
    // would: what `--package`/`--skill` pass reaches the build, and is read back.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Containerfile");
    std::fs::write(
        &file,
        "ARG BASE\nFROM ${BASE}\nARG EXTRA_PACKAGES=\"\"\nUSER 0\n\
         RUN mkdir -p /var/lib/dpkg && for p in ${EXTRA_PACKAGES}; do \
         printf 'Package: %s\\nStatus: install ok installed\\n\\n' $p; done > /var/lib/dpkg/status\n",
    )
    .unwrap();
    let tag = "nanoclaw-test-packages:latest";
    let build = |packages: Vec<String>| ImageBuild {
        tag: tag.into(),
        base: IMAGE.into(),
        kind: ImageKind::Debian,
        containerfile: Some(file.clone()),
        packages,
        ..Default::default()
    };
    image::build(
        &docker,
        &build(vec!["jq".into(), "ffmpeg".into()]),
        &mut |_| {},
    )
    .await
    .unwrap();
    let derived = DockerRuntime::connect(config(tag, host_id()))
        .await
        .unwrap();
    let installed = derived.installed_packages().await.unwrap().unwrap();
    assert_eq!(
        installed,
        ["ffmpeg", "jq"].map(String::from).into_iter().collect()
    );
    // The container it was read through is gone again.
    let left = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![format!("{CONTAINER_PREFIX}packages-")],
            )])),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");

    // A name that is not a package never reaches the build's shell.
    let err = image::build(&docker, &build(vec!["jq;reboot".into()]), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a Debian package name"),
        "{err}"
    );
    // Nor does any package reach the minimal image, which cannot install one.
    let err = image::build(
        &docker,
        &ImageBuild {
            kind: ImageKind::Minimal,
            ..build(vec!["jq".into()])
        },
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot install packages"), "{err}");
}

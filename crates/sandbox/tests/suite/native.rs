//! Real bubblewrap sandboxes, probed from the inside by a tiny shell "agent" that runs the
//! command given as its first argument.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoclaw_sandbox::{
    AGENT_BINARY_PATH, Limits, NativeRuntime, Runtime, SandboxError, SandboxProcess, SandboxSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::*;

fn runtime() -> NativeRuntime {
    NativeRuntime::detect().expect("bwrap is installed on this machine")
}

async fn run_spec(spec: &SandboxSpec) -> Output {
    let process = runtime().spawn(spec).await.expect("spawn sandbox");
    finish(process).await
}

async fn run(fixture: &Fixture, name: &str, command: &str) -> Output {
    run_spec(&fixture.spec(name, command)).await
}

#[tokio::test]
async fn probe_succeeds_here() {
    let runtime = runtime();
    assert_eq!(runtime.name(), "native");
    runtime.probe().await.expect("probe");
}

#[tokio::test]
async fn runs_as_unprivileged_agent_user() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let out = run(
        &fixture,
        "uid",
        "id -u; id -g; id -un; cat /proc/sys/kernel/hostname; grep CapEff /proc/self/status; pwd",
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1000", "uid: {}", out.stdout);
    assert_eq!(lines[1], "1000");
    assert_eq!(lines[2], "agent");
    assert_eq!(lines[3], "nanoclaw");
    assert_eq!(lines[4], "CapEff:\t0000000000000000");
    assert_eq!(lines[5], "/workspace");
}

#[tokio::test]
async fn only_loopback_and_no_route_out() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let out = run(
        &fixture,
        "net",
        "cat /proc/net/dev; echo ---; bash -c 'echo x > /dev/tcp/1.1.1.1/53' 2>&1; echo connect=$?",
    )
    .await;
    let (devices, _) = out.stdout.split_once("---").expect("separator");
    let interfaces: Vec<&str> = devices
        .lines()
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains('|'))
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{}", out.stdout);
    assert!(
        out.stdout.contains("Network is unreachable"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("connect=1"), "{}", out.stdout);
}

#[tokio::test]
async fn host_files_outside_mounts_are_invisible() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let outside = fixture.path("outside/secret-marker-7f3a.txt");
    let command = format!(
        "cat {} 2>&1; echo cat=$?; \
         find / -xdev -name 'secret-marker-7f3a*' 2>/dev/null | sed s/^/found:/; \
         find /tmp /run /workspace -name 'secret-marker-7f3a*' | sed s/^/found:/; \
         for p in /etc/shadow /etc/gshadow /etc/ssl/private /root /home /var {data}; do test -e $p && echo present:$p; done; \
         ls /etc",
        outside.display(),
        data = fixture.path("outside").display(),
    );
    let out = run(&fixture, "files", &command).await;
    assert!(out.stdout.contains("cat=1"), "{}", out.stdout);
    assert!(
        !out.stdout.contains(SECRET),
        "secret leaked: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("found:"), "{}", out.stdout);
    assert!(!out.stdout.contains("present:"), "{}", out.stdout);
    let etc: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("cat="))
        .skip(1)
        .collect();
    assert!(etc.contains(&"passwd") && etc.contains(&"group"), "{etc:?}");
    assert!(
        !etc.contains(&"shadow") && !etc.contains(&"sudoers"),
        "{etc:?}"
    );
}

#[tokio::test]
async fn host_environment_does_not_leak() {
    set_host_secrets();
    let fixture = Fixture::new("/usr/bin:/bin");
    let out = run(
        &fixture,
        "env",
        "env; echo ---; cat /proc/[0-9]*/environ | tr '\\0' '\\n'",
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
    // `env` run by sh also sees PWD (sh sets it); nothing from the host.
    names.retain(|name| *name != "PWD");
    assert_eq!(names, vec!["HOME", "NANOCLAW_GROUP", "PATH"], "{env}");
    assert!(environs.contains("NANOCLAW_GROUP=g1"), "{environs}");
}

#[tokio::test]
async fn filesystem_write_permissions() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let command = format!(
        "touch /rootfile 2>/dev/null && echo root-writable; \
         touch /usr/x 2>/dev/null && echo usr-writable; \
         touch /etc/x 2>/dev/null && echo etc-writable; \
         echo hi >> /etc/passwd 2>/dev/null && echo passwd-writable; \
         echo data > /workspace/out.txt && echo work-ok; \
         cat /workspace/ro/readme.txt; \
         touch /workspace/ro/new 2>/dev/null && echo ro-writable; \
         echo x > {agent} 2>/dev/null && echo agent-writable; \
         test -x {agent} && echo agent-exec; \
         echo t > /tmp/t && echo tmp-ok",
        agent = AGENT_BINARY_PATH
    );
    let out = run(&fixture, "fs", &command).await;
    assert!(!out.stdout.contains("writable"), "{}", out.stdout);
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
async fn pid_namespace_shows_only_the_sandbox() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let out = run(
        &fixture,
        "pid",
        "for p in /proc/[0-9]*; do echo \"${p#/proc/} $(cat $p/comm)\"; done",
    )
    .await;
    let processes: Vec<&str> = out.stdout.lines().collect();
    // The agent (here a shell at the agent's path) is pid 1 itself (`--as-pid-1`: no bwrap
    // reaper holding its stdio), plus its `cat` children; never the host's.
    assert!(processes.len() <= 4, "{processes:?}");
    assert!(processes.contains(&"1 nanoclaw-agent"), "{processes:?}");
    assert!(
        processes.iter().all(|p| p.ends_with(" bwrap")
            || p.ends_with(" sh")
            || p.ends_with(" cat")
            || p.ends_with(" nanoclaw-agent")),
        "{processes:?}"
    );
}

#[tokio::test]
async fn no_stray_fds_reach_the_agent() {
    let fixture = Fixture::new("/usr/bin:/bin");
    // `exec` so the listing is of a process that got exactly what the sandbox hands
    // down: a shell's own pipeline and saved-redirection fds would show up otherwise.
    let out = run(&fixture, "fds", "exec ls -l /proc/self/fd").await;
    for line in out.stdout.lines().filter(|l| !l.starts_with("total")) {
        let fd: u32 = line
            .split_whitespace()
            .nth(8)
            .and_then(|fd| fd.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line}"));
        if fd > 2 {
            assert!(
                !line.contains("pipe:") && !line.contains("socket:"),
                "leaked fd: {line}"
            );
            // Only `ls`'s own listing of /proc: no mount source the host opened.
            assert!(line.contains("-> /proc/"), "leaked fd: {line}");
        }
    }
}

#[tokio::test]
async fn limits_are_applied() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let mut spec = fixture.spec(
        "limits",
        "cat /proc/self/limits; echo nofile=$(ulimit -n); bash -c 'echo nproc=$(ulimit -u); echo as=$(ulimit -v)'; \
         dd if=/dev/zero of=/workspace/big bs=1M count=20 2>&1; echo dd=$?",
    );
    spec.limits = Limits {
        max_processes: 100,
        max_memory_bytes: 1024 * 1024 * 1024,
        max_file_bytes: 10 * 1024 * 1024,
        max_open_files: 200,
    };
    let out = run_spec(&spec).await;
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
    assert_eq!(
        limit("Max address space"),
        ("1073741824".into(), "1073741824".into())
    );
    assert_eq!(limit("Max core file size"), ("0".into(), "0".into()));
    // At least 100: the sandbox's uid may run other tasks (other sandboxes) already.
    let nproc: u64 = limit("Max processes").0.parse().expect("nproc number");
    assert!(nproc >= 100, "{nproc}");
    assert!(out.stdout.contains("nofile=200"), "{}", out.stdout);
    assert!(out.stdout.contains("as=1048576"), "{}", out.stdout);
    // Writing past max_file_bytes fails.
    assert!(!out.stdout.contains("dd=0"), "{}", out.stdout);
    let written = std::fs::metadata(fixture.path("work/big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(written <= 10 * 1024 * 1024, "{written}");
}

/// Where the kernel exposes a pids controller we can write to, the per-sandbox cgroup caps the
/// number of tasks even for root (which RLIMIT_NPROC does not limit).
#[tokio::test]
async fn process_limit_is_enforced_by_cgroup_when_root() {
    let v1 = Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !is_root() || !(v1 || v2) {
        eprintln!("skipped: needs root and a pids cgroup");
        return;
    }
    let fixture = Fixture::new("/usr/bin:/bin");
    let mut spec = fixture.spec(
        "pids",
        "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo started",
    );
    spec.limits.max_processes = 10;
    let name = spec.name.clone();
    let process = runtime().spawn(&spec).await.expect("spawn");
    let cgroup_dir = if v2 {
        None
    } else {
        Some(PathBuf::from("/sys/fs/cgroup/pids/nanoclaw").join(&name))
    };
    if let Some(dir) = &cgroup_dir {
        assert!(
            dir.is_dir(),
            "cgroup {} should exist while running",
            dir.display()
        );
    }
    let out = finish(process).await;
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource temporarily unavailable"),
        "expected fork failures past 10 processes; stdout={} stderr={}",
        out.stdout,
        out.stderr
    );
    if let Some(dir) = &cgroup_dir {
        assert!(!dir.exists(), "cleanup should remove {}", dir.display());
    }
}

#[tokio::test]
async fn stdio_is_piped_to_the_agent() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let process = runtime()
        .spawn(&fixture.spec("stdio", "read line; echo \"got:$line\"; echo err >&2"))
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
    assert_eq!(out.code, Some(0));
}

#[tokio::test]
async fn kill_stops_the_sandbox() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let marker = format!("sleep 3{}.5", std::process::id() % 1000);
    let process = runtime()
        .spawn(&fixture.spec("kill", &format!("echo up; {marker}")))
        .await
        .expect("spawn");
    let mut process = process;
    let mut buf = [0u8; 3];
    process
        .stdout
        .read_exact(&mut buf)
        .await
        .expect("sandbox started");
    process.kill().await;
    wait_until_gone(&marker).await;
}

/// Pids of host processes whose command line contains `needle`.
fn processes_matching(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{:?}: {cmdline}", entry.file_name()));
        }
    }
    found
}

async fn wait_until_gone(needle: &str) {
    for _ in 0..200 {
        if processes_matching(needle).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still running: {:?}", processes_matching(needle));
}

const HELPER_ENV: &str = "NANOCLAW_DIE_WITH_PARENT_HELPER";

/// Not a test by itself: the body of the short-lived parent in `dies_with_its_parent`.
#[tokio::test]
#[ignore = "helper process for dies_with_its_parent"]
async fn die_with_parent_helper() {
    let Ok(command) = std::env::var(HELPER_ENV) else {
        return;
    };
    let fixture = Fixture::new("/usr/bin:/bin");
    let mut process = runtime()
        .spawn(&fixture.spec("orphan", &format!("echo up; {command}")))
        .await
        .expect("spawn");
    let mut buf = [0u8; 3];
    process
        .stdout
        .read_exact(&mut buf)
        .await
        .expect("sandbox started");
    println!("READY");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test]
async fn dies_with_its_parent() {
    let marker = format!("sleep 4{}.25", std::process::id() % 1000);
    let exe = std::env::current_exe().expect("test binary");
    let mut helper = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "suite::native::die_with_parent_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, &marker)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn helper");
    let mut stdout = helper.stdout.take().expect("helper stdout");
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 256];
        while !seen.contains("READY") {
            let n = stdout.read(&mut buf).await.expect("read helper");
            assert!(n > 0, "helper exited early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("helper did not start its sandbox");
    assert!(
        !processes_matching(&marker).is_empty(),
        "sandboxed sleep should run"
    );
    helper.start_kill().expect("SIGKILL helper");
    helper.wait().await.expect("reap helper");
    wait_until_gone(&marker).await;
}

/// The attacks of a sandbox on a host running as root (and as anyone): a pipe in
/// `kernel.core_pattern` would run its program as host root; a setuid file it leaves in
/// its folder must not be setuid-root on the host; nothing it creates may belong to root.
/// Returns what failed, so the unprivileged-host variant can report it from a helper.
async fn host_root_attacks() -> Vec<String> {
    let fixture = Fixture::new("/usr/bin:/bin");
    let out = run(
        &fixture,
        "root-attacks",
        // Writing back the current value: harmless if it succeeds (the bug), never changes
        // the host. Then the mount flags of the kernel knobs, then the setuid plant.
        "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern && echo core_pattern=written; \
         grep -E ' /proc/(sys|sysrq-trigger|irq|bus|fs) ' /proc/self/mountinfo; \
         cp /bin/sh /workspace/rootshell && chmod 4755 /workspace/rootshell; \
         mkdir /workspace/made && echo x > /workspace/made/file; echo done",
    )
    .await;
    let mut failures = Vec::new();
    if out.code != Some(0) || !out.stdout.contains("done") {
        failures.push(format!(
            "the sandbox did not run: {} {}",
            out.stdout, out.stderr
        ));
    }
    if out.stdout.contains("core_pattern=written") {
        failures.push("the sandbox wrote /proc/sys/kernel/core_pattern".to_string());
    }
    let mounts: Vec<&str> = out
        .stdout
        .lines()
        .filter(|line| line.contains(" /proc/"))
        .collect();
    // Those this host's kernel has (a host in a container may lack sysrq-trigger).
    for path in ["/proc/sys", "/proc/sysrq-trigger"]
        .into_iter()
        .filter(|path| std::path::Path::new(path).exists())
    {
        let read_only = mounts.iter().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(4) == Some(&path)
                && fields
                    .get(5)
                    .is_some_and(|options| options.split(',').any(|o| o == "ro"))
        });
        if !read_only {
            failures.push(format!("{path} is not a read-only mount: {mounts:?}"));
        }
    }
    use std::os::unix::fs::MetadataExt;
    for name in ["work/rootshell", "work/made", "work/made/file"] {
        match std::fs::symlink_metadata(fixture.path(name)) {
            Ok(meta) if meta.uid() == 0 || meta.gid() == 0 => failures.push(format!(
                "{name} the sandbox created belongs to host {}:{} (mode {:o})",
                meta.uid(),
                meta.gid(),
                meta.mode()
            )),
            Ok(_) => {}
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    failures
}

#[tokio::test]
async fn sandbox_cannot_become_host_root() {
    let failures = host_root_attacks().await;
    assert!(failures.is_empty(), "{failures:#?}");
}

const UNPRIVILEGED_ENV: &str = "NANOCLAW_UNPRIVILEGED_ATTACKS_HELPER";

/// Not a test by itself: `sandbox_cannot_become_host_root` for a host that is an ordinary
/// user, run by `unprivileged_host_is_contained_too` under `setpriv`.
#[tokio::test]
#[ignore = "helper process for unprivileged_host_is_contained_too"]
async fn unprivileged_attacks_helper() {
    if std::env::var_os(UNPRIVILEGED_ENV).is_none() {
        return;
    }
    assert!(!is_root(), "the helper must run as an ordinary user");
    for failure in host_root_attacks().await {
        println!("FAILURE {failure}");
    }
    println!("HELPER DONE");
}

#[tokio::test]
async fn unprivileged_host_is_contained_too() {
    if !is_root() {
        // Already an ordinary user: sandbox_cannot_become_host_root covers it.
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let home = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).expect("chown home");
    let output = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(exe)
        .args([
            "--exact",
            "suite::native::unprivileged_attacks_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(UNPRIVILEGED_ENV, "1")
        .env("HOME", home.path())
        .env("TMPDIR", home.path())
        .output()
        .await
        .expect("run the helper under setpriv");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("HELPER DONE"),
        "helper failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("FAILURE"))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn invalid_specs_are_rejected_before_starting() {
    let fixture = Fixture::new("/usr/bin:/bin");
    let runtime = runtime();
    let mut relative = fixture.spec("bad", "true");
    relative.mounts[0].sandbox_path = "workspace".into();
    let mut missing = fixture.spec("bad", "true");
    missing.mounts[0].host_path = fixture.path("does-not-exist");
    let mut dotdot = fixture.spec("bad", "true");
    dotdot.mounts[1].sandbox_path = "/workspace/../etc".into();
    let mut name = fixture.spec("bad", "true");
    name.name = "a/b".into();
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
}

#[test]
fn detect_reports_a_missing_bwrap_with_a_fix() {
    let error = NativeRuntime::with_bwrap("/nonexistent/bwrap".into()).expect_err("missing bwrap");
    let message = error.to_string();
    assert!(message.contains("native is not usable"), "{message}");
    assert!(message.contains("apt-get install bubblewrap"), "{message}");
}

//! `nanoclaw service …`, `completions` and `man` as a user runs them: a temporary HOME, and
//! either no systemd at all (as in a container) or a stand-in `systemctl` that records what
//! it was asked.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn nanoclaw(home: &Path, bin_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .args(args)
        .env_clear()
        // Only the stand-ins (or nothing) on PATH: the machine's own systemd stays out of it.
        .env("PATH", bin_dir)
        .env("HOME", home)
        .env("NANOCLAW_HOME", home.join("data"))
        .env("USER", "tester")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn unit_path(home: &Path) -> std::path::PathBuf {
    home.join(".config/systemd/user/nanoclaw.service")
}

#[test]
fn without_systemd_install_writes_the_unit_says_so_and_reinstall_and_uninstall_are_clean() {
    let home = tempfile::tempdir().unwrap();
    let empty_bin = tempfile::tempdir().unwrap();
    let (home, bin) = (home.path(), empty_bin.path());

    let out = nanoclaw(home, bin, &["service", "install"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("service manager is not available"), "{said}");
    assert!(said.contains("no systemctl"), "{said}");
    let unit = std::fs::read_to_string(unit_path(home)).unwrap();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_nanoclaw")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart=\"{}\" run\n", exe.display())),
        "{unit}"
    );
    assert!(
        unit.contains(&format!(
            "Environment=\"NANOCLAW_HOME={}\"\n",
            home.join("data").display()
        )),
        "{unit}"
    );
    assert!(unit.contains("Restart=on-failure\n"), "{unit}");
    assert!(unit.contains("RestartSec=5\n"), "{unit}");

    // Again: nothing changes.
    let out = nanoclaw(home, bin, &["service", "install"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("already installed, unchanged"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(unit_path(home)).unwrap(), unit);

    // Starting needs systemd: said plainly, exit 1.
    let out = nanoclaw(home, bin, &["service", "start"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not available here") && text(&out).contains("nanoclaw run"),
        "{}",
        text(&out)
    );

    let out = nanoclaw(home, bin, &["service", "uninstall"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!unit_path(home).exists());
    let out = nanoclaw(home, bin, &["service", "uninstall"]);
    assert!(text(&out).contains("not installed"), "{}", text(&out));
    let out = nanoclaw(home, bin, &["service", "status"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("nanoclaw service install"),
        "{}",
        text(&out)
    );
}

#[test]
fn with_systemd_the_unit_is_reloaded_enabled_started_and_linger_is_explained() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls.txt");
    for (name, body) in [
        (
            "systemctl",
            format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
        ),
        ("loginctl", "#!/bin/sh\necho Linger=no\n".to_owned()),
    ] {
        let path = bin.path().join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (home, bin) = (home.path(), bin.path());
    let recorded = || {
        let all = std::fs::read_to_string(&calls).unwrap_or_default();
        std::fs::remove_file(&calls).ok();
        all.lines().map(str::to_owned).collect::<Vec<_>>()
    };

    let out = nanoclaw(home, bin, &["service", "install"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        recorded(),
        [
            "--user show-environment",
            "--user daemon-reload",
            "--user enable nanoclaw.service",
            "--user start nanoclaw.service",
        ]
    );
    let said = text(&out);
    assert!(
        said.contains("sudo loginctl enable-linger tester"),
        "{said}"
    );
    assert!(said.contains("nanoclaw vault set anthropic"), "{said}");

    for (verb, call) in [
        ("start", "--user start nanoclaw.service"),
        ("stop", "--user stop nanoclaw.service"),
        ("status", "--user status --no-pager nanoclaw.service"),
    ] {
        let out = nanoclaw(home, bin, &["service", verb]);
        assert!(out.status.success(), "{verb}: {}", text(&out));
        assert_eq!(recorded(), ["--user show-environment", call], "{verb}");
    }

    let out = nanoclaw(home, bin, &["service", "uninstall"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        recorded(),
        [
            "--user show-environment",
            "--user disable --now nanoclaw.service",
            "--user daemon-reload",
        ]
    );
    assert!(!unit_path(home).exists());
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let home = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let (home, bin) = (home.path(), bin.path());
    let commands = [
        "run",
        "chat",
        "status",
        "logs",
        "stop",
        "service",
        "doctor",
        "tasks",
        "vault",
        "channel",
        "completions",
    ];
    let out = nanoclaw(home, bin, &["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let bash = String::from_utf8(out.stdout).unwrap();
    assert!(bash.contains("complete -F _nanoclaw"), "{bash}");
    for c in commands {
        assert!(bash.contains(c), "bash completion lacks {c}");
    }
    // Subcommands of subcommands too.
    assert!(bash.contains("uninstall") && bash.contains("approvals"));
    for shell in ["zsh", "fish"] {
        let out = nanoclaw(home, bin, &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("service") && script.contains("logs"),
            "{shell}"
        );
    }
    let out = nanoclaw(home, bin, &["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("bash"),
        "the choices are named: {}",
        text(&out)
    );

    let out = nanoclaw(home, bin, &["man"]);
    assert!(out.status.success(), "{}", text(&out));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH nanoclaw"),
        "{page}"
    );
    assert!(page.contains(".TH nanoclaw 1"), "{page}");
    for c in commands {
        assert!(page.contains(c), "the man page lacks {c}");
    }
    let dir = home.join("man");
    let out = nanoclaw(home, bin, &["man", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for page in [
        "nanoclaw.1",
        "nanoclaw-status.1",
        "nanoclaw-service-install.1",
    ] {
        assert!(dir.join(page).exists(), "{page} written");
    }
}

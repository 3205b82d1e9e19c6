//! `nanoclaw service install|uninstall|status|start|stop`: the host as a systemd user service
//! (Linux) or a launchd agent (macOS). The files come from `nanoclaw_host::service`; this
//! runs `systemctl --user` / `launchctl` and says plainly when they are not available (a
//! container has no systemd).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;
use nanoclaw_host::service::{self, ServiceSpec};

fn user_home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("HOME is not set; the service files live under it"))
}

fn macos() -> bool {
    cfg!(target_os = "macos")
}

/// Where this platform's service file goes.
fn service_file() -> anyhow::Result<PathBuf> {
    let home = user_home()?;
    Ok(if macos() {
        service::launchd_plist_path(&home)
    } else {
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        service::systemd_unit_path(&home, xdg.as_deref())
    })
}

fn spec() -> anyhow::Result<ServiceSpec> {
    let exe = std::env::current_exe().context("finding the nanoclaw executable")?;
    // The real file, not a symlink that a package upgrade might point elsewhere.
    let exe = exe.canonicalize().unwrap_or(exe);
    let nanoclaw_home = std::env::var_os("NANOCLAW_HOME")
        .filter(|v| !v.is_empty())
        .map(|h| {
            let h = PathBuf::from(h);
            // The service starts elsewhere: a relative path would mean another directory.
            std::path::absolute(&h).unwrap_or(h)
        });
    Ok(ServiceSpec { exe, nanoclaw_home })
}

fn service_text(spec: &ServiceSpec) -> anyhow::Result<String> {
    Ok(if macos() {
        service::launchd_plist(spec, &user_home()?.join("Library/Logs/nanoclaw-stderr.log"))
    } else {
        service::systemd_unit(spec)
    })
}

/// Why the service manager cannot be used here, or `None` when it can.
fn manager_missing() -> Option<String> {
    if macos() {
        return match Command::new("launchctl")
            .arg("help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => None,
            Err(e) => Some(format!("launchctl cannot be run ({e})")),
        };
    }
    match Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(
            "there is no systemctl on this machine (a container, or a system without systemd)"
                .into(),
        ),
        Err(e) => Some(format!("systemctl cannot be run ({e})")),
        Ok(out) if !out.status.success() => Some(format!(
            "`systemctl --user` does not work for this user: {} (a container, or no user \
             session: log in on a console or over SSH; see `loginctl enable-linger` below)",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("no answer")
                .trim()
        )),
        Ok(_) => None,
    }
}

/// The service manager's command for `args` (`systemctl --user …` or `launchctl …`).
fn manager(args: &[&str]) -> Command {
    if macos() {
        let mut cmd = Command::new("launchctl");
        cmd.args(args);
        cmd
    } else {
        let mut cmd = Command::new("systemctl");
        cmd.arg("--user").args(args);
        cmd
    }
}

/// Runs the service manager, its output shown; its exit status (1 when it was killed).
fn run_manager(args: &[&str]) -> anyhow::Result<u8> {
    let status = manager(args)
        .status()
        .with_context(|| format!("running the service manager ({})", args.join(" ")))?;
    Ok(status
        .code()
        .map_or(1, |code| u8::try_from(code).unwrap_or(1)))
}

fn launchd_domain() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    format!("gui/{}", unsafe { libc::getuid() })
}

fn launchd_target() -> String {
    format!("{}/{}", launchd_domain(), service::LAUNCHD_LABEL)
}

fn not_available(why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the service manager is not available here: {why}. Run the host in the foreground \
         with `nanoclaw run` (under your own supervisor), or use a machine with {}",
        if macos() { "launchd" } else { "systemd" }
    )
}

/// Whether a host runs on the data dir now, and its pid when known.
fn running_host() -> Option<Option<u32>> {
    let paths = nanoclaw_host::config::Paths::from_env().ok()?;
    nanoclaw_host::host::lock_holder(&paths.host_lock())
}

/// What `loginctl` says about lingering for this user: `Some(true)` when user services
/// outlive the login.
fn lingering() -> Option<bool> {
    let user = std::env::var("USER").ok()?;
    let out = Command::new("loginctl")
        .args(["show-user", &user, "--property=Linger"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.trim() == "Linger=yes")
}

pub async fn install() -> anyhow::Result<ExitCode> {
    let spec = spec()?;
    let file = service_file()?;
    let text = service_text(&spec)?;
    let unchanged = std::fs::read_to_string(&file).is_ok_and(|old| old == text);
    if unchanged {
        println!("{} is already installed, unchanged", file.display());
    } else {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_atomically(&file, &text)?;
        println!("wrote {}", file.display());
    }
    println!("  runs: {} run", spec.exe.display());
    if let Some(home) = &spec.nanoclaw_home {
        println!("  with NANOCLAW_HOME={}", home.display());
    }
    println!(
        "  model keys are not in the service's environment: store them with \
         `nanoclaw vault set anthropic` (or openai)"
    );
    if let Some(why) = manager_missing() {
        eprintln!(
            "note: the service manager is not available here: {why}. The file is written but \
             nothing was enabled or started; `nanoclaw run` runs the host in the foreground."
        );
        return Ok(ExitCode::SUCCESS);
    }
    if macos() {
        // Loading it starts it (RunAtLoad). Loaded already: replace it.
        let _ = manager(&["bootout", &launchd_target()])
            .stderr(Stdio::null())
            .status();
        let file = file.display().to_string();
        let code = run_manager(&["bootstrap", &launchd_domain(), &file])?;
        if code == 0 {
            println!(
                "loaded {}; it starts at login and now",
                service::LAUNCHD_LABEL
            );
        }
        return Ok(ExitCode::from(code));
    }
    for args in [
        &["daemon-reload"][..],
        &["enable", service::SYSTEMD_UNIT][..],
    ] {
        if run_manager(args)? != 0 {
            anyhow::bail!("`systemctl --user {}` failed", args.join(" "));
        }
    }
    println!(
        "enabled {}: it starts with your user session",
        service::SYSTEMD_UNIT
    );
    match running_host() {
        Some(pid) => println!(
            "a host is already running{} outside the service; hand over with \
             `nanoclaw stop && nanoclaw service start`",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
        None => {
            if run_manager(&["start", service::SYSTEMD_UNIT])? != 0 {
                anyhow::bail!(
                    "`systemctl --user start {}` failed; see `nanoclaw service status` and \
                     `nanoclaw logs`",
                    service::SYSTEMD_UNIT
                );
            }
            println!("started {}", service::SYSTEMD_UNIT);
        }
    }
    if lingering() != Some(true) {
        println!(
            "\nsystemd stops a user's services when the user's last session ends (logging out, \
             closing SSH). To keep nanoclaw running without you logged in, let your services \
             linger (once, as an administrator):\n  sudo loginctl enable-linger {}",
            std::env::var("USER").unwrap_or_else(|_| "$USER".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(file: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, file))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", file.display()))
}

pub async fn uninstall() -> anyhow::Result<ExitCode> {
    let file = service_file()?;
    if !file.exists() {
        println!("not installed ({} does not exist)", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let manager_ok = manager_missing().is_none();
    if manager_ok {
        if macos() {
            let _ = manager(&["bootout", &launchd_target()]).status();
        } else {
            // Stops it too; a unit that is not loaded is no error here.
            let _ = manager(&["disable", "--now", service::SYSTEMD_UNIT]).status();
        }
    }
    std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    if manager_ok && !macos() {
        let _ = manager(&["daemon-reload"]).status();
    }
    println!("removed {}", file.display());
    Ok(ExitCode::SUCCESS)
}

/// `start`, `stop` and `status` through the service manager.
pub async fn control(verb: &str) -> anyhow::Result<ExitCode> {
    let file = service_file()?;
    if !file.exists() {
        anyhow::bail!(
            "the service is not installed ({} does not exist); run `nanoclaw service install`",
            file.display()
        );
    }
    if let Some(why) = manager_missing() {
        return Err(not_available(&why));
    }
    let code = if macos() {
        let target = launchd_target();
        match verb {
            "start" => run_manager(&["kickstart", &target])?,
            "stop" => run_manager(&["kill", "SIGTERM", &target])?,
            _ => run_manager(&["print", &target])?,
        }
    } else {
        match verb {
            "status" => run_manager(&["status", "--no-pager", service::SYSTEMD_UNIT])?,
            other => run_manager(&[other, service::SYSTEMD_UNIT])?,
        }
    };
    Ok(ExitCode::from(code))
}

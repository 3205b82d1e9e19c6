//! The master key in the OS keyring: the real `nanoclaw` binary against a real Secret Service
//! (gnome-keyring-daemon on a private D-Bus session bus made by the test).

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A private session bus with gnome-keyring's Secret Service on it, unlocked. Killed on drop.
struct Keyring {
    bus: Child,
    daemon: Option<Child>,
    address: String,
    dir: PathBuf,
}

impl Keyring {
    /// `None` (with a loud note) when the tools are missing outside CI; in CI they must be there.
    fn start(dir: &Path) -> Option<Keyring> {
        let have = |tool: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !(have("dbus-daemon") && have("gnome-keyring-daemon") && have("secret-tool")) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install dbus, gnome-keyring and libsecret-tools (scripts/prerequisites)"
            );
            eprintln!("SKIPPED: dbus-daemon, gnome-keyring-daemon or secret-tool is not installed");
            return None;
        }
        // No service activation on this bus: a stopped keyring stays stopped.
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.join("run").display()
            ),
        )
        .unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        let mut keyring = Keyring {
            bus,
            daemon: None,
            address,
            dir: dir.to_path_buf(),
        };
        let mut daemon = keyring
            .command("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The login keyring's password; it is created unlocked with it.
        let mut stdin = daemon.stdin.take().unwrap();
        stdin.write_all(b"test-login-password").unwrap();
        drop(stdin);
        keyring.daemon = Some(daemon);
        // Ready once the service answers (it registers on the bus shortly after starting).
        for _ in 0..100 {
            let probe = keyring
                .command("secret-tool")
                .args(["search", "probe", "ready"])
                .output()
                .unwrap();
            if probe.status.success() || probe.stderr.is_empty() {
                return Some(keyring);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("gnome-keyring-daemon did not come up on the test bus");
    }

    /// A command on the test bus, with HOME and XDG dirs inside the test directory.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        nanoclaw_test_support::hermetic(cmd.env_clear())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.join("user"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("XDG_DATA_HOME", self.dir.join("user/.local/share"))
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("NO_COLOR", "1");
        cmd
    }

    /// The key the keyring holds for `home`, via libsecret's own tool.
    fn stored_key(&self, home: &Path) -> Option<String> {
        let out = self
            .command("secret-tool")
            .args([
                "lookup",
                "application",
                "nanoclaw",
                "kind",
                "master-key",
                "home",
            ])
            .arg(home)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// Stop the Secret Service (the bus stays): the keyring is gone.
    fn stop_service(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        self.stop_service();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn nanoclaw(keyring: &Keyring, home: &Path, args: &[&str], stdin: &str) -> Output {
    nanoclaw_test_support::output_with_stdin(
        keyring
            .command(env!("CARGO_BIN_EXE_nanoclaw"))
            .args(args)
            .env("NANOCLAW_HOME", home),
        stdin.as_bytes(),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_master_key_lives_in_the_os_keyring_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["user/.local/share", "config", "run"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let Some(mut keyring) = Keyring::start(dir.path()) else {
        return;
    };
    let home = dir.path().join("data");
    let key_file = dir.path().join("config/nanoclaw/master.key");

    // First secret: the new key goes to the keyring, not to a file.
    let out = nanoclaw(
        &keyring,
        &home,
        &["vault", "set", "github"],
        "ghp_keyringtest12345\n",
    );
    assert!(out.status.success(), "vault set failed: {}", text(&out));
    assert!(
        text(&out).contains("OS keyring"),
        "the user is told where the key went: {}",
        text(&out)
    );
    assert!(!key_file.exists(), "no key file when a keyring is there");
    let canonical_home = std::fs::canonicalize(&home).unwrap();
    let stored = keyring
        .stored_key(&canonical_home)
        .expect("the keyring holds the master key for this data dir");
    assert_eq!(stored.trim().len(), 64, "32 bytes as hex");
    assert!(!stored.contains("ghp_keyringtest12345"));

    // A later process finds the same key there: the key check passes and the secret is listed.
    let out = nanoclaw(
        &keyring,
        &home,
        &["vault", "rotate", "github"],
        "ghp_rotated67890abc\n",
    );
    assert!(
        out.status.success(),
        "rotate with the keyring's key: {}",
        text(&out)
    );
    let out = nanoclaw(&keyring, &home, &["doctor", "--json"], "");
    assert!(
        text(&out).contains("from the OS keyring"),
        "doctor names the key's source: {}",
        text(&out)
    );
    assert_eq!(
        keyring.stored_key(&canonical_home).unwrap(),
        stored,
        "never replaced"
    );

    // A second data dir gets its own key.
    let other = dir.path().join("other");
    let out = nanoclaw(
        &keyring,
        &other,
        &["vault", "set", "x"],
        "value-for-other\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let other_key = keyring
        .stored_key(&std::fs::canonicalize(&other).unwrap())
        .unwrap();
    assert_ne!(other_key, stored);

    // The keyring gone: a clear error, and no new key is made in its place.
    keyring.stop_service();
    let out = nanoclaw(
        &keyring,
        &home,
        &["vault", "set", "another"],
        "value-another-1\n",
    );
    assert!(
        !out.status.success(),
        "a sealed vault without its key must fail"
    );
    assert!(
        text(&out).contains("no master key") && text(&out).contains("keyring"),
        "the error names the keyring: {}",
        text(&out)
    );
    assert!(!key_file.exists(), "no key file made over a sealed vault");
}

#[test]
fn nanoclaw_keyring_off_keeps_the_key_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["user/.local/share", "config", "run"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let Some(keyring) = Keyring::start(dir.path()) else {
        return;
    };
    let home = dir.path().join("data");
    let mut cmd = keyring.command(env!("CARGO_BIN_EXE_nanoclaw"));
    let mut child = cmd
        .args(["vault", "set", "github"])
        .env("NANOCLAW_HOME", &home)
        .env("NANOCLAW_KEYRING", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ghp_filekeytest12345\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("config/nanoclaw/master.key").exists());
    std::fs::create_dir_all(&home).unwrap();
    assert!(
        keyring
            .stored_key(&std::fs::canonicalize(&home).unwrap())
            .is_none()
    );
}

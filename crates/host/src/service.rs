//! Running the host as a service of the user's session: the systemd user unit (Linux) and
//! the launchd agent (macOS) that `nanoclaw service install` writes. Both run `nanoclaw run`
//! from the binary that installed them, restart it when it fails (not when it was stopped:
//! `nanoclaw stop` and SIGTERM end it with status 0), and pass `NANOCLAW_HOME` on when it
//! was set. No secret ever goes into these files.

use std::path::{Path, PathBuf};

/// The systemd unit's name.
pub const SYSTEMD_UNIT: &str = "nanoclaw.service";
/// The launchd job's label (and the plist's file name without `.plist`).
pub const LAUNCHD_LABEL: &str = "nanoclaw.host";
/// Seconds before a failed host is started again.
pub const RESTART_SEC: u32 = 5;

/// What a service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The nanoclaw binary.
    pub exe: PathBuf,
    /// `NANOCLAW_HOME`, when the installing shell had it set.
    pub nanoclaw_home: Option<PathBuf>,
}

/// `~/.config/systemd/user/nanoclaw.service` (under `$XDG_CONFIG_HOME` when set).
pub fn systemd_unit_path(home: &Path, xdg_config_home: Option<&Path>) -> PathBuf {
    xdg_config_home
        .filter(|p| p.is_absolute())
        .map_or_else(|| home.join(".config"), Path::to_path_buf)
        .join("systemd/user")
        .join(SYSTEMD_UNIT)
}

/// `~/Library/LaunchAgents/nanoclaw.host.plist`.
pub fn launchd_plist_path(home: &Path) -> PathBuf {
    home.join("Library/LaunchAgents")
        .join(format!("{LAUNCHD_LABEL}.plist"))
}

/// One argument or assignment for a unit file: double-quoted, with `\` and `"` escaped, and
/// `%` and `$` doubled so systemd expands neither specifiers nor variables in it.
pub fn systemd_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The systemd user unit.
pub fn systemd_unit(spec: &ServiceSpec) -> String {
    let environment = spec
        .nanoclaw_home
        .as_ref()
        .map(|home| {
            format!(
                "Environment={}\n",
                systemd_quote(&format!("NANOCLAW_HOME={}", home.display()))
            )
        })
        .unwrap_or_default();
    format!(
        "# Written by `nanoclaw service install`; `nanoclaw service uninstall` removes it.\n\
         # Model keys are not set here: store them with `nanoclaw vault set anthropic` (or openai).\n\
         [Unit]\n\
         Description=nanoclaw personal assistant (host)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         # A host that keeps failing to start is left stopped after 5 tries in 5 minutes.\n\
         StartLimitIntervalSec=300\n\
         StartLimitBurst=5\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} run\n\
         {environment}\
         # Started again when it fails; `nanoclaw stop` and SIGTERM end it cleanly (status 0).\n\
         Restart=on-failure\n\
         RestartSec={RESTART_SEC}\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=60\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exe = systemd_quote(&spec.exe.display().to_string()),
    )
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The launchd agent: `nanoclaw run` at login, started again when it exits with a failure
/// (`KeepAlive` / `SuccessfulExit` false); its stderr goes to `stderr_log`.
pub fn launchd_plist(spec: &ServiceSpec, stderr_log: &Path) -> String {
    let environment = spec
        .nanoclaw_home
        .as_ref()
        .map(|home| {
            format!(
                "  <key>EnvironmentVariables</key>\n  <dict>\n    <key>NANOCLAW_HOME</key>\n    <string>{}</string>\n  </dict>\n",
                xml_escape(&home.display().to_string())
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `nanoclaw service install`; `nanoclaw service uninstall` removes it. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{exe}</string>
    <string>run</string>
  </array>
{environment}  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>{RESTART_SEC}</integer>
  <key>StandardErrorPath</key>
  <string>{stderr}</string>
</dict>
</plist>
"#,
        exe = xml_escape(&spec.exe.display().to_string()),
        stderr = xml_escape(&stderr_log.display().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_this_binary_restarts_on_failure_and_quotes_what_systemd_would_expand() {
        let spec = ServiceSpec {
            exe: "/opt/my tools/nanoclaw".into(),
            nanoclaw_home: Some("/srv/100% \"claw\"/$data".into()),
        };
        let unit = systemd_unit(&spec);
        assert!(
            unit.contains("ExecStart=\"/opt/my tools/nanoclaw\" run\n"),
            "{unit}"
        );
        assert!(
            unit.contains("Environment=\"NANOCLAW_HOME=/srv/100%% \\\"claw\\\"/$$data\"\n"),
            "{unit}"
        );
        assert!(unit.contains("Restart=on-failure\n"));
        assert!(unit.contains("RestartSec=5\n"));
        assert!(unit.contains("WantedBy=default.target\n"));
        let plain = systemd_unit(&ServiceSpec {
            exe: "/usr/bin/nanoclaw".into(),
            nanoclaw_home: None,
        });
        assert!(!plain.contains("Environment="), "{plain}");
    }

    #[test]
    fn the_plist_keeps_the_host_alive_after_failures_and_escapes_paths() {
        let spec = ServiceSpec {
            exe: "/Users/me/bin/nano&claw".into(),
            nanoclaw_home: Some("/Users/me/<data>".into()),
        };
        let plist = launchd_plist(&spec, Path::new("/Users/me/Library/Logs/nanoclaw.log"));
        assert!(plist.contains("<string>nanoclaw.host</string>"));
        assert!(
            plist
                .contains("<string>/Users/me/bin/nano&amp;claw</string>\n    <string>run</string>"),
            "{plist}"
        );
        assert!(
            plist.contains("<key>NANOCLAW_HOME</key>\n    <string>/Users/me/&lt;data&gt;</string>"),
            "{plist}"
        );
        assert!(
            plist.contains(
                "<key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>"
            ),
            "{plist}"
        );
        assert!(plist.contains("<key>RunAtLoad</key>\n  <true/>"));
        // Well-formed enough for a plist reader: every dict and array closes.
        assert_eq!(
            plist.matches("<dict>").count(),
            plist.matches("</dict>").count()
        );
        assert_eq!(
            plist.matches("<array>").count(),
            plist.matches("</array>").count()
        );
        let without = launchd_plist(
            &ServiceSpec {
                exe: "/usr/local/bin/nanoclaw".into(),
                nanoclaw_home: None,
            },
            Path::new("/tmp/x.log"),
        );
        assert!(!without.contains("EnvironmentVariables"));
    }

    #[test]
    fn unit_paths_follow_xdg_config_home_when_it_is_absolute() {
        let home = Path::new("/home/me");
        assert_eq!(
            systemd_unit_path(home, None),
            Path::new("/home/me/.config/systemd/user/nanoclaw.service")
        );
        assert_eq!(
            systemd_unit_path(home, Some(Path::new("/cfg"))),
            Path::new("/cfg/systemd/user/nanoclaw.service")
        );
        assert_eq!(
            systemd_unit_path(home, Some(Path::new("relative"))),
            Path::new("/home/me/.config/systemd/user/nanoclaw.service")
        );
        assert_eq!(
            launchd_plist_path(home),
            Path::new("/home/me/Library/LaunchAgents/nanoclaw.host.plist")
        );
    }
}

//! A scheduled task's pre-check script: a cheap bash check that decides whether the model
//! is called at all, so polling every few minutes spends no tokens.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::format::truncate_chars;
use crate::tools::{Capture, run_shell, shell, signal};

/// How long a pre-check may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// stdout kept (its end, where the verdict line is).
const STDOUT_BYTES: usize = 1024 * 1024;
/// stderr kept for the error message (its end, where the cause usually is).
const STDERR_BYTES: usize = 64 * 1024;
/// stderr characters quoted in a failure.
const STDERR_QUOTE_CHARS: usize = 500;
/// Characters of a bad verdict line quoted in a failure.
const LINE_QUOTE_CHARS: usize = 200;

/// The shape the last stdout line must have, quoted in errors. Kept on one line so
/// brace-counting tools are not fooled by a string broken over lines.
const VERDICT_SHAPE: &str = "{\"wakeAgent\": true|false, \"data\": …}";

/// What the script decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub wake: bool,
    /// Handed to the model when woken; `null` when the script gave none.
    pub data: Value,
}

/// Why a pre-check gave no verdict. The message says what happened, with the exit status and
/// the end of stderr when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PrecheckError(String);

/// The verdict line's shape: `{"wakeAgent": bool, "data": any}`.
#[derive(Deserialize)]
struct Line {
    #[serde(rename = "wakeAgent")]
    wake_agent: bool,
    #[serde(default)]
    data: Value,
}

/// Runs `script` with the shell in `workspace` (same environment as the bash tool) and reads
/// its verdict from the last non-empty stdout line.
pub async fn run(script: &str, workspace: &Path) -> Result<Verdict, PrecheckError> {
    run_within(script, workspace, TIMEOUT).await
}

async fn run_within(
    script: &str,
    workspace: &Path,
    timeout: Duration,
) -> Result<Verdict, PrecheckError> {
    let stdout = Capture::new(0, STDOUT_BYTES);
    let stderr = Capture::new(0, STDERR_BYTES);
    let exit = run_shell(script, workspace, timeout, &stdout, &stderr)
        .await
        .map_err(|e| {
            PrecheckError(format!(
                "could not start {} in {}: {e}",
                shell(),
                workspace.display()
            ))
        })?;
    let stderr = stderr_note(&stderr.text());
    if exit.timed_out {
        return Err(PrecheckError(format!(
            "it ran longer than {} s and was killed{stderr}",
            timeout.as_secs()
        )));
    }
    let status = match exit.status {
        Some(s) if s.success() => "exit status 0",
        Some(s) => {
            let why = match s.code() {
                Some(code) => format!("it exited with status {code}"),
                None => format!("it was killed by signal {}", signal(s)),
            };
            return Err(PrecheckError(format!("{why}{stderr}")));
        }
        None => return Err(PrecheckError(format!("its exit status is unknown{stderr}"))),
    };
    parse_verdict(&stdout.text()).map_err(|why| PrecheckError(format!("{why} ({status}){stderr}")))
}

/// The verdict in the last non-empty line of `stdout`.
fn parse_verdict(stdout: &str) -> Result<Verdict, String> {
    let Some(last) = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return Err(format!(
            "it printed nothing on stdout; its last line must be {VERDICT_SHAPE}"
        ));
    };
    match serde_json::from_str::<Line>(last) {
        Ok(line) => Ok(Verdict {
            wake: line.wake_agent,
            data: line.data,
        }),
        Err(e) => Err(format!(
            "its last stdout line is not {VERDICT_SHAPE} ({e}): {:?}",
            truncate_chars(last, LINE_QUOTE_CHARS)
        )),
    }
}

/// `; stderr: …` with the end of `stderr`, or nothing when it is empty.
fn stderr_note(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        return String::new();
    }
    let total = stderr.chars().count();
    let end: String = if total > STDERR_QUOTE_CHARS {
        let tail: String = stderr.chars().skip(total - STDERR_QUOTE_CHARS).collect();
        format!("…{tail}")
    } else {
        stderr.to_owned()
    };
    format!("; stderr: {end}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_non_empty_line_decides() {
        let v = parse_verdict(
            "checking…\n{\"wakeAgent\": false}\n{\"wakeAgent\": true, \"data\": {\"n\": 3}}\n\n  \n",
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict {
                wake: true,
                data: json!({"n": 3})
            }
        );
        let v = parse_verdict("{\"wakeAgent\": false}").unwrap();
        assert_eq!(
            v,
            Verdict {
                wake: false,
                data: Value::Null
            }
        );
    }

    #[test]
    fn a_line_of_another_shape_is_refused_and_quoted() {
        for bad in [
            "{\"wakeAgent\": \"yes\"}",
            "{\"wake\": true}",
            "{\"wakeAgent\": true}\ndone",
            "true",
        ] {
            let err = parse_verdict(bad).unwrap_err();
            assert!(err.contains("last stdout line is not"), "{bad}: {err}");
        }
        let err = parse_verdict("{\"wakeAgent\": true}\ndone").unwrap_err();
        assert!(err.contains("\"done\""), "{err}");
        assert!(
            parse_verdict("\n \n")
                .unwrap_err()
                .contains("printed nothing")
        );
    }

    #[test]
    fn only_the_end_of_stderr_is_quoted() {
        assert_eq!(stderr_note(" \n"), "");
        assert_eq!(stderr_note("oops\n"), "; stderr: oops");
        let long = format!("{}END", "x".repeat(2000));
        let note = stderr_note(&long);
        assert!(note.ends_with("xEND"), "{note}");
        assert!(note.chars().count() < 520, "{}", note.chars().count());
    }

    #[tokio::test]
    async fn runs_in_the_workspace_and_reports_failures_with_status_and_stderr() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::write(ws.path().join("count"), "3").unwrap();
        let v = run(
            "echo \"{\\\"wakeAgent\\\": true, \\\"data\\\": $(cat count)}\"",
            ws.path(),
        )
        .await
        .unwrap();
        assert_eq!(v.data, json!(3));

        let err = run("echo 'no token' >&2; exit 3", ws.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("status 3"), "{err}");
        assert!(err.contains("no token"), "{err}");

        let err = run("echo hello", ws.path()).await.unwrap_err().to_string();
        assert!(
            err.contains("\"hello\"") && err.contains("status 0"),
            "{err}"
        );

        let err = run_within(
            "echo '{\"wakeAgent\": true}'; echo stuck >&2; sleep 300",
            ws.path(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("longer than 1 s"), "{err}");
        assert!(err.contains("stuck"), "{err}");
    }
}

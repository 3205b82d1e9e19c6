//! `bash`: runs a shell command in the workspace.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{Tool, ToolContext, ToolOutput, parse_input, str_field};
use crate::format::truncate_chars;
use crate::provider::ToolSpec;

pub struct BashTool;

pub(crate) const DEFAULT_TIMEOUT_SECS: u64 = 120;
const MAX_TIMEOUT_SECS: u64 = 600;
/// Output kept for the model: this many bytes from the start and as many from the end.
pub(crate) const HEAD_BYTES: usize = 15_000;
pub(crate) const TAIL_BYTES: usize = 15_000;
/// After the shell exits, how long to wait for background processes that still hold
/// the output pipes before returning without their output.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct Input {
    command: String,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

#[async_trait]
impl Tool for BashTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "bash".into(),
            description: format!(
                "Run a shell command with /bin/bash -c in the workspace directory. stdout and \
                 stderr are returned together with the exit code; long output is cut in the \
                 middle. The command is killed (with all its child processes) after \
                 timeout_secs (default {DEFAULT_TIMEOUT_SECS}, max {MAX_TIMEOUT_SECS}). Network \
                 access goes through the host's proxy (HTTP_PROXY is set): only the hosts the \
                 owner allowed for this group answer; others get a 403 naming the rule."
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command line to run."},
                    "timeout_secs": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_TIMEOUT_SECS,
                        "description": "Seconds before the command is killed."
                    }
                },
                "required": ["command"]
            }),
        }
    }

    fn summary(&self, input: &Value) -> String {
        let cmd = str_field(input, "command");
        let first = cmd.lines().next().unwrap_or("");
        let more = if cmd.lines().nth(1).is_some() {
            " …"
        } else {
            ""
        };
        truncate_chars(&format!("{first}{more}"), super::SUMMARY_CHARS)
    }

    async fn run(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let input: Input = match parse_input("bash", input) {
            Ok(i) => i,
            Err(e) => return e,
        };
        if input.command.trim().is_empty() {
            return ToolOutput::error("invalid input for bash: `command` is empty");
        }
        let secs = input
            .timeout_secs
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
            .clamp(1, MAX_TIMEOUT_SECS);
        run_command(&input.command, &ctx.workspace, Duration::from_secs(secs)).await
    }
}

/// The shell commands run with: bash, or sh where a minimal image lacks it.
pub(crate) fn shell() -> &'static str {
    if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

async fn run_command(command: &str, cwd: &Path, timeout: Duration) -> ToolOutput {
    // One buffer for both streams, so the model sees them interleaved as a terminal would.
    let output = Capture::new(HEAD_BYTES, TAIL_BYTES);
    let exit = match run_shell(command, cwd, timeout, &output, &output).await {
        Ok(exit) => exit,
        Err(e) => {
            return ToolOutput::error(format!(
                "could not start {} in {}: {e}",
                shell(),
                cwd.display()
            ));
        }
    };

    let mut text = output.text();
    if text.is_empty() {
        text.push_str("(no output)");
    }
    if exit.detached {
        text.push_str(
            "\n[background processes still hold the output open; their later output is not shown]",
        );
    }
    if exit.timed_out {
        text.push_str(&format!(
            "\n[timed out after {} s; the command and all its child processes were killed]",
            timeout.as_secs()
        ));
        return ToolOutput::error(text);
    }
    match exit.status {
        Some(s) if s.success() => {
            text.push_str("\n[exit code: 0]");
            ToolOutput::ok(text)
        }
        Some(s) => {
            match s.code() {
                Some(code) => text.push_str(&format!("\n[exit code: {code}]")),
                None => text.push_str(&format!("\n[killed by signal {}]", signal(s))),
            }
            ToolOutput::error(text)
        }
        None => {
            text.push_str("\n[exit status unknown]");
            ToolOutput::error(text)
        }
    }
}

/// The signal that ended a process (0 when it was not a signal).
pub(crate) fn signal(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

/// How a shell command ended.
#[derive(Debug)]
pub(crate) struct ShellExit {
    /// `None` when the exit status could not be read.
    pub status: Option<ExitStatus>,
    /// The command ran past its timeout and was killed with its whole process group.
    pub timed_out: bool,
    /// Background processes still held the output pipes after the shell exited; what they
    /// write later is not captured.
    pub detached: bool,
}

/// Runs `command` with the shell in `cwd`, inheriting this process's environment (so the
/// egress proxy variables reach it), with stdin closed, stdout and stderr captured into
/// `stdout` and `stderr` (which may be the same capture), killed with everything it started
/// after `timeout`. Errors only when the shell cannot be started.
pub(crate) async fn run_shell(
    command: &str,
    cwd: &Path,
    timeout: Duration,
    stdout: &Capture,
    stderr: &Capture,
) -> std::io::Result<ShellExit> {
    let mut cmd = Command::new(shell());
    cmd.arg("-c").arg(command).current_dir(cwd);
    run_captured(cmd, None, timeout, stdout, stderr).await
}

/// Runs `cmd` as [`run_shell`] runs the shell, with `input` written to its stdin (closed
/// when `None`). A program that exits without reading all of `input` is not an error.
pub(crate) async fn run_captured(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    stdout: &Capture,
    stderr: &Capture,
) -> std::io::Result<ShellExit> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Own process group, so a timeout can kill everything the command started.
    .process_group(0)
    .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // EPIPE when the program does not read its input: that is its business.
            let _ = pipe.write_all(&input).await;
            let _ = pipe.shutdown().await;
        });
    }
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(out, stdout.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, stderr.clone())));
    }

    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            if let Some(pgid) = pgid {
                kill_group(pgid);
            }
            let _ = child.kill().await;
            (child.wait().await.ok(), true)
        }
    };

    // Background processes may keep the pipes open after the shell exits.
    let mut detached = false;
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
            abort.abort();
            detached = true;
        }
    }
    Ok(ShellExit {
        status,
        timed_out,
        detached,
    })
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory involved.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        tracing::debug!(pgid, error = %std::io::Error::last_os_error(), "killing the process group failed");
    }
}

/// Copies everything `from` yields into `into` until end of file or an error.
pub(crate) async fn pump<R: AsyncRead + Unpin>(mut from: R, into: Capture) {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => into.push(&buf[..n]),
        }
    }
}

/// A command's output kept in bounded memory: the first `head` and the last `tail` bytes
/// of a stream of any length. Clones share one buffer.
#[derive(Clone)]
pub(crate) struct Capture(Arc<Mutex<HeadTail>>);

impl Capture {
    pub(crate) fn new(head: usize, tail: usize) -> Self {
        Self(Arc::new(Mutex::new(HeadTail {
            head_max: head,
            tail_max: tail,
            ..HeadTail::default()
        })))
    }

    pub(crate) fn push(&self, bytes: &[u8]) {
        match self.0.lock() {
            Ok(mut c) => c.push(bytes),
            Err(e) => e.into_inner().push(bytes),
        }
    }

    /// What was kept, lossily decoded, with a note where the middle was cut.
    pub(crate) fn text(&self) -> String {
        self.0
            .lock()
            .map(|c| c.render())
            .unwrap_or_else(|e| e.into_inner().render())
    }
}

#[derive(Default)]
struct HeadTail {
    head_max: usize,
    tail_max: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
}

impl HeadTail {
    fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len();
        let room = self.head_max - self.head.len();
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.tail.extend(bytes);
        if self.tail.len() > self.tail_max {
            let excess = self.tail.len() - self.tail_max;
            self.tail.drain(..excess);
        }
    }

    fn render(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail = String::from_utf8_lossy(&tail);
        let cut = self.total - self.head.len() - self.tail.len();
        if cut == 0 {
            format!("{head}{tail}")
        } else {
            format!("{head}\n\n[… {cut} bytes of output cut …]\n\n{tail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_util::ctx;

    #[tokio::test]
    async fn runs_in_the_workspace_and_reports_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here.txt"), "x").unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = BashTool
            .run(json!({"command": "ls; echo oops >&2; exit 3"}), &ctx)
            .await;
        assert!(out.is_error);
        assert!(out.content.contains("here.txt"), "{}", out.content);
        assert!(out.content.contains("oops"), "{}", out.content);
        assert!(out.content.contains("[exit code: 3]"), "{}", out.content);

        let ok = BashTool.run(json!({"command": "echo hi"}), &ctx).await;
        assert!(!ok.is_error);
        assert_eq!(ok.content, "hi\n\n[exit code: 0]");
    }

    #[tokio::test]
    async fn timeout_kills_the_command_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = BashTool
            .run(
                json!({"command": "sleep 300 & echo $! > child.pid; sleep 300", "timeout_secs": 1}),
                &ctx,
            )
            .await;
        assert!(out.is_error);
        assert!(
            out.content.contains("timed out after 1 s"),
            "{}",
            out.content
        );
        let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background child must be dead (gone, or a zombie awaiting its reaper).
        let mut alive = true;
        for _ in 0..100 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => alive = false,
                Ok(stat) => {
                    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                    alive = !state.starts_with('Z');
                }
            }
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!alive, "background child {pid} survived the timeout");
    }

    #[tokio::test]
    async fn long_output_keeps_head_and_tail_and_says_what_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = ctx(dir.path());
        let out = BashTool
            .run(json!({"command": "echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END"}), &ctx)
            .await;
        assert!(!out.is_error, "{}", &out.content[..200]);
        assert!(out.content.starts_with("START\n"));
        assert!(out.content.contains("END\n\n[exit code: 0]"));
        assert!(out.content.contains("bytes of output cut"));
        assert!(out.content.len() < 31_000, "{}", out.content.len());
    }

    #[test]
    fn summary_is_the_first_line_of_the_command() {
        assert_eq!(
            BashTool.summary(&json!({"command": "uname -sr\necho hi"})),
            "uname -sr …"
        );
    }
}

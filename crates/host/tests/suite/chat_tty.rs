//! `nanoclaw chat` on a real pseudo-terminal (util-linux `script` gives it one): a bracketed
//! paste of two lines is one message, `/help` is answered without the model, the history file
//! is private, Ctrl-C during a reply stops it on the host, and `/quit` leaves.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::*;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use serde_json::json;

/// `nanoclaw chat` behind a pseudo-terminal, and everything it printed so far.
struct Tty {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    /// How much of `out` was searched for terminal queries already.
    answered: usize,
}

impl Tty {
    /// `styled`: without `NO_COLOR`, so spinner and styles are drawn.
    fn start(home: &std::path::Path, styled: bool) -> Option<Tty> {
        if Command::new("script").arg("--version").output().is_err() {
            eprintln!("skipped: no `script` (util-linux) to make a pseudo-terminal");
            return None;
        }
        // `exec`: no shell in between to take the Ctrl-C as its own.
        let chat = format!("exec {} chat", env!("CARGO_BIN_EXE_nanoclaw"));
        let mut command = Command::new("script");
        command
            .args(["-q", "-e", "-f", "-c", &chat, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("NANOCLAW_HOME", home)
            .env("TERM", "xterm");
        if !styled {
            command.env("NO_COLOR", "1");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting script");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Some(Tty {
            child,
            stdin,
            out,
            answered: 0,
        })
    }

    fn send(&mut self, bytes: &str) {
        self.stdin.write_all(bytes.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Answers the editor's cursor-position queries (no terminal emulator does here).
    fn answer_queries(&mut self) {
        let out = self.out.lock().unwrap().clone();
        let queries = out[self.answered..].matches("\x1b[6n").count();
        self.answered = out.len();
        for _ in 0..queries {
            self.send("\x1b[1;1R");
        }
    }

    /// Waits until the output after `from` contains `needle`; returns where the match ends.
    fn wait_for(&mut self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.answer_queries();
            {
                let out = self.out.lock().unwrap();
                if let Some(at) = out.get(from..).and_then(|rest| rest.find(needle)) {
                    return from + at + needle.len();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the terminal; it shows:\n{}",
                self.out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_paste_is_one_message_help_is_local_and_ctrl_c_stops_the_reply() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("tool finished: {{last_tool_result}}"),
        )
        .rule(
            Matcher::LastUserTextContains("slow".into()),
            Reply::text("").with_tool_call(
                "bash",
                json!({"command": "sleep 4 && touch /workspace/group/finished"}),
            ),
        )
        .rule(Matcher::Always, Reply::text("echo: {{last_user_text}}"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let home_path = home.path().to_path_buf();
    let model_ref = &model;
    let finished = home.path().join("groups/main/finished");

    let terminal = tokio::task::spawn_blocking(move || {
        let mut tty = Tty::start(&home_path, false)?;
        let at = tty.wait_for(0, "/help for commands");
        // A bracketed paste of two lines, then Enter: one message.
        tty.send("\x1b[200~line one\nline two\x1b[201~");
        tty.send("\r");
        let at = tty.wait_for(at, "echo:");
        tty.send("/help\r");
        let at = tty.wait_for(at, "/pause, /resume");
        tty.send("a slow job\r");
        let at = tty.wait_for(at, "[bash]");
        tty.send("\x03");
        let at = tty.wait_for(at, "stopping the reply");
        let at = tty.wait_for(at, "Stopped 1 running turn");
        tty.send("/quit\r");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            tty.answer_queries();
            if let Some(status) = tty.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "/quit did not leave");
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = at;
        let shown = tty.out.lock().unwrap().clone();
        Some((status.success(), shown))
    })
    .await
    .unwrap();
    let Some((left_cleanly, shown)) = terminal else {
        host.shutdown().await;
        return;
    };
    assert!(left_cleanly, "nanoclaw chat exited with an error:\n{shown}");
    // The paste reached the model as one message with both lines; /help never did.
    let bodies: Vec<String> = model_ref
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("line one\\nline two")),
        "{bodies:?}"
    );
    assert!(!bodies.iter().any(|b| b.contains("/help")), "{bodies:?}");
    // Ctrl-C stopped the slow tool in its sandbox.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!finished.exists(), "the tool ran on after Ctrl-C");
    // The history is private and has the pasted message.
    let history = home.path().join("chat-history");
    let mode = std::fs::metadata(&history).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("line one"), "{kept}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_spinner_turns_until_the_reply_which_is_drawn_as_markdown() {
    let home = TestHome::new();
    let scenario = Scenario::new().with_api_key(TEST_KEY).rule(
        Matcher::Always,
        Reply::text("## Plan\n- **first** step\n- run `ls`"),
    );
    let model = ScriptedModel::start(scenario).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let home_path = home.path().to_path_buf();
    let shown = tokio::task::spawn_blocking(move || {
        let mut tty = Tty::start(&home_path, true)?;
        let at = tty.wait_for(0, "/help for commands");
        tty.send("make a plan\r");
        // The last line, once drawn styled (it shows raw until the reply is complete).
        tty.wait_for(at, "run \x1b[36mls");
        tty.send("\x04");
        let shown = tty.out.lock().unwrap().clone();
        Some(shown)
    })
    .await
    .unwrap();
    let Some(shown) = shown else {
        host.shutdown().await;
        return;
    };
    assert!(shown.contains("thinking…"), "no spinner:\n{shown}");
    // The heading bold, the list drawn with bullets and its emphasis and code styled.
    assert!(shown.contains("\x1b[1mPlan\x1b[0m"), "{shown:?}");
    assert!(shown.contains("• \x1b[1mfirst\x1b[0m step"), "{shown:?}");
    assert!(shown.contains("• run \x1b[36mls\x1b[0m"), "{shown:?}");
    assert!(
        !shown.contains("**first**\r\n"),
        "raw markdown left on screen: {shown:?}"
    );
    host.shutdown().await;
}

//! `nanoclaw setup` as a new user runs it: a key typed (here: piped) is verified with the
//! provider before the vault keeps it, a rejected one is never stored, a second run checks
//! rather than repeats, and a key from the environment is moved into the vault.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use super::common::*;
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};

/// `nanoclaw setup --json` on `home` with `stdin` piped in; (exit code, report).
async fn setup(
    home: &Path,
    model: &ScriptedModel,
    env_key: Option<&str>,
    stdin: &str,
) -> (i32, serde_json::Value, Output) {
    let mut cmd = nanoclaw_command(home, model, env_key, &["setup", "--json"]);
    // The runtime pinned, also where setup writes a fresh config (which says "auto").
    cmd.env("NANOCLAW_RUNTIME", "native");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "setup --json printed no report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report, out)
}

fn status_of<'a>(report: &'a serde_json::Value, step: &str) -> (&'a str, &'a str) {
    let s = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no step {step}: {report}"));
    (s["status"].as_str().unwrap(), s["detail"].as_str().unwrap())
}

/// Every file under `dir`, read as bytes: whether any holds `needle`.
fn any_file_holds(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            any_file_holds(&path, needle)
        } else {
            std::fs::read(&path)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        }
    })
}

#[tokio::test]
async fn setup_verifies_a_typed_key_before_keeping_it_and_a_second_run_checks_instead_of_asking() {
    let home = TestHome::new();
    // The runtime pinned (a fresh config says "auto"): this test is about the key.
    std::fs::write(home.path().join("config.toml"), NATIVE_CONFIG_TOML).unwrap();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();

    // A wrong key: the provider refuses it, so it is not kept.
    let (code, report, _) = setup(home.path(), &model, None, "sk-wrong-key\n").await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["ready"], false);
    let (status, detail) = status_of(&report, "model key");
    assert_eq!(status, "failed", "{detail}");
    assert!(
        detail.contains("rejected the key") && detail.contains("not stored"),
        "{detail}"
    );
    assert_eq!(status_of(&report, "config").0, "ok");
    assert_eq!(status_of(&report, "database").0, "fixed");
    assert_eq!(status_of(&report, "runtime"), ("ok", "native ready"));
    assert_eq!(status_of(&report, "service").0, "skipped");
    assert!(!any_file_holds(home.path(), "sk-wrong-key"));

    // The right key: verified with a real call, then kept in the vault, never in plain text.
    let (code, report, _) = setup(home.path(), &model, None, &format!("{TEST_KEY}\n")).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ready"], true);
    let (status, detail) = status_of(&report, "model key");
    assert_eq!(status, "fixed", "{detail}");
    assert!(
        detail.contains("key accepted") && detail.contains("in the vault as `anthropic`"),
        "{detail}"
    );
    assert_eq!(status_of(&report, "database").0, "ok");
    assert!(
        !any_file_holds(home.path(), TEST_KEY),
        "the key is on disk in plain text"
    );
    // Each key was checked with the provider once (besides asking whether the server, given
    // by its base URL alone, needs a key at all).
    let keys: Vec<Option<String>> = model
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/v1/models"))
        .map(|r| r.header("x-api-key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        [
            None,
            Some("sk-wrong-key".into()),
            None,
            Some(TEST_KEY.into())
        ]
    );

    // Again, nothing typed: the vault's key is checked, not asked for.
    let (code, report, _) = setup(home.path(), &model, None, "").await;
    assert_eq!(code, 0, "{report}");
    let (status, detail) = status_of(&report, "model key");
    assert_eq!(status, "ok", "{detail}");
    assert!(detail.starts_with("in the vault; "), "{detail}");
}

#[tokio::test]
async fn setup_moves_the_environments_key_into_the_vault_for_the_service() {
    let home = TestHome::new();
    std::fs::write(home.path().join("config.toml"), NATIVE_CONFIG_TOML).unwrap();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let (code, report, _) = setup(home.path(), &model, Some(TEST_KEY), "").await;
    assert_eq!(code, 0, "{report}");
    let (status, detail) = status_of(&report, "model key");
    assert_eq!(status, "fixed", "{detail}");
    assert!(detail.contains("stored from your environment"), "{detail}");
    // Without the environment now (as under systemd): the vault has it.
    let (code, report, _) = setup(home.path(), &model, None, "").await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(status_of(&report, "model key").0, "ok");
}

#[tokio::test]
async fn setup_writes_what_is_missing_and_a_second_run_repairs_what_went_missing() {
    let home = TestHome::new();
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let config = home.path().join("config.toml");
    let (code, report, _) = setup(home.path(), &model, Some(TEST_KEY), "").await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(status_of(&report, "config").0, "fixed");
    assert_eq!(status_of(&report, "database").0, "fixed");
    assert_eq!(status_of(&report, "model key").0, "fixed");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("[model]"),
        "the commented config: {written}"
    );

    // The config is lost: the next run writes it again and leaves the rest as it is.
    std::fs::remove_file(&config).unwrap();
    let (code, report, _) = setup(home.path(), &model, None, "").await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(status_of(&report, "config").0, "fixed");
    assert_eq!(status_of(&report, "database").0, "ok");
    assert_eq!(status_of(&report, "model key").0, "ok");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
}

//! `nanoclaw vault …` as a user runs it: the real binary, a temporary NANOCLAW_HOME and key.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nanoclaw_store::{Store, rusqlite};
use nanoclaw_vault::{Audit, AuditEntry, Decision};

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SECRET: &str = "sk-ant-e2e-Zq8v3LkP0wYt";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn home(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn db(&self) -> PathBuf {
        self.home().join("nanoclaw.db")
    }
    fn cmd(&self, args: &[&str], key: Option<&str>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
        nanoclaw_test_support::hermetic(cmd.args(args).env_clear())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("user"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("NANOCLAW_HOME", self.home())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(k) = key {
            cmd.env("NANOCLAW_MASTER_KEY", k);
        }
        cmd
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args, Some(KEY_HEX)).output().unwrap()
    }
    fn run_with_stdin(&self, args: &[&str], stdin: &str, key: Option<&str>) -> Output {
        nanoclaw_test_support::output_with_stdin(&mut self.cmd(args, key), stdin.as_bytes())
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}

#[test]
fn set_from_stdin_list_never_shows_the_value_and_rotate_keeps_the_old_version_retired() {
    let env = Env::new();
    ok(&env.run_with_stdin(
        &["vault", "set", "anthropic"],
        &format!("{SECRET}\n"),
        Some(KEY_HEX),
    ));
    let out = ok(&env.run(&["vault", "list"]));
    assert!(out.contains("anthropic") && out.contains("v1"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    let json = ok(&env.run(&["vault", "list", "--json"]));
    assert!(!json.contains(SECRET), "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed[0]["current_version"], 1);

    ok(&env.run_with_stdin(
        &["vault", "rotate", "anthropic"],
        "sk-ant-rotated-value",
        Some(KEY_HEX),
    ));
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["vault", "list", "--json"]))).unwrap();
    assert_eq!(listed[0]["current_version"], 2);
    assert_eq!(listed[0]["retired_versions"], serde_json::json!([1]));

    // At rest only ciphertext: not in the database file nor its WAL.
    for f in ["nanoclaw.db", "nanoclaw.db-wal"] {
        assert!(
            !file_contains(&env.home().join(f), SECRET),
            "{f} holds the secret"
        );
        assert!(
            !file_contains(&env.home().join(f), "sk-ant-rotated-value"),
            "{f}"
        );
    }
    ok(&env.run(&["vault", "rm", "anthropic"]));
    assert!(ok(&env.run(&["vault", "list"])).contains("no secrets"));
}

#[test]
fn a_value_on_the_command_line_is_refused_with_a_pointer_to_stdin() {
    let env = Env::new();
    let out = env.run(&["vault", "set", "anthropic", SECRET]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("never taken from the command line") && err.contains("stdin"),
        "{err}"
    );
    assert!(ok(&env.run(&["vault", "list"])).contains("no secrets"));
    // Nor an empty stdin.
    let out = env.run_with_stdin(&["vault", "set", "anthropic"], "", Some(KEY_HEX));
    assert!(!out.status.success() && text(&out.stderr).contains("no value given"));
}

#[test]
fn the_key_file_is_made_on_first_set_and_a_wrong_key_changes_nothing() {
    let env = Env::new();
    // No NANOCLAW_MASTER_KEY: a key file appears under XDG_CONFIG_HOME, outside the data dir.
    ok(&env.run_with_stdin(&["vault", "set", "gh"], "ghp_filekeyvalue", None));
    let key_file = env.dir.path().join("config/nanoclaw/master.key");
    assert!(key_file.exists());

    let wrong = "ff".repeat(32);
    let out = env.run_with_stdin(&["vault", "set", "other"], "value-other", Some(&wrong));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("does not match the one that encrypted this vault")
            && err.contains("NANOCLAW_MASTER_KEY")
            && err.contains(&key_file.display().to_string()),
        "{err}"
    );
    let out = env.run_with_stdin(&["vault", "rotate", "gh"], "value-other", Some(&wrong));
    assert!(!out.status.success());
    // The file-key vault still lists exactly one secret at version 1.
    let out = env
        .cmd(&["vault", "list", "--json"], None)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["current_version"], 1);

    // The key file lost: a clear error, and no new key is made over the sealed vault.
    std::fs::remove_file(&key_file).unwrap();
    let out = env.run_with_stdin(&["vault", "set", "other"], "value-other", None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no master key"),
        "{}",
        text(&out.stderr)
    );
    assert!(!key_file.exists());
}

#[test]
fn grants_are_validated_and_listed() {
    let env = Env::new();
    ok(&env.run_with_stdin(
        &["vault", "set", "openai"],
        "sk-openai-value",
        Some(KEY_HEX),
    ));
    for (host, inject, want) in [
        (
            "api.openai.com",
            "header:Authorization: Bearer",
            "{secret} exactly once",
        ),
        (
            "api.openai.com",
            "header:bad header: {secret}",
            "not an HTTP token",
        ),
        (
            "api.openai.com",
            "cookie:x",
            "must start with 'header:' or 'query:'",
        ),
        (
            "https://api.openai.com",
            "query:key",
            "not a valid host name",
        ),
        ("*.com", "query:key", "top-level domain"),
    ] {
        let out = env.run(&[
            "vault", "grant", "openai", "--group", "main", "--host", host, "--inject", inject,
        ]);
        assert!(!out.status.success(), "{host} {inject}");
        assert!(
            text(&out.stderr).contains(want),
            "{host} {inject}: {}",
            text(&out.stderr)
        );
    }
    let out = env.run(&[
        "vault", "grant", "nope", "--group", "main", "--host", "a.com", "--inject", "query:k",
    ]);
    assert!(text(&out.stderr).contains("no secret named \"nope\""));
    ok(&env.run(&[
        "vault",
        "grant",
        "openai",
        "--group",
        "main",
        "--host",
        "api.openai.com",
        "--path",
        "/v1",
        "--inject",
        "header:Authorization: Bearer {secret}",
        "--approval",
    ]));
    let out = ok(&env.run(&["vault", "list"]));
    assert!(
        out.contains("main -> api.openai.com/v1") && out.contains("needs approval"),
        "{out}"
    );
    ok(&env.run(&["vault", "revoke", "openai", "--group", "main"]));
    assert!(ok(&env.run(&["vault", "list"])).contains("no grants"));
    assert!(
        !env.run(&["vault", "revoke", "openai", "--group", "main"])
            .status
            .success()
    );
}

#[tokio::test]
async fn audit_rows_are_shown_verified_and_a_tampered_row_is_named() {
    let env = Env::new();
    // Create the database the way the CLI does, then record as the proxy would.
    ok(&env.run(&["vault", "verify"]));
    let store = Store::open(&env.db()).unwrap();
    let audit = Audit::new(store.clone());
    for (i, (group, decision)) in [
        ("main", Decision::Inject),
        ("work", Decision::Deny),
        ("main", Decision::Allow),
    ]
    .into_iter()
    .enumerate()
    {
        audit
            .record(AuditEntry {
                at: None,
                group_folder: group.into(),
                method: "POST".into(),
                host: "api.example.com".into(),
                path: format!("/v1/{i}"),
                status: Some(if decision == Decision::Deny { 403 } else { 200 }),
                bytes_up: 12,
                bytes_down: 34,
                secret_name: (decision == Decision::Inject).then(|| "example".into()),
                decision,
                reason: "test".into(),
            })
            .await
            .unwrap();
    }
    drop(audit);
    store.close();

    let out = ok(&env.run(&["vault", "audit", "--group", "main", "--json"]));
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["decision"], "inject");
    assert_eq!(rows[0]["secret_name"], "example");
    let out = ok(&env.run(&["vault", "audit"]));
    assert!(out.contains("deny") && out.contains("/v1/1"), "{out}");
    assert!(ok(&env.run(&["vault", "verify"])).contains("intact: 3 rows"));

    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.execute("UPDATE audit SET decision = 'allow' WHERE id = 2", [])
        .unwrap();
    drop(conn);
    let out = env.run(&["vault", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("row 2"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn audit_follow_prints_rows_recorded_after_it_started() {
    use std::io::BufRead;
    let env = Env::new();
    ok(&env.run(&["vault", "verify"]));
    let mut child = env
        .cmd(&["vault", "audit", "--follow", "--json"], Some(KEY_HEX))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let store = Store::open(&env.db()).unwrap();
    Audit::new(store)
        .record(AuditEntry {
            at: None,
            group_folder: "main".into(),
            method: "CONNECT".into(),
            host: "evil.example".into(),
            path: String::new(),
            status: Some(403),
            bytes_up: 0,
            bytes_down: 0,
            secret_name: None,
            decision: Decision::Deny,
            reason: "not in the allow list".into(),
        })
        .await
        .unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let row: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(row["host"], "evil.example");
    assert_eq!(row["decision"], "deny");
}

#[test]
fn limit_and_approvals_from_the_command_line() {
    let env = Env::new();
    ok(&env.run_with_stdin(
        &["vault", "set", "gh"],
        "ghp_CLIapproval123456",
        Some(KEY_HEX),
    ));
    ok(&env.run(&[
        "vault",
        "grant",
        "gh",
        "--group",
        "main",
        "--host",
        "api.github.com",
        "--inject",
        "header:Authorization: Bearer {secret}",
        "--approval",
    ]));
    ok(&env.run(&["vault", "limit", "gh", "--per-minute", "5"]));
    let out = ok(&env.run(&["vault", "list"]));
    assert!(
        out.contains("at most 5/min") && out.contains("#1 group main"),
        "{out}"
    );
    assert!(
        !env.run(&["vault", "limit", "nope", "--per-minute", "1"])
            .status
            .success()
    );
    assert!(ok(&env.run(&["vault", "approvals"])).contains("no approvals"));
    let out = ok(&env.run(&["vault", "approve", "1"]));
    assert!(
        out.contains("grant #1") && out.contains("approved"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["vault", "approvals", "--json"]))).unwrap();
    assert_eq!(json[0]["grant_id"], 1);
    assert_eq!(json[0]["state"], "approved");
    assert_eq!(json[0]["secret_name"], "gh");
    ok(&env.run(&["vault", "deny", "1"]));
    assert!(ok(&env.run(&["vault", "approvals"])).contains("denied"));
    assert!(!env.run(&["vault", "approve", "99"]).status.success());
    // No limit again.
    ok(&env.run(&["vault", "limit", "gh", "--per-minute", "0"]));
    assert!(!ok(&env.run(&["vault", "list"])).contains("/min"));
}

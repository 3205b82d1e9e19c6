//! `nanoclaw group mount …` as a user runs it: the allowlist decides, the reasons are shown.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nanoclaw_store::{NewGroup, Store};
use nanoclaw_test_support::TestHome;

struct Setup {
    home: TestHome,
    /// Holds the allowlist; outside the data dir, like ~/.config/nanoclaw.
    config: tempfile::TempDir,
    /// Folders to mount.
    world: PathBuf,
    _world: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let home = TestHome::new();
        // Create the database without a model: the groups a running host would create.
        let store = Store::open(&home.path().join("nanoclaw.db")).unwrap();
        for (folder, is_main) in [("main", true), ("work", false)] {
            store
                .ensure_group(NewGroup {
                    name: folder.into(),
                    folder: folder.into(),
                    is_main,
                    ..NewGroup::default()
                })
                .await
                .unwrap();
        }
        drop(store);
        let world_dir = tempfile::tempdir().unwrap();
        let world = std::fs::canonicalize(world_dir.path()).unwrap();
        for d in ["projects/site", "projects/docs", "private/.ssh"] {
            std::fs::create_dir_all(world.join(d)).unwrap();
        }
        Setup {
            home,
            config: tempfile::tempdir().unwrap(),
            world,
            _world: world_dir,
        }
    }

    fn allowlist(&self) -> PathBuf {
        self.config.path().join("mount-allowlist.toml")
    }

    fn write_allowlist(&self, toml: &str) {
        std::fs::write(self.allowlist(), toml).unwrap();
    }

    fn w(&self, rel: &str) -> String {
        self.world.join(rel).display().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
        nanoclaw_test_support::hermetic(cmd.args(args).env_clear())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("NANOCLAW_HOME", self.home.path())
            .env("NANOCLAW_MOUNT_ALLOWLIST", self.allowlist())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

fn listing(s: &Setup, folder: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&s.run(&["group", "mount", "list", folder, "--json"]))).unwrap()
}

#[tokio::test]
async fn without_an_allowlist_nothing_is_mounted_and_the_error_says_where_to_create_it() {
    let s = Setup::new().await;
    let err = fails(&s.run(&["group", "mount", "add", "main", &s.w("projects/site")]));
    assert!(
        err.contains(&s.allowlist().display().to_string()) && err.contains("create it"),
        "{err}"
    );
    assert_eq!(listing(&s, "main"), serde_json::json!([]));
}

#[tokio::test]
async fn an_allowed_folder_is_added_listed_with_its_verdict_and_removed() {
    let s = Setup::new().await;
    s.write_allowlist(&format!(
        "# test allowlist\n[[allow]]\npath = {:?}\nread_write = true\n",
        s.w("projects")
    ));
    let out = ok(&s.run(&[
        "group",
        "mount",
        "add",
        "main",
        &s.w("projects/site"),
        "--rw",
    ]));
    assert!(
        out.contains("/workspace/extra/site") && out.contains("read-write"),
        "{out}"
    );
    let list = listing(&s, "main");
    assert_eq!(list[0]["name"], "site");
    assert_eq!(list[0]["verdict"], "ok");
    assert_eq!(list[0]["writable"], true);
    assert_eq!(list[0]["resolved"], s.w("projects/site"));
    assert_eq!(list[0]["sandbox_path"], "/workspace/extra/site");

    // Names are unique per group, and the error says how to replace one.
    let err = fails(&s.run(&[
        "group",
        "mount",
        "add",
        "main",
        &s.w("projects/docs"),
        "--name",
        "site",
    ]));
    assert!(err.contains("already has a mount named \"site\""), "{err}");
    assert!(err.contains("nanoclaw group mount rm main site"), "{err}");

    // The owner revokes the folder in the allowlist: the stored request now shows as refused.
    s.write_allowlist("[[allow]]\npath = \"/nonexistent-folder\"\n");
    let list = listing(&s, "main");
    assert_eq!(list[0]["verdict"], "rejected");
    let reason = list[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not under any allowed folder in"),
        "{reason}"
    );
    let human = ok(&s.run(&["group", "mount", "list", "main"]));
    assert!(
        human.contains("site") && human.contains("REFUSED"),
        "{human}"
    );

    ok(&s.run(&["group", "mount", "rm", "main", "site"]));
    assert_eq!(listing(&s, "main"), serde_json::json!([]));
    let err = fails(&s.run(&["group", "mount", "rm", "main", "site"]));
    assert!(err.contains("no mount named \"site\""), "{err}");
}

#[tokio::test]
async fn refused_folders_are_not_stored_and_the_rule_is_named() {
    let s = Setup::new().await;
    s.write_allowlist(&format!("[[allow]]\npath = {:?}\n", s.w("")));
    let err = fails(&s.run(&["group", "mount", "add", "main", &s.w("private/.ssh")]));
    assert!(
        err.contains("blocked by the built-in pattern \".ssh\""),
        "{err}"
    );
    // The folder holding .ssh would expose it.
    let err = fails(&s.run(&["group", "mount", "add", "main", &s.w("private")]));
    assert!(err.contains("contains") && err.contains(".ssh"), "{err}");
    // The data dir (here also $HOME) is never mountable.
    let data = s.home.path().display().to_string();
    let err = fails(&s.run(&["group", "mount", "add", "main", &data, "--name", "data"]));
    assert!(err.contains("data dir"), "{err}");
    // A symlink into a secret is judged by where it leads.
    std::os::unix::fs::symlink(s.world.join("private/.ssh"), s.world.join("projects/keys"))
        .unwrap();
    let err = fails(&s.run(&["group", "mount", "add", "main", &s.w("projects/keys")]));
    assert!(err.contains("resolves to") && err.contains(".ssh"), "{err}");
    // Bad names never reach the sandbox path.
    let err = fails(&s.run(&[
        "group",
        "mount",
        "add",
        "main",
        &s.w("projects/site"),
        "--name",
        "../x",
    ]));
    assert!(err.contains("mount name"), "{err}");
    assert_eq!(listing(&s, "main"), serde_json::json!([]));
}

#[tokio::test]
async fn other_groups_get_read_only_unless_the_allowlist_lists_them() {
    let s = Setup::new().await;
    s.write_allowlist(&format!(
        "[[allow]]\npath = {:?}\nread_write = true\n",
        s.w("projects")
    ));
    let out = ok(&s.run(&[
        "group",
        "mount",
        "add",
        "work",
        &s.w("projects/site"),
        "--rw",
    ]));
    assert!(out.contains("read-only") && out.contains("note:"), "{out}");
    assert_eq!(listing(&s, "work")[0]["writable"], false);

    s.write_allowlist(&format!(
        "[[allow]]\npath = {:?}\nread_write = true\ngroups = [\"work\"]\n",
        s.w("projects")
    ));
    assert_eq!(listing(&s, "work")[0]["writable"], true);
    // An entry for other groups does not cover main.
    let err = fails(&s.run(&["group", "mount", "add", "main", &s.w("projects/docs")]));
    assert!(err.contains("limited to other groups"), "{err}");
}

#[tokio::test]
async fn an_invalid_allowlist_is_a_clear_error() {
    let s = Setup::new().await;
    s.write_allowlist("[[allow]]\npath = ");
    let err = fails(&s.run(&["group", "mount", "add", "main", &s.w("projects/site")]));
    assert!(
        err.contains("not valid TOML") && err.contains(&s.allowlist().display().to_string()),
        "{err}"
    );
    assert!(Path::new(&s.allowlist()).exists());
}

use super::rules::{component_names, glob_match, matches_sequence};
use super::*;
use std::os::unix::fs::symlink;

/// A scratch world: `allowlist/` (holds the file), `data/` (the data dir), `home/` and `srv/`.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        for d in [
            "allowlist",
            "data",
            "home/projects/site",
            "home/.ssh",
            "srv/shared",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        World { _tmp: tmp, root }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }
    fn file(&self) -> PathBuf {
        self.p("allowlist/mount-allowlist.toml")
    }
    fn policy(&self, toml: &str) -> MountPolicy {
        MountPolicy::parse(&self.file(), toml, Some(self.p("home"))).unwrap()
    }
    #[allow(clippy::result_large_err)]
    fn check(
        &self,
        policy: &MountPolicy,
        group: &Group,
        path: &str,
        rw: bool,
    ) -> Result<ApprovedMount, MountRejection> {
        policy.check(group, &req("extra", path, rw), &self.p("data"))
    }
}

fn group(folder: &str, is_main: bool) -> Group {
    Group {
        id: format!("grp-{folder}"),
        name: folder.into(),
        folder: folder.into(),
        trigger: "@Andy".into(),
        is_main,
        provider: None,
        model: None,
        created_at: 0,
        timezone: None,
    }
}

fn req(name: &str, path: &str, rw: bool) -> GroupMount {
    GroupMount {
        group_id: "grp".into(),
        name: name.into(),
        host_path: path.into(),
        read_write: rw,
        created_at: 0,
    }
}

fn projects_rw() -> &'static str {
    "[[allow]]\npath = \"~/projects\"\nread_write = true\n"
}

#[test]
fn a_folder_under_an_allowed_one_is_mounted_at_workspace_extra() {
    let w = World::new();
    let policy = w.policy(projects_rw());
    let main = group("main", true);
    let ok = w.check(&policy, &main, "~/projects/site", true).unwrap();
    assert_eq!(ok.host_path, w.p("home/projects/site"));
    assert_eq!(ok.sandbox_path, Path::new("/workspace/extra/extra"));
    assert!(ok.writable && ok.notes.is_empty());
    // Asking for read-only gets read-only even where read-write is allowed.
    let ok = w
        .check(&policy, &main, &w.s("home/projects/site"), false)
        .unwrap();
    assert!(!ok.writable);
}

#[test]
fn a_missing_allowlist_denies_everything_and_names_the_file() {
    let w = World::new();
    let policy = MountPolicy::load_from(&w.file()).unwrap();
    assert!(!policy.exists());
    let err = w
        .check(
            &policy,
            &group("main", true),
            &w.s("home/projects/site"),
            false,
        )
        .unwrap_err();
    assert!(matches!(err.reason, RejectReason::NoAllowlist { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&w.file().display().to_string()) && msg.contains("create it"),
        "{msg}"
    );
}

#[test]
fn invalid_allowlists_are_clear_errors() {
    let w = World::new();
    std::fs::write(w.file(), "[[allow]\npath = 3").unwrap();
    let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
    assert!(
        err.contains("not valid TOML") && err.contains("mount-allowlist.toml"),
        "{err}"
    );

    std::fs::write(w.file(), "[[allow]]\npath = \"/srv\"\nreadwrite = true\n").unwrap();
    let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
    assert!(err.contains("readwrite"), "the typo is named: {err}");

    std::fs::write(w.file(), "[[allow]]\npath = \"projects\"\n").unwrap();
    let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
    assert!(err.contains("must be absolute or start with ~/"), "{err}");

    std::fs::write(w.file(), "[[allow]]\npath = \"/srv\"\ngroups = []\n").unwrap();
    let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
    assert!(err.contains("groups = []"), "{err}");

    std::fs::write(w.file(), "blocked = [\"a/../b\"]\n").unwrap();
    let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
    assert!(err.contains("a/../b"), "{err}");

    // An unusable allowlist refuses every mount, quoting why.
    let policy = MountPolicy::unusable(w.file(), "bad TOML at line 1");
    let err = w
        .check(&policy, &group("main", true), &w.s("srv/shared"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be used") && err.contains("bad TOML at line 1"),
        "{err}"
    );
}

#[test]
fn a_world_writable_allowlist_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    std::fs::write(w.file(), projects_rw()).unwrap();
    std::fs::set_permissions(w.file(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = MountPolicy::load_from(&w.file()).unwrap_err();
    assert!(
        matches!(err, MountPolicyError::WorldWritable { .. }),
        "{err}"
    );
    std::fs::set_permissions(w.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    MountPolicy::load_from(&w.file()).unwrap();
}

#[test]
fn a_folder_outside_every_allowed_one_is_refused_with_the_file_named() {
    let w = World::new();
    let policy = w.policy(projects_rw());
    let err = w
        .check(&policy, &group("main", true), &w.s("srv/shared"), false)
        .unwrap_err();
    assert!(matches!(err.reason, RejectReason::NotAllowed { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{:?}: not under any allowed folder in {}",
            w.s("srv/shared"),
            w.file().display()
        )
    );
}

#[test]
fn builtin_blocked_names_refuse_the_folder_and_its_subfolders() {
    let w = World::new();
    std::fs::create_dir_all(w.p("home/.ssh/keys")).unwrap();
    std::fs::create_dir_all(w.p("home/.config/gcloud/x")).unwrap();
    std::fs::create_dir_all(w.p("home/projects/Site.PEM")).unwrap();
    let policy = w.policy("[[allow]]\npath = \"~\"\n");
    let main = group("main", true);
    for (path, pattern) in [
        ("~/.ssh", ".ssh"),
        ("~/.ssh/keys", ".ssh"),
        ("~/.config/gcloud/x", ".config/gcloud"),
        ("~/projects/Site.PEM", "*.pem"),
    ] {
        let err = w.check(&policy, &main, path, false).unwrap_err();
        assert_eq!(
            err.reason,
            RejectReason::Blocked {
                origin: Origin::BuiltIn(BUILTIN_BLOCKED.iter().find(|p| **p == pattern).unwrap()),
                hit: Hit::Path
            },
            "{path}"
        );
        assert!(
            err.to_string()
                .ends_with(&format!("blocked by the built-in pattern {pattern:?}")),
            "{err}"
        );
    }
}

#[test]
fn a_symlink_inside_an_allowed_folder_pointing_at_a_secret_is_refused() {
    let w = World::new();
    std::fs::create_dir_all(w.p("outside/.ssh")).unwrap();
    std::fs::create_dir_all(w.p("outside/plain")).unwrap();
    symlink(w.p("outside/.ssh"), w.p("home/projects/keys")).unwrap();
    symlink(w.p("outside/plain"), w.p("home/projects/plain")).unwrap();
    let policy = w.policy(projects_rw());
    let main = group("main", true);
    let err = w
        .check(&policy, &main, "~/projects/keys", false)
        .unwrap_err();
    assert_eq!(err.resolved.as_deref(), Some(w.p("outside/.ssh").as_path()));
    assert!(
        err.to_string()
            .contains("blocked by the built-in pattern \".ssh\""),
        "{err}"
    );
    // A harmless target outside is still outside every allowed folder.
    let err = w
        .check(&policy, &main, "~/projects/plain", false)
        .unwrap_err();
    assert!(
        matches!(err.reason, RejectReason::NotAllowed { .. }),
        "{err}"
    );
}

#[test]
fn a_path_through_a_symlink_into_an_allowed_folder_mounts_the_resolved_path() {
    let w = World::new();
    symlink(w.p("home/projects/site"), w.p("srv/alias")).unwrap();
    let policy = w.policy(projects_rw());
    let ok = w
        .check(&policy, &group("main", true), &w.s("srv/alias"), true)
        .unwrap();
    assert_eq!(ok.host_path, w.p("home/projects/site"));

    // Re-checking after the link is swapped follows the new target (spawn re-validates).
    std::fs::remove_file(w.p("srv/alias")).unwrap();
    symlink(w.p("home/.ssh"), w.p("srv/alias")).unwrap();
    let err = w
        .check(&policy, &group("main", true), &w.s("srv/alias"), true)
        .unwrap_err();
    assert!(err.to_string().contains(".ssh"), "{err}");
}

#[test]
fn dot_dot_tricks_are_resolved_before_checking() {
    let w = World::new();
    let policy = w.policy(projects_rw());
    let main = group("main", true);
    let err = w
        .check(&policy, &main, "~/projects/site/../../.ssh", false)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("blocked by the built-in pattern \".ssh\""),
        "{err}"
    );
    let err = w
        .check(&policy, &main, "~/projects/../../srv/shared", false)
        .unwrap_err();
    assert!(
        matches!(err.reason, RejectReason::NotAllowed { .. }),
        "{err}"
    );
    let ok = w
        .check(&policy, &main, "~/projects/site/../site/.", false)
        .unwrap();
    assert_eq!(ok.host_path, w.p("home/projects/site"));
    // Relative paths never reach the filesystem check.
    let err = w.check(&policy, &main, "projects/site", false).unwrap_err();
    assert_eq!(err.reason, RejectReason::NotAbsolute);
}

#[test]
fn a_folder_holding_a_secret_within_the_scan_depth_is_refused() {
    let w = World::new();
    std::fs::create_dir_all(w.p("home/projects/app/config")).unwrap();
    std::fs::write(w.p("home/projects/app/config/.env"), "KEY=1").unwrap();
    let policy = w.policy(projects_rw());
    let err = w
        .check(&policy, &group("main", true), "~/projects/app", false)
        .unwrap_err();
    assert_eq!(
        err.reason,
        RejectReason::Blocked {
            origin: Origin::BuiltIn(".env"),
            hit: Hit::Contains(w.p("home/projects/app/config/.env")),
        }
    );
    // The folder holding the secret's parent is refused too; a sibling without it is fine.
    assert!(
        w.check(&policy, &group("main", true), "~/projects", false)
            .is_err()
    );
    w.check(&policy, &group("main", true), "~/projects/site", false)
        .unwrap();

    // Deeper than the scan depth is not searched (documented limit).
    std::fs::create_dir_all(w.p("home/projects/site/a/b/c")).unwrap();
    std::fs::write(w.p("home/projects/site/a/b/c/id_rsa"), "k").unwrap();
    w.check(&policy, &group("main", true), "~/projects/site", false)
        .unwrap();
    std::fs::write(w.p("home/projects/site/a/b/id_rsa"), "k").unwrap();
    assert!(
        w.check(&policy, &group("main", true), "~/projects/site", false)
            .is_err()
    );
}

#[test]
fn a_folder_holding_a_unix_socket_is_refused() {
    let w = World::new();
    let sock = w.p("home/projects/site/daemon");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let policy = w.policy(projects_rw());
    let err = w
        .check(&policy, &group("main", true), "~/projects/site", false)
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::ContainsSocket(sock));
}

#[test]
fn the_data_dir_and_the_allowlist_folder_can_neither_be_mounted_nor_exposed() {
    let w = World::new();
    std::fs::create_dir_all(w.p("data/groups/main")).unwrap();
    let policy = w.policy(&format!("[[allow]]\npath = {:?}\n", w.s("")));
    let main = group("main", true);
    let err = w
        .check(&policy, &main, &w.s("data/groups/main"), false)
        .unwrap_err();
    assert!(
        matches!(
            &err.reason,
            RejectReason::Blocked {
                origin: Origin::DataDir,
                hit: Hit::Inside(_)
            }
        ),
        "{err}"
    );
    let err = w
        .check(&policy, &main, &w.s("allowlist"), false)
        .unwrap_err();
    assert_eq!(
        err.reason,
        RejectReason::Blocked {
            origin: Origin::AllowlistDir,
            hit: Hit::Is(w.p("allowlist")),
        }
    );
    // The common ancestor would expose both.
    let err = w.check(&policy, &main, &w.s(""), false).unwrap_err();
    assert!(
        matches!(
            &err.reason,
            RejectReason::Blocked {
                hit: Hit::Exposes(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("would expose"), "{err}");
    // System folders are refused whatever the allowlist says.
    let policy = w.policy("[[allow]]\npath = \"/\"\n");
    let err = w.check(&policy, &main, "/etc", false).unwrap_err();
    assert!(
        err.to_string().contains("built-in pattern \"/etc\""),
        "{err}"
    );
}

#[test]
fn an_allowlist_inside_the_data_dir_refuses_every_mount() {
    let w = World::new();
    let policy = MountPolicy::parse(
        &w.p("data/groups/main/mount-allowlist.toml"),
        projects_rw(),
        Some(w.p("home")),
    )
    .unwrap();
    let err = w
        .check(&policy, &group("main", true), "~/projects/site", false)
        .unwrap_err();
    assert!(
        matches!(err.reason, RejectReason::AllowlistInDataDir { .. }),
        "{err}"
    );
}

#[test]
fn allowlist_blocked_patterns_add_to_the_builtin_ones() {
    let w = World::new();
    std::fs::create_dir_all(w.p("home/projects/Secrets")).unwrap();
    std::fs::create_dir_all(w.p("home/projects/vault")).unwrap();
    let policy = w.policy(&format!(
        "blocked = [\"secrets\", \"~/projects/vault\"]\n{}",
        projects_rw()
    ));
    let main = group("main", true);
    let err = w
        .check(&policy, &main, "~/projects/Secrets", false)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("blocked by the pattern \"secrets\" in"),
        "{err}"
    );
    let err = w
        .check(&policy, &main, "~/projects/vault", false)
        .unwrap_err();
    assert!(
        matches!(
            &err.reason,
            RejectReason::Blocked {
                hit: Hit::Is(_),
                ..
            }
        ),
        "{err}"
    );
    let err = w.check(&policy, &main, "~/projects", false).unwrap_err();
    assert!(
        err.to_string().contains("Secrets") || err.to_string().contains("vault"),
        "{err}"
    );
}

#[test]
fn read_write_is_downgraded_for_other_groups_unless_listed() {
    let w = World::new();
    let rw_for_all = w.policy(projects_rw());
    let work = group("work", false);
    let ok = w
        .check(&rw_for_all, &work, "~/projects/site", true)
        .unwrap();
    assert!(!ok.writable, "non-main needs to be listed for read-write");
    assert!(ok.notes[0].contains("read-only"), "{:?}", ok.notes);

    let listed = w.policy(
        "[[allow]]\npath = \"~/projects\"\nread_write = true\ngroups = [\"main\", \"work\"]\n",
    );
    assert!(
        w.check(&listed, &work, "~/projects/site", true)
            .unwrap()
            .writable
    );
    assert!(
        w.check(&listed, &group("main", true), "~/projects/site", true)
            .unwrap()
            .writable
    );

    let read_only = w.policy("[[allow]]\npath = \"~/projects\"\n");
    let ok = w
        .check(&read_only, &group("main", true), "~/projects/site", true)
        .unwrap();
    assert!(!ok.writable);
    assert!(ok.notes[0].contains("not read_write"), "{:?}", ok.notes);
}

#[test]
fn an_entry_limited_to_other_groups_does_not_apply() {
    let w = World::new();
    let policy = w.policy(
        "[[allow]]\npath = \"~/projects\"\ngroups = [\"main\"]\n\
             [[allow]]\npath = \"~/projects/site\"\ngroups = [\"family\"]\n",
    );
    let err = w
        .check(&policy, &group("work", false), "~/projects/site", false)
        .unwrap_err();
    assert!(
        matches!(err.reason, RejectReason::NotForGroup { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("other groups than \"work\""),
        "{err}"
    );
    w.check(&policy, &group("family", false), "~/projects/site", false)
        .unwrap();
    w.check(&policy, &group("main", true), "~/projects/site", false)
        .unwrap();
}

#[test]
fn the_most_specific_allowed_folder_decides() {
    let w = World::new();
    let policy = w.policy(
        "[[allow]]\npath = \"~/projects\"\nread_write = true\n\
             [[allow]]\npath = \"~/projects/site\"\n",
    );
    let main = group("main", true);
    assert!(
        !w.check(&policy, &main, "~/projects/site", true)
            .unwrap()
            .writable
    );
}

#[test]
fn bad_names_and_non_directories_are_refused() {
    let w = World::new();
    std::fs::write(w.p("home/projects/notes.txt"), "x").unwrap();
    let policy = w.policy(projects_rw());
    let main = group("main", true);
    for bad in ["..", "a/b", "a:b", ".x", "", "a..b"] {
        let err = policy
            .check(&main, &req(bad, "~/projects/site", false), &w.p("data"))
            .unwrap_err();
        assert!(
            matches!(err.reason, RejectReason::InvalidName(_)),
            "{bad:?}: {err}"
        );
    }
    let err = w
        .check(&policy, &main, "~/projects/notes.txt", false)
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::NotADirectory);
    let err = w
        .check(&policy, &main, "~/projects/nope", false)
        .unwrap_err();
    assert!(matches!(err.reason, RejectReason::Unresolvable(_)), "{err}");
}

#[test]
fn resolve_group_mounts_splits_what_passes_from_what_does_not() {
    let w = World::new();
    let policy = w.policy(projects_rw());
    let requested = [
        req("site", "~/projects/site", true),
        req("keys", "~/.ssh", false),
    ];
    let (mounts, rejected) =
        resolve_group_mounts(&policy, &group("main", true), &requested, &w.p("data"));
    assert_eq!(
        mounts,
        [Mount {
            host_path: w.p("home/projects/site"),
            sandbox_path: "/workspace/extra/site".into(),
            writable: true,
        }]
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].name, "keys");
}

#[test]
fn the_example_allowlist_parses_and_a_misplaced_blocked_line_gets_a_hint() {
    let w = World::new();
    let policy = w.policy(ALLOWLIST_EXAMPLE);
    assert!(policy.exists());
    let err = MountPolicy::parse(
        &w.file(),
        &format!("{}blocked = [\"x\"]\n", projects_rw()),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("above the first [[allow]]"), "{err}");
}

#[test]
fn globs_match_whole_components_case_insensitively() {
    assert!(glob_match(b"*.pem", b"server.pem"));
    assert!(!glob_match(b"*.pem", b"server.pem.txt"));
    assert!(glob_match(b"id_rsa*", b"id_rsa.pub"));
    assert!(glob_match(b"a?c", b"abc"));
    assert!(!glob_match(b".env", b".envrc"));
    let names = component_names(Path::new("/home/u/.CONFIG/gcloud"));
    assert!(matches_sequence(
        &[".config".into(), "gcloud".into()],
        &names,
        false
    ));
    assert!(!matches_sequence(
        &["gcloud".into(), ".config".into()],
        &names,
        false
    ));
}

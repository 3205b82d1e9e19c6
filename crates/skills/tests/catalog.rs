//! Sources, overrides, broken skills and the content hash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{copy_fixture, skill, write};
use nanoclaw_skills::{Catalog, Limits, Skill, Source, SourceKind, hash};

#[test]
fn a_later_source_overrides_an_earlier_one_and_records_what_it_shadowed() {
    let tmp = tempfile::tempdir().unwrap();
    let builtin = tmp.path().join("builtin");
    let user = tmp.path().join("user");
    let group = tmp.path().join("group-family");
    skill(&builtin, "notes", Some("version = \"1.0.0\"\n"));
    skill(&builtin, "search", Some("version = \"1.0.0\"\n"));
    skill(&user, "notes", Some("version = \"2.0.0\"\n"));
    skill(&group, "notes", Some("version = \"3.0.0\"\n"));
    skill(&group, "chores", None);

    let catalog = Catalog::load(&[
        Source::builtin(&builtin),
        Source::user(&user),
        Source::group("family", &group),
    ]);
    let names: Vec<&str> = catalog.entries().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["chores", "notes", "search"]);

    let notes = catalog.get("notes").unwrap();
    assert_eq!(notes.source, SourceKind::Group("family".into()));
    assert_eq!(notes.dir, group.join("notes"));
    assert_eq!(notes.ok().unwrap().version().unwrap().to_string(), "3.0.0");
    let shadowed: Vec<(SourceKind, std::path::PathBuf)> = notes
        .shadowed
        .iter()
        .map(|s| (s.source.clone(), s.dir.clone()))
        .collect();
    assert_eq!(
        shadowed,
        [
            (SourceKind::Builtin, builtin.join("notes")),
            (SourceKind::User, user.join("notes")),
        ]
    );
    let search = catalog.get("search").unwrap();
    assert_eq!(search.source, SourceKind::Builtin);
    assert!(search.shadowed.is_empty());
}

#[test]
fn a_broken_skill_is_listed_with_its_error_and_the_others_load() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tmp.path().join("user");
    copy_fixture("release-notes", &user);
    copy_fixture("csv-report", &user);
    write(
        &user.join("Bad-Name"),
        "SKILL.md",
        "---\nname: Bad-Name\ndescription: d\n---\n",
    );
    write(&user.join("no-frontmatter"), "SKILL.md", "# nothing\n");
    std::fs::create_dir_all(user.join("empty")).unwrap();
    write(
        &user.join("bad-toml"),
        "SKILL.md",
        "---\nname: bad-toml\ndescription: d\n---\n",
    );
    write(&user.join("bad-toml"), "skill.toml", "egress = 5\n");
    write(&user.join("binary"), "SKILL.md", "");
    std::fs::write(user.join("binary/SKILL.md"), [0xff, 0xfe, 0x00, 0x01]).unwrap();
    // Not skills: a plain file and a hidden (staging) folder.
    write(&user, "README.md", "my skills\n");
    skill(&user.join(".install-abc"), "half-done", None);

    let catalog = Catalog::load(&[Source::user(&user)]);
    let ok: Vec<&str> = catalog
        .entries()
        .filter(|e| e.ok().is_some())
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(ok, ["csv-report", "release-notes"]);
    let broken: Vec<(String, String)> = catalog
        .broken()
        .map(|e| (e.name.clone(), e.error().unwrap().to_string()))
        .collect();
    let names: Vec<&str> = broken.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Bad-Name", "bad-toml", "binary", "empty", "no-frontmatter"]
    );
    assert!(broken[0].1.contains("must be lowercase"), "{broken:?}");
    assert!(broken[1].1.contains("skill.toml"), "{broken:?}");
    assert!(broken[2].1.contains("not UTF-8"), "{broken:?}");
    assert!(broken[3].1.contains("SKILL.md is missing"), "{broken:?}");
    assert!(
        broken[4].1.contains("must start with YAML frontmatter"),
        "{broken:?}"
    );
    assert!(catalog.problems().is_empty());
}

#[test]
fn a_broken_override_still_wins_so_a_user_copy_is_not_silently_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let builtin = tmp.path().join("b");
    let user = tmp.path().join("u");
    skill(&builtin, "notes", None);
    write(&user.join("notes"), "SKILL.md", "---\nname: notes\n---\n");
    let catalog = Catalog::load(&[Source::builtin(&builtin), Source::user(&user)]);
    let e = catalog.get("notes").unwrap();
    assert_eq!(e.source, SourceKind::User);
    assert!(
        e.error()
            .unwrap()
            .to_string()
            .contains("description is missing")
    );
    assert_eq!(e.shadowed.len(), 1);
}

#[test]
fn missing_source_folders_are_empty_and_a_symlinked_skill_folder_is_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tmp.path().join("user");
    let elsewhere = tmp.path().join("elsewhere");
    skill(&elsewhere, "linked", None);
    std::fs::create_dir_all(&user).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("linked"), user.join("linked")).unwrap();
    let catalog = Catalog::load(&[
        Source::builtin(tmp.path().join("does-not-exist")),
        Source::user(&user),
    ]);
    let e = catalog.get("linked").unwrap();
    assert!(
        e.error().unwrap().to_string().contains("is a symlink"),
        "{:?}",
        e.error()
    );
}

#[test]
fn content_hash_is_stable_and_changes_with_any_file() {
    let tmp = tempfile::tempdir().unwrap();
    let a = copy_fixture("release-notes", &tmp.path().join("a"));
    let b = copy_fixture("release-notes", &tmp.path().join("b"));
    let ha = Skill::load(&a).unwrap().content_hash().to_string();
    assert_eq!(ha.len(), 64);
    assert!(
        ha.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // Same files elsewhere (other paths, other mtimes): same hash.
    assert_eq!(Skill::load(&b).unwrap().content_hash(), ha);
    assert_eq!(hash::content_hash(&a, &Limits::default()).unwrap(), ha);
    // Empty folders do not count.
    std::fs::create_dir_all(b.join("assets")).unwrap();
    assert_eq!(Skill::load(&b).unwrap().content_hash(), ha);

    // A changed byte in a reference file changes it.
    write(
        &b,
        "references/STYLE.md",
        "# Release-note style\n\n- changed\n",
    );
    let hb = Skill::load(&b).unwrap().content_hash().to_string();
    assert_ne!(hb, ha);
    // A new file changes it.
    let c = copy_fixture("release-notes", &tmp.path().join("c"));
    write(&c, "assets/x.txt", "");
    assert_ne!(Skill::load(&c).unwrap().content_hash(), ha);
    // Renaming a file changes it.
    let d = copy_fixture("release-notes", &tmp.path().join("d"));
    std::fs::rename(
        d.join("references/STYLE.md"),
        d.join("references/STYLE2.md"),
    )
    .unwrap();
    assert_ne!(Skill::load(&d).unwrap().content_hash(), ha);
    // The execute bit of a script counts (it decides whether the script can run).
    let e = copy_fixture("release-notes", &tmp.path().join("e"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        e.join("scripts/collect.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert_ne!(Skill::load(&e).unwrap().content_hash(), ha);
}

#[test]
fn content_hash_is_the_documented_construction() {
    // Recompute by hand for a two-file skill, so the format is pinned for other machines.
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let md = "---\nname: tiny\ndescription: d\n---\n";
    write(&dir, "SKILL.md", md);
    write(&dir, "references/a.md", "A");
    use std::os::unix::fs::PermissionsExt;
    for f in ["SKILL.md", "references/a.md"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut h = Sha256::new();
    h.update(b"nanoclaw-skill-content-v1\n");
    for (rel, body) in [("SKILL.md", md), ("references/a.md", "A")] {
        h.update(rel.as_bytes());
        h.update([0u8]);
        h.update(b"-");
        h.update((body.len() as u64).to_be_bytes());
        h.update(body.as_bytes());
    }
    let want = hex::encode(h.finalize());
    assert_eq!(Skill::load(&dir).unwrap().content_hash(), want);
}

#[test]
fn limits_refuse_oversize_skills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = skill(tmp.path(), "big", None);
    write(&dir, "assets/a.bin", &"x".repeat(2000));
    for i in 0..5 {
        write(&dir, &format!("assets/f{i}"), "y");
    }
    let tight = Limits {
        max_files: 100,
        max_file_bytes: 1000,
        max_total_bytes: 1_000_000,
        max_depth: 16,
    };
    let err = Skill::load_with(&dir, &tight).unwrap_err();
    assert!(
        err.to_string().contains("the limit is 1000 per file"),
        "{err}"
    );
    let few = Limits {
        max_files: 3,
        ..Limits::default()
    };
    let err = Skill::load_with(&dir, &few).unwrap_err();
    assert!(err.to_string().contains("more than 3 files"), "{err}");
    let small = Limits {
        max_total_bytes: 1500,
        ..Limits::default()
    };
    let err = Skill::load_with(&dir, &small).unwrap_err();
    assert!(err.to_string().contains("more than 1500 bytes"), "{err}");
    let shallow = Limits {
        max_depth: 0,
        ..Limits::default()
    };
    let err = Skill::load_with(&dir, &shallow).unwrap_err();
    assert!(err.to_string().contains("deeper than 0 levels"), "{err}");
}

#[test]
fn a_fifo_in_a_skill_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = skill(tmp.path(), "fifo", None);
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = Skill::load(&dir).unwrap_err();
    assert!(
        err.to_string().contains("only regular files and folders"),
        "{err}"
    );
}

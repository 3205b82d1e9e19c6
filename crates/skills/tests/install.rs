//! Installs from a folder, a `.tar.gz` with its SHA-256, and a local git repository.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{copy_fixture, fixtures, skill, write};
use nanoclaw_skills::{
    GitSource, InstallError, Skill, install_from_archive, install_from_dir, install_from_git,
};
use sha2::{Digest, Sha256};

/// The names in `dir`, sorted (hidden ones included, so leftover staging folders show).
fn listing(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn fixture_hash(name: &str) -> String {
    Skill::load(&fixtures().join(name))
        .unwrap()
        .content_hash()
        .to_string()
}

#[test]
fn from_a_folder_under_any_name() {
    let tmp = tempfile::tempdir().unwrap();
    let download = tmp.path().join("csv-report-main");
    copy_fixture("csv-report", tmp.path());
    std::fs::rename(tmp.path().join("csv-report"), &download).unwrap();
    let dest = tmp.path().join("skills");

    let s = install_from_dir(&download, &dest).unwrap();
    assert_eq!(s.name(), "csv-report");
    assert_eq!(s.dir, dest.join("csv-report"));
    assert_eq!(s.content_hash(), fixture_hash("csv-report"));
    assert_eq!(listing(&dest), ["csv-report"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("csv-report/scripts/summarize.py"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "the script stays executable");

    // Installing it again is refused, and the installed copy is untouched.
    let err = install_from_dir(&download, &dest).unwrap_err();
    assert!(matches!(err, InstallError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("already installed"), "{err}");
    assert_eq!(listing(&dest), ["csv-report"]);
}

#[test]
fn an_invalid_folder_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("skills");
    let bad = skill(tmp.path(), "bad", Some("version = \"one\"\n"));
    let err = install_from_dir(&bad, &dest).unwrap_err();
    assert!(
        err.to_string().contains("is not a semantic version"),
        "{err}"
    );
    assert_eq!(listing(&dest), Vec::<String>::new());

    let linky = skill(tmp.path(), "linky", None);
    std::os::unix::fs::symlink("/etc", linky.join("assets")).unwrap();
    let err = install_from_dir(&linky, &dest).unwrap_err();
    assert!(
        err.to_string().contains("symlinks are not allowed"),
        "{err}"
    );
    assert_eq!(listing(&dest), Vec::<String>::new());
}

/// A tar entry for [`targz`].
struct E<'a> {
    path: &'a [u8],
    kind: tar::EntryType,
    data: &'a [u8],
    link: Option<&'a str>,
    mode: u32,
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        path: path.as_bytes(),
        kind: tar::EntryType::Regular,
        data,
        link: None,
        mode: 0o644,
    }
}

/// Builds a .tar.gz with raw header paths (so `..` and absolute paths can be written, as an
/// attacker's archive would).
fn targz(entries: &[E]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..e.path.len()].copy_from_slice(e.path);
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        if let Some(l) = e.link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn release_notes_entries(prefix: &str) -> Vec<(String, Vec<u8>, u32)> {
    let root = fixtures().join("release-notes");
    [
        "SKILL.md",
        "skill.toml",
        "references/STYLE.md",
        "scripts/collect.sh",
    ]
    .iter()
    .map(|rel| {
        let mode = if rel.ends_with(".sh") { 0o755 } else { 0o644 };
        (
            format!("{prefix}{rel}"),
            std::fs::read(root.join(rel)).unwrap(),
            mode,
        )
    })
    .collect()
}

fn write_archive(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join("skill.tar.gz");
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn from_an_archive_with_the_right_hash() {
    for prefix in ["release-notes-1.4.0/", ""] {
        let tmp = tempfile::tempdir().unwrap();
        let files = release_notes_entries(prefix);
        let entries: Vec<E> = files
            .iter()
            .map(|(p, d, m)| E {
                path: p.as_bytes(),
                kind: tar::EntryType::Regular,
                data: d,
                link: None,
                mode: *m,
            })
            .collect();
        let bytes = targz(&entries);
        let archive = write_archive(tmp.path(), &bytes);
        let dest = tmp.path().join("skills");
        // Upper-case hex is accepted.
        let s = install_from_archive(&archive, &sha(&bytes).to_uppercase(), &dest).unwrap();
        assert_eq!(s.name(), "release-notes");
        assert_eq!(
            s.content_hash(),
            fixture_hash("release-notes"),
            "prefix {prefix:?}"
        );
        assert_eq!(listing(&dest), ["release-notes"]);
    }
}

#[test]
fn an_archive_with_the_wrong_hash_is_refused_before_unpacking() {
    let tmp = tempfile::tempdir().unwrap();
    let files = release_notes_entries("");
    let entries: Vec<E> = files.iter().map(|(p, d, _)| file(p, d)).collect();
    let bytes = targz(&entries);
    let archive = write_archive(tmp.path(), &bytes);
    let dest = tmp.path().join("skills");
    let wrong = sha(b"something else");
    let err = install_from_archive(&archive, &wrong, &dest).unwrap_err();
    match &err {
        InstallError::HashMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha(&bytes));
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(err.to_string().contains("SHA-256 is"), "{err}");
    assert!(!dest.exists(), "nothing may be created for a wrong hash");

    let err = install_from_archive(&archive, "abc", &dest).unwrap_err();
    assert!(err.to_string().contains("not a SHA-256"), "{err}");
}

/// Installs an archive made of the release-notes files plus `extra`, expecting refusal with
/// `reason`, and checks nothing was written in or next to the destination.
fn expect_refused(extra: E, reason: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let files = release_notes_entries("");
    let mut entries: Vec<E> = files.iter().map(|(p, d, _)| file(p, d)).collect();
    entries.insert(1, extra);
    let bytes = targz(&entries);
    let archive = write_archive(tmp.path(), &bytes);
    let dest = tmp.path().join("skills");
    let err = install_from_archive(&archive, &sha(&bytes), &dest).unwrap_err();
    assert!(
        matches!(err, InstallError::Refused { .. }),
        "expected a refusal, got {err:?}"
    );
    assert!(
        err.to_string().contains(reason),
        "{err} should say {reason:?}"
    );
    assert_eq!(listing(&dest), Vec::<String>::new());
    // Nothing written next to the destination either (the archive is unpacked elsewhere first).
    assert_eq!(listing(tmp.path()), ["skill.tar.gz"]);
}

#[test]
fn an_archive_entry_with_dot_dot_is_refused() {
    expect_refused(file("../evil.sh", b"echo pwned\n"), "path contains \"..\"");
    expect_refused(file("scripts/../../evil.sh", b"x"), "path contains \"..\"");
}

#[test]
fn an_absolute_archive_entry_is_refused() {
    expect_refused(file("/tmp/evil.sh", b"x"), "absolute path");
}

#[test]
fn an_archive_symlink_or_hard_link_is_refused() {
    expect_refused(
        E {
            path: b"references/passwd",
            kind: tar::EntryType::Symlink,
            data: b"",
            link: Some("/etc/passwd"),
            mode: 0o777,
        },
        "a symbolic link",
    );
    expect_refused(
        E {
            path: b"references/copy",
            kind: tar::EntryType::Link,
            data: b"",
            link: Some("SKILL.md"),
            mode: 0o644,
        },
        "a hard link",
    );
}

#[test]
fn an_archive_device_or_fifo_is_refused() {
    expect_refused(
        E {
            path: b"assets/null",
            kind: tar::EntryType::Char,
            data: b"",
            link: None,
            mode: 0o666,
        },
        "a device file",
    );
    expect_refused(
        E {
            path: b"assets/pipe",
            kind: tar::EntryType::Fifo,
            data: b"",
            link: None,
            mode: 0o666,
        },
        "a FIFO",
    );
}

#[test]
fn an_archive_with_a_path_twice_or_over_the_limits_is_refused() {
    expect_refused(
        file("SKILL.md", b"---\nname: x\n---\n"),
        "holds this path twice",
    );
    let deep = format!("{}f", "d/".repeat(20));
    expect_refused(file(&deep, b"x"), "nests deeper than 16 folders");
    let big = vec![0u8; 11 * 1024 * 1024];
    expect_refused(file("assets/big.bin", &big), "exceeds the limits");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A local repository holding the release-notes skill at its root and weekly-summary under
/// skills/, tagged v1.
fn repo(tmp: &Path) -> (std::path::PathBuf, String) {
    let repo = tmp.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    for entry in std::fs::read_dir(fixtures().join("release-notes")).unwrap() {
        let e = entry.unwrap();
        let to = repo.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    copy_fixture("weekly-summary", &repo.join("skills"));
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "skills"]);
    git(&repo, &["tag", "v1"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    (repo, head)
}

#[test]
fn from_a_git_repository_at_a_pinned_ref() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, head) = repo(tmp.path());
    let url = format!("file://{}", repo.display());
    let dest = tmp.path().join("skills");

    let s = install_from_git(
        &GitSource {
            url: url.clone(),
            reference: "v1".into(),
            commit: Some(head.clone()),
            subdir: None,
        },
        &dest,
    )
    .unwrap();
    assert_eq!(s.name(), "release-notes");
    // The repository root is the skill: its files come along, the clone's .git does not.
    assert!(!dest.join("release-notes/.git").exists());
    assert!(dest.join("release-notes/SKILL.md").is_file());

    let s = install_from_git(
        &GitSource {
            url: url.clone(),
            reference: "main".into(),
            commit: None,
            subdir: Some("skills/weekly-summary".into()),
        },
        &dest,
    )
    .unwrap();
    assert_eq!(s.name(), "weekly-summary");
    assert_eq!(s.content_hash(), fixture_hash("weekly-summary"));
}

#[test]
fn a_git_ref_at_another_commit_or_missing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, head) = repo(tmp.path());
    let url = format!("file://{}", repo.display());
    let dest = tmp.path().join("skills");
    // Move main on; the pin still names the first commit.
    write(&repo, "references/NEW.md", "new\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "more"]);
    let err = install_from_git(
        &GitSource {
            url: url.clone(),
            reference: "main".into(),
            commit: Some(head),
            subdir: None,
        },
        &dest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not the pinned"), "{err}");
    let err = install_from_git(
        &GitSource {
            url: url.clone(),
            reference: "no-such-tag".into(),
            commit: None,
            subdir: None,
        },
        &dest,
    )
    .unwrap_err();
    assert!(matches!(err, InstallError::Git(_)), "{err}");
    let err = install_from_git(
        &GitSource {
            url: url.clone(),
            reference: "--upload-pack=touch /tmp/x".into(),
            commit: None,
            subdir: None,
        },
        &dest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a branch or tag"), "{err}");
    let err = install_from_git(
        &GitSource {
            url: url.clone(),
            reference: "main".into(),
            commit: None,
            subdir: Some("../repo".into()),
        },
        &dest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"..\""), "{err}");
    assert_eq!(listing(&dest), Vec::<String>::new());
}

#[test]
fn a_symlink_in_a_git_repository_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = repo(tmp.path());
    std::os::unix::fs::symlink("/etc/passwd", repo.join("references/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", repo.join("skills/etc")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "links"]);
    let dest = tmp.path().join("skills");
    let url = format!("file://{}", repo.display());
    let err = install_from_git(
        &GitSource {
            url: url.clone(),
            reference: "main".into(),
            commit: None,
            subdir: None,
        },
        &dest,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("symlinks are not allowed"),
        "{err}"
    );
    let err = install_from_git(
        &GitSource {
            url,
            reference: "main".into(),
            commit: None,
            subdir: Some("skills/etc".into()),
        },
        &dest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("symlinks are refused"), "{err}");
    assert_eq!(listing(&dest), Vec::<String>::new());
}

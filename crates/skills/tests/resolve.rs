//! Dependency resolution: order, missing and incompatible requirements, cycles without hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{copy_fixture, skill};
use nanoclaw_skills::{Catalog, ResolveError, Source};

/// A skill `name` at `version` (None: no version) requiring `requires` (name, range).
fn dep_skill(root: &Path, name: &str, version: Option<&str>, requires: &[(&str, &str)]) {
    let mut toml = String::new();
    if let Some(v) = version {
        toml.push_str(&format!("version = \"{v}\"\n"));
    }
    if !requires.is_empty() {
        toml.push_str("[requires]\n");
        for (n, r) in requires {
            toml.push_str(&format!("{n} = \"{r}\"\n"));
        }
    }
    skill(root, name, Some(&toml));
}

fn catalog(root: &Path) -> Catalog {
    Catalog::load(&[Source::user(root)])
}

/// Resolves with a watchdog: a hang would be a failure, not a stuck test run.
fn resolve_timed(c: &Catalog, enabled: &[&str]) -> Result<Vec<String>, ResolveError> {
    let started = Instant::now();
    let r = c.resolve(enabled).map(|r| r.order);
    assert!(started.elapsed() < Duration::from_secs(2));
    r
}

#[test]
fn dependencies_come_first_in_a_deterministic_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    dep_skill(
        root,
        "app",
        Some("1.0.0"),
        &[("http", "^1"), ("auth", "^2.1")],
    );
    dep_skill(root, "auth", Some("2.3.0"), &[("http", ">=1.2")]);
    dep_skill(root, "http", Some("1.4.0"), &[]);
    dep_skill(root, "zeta", None, &[]);
    dep_skill(root, "unused", Some("0.1.0"), &[]);
    let c = catalog(root);

    let r = c.resolve(&["zeta", "app"]).unwrap();
    // Every skill comes after what it requires.
    let pos = |n: &str| r.order.iter().position(|x| x == n).unwrap();
    assert!(pos("http") < pos("auth"));
    assert!(pos("auth") < pos("app"));
    assert!(pos("http") < pos("app"));
    assert_eq!(r.order, ["http", "auth", "app", "zeta"]);
    assert_eq!(r.added, ["auth", "http"]);
    // Input order and duplicates do not matter.
    let again = c.resolve(&["app", "zeta", "app"]).unwrap();
    assert_eq!(again, r);
    assert_eq!(c.resolve::<&str>(&[]).unwrap().order, Vec::<String>::new());
}

#[test]
fn the_fixture_skills_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["release-notes", "csv-report", "weekly-summary"] {
        copy_fixture(f, tmp.path());
    }
    let c = catalog(tmp.path());
    let r = c.resolve(&["weekly-summary"]).unwrap();
    assert_eq!(r.order, ["csv-report", "release-notes", "weekly-summary"]);
}

#[test]
fn a_missing_dependency_names_the_skill_that_requires_it() {
    let tmp = tempfile::tempdir().unwrap();
    dep_skill(tmp.path(), "app", Some("1.0.0"), &[("db", "^3")]);
    let err = catalog(tmp.path()).resolve(&["app"]).unwrap_err();
    assert_eq!(
        err,
        ResolveError::Missing {
            skill: "app".into(),
            requires: "db".into(),
            range: "^3".into()
        }
    );
    assert!(
        err.to_string()
            .contains("skill \"app\" requires \"db\" (^3), which is not installed"),
        "{err}"
    );
}

#[test]
fn an_incompatible_version_names_both_skills_and_the_versions() {
    let tmp = tempfile::tempdir().unwrap();
    dep_skill(tmp.path(), "app", Some("1.0.0"), &[("db", "^3")]);
    dep_skill(tmp.path(), "db", Some("2.9.1"), &[]);
    let err = catalog(tmp.path()).resolve(&["app"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("skill \"app\" requires \"db\" ^3, but version 2.9.1 is installed"),
        "{msg}"
    );
    // No version at all satisfies only "*".
    let tmp = tempfile::tempdir().unwrap();
    dep_skill(tmp.path(), "app", None, &[("db", "^1"), ("log", "*")]);
    dep_skill(tmp.path(), "db", None, &[]);
    dep_skill(tmp.path(), "log", None, &[]);
    let err = catalog(tmp.path()).resolve(&["app"]).unwrap_err();
    assert!(
        err.to_string().contains("but no version is installed"),
        "{err}"
    );
}

#[test]
fn unknown_and_broken_skills_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    dep_skill(tmp.path(), "app", None, &[("broken", "*")]);
    common::write(&tmp.path().join("broken"), "SKILL.md", "no frontmatter");
    let c = catalog(tmp.path());
    assert_eq!(
        c.resolve(&["nope"]).unwrap_err(),
        ResolveError::Unknown {
            name: "nope".into()
        }
    );
    let err = c.resolve(&["app"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("skill \"broken\" (required by \"app\") is broken"),
        "{msg}"
    );
}

#[test]
fn a_self_loop_is_a_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    dep_skill(tmp.path(), "a", Some("1.0.0"), &[("a", "*")]);
    let err = resolve_timed(&catalog(tmp.path()), &["a"]).unwrap_err();
    assert_eq!(
        err,
        ResolveError::Cycle {
            path: vec!["a".into(), "a".into()]
        }
    );
    assert!(err.to_string().contains("a → a"), "{err}");
}

#[test]
fn a_two_cycle_is_reported_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    dep_skill(tmp.path(), "a", Some("1.0.0"), &[("b", "*")]);
    dep_skill(tmp.path(), "b", Some("1.0.0"), &[("a", "*")]);
    let c = catalog(tmp.path());
    let err = resolve_timed(&c, &["a"]).unwrap_err();
    assert!(err.to_string().contains("a → b → a"), "{err}");
    let err = resolve_timed(&c, &["b"]).unwrap_err();
    assert!(err.to_string().contains("b → a → b"), "{err}");
}

#[test]
fn a_three_cycle_below_a_root_is_reported_without_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    dep_skill(tmp.path(), "app", Some("1.0.0"), &[("a", "*")]);
    dep_skill(tmp.path(), "a", Some("1.0.0"), &[("b", "*")]);
    dep_skill(tmp.path(), "b", Some("1.0.0"), &[("c", "*")]);
    dep_skill(tmp.path(), "c", Some("1.0.0"), &[("a", "^1")]);
    let err = resolve_timed(&catalog(tmp.path()), &["app"]).unwrap_err();
    assert_eq!(
        err,
        ResolveError::Cycle {
            path: ["a", "b", "c", "a"].map(String::from).to_vec()
        }
    );
    assert!(
        err.to_string()
            .contains("skills require each other in a cycle: a → b → c → a"),
        "{err}"
    );
}

#[test]
fn a_wide_diamond_graph_resolves_quickly_and_lists_each_skill_once() {
    // 60 layers of 2 skills, each requiring both skills of the next layer: 2^60 paths, so a
    // resolver that walks paths instead of skills would never finish.
    let tmp = tempfile::tempdir().unwrap();
    let layers = 60;
    for l in 0..layers {
        for side in ["x", "y"] {
            let name = format!("l{l}-{side}");
            if l + 1 < layers {
                let a = format!("l{}-x", l + 1);
                let b = format!("l{}-y", l + 1);
                dep_skill(tmp.path(), &name, Some("1.0.0"), &[(&a, "*"), (&b, "*")]);
            } else {
                dep_skill(tmp.path(), &name, Some("1.0.0"), &[]);
            }
        }
    }
    let order = resolve_timed(&catalog(tmp.path()), &["l0-x"]).unwrap();
    assert_eq!(order.len(), 2 * layers - 1);
    assert_eq!(order.last().map(String::as_str), Some("l0-x"));
}

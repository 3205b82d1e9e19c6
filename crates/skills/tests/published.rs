//! Real, publicly published Agent Skills load unchanged: HoloViz's skill collection
//! (`holoviz-skills` on PyPI, BSD-3-Clause), fetched pinned by `scripts/prerequisites --tests`
//! into /opt/nanoclaw-tests/holoviz-skills (`NANOCLAW_PUBLISHED_SKILLS` overrides it). Nothing
//! of it is in this repository.
//!
//! Every SKILL.md folder in it must load with `Skill::load`, read the name and description its
//! frontmatter says, and warn only about the fields outside the spec that docs/SKILLS.md
//! names as other clients' extensions; the reference validator (`skills-ref`, see
//! reference.rs) must refuse exactly those skills with extensions, for those fields.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nanoclaw_skills::Skill;

const PUBLISHED: &str = "/opt/nanoclaw-tests/holoviz-skills";
const VERSION: &str = "2026.10.13";
const SKILLS_REF_VENV: &str = "/opt/nanoclaw-tests/skills-ref";

/// The skills of holoviz-skills 2026.10.13 (folders below holoviz_skills/skills).
const EXPECTED: [&str; 14] = [
    "contributing-to-holoviz",
    "contributing-to-holoviz/skills/cleanup",
    "contributing-to-holoviz/skills/deslop",
    "contributing-to-holoviz/skills/documentation",
    "contributing-to-holoviz/skills/minimal-example",
    "contributing-to-holoviz/skills/outreach",
    "contributing-to-holoviz/skills/pr-description",
    "contributing-to-holoviz/skills/testing",
    "creating-custom-holoviz-skills",
    "developing-with-holoviz",
    "developing-with-holoviz/skills/holoviews",
    "developing-with-holoviz/skills/hvplot",
    "developing-with-holoviz/skills/panel",
    "developing-with-holoviz/skills/param",
];

/// Top-level fields of other clients that docs/SKILLS.md lists; loaded with a warning.
const DOCUMENTED_EXTENSIONS: [&str; 4] = [
    "argument-hint",
    "user-invocable",
    "disable-model-invocation",
    "context",
];

fn root() -> PathBuf {
    let dir = std::env::var_os("NANOCLAW_PUBLISHED_SKILLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PUBLISHED));
    let version = std::fs::read_to_string(dir.join("VERSION")).unwrap_or_default();
    assert_eq!(
        version.trim(),
        VERSION,
        "holoviz-skills {VERSION} is not at {}: run scripts/prerequisites --tests",
        dir.display()
    );
    dir.join("holoviz_skills/skills")
}

/// Every folder below `dir` holding a SKILL.md, as paths relative to `base`.
fn skill_dirs(dir: &Path, base: &Path, out: &mut Vec<String>) {
    if dir.join("SKILL.md").is_file() {
        out.push(dir.strip_prefix(base).unwrap().display().to_string());
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            skill_dirs(&e.path(), base, out);
        }
    }
}

/// A single-line `key: value` of the frontmatter, read without YAML (these files write their
/// name and description on one line, unquoted): what the file says, independently of our parser.
fn frontmatter_line(text: &str, key: &str) -> String {
    let fm = text.split("\n---").next().unwrap();
    fm.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} line in {fm}"))
        .to_string()
}

#[test]
fn every_published_holoviz_skill_loads_unchanged() {
    let root = root();
    let mut found = Vec::new();
    skill_dirs(&root, &root, &mut found);
    found.sort();
    assert_eq!(found, EXPECTED, "the skills in holoviz-skills {VERSION}");

    let mut with_extensions = Vec::new();
    for rel in &found {
        let dir = root.join(rel);
        let skill = Skill::load(&dir).unwrap_or_else(|e| panic!("{rel} does not load: {e}"));
        let text = std::fs::read_to_string(dir.join("SKILL.md")).unwrap();
        let folder = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(skill.name(), folder, "{rel}");
        assert_eq!(skill.name(), frontmatter_line(&text, "name"), "{rel}");
        assert_eq!(
            skill.frontmatter.description,
            frontmatter_line(&text, "description"),
            "{rel}"
        );
        assert_eq!(skill.frontmatter.metadata["author"], "holoviz", "{rel}");
        assert!(
            skill.body.trim_start().starts_with('#'),
            "{rel}: the body is the Markdown after the frontmatter"
        );
        // Warnings: only the documented extensions.
        let unknown = &skill.frontmatter.unknown_fields;
        for f in unknown {
            assert!(
                DOCUMENTED_EXTENSIONS.contains(&f.as_str()),
                "{rel}: field {f} is not a documented extension"
            );
        }
        let warnings = skill.warnings();
        assert_eq!(
            warnings.len(),
            usize::from(!unknown.is_empty()),
            "{rel}: {warnings:?}"
        );
        if let Some(w) = warnings.first() {
            assert!(w.contains(&unknown.join(", ")), "{w}");
            with_extensions.push((rel.clone(), unknown.clone()));
        }
    }
    // The two routing skills carry Claude Code's extensions.
    assert_eq!(
        with_extensions,
        [
            (
                "contributing-to-holoviz".to_string(),
                vec!["argument-hint".to_string(), "user-invocable".to_string()]
            ),
            (
                "developing-with-holoviz".to_string(),
                vec!["argument-hint".to_string(), "user-invocable".to_string()]
            ),
        ]
    );

    // The reference validator refuses exactly those, for those fields.
    let venv = std::env::var_os("NANOCLAW_SKILLS_REF_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SKILLS_REF_VENV));
    let cli = venv.join("bin/agentskills");
    assert!(
        cli.exists(),
        "the reference validator skills-ref is not installed at {}: run scripts/prerequisites --tests",
        venv.display()
    );
    for rel in &found {
        let out = Command::new(&cli)
            .arg("validate")
            .arg(root.join(rel))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match with_extensions.iter().find(|(r, _)| r == rel) {
            None => assert!(out.status.success(), "{rel}: {stderr}"),
            Some((_, fields)) => {
                assert!(!out.status.success(), "{rel}");
                assert!(
                    stderr.contains(&format!(
                        "Unexpected fields in frontmatter: {}.",
                        fields.join(", ")
                    )),
                    "{rel}: {stderr}"
                );
            }
        }
    }
}

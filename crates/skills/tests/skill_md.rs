//! SKILL.md: the Agent Skills frontmatter rules, each with a passing and a failing case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{fixtures, skill_md, write};
use nanoclaw_skills::{LoadError, Skill};

/// Writes `root/<folder>/SKILL.md` with `text` and loads the folder.
fn load_text(root: &Path, folder: &str, text: &str) -> Result<Skill, LoadError> {
    let dir = root.join(folder);
    write(&dir, "SKILL.md", text);
    Skill::load(&dir)
}

/// Loads a skill whose frontmatter is `fm`, expecting an error about `field` whose message
/// contains every one of `parts`; returns the message.
fn expect_error(folder: &str, fm: &str, field: &str, parts: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("skills");
    let err = load_text(&root, folder, &skill_md(fm)).unwrap_err();
    let msg = err.to_string();
    let file = root.join(folder).join("SKILL.md");
    assert!(
        msg.starts_with(&format!("{}: ", file.display())),
        "message should start with the file: {msg}"
    );
    assert_eq!(err.field(), Some(field), "field of {msg}");
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should contain {p:?}");
    }
    msg
}

#[test]
fn fixture_skills_in_the_published_style_load() {
    let rn = Skill::load(&fixtures().join("release-notes")).unwrap();
    assert_eq!(rn.name(), "release-notes");
    assert!(
        rn.frontmatter
            .description
            .starts_with("Drafts release notes")
    );
    assert_eq!(rn.frontmatter.license.as_deref(), Some("MIT"));
    assert_eq!(
        rn.frontmatter.compatibility.as_deref(),
        Some("Needs git in the sandbox image.")
    );
    assert_eq!(rn.frontmatter.allowed_tools, ["Bash(git:*)", "Read"]);
    assert_eq!(rn.frontmatter.metadata["author"], "nanoclaw-tests");
    assert_eq!(rn.frontmatter.metadata["version"], "1.4");
    assert!(rn.body.starts_with("\n# Release notes\n"));
    assert!(rn.body.contains("references/STYLE.md"));
    assert_eq!(
        rn.version().map(|v| v.to_string()).as_deref(),
        Some("1.4.0")
    );
    assert!(rn.warnings().is_empty(), "{:?}", rn.warnings());

    let csv = Skill::load(&fixtures().join("csv-report")).unwrap();
    // `version: 2.1` (a YAML number) is kept as its text.
    assert_eq!(csv.frontmatter.metadata["version"], "2.1");
    assert_eq!(csv.manifest.tools[0].name, "csv_summary");

    let ws = Skill::load(&fixtures().join("weekly-summary")).unwrap();
    assert_eq!(ws.manifest.requires.len(), 2);
}

#[test]
fn crlf_line_endings_and_a_byte_order_mark_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "\u{feff}---\r\nname: crlf\r\ndescription: Windows line endings.\r\n---\r\nBody\r\n";
    let s = load_text(tmp.path(), "crlf", text).unwrap();
    assert_eq!(s.frontmatter.description, "Windows line endings.");
    assert_eq!(s.body, "Body\r\n");
}

#[test]
fn quoted_and_block_descriptions_are_read_as_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let s = load_text(
        tmp.path(),
        "folded",
        &skill_md("name: folded\ndescription: >\n  Line one\n  continues: with a colon.\n"),
    )
    .unwrap();
    assert_eq!(
        s.frontmatter.description,
        "Line one continues: with a colon.\n"
    );
}

#[test]
fn no_frontmatter_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_text(tmp.path(), "plain", "# Just markdown\n").unwrap_err();
    assert!(matches!(err, LoadError::Syntax { .. }));
    assert!(
        err.to_string().contains("must start with YAML frontmatter"),
        "{err}"
    );
}

#[test]
fn unclosed_frontmatter_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_text(tmp.path(), "open", "---\nname: open\ndescription: x\n").unwrap_err();
    assert!(err.to_string().contains("not closed"), "{err}");
}

#[test]
fn invalid_yaml_is_refused_with_the_parser_message() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_text(
        tmp.path(),
        "bad-yaml",
        &skill_md("name: bad-yaml\ndescription: [unclosed"),
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains("not valid YAML"), "{err}");
}

#[test]
fn duplicate_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_text(
        tmp.path(),
        "dup",
        &skill_md("name: dup\ndescription: one\ndescription: two"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not valid YAML"), "{err}");
}

#[test]
fn missing_name() {
    expect_error(
        "no-name",
        "description: Has no name.",
        "name",
        &["name is missing", "name: no-name"],
    );
}

#[test]
fn uppercase_name() {
    let msg = expect_error(
        "Foo",
        "name: Foo\ndescription: Uppercase.",
        "name",
        &["name \"Foo\" must be lowercase", "\"foo\""],
    );
    assert!(
        msg.contains("/skills/Foo/SKILL.md: name \"Foo\" must be lowercase"),
        "{msg}"
    );
}

#[test]
fn name_with_invalid_characters() {
    expect_error(
        "my_skill",
        "name: my_skill\ndescription: Underscore.",
        "name",
        &["contains '_'", "a-z"],
    );
    expect_error(
        "café",
        "name: café\ndescription: Not ASCII.",
        "name",
        &["contains 'é'"],
    );
}

#[test]
fn name_starting_or_ending_with_a_hyphen() {
    expect_error(
        "-pdf",
        "name: -pdf\ndescription: Leading hyphen.",
        "name",
        &["must not start or end with a hyphen"],
    );
    expect_error(
        "pdf-",
        "name: pdf-\ndescription: Trailing hyphen.",
        "name",
        &["must not start or end with a hyphen"],
    );
}

#[test]
fn name_with_consecutive_hyphens() {
    expect_error(
        "pdf--tools",
        "name: pdf--tools\ndescription: Double hyphen.",
        "name",
        &["consecutive hyphens"],
    );
}

#[test]
fn name_too_long() {
    let long = "a".repeat(65);
    expect_error(
        &long,
        &format!("name: {long}\ndescription: Long."),
        "name",
        &["65 characters", "limit is 64"],
    );
    // 64 is fine.
    let ok = "b".repeat(64);
    let tmp = tempfile::tempdir().unwrap();
    load_text(
        tmp.path(),
        &ok,
        &skill_md(&format!("name: {ok}\ndescription: Long enough.")),
    )
    .unwrap();
}

#[test]
fn name_not_matching_the_folder() {
    expect_error(
        "pdf-tools",
        "name: pdf-processing\ndescription: Mismatch.",
        "name",
        &[
            "name \"pdf-processing\" must equal the folder name \"pdf-tools\"",
            "rename",
        ],
    );
}

#[test]
fn name_that_is_not_a_string() {
    expect_error(
        "list",
        "name:\n  - list\ndescription: A list.",
        "name",
        &["name must be a string, not a list"],
    );
}

#[test]
fn scalars_yaml_types_are_read_as_written() {
    // YAML types these as numbers and booleans; they are text fields, read as written (as the
    // reference validator, which reads every scalar as text, does).
    let tmp = tempfile::tempdir().unwrap();
    let s = load_text(
        tmp.path(),
        "2048",
        &skill_md(
            "name: 2048\ndescription: 1.10\nlicense: 2.0\ncompatibility: yes\nmetadata:\n  \
             version: 1.10\n  beta: True\n  octal: 0o17\n  nan: .NaN\n  empty:",
        ),
    )
    .unwrap();
    assert_eq!(s.name(), "2048");
    assert_eq!(s.frontmatter.description, "1.10");
    assert_eq!(s.frontmatter.license.as_deref(), Some("2.0"));
    assert_eq!(s.frontmatter.compatibility.as_deref(), Some("yes"));
    let m = &s.frontmatter.metadata;
    assert_eq!(m["version"], "1.10");
    assert_eq!(m["beta"], "True");
    assert_eq!(m["octal"], "0o17");
    assert_eq!(m["nan"], ".NaN");
    assert_eq!(m["empty"], "");
    // A null is no value: a name written `null` is missing, not the skill "null".
    expect_error(
        "null",
        "name: null\ndescription: d",
        "name",
        &["name is missing"],
    );
}

#[test]
fn missing_empty_and_long_description() {
    expect_error(
        "no-desc",
        "name: no-desc",
        "description",
        &["description is missing"],
    );
    expect_error(
        "empty-desc",
        "name: empty-desc\ndescription: \"  \"",
        "description",
        &["description is empty"],
    );
    let long = "x".repeat(1025);
    expect_error(
        "long-desc",
        &format!("name: long-desc\ndescription: {long}"),
        "description",
        &["1025 characters", "limit is 1024"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let ok = "y".repeat(1024);
    load_text(
        tmp.path(),
        "max-desc",
        &skill_md(&format!("name: max-desc\ndescription: {ok}")),
    )
    .unwrap();
}

#[test]
fn compatibility_limits() {
    let long = "c".repeat(501);
    expect_error(
        "compat",
        &format!("name: compat\ndescription: d\ncompatibility: {long}"),
        "compatibility",
        &["compatibility must be 1-500 characters (it is 501)"],
    );
    expect_error(
        "compat-empty",
        "name: compat-empty\ndescription: d\ncompatibility: \"\"",
        "compatibility",
        &["compatibility must be 1-500 characters (it is 0)"],
    );
}

#[test]
fn metadata_must_map_strings_to_strings() {
    expect_error(
        "meta-list",
        "name: meta-list\ndescription: d\nmetadata:\n  tags: [a, b]",
        "metadata.tags",
        &["metadata.tags must be a string, not a list"],
    );
    expect_error(
        "meta-scalar",
        "name: meta-scalar\ndescription: d\nmetadata: hello",
        "metadata",
        &["metadata must be a mapping"],
    );
}

#[test]
fn allowed_tools_must_be_a_string() {
    expect_error(
        "tools-list",
        "name: tools-list\ndescription: d\nallowed-tools:\n  - Read",
        "allowed-tools",
        &["space-delimited string", "not a list"],
    );
}

#[test]
fn unknown_fields_load_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let s = load_text(
        tmp.path(),
        "extended",
        &skill_md("name: extended\ndescription: d\nargument-hint: \"[file]\"\nversion: 1.0"),
    )
    .unwrap();
    assert_eq!(s.frontmatter.unknown_fields, ["argument-hint", "version"]);
    let w = s.warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("argument-hint, version"), "{w:?}");
    assert!(
        w[0].contains("not in the Agent Skills specification"),
        "{w:?}"
    );
}

#[test]
fn missing_skill_md() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let err = Skill::load(&tmp.path().join("empty")).unwrap_err();
    assert!(err.to_string().contains("SKILL.md is missing"), "{err}");
}

#[test]
fn optional_folders_must_be_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::skill(tmp.path(), "odd", None);
    write(&dir, "scripts", "not a folder");
    let err = Skill::load(&dir).unwrap_err();
    assert!(
        err.to_string().contains("scripts must be a folder"),
        "{err}"
    );
}

#[test]
fn a_symlink_anywhere_in_the_skill_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::skill(tmp.path(), "linky", None);
    std::fs::create_dir(dir.join("references")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("references/passwd")).unwrap();
    let err = Skill::load(&dir).unwrap_err();
    assert!(matches!(err, LoadError::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("symlinks are not allowed"),
        "{err}"
    );
}

#[test]
fn billion_laughs_is_refused_not_expanded() {
    // Nested aliases that would expand to ~10^9 nodes; the YAML budget must stop it quickly.
    let tmp = tempfile::tempdir().unwrap();
    let mut fm = String::from(
        "name: laughs\ndescription: d\nmetadata:\n  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        fm.push_str(&format!(
            "  a{i}: &a{i} [{}]\n",
            std::iter::repeat_n(prev.as_str(), 10)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    let started = std::time::Instant::now();
    let err = load_text(tmp.path(), "laughs", &skill_md(fm.trim_end())).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(matches!(err, LoadError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains("alias replay limit"), "{err}");
}

//! Differential test against the Agent Skills specification's reference validator,
//! `skills-ref` (PyPI), installed by `scripts/prerequisites --tests` into
//! /opt/nanoclaw-tests/skills-ref (`NANOCLAW_SKILLS_REF_VENV` overrides it).
//!
//! Many SKILL.md cases, valid and invalid, are written to folders; one Python process runs
//! `skills_ref.validate` (and `read_properties` on the valid ones) for all of them, and
//! `Skill::load` must accept exactly what the reference accepts, reading the same name and
//! description, except for the differences docs/SKILLS.md lists: each of those cases states
//! what both sides do and why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nanoclaw_skills::Skill;
use serde_json::Value;

/// Where `scripts/prerequisites --tests` installs the reference validator.
const SKILLS_REF_VENV: &str = "/opt/nanoclaw-tests/skills-ref";
/// The versions the documented differences were established against.
const SKILLS_REF_VERSION: &str = "0.1.1";
const STRICTYAML_VERSION: &str = "1.7.3";

/// Runs the reference validator on every folder: per folder its errors and, when it has
/// none, the name and description `read_properties` reads.
const VALIDATE_PY: &str = r#"
import json, sys
from importlib.metadata import version
from pathlib import Path
from skills_ref import read_properties, validate
out = {"versions": [version("skills-ref"), version("strictyaml")], "results": []}
for d in json.load(sys.stdin):
    errors = [str(e) for e in validate(Path(d))]
    props = None
    if not errors:
        try:
            p = read_properties(Path(d))
            props = {"name": p.name, "description": p.description}
        except Exception as e:
            errors = ["read_properties: " + str(e)]
    out["results"].append({"errors": errors, "props": props})
json.dump(out, sys.stdout)
"#;

fn venv() -> PathBuf {
    let venv = std::env::var_os("NANOCLAW_SKILLS_REF_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SKILLS_REF_VENV));
    assert!(
        venv.join("bin/agentskills").exists(),
        "the reference validator skills-ref is not installed at {}: run scripts/prerequisites --tests",
        venv.display()
    );
    venv
}

/// What the two validators do with a case.
#[derive(Clone, Copy)]
enum Expect {
    /// Both accept (reading the same name and description) or both refuse.
    Agree,
    /// A documented difference: nanoclaw accepts (`ours`) or refuses, the reference accepts
    /// (`reference`) or refuses, for the reason given.
    Differs {
        ours: bool,
        reference: bool,
        why: &'static str,
    },
}

struct Case {
    label: String,
    folder: String,
    /// The file's name in the folder (SKILL.md but for one case).
    file: &'static str,
    text: String,
    expect: Expect,
}

const ASCII_ONLY: &str = "nanoclaw takes ASCII names only (the spec's a-z); the reference takes any lowercase Unicode letter or digit";
const EXTRA_FIELDS: &str =
    "fields outside the spec load with a warning in nanoclaw; the reference refuses them";
const METADATA_STRINGS: &str =
    "the spec's metadata maps strings to strings; the reference does not check metadata";
const TOOLS_STRING: &str =
    "the spec's allowed-tools is a space-delimited string; the reference does not check it";
const LICENSE_STRING: &str = "the spec's license is a string; the reference does not check it";
const COMPAT_MIN: &str =
    "the spec says compatibility is 1-500 characters; the reference checks only the maximum";
const STRICT_YAML: &str = "the reference reads strictyaml, which refuses flow style, anchors and tags; nanoclaw reads YAML";
const NULL_IS_NONE: &str =
    "a YAML null (null, ~) is no value in nanoclaw; strictyaml reads the text \"null\"";
const SPLIT_DASHES: &str = "the reference splits the file at the first two \"---\" anywhere, even inside a line; nanoclaw at the lines \"---\" as the spec says";
const NO_STRIP: &str =
    "nanoclaw takes the name as written; the reference strips spaces around it first";
const BOM: &str = "nanoclaw skips a UTF-8 byte-order mark; the reference refuses the file";
const LOWER_FILE: &str = "the spec's file is SKILL.md; the reference also takes skill.md";

fn md(fm: &str) -> String {
    format!("---\n{fm}\n---\n\n# Instructions\n\nDo the thing.\n")
}

/// YAML double-quoted text.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Cases(Vec<Case>);

impl Cases {
    fn add(&mut self, label: impl Into<String>, folder: &str, text: String, expect: Expect) {
        self.0.push(Case {
            label: label.into(),
            folder: folder.to_string(),
            file: "SKILL.md",
            text,
            expect,
        });
    }
    /// A case whose frontmatter is `fm` in the folder `folder`.
    fn fm(&mut self, label: impl Into<String>, folder: &str, fm: &str, expect: Expect) {
        self.add(label, folder, md(fm), expect);
    }
    /// A case with a valid name (`folder`) and description plus `extra` lines.
    fn with(&mut self, label: impl Into<String>, folder: &str, extra: &str, expect: Expect) {
        let fm = format!("name: {folder}\ndescription: A test skill. Use when testing.\n{extra}");
        self.fm(label, folder, fm.trim_end(), expect);
    }
}

fn differs(ours: bool, reference: bool, why: &'static str) -> Expect {
    Expect::Differs {
        ours,
        reference,
        why,
    }
}

fn cases() -> Vec<Case> {
    use Expect::Agree;
    let mut c = Cases(Vec::new());

    // Names: every printable ASCII character (but '/', which no folder name can hold) between
    // two letters, and at either end; the folder is named the same.
    for b in 0x20u8..0x7f {
        let ch = b as char;
        if ch == '/' {
            continue;
        }
        for name in [format!("a{ch}b"), format!("{ch}ab"), format!("ab{ch}")] {
            if name.starts_with(' ') || name.ends_with(' ') {
                // Covered below: the reference strips spaces before checking.
                continue;
            }
            c.fm(
                format!("name {name:?}"),
                &name,
                &format!("name: {}\ndescription: d", quoted(&name)),
                Agree,
            );
        }
    }
    // Name lengths, with and without hyphens and digits.
    for n in [1usize, 2, 63, 64, 65, 66, 100] {
        let plain = "a".repeat(n);
        c.with(format!("name of {n} letters"), &plain, "", Agree);
        let mixed: String = (0..n)
            .map(|i| match i % 4 {
                1 => '-',
                3 => '7',
                _ => 'x',
            })
            .collect::<String>()
            .trim_end_matches('-')
            .to_string();
        if !mixed.is_empty() {
            c.with(format!("name {mixed:?}"), &mixed, "", Agree);
        }
    }
    for name in [
        "pdf",
        "pdf-tools",
        "pdf--tools",
        "-pdf",
        "pdf-",
        "-",
        "--",
        "a-b-c-d",
        "0",
        "2048",
        "7zip",
        "v2-api",
        "x86-64",
        "PDF",
        "Pdf-Tools",
        "pdf_tools",
        "pdf.tools",
        "pdf tools",
    ] {
        c.with(format!("name {name:?}"), name, "", Agree);
        // Quoted, the same.
        c.fm(
            format!("quoted name {name:?}"),
            name,
            &format!("name: {}\ndescription: d", quoted(name)),
            Agree,
        );
    }
    // Names YAML reads as numbers or booleans are their text, as the reference reads them.
    for name in [
        "123", "1e3", "0x1f", "0o17", "010", "true", "false", "yes", "no", "on",
    ] {
        c.with(format!("name {name:?} written plain"), name, "", Agree);
    }
    c.with("name null", "null", "", differs(false, true, NULL_IS_NONE));
    // Unicode names.
    for (name, reference) in [
        ("café", true),
        ("straße", true),
        ("日本語", true),
        ("données-ok", true),
        ("٣٤", true),
        ("ǅemal", false),
        ("Café", false),
        ("ａｂｃ", true),
        ("x²", true),
        ("ﬁle", true),
    ] {
        c.with(
            format!("unicode name {name:?}"),
            name,
            "",
            differs(false, reference, ASCII_ONLY),
        );
    }
    c.fm(
        "non-ASCII hyphen-like dash",
        "pdf–tools",
        "name: pdf–tools\ndescription: d",
        Agree,
    );
    // Name against folder.
    c.fm(
        "folder differs",
        "pdf-tools",
        "name: pdf-processing\ndescription: d",
        Agree,
    );
    c.fm(
        "folder differs in case",
        "Pdf",
        "name: pdf\ndescription: d",
        Agree,
    );
    c.fm(
        "folder differs by a hyphen",
        "pdf-",
        "name: pdf\ndescription: d",
        Agree,
    );
    c.fm(
        "name quoted with spaces",
        "pdf",
        "name: \" pdf \"\ndescription: d",
        differs(false, true, NO_STRIP),
    );
    c.fm(
        "name with trailing spaces, plain",
        "pdf",
        "name: pdf   \ndescription: d",
        Agree,
    );
    c.fm(
        "name with a comment",
        "pdf",
        "name: pdf # the name\ndescription: d",
        Agree,
    );
    c.fm("name missing", "pdf", "description: d", Agree);
    c.fm("name empty", "pdf", "name:\ndescription: d", Agree);
    c.fm(
        "name empty quoted",
        "pdf",
        "name: \"\"\ndescription: d",
        Agree,
    );
    c.fm(
        "name a list",
        "pdf",
        "name:\n  - pdf\ndescription: d",
        Agree,
    );
    c.fm(
        "name a mapping",
        "pdf",
        "name:\n  a: pdf\ndescription: d",
        Agree,
    );
    c.fm(
        "name a flow list",
        "pdf",
        "name: [pdf]\ndescription: d",
        Agree,
    );

    // Descriptions.
    for n in [1usize, 2, 500, 1023, 1024, 1025, 2000] {
        c.with_desc(format!("description of {n} characters"), &"d".repeat(n));
        c.with_desc(
            format!("description of {n} two-byte characters"),
            &"é".repeat(n),
        );
    }
    c.with_desc(
        "description of 1024 four-byte characters",
        &"😀".repeat(1024),
    );
    c.with_desc(
        "description of 1025 four-byte characters",
        &"😀".repeat(1025),
    );
    c.with_desc("description in quotes", "\"Quoted: with a colon.\"");
    c.with_desc("description in single quotes", "'It''s quoted.'");
    c.with_desc("description with escapes", "\"Caf\\u00e9 \\\"q\\\"\"");
    c.with_desc(
        "description unicode",
        "Zusammenfassung für Berichte — 日本語 ✓",
    );
    c.with_desc("description number", "42");
    c.with_desc("description float as written", "1.10");
    c.with_desc("description boolean", "true");
    c.with_desc("description yes", "yes");
    c.with_desc("description date", "2026-01-01");
    c.with_desc("description not a number", ".nan");
    c.with_desc("description infinity", ".inf");
    c.with_desc("description negative infinity as written", "-.Inf");
    c.with_desc("description hex", "0x1F");
    c.with_desc("description plain with hash", "Use #tags here");
    c.with_desc("description plain with a colon", "Use: this");
    c.with_desc("description flow list", "[a, b]");
    c.with_desc("description flow mapping", "{a: b}");
    c.with_desc("description unclosed flow", "[unclosed");
    c.with_desc("description unclosed quote", "\"unclosed");
    c.with_desc("description empty quoted", "\"\"");
    c.with_desc("description blank quoted", "\"   \"");
    c.fm(
        "description null",
        "pdf",
        "name: pdf\ndescription: null",
        differs(false, true, NULL_IS_NONE),
    );
    c.fm(
        "description tilde",
        "pdf",
        "name: pdf\ndescription: ~",
        differs(false, true, NULL_IS_NONE),
    );
    // Descriptions of mixed characters (a fixed pseudo-random sequence) in the three ways of
    // writing text in YAML: double-quoted, single-quoted and as a literal block.
    let pool: Vec<char> = "abcXYZ019 :#'\"\\-*&!%@`{}[],|>?=~éß日本😀—\u{a0}\t"
        .chars()
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for i in 0..60 {
        let len = 1 + next(60);
        let text: String = (0..len).map(|_| pool[next(pool.len())]).collect();
        // "---" is a documented difference, covered above.
        let text = text.replace("---", "-+-");
        c.with_desc(
            format!("double-quoted mixed description {i}"),
            &quoted(&text),
        );
        c.with_desc(
            format!("single-quoted mixed description {i}"),
            &format!("'{}'", text.replace('\'', "''")),
        );
        // A literal block's lines may not start with a space or tab (that would be more
        // indentation), so each line starts with a letter.
        let lines: Vec<String> = text.split('|').map(|l| format!("  x{l}")).collect();
        c.with_desc(
            format!("literal mixed description {i}"),
            &format!("|-\n{}", lines.join("\n")),
        );
    }
    c.fm("description missing", "pdf", "name: pdf", Agree);
    c.fm("description empty", "pdf", "name: pdf\ndescription:", Agree);
    c.fm(
        "description a list",
        "pdf",
        "name: pdf\ndescription:\n  - a\n  - b",
        Agree,
    );
    c.fm(
        "description a mapping",
        "pdf",
        "name: pdf\ndescription:\n  a: b",
        Agree,
    );
    // Block scalars: the trailing newline counts.
    for (label, n) in [("1023+newline", 1023usize), ("1024+newline", 1024)] {
        c.fm(
            format!("literal description {label}"),
            "pdf",
            &format!("name: pdf\ndescription: |\n  {}", "l".repeat(n)),
            Agree,
        );
        c.fm(
            format!("folded description {label}"),
            "pdf",
            &format!("name: pdf\ndescription: >\n  {}", "f".repeat(n)),
            Agree,
        );
    }
    c.fm(
        "folded description over lines",
        "pdf",
        "name: pdf\ndescription: >-\n  Line one\n  continues: with a colon.\n\n  Second paragraph.",
        Agree,
    );
    c.fm(
        "literal description keeping lines",
        "pdf",
        "name: pdf\ndescription: |-\n  Line one\n    indented\n  end",
        Agree,
    );
    c.fm(
        "plain description over lines",
        "pdf",
        "name: pdf\ndescription: starts here\n  and goes on here",
        Agree,
    );
    c.fm(
        "description containing ---",
        "pdf",
        "name: pdf\ndescription: Use --- as a separator.",
        differs(true, true, SPLIT_DASHES),
    );

    // compatibility.
    for n in [1usize, 499, 500, 501] {
        c.with(
            format!("compatibility of {n} characters"),
            "pdf",
            &format!("compatibility: {}", "c".repeat(n)),
            Agree,
        );
    }
    c.with("compatibility null", "pdf", "compatibility:", Agree);
    c.with(
        "compatibility empty quoted",
        "pdf",
        "compatibility: \"\"",
        differs(false, true, COMPAT_MIN),
    );
    c.with(
        "compatibility blank",
        "pdf",
        "compatibility: \"   \"",
        differs(false, true, COMPAT_MIN),
    );
    c.with("compatibility number", "pdf", "compatibility: 3", Agree);
    c.with(
        "compatibility a list",
        "pdf",
        "compatibility:\n  - git",
        Agree,
    );

    // license.
    c.with("license name", "pdf", "license: Apache-2.0", Agree);
    c.with(
        "license file",
        "pdf",
        "license: Proprietary. LICENSE.txt has complete terms",
        Agree,
    );
    c.with("license number", "pdf", "license: 2.0", Agree);
    c.with("license null", "pdf", "license:", Agree);
    c.with(
        "license a list",
        "pdf",
        "license:\n  - MIT\n  - Apache-2.0",
        differs(false, true, LICENSE_STRING),
    );

    // metadata.
    c.with(
        "metadata strings",
        "pdf",
        "metadata:\n  author: example-org\n  version: \"1.0\"",
        Agree,
    );
    c.with(
        "metadata number and boolean",
        "pdf",
        "metadata:\n  version: 1.10\n  beta: true\n  count: 3",
        Agree,
    );
    c.with("metadata empty value", "pdf", "metadata:\n  author:", Agree);
    c.with("metadata null", "pdf", "metadata:", Agree);
    c.with(
        "metadata nested list",
        "pdf",
        "metadata:\n  tags:\n    - a\n    - b",
        differs(false, true, METADATA_STRINGS),
    );
    c.with(
        "metadata nested mapping",
        "pdf",
        "metadata:\n  hermes:\n    tags: a",
        differs(false, true, METADATA_STRINGS),
    );
    c.with(
        "metadata a string",
        "pdf",
        "metadata: hello",
        differs(false, true, METADATA_STRINGS),
    );
    c.with(
        "metadata a list",
        "pdf",
        "metadata:\n  - a",
        differs(false, true, METADATA_STRINGS),
    );
    c.with(
        "metadata flow mapping",
        "pdf",
        "metadata: {author: me}",
        differs(true, false, STRICT_YAML),
    );

    // allowed-tools.
    c.with(
        "allowed-tools string",
        "pdf",
        "allowed-tools: Bash(git:*) Read",
        Agree,
    );
    c.with(
        "allowed-tools with commas",
        "pdf",
        "allowed-tools: Read, Grep, Glob",
        Agree,
    );
    c.with("allowed-tools null", "pdf", "allowed-tools:", Agree);
    c.with(
        "allowed-tools a list",
        "pdf",
        "allowed-tools:\n  - Read\n  - Bash",
        differs(false, true, TOOLS_STRING),
    );
    c.with(
        "allowed-tools a flow list",
        "pdf",
        "allowed-tools: [Read]",
        Agree,
    );

    // Every field at once.
    c.with(
        "all fields",
        "pdf",
        "license: MIT\ncompatibility: Needs git.\nmetadata:\n  author: me\nallowed-tools: Read",
        Agree,
    );
    // Fields outside the spec.
    for field in [
        "argument-hint: \"[file]\"",
        "version: 1.0.0",
        "user-invocable: true",
        "disable-model-invocation: true",
        "context: fork",
        "Name: pdf",
        "\"1\": one",
    ] {
        c.with(
            format!("extra field {field:?}"),
            "pdf",
            field,
            differs(true, false, EXTRA_FIELDS),
        );
    }

    // YAML oddities.
    c.fm(
        "duplicate key",
        "pdf",
        "name: pdf\ndescription: one\ndescription: two",
        Agree,
    );
    c.fm(
        "anchor and alias",
        "pdf",
        "name: &n pdf\ndescription: d\nlicense: *n",
        differs(true, false, STRICT_YAML),
    );
    c.fm(
        "explicit tag",
        "pdf",
        "name: pdf\ndescription: !!str d",
        differs(true, false, STRICT_YAML),
    );
    c.fm(
        "flow frontmatter",
        "pdf",
        "{name: pdf, description: d}",
        differs(true, false, STRICT_YAML),
    );
    c.fm("frontmatter a list", "pdf", "- name: pdf", Agree);
    c.fm("frontmatter a scalar", "pdf", "pdf", Agree);
    c.fm(
        "quoted keys",
        "pdf",
        "\"name\": pdf\n'description': d",
        Agree,
    );
    c.fm(
        "comments",
        "pdf",
        "# a skill\nname: pdf # name\n# more\ndescription: d",
        Agree,
    );
    c.fm(
        "tab indentation",
        "pdf",
        "name: pdf\ndescription:\n\t- d",
        Agree,
    );
    c.fm(
        "bad indentation",
        "pdf",
        "name: pdf\n  description: d",
        Agree,
    );
    c.fm(
        "document end marker",
        "pdf",
        "name: pdf\ndescription: d\n...",
        Agree,
    );
    c.fm(
        "key without a colon",
        "pdf",
        "name pdf\ndescription: d",
        Agree,
    );

    // File layout.
    c.add("no frontmatter", "pdf", "# pdf\n".into(), Agree);
    c.add(
        "frontmatter not closed",
        "pdf",
        "---\nname: pdf\ndescription: d\n".into(),
        Agree,
    );
    c.add(
        "blank line before the frontmatter",
        "pdf",
        "\n---\nname: pdf\ndescription: d\n---\n".into(),
        Agree,
    );
    c.add("empty frontmatter", "pdf", "---\n---\nbody\n".into(), Agree);
    c.add(
        "no body",
        "pdf",
        "---\nname: pdf\ndescription: d\n---".into(),
        Agree,
    );
    c.add(
        "CRLF line endings",
        "pdf",
        "---\r\nname: pdf\r\ndescription: Windows lines.\r\n---\r\nBody\r\n".into(),
        Agree,
    );
    c.add(
        "spaces after the opening line",
        "pdf",
        "---  \nname: pdf\ndescription: d\n---\n".into(),
        Agree,
    );
    c.add(
        "a rule in the body",
        "pdf",
        "---\nname: pdf\ndescription: d\n---\n\nText\n\n---\n\nMore\n".into(),
        Agree,
    );
    c.add(
        "byte-order mark",
        "pdf",
        "\u{feff}---\nname: pdf\ndescription: d\n---\n".into(),
        differs(true, false, BOM),
    );
    c.0.push(Case {
        label: "file named skill.md".into(),
        folder: "pdf".into(),
        file: "skill.md",
        text: md("name: pdf\ndescription: d"),
        expect: differs(false, true, LOWER_FILE),
    });
    c.0
}

impl Cases {
    /// A case with the name `pdf` and the description written as `yaml`.
    fn with_desc(&mut self, label: impl Into<String>, yaml: &str) {
        self.fm(
            label,
            "pdf",
            &format!("name: pdf\ndescription: {yaml}"),
            Expect::Agree,
        );
    }
}

/// The reference validator's verdict on each folder, in order.
fn reference(dirs: &[PathBuf]) -> Vec<Value> {
    let python = venv().join("bin/python");
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(VALIDATE_PY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&list).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["versions"],
        serde_json::json!([SKILLS_REF_VERSION, STRICTYAML_VERSION]),
        "the differences were established against skills-ref {SKILLS_REF_VERSION} on \
         strictyaml {STRICTYAML_VERSION}: run scripts/prerequisites --tests"
    );
    v["results"].as_array().unwrap().clone()
}

#[test]
fn skill_load_accepts_what_the_reference_validator_accepts() {
    let cases = cases();
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dir = tmp.path().join(i.to_string()).join(&case.folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(case.file), &case.text).unwrap();
        dirs.push(dir);
    }
    let verdicts = reference(&dirs);
    assert_eq!(verdicts.len(), cases.len());

    let mut failures = Vec::new();
    let (mut agreed, mut documented) = (0, 0);
    for ((case, dir), verdict) in cases.iter().zip(&dirs).zip(&verdicts) {
        let ours = Skill::load(dir);
        let ref_ok = verdict["errors"].as_array().unwrap().is_empty();
        let show = || {
            format!(
                "{:?} (folder {:?}): nanoclaw {}; reference {}",
                case.label,
                case.folder,
                match &ours {
                    Ok(_) => "accepts".to_string(),
                    Err(e) => format!("refuses ({e})"),
                },
                if ref_ok {
                    format!("accepts {}", verdict["props"])
                } else {
                    format!("refuses {}", verdict["errors"])
                }
            )
        };
        match case.expect {
            Expect::Agree => {
                if ours.is_ok() != ref_ok {
                    failures.push(format!("disagree: {}", show()));
                    continue;
                }
                if let Ok(skill) = &ours {
                    // The same name and description (read_properties strips it).
                    let (name, desc) =
                        (&verdict["props"]["name"], &verdict["props"]["description"]);
                    if name != skill.name() || desc != skill.frontmatter.description.trim() {
                        failures.push(format!(
                            "read differently: {}; nanoclaw read name {:?} description {:?}",
                            show(),
                            skill.name(),
                            skill.frontmatter.description
                        ));
                        continue;
                    }
                }
                agreed += 1;
            }
            Expect::Differs {
                ours: ours_ok,
                reference: expected_ref,
                why,
            } => {
                if ours.is_ok() != ours_ok || ref_ok != expected_ref {
                    failures.push(format!(
                        "documented difference ({why}) no longer holds: {}",
                        show()
                    ));
                    continue;
                }
                if why == EXTRA_FIELDS {
                    let w = ours.as_ref().unwrap().warnings();
                    if !w
                        .iter()
                        .any(|w| w.contains("not in the Agent Skills specification"))
                    {
                        failures.push(format!("no warning for the extra field: {}", show()));
                        continue;
                    }
                }
                documented += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail ({agreed} agree, {documented} differ as documented):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The cases cover both outcomes on both sides.
    let accepted = verdicts
        .iter()
        .filter(|v| v["errors"].as_array().unwrap().is_empty())
        .count();
    let mixed_accepted = cases
        .iter()
        .zip(&verdicts)
        .filter(|(c, v)| c.label.contains("mixed") && v["errors"].as_array().unwrap().is_empty())
        .count();
    eprintln!(
        "{} cases: {agreed} agree, {documented} differ as documented; the reference accepts \
         {accepted} ({mixed_accepted} of the 180 mixed descriptions)",
        cases.len()
    );
    assert!(
        mixed_accepted > 150,
        "{mixed_accepted} mixed descriptions accepted"
    );
    assert!(
        accepted > 50 && cases.len() - accepted > 50,
        "{accepted} of {}",
        cases.len()
    );
}

//! Graph rendering: text, Graphviz dot (checked by `dot` when installed) and Mermaid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{skill, write};
use nanoclaw_skills::{Catalog, Format, SkillState, Source};

fn dep_skill(root: &Path, name: &str, version: &str, requires: &[(&str, &str)]) {
    let mut toml = format!("version = \"{version}\"\n[requires]\n");
    for (n, r) in requires {
        toml.push_str(&format!("{n} = \"{r}\"\n"));
    }
    skill(root, name, Some(&toml));
}

/// app (enabled) → auth, http (fine), db (missing), log (wrong version); a broken skill, an idle
/// one, and a two-skill cycle.
fn sample() -> (tempfile::TempDir, Catalog) {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    dep_skill(
        r,
        "app",
        "1.0.0",
        &[("auth", "^2"), ("db", "^3"), ("http", "^1"), ("log", "^2")],
    );
    dep_skill(r, "auth", "2.3.0", &[("http", "^1")]);
    dep_skill(r, "http", "1.4.0", &[]);
    dep_skill(r, "log", "1.0.0", &[]);
    dep_skill(r, "idle", "0.1.0", &[]);
    dep_skill(r, "cyc-a", "1.0.0", &[("cyc-b", "*")]);
    dep_skill(r, "cyc-b", "1.0.0", &[("cyc-a", "*")]);
    write(&r.join("bad"), "SKILL.md", "---\nname: bad\n---\n");
    let c = Catalog::load(&[Source::user(r)]);
    (tmp, c)
}

#[test]
fn states_follow_requirements_and_broken_wins() {
    let (_t, c) = sample();
    let s = c.states(&["app", "bad"]);
    assert_eq!(s["app"], SkillState::Enabled);
    assert_eq!(s["auth"], SkillState::Enabled);
    assert_eq!(s["http"], SkillState::Enabled);
    assert_eq!(s["log"], SkillState::Enabled);
    assert_eq!(s["idle"], SkillState::Disabled);
    assert_eq!(s["bad"], SkillState::Broken);
}

#[test]
fn text_is_an_indented_tree_with_markers() {
    let (_t, c) = sample();
    let text = c.graph().render(Format::Text, &c.states(&["app"]));
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    let app = lines
        .iter()
        .position(|l| *l == "[enabled] app 1.0.0")
        .unwrap();
    assert_eq!(
        &lines[app + 1..app + 6],
        [
            "    [enabled] auth 2.3.0 (requires ^2)",
            "        [enabled] http 1.4.0 (requires ^1)",
            "    [missing] db (requires ^3): not installed",
            "    [enabled] http 1.4.0 (requires ^1)",
            "    [enabled] log 1.0.0 (requires ^2): version 1.0.0 does not fit",
        ]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[broken] bad: ") && l.contains("description is missing"))
    );
    assert!(lines.contains(&"[disabled] idle 0.1.0"));
    // The cycle has no root; it is listed from its first skill and cut where it repeats.
    let a = lines
        .iter()
        .position(|l| *l == "[disabled] cyc-a 1.0.0")
        .unwrap();
    assert_eq!(lines[a + 1], "    [disabled] cyc-b 1.0.0 (requires *)");
    assert!(lines[a + 2].starts_with("        [cycle] cyc-a (requires *)"));
    // Each installed skill is a root or appears under one; none is listed twice as a root.
    let roots: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with(' '))
        .copied()
        .collect();
    assert_eq!(roots.len(), 4, "app, bad, idle, cyc-a: {roots:?}");
}

#[test]
fn dot_has_every_node_and_edge_and_graphviz_accepts_it() {
    let (_t, c) = sample();
    let dot = c.graph().render(Format::Dot, &c.states(&["app"]));
    assert!(dot.starts_with("digraph skills {\n"));
    assert!(dot.ends_with("}\n"));
    for n in [
        "app", "auth", "http", "log", "idle", "bad", "cyc-a", "cyc-b",
    ] {
        assert!(
            dot.contains(&format!("  \"{n}\" [label=")),
            "node {n} in {dot}"
        );
    }
    assert!(dot.contains("\"app\" -> \"auth\" [label=\"^2\"];"));
    assert!(
        dot.contains("\"app\" -> \"missing:db\" [label=\"^3\", color=\"#c62828\", style=dashed];")
    );
    assert!(dot.contains("\"missing:db\" [label=\"db\\n[missing]\""));
    assert!(dot.contains("\"app\" -> \"log\" [label=\"^2\", color=\"#c62828\", style=dashed"));
    let bad = dot.lines().find(|l| l.starts_with("  \"bad\" [")).unwrap();
    assert!(bad.contains("[broken]") && bad.contains("#ffcdd2"), "{bad}");
    let idle = dot.lines().find(|l| l.starts_with("  \"idle\" [")).unwrap();
    assert!(idle.contains("[disabled]"), "{idle}");

    let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("SKIPPED the Graphviz check: `dot` is not installed (apt-get install graphviz)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dot refused the graph: {stderr}\n{dot}"
    );
    assert!(stderr.trim().is_empty(), "dot warned: {stderr}");
    // Graphviz writes '-' in SVG text as "&#45;".
    let svg = String::from_utf8_lossy(&out.stdout).replace("&#45;", "-");
    assert!(svg.contains("<svg"));
    // Graphviz drew every node (titles are the node ids).
    for n in ["app", "missing:db", "cyc-b", "bad"] {
        assert!(
            svg.contains(&format!("<title>{n}</title>")),
            "{n} not drawn"
        );
    }
}

#[test]
fn a_name_needing_escapes_stays_inside_its_quotes() {
    // A broken folder's name is anything the file system allows.
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("we\"ird\\dir"),
        "SKILL.md",
        "no frontmatter",
    );
    let c = Catalog::load(&[Source::user(tmp.path())]);
    let dot = c.graph().render(Format::Dot, &c.states::<&str>(&[]));
    assert!(dot.contains("\"we\\\"ird\\\\dir\" [label="), "{dot}");
    let mermaid = c.graph().render(Format::Mermaid, &c.states::<&str>(&[]));
    assert!(
        mermaid.contains("n0[\"we#quot;ird\\dir [broken]\"]:::broken"),
        "{mermaid}"
    );
    if let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dot.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn mermaid_is_a_top_down_graph_with_classes_and_defined_ids() {
    let (_t, c) = sample();
    let m = c.graph().render(Format::Mermaid, &c.states(&["app"]));
    println!("{m}");
    let mut lines = m.lines();
    assert_eq!(lines.next(), Some("graph TD"));
    let mut defined = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut classes = BTreeSet::new();
    for l in m.lines().skip(1) {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("classDef ") {
            classes.insert(rest.split(' ').next().unwrap().to_string());
        } else if l.contains("-->") || l.contains("-.->") {
            let parts: Vec<&str> = l.split_whitespace().collect();
            used.insert(parts[0].to_string());
            used.insert(parts.last().unwrap().to_string());
        } else {
            let (id, _) = l.split_once('[').unwrap();
            defined.insert(id.to_string());
            let class = l.rsplit_once(":::").unwrap().1;
            assert!(
                ["enabled", "disabled", "broken", "missing"].contains(&class),
                "{l}"
            );
        }
    }
    assert!(
        used.is_subset(&defined),
        "edges use undefined ids: {used:?} vs {defined:?}"
    );
    assert_eq!(
        classes,
        ["broken", "disabled", "enabled", "missing"]
            .map(String::from)
            .into()
    );
    assert!(m.contains("[\"app 1.0.0 [enabled]\"]:::enabled"));
    assert!(m.contains("[\"db [missing]\"]:::missing"));
    assert!(m.contains("[\"bad [broken]\"]:::broken"));
    assert!(m.contains("[\"idle 0.1.0 [disabled]\"]:::disabled"));
    assert!(m.contains("-.->|\"^3 missing\"|"));
    assert!(m.contains("-.->|\"^2 but version 1.0.0\"|"));
    assert!(m.contains("-->|\"^2\"|"));
}

//! The requirement graph of a catalog, rendered as text, Graphviz dot or Mermaid.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::catalog::Catalog;

/// How to render a [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An indented tree with `[enabled]`/`[disabled]`/`[broken]`/`[missing]` markers.
    Text,
    /// Graphviz `digraph`.
    Dot,
    /// Mermaid `graph TD`.
    Mermaid,
    /// A standalone SVG drawing (the dashboard's skill graph).
    Svg,
}

/// A skill's state as shown in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkillState {
    /// Active (asked for, or required by something active).
    Enabled,
    /// Installed, not active.
    Disabled,
    /// Failed to load.
    Broken,
}

impl SkillState {
    pub(crate) fn marker(self) -> &'static str {
        match self {
            SkillState::Enabled => "enabled",
            SkillState::Disabled => "disabled",
            SkillState::Broken => "broken",
        }
    }
}

/// How a requirement stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeState {
    /// The required skill is installed at a fitting version.
    Ok,
    /// The required skill is not installed.
    Missing,
    /// Installed, but its version is outside the range (the string says what is installed).
    Incompatible(String),
}

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The skill that requires.
    pub from: String,
    /// The skill required.
    pub to: String,
    /// The version range.
    pub range: String,
    /// Whether it is met.
    pub state: EdgeState,
}

/// A node: an installed skill (loaded or broken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its version, if it has one.
    pub version: Option<String>,
    /// Why it is broken, if it is.
    pub error: Option<String>,
}

/// The requirement graph: every catalog entry, and an edge per requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Edges, ordered by (from, to).
    pub edges: Vec<Edge>,
}

impl Catalog {
    /// The catalog's requirement graph.
    pub fn graph(&self) -> Graph {
        let mut nodes = BTreeMap::new();
        let mut edges = Vec::new();
        for e in self.entries() {
            nodes.insert(
                e.name.clone(),
                Node {
                    name: e.name.clone(),
                    version: e.ok().and_then(|s| s.version()).map(|v| v.to_string()),
                    error: e.error().map(|err| err.to_string()),
                },
            );
            let Some(skill) = e.ok() else { continue };
            for (dep, range) in &skill.manifest.requires {
                let state = match self.get(dep) {
                    None => EdgeState::Missing,
                    Some(d) => match d.ok() {
                        // A broken target shows as a broken node; the edge itself is fine.
                        None => EdgeState::Ok,
                        Some(ds) => match ds.version() {
                            Some(v) if range.matches(v) => EdgeState::Ok,
                            None if *range == semver::VersionReq::STAR => EdgeState::Ok,
                            Some(v) => EdgeState::Incompatible(format!("version {v}")),
                            None => EdgeState::Incompatible("no version".into()),
                        },
                    },
                };
                edges.push(Edge {
                    from: e.name.clone(),
                    to: dep.clone(),
                    range: range.to_string(),
                    state,
                });
            }
        }
        Graph { nodes, edges }
    }

    /// Each entry's state when `enabled` (and what it requires) is active: broken entries are
    /// [`SkillState::Broken`] whatever is asked; skills that are reachable from `enabled`
    /// through requirements are enabled, the rest disabled.
    pub fn states<S: AsRef<str>>(&self, enabled: &[S]) -> BTreeMap<String, SkillState> {
        let mut on = BTreeSet::new();
        let mut stack: Vec<String> = enabled.iter().map(|s| s.as_ref().to_string()).collect();
        while let Some(n) = stack.pop() {
            if !on.insert(n.clone()) {
                continue;
            }
            if let Some(s) = self.skill(&n) {
                stack.extend(s.manifest.requires.keys().cloned());
            }
        }
        self.entries()
            .map(|e| {
                let st = if e.error().is_some() {
                    SkillState::Broken
                } else if on.contains(&e.name) {
                    SkillState::Enabled
                } else {
                    SkillState::Disabled
                };
                (e.name.clone(), st)
            })
            .collect()
    }
}

fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn mermaid_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '|' => out.push_str("#124;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl Graph {
    pub(crate) fn state(&self, name: &str, states: &BTreeMap<String, SkillState>) -> SkillState {
        match self.nodes.get(name) {
            Some(n) if n.error.is_some() => SkillState::Broken,
            _ => states.get(name).copied().unwrap_or(SkillState::Disabled),
        }
    }

    pub(crate) fn label(&self, name: &str) -> String {
        match self.nodes.get(name).and_then(|n| n.version.as_deref()) {
            Some(v) => format!("{name} {v}"),
            None => name.to_string(),
        }
    }

    /// Missing requirement targets, in name order.
    fn missing(&self) -> BTreeSet<&str> {
        self.edges
            .iter()
            .filter(|e| e.state == EdgeState::Missing)
            .map(|e| e.to.as_str())
            .collect()
    }

    /// Renders the graph. `states` gives each skill's state (see [`Catalog::states`]); a skill
    /// not in it is disabled, and a broken one is always shown broken.
    pub fn render(&self, format: Format, states: &BTreeMap<String, SkillState>) -> String {
        match format {
            Format::Text => self.render_text(states),
            Format::Dot => self.render_dot(states),
            Format::Mermaid => self.render_mermaid(states),
            Format::Svg => self.render_svg(states),
        }
    }

    fn render_text(&self, states: &BTreeMap<String, SkillState>) -> String {
        let required: BTreeSet<&str> = self.edges.iter().map(|e| e.to.as_str()).collect();
        let mut out = String::new();
        let mut printed = BTreeSet::new();
        let roots: Vec<&str> = self
            .nodes
            .keys()
            .map(String::as_str)
            .filter(|n| !required.contains(n))
            .collect();
        for root in roots {
            self.text_node(
                root,
                None,
                0,
                states,
                &mut Vec::new(),
                &mut printed,
                &mut out,
            );
        }
        // Skills only reachable through a cycle have no root; list them from the first by name.
        let rest: Vec<&str> = self
            .nodes
            .keys()
            .map(String::as_str)
            .filter(|n| !printed.contains(*n))
            .collect();
        for n in rest {
            if !printed.contains(n) {
                self.text_node(n, None, 0, states, &mut Vec::new(), &mut printed, &mut out);
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn text_node<'a>(
        &'a self,
        name: &'a str,
        via: Option<&Edge>,
        depth: usize,
        states: &BTreeMap<String, SkillState>,
        path: &mut Vec<&'a str>,
        printed: &mut BTreeSet<&'a str>,
        out: &mut String,
    ) {
        let indent = "    ".repeat(depth);
        let req = via.map_or(String::new(), |e| format!(" (requires {})", e.range));
        if let Some(edge) = via {
            match &edge.state {
                EdgeState::Missing => {
                    let _ = writeln!(out, "{indent}[missing] {name}{req}: not installed");
                    return;
                }
                EdgeState::Incompatible(found) => {
                    printed.insert(name);
                    let _ = writeln!(
                        out,
                        "{indent}[{}] {}{req}: {found} does not fit",
                        self.state(name, states).marker(),
                        self.label(name)
                    );
                    return;
                }
                EdgeState::Ok => {}
            }
        }
        if path.contains(&name) {
            let _ = writeln!(
                out,
                "{indent}[cycle] {name}{req}: requires itself through the skills above"
            );
            return;
        }
        let st = self.state(name, states);
        let err = self
            .nodes
            .get(name)
            .and_then(|n| n.error.as_deref())
            .map_or(String::new(), |e| format!(": {e}"));
        let _ = writeln!(
            out,
            "{indent}[{}] {}{req}{err}",
            st.marker(),
            self.label(name)
        );
        printed.insert(name);
        path.push(name);
        for e in self.edges.iter().filter(|e| e.from == name) {
            self.text_node(&e.to, Some(e), depth + 1, states, path, printed, out);
        }
        path.pop();
    }

    fn render_dot(&self, states: &BTreeMap<String, SkillState>) -> String {
        let mut out = String::from(
            "digraph skills {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n",
        );
        for name in self.nodes.keys() {
            let st = self.state(name, states);
            let (fill, border, style) = match st {
                SkillState::Enabled => ("#c8e6c9", "#2e7d32", "rounded,filled"),
                SkillState::Disabled => ("#eeeeee", "#9e9e9e", "rounded,filled"),
                SkillState::Broken => ("#ffcdd2", "#c62828", "rounded,filled,bold"),
            };
            let _ = writeln!(
                out,
                "  {} [label={}, fillcolor=\"{fill}\", color=\"{border}\", style=\"{style}\", tooltip={}];",
                dot_quote(name),
                dot_quote(&format!("{}\n[{}]", self.label(name), st.marker())),
                dot_quote(
                    self.nodes
                        .get(name)
                        .and_then(|n| n.error.as_deref())
                        .unwrap_or(st.marker())
                ),
            );
        }
        for m in self.missing() {
            let _ = writeln!(
                out,
                "  {} [label={}, fillcolor=\"#fff3e0\", color=\"#e65100\", style=\"dashed,filled\"];",
                dot_quote(&format!("missing:{m}")),
                dot_quote(&format!("{m}\n[missing]")),
            );
        }
        for e in &self.edges {
            let (to, attrs) = match &e.state {
                EdgeState::Ok => (e.to.clone(), String::new()),
                EdgeState::Missing => (
                    format!("missing:{}", e.to),
                    ", color=\"#c62828\", style=dashed".to_string(),
                ),
                EdgeState::Incompatible(found) => (
                    e.to.clone(),
                    format!(
                        ", color=\"#c62828\", style=dashed, tooltip={}",
                        dot_quote(&format!("{found} does not fit {}", e.range))
                    ),
                ),
            };
            let _ = writeln!(
                out,
                "  {} -> {} [label={}{attrs}];",
                dot_quote(&e.from),
                dot_quote(&to),
                dot_quote(&e.range)
            );
        }
        out.push_str("}\n");
        out
    }

    fn render_mermaid(&self, states: &BTreeMap<String, SkillState>) -> String {
        // Node ids are generated (n0, n1, m0 …): names are safe, but broken folders may not be.
        let ids: BTreeMap<&str, String> = self
            .nodes
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), format!("n{i}")))
            .collect();
        let missing: BTreeMap<&str, String> = self
            .missing()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, format!("m{i}")))
            .collect();
        let mut out = String::from("graph TD\n");
        for (name, id) in &ids {
            let st = self.state(name, states);
            let _ = writeln!(
                out,
                "  {id}[\"{} [{}]\"]:::{}",
                mermaid_text(&self.label(name)),
                st.marker(),
                st.marker()
            );
        }
        for (name, id) in &missing {
            let _ = writeln!(
                out,
                "  {id}[\"{} [missing]\"]:::missing",
                mermaid_text(name)
            );
        }
        for e in &self.edges {
            let Some(from) = ids.get(e.from.as_str()) else {
                continue;
            };
            let (to, arrow, label) = match &e.state {
                EdgeState::Ok => (ids.get(e.to.as_str()), "-->", e.range.clone()),
                EdgeState::Missing => (
                    missing.get(e.to.as_str()),
                    "-.->",
                    format!("{} missing", e.range),
                ),
                EdgeState::Incompatible(found) => (
                    ids.get(e.to.as_str()),
                    "-.->",
                    format!("{} but {found}", e.range),
                ),
            };
            if let Some(to) = to {
                let _ = writeln!(out, "  {from} {arrow}|\"{}\"| {to}", mermaid_text(&label));
            }
        }
        out.push_str("  classDef enabled fill:#c8e6c9,stroke:#2e7d32\n");
        out.push_str("  classDef disabled fill:#eeeeee,stroke:#9e9e9e\n");
        out.push_str("  classDef broken fill:#ffcdd2,stroke:#c62828,stroke-width:2px\n");
        out.push_str("  classDef missing fill:#fff3e0,stroke:#e65100,stroke-dasharray:4\n");
        out
    }
}

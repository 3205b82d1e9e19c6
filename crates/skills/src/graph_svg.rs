//! The requirement graph drawn as SVG (the dashboard's skill graph; `--format svg`), with no
//! layout engine to install: skills in columns by how deep they sit in the requirement chains
//! (a skill left of what it requires), each column ordered to keep lines short.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::graph::{EdgeState, Graph, SkillState};

/// Box height, gaps and text metrics (DejaVu Sans at 13 px: about 7.6 px a character).
const BOX_H: f64 = 44.0;
const ROW_GAP: f64 = 22.0;
const COL_GAP: f64 = 70.0;
const MARGIN: f64 = 20.0;
const CHAR_W: f64 = 7.6;
const LEGEND_H: f64 = 40.0;

/// What a drawn box is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
    Skill(SkillState),
    /// Required but not installed.
    Missing,
}

impl Look {
    /// (fill, border, label under the name).
    fn colours(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Look::Skill(SkillState::Enabled) => ("#c8e6c9", "#2e7d32", "enabled"),
            Look::Skill(SkillState::Disabled) => ("#eeeeee", "#9e9e9e", "disabled"),
            Look::Skill(SkillState::Broken) => ("#ffcdd2", "#c62828", "broken"),
            Look::Missing => ("#fff3e0", "#ef6c00", "missing"),
        }
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Each name's column: 0 for skills nothing requires, else one more than the deepest skill
/// requiring it. Edges that close a cycle are left out of the count, so a cycle never loops.
fn columns(names: &[String], edges: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut column: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
    // Longest paths by relaxation, bounded: at most one pass per node settles any DAG; what
    // still grows after that is a cycle and keeps the column it has.
    for _ in 0..names.len() {
        let mut changed = false;
        for (from, to) in edges {
            let want = column.get(from).copied().unwrap_or(0) + 1;
            if let Some(c) = column.get_mut(to)
                && *c < want
                && want < names.len()
            {
                *c = want;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    column
}

impl Graph {
    /// The graph as a standalone SVG document.
    pub(crate) fn render_svg(&self, states: &BTreeMap<String, SkillState>) -> String {
        let missing: BTreeSet<&str> = self
            .edges
            .iter()
            .filter(|e| e.state == EdgeState::Missing)
            .map(|e| e.to.as_str())
            .collect();
        let mut names: Vec<String> = self.nodes.keys().cloned().collect();
        names.extend(missing.iter().map(|m| m.to_string()));
        let pairs: Vec<(String, String)> = self
            .edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        let column = columns(&names, &pairs);
        let columns_n = column.values().copied().max().map_or(0, |m| m + 1);

        // Order each column by where its requirers sit (barycentre), names breaking ties.
        let mut rows: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_column: Vec<Vec<String>> = vec![Vec::new(); columns_n];
        for (name, c) in &column {
            by_column[*c].push(name.clone());
        }
        for col in &mut by_column {
            let mut keyed: Vec<(f64, String)> = col
                .iter()
                .map(|name| {
                    let from: Vec<usize> = pairs
                        .iter()
                        .filter(|(_, to)| to == name)
                        .filter_map(|(from, _)| rows.get(from).copied())
                        .collect();
                    let key = if from.is_empty() {
                        f64::MAX
                    } else {
                        from.iter().sum::<usize>() as f64 / from.len() as f64
                    };
                    (key, name.clone())
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            *col = keyed.into_iter().map(|(_, n)| n).collect();
            for (row, name) in col.iter().enumerate() {
                rows.insert(name.clone(), row);
            }
        }

        let label = |name: &str| self.label(name);
        let look = |name: &str| {
            if missing.contains(name) && !self.nodes.contains_key(name) {
                Look::Missing
            } else {
                Look::Skill(self.state(name, states))
            }
        };
        let width_of = |name: &str| (label(name).chars().count().max(9) as f64) * CHAR_W + 24.0;
        let col_w: Vec<f64> = by_column
            .iter()
            .map(|col| col.iter().map(|n| width_of(n)).fold(120.0, f64::max))
            .collect();
        let col_x: Vec<f64> = col_w
            .iter()
            .scan(MARGIN, |x, w| {
                let here = *x;
                *x += w + COL_GAP;
                Some(here)
            })
            .collect();
        let tallest = by_column.iter().map(Vec::len).max().unwrap_or(0);
        let body_h = tallest as f64 * (BOX_H + ROW_GAP);
        let width = (col_x.last().copied().unwrap_or(MARGIN)
            + col_w.last().copied().unwrap_or(0.0)
            + MARGIN)
            .max(440.0);
        let height = MARGIN + body_h + LEGEND_H + MARGIN;
        let place = |name: &str| {
            let c = column.get(name).copied().unwrap_or(0);
            let r = rows.get(name).copied().unwrap_or(0);
            (
                col_x[c],
                MARGIN + r as f64 * (BOX_H + ROW_GAP),
                width_of(name),
            )
        };

        let mut out = String::new();
        let _ = writeln!(
            out,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, sans-serif" font-size="13" role="img" aria-label="skill requirement graph">"##
        );
        out.push_str(
            r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#616161"/></marker><marker id="arrow-bad" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c62828"/></marker></defs>
"##,
        );
        if names.is_empty() {
            let _ = writeln!(
                out,
                r##"<text x="{MARGIN}" y="{:.0}" fill="#616161">no skills installed</text>"##,
                MARGIN + 16.0
            );
        }
        for e in &self.edges {
            let (fx, fy, fw) = place(&e.from);
            let (tx, ty, _) = place(&e.to);
            let (x1, y1) = (fx + fw, fy + BOX_H / 2.0);
            let (x2, y2) = (tx, ty + BOX_H / 2.0);
            let bad = e.state != EdgeState::Ok;
            let (colour, marker, dash) = if bad {
                ("#c62828", "arrow-bad", r#" stroke-dasharray="6 4""#)
            } else {
                ("#616161", "arrow", "")
            };
            let path = if x2 > x1 {
                let mid = (x1 + x2) / 2.0;
                format!("M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}")
            } else {
                // Back to an earlier column (a cycle): loop under the boxes.
                let below = fy.max(ty) + BOX_H + ROW_GAP * 0.8;
                format!(
                    "M{x1:.1},{y1:.1} C{:.1},{below:.1} {:.1},{below:.1} {x2:.1},{y2:.1}",
                    x1 + 40.0,
                    x2 - 40.0
                )
            };
            let why = match &e.state {
                EdgeState::Ok => format!("{} requires {} {}", e.from, e.to, e.range),
                EdgeState::Missing => {
                    format!("{} requires {} {}: not installed", e.from, e.to, e.range)
                }
                EdgeState::Incompatible(found) => format!(
                    "{} requires {} {}: {found} does not fit",
                    e.from, e.to, e.range
                ),
            };
            let _ = writeln!(
                out,
                r##"<path class="edge" d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"{dash} marker-end="url(#{marker})"><title>{}</title></path>"##,
                xml(&why)
            );
        }
        for name in &names {
            let (x, y, w) = place(name);
            let kind = look(name);
            let (fill, border, marker) = kind.colours();
            let tip = self
                .nodes
                .get(name)
                .and_then(|n| n.error.as_deref())
                .map_or_else(|| format!("{name}: {marker}"), |e| format!("{name}: {e}"));
            let dash = if kind == Look::Missing {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r##"<g class="skill {marker}" data-skill="{}"><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{BOX_H}" rx="8" fill="{fill}" stroke="{border}" stroke-width="1.5"{dash}/><text x="{:.1}" y="{:.1}" fill="#212121">{}</text><text x="{:.1}" y="{:.1}" fill="{border}" font-size="11">{marker}</text></g>"##,
                xml(name),
                xml(&tip),
                x + 12.0,
                y + 19.0,
                xml(&label(name)),
                x + 12.0,
                y + 35.0,
            );
        }
        // The legend, so the colours need no explaining.
        let mut lx = MARGIN;
        let ly = MARGIN + body_h + 8.0;
        for kind in [
            Look::Skill(SkillState::Enabled),
            Look::Skill(SkillState::Disabled),
            Look::Skill(SkillState::Broken),
            Look::Missing,
        ] {
            let (fill, border, marker) = kind.colours();
            let _ = writeln!(
                out,
                r##"<rect x="{lx:.1}" y="{ly:.1}" width="14" height="14" rx="3" fill="{fill}" stroke="{border}"/><text x="{:.1}" y="{:.1}" fill="#424242" font-size="12">{marker}</text>"##,
                lx + 20.0,
                ly + 11.5
            );
            lx += 100.0;
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn edge(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    #[test]
    fn a_skill_sits_left_of_everything_it_requires() {
        let c = columns(
            &names(&["app", "db", "log", "util"]),
            &[
                edge("app", "db"),
                edge("db", "util"),
                edge("app", "util"),
                edge("log", "util"),
            ],
        );
        assert_eq!(c["app"], 0);
        assert_eq!(c["log"], 0);
        assert_eq!(c["db"], 1);
        assert_eq!(c["util"], 2, "the deepest chain decides");
    }

    #[test]
    fn a_cycle_ends_with_columns_inside_the_drawing() {
        let n = names(&["a", "b", "c"]);
        let c = columns(&n, &[edge("a", "b"), edge("b", "c"), edge("c", "a")]);
        assert!(c.values().all(|col| *col < n.len()), "{c:?}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            xml("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}

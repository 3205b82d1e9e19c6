//! The skills nanoclaw ships (`crates/skills/bundled/`), embedded at build time. The host writes
//! them out as the built-in source; see docs/SKILLS.md "Bundled skills".

/// One file of a bundled skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundledFile {
    /// Relative to the built-in skills folder: `<skill>/SKILL.md`, `<skill>/scripts/x.py` …
    pub path: &'static str,
    pub contents: &'static [u8],
    /// Whether it is run as a program (a script a tool runs).
    pub executable: bool,
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

//! nanoclaw skills: "don't touch the core code, just add a skill".
//!
//! A skill is a folder holding `SKILL.md` in the open [Agent Skills] format (YAML frontmatter
//! with `name` and `description`, then Markdown instructions; optional `scripts/`,
//! `references/`, `assets/`) and optionally `skill.toml`, nanoclaw's manifest of what the skill
//! needs and may do (egress hosts, vault secrets bound to hosts, MCP servers, packages,
//! schedules, chat commands, script-backed tools, versioned requirements on other skills).
//!
//! - [`Skill::load`] reads and validates one folder; every error names the file, the field and
//!   what to do. [`Skill::content_hash`] is a SHA-256 of its files, stable across machines.
//! - [`Catalog::load`] reads [`Source`]s in order (built-in, user, group); a later source
//!   overrides an earlier one by name and the entry records what it shadowed. A broken skill is
//!   listed with its error; loading never panics and the other skills still load.
//! - [`Catalog::resolve`] orders enabled skills and their requirements, dependencies first, and
//!   reports cycles as paths (`a → b → a`), missing and incompatible requirements by the skill
//!   that requires them.
//! - [`Catalog::graph`] and [`Graph::render`] draw the requirement graph as text, Graphviz dot or
//!   Mermaid with each skill's [`SkillState`].
//! - [`install`] copies a skill in from a folder, a `.tar.gz` with a known SHA-256, or a git
//!   repository at a pinned ref, validating before anything lands.
//!
//! The format, the manifest and these rules are described in `docs/SKILLS.md`.
//!
//! [Agent Skills]: https://agentskills.io/specification

pub mod bundled;
mod catalog;
mod error;
pub mod frontmatter;
mod graph;
mod graph_svg;
pub mod hash;
pub mod install;
pub mod manifest;
mod resolve;
mod skill;

pub use bundled::BundledFile;
pub use catalog::{Catalog, Entry, Shadowed, Source, SourceKind};
pub use error::{InstallError, LoadError, ResolveError};
pub use frontmatter::Frontmatter;
pub use graph::{Edge, EdgeState, Format, Graph, Node, SkillState};
pub use hash::Limits;
pub use install::{GitSource, install_from_archive, install_from_dir, install_from_git};
pub use manifest::Manifest;
pub use resolve::Resolution;
pub use skill::{SKILL_MD, SKILL_TOML, Skill};

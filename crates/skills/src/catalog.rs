//! Skill sources and the catalog built from them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::LoadError;
use crate::hash::Limits;
use crate::skill::Skill;

/// Where a source's skills come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// Skills shipped with nanoclaw (a directory the host passes).
    Builtin,
    /// The user's skills folder.
    User,
    /// A group's own skills folder.
    Group(String),
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKind::Builtin => f.write_str("built-in"),
            SourceKind::User => f.write_str("user"),
            SourceKind::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// A folder whose subfolders are skills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// What kind of source it is.
    pub kind: SourceKind,
    /// The folder.
    pub dir: PathBuf,
}

impl Source {
    /// The built-in skills in `dir`.
    pub fn builtin(dir: impl Into<PathBuf>) -> Source {
        Source {
            kind: SourceKind::Builtin,
            dir: dir.into(),
        }
    }
    /// The user's skills in `dir`.
    pub fn user(dir: impl Into<PathBuf>) -> Source {
        Source {
            kind: SourceKind::User,
            dir: dir.into(),
        }
    }
    /// Group `group`'s skills in `dir`.
    pub fn group(group: impl Into<String>, dir: impl Into<PathBuf>) -> Source {
        Source {
            kind: SourceKind::Group(group.into()),
            dir: dir.into(),
        }
    }
}

/// A skill folder of an earlier source that a later one overrode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// Its source.
    pub source: SourceKind,
    /// Its folder.
    pub dir: PathBuf,
}

/// One name in the catalog: the folder that won, whether it loaded, and what it shadowed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The folder's name (a valid skill's name equals it).
    pub name: String,
    /// The source the winning folder is in.
    pub source: SourceKind,
    /// The winning folder.
    pub dir: PathBuf,
    /// The skill, or why it is broken.
    pub skill: Result<Skill, LoadError>,
    /// Folders of the same name in earlier sources, earliest first.
    pub shadowed: Vec<Shadowed>,
}

impl Entry {
    /// The skill if it loaded.
    pub fn ok(&self) -> Option<&Skill> {
        self.skill.as_ref().ok()
    }
    /// Why it is broken, if it is.
    pub fn error(&self) -> Option<&LoadError> {
        self.skill.as_ref().err()
    }
}

/// All skills from the sources, one per name; a later source overrides an earlier one.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
    problems: Vec<LoadError>,
}

impl Catalog {
    /// Loads every skill folder of every source, in order, with the default [`Limits`].
    pub fn load(sources: &[Source]) -> Catalog {
        Catalog::load_with(sources, &Limits::default())
    }

    /// Loads every skill folder of every source. A folder that fails to load is kept as broken
    /// with its error (and still overrides earlier sources: a user's broken copy is not silently
    /// replaced by the built-in one). Hidden folders (`.name`) and plain files are skipped; a
    /// missing source folder is empty.
    pub fn load_with(sources: &[Source], limits: &Limits) -> Catalog {
        let mut catalog = Catalog::default();
        for source in sources {
            let listing = match std::fs::read_dir(&source.dir) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(source = %source.kind, dir = %source.dir.display(), "skill source folder does not exist");
                    continue;
                }
                Err(e) => {
                    catalog.problems.push(LoadError::io(
                        &source.dir,
                        "listing the skills folder",
                        &e,
                    ));
                    continue;
                }
            };
            let mut dirs: Vec<(String, PathBuf)> = Vec::new();
            for item in listing {
                let item = match item {
                    Ok(i) => i,
                    Err(e) => {
                        catalog.problems.push(LoadError::io(
                            &source.dir,
                            "listing the skills folder",
                            &e,
                        ));
                        continue;
                    }
                };
                let path = item.path();
                let name = item.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                // Symlinked skill folders are listed (and refused by the loader); files are not.
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() || m.file_type().is_symlink() => dirs.push((name, path)),
                    _ => {}
                }
            }
            dirs.sort();
            for (name, dir) in dirs {
                let skill = Skill::load_with(&dir, limits);
                match &skill {
                    Ok(s) => {
                        tracing::debug!(skill = %name, source = %source.kind, hash = %s.content_hash(), "skill loaded")
                    }
                    Err(e) => {
                        tracing::warn!(skill = %name, source = %source.kind, error = %e, "skill is broken")
                    }
                }
                let mut shadowed = Vec::new();
                if let Some(old) = catalog.entries.remove(&name) {
                    tracing::info!(skill = %name, winner = %source.kind, shadowed = %old.source, "skill overridden by a later source");
                    shadowed = old.shadowed;
                    shadowed.push(Shadowed {
                        source: old.source,
                        dir: old.dir,
                    });
                }
                catalog.entries.insert(
                    name.clone(),
                    Entry {
                        name,
                        source: source.kind.clone(),
                        dir,
                        skill,
                        shadowed,
                    },
                );
            }
        }
        catalog
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// The skill `name` if it is present and loaded.
    pub fn skill(&self, name: &str) -> Option<&Skill> {
        self.entries.get(name).and_then(Entry::ok)
    }

    /// Every entry, in name order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The broken entries, in name order.
    pub fn broken(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| e.skill.is_err())
    }

    /// Source folders that exist but could not be listed.
    pub fn problems(&self) -> &[LoadError] {
        &self.problems
    }
}

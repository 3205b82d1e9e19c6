//! One skill folder, loaded and validated.

use std::path::{Path, PathBuf};

use crate::error::LoadError;
use crate::frontmatter::{self, Frontmatter};
use crate::hash::{self, Limits};
use crate::manifest::{self, Manifest};

/// The skill's instructions file (Agent Skills).
pub const SKILL_MD: &str = "SKILL.md";
/// nanoclaw's manifest, optional.
pub const SKILL_TOML: &str = "skill.toml";
/// Optional folders of the Agent Skills format.
pub const OPTIONAL_DIRS: [&str; 3] = ["scripts", "references", "assets"];
/// Largest SKILL.md read.
pub const MAX_SKILL_MD_BYTES: u64 = 1024 * 1024;
/// Largest skill.toml read.
pub const MAX_SKILL_TOML_BYTES: u64 = 256 * 1024;

/// A valid skill: its SKILL.md, its manifest (default when it has no skill.toml) and the hash of
/// its files.
#[derive(Debug, Clone, PartialEq)]
pub struct Skill {
    /// The folder.
    pub dir: PathBuf,
    /// SKILL.md's frontmatter.
    pub frontmatter: Frontmatter,
    /// SKILL.md's Markdown body (the instructions).
    pub body: String,
    /// skill.toml, or the default (no grants) when there is none.
    pub manifest: Manifest,
    hash: String,
}

fn read_limited(path: &Path, max: u64, what: &str) -> Result<String, LoadError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LoadError::Syntax {
                file: path.to_path_buf(),
                message: format!("{what} is missing; a skill folder must contain {what}"),
            }
        } else {
            LoadError::io(path, "reading", &e)
        }
    })?;
    if !meta.is_file() {
        return Err(LoadError::refused(
            path,
            format!("{what} must be a regular file (not a symlink or folder)"),
        ));
    }
    if meta.len() > max {
        return Err(LoadError::refused(
            path,
            format!(
                "{what} is {} bytes; the limit is {max}; move detail into references/",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| LoadError::io(path, "reading", &e))?;
    String::from_utf8(bytes).map_err(|_| LoadError::Syntax {
        file: path.to_path_buf(),
        message: format!("{what} is not UTF-8 text"),
    })
}

impl Skill {
    /// Loads and validates the skill in `dir` with the default [`Limits`].
    pub fn load(dir: &Path) -> Result<Skill, LoadError> {
        Skill::load_with(dir, &Limits::default())
    }

    /// Loads and validates the skill in `dir`: SKILL.md (its `name` equal to the folder's name),
    /// skill.toml if present, the optional folders, and every file (no symlinks, within `limits`).
    pub fn load_with(dir: &Path, limits: &Limits) -> Result<Skill, LoadError> {
        let folder = dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            LoadError::refused(dir, "the skill folder's name is not UTF-8; rename it")
        })?;
        // Walk first: it refuses symlinks, so reading files below cannot leave the folder.
        let hash = hash::content_hash(dir, limits)?;

        let md_path = dir.join(SKILL_MD);
        let text = read_limited(&md_path, MAX_SKILL_MD_BYTES, SKILL_MD)?;
        let (frontmatter, body) = frontmatter::parse(&text, &md_path, Some(folder))?;

        for sub in OPTIONAL_DIRS {
            let p = dir.join(sub);
            if let Ok(meta) = std::fs::symlink_metadata(&p)
                && !meta.is_dir()
            {
                return Err(LoadError::refused(
                    &p,
                    format!("{sub} must be a folder (the Agent Skills layout)"),
                ));
            }
        }

        let toml_path = dir.join(SKILL_TOML);
        let manifest = if std::fs::symlink_metadata(&toml_path).is_ok() {
            let text = read_limited(&toml_path, MAX_SKILL_TOML_BYTES, SKILL_TOML)?;
            manifest::parse(&text, dir, &toml_path)?
        } else {
            Manifest::default()
        };

        Ok(Skill {
            dir: dir.to_path_buf(),
            frontmatter,
            body,
            manifest,
            hash,
        })
    }

    /// The skill's name.
    pub fn name(&self) -> &str {
        &self.frontmatter.name
    }

    /// The skill's version from skill.toml, if it gives one.
    pub fn version(&self) -> Option<&semver::Version> {
        self.manifest.version.as_ref()
    }

    /// SHA-256 (hex) of the skill's files when it was loaded; see [`hash::content_hash`].
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    /// Things worth telling the skill's author that do not stop it loading.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.frontmatter.unknown_fields.is_empty() {
            w.push(format!(
                "{}: frontmatter fields {} are not in the Agent Skills specification and are \
                 ignored; put extra data under metadata",
                self.dir.join(SKILL_MD).display(),
                self.frontmatter.unknown_fields.join(", ")
            ));
        }
        let lines = self.body.lines().count();
        if lines > 500 {
            w.push(format!(
                "{}: the body is {lines} lines; the specification recommends under 500 — move \
                 detail into references/",
                self.dir.join(SKILL_MD).display()
            ));
        }
        w
    }
}

//! Errors. Every message names the file (or skill) it is about, the field, and what to do.

use std::path::PathBuf;

/// A skill folder that could not be loaded: SKILL.md or skill.toml is missing, unreadable or
/// invalid, or the folder breaks a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A field of SKILL.md or skill.toml breaks a rule. `message` starts with the field.
    #[error("{}: {message}", file.display())]
    Invalid {
        /// The file the field is in.
        file: PathBuf,
        /// The field (`name`, `tools[1].script`, …).
        field: String,
        /// The field, what is wrong and what to do.
        message: String,
    },
    /// The file is not well-formed (no frontmatter, bad YAML or TOML).
    #[error("{}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// What is wrong, with the parser's location where it gave one.
        message: String,
    },
    /// Reading the file or folder failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The operating system's error and what was being done.
        message: String,
    },
    /// The folder breaks a size, count or file-type limit (symlinks, devices).
    #[error("{}: {message}", path.display())]
    Refused {
        /// The offending path.
        path: PathBuf,
        /// Why, and what to do.
        message: String,
    },
}

impl LoadError {
    pub(crate) fn invalid(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        LoadError::Invalid {
            file: file.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, doing: &str, err: &std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            message: format!("{doing}: {err}"),
        }
    }

    pub(crate) fn refused(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        LoadError::Refused {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The field the error is about, for errors about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            LoadError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Resolving a set of enabled skills failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A skill asked for is not in the catalog.
    #[error("skill {name:?} is not installed; install it or remove it from the enabled skills")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// A skill asked for (or required) is in the catalog but broken.
    #[error(
        "skill {name:?}{} is broken ({error}); fix it or disable it",
        required_by.as_ref().map_or(String::new(), |r| format!(" (required by {r:?})"))
    )]
    Broken {
        /// The broken skill.
        name: String,
        /// The skill that requires it, when it was not asked for directly.
        required_by: Option<String>,
        /// Why it is broken.
        error: String,
    },
    /// A required skill is not installed.
    #[error(
        "skill {skill:?} requires {requires:?} ({range}), which is not installed; install \
         {requires:?} or disable {skill:?}"
    )]
    Missing {
        /// The skill that requires it.
        skill: String,
        /// The missing skill.
        requires: String,
        /// The version range asked for.
        range: String,
    },
    /// A required skill's version is outside the range asked for (or it has no version).
    #[error(
        "skill {skill:?} requires {requires:?} {range}, but {found} is installed; install a \
         matching version of {requires:?} or update {skill:?}"
    )]
    Incompatible {
        /// The skill that requires it.
        skill: String,
        /// The required skill.
        requires: String,
        /// The range asked for.
        range: String,
        /// The installed version (`version 1.2.0` or `no version`).
        found: String,
    },
    /// Skills require each other in a cycle; `path` starts and ends with the same skill.
    #[error("skills require each other in a cycle: {}; remove one of these requirements", path.join(" → "))]
    Cycle {
        /// The cycle in order, first skill repeated at the end (`a → b → a`).
        path: Vec<String>,
    },
}

/// Installing a skill failed. Nothing is left in the destination when it does.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The skill itself is invalid.
    #[error("the skill is invalid: {0}")]
    Invalid(#[from] LoadError),
    /// The archive's SHA-256 is not the one expected; nothing was unpacked.
    #[error(
        "{}: SHA-256 is {actual}, expected {expected}; the archive is not the one you meant to \
         install — download it again or check the hash",
        path.display()
    )]
    HashMismatch {
        /// The archive.
        path: PathBuf,
        /// The hash given.
        expected: String,
        /// The archive's hash.
        actual: String,
    },
    /// An archive entry or source file is refused (absolute path, `..`, link, device, size).
    #[error("{source_name}: {entry}: {reason}")]
    Refused {
        /// The archive or folder.
        source_name: String,
        /// The entry or file.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A skill of that name is already installed at the destination.
    #[error("{}: a skill named {name:?} is already installed; remove it first", path.display())]
    Exists {
        /// The skill's name.
        name: String,
        /// Where it is installed.
        path: PathBuf,
    },
    /// `git` failed or the checkout is not what was pinned.
    #[error("git: {0}")]
    Git(String),
    /// A file operation failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done and the operating system's error.
        message: String,
    },
}

impl InstallError {
    pub(crate) fn io(path: impl Into<PathBuf>, doing: &str, err: &std::io::Error) -> Self {
        InstallError::Io {
            path: path.into(),
            message: format!("{doing}: {err}"),
        }
    }
}

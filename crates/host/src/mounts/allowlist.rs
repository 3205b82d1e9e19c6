//! The owner's allowlist file: where it lives, how it is read and validated.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ALLOWLIST_ENV;
use super::rules::is_absolute_or_tilde;

/// A commented example allowlist (docs and error messages point here).
pub const ALLOWLIST_EXAMPLE: &str = r#"# Folders that may be mounted into agent sandboxes (nanoclaw group mount add ...).
# This file must stay outside nanoclaw's data dir; it is never mounted.

# Extra patterns to refuse, on top of the built-in ones (.ssh, .env, *.pem, ...). A name or
# glob matches any path component; "/abs/path" or "~/path" blocks that folder. (TOML: this
# line must come before the first [[allow]].)
blocked = ["secrets", "*.kdbx"]

[[allow]]
path = "~/projects"        # resolved, symlinks included; subfolders are allowed too
read_write = true          # otherwise read-only
groups = ["main", "work"]  # optional: only these groups (default: all); groups other
                           # than main get read-write only when listed here
"#;

/// Why the allowlist could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MountPolicyError {
    #[error(
        "cannot find the mount allowlist: none of {ALLOWLIST_ENV}, XDG_CONFIG_HOME or HOME is set"
    )]
    NoConfigDir,
    #[error("cannot read the mount allowlist {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the mount allowlist {} is writable by every user, who could then widen what agents see; \
         run `chmod o-w {}`",
        path.display(),
        path.display()
    )]
    WorldWritable { path: PathBuf },
    #[error("the mount allowlist {} is not valid TOML: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("the mount allowlist {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistToml {
    #[serde(default)]
    allow: Vec<AllowEntry>,
    #[serde(default)]
    blocked: Vec<String>,
}

/// One `[[allow]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// Absolute, or starting with `~/`; resolved (symlinks included) at every check.
    pub path: String,
    #[serde(default)]
    pub read_write: bool,
    /// Group folders this entry applies to; `None` = every group.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub(super) enum PolicyState {
    Missing,
    Unusable(String),
    Loaded {
        allow: Vec<AllowEntry>,
        blocked: Vec<String>,
    },
}

/// The owner's mount allowlist. Load it at every spawn (it is small) so edits and revocations apply
/// to the next agent.
#[derive(Debug, Clone)]
pub struct MountPolicy {
    pub(super) file: PathBuf,
    pub(super) home: Option<PathBuf>,
    pub(super) state: PolicyState,
}

/// Where the allowlist lives: `$NANOCLAW_MOUNT_ALLOWLIST`, else
/// `$XDG_CONFIG_HOME/nanoclaw/mount-allowlist.toml`, else `~/.config/nanoclaw/mount-allowlist.toml`.
pub fn allowlist_path() -> Result<PathBuf, MountPolicyError> {
    if let Some(p) = std::env::var_os(ALLOWLIST_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let config_dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .ok_or(MountPolicyError::NoConfigDir)?;
    Ok(config_dir.join("nanoclaw").join("mount-allowlist.toml"))
}

fn env_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl MountPolicy {
    /// Reads the allowlist from [`allowlist_path`]. A missing file is not an error: it gives a policy
    /// that refuses every mount and says where to create the file.
    pub fn load() -> Result<MountPolicy, MountPolicyError> {
        Self::load_from(&allowlist_path()?)
    }

    /// Reads the allowlist at `path` (missing: deny everything).
    pub fn load_from(path: &Path) -> Result<MountPolicy, MountPolicyError> {
        let home = env_home();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(MountPolicy {
                    file: path.to_owned(),
                    home,
                    state: PolicyState::Missing,
                });
            }
            Err(source) => {
                return Err(MountPolicyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| MountPolicyError::Read {
                    path: path.to_owned(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o002 != 0 {
                return Err(MountPolicyError::WorldWritable {
                    path: path.to_owned(),
                });
            }
        }
        Self::parse(path, &text, home)
    }

    /// Parses allowlist text as if read from `file`; `home` expands `~`.
    pub fn parse(
        file: &Path,
        text: &str,
        home: Option<PathBuf>,
    ) -> Result<MountPolicy, MountPolicyError> {
        let parsed: AllowlistToml = toml::from_str(text).map_err(|e| MountPolicyError::Parse {
            path: file.to_owned(),
            message: {
                let mut m = e.to_string().trim_end().to_owned();
                if m.contains("unknown field `blocked`") {
                    m.push_str("\n(put `blocked = [...]` above the first [[allow]])");
                }
                m
            },
        })?;
        let invalid = |message: String| MountPolicyError::Invalid {
            path: file.to_owned(),
            message,
        };
        for (i, entry) in parsed.allow.iter().enumerate() {
            let n = i + 1;
            if !is_absolute_or_tilde(&entry.path) {
                return Err(invalid(format!(
                    "[[allow]] entry {n}: path {:?} must be absolute or start with ~/",
                    entry.path
                )));
            }
            if let Some(groups) = &entry.groups {
                if groups.is_empty() {
                    return Err(invalid(format!(
                        "[[allow]] entry {n} ({}): groups = [] allows no group; list group folders or drop the line",
                        entry.path
                    )));
                }
                for g in groups {
                    nanoclaw_store::validate_folder(g).map_err(|e| {
                        invalid(format!("[[allow]] entry {n} ({}): {e}", entry.path))
                    })?;
                }
            }
        }
        for pattern in &parsed.blocked {
            validate_pattern(pattern)
                .map_err(|why| invalid(format!("blocked {pattern:?}: {why}")))?;
        }
        Ok(MountPolicy {
            file: file.to_owned(),
            home,
            state: PolicyState::Loaded {
                allow: parsed.allow,
                blocked: parsed.blocked,
            },
        })
    }

    /// A policy that refuses every mount, saying why (for when the allowlist cannot be loaded).
    pub fn unusable(file: PathBuf, why: impl Into<String>) -> MountPolicy {
        MountPolicy {
            file,
            home: env_home(),
            state: PolicyState::Unusable(why.into()),
        }
    }

    /// [`MountPolicy::load`] for spawning: an unusable allowlist is logged and denies every mount,
    /// so a broken file never widens what agents see and never stops agents from running.
    pub fn load_or_deny() -> MountPolicy {
        match Self::load() {
            Ok(policy) => policy,
            Err(e) => {
                tracing::warn!(error = %e, "mount allowlist unusable; no extra folders are mounted");
                let file = allowlist_path().unwrap_or_default();
                MountPolicy::unusable(file, e.to_string())
            }
        }
    }

    /// The allowlist file this policy came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether the allowlist file existed.
    pub fn exists(&self) -> bool {
        !matches!(self.state, PolicyState::Missing)
    }

    /// The allowlist path as shown to people (`~/…` under the home directory).
    pub(super) fn file_display(&self) -> String {
        if let Some(home) = &self.home
            && let Ok(rest) = self.file.strip_prefix(home)
        {
            return format!("~/{}", rest.display());
        }
        self.file.display().to_string()
    }

    /// `~` expanded; `None` when the result is not absolute.
    pub(super) fn expand(&self, path: &str) -> Option<PathBuf> {
        let p = if path == "~" {
            self.home.clone()?
        } else if let Some(rest) = path.strip_prefix("~/") {
            self.home.as_ref()?.join(rest)
        } else {
            PathBuf::from(path)
        };
        p.is_absolute().then_some(p)
    }
}

pub(super) fn validate_pattern(p: &str) -> Result<(), String> {
    if p.trim().is_empty() {
        return Err("empty pattern".into());
    }
    if is_absolute_or_tilde(p) {
        return Ok(());
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("components must be non-empty and not . or ..".into());
    }
    Ok(())
}

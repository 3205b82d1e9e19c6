//! What a check decides: the approved mount, or the refusal and the rule behind it.

use std::fmt;
use std::path::PathBuf;

use nanoclaw_sandbox::Mount;
use serde::Serialize;

/// A mount that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovedMount {
    pub name: String,
    /// The resolved host path (symlinks followed): what gets mounted.
    pub host_path: PathBuf,
    pub sandbox_path: PathBuf,
    pub writable: bool,
    /// Why it is less than asked for (read-only instead of read-write, partial search).
    pub notes: Vec<String>,
}

impl ApprovedMount {
    pub fn into_mount(self) -> Mount {
        Mount {
            host_path: self.host_path,
            sandbox_path: self.sandbox_path,
            writable: self.writable,
        }
    }
}

/// A requested mount the policy refused. Displays as `"<path>": <rule>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRejection {
    pub name: String,
    /// As requested.
    pub host_path: String,
    /// Where it resolved to, when that differs from the request.
    pub resolved: Option<PathBuf>,
    pub reason: RejectReason,
}

impl fmt::Display for MountRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.host_path)?;
        if let Some(r) = &self.resolved {
            write!(f, " (resolves to {:?})", r.display().to_string())?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Which rule refused a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    InvalidName(String),
    NoAllowlist {
        file: String,
    },
    Unusable {
        file: String,
        message: String,
    },
    AllowlistInDataDir {
        file: String,
        data_dir: PathBuf,
    },
    NotAbsolute,
    Unresolvable(String),
    NotADirectory,
    /// A blocked pattern or folder matched.
    Blocked {
        origin: Origin,
        hit: Hit,
    },
    /// A Unix socket lies inside: it would let the agent talk to a host service.
    ContainsSocket(PathBuf),
    NotAllowed {
        file: String,
    },
    /// Allowed folders cover the path, but only for other groups.
    NotForGroup {
        group: String,
        file: String,
    },
}

/// Where a blocking rule comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn(&'static str),
    Allowlist { pattern: String, file: String },
    DataDir,
    AllowlistDir,
}

/// How a blocking rule hit the requested folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hit {
    /// The folder itself or one of its ancestors matches.
    Path,
    /// The folder is this blocked folder.
    Is(PathBuf),
    /// The folder lies inside this blocked folder.
    Inside(PathBuf),
    /// The folder contains this blocked folder.
    Exposes(PathBuf),
    /// This entry inside the folder (within [`super::SCAN_DEPTH`] levels) matches.
    Contains(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltIn(p) => write!(f, "the built-in pattern {p:?}"),
            Origin::Allowlist { pattern, file } => write!(f, "the pattern {pattern:?} in {file}"),
            Origin::DataDir => {
                f.write_str("nanoclaw's data dir (conversations, every group's folder)")
            }
            Origin::AllowlistDir => f.write_str("the mount allowlist's folder"),
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::InvalidName(msg) => f.write_str(msg),
            RejectReason::NoAllowlist { file } => write!(
                f,
                "no mount allowlist at {file}, so nothing may be mounted; create it with an [[allow]] \
                 entry covering this folder (see docs/SECURITY.md, \"Mount policy\")"
            ),
            RejectReason::Unusable { file, message } => write!(
                f,
                "the mount allowlist {file} cannot be used, so nothing is mounted: {message}"
            ),
            RejectReason::AllowlistInDataDir { file, data_dir } => write!(
                f,
                "the mount allowlist {file} lies inside nanoclaw's data dir {}, where agents can \
                 write; move it out (default ~/.config/nanoclaw/mount-allowlist.toml)",
                data_dir.display()
            ),
            RejectReason::NotAbsolute => f.write_str("not an absolute path (give /... or ~/...)"),
            RejectReason::Unresolvable(e) => write!(f, "cannot be resolved: {e}"),
            RejectReason::NotADirectory => {
                f.write_str("not a directory; only folders can be mounted")
            }
            RejectReason::Blocked { origin, hit } => match hit {
                Hit::Path => write!(f, "blocked by {origin}"),
                Hit::Is(root) => write!(f, "is {}, blocked by {origin}", root.display()),
                Hit::Inside(root) => {
                    write!(f, "lies inside {}, blocked by {origin}", root.display())
                }
                Hit::Exposes(root) => {
                    write!(f, "would expose {}, blocked by {origin}", root.display())
                }
                Hit::Contains(entry) => write!(
                    f,
                    "contains {:?}, blocked by {origin}; mount a folder without it, or move it out",
                    entry.display().to_string()
                ),
            },
            RejectReason::ContainsSocket(entry) => write!(
                f,
                "contains the Unix socket {:?}, which would let the agent talk to a host service",
                entry.display().to_string()
            ),
            RejectReason::NotAllowed { file } => {
                write!(f, "not under any allowed folder in {file}")
            }
            RejectReason::NotForGroup { group, file } => write!(
                f,
                "the allowed folders covering it in {file} are limited to other groups than {group:?}"
            ),
        }
    }
}

//! Mount policy: which extra host folders a group's sandbox may see.
//!
//! A group asks for folders (`nanoclaw group mount add`, stored in the `group_mounts` table); the
//! owner's allowlist, a file OUTSIDE the data dir that is never mounted
//! (`~/.config/nanoclaw/mount-allowlist.toml`), says which folders may be mounted at all. Every request
//! is checked again at every spawn, on the fully resolved path (symlinks included), and that resolved
//! path is what gets mounted, at `/workspace/extra/<name>`. No allowlist means nothing is mounted.
//!
//! Checks, in order: the name; the allowlist is usable and outside the data dir; the path resolves to a
//! directory; no built-in or allowlist `blocked` pattern matches the path or any of its ancestors; it
//! neither lies inside nor contains nanoclaw's data dir, the allowlist's folder or a system folder; an
//! allowed folder covers it for this group; no blocked entry or Unix socket lies within
//! [`SCAN_DEPTH`] levels inside it. See docs/SECURITY.md ("Mount policy").

use std::fmt;
use std::path::{Component, Path, PathBuf};

use nanoclaw_sandbox::Mount;
use nanoclaw_store::{Group, GroupMount};
use serde::{Deserialize, Serialize};

/// Extra folders appear under this sandbox path, one per mount name.
pub const SANDBOX_EXTRA: &str = nanoclaw_protocol::contract::paths::EXTRA;
/// Overrides where the allowlist is read from (tests, unusual setups).
pub const ALLOWLIST_ENV: &str = "NANOCLAW_MOUNT_ALLOWLIST";
/// How many levels inside a mounted folder are searched for blocked entries.
pub const SCAN_DEPTH: usize = 3;
/// Most entries inspected per mounted folder; beyond it the rest of the folder is not searched.
pub const SCAN_BUDGET: usize = 10_000;

/// Patterns that always block, matched case-insensitively against path components (`*` and `?`
/// wildcards; a pattern with `/` matches consecutive components). They cannot be removed.
pub const BUILTIN_BLOCKED: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".config/gcloud",
    ".kube",
    ".docker",
    ".env",
    ".env.*",
    ".netrc",
    ".git-credentials",
    ".pgpass",
    ".password-store",
    ".local/share/keyrings",
    ".vault-token",
    "credentials",
    "credentials.*",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.sock",
];

/// System folders that may be neither mounted nor exposed by mounting an ancestor.
const BUILTIN_BLOCKED_ROOTS: &[&str] =
    &["/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc"];

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
enum PolicyState {
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
    file: PathBuf,
    home: Option<PathBuf>,
    state: PolicyState,
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

    /// Checks one requested mount for `group`. The approved mount carries the RESOLVED path.
    // A refusal is the rare, cold path and callers keep it whole; boxing buys nothing here.
    #[allow(clippy::result_large_err)]
    pub fn check(
        &self,
        group: &Group,
        requested: &GroupMount,
        data_dir: &Path,
    ) -> Result<ApprovedMount, MountRejection> {
        let reject = |resolved: Option<&Path>, reason: RejectReason| MountRejection {
            name: requested.name.clone(),
            host_path: requested.host_path.clone(),
            resolved: resolved.map(Path::to_owned),
            reason,
        };
        if let Err(e) = nanoclaw_store::validate_mount_name(&requested.name) {
            let msg = e.to_string();
            let msg = msg.strip_prefix("store: invalid input: ").unwrap_or(&msg);
            return Err(reject(None, RejectReason::InvalidName(msg.to_owned())));
        }
        let file = self.file_display();
        let (allow, user_blocked) = match &self.state {
            PolicyState::Missing => return Err(reject(None, RejectReason::NoAllowlist { file })),
            PolicyState::Unusable(why) => {
                return Err(reject(
                    None,
                    RejectReason::Unusable {
                        file,
                        message: why.clone(),
                    },
                ));
            }
            PolicyState::Loaded { allow, blocked } => (allow, blocked),
        };
        let data_dir = resolve_lenient(data_dir);
        let allowlist_dir = resolve_lenient(self.file.parent().unwrap_or(Path::new("/")));
        if allowlist_dir.starts_with(&data_dir) {
            return Err(reject(
                None,
                RejectReason::AllowlistInDataDir {
                    file,
                    data_dir: data_dir.clone(),
                },
            ));
        }

        let Some(given) = self.expand(&requested.host_path) else {
            return Err(reject(None, RejectReason::NotAbsolute));
        };
        let resolved = match std::fs::canonicalize(&given) {
            Ok(p) => p,
            Err(e) => return Err(reject(None, RejectReason::Unresolvable(e.to_string()))),
        };
        let shown = (resolved != given).then_some(resolved.as_path());
        if !resolved.is_dir() {
            return Err(reject(shown, RejectReason::NotADirectory));
        }

        let rules = self.rules(user_blocked, &data_dir, &allowlist_dir);
        if let Some(reason) = blocked_path(&rules, &resolved) {
            return Err(reject(shown, reason));
        }

        // The most specific allowed folder that covers the path decides; one limited to other
        // groups does not count.
        let mut covering = false;
        let mut best: Option<(&AllowEntry, PathBuf)> = None;
        for entry in allow {
            let Some(root) = self.expand(&entry.path) else {
                continue;
            };
            let Ok(root) = std::fs::canonicalize(&root) else {
                tracing::debug!(path = %entry.path, "allowed folder does not resolve; skipped");
                continue;
            };
            if !resolved.starts_with(&root) {
                continue;
            }
            covering = true;
            if !entry_applies(entry, &group.folder) {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(_, r)| root.as_os_str().len() > r.as_os_str().len())
            {
                best = Some((entry, root));
            }
        }
        let Some((entry, _)) = best else {
            return Err(reject(
                shown,
                if covering {
                    RejectReason::NotForGroup {
                        group: group.folder.clone(),
                        file,
                    }
                } else {
                    RejectReason::NotAllowed { file }
                },
            ));
        };

        let scan = scan_contents(&rules, &resolved);
        if let Some(reason) = scan.rejection {
            return Err(reject(shown, reason));
        }

        let listed = entry
            .groups
            .as_ref()
            .is_some_and(|g| g.iter().any(|f| f == &group.folder));
        let mut notes = Vec::new();
        let writable = requested.read_write && entry.read_write && (group.is_main || listed);
        if requested.read_write && !writable {
            notes.push(if !entry.read_write {
                format!("read-only: its allowed folder {:?} is not read_write", entry.path)
            } else {
                format!(
                    "read-only: groups other than main get read-write only when the allowed folder {:?} lists them in groups",
                    entry.path
                )
            });
        }
        if !scan.complete {
            notes.push(format!(
                "only the first {SCAN_BUDGET} entries were searched for blocked files"
            ));
        }
        Ok(ApprovedMount {
            name: requested.name.clone(),
            host_path: resolved,
            sandbox_path: Path::new(SANDBOX_EXTRA).join(&requested.name),
            writable,
            notes,
        })
    }

    /// The allowlist path as shown to people (`~/…` under the home directory).
    fn file_display(&self) -> String {
        if let Some(home) = &self.home
            && let Ok(rest) = self.file.strip_prefix(home)
        {
            return format!("~/{}", rest.display());
        }
        self.file.display().to_string()
    }

    /// `~` expanded; `None` when the result is not absolute.
    fn expand(&self, path: &str) -> Option<PathBuf> {
        let p = if path == "~" {
            self.home.clone()?
        } else if let Some(rest) = path.strip_prefix("~/") {
            self.home.as_ref()?.join(rest)
        } else {
            PathBuf::from(path)
        };
        p.is_absolute().then_some(p)
    }

    fn rules(&self, user_blocked: &[String], data_dir: &Path, allowlist_dir: &Path) -> Vec<Rule> {
        let mut rules = vec![
            Rule::root(data_dir.to_owned(), Origin::DataDir),
            Rule::root(allowlist_dir.to_owned(), Origin::AllowlistDir),
        ];
        for r in BUILTIN_BLOCKED_ROOTS {
            rules.push(Rule::root(
                resolve_lenient(Path::new(r)),
                Origin::BuiltIn(r),
            ));
        }
        for p in BUILTIN_BLOCKED {
            rules.push(Rule::components(p, Origin::BuiltIn(p)));
        }
        for p in user_blocked {
            let origin = Origin::Allowlist {
                pattern: p.clone(),
                file: self.file_display(),
            };
            if is_absolute_or_tilde(p) {
                if let Some(path) = self.expand(p) {
                    rules.push(Rule::root(resolve_lenient(&path), origin));
                }
            } else {
                rules.push(Rule::components(p, origin));
            }
        }
        rules
    }
}

/// Checks every requested mount of `group`: what passes, as sandbox mounts of the RESOLVED host paths
/// at `/workspace/extra/<name>`, and what does not, each with the rule that refused it (also logged).
/// Call at every spawn with a freshly loaded policy ([`MountPolicy::load_or_deny`]).
pub fn resolve_group_mounts(
    policy: &MountPolicy,
    group: &Group,
    requested: &[GroupMount],
    data_dir: &Path,
) -> (Vec<Mount>, Vec<MountRejection>) {
    let mut mounts = Vec::new();
    let mut rejections = Vec::new();
    for req in requested {
        match policy.check(group, req, data_dir) {
            Ok(ok) => {
                for note in &ok.notes {
                    tracing::info!(group = %group.folder, mount = %ok.name, note = %note, "extra mount");
                }
                mounts.push(ok.into_mount());
            }
            Err(rejection) => {
                tracing::warn!(group = %group.folder, mount = %rejection.name, reason = %rejection, "extra mount refused");
                rejections.push(rejection);
            }
        }
    }
    (mounts, rejections)
}

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
    /// This entry inside the folder (within [`SCAN_DEPTH`] levels) matches.
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

fn entry_applies(entry: &AllowEntry, folder: &str) -> bool {
    entry
        .groups
        .as_ref()
        .is_none_or(|groups| groups.iter().any(|g| g == folder))
}

fn is_absolute_or_tilde(p: &str) -> bool {
    p.starts_with('/') || p == "~" || p.starts_with("~/")
}

fn validate_pattern(p: &str) -> Result<(), String> {
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

/// Canonical form when the path exists, else the path as given (a folder that does not exist yet
/// still blocks by prefix).
fn resolve_lenient(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

enum RuleKind {
    /// Glob per component, matched against consecutive path components.
    Components(Vec<String>),
    /// A folder: blocks itself, everything in it and every ancestor (which would expose it).
    Root(PathBuf),
}

struct Rule {
    kind: RuleKind,
    origin: Origin,
}

impl Rule {
    fn root(path: PathBuf, origin: Origin) -> Rule {
        Rule {
            kind: RuleKind::Root(path),
            origin,
        }
    }
    fn components(pattern: &str, origin: Origin) -> Rule {
        Rule {
            kind: RuleKind::Components(pattern.split('/').map(str::to_ascii_lowercase).collect()),
            origin,
        }
    }
}

fn component_names(p: &Path) -> Vec<String> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Whether `globs` matches `names` at some position; with `ending_last`, only a match that ends at
/// the last name counts (the ancestors were checked already).
fn matches_sequence(globs: &[String], names: &[String], ending_last: bool) -> bool {
    if globs.is_empty() || globs.len() > names.len() {
        return false;
    }
    let starts = names.len() - globs.len();
    let range = if ending_last {
        starts..=starts
    } else {
        0..=starts
    };
    range.into_iter().any(|i| {
        globs
            .iter()
            .zip(&names[i..])
            .all(|(g, n)| glob_match(g.as_bytes(), n.as_bytes()))
    })
}

/// `*` (any run) and `?` (one byte) wildcards.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn blocked_path(rules: &[Rule], resolved: &Path) -> Option<RejectReason> {
    let names = component_names(resolved);
    for rule in rules {
        let hit = match &rule.kind {
            RuleKind::Components(globs) => {
                matches_sequence(globs, &names, false).then_some(Hit::Path)
            }
            RuleKind::Root(root) => {
                if resolved == root {
                    Some(Hit::Is(root.clone()))
                } else if resolved.starts_with(root) {
                    Some(Hit::Inside(root.clone()))
                } else if root.starts_with(resolved) {
                    Some(Hit::Exposes(root.clone()))
                } else {
                    None
                }
            }
        };
        if let Some(hit) = hit {
            return Some(RejectReason::Blocked {
                origin: rule.origin.clone(),
                hit,
            });
        }
    }
    None
}

struct Scan {
    rejection: Option<RejectReason>,
    complete: bool,
}

/// Searches `SCAN_DEPTH` levels inside `dir` for blocked entries and sockets, without following
/// symlinks (inside the sandbox a symlink resolves in the sandbox's own view, not the host's).
fn scan_contents(rules: &[Rule], dir: &Path) -> Scan {
    let mut seen = 0usize;
    let mut stack = vec![(dir.to_owned(), 1usize)];
    while let Some((current, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > SCAN_BUDGET {
                return Scan {
                    rejection: None,
                    complete: false,
                };
            }
            let path = entry.path();
            let names = component_names(&path);
            for rule in rules {
                if let RuleKind::Components(globs) = &rule.kind
                    && matches_sequence(globs, &names, true)
                {
                    return Scan {
                        rejection: Some(RejectReason::Blocked {
                            origin: rule.origin.clone(),
                            hit: Hit::Contains(path),
                        }),
                        complete: true,
                    };
                }
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            use std::os::unix::fs::FileTypeExt;
            if kind.is_socket() {
                return Scan {
                    rejection: Some(RejectReason::ContainsSocket(path)),
                    complete: true,
                };
            }
            if kind.is_dir() && depth < SCAN_DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    Scan {
        rejection: None,
        complete: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A scratch world: `allowlist/` (holds the file), `data/` (the data dir), `home/` and `srv/`.
    struct World {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl World {
        fn new() -> World {
            let tmp = tempfile::tempdir().unwrap();
            let root = std::fs::canonicalize(tmp.path()).unwrap();
            for d in [
                "allowlist",
                "data",
                "home/projects/site",
                "home/.ssh",
                "srv/shared",
            ] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            World { _tmp: tmp, root }
        }
        fn p(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }
        fn s(&self, rel: &str) -> String {
            self.p(rel).display().to_string()
        }
        fn file(&self) -> PathBuf {
            self.p("allowlist/mount-allowlist.toml")
        }
        fn policy(&self, toml: &str) -> MountPolicy {
            MountPolicy::parse(&self.file(), toml, Some(self.p("home"))).unwrap()
        }
        #[allow(clippy::result_large_err)]
        fn check(
            &self,
            policy: &MountPolicy,
            group: &Group,
            path: &str,
            rw: bool,
        ) -> Result<ApprovedMount, MountRejection> {
            policy.check(group, &req("extra", path, rw), &self.p("data"))
        }
    }

    fn group(folder: &str, is_main: bool) -> Group {
        Group {
            id: format!("grp-{folder}"),
            name: folder.into(),
            folder: folder.into(),
            trigger: "@Andy".into(),
            is_main,
            provider: None,
            model: None,
            created_at: 0,
            timezone: None,
        }
    }

    fn req(name: &str, path: &str, rw: bool) -> GroupMount {
        GroupMount {
            group_id: "grp".into(),
            name: name.into(),
            host_path: path.into(),
            read_write: rw,
            created_at: 0,
        }
    }

    fn projects_rw() -> &'static str {
        "[[allow]]\npath = \"~/projects\"\nread_write = true\n"
    }

    #[test]
    fn a_folder_under_an_allowed_one_is_mounted_at_workspace_extra() {
        let w = World::new();
        let policy = w.policy(projects_rw());
        let main = group("main", true);
        let ok = w.check(&policy, &main, "~/projects/site", true).unwrap();
        assert_eq!(ok.host_path, w.p("home/projects/site"));
        assert_eq!(ok.sandbox_path, Path::new("/workspace/extra/extra"));
        assert!(ok.writable && ok.notes.is_empty());
        // Asking for read-only gets read-only even where read-write is allowed.
        let ok = w
            .check(&policy, &main, &w.s("home/projects/site"), false)
            .unwrap();
        assert!(!ok.writable);
    }

    #[test]
    fn a_missing_allowlist_denies_everything_and_names_the_file() {
        let w = World::new();
        let policy = MountPolicy::load_from(&w.file()).unwrap();
        assert!(!policy.exists());
        let err = w
            .check(
                &policy,
                &group("main", true),
                &w.s("home/projects/site"),
                false,
            )
            .unwrap_err();
        assert!(matches!(err.reason, RejectReason::NoAllowlist { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&w.file().display().to_string()) && msg.contains("create it"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_allowlists_are_clear_errors() {
        let w = World::new();
        std::fs::write(w.file(), "[[allow]\npath = 3").unwrap();
        let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
        assert!(
            err.contains("not valid TOML") && err.contains("mount-allowlist.toml"),
            "{err}"
        );

        std::fs::write(w.file(), "[[allow]]\npath = \"/srv\"\nreadwrite = true\n").unwrap();
        let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
        assert!(err.contains("readwrite"), "the typo is named: {err}");

        std::fs::write(w.file(), "[[allow]]\npath = \"projects\"\n").unwrap();
        let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
        assert!(err.contains("must be absolute or start with ~/"), "{err}");

        std::fs::write(w.file(), "[[allow]]\npath = \"/srv\"\ngroups = []\n").unwrap();
        let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
        assert!(err.contains("groups = []"), "{err}");

        std::fs::write(w.file(), "blocked = [\"a/../b\"]\n").unwrap();
        let err = MountPolicy::load_from(&w.file()).unwrap_err().to_string();
        assert!(err.contains("a/../b"), "{err}");

        // An unusable allowlist refuses every mount, quoting why.
        let policy = MountPolicy::unusable(w.file(), "bad TOML at line 1");
        let err = w
            .check(&policy, &group("main", true), &w.s("srv/shared"), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot be used") && err.contains("bad TOML at line 1"),
            "{err}"
        );
    }

    #[test]
    fn a_world_writable_allowlist_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let w = World::new();
        std::fs::write(w.file(), projects_rw()).unwrap();
        std::fs::set_permissions(w.file(), std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = MountPolicy::load_from(&w.file()).unwrap_err();
        assert!(
            matches!(err, MountPolicyError::WorldWritable { .. }),
            "{err}"
        );
        std::fs::set_permissions(w.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        MountPolicy::load_from(&w.file()).unwrap();
    }

    #[test]
    fn a_folder_outside_every_allowed_one_is_refused_with_the_file_named() {
        let w = World::new();
        let policy = w.policy(projects_rw());
        let err = w
            .check(&policy, &group("main", true), &w.s("srv/shared"), false)
            .unwrap_err();
        assert!(matches!(err.reason, RejectReason::NotAllowed { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "{:?}: not under any allowed folder in {}",
                w.s("srv/shared"),
                w.file().display()
            )
        );
    }

    #[test]
    fn builtin_blocked_names_refuse_the_folder_and_its_subfolders() {
        let w = World::new();
        std::fs::create_dir_all(w.p("home/.ssh/keys")).unwrap();
        std::fs::create_dir_all(w.p("home/.config/gcloud/x")).unwrap();
        std::fs::create_dir_all(w.p("home/projects/Site.PEM")).unwrap();
        let policy = w.policy("[[allow]]\npath = \"~\"\n");
        let main = group("main", true);
        for (path, pattern) in [
            ("~/.ssh", ".ssh"),
            ("~/.ssh/keys", ".ssh"),
            ("~/.config/gcloud/x", ".config/gcloud"),
            ("~/projects/Site.PEM", "*.pem"),
        ] {
            let err = w.check(&policy, &main, path, false).unwrap_err();
            assert_eq!(
                err.reason,
                RejectReason::Blocked {
                    origin: Origin::BuiltIn(
                        BUILTIN_BLOCKED.iter().find(|p| **p == pattern).unwrap()
                    ),
                    hit: Hit::Path
                },
                "{path}"
            );
            assert!(
                err.to_string()
                    .ends_with(&format!("blocked by the built-in pattern {pattern:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_symlink_inside_an_allowed_folder_pointing_at_a_secret_is_refused() {
        let w = World::new();
        std::fs::create_dir_all(w.p("outside/.ssh")).unwrap();
        std::fs::create_dir_all(w.p("outside/plain")).unwrap();
        symlink(w.p("outside/.ssh"), w.p("home/projects/keys")).unwrap();
        symlink(w.p("outside/plain"), w.p("home/projects/plain")).unwrap();
        let policy = w.policy(projects_rw());
        let main = group("main", true);
        let err = w
            .check(&policy, &main, "~/projects/keys", false)
            .unwrap_err();
        assert_eq!(err.resolved.as_deref(), Some(w.p("outside/.ssh").as_path()));
        assert!(
            err.to_string()
                .contains("blocked by the built-in pattern \".ssh\""),
            "{err}"
        );
        // A harmless target outside is still outside every allowed folder.
        let err = w
            .check(&policy, &main, "~/projects/plain", false)
            .unwrap_err();
        assert!(
            matches!(err.reason, RejectReason::NotAllowed { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_path_through_a_symlink_into_an_allowed_folder_mounts_the_resolved_path() {
        let w = World::new();
        symlink(w.p("home/projects/site"), w.p("srv/alias")).unwrap();
        let policy = w.policy(projects_rw());
        let ok = w
            .check(&policy, &group("main", true), &w.s("srv/alias"), true)
            .unwrap();
        assert_eq!(ok.host_path, w.p("home/projects/site"));

        // Re-checking after the link is swapped follows the new target (spawn re-validates).
        std::fs::remove_file(w.p("srv/alias")).unwrap();
        symlink(w.p("home/.ssh"), w.p("srv/alias")).unwrap();
        let err = w
            .check(&policy, &group("main", true), &w.s("srv/alias"), true)
            .unwrap_err();
        assert!(err.to_string().contains(".ssh"), "{err}");
    }

    #[test]
    fn dot_dot_tricks_are_resolved_before_checking() {
        let w = World::new();
        let policy = w.policy(projects_rw());
        let main = group("main", true);
        let err = w
            .check(&policy, &main, "~/projects/site/../../.ssh", false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("blocked by the built-in pattern \".ssh\""),
            "{err}"
        );
        let err = w
            .check(&policy, &main, "~/projects/../../srv/shared", false)
            .unwrap_err();
        assert!(
            matches!(err.reason, RejectReason::NotAllowed { .. }),
            "{err}"
        );
        let ok = w
            .check(&policy, &main, "~/projects/site/../site/.", false)
            .unwrap();
        assert_eq!(ok.host_path, w.p("home/projects/site"));
        // Relative paths never reach the filesystem check.
        let err = w.check(&policy, &main, "projects/site", false).unwrap_err();
        assert_eq!(err.reason, RejectReason::NotAbsolute);
    }

    #[test]
    fn a_folder_holding_a_secret_within_the_scan_depth_is_refused() {
        let w = World::new();
        std::fs::create_dir_all(w.p("home/projects/app/config")).unwrap();
        std::fs::write(w.p("home/projects/app/config/.env"), "KEY=1").unwrap();
        let policy = w.policy(projects_rw());
        let err = w
            .check(&policy, &group("main", true), "~/projects/app", false)
            .unwrap_err();
        assert_eq!(
            err.reason,
            RejectReason::Blocked {
                origin: Origin::BuiltIn(".env"),
                hit: Hit::Contains(w.p("home/projects/app/config/.env")),
            }
        );
        // The folder holding the secret's parent is refused too; a sibling without it is fine.
        assert!(
            w.check(&policy, &group("main", true), "~/projects", false)
                .is_err()
        );
        w.check(&policy, &group("main", true), "~/projects/site", false)
            .unwrap();

        // Deeper than the scan depth is not searched (documented limit).
        std::fs::create_dir_all(w.p("home/projects/site/a/b/c")).unwrap();
        std::fs::write(w.p("home/projects/site/a/b/c/id_rsa"), "k").unwrap();
        w.check(&policy, &group("main", true), "~/projects/site", false)
            .unwrap();
        std::fs::write(w.p("home/projects/site/a/b/id_rsa"), "k").unwrap();
        assert!(
            w.check(&policy, &group("main", true), "~/projects/site", false)
                .is_err()
        );
    }

    #[test]
    fn a_folder_holding_a_unix_socket_is_refused() {
        let w = World::new();
        let sock = w.p("home/projects/site/daemon");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let policy = w.policy(projects_rw());
        let err = w
            .check(&policy, &group("main", true), "~/projects/site", false)
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::ContainsSocket(sock));
    }

    #[test]
    fn the_data_dir_and_the_allowlist_folder_can_neither_be_mounted_nor_exposed() {
        let w = World::new();
        std::fs::create_dir_all(w.p("data/groups/main")).unwrap();
        let policy = w.policy(&format!("[[allow]]\npath = {:?}\n", w.s("")));
        let main = group("main", true);
        let err = w
            .check(&policy, &main, &w.s("data/groups/main"), false)
            .unwrap_err();
        assert!(
            matches!(
                &err.reason,
                RejectReason::Blocked {
                    origin: Origin::DataDir,
                    hit: Hit::Inside(_)
                }
            ),
            "{err}"
        );
        let err = w
            .check(&policy, &main, &w.s("allowlist"), false)
            .unwrap_err();
        assert_eq!(
            err.reason,
            RejectReason::Blocked {
                origin: Origin::AllowlistDir,
                hit: Hit::Is(w.p("allowlist")),
            }
        );
        // The common ancestor would expose both.
        let err = w.check(&policy, &main, &w.s(""), false).unwrap_err();
        assert!(
            matches!(
                &err.reason,
                RejectReason::Blocked {
                    hit: Hit::Exposes(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("would expose"), "{err}");
        // System folders are refused whatever the allowlist says.
        let policy = w.policy("[[allow]]\npath = \"/\"\n");
        let err = w.check(&policy, &main, "/etc", false).unwrap_err();
        assert!(
            err.to_string().contains("built-in pattern \"/etc\""),
            "{err}"
        );
    }

    #[test]
    fn an_allowlist_inside_the_data_dir_refuses_every_mount() {
        let w = World::new();
        let policy = MountPolicy::parse(
            &w.p("data/groups/main/mount-allowlist.toml"),
            projects_rw(),
            Some(w.p("home")),
        )
        .unwrap();
        let err = w
            .check(&policy, &group("main", true), "~/projects/site", false)
            .unwrap_err();
        assert!(
            matches!(err.reason, RejectReason::AllowlistInDataDir { .. }),
            "{err}"
        );
    }

    #[test]
    fn allowlist_blocked_patterns_add_to_the_builtin_ones() {
        let w = World::new();
        std::fs::create_dir_all(w.p("home/projects/Secrets")).unwrap();
        std::fs::create_dir_all(w.p("home/projects/vault")).unwrap();
        let policy = w.policy(&format!(
            "blocked = [\"secrets\", \"~/projects/vault\"]\n{}",
            projects_rw()
        ));
        let main = group("main", true);
        let err = w
            .check(&policy, &main, "~/projects/Secrets", false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("blocked by the pattern \"secrets\" in"),
            "{err}"
        );
        let err = w
            .check(&policy, &main, "~/projects/vault", false)
            .unwrap_err();
        assert!(
            matches!(
                &err.reason,
                RejectReason::Blocked {
                    hit: Hit::Is(_),
                    ..
                }
            ),
            "{err}"
        );
        let err = w.check(&policy, &main, "~/projects", false).unwrap_err();
        assert!(
            err.to_string().contains("Secrets") || err.to_string().contains("vault"),
            "{err}"
        );
    }

    #[test]
    fn read_write_is_downgraded_for_other_groups_unless_listed() {
        let w = World::new();
        let rw_for_all = w.policy(projects_rw());
        let work = group("work", false);
        let ok = w
            .check(&rw_for_all, &work, "~/projects/site", true)
            .unwrap();
        assert!(!ok.writable, "non-main needs to be listed for read-write");
        assert!(ok.notes[0].contains("read-only"), "{:?}", ok.notes);

        let listed = w.policy(
            "[[allow]]\npath = \"~/projects\"\nread_write = true\ngroups = [\"main\", \"work\"]\n",
        );
        assert!(
            w.check(&listed, &work, "~/projects/site", true)
                .unwrap()
                .writable
        );
        assert!(
            w.check(&listed, &group("main", true), "~/projects/site", true)
                .unwrap()
                .writable
        );

        let read_only = w.policy("[[allow]]\npath = \"~/projects\"\n");
        let ok = w
            .check(&read_only, &group("main", true), "~/projects/site", true)
            .unwrap();
        assert!(!ok.writable);
        assert!(ok.notes[0].contains("not read_write"), "{:?}", ok.notes);
    }

    #[test]
    fn an_entry_limited_to_other_groups_does_not_apply() {
        let w = World::new();
        let policy = w.policy(
            "[[allow]]\npath = \"~/projects\"\ngroups = [\"main\"]\n\
             [[allow]]\npath = \"~/projects/site\"\ngroups = [\"family\"]\n",
        );
        let err = w
            .check(&policy, &group("work", false), "~/projects/site", false)
            .unwrap_err();
        assert!(
            matches!(err.reason, RejectReason::NotForGroup { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("other groups than \"work\""),
            "{err}"
        );
        w.check(&policy, &group("family", false), "~/projects/site", false)
            .unwrap();
        w.check(&policy, &group("main", true), "~/projects/site", false)
            .unwrap();
    }

    #[test]
    fn the_most_specific_allowed_folder_decides() {
        let w = World::new();
        let policy = w.policy(
            "[[allow]]\npath = \"~/projects\"\nread_write = true\n\
             [[allow]]\npath = \"~/projects/site\"\n",
        );
        let main = group("main", true);
        assert!(
            !w.check(&policy, &main, "~/projects/site", true)
                .unwrap()
                .writable
        );
    }

    #[test]
    fn bad_names_and_non_directories_are_refused() {
        let w = World::new();
        std::fs::write(w.p("home/projects/notes.txt"), "x").unwrap();
        let policy = w.policy(projects_rw());
        let main = group("main", true);
        for bad in ["..", "a/b", "a:b", ".x", "", "a..b"] {
            let err = policy
                .check(&main, &req(bad, "~/projects/site", false), &w.p("data"))
                .unwrap_err();
            assert!(
                matches!(err.reason, RejectReason::InvalidName(_)),
                "{bad:?}: {err}"
            );
        }
        let err = w
            .check(&policy, &main, "~/projects/notes.txt", false)
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::NotADirectory);
        let err = w
            .check(&policy, &main, "~/projects/nope", false)
            .unwrap_err();
        assert!(matches!(err.reason, RejectReason::Unresolvable(_)), "{err}");
    }

    #[test]
    fn resolve_group_mounts_splits_what_passes_from_what_does_not() {
        let w = World::new();
        let policy = w.policy(projects_rw());
        let requested = [
            req("site", "~/projects/site", true),
            req("keys", "~/.ssh", false),
        ];
        let (mounts, rejected) =
            resolve_group_mounts(&policy, &group("main", true), &requested, &w.p("data"));
        assert_eq!(
            mounts,
            [Mount {
                host_path: w.p("home/projects/site"),
                sandbox_path: "/workspace/extra/site".into(),
                writable: true,
            }]
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].name, "keys");
    }

    #[test]
    fn the_example_allowlist_parses_and_a_misplaced_blocked_line_gets_a_hint() {
        let w = World::new();
        let policy = w.policy(ALLOWLIST_EXAMPLE);
        assert!(policy.exists());
        let err = MountPolicy::parse(
            &w.file(),
            &format!("{}blocked = [\"x\"]\n", projects_rw()),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("above the first [[allow]]"), "{err}");
    }

    #[test]
    fn globs_match_whole_components_case_insensitively() {
        assert!(glob_match(b"*.pem", b"server.pem"));
        assert!(!glob_match(b"*.pem", b"server.pem.txt"));
        assert!(glob_match(b"id_rsa*", b"id_rsa.pub"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b".env", b".envrc"));
        let names = component_names(Path::new("/home/u/.CONFIG/gcloud"));
        assert!(matches_sequence(
            &[".config".into(), "gcloud".into()],
            &names,
            false
        ));
        assert!(!matches_sequence(
            &["gcloud".into(), ".config".into()],
            &names,
            false
        ));
    }
}

//! The path checks: blocked folders and name patterns, and how they match a resolved path.

use std::path::{Component, Path, PathBuf};

use super::{Hit, MountPolicy, Origin, RejectReason};

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
pub(super) const BUILTIN_BLOCKED_ROOTS: &[&str] =
    &["/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc"];

/// Whether an allowlist path or pattern names a folder (absolute or under `~`).
pub(super) fn is_absolute_or_tilde(p: &str) -> bool {
    p.starts_with('/') || p == "~" || p.starts_with("~/")
}

/// Canonical form when the path exists, else the path as given (a folder that does not exist yet
/// still blocks by prefix).
pub(super) fn resolve_lenient(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

pub(super) enum RuleKind {
    /// Glob per component, matched against consecutive path components.
    Components(Vec<String>),
    /// A folder: blocks itself, everything in it and every ancestor (which would expose it).
    Root(PathBuf),
}

/// One blocking rule and where it comes from.
pub(super) struct Rule {
    pub(super) kind: RuleKind,
    pub(super) origin: Origin,
}

impl Rule {
    pub(super) fn root(path: PathBuf, origin: Origin) -> Rule {
        Rule {
            kind: RuleKind::Root(path),
            origin,
        }
    }
    pub(super) fn components(pattern: &str, origin: Origin) -> Rule {
        Rule {
            kind: RuleKind::Components(pattern.split('/').map(str::to_ascii_lowercase).collect()),
            origin,
        }
    }
}

pub(super) fn component_names(p: &Path) -> Vec<String> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Whether `globs` matches `names` at some position; with `ending_last`, only a match that ends at
/// the last name counts (the ancestors were checked already).
pub(super) fn matches_sequence(globs: &[String], names: &[String], ending_last: bool) -> bool {
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
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
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

/// The first rule that blocks `resolved` itself (or, for a folder rule, exposes or holds it).
pub(super) fn blocked_path(rules: &[Rule], resolved: &Path) -> Option<RejectReason> {
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

impl MountPolicy {
    /// Every blocking rule for one check: the data dir and the allowlist's folder, the
    /// built-in folders and patterns, then the allowlist's own `blocked` entries.
    pub(super) fn rules(
        &self,
        user_blocked: &[String],
        data_dir: &Path,
        allowlist_dir: &Path,
    ) -> Vec<Rule> {
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

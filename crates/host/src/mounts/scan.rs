//! The scan of a folder about to be mounted: blocked entries and Unix sockets within
//! [`SCAN_DEPTH`] levels. It walks the disk, so it is blocking work.

use std::path::Path;

use super::rules::{Rule, RuleKind, component_names, matches_sequence};
use super::{Hit, RejectReason, SCAN_BUDGET, SCAN_DEPTH};

/// What the search inside a folder found.
pub(super) struct Scan {
    /// The first blocked entry or socket, if any.
    pub(super) rejection: Option<RejectReason>,
    /// False when [`SCAN_BUDGET`] ran out before the whole depth was searched.
    pub(super) complete: bool,
}

/// Searches `SCAN_DEPTH` levels inside `dir` for blocked entries and sockets, without following
/// symlinks (inside the sandbox a symlink resolves in the sandbox's own view, not the host's).
pub(super) fn scan_contents(rules: &[Rule], dir: &Path) -> Scan {
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

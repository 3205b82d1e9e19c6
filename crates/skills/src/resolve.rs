//! Dependency resolution: the enabled skills and everything they require, dependencies first.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::Catalog;
use crate::error::ResolveError;

/// The result of [`Catalog::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Every skill to activate, each after the skills it requires. Skills are visited in name
    /// order (and requirements in name order), so the same input always gives the same order.
    pub order: Vec<String>,
    /// The skills in `order` that were not asked for but are required, in name order.
    pub added: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    OnPath,
    Done,
}

impl Catalog {
    /// Resolves `enabled` (skill names, any order, duplicates ignored) and what they require.
    ///
    /// Fails on the first problem met in name order: an unknown or broken skill, a requirement
    /// that is not installed, or is installed at a version outside its range (a skill without a
    /// version satisfies only `*`), or a cycle, reported as its path (`a → b → a`). Each skill is
    /// visited once, so it never loops.
    pub fn resolve<S: AsRef<str>>(&self, enabled: &[S]) -> Result<Resolution, ResolveError> {
        let wanted: BTreeSet<&str> = enabled.iter().map(AsRef::as_ref).collect();
        let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
        let mut path: Vec<String> = Vec::new();
        let mut order = Vec::new();
        for name in &wanted {
            self.visit(name, None, &mut marks, &mut path, &mut order)?;
        }
        let added = {
            let mut a: Vec<String> = order
                .iter()
                .filter(|n| !wanted.contains(n.as_str()))
                .cloned()
                .collect();
            a.sort();
            a
        };
        Ok(Resolution { order, added })
    }

    fn visit(
        &self,
        name: &str,
        required_by: Option<&str>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ResolveError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::OnPath) => {
                let start = path.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle: Vec<String> = path.get(start..).unwrap_or_default().to_vec();
                cycle.push(name.to_string());
                return Err(ResolveError::Cycle { path: cycle });
            }
            None => {}
        }
        let entry = self.get(name).ok_or_else(|| ResolveError::Unknown {
            name: name.to_string(),
        })?;
        let skill = entry.skill.as_ref().map_err(|e| ResolveError::Broken {
            name: name.to_string(),
            required_by: required_by.map(str::to_string),
            error: e.to_string(),
        })?;
        marks.insert(name.to_string(), Mark::OnPath);
        path.push(name.to_string());
        for (dep, range) in &skill.manifest.requires {
            let Some(dep_entry) = self.get(dep) else {
                return Err(ResolveError::Missing {
                    skill: name.to_string(),
                    requires: dep.clone(),
                    range: range.to_string(),
                });
            };
            if let Ok(dep_skill) = &dep_entry.skill {
                let fits = match dep_skill.version() {
                    Some(v) => range.matches(v),
                    None => *range == semver::VersionReq::STAR,
                };
                if !fits {
                    return Err(ResolveError::Incompatible {
                        skill: name.to_string(),
                        requires: dep.clone(),
                        range: range.to_string(),
                        found: dep_skill
                            .version()
                            .map_or("no version".to_string(), |v| format!("version {v}")),
                    });
                }
            }
            self.visit(dep, Some(name), marks, path, order)?;
        }
        path.pop();
        marks.insert(name.to_string(), Mark::Done);
        order.push(name.to_string());
        Ok(())
    }
}

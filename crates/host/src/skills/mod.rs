//! Skills in the host: where a group's skills come from, what enabling one grants, and the set
//! an agent gets at spawn.
//!
//! The skill format, hashing, resolution and graphs are `nanoclaw-skills`'; the per-group state
//! and grants are the store's (`group_skills` …); this module wires them: the CLI and the owner's
//! chat commands enable and disable through [`plan_enable`] and the store, and the agent pool
//! calls [`prepare`] before each turn, so a change applies on the group's next turn without a
//! restart. Sources, in override order: the built-in skills (`$NANOCLAW_HOME/builtin-skills`,
//! written from the binary at start), the user's (`$NANOCLAW_HOME/skills`) and the group's own
//! (`$NANOCLAW_HOME/group-skills/<folder>`, outside the agent-writable group folder, so an agent
//! can never write a skill the host then trusts).

pub mod builtin;
pub mod chat;
pub mod manage;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use nanoclaw_protocol::contract::paths::SKILLS as SANDBOX_SKILLS;
use nanoclaw_protocol::{McpServer, SkillInfo, SkillTool};
use nanoclaw_sandbox::Mount;
use nanoclaw_skills::{Catalog, Skill, Source, SourceKind};
use nanoclaw_store::{
    Group, GroupSkill, GroupSkillState, NewGroupSkill, NewOutbound, OutboundKind, SkillEgress,
    SkillSecret, Store,
};

use crate::config::Paths;

/// The built-in skills' folder.
pub fn builtin_dir(paths: &Paths) -> PathBuf {
    paths.home.join("builtin-skills")
}

/// The user's skills folder.
pub fn user_dir(paths: &Paths) -> PathBuf {
    paths.home.join("skills")
}

/// Group `folder`'s own skills folder (not inside the group's workspace: the agent cannot write
/// here).
pub fn group_dir(paths: &Paths, folder: &str) -> PathBuf {
    paths.home.join("group-skills").join(folder)
}

/// The sources a group's catalog reads, in override order.
pub fn sources(paths: &Paths, folder: &str) -> Vec<Source> {
    vec![
        Source::builtin(builtin_dir(paths)),
        Source::user(user_dir(paths)),
        Source::group(folder, group_dir(paths, folder)),
    ]
}

/// Loads group `folder`'s catalog (reads and hashes files: call it off the async threads).
pub fn load_catalog(paths: &Paths, folder: &str) -> Catalog {
    Catalog::load(&sources(paths, folder))
}

/// [`load_catalog`] on the blocking pool.
pub async fn load_catalog_blocking(paths: &Paths, folder: &str) -> Result<Catalog, String> {
    let (paths, folder) = (paths.clone(), folder.to_owned());
    tokio::task::spawn_blocking(move || load_catalog(&paths, &folder))
        .await
        .map_err(|e| format!("loading the skills catalog: {e}"))
}

/// The Debian packages an agent image needs for skills: those the `named` skills declare
/// (found in any group's catalog) and, with `enabled`, those of every skill enabled in any
/// group. Sorted, each once. An unknown name is an error naming it.
pub async fn image_packages(
    store: &Store,
    paths: &Paths,
    named: &[String],
    enabled: bool,
) -> Result<Vec<String>, String> {
    let groups = store
        .list_groups()
        .await
        .map_err(|e| format!("reading the groups: {e}"))?;
    let mut packages = BTreeSet::new();
    let mut found = BTreeSet::new();
    for group in &groups {
        let catalog = load_catalog_blocking(paths, &group.folder).await?;
        for name in named {
            if let Some(skill) = catalog.skill(name) {
                found.insert(name.clone());
                packages.extend(skill.manifest.packages.iter().cloned());
            }
        }
        if enabled {
            let rows = store
                .group_skills(group.id.as_str())
                .await
                .map_err(|e| format!("reading group {}'s skills: {e}", group.folder))?;
            for row in rows {
                if let Some(skill) = catalog.skill(&row.skill) {
                    packages.extend(skill.manifest.packages.iter().cloned());
                }
            }
        }
    }
    if let Some(unknown) = named.iter().find(|n| !found.contains(*n)) {
        return Err(format!(
            "no skill named {unknown} (see `nanoclaw skills list`)"
        ));
    }
    Ok(packages.into_iter().collect())
}

/// How a source is recorded in the store.
pub fn source_name(kind: &SourceKind) -> &'static str {
    match kind {
        SourceKind::Builtin => "builtin",
        SourceKind::User => "user",
        SourceKind::Group(_) => "group",
    }
}

/// What enabling some skills will do.
#[derive(Debug, Clone, PartialEq)]
pub struct EnablePlan {
    /// The skills asked for.
    pub requested: Vec<String>,
    /// Required by them and enabled too (not asked for).
    pub added: Vec<String>,
    /// The rows to write, dependencies first.
    pub rows: Vec<NewGroupSkill>,
    /// What the skills grant and offer, one line each, for the owner to read.
    pub grants: Vec<String>,
    /// Declared vault secrets, for the missing-secret warning.
    pub secrets: BTreeSet<String>,
}

/// The store row for `skill` (its approved hash and grants).
pub fn row_for(skill: &Skill, source: &SourceKind, requested: bool) -> NewGroupSkill {
    let m = &skill.manifest;
    NewGroupSkill {
        skill: skill.name().to_owned(),
        source: source_name(source).to_owned(),
        content_hash: skill.content_hash().to_owned(),
        requested,
        egress: m
            .egress
            .iter()
            .map(|e| SkillEgress {
                pattern: e.host.clone(),
                methods: e.methods.clone(),
            })
            .collect(),
        secrets: m
            .secrets
            .iter()
            .flat_map(|s| {
                s.hosts.iter().map(|h| SkillSecret {
                    secret_name: s.name.clone(),
                    host: h.clone(),
                })
            })
            .collect(),
    }
}

/// One line per thing `skill` grants or offers (egress, secrets, MCP servers, schedules,
/// commands, tools).
pub fn describe_grants(skill: &Skill) -> Vec<String> {
    let name = skill.name();
    let m = &skill.manifest;
    let mut out = Vec::new();
    for e in &m.egress {
        out.push(format!(
            "{name}: may reach {} ({})",
            e.host,
            e.methods.join(", ")
        ));
    }
    for s in &m.secrets {
        out.push(format!(
            "{name}: may use secret {} on {}",
            s.name,
            s.hosts.join(", ")
        ));
    }
    for (server, spec) in &m.mcp_servers {
        out.push(format!(
            "{name}: starts MCP server {server} in the sandbox ({})",
            spec.command
        ));
    }
    for s in &m.schedules {
        out.push(format!(
            "{name}: offers schedule {} ({}): {}",
            s.name, s.cron, s.prompt
        ));
    }
    for c in m.commands.keys() {
        out.push(format!("{name}: adds chat command /{c}"));
    }
    for t in &m.tools {
        out.push(format!("{name}: adds tool {} ({})", t.name, t.script));
    }
    out
}

/// Resolves `names` and what they require in `catalog`, and what enabling them grants. Fails
/// with the library's message for an unknown, broken or missing skill, a version that does not
/// fit, or a cycle.
pub fn plan_enable(catalog: &Catalog, names: &[String]) -> Result<EnablePlan, String> {
    let resolution = catalog.resolve(names).map_err(|e| e.to_string())?;
    let mut plan = EnablePlan {
        requested: names.to_vec(),
        added: resolution.added.clone(),
        rows: Vec::new(),
        grants: Vec::new(),
        secrets: BTreeSet::new(),
    };
    for name in &resolution.order {
        let (Some(entry), Some(skill)) = (catalog.get(name), catalog.skill(name)) else {
            return Err(format!("skill {name:?} vanished while resolving"));
        };
        plan.rows
            .push(row_for(skill, &entry.source, names.contains(name)));
        plan.grants.extend(describe_grants(skill));
        plan.secrets
            .extend(skill.manifest.secrets.iter().map(|s| s.name.clone()));
    }
    Ok(plan)
}

/// The group's skills (among `enabled`) that require `name` directly.
pub fn dependents(catalog: &Catalog, enabled: &[String], name: &str) -> Vec<String> {
    enabled
        .iter()
        .filter(|e| e.as_str() != name)
        .filter(|e| {
            catalog
                .skill(e)
                .is_some_and(|s| s.manifest.requires.contains_key(name))
        })
        .cloned()
        .collect()
}

/// How a pause for a paused requirement begins: approving that requirement resumes the skill.
pub const REQUIRES_PAUSED: &str = "it requires ";

/// A skill that must be paused: its files no longer match what the owner approved, or a skill
/// it requires is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub skill: String,
    pub reason: String,
    /// The hash found (none when the skill is gone or broken).
    pub found_hash: Option<String>,
}

/// What a group's agent gets: its enabled skills (dependencies first), their MCP servers, the
/// read-only mounts, and a fingerprint (names and hashes) to tell a warm agent started with
/// another set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    pub skills: Vec<SkillInfo>,
    pub mcp_servers: Vec<McpServer>,
    pub mounts: Vec<Mount>,
    pub fingerprint: String,
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Checks the group's enabled skills against `catalog`: each must still be installed, load,
/// and have the approved hash, else it is to be paused. Returns what the agent gets and the
/// pauses. Paused rows are left out (until the owner approves them).
pub fn check(catalog: &Catalog, rows: &[GroupSkill]) -> (Prepared, Vec<Pause>) {
    let mut pauses = Vec::new();
    let mut active: BTreeMap<String, &Skill> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.state == GroupSkillState::Enabled) {
        match catalog.get(&row.skill) {
            None => pauses.push(Pause {
                skill: row.skill.clone(),
                reason: "it is no longer installed".into(),
                found_hash: None,
            }),
            Some(entry) => match &entry.skill {
                Err(e) => pauses.push(Pause {
                    skill: row.skill.clone(),
                    reason: format!("it no longer loads: {e}"),
                    found_hash: None,
                }),
                Ok(skill) if skill.content_hash() != row.content_hash => pauses.push(Pause {
                    skill: row.skill.clone(),
                    reason: format!(
                        "its files changed (approved {}, found {})",
                        short(&row.content_hash),
                        short(skill.content_hash())
                    ),
                    found_hash: Some(skill.content_hash().to_owned()),
                }),
                Ok(skill) => {
                    active.insert(row.skill.clone(), skill);
                }
            },
        }
    }
    // A skill whose requirement is paused (or gone) is paused too: it would run without what
    // it was approved to rely on. Repeated until nothing changes (chains of requirements).
    loop {
        let blocked: Vec<(String, String)> = active
            .iter()
            .filter_map(|(name, skill)| {
                skill
                    .manifest
                    .requires
                    .keys()
                    .find(|dep| !active.contains_key(dep.as_str()))
                    .map(|dep| (name.clone(), dep.clone()))
            })
            .collect();
        if blocked.is_empty() {
            break;
        }
        for (name, dep) in blocked {
            let hash = active.remove(&name).map(|s| s.content_hash().to_owned());
            pauses.push(Pause {
                skill: name,
                reason: format!("{REQUIRES_PAUSED}{dep}, which is paused or missing"),
                found_hash: hash,
            });
        }
    }
    // Dependencies first when they resolve; else name order.
    let names: Vec<String> = active.keys().cloned().collect();
    let order: Vec<String> = match catalog.resolve(names.as_slice()) {
        Ok(r) => r
            .order
            .into_iter()
            .filter(|n| active.contains_key(n))
            .collect(),
        Err(_) => names,
    };
    let mut prepared = Prepared::default();
    let mut fingerprint = Vec::new();
    for name in &order {
        let Some(skill) = active.get(name) else {
            continue;
        };
        let path = format!("{SANDBOX_SKILLS}/{name}");
        prepared.skills.push(SkillInfo {
            name: name.clone(),
            description: skill.frontmatter.description.clone(),
            path: path.clone(),
            tools: skill
                .manifest
                .tools
                .iter()
                .map(|t| SkillTool {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    script: t.script.clone(),
                    input_schema: t.input_schema.clone(),
                })
                .collect(),
        });
        for (server, spec) in &skill.manifest.mcp_servers {
            if prepared.mcp_servers.iter().any(|s| &s.name == server) {
                tracing::warn!(skill = %name, server = %server, "two enabled skills declare the same MCP server name; only the first is started");
                continue;
            }
            prepared.mcp_servers.push(McpServer {
                name: server.clone(),
                command: spec.command.clone(),
                args: spec.args.clone(),
                env: spec.env.clone(),
                skill: Some(name.clone()),
            });
        }
        prepared.mounts.push(Mount {
            host_path: skill.dir.clone(),
            sandbox_path: path.into(),
            writable: false,
        });
        fingerprint.push(format!("{name}={}", skill.content_hash()));
    }
    prepared.fingerprint = fingerprint.join(";");
    (prepared, pauses)
}

/// The skill set for group `group`'s next agent: reads its enabled skills, loads the catalog
/// (on the blocking pool) and checks every hash. A skill whose files changed is paused (its
/// grants suspended), logged, and the owner told once in the main chat.
pub async fn prepare(store: &Store, paths: &Paths, group: &Group) -> Result<Prepared, String> {
    let rows = store
        .group_skills(group.id.as_str())
        .await
        .map_err(|e| format!("reading the group's skills: {e}"))?;
    if !rows.iter().any(|r| r.state == GroupSkillState::Enabled) {
        return Ok(Prepared::default());
    }
    let catalog = load_catalog_blocking(paths, &group.folder).await?;
    let (mut prepared, pauses) = check(&catalog, &rows);
    // Mount copies of exactly the approved files (see snapshot.rs), made on the blocking pool.
    let sources: Vec<(PathBuf, String)> = prepared
        .mounts
        .iter()
        .map(|m| {
            let name = m
                .sandbox_path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let hash = rows
                .iter()
                .find(|r| r.skill == name)
                .map(|r| r.content_hash.clone())
                .unwrap_or_default();
            (m.host_path.clone(), hash)
        })
        .collect();
    let snapshot_paths = paths.clone();
    let snapshots = tokio::task::spawn_blocking(move || {
        sources
            .iter()
            .map(|(dir, hash)| snapshot::ensure(&snapshot_paths, dir, hash))
            .collect::<Result<Vec<PathBuf>, String>>()
    })
    .await
    .map_err(|e| format!("preparing the skills' snapshots: {e}"))??;
    for (mount, snap) in prepared.mounts.iter_mut().zip(snapshots) {
        mount.host_path = snap;
    }
    for p in pauses {
        let newly = store
            .pause_skill(
                group.id.as_str(),
                p.skill.as_str(),
                p.reason.as_str(),
                p.found_hash.clone(),
            )
            .await
            .map_err(|e| format!("pausing skill {}: {e}", p.skill))?;
        if newly {
            tracing::warn!(group = %group.folder, skill = %p.skill, reason = %p.reason, "skill paused until the owner approves it");
            manage::audit(
                store,
                &group.folder,
                &p.skill,
                false,
                format!("skill {} paused: {}", p.skill, p.reason),
            )
            .await;
            let text = if p.reason.starts_with(REQUIRES_PAUSED) {
                format!(
                    "Skill {} of group {} is paused: {}. Its grants are suspended and agents do \
                     not get it; it resumes when that skill is approved.",
                    p.skill, group.folder, p.reason
                )
            } else {
                format!(
                    "Skill {} of group {} is paused: {}. Its grants are suspended and agents do \
                     not get it. Check the files, then approve it to resume it (`/skills approve \
                     {} --group {}` here, or `nanoclaw skills approve {} --group {}`), or \
                     disable it.",
                    p.skill, group.folder, p.reason, p.skill, group.folder, p.skill, group.folder
                )
            };
            tell_owner(
                store,
                // Once per pause (`newly`); a later pause of the same files is news again.
                format!(
                    "skill-paused:{}:{}:{}:{}",
                    group.folder,
                    p.skill,
                    p.found_hash.as_deref().unwrap_or("gone"),
                    crate::now_ms()
                ),
                text,
            )
            .await;
        }
    }
    Ok(prepared)
}

/// Queues `text` for the owner's main chat (delivered with the next delivery round).
async fn tell_owner(store: &Store, key: String, text: String) {
    match crate::host::owner_chat(store).await {
        Ok(Some(chat)) => {
            let stored = store
                .insert_outbound(NewOutbound {
                    session_id: None,
                    chat_id: chat.id,
                    in_reply_to: None,
                    idempotency_key: key,
                    text: text.clone(),
                    kind: OutboundKind::Error,
                    files: Vec::new(),
                })
                .await;
            if let Err(e) = stored {
                tracing::error!(error = %e, %text, "could not queue a notice for the owner");
            }
        }
        Ok(None) => tracing::warn!(%text, "no owner chat to tell"),
        Err(e) => tracing::error!(error = %e, %text, "could not find the owner's chat"),
    }
}

#[cfg(test)]
mod tests;

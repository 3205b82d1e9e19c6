//! Enabling, disabling and approving a group's skills: one implementation for `nanoclaw skills
//! enable|disable|approve` and the owner's `/skills enable|disable|approve` in the main chat.
//! Every attempt, refused ones too, is an `ADMIN` row in the hash-chained audit log, so what a
//! group was granted, when and by whom can be checked later.

use std::collections::BTreeSet;

use nanoclaw_skills::Catalog;
use nanoclaw_store::{Group, GroupSkill, GroupSkillState, Store, TaskStatus};
use serde::Serialize;

use nanoclaw_sandbox::Runtime;

use crate::config::Paths;
use crate::tasks::Scheduler;

/// Who changes a group's skills, for the audit (`cli`, or `chat <channel>:<chat>`).
pub struct SkillAdmin<'a> {
    pub store: &'a Store,
    pub paths: &'a Paths,
    /// Creates and cancels the tasks of skills' schedules (and wakes its loop).
    pub tasks: &'a Scheduler,
    /// The runtime the group's agents run in: skills' declared `packages` are checked
    /// against what its sandboxes have. `None` when there is none (nothing can run anyway).
    pub runtime: Option<&'a dyn Runtime>,
    pub by: String,
}

/// What enabling did.
#[derive(Debug, Clone, Serialize)]
pub struct Enabled {
    pub group: String,
    /// The skills asked for.
    pub enabled: Vec<String>,
    /// Enabled too because the asked-for ones require them.
    pub added: Vec<String>,
    /// One line per thing granted or offered.
    pub grants: Vec<String>,
    /// Declared vault secrets that are not in the vault yet.
    pub missing_secrets: Vec<String>,
    /// One line per schedule turned into a task (or why not).
    pub scheduled: Vec<String>,
    /// Declared packages this runtime could not check.
    pub unchecked_packages: Vec<String>,
}

/// What disabling did.
#[derive(Debug, Clone, Serialize)]
pub struct Disabled {
    pub group: String,
    pub disabled: Vec<String>,
    pub cancelled_tasks: Vec<String>,
}

/// What approving did.
#[derive(Debug, Clone, Serialize)]
pub struct Approved {
    pub group: String,
    pub skill: String,
    pub approved_hash: String,
    pub previous_hash: String,
    pub grants: Vec<String>,
    /// Skills paused only because they require this one, resumed with it.
    pub resumed: Vec<String>,
    /// Declared packages this runtime could not check.
    pub unchecked_packages: Vec<String>,
}

impl Enabled {
    /// The owner-facing summary (CLI text and chat reply).
    pub fn summary(&self) -> String {
        let mut out = format!(
            "enabled {} for group {}\n",
            self.enabled.join(", "),
            self.group
        );
        if !self.added.is_empty() {
            out.push_str(&format!(
                "also enabled, because they are required: {}\n",
                self.added.join(", ")
            ));
        }
        if self.grants.is_empty() {
            out.push_str("it grants nothing beyond its files (read-only in the sandbox)\n");
        } else {
            out.push_str(&format!("this grants group {}:\n", self.group));
            for g in &self.grants {
                out.push_str(&format!("  - {g}\n"));
            }
        }
        for line in &self.scheduled {
            out.push_str(&format!("{line}\n"));
        }
        for s in &self.missing_secrets {
            out.push_str(&format!(
                "warning: secret {s} is not in the vault yet; add it with `nanoclaw vault set {s}`\n"
            ));
        }
        out.push_str(&unchecked_warning(&self.unchecked_packages));
        out.push_str("applies on the group's next turn (a running host needs no restart)\n");
        out
    }
}

impl Disabled {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "disabled {} for group {}; their grants are removed\n",
            self.disabled.join(", "),
            self.group
        );
        for id in &self.cancelled_tasks {
            out.push_str(&format!(
                "cancelled task {id} (a schedule of a disabled skill)\n"
            ));
        }
        out.push_str("applies on the group's next turn (a running host needs no restart)\n");
        out
    }
}

impl Approved {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "approved {} for group {} (hash {}, was {})\n",
            self.skill, self.group, self.approved_hash, self.previous_hash
        );
        for g in &self.grants {
            out.push_str(&format!("  - {g}\n"));
        }
        if !self.resumed.is_empty() {
            out.push_str(&format!(
                "resumed with it (they require it): {}\n",
                self.resumed.join(", ")
            ));
        }
        out.push_str(&unchecked_warning(&self.unchecked_packages));
        out.push_str("applies on the group's next turn\n");
        out
    }
}

/// The line saying which declared packages could not be checked; empty when none.
fn unchecked_warning(packages: &[String]) -> String {
    if packages.is_empty() {
        return String::new();
    }
    format!(
        "warning: this runtime cannot tell whether its sandboxes have the packages declared \
         ({}); the skill fails when it runs without them\n",
        packages.join(", ")
    )
}

/// The group's catalog and skill rows, read together.
async fn load(
    store: &Store,
    paths: &Paths,
    group: &Group,
) -> Result<(Catalog, Vec<GroupSkill>), String> {
    let catalog = super::load_catalog_blocking(paths, &group.folder).await?;
    let rows = store
        .group_skills(group.id.as_str())
        .await
        .map_err(|e| format!("reading the group's skills: {e}"))?;
    Ok((catalog, rows))
}

impl SkillAdmin<'_> {
    /// The audit row of one attempt on `asked` (its path, `/groups/<folder>/skills/<a,b>`):
    /// "skills VERB WHAT by WHO" and what it did (`Ok`, a suffix) or why it was refused.
    async fn audit(
        &self,
        group: &Group,
        asked: &str,
        verb: &str,
        what: &str,
        done: Result<String, &String>,
    ) {
        let head = format!("skills {verb} {what} by {}", self.by);
        let (allowed, reason) = match done {
            Ok(suffix) => (true, format!("{head}{suffix}")),
            Err(why) => (false, format!("{head} refused: {why}")),
        };
        audit(self.store, &group.folder, asked, allowed, reason).await;
    }

    /// Enables `names` and what they require for `group`: their grants recorded for this group
    /// only, their hashes approved, their schedules made tasks. Never approves changed files
    /// (that is [`SkillAdmin::approve`], after a review).
    pub async fn enable(&self, group: &Group, names: &[String]) -> Result<Enabled, String> {
        let outcome = self.try_enable(group, names).await;
        let done = outcome.as_ref().map(|e| match e.grants.as_slice() {
            [] => String::new(),
            grants => format!(": {}", grants.join("; ")),
        });
        self.audit(group, &names.join(","), "enable", &names.join(" "), done)
            .await;
        outcome
    }

    async fn try_enable(&self, group: &Group, names: &[String]) -> Result<Enabled, String> {
        if names.is_empty() {
            return Err("name at least one skill to enable".into());
        }
        let (catalog, rows) = load(self.store, self.paths, group).await?;
        let plan =
            super::plan_enable(&catalog, names).map_err(|e| format!("cannot enable: {e}"))?;
        for row in &plan.rows {
            if let Some(existing) = rows.iter().find(|r| r.skill == row.skill)
                && (existing.state == GroupSkillState::Paused
                    || existing.content_hash != row.content_hash)
            {
                return Err(format!(
                    "skill {} is already enabled for group {} and is paused or its files changed \
                     since they were approved; review them, then approve it (`nanoclaw skills \
                     approve {} --group {}`)",
                    row.skill, group.folder, row.skill, group.folder
                ));
            }
        }
        let unchecked_packages = self.check_packages(&catalog, &plan.rows).await?;
        let mut missing_secrets = Vec::new();
        for s in &plan.secrets {
            let known = self
                .store
                .vault_secret(s.as_str())
                .await
                .map_err(|e| format!("reading the vault: {e}"))?;
            if known.is_none() {
                missing_secrets.push(s.clone());
            }
        }
        self.store
            .enable_skills(group.id.as_str(), plan.rows.clone())
            .await
            .map_err(|e| format!("could not enable: {e}"))?;
        let all: Vec<String> = plan.rows.iter().map(|r| r.skill.clone()).collect();
        let scheduled = self.add_schedules(group, &catalog, &all).await?;
        Ok(Enabled {
            group: group.folder.clone(),
            enabled: plan.requested,
            added: plan.added,
            grants: plan.grants,
            missing_secrets,
            scheduled,
            unchecked_packages,
        })
    }

    /// Refuses skills whose declared `packages` the runtime's sandboxes lack, naming them and
    /// how to get them. What could not be checked (a runtime that cannot tell) is returned,
    /// to be said, not refused: a missing package breaks the skill, not the sandbox.
    async fn check_packages(
        &self,
        catalog: &Catalog,
        rows: &[nanoclaw_store::NewGroupSkill],
    ) -> Result<Vec<String>, String> {
        let wanted: Vec<(String, Vec<String>)> = rows
            .iter()
            .filter_map(|r| {
                let skill = catalog.skill(&r.skill)?;
                (!skill.manifest.packages.is_empty())
                    .then(|| (r.skill.clone(), skill.manifest.packages.clone()))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let Some(runtime) = self.runtime else {
            return Ok(wanted.into_iter().flat_map(|(_, p)| p).collect());
        };
        let installed = match runtime.installed_packages().await {
            Ok(Some(installed)) => installed,
            Ok(None) => return Ok(wanted.into_iter().flat_map(|(_, p)| p).collect()),
            Err(e) => return Err(format!("cannot check the skills' packages: {e}")),
        };
        let mut refusals = Vec::new();
        for (skill, packages) in &wanted {
            let missing = nanoclaw_sandbox::packages::missing(&installed, packages);
            if !missing.is_empty() {
                refusals.push(format!("{skill} needs {}", missing.join(", ")));
            }
        }
        if refusals.is_empty() {
            return Ok(Vec::new());
        }
        let fix = if runtime.name() == "docker" {
            let skills: Vec<String> = wanted.iter().map(|(s, _)| format!("--skill {s}")).collect();
            format!(
                "`nanoclaw image build {}` adds them to the agent image; then enable again",
                skills.join(" ")
            )
        } else {
            "install them on this machine (its sandboxes run its /usr), then enable again".into()
        };
        Err(format!(
            "the {} sandboxes lack packages: {}. {fix}",
            runtime.name(),
            refusals.join("; ")
        ))
    }

    /// Disables `names` for `group`, removing exactly the grants they made and cancelling their
    /// schedules' tasks. Refused while other enabled skills require them, unless
    /// `with_dependents` (then those go too).
    pub async fn disable(
        &self,
        group: &Group,
        names: &[String],
        with_dependents: bool,
    ) -> Result<Disabled, String> {
        let outcome = self.try_disable(group, names, with_dependents).await;
        // What was disabled (with dependents too), or what was asked for when refused.
        let what = match &outcome {
            Ok(d) => d.disabled.join(" "),
            Err(_) => names.join(" "),
        };
        let done = outcome.as_ref().map(|_| String::new());
        self.audit(group, &names.join(","), "disable", &what, done)
            .await;
        outcome
    }

    async fn try_disable(
        &self,
        group: &Group,
        names: &[String],
        with_dependents: bool,
    ) -> Result<Disabled, String> {
        if names.is_empty() {
            return Err("name at least one skill to disable".into());
        }
        let (catalog, rows) = load(self.store, self.paths, group).await?;
        let enabled: Vec<String> = rows.iter().map(|r| r.skill.clone()).collect();
        for n in names {
            if !enabled.contains(n) {
                return Err(format!(
                    "skill {n:?} is not enabled for group {}; see `nanoclaw skills list --group {}`",
                    group.folder, group.folder
                ));
            }
        }
        let mut off: BTreeSet<String> = names.iter().cloned().collect();
        loop {
            let mut more = Vec::new();
            for n in &off {
                for d in super::dependents(&catalog, &enabled, n) {
                    if !off.contains(&d) {
                        more.push((d, n.clone()));
                    }
                }
            }
            if more.is_empty() {
                break;
            }
            if !with_dependents {
                let list: Vec<String> = more
                    .iter()
                    .map(|(d, n)| format!("{d} requires {n}"))
                    .collect();
                return Err(format!(
                    "cannot disable: enabled skills still need it ({}); disable those too, or \
                     disable with their dependents (`--with-dependents`)",
                    list.join("; ")
                ));
            }
            off.extend(more.into_iter().map(|(d, _)| d));
        }
        let disabled = self
            .store
            .disable_skills(group.id.as_str(), off.into_iter().collect())
            .await
            .map_err(|e| format!("could not disable: {e}"))?;
        let cancelled_tasks = self.remove_schedules(group, &disabled).await?;
        Ok(Disabled {
            group: group.folder.clone(),
            disabled,
            cancelled_tasks,
        })
    }

    /// Records skill `name`'s current hash (and its manifest's grants) after the owner reviewed
    /// a change; a paused skill resumes on the group's next turn, and so do the skills that were
    /// paused only because they require it.
    pub async fn approve(&self, group: &Group, name: &str) -> Result<Approved, String> {
        let outcome = self.try_approve(group, name).await;
        let done = outcome.as_ref().map(|a| {
            let grants = match a.grants.as_slice() {
                [] => String::new(),
                grants => format!("; {}", grants.join("; ")),
            };
            format!(
                ": hash {} (was {}){grants}",
                a.approved_hash, a.previous_hash
            )
        });
        self.audit(group, name, "approve", name, done).await;
        outcome
    }

    async fn try_approve(&self, group: &Group, name: &str) -> Result<Approved, String> {
        let (catalog, rows) = load(self.store, self.paths, group).await?;
        let Some(row) = rows.iter().find(|r| r.skill == name) else {
            return Err(format!(
                "skill {name:?} is not enabled for group {}; enable it first",
                group.folder
            ));
        };
        let entry = catalog
            .get(name)
            .ok_or_else(|| format!("skill {name:?} is no longer installed; disable it"))?;
        let skill = entry
            .skill
            .as_ref()
            .map_err(|e| format!("skill {name:?} does not load, so it cannot be approved: {e}"))?;
        let mut new_rows = vec![super::row_for(skill, &entry.source, row.requested)];
        // Its dependents paused on its account (their own files unchanged) resume with it; one
        // still blocked by another paused skill is paused again at the next turn.
        let mut resumed = Vec::new();
        for r in rows.iter().filter(|r| {
            r.state == GroupSkillState::Paused
                && r.paused_reason
                    .as_deref()
                    .is_some_and(|why| why.starts_with(super::REQUIRES_PAUSED))
        }) {
            if let (Some(e), Some(s)) = (catalog.get(&r.skill), catalog.skill(&r.skill))
                && s.content_hash() == r.content_hash
                && s.manifest.requires.contains_key(name)
            {
                new_rows.push(super::row_for(s, &e.source, r.requested));
                resumed.push(r.skill.clone());
            }
        }
        // A change may declare new packages: checked as enabling does.
        let unchecked_packages = self.check_packages(&catalog, &new_rows[..1]).await?;
        let approved_hash = skill.content_hash().to_owned();
        self.store
            .enable_skills(group.id.as_str(), new_rows)
            .await
            .map_err(|e| format!("could not approve: {e}"))?;
        Ok(Approved {
            group: group.folder.clone(),
            skill: name.to_owned(),
            approved_hash,
            previous_hash: row.content_hash.clone(),
            grants: super::describe_grants(skill),
            resumed,
            unchecked_packages,
        })
    }

    /// Creates a task for each schedule of `names` the group does not have yet, answering in
    /// the group's first chat. Returns a line per schedule.
    async fn add_schedules(
        &self,
        group: &Group,
        catalog: &Catalog,
        names: &[String],
    ) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        let existing = self
            .store
            .list_tasks(Some(group.id.clone()))
            .await
            .map_err(|e| format!("reading the group's tasks: {e}"))?;
        let chat = self
            .store
            .chats_for_group(group.id.as_str())
            .await
            .map_err(|e| format!("reading the group's chats: {e}"))?
            .into_iter()
            .next();
        for name in names {
            let Some(skill) = catalog.skill(name) else {
                continue;
            };
            for sched in &skill.manifest.schedules {
                let tag = schedule_tag(name, &sched.name);
                if existing
                    .iter()
                    .any(|t| t.created_by == tag && is_live(t.status))
                {
                    continue;
                }
                let Some(chat) = &chat else {
                    lines.push(format!(
                        "warning: group {} has no chat, so schedule {} of {name} was not created",
                        group.folder, sched.name
                    ));
                    continue;
                };
                match self
                    .tasks
                    .create(
                        group,
                        chat.id,
                        sched.prompt.clone(),
                        &sched.cron,
                        None,
                        false,
                        tag,
                    )
                    .await
                {
                    Ok(task) => lines.push(format!(
                        "scheduled task {} ({}: {}) from {name}",
                        task.id, sched.name, sched.cron
                    )),
                    Err(e) => lines.push(format!(
                        "warning: schedule {} of {name} was not created: {e}",
                        sched.name
                    )),
                }
            }
        }
        Ok(lines)
    }

    /// Cancels the group's live tasks that the schedules of `names` made; returns their ids.
    async fn remove_schedules(
        &self,
        group: &Group,
        names: &[String],
    ) -> Result<Vec<String>, String> {
        let mut cancelled = Vec::new();
        let tasks = self
            .store
            .list_tasks(Some(group.id.clone()))
            .await
            .map_err(|e| format!("reading the group's tasks: {e}"))?;
        for task in tasks {
            let from_skill = names
                .iter()
                .any(|n| task.created_by.starts_with(&format!("skill:{n}:")));
            if from_skill && is_live(task.status) {
                self.tasks
                    .cancel(&task)
                    .await
                    .map_err(|e| format!("cancelling task {}: {e}", task.id))?;
                cancelled.push(task.id.clone());
            }
        }
        Ok(cancelled)
    }
}

/// How the tasks a skill's `[[schedules]]` made are marked, so disabling cancels exactly them.
fn schedule_tag(skill: &str, schedule: &str) -> String {
    format!("skill:{skill}:{schedule}")
}

fn is_live(status: TaskStatus) -> bool {
    !matches!(status, TaskStatus::Cancelled | TaskStatus::Done)
}

/// One `ADMIN` row for a change to (or a pause of) group `folder`'s skills `what`.
pub async fn audit(store: &Store, folder: &str, what: &str, allowed: bool, reason: String) {
    crate::admin_audit::record(
        store,
        folder,
        format!("/groups/{folder}/skills/{what}"),
        allowed,
        reason,
    )
    .await;
}

//! The skills each group enabled (`group_skills`) and what enabling them grants
//! (`group_skill_egress`, `group_skill_secrets`).
//!
//! A skill's grants are rows of their own, keyed by (group, skill): disabling a skill deletes
//! exactly them, and never touches the owner's own egress rules or vault grants. Only the rows of
//! an `enabled` skill apply; a `paused` skill (its files changed since the owner approved them)
//! keeps its rows but they are suspended until the owner approves the new content.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};
use crate::vault::SecretVersion;

/// Whether a group's skill applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupSkillState {
    /// Given to the group's agents; its grants apply.
    Enabled,
    /// Its files changed (or it is gone) since the owner approved it: not given to agents, its
    /// grants suspended, until the owner approves it again.
    Paused,
}

impl GroupSkillState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupSkillState::Enabled => "enabled",
            GroupSkillState::Paused => "paused",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(GroupSkillState::Enabled),
            "paused" => Some(GroupSkillState::Paused),
            _ => None,
        }
    }
}

/// A skill a group enabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSkill {
    pub group_id: String,
    pub skill: String,
    /// `builtin`, `user` or `group`: where it was found when enabled or approved.
    pub source: String,
    /// The content hash the owner approved.
    pub content_hash: String,
    pub state: GroupSkillState,
    /// The owner asked for it (else an enabled skill requires it).
    pub requested: bool,
    pub paused_reason: Option<String>,
    /// The hash found when it was paused (none when the skill was gone or broken).
    pub found_hash: Option<String>,
    pub enabled_at: i64,
    pub updated_at: i64,
}

/// One host a skill may reach, with its methods (upper case).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillEgress {
    pub pattern: String,
    pub methods: Vec<String>,
}

/// A vault secret a skill may use on one host pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillSecret {
    pub secret_name: String,
    pub host: String,
}

/// Input of [`Store::enable_skills`]: a skill, its approved hash and its grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGroupSkill {
    pub skill: String,
    pub source: String,
    pub content_hash: String,
    pub requested: bool,
    pub egress: Vec<SkillEgress>,
    pub secrets: Vec<SkillSecret>,
}

/// A skill's egress rule as the proxy applies it: which skill, its pattern and methods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveSkillEgress {
    pub skill: String,
    pub pattern: String,
    pub methods: Vec<String>,
}

/// A vault secret an enabled skill lets a group use on `host`, with the secret's current version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillSecretGrant {
    pub skill: String,
    pub secret_name: String,
    pub host: String,
    pub version: SecretVersion,
}

const COLS: &str = "group_id, skill, source, content_hash, state, requested, paused_reason, \
                    found_hash, enabled_at, updated_at";

fn skill_at(row: &Row<'_>) -> rusqlite::Result<GroupSkill> {
    let state: String = row.get(4)?;
    let state = GroupSkillState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("unknown skill state {state:?}").into(),
        )
    })?;
    Ok(GroupSkill {
        group_id: row.get(0)?,
        skill: row.get(1)?,
        source: row.get(2)?,
        content_hash: row.get(3)?,
        state,
        requested: row.get(5)?,
        paused_reason: row.get(6)?,
        found_hash: row.get(7)?,
        enabled_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

fn split_methods(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Deletes the skill's grants and its row. Explicit deletes: foreign keys may be off on a
/// connection someone else opened.
fn delete_skill(tx: &Connection, group_id: &str, skill: &str) -> Result<bool, StoreError> {
    tx.execute(
        "DELETE FROM group_skill_egress WHERE group_id = ?1 AND skill = ?2",
        params![group_id, skill],
    )
    .ctx("remove skill egress")?;
    tx.execute(
        "DELETE FROM group_skill_secrets WHERE group_id = ?1 AND skill = ?2",
        params![group_id, skill],
    )
    .ctx("remove skill secrets")?;
    let n = tx
        .execute(
            "DELETE FROM group_skills WHERE group_id = ?1 AND skill = ?2",
            params![group_id, skill],
        )
        .ctx("remove group skill")?;
    Ok(n > 0)
}

fn check_new(s: &NewGroupSkill) -> Result<(), StoreError> {
    if s.skill.is_empty() || s.skill.len() > 64 || s.content_hash.is_empty() {
        return Err(StoreError::Invalid(format!(
            "skill {:?} needs a name of 1-64 characters and a content hash",
            s.skill
        )));
    }
    for e in &s.egress {
        if e.pattern.is_empty() || e.methods.is_empty() {
            return Err(StoreError::Invalid(format!(
                "skill {}: egress rule {:?} needs a pattern and at least one method",
                s.skill, e.pattern
            )));
        }
        if let Some(m) = e
            .methods
            .iter()
            .find(|m| m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()))
        {
            return Err(StoreError::Invalid(format!(
                "skill {}: method {m:?} must be an upper-case HTTP method such as GET",
                s.skill
            )));
        }
    }
    Ok(())
}

impl Store {
    /// Enables `skills` for the group in one transaction: each row is (re)written as `enabled`
    /// with its approved hash, and its grants replaced by the ones given (so approving a changed
    /// skill also takes its new manifest). A skill already enabled keeps `requested` if it was
    /// requested before. Fails with `NotFound` for an unknown group.
    pub async fn enable_skills(
        &self,
        group_id: impl Into<String>,
        skills: Vec<NewGroupSkill>,
    ) -> Result<(), StoreError> {
        let group_id = group_id.into();
        for s in &skills {
            check_new(s)?;
        }
        self.write("enable skills", move |tx| {
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM agent_groups WHERE id = ?1)",
                    [&group_id],
                    |r| r.get(0),
                )
                .ctx("enable skills")?;
            if !exists {
                return Err(StoreError::NotFound {
                    what: "group",
                    id: group_id.clone(),
                });
            }
            let now = now_ms();
            for s in &skills {
                let was_requested: Option<bool> = tx
                    .query_row(
                        "SELECT requested FROM group_skills WHERE group_id = ?1 AND skill = ?2",
                        params![group_id, s.skill],
                        |r| r.get(0),
                    )
                    .optional()
                    .ctx("enable skills")?;
                let enabled_at: Option<i64> = tx
                    .query_row(
                        "SELECT enabled_at FROM group_skills WHERE group_id = ?1 AND skill = ?2",
                        params![group_id, s.skill],
                        |r| r.get(0),
                    )
                    .optional()
                    .ctx("enable skills")?;
                delete_skill(tx, &group_id, &s.skill)?;
                tx.execute(
                    &format!("INSERT INTO group_skills ({COLS}) VALUES (?1, ?2, ?3, ?4, 'enabled', ?5, NULL, NULL, ?6, ?7)"),
                    params![
                        group_id,
                        s.skill,
                        s.source,
                        s.content_hash,
                        s.requested || was_requested.unwrap_or(false),
                        enabled_at.unwrap_or(now),
                        now
                    ],
                )
                .ctx("enable skill")?;
                for e in &s.egress {
                    tx.execute(
                        "INSERT OR REPLACE INTO group_skill_egress (group_id, skill, pattern, methods)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![group_id, s.skill, e.pattern, e.methods.join(",")],
                    )
                    .ctx("enable skill egress")?;
                }
                for g in &s.secrets {
                    tx.execute(
                        "INSERT OR IGNORE INTO group_skill_secrets (group_id, skill, secret_name, host)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![group_id, s.skill, g.secret_name, g.host],
                    )
                    .ctx("enable skill secrets")?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Disables `skills` for the group, removing exactly their grants; returns the names that
    /// were enabled (or paused) before.
    pub async fn disable_skills(
        &self,
        group_id: impl Into<String>,
        skills: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        let group_id = group_id.into();
        self.write("disable skills", move |tx| {
            let mut removed = Vec::new();
            for s in &skills {
                if delete_skill(tx, &group_id, s)? {
                    removed.push(s.clone());
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Pauses an enabled skill whose files no longer match its approved hash (`found_hash`:
    /// what was found, `None` when the skill is gone or broken). Returns `true` only when this
    /// call paused it (so the owner is told once).
    pub async fn pause_skill(
        &self,
        group_id: impl Into<String>,
        skill: impl Into<String>,
        reason: impl Into<String>,
        found_hash: Option<String>,
    ) -> Result<bool, StoreError> {
        let (group_id, skill, reason) = (group_id.into(), skill.into(), reason.into());
        self.write("pause skill", move |tx| {
            let n = tx
                .execute(
                    "UPDATE group_skills SET state = 'paused', paused_reason = ?3, found_hash = ?4,
                     updated_at = ?5 WHERE group_id = ?1 AND skill = ?2 AND state = 'enabled'",
                    params![group_id, skill, reason, found_hash, now_ms()],
                )
                .ctx("pause skill")?;
            Ok(n > 0)
        })
        .await
    }

    /// The group's skills (enabled and paused), by name.
    pub async fn group_skills(
        &self,
        group_id: impl Into<String>,
    ) -> Result<Vec<GroupSkill>, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM group_skills WHERE group_id = ?1 ORDER BY skill"
                ))
                .ctx("list group skills")?;
            let rows = stmt
                .query_map([&group_id], skill_at)
                .ctx("list group skills")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list group skills")
        })
        .await
    }

    /// The grants recorded for one of the group's skills (whatever its state).
    pub async fn group_skill_grants(
        &self,
        group_id: impl Into<String>,
        skill: impl Into<String>,
    ) -> Result<(Vec<SkillEgress>, Vec<SkillSecret>), StoreError> {
        let (group_id, skill) = (group_id.into(), skill.into());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT pattern, methods FROM group_skill_egress
                     WHERE group_id = ?1 AND skill = ?2 ORDER BY pattern",
                )
                .ctx("list skill egress")?;
            let egress = stmt
                .query_map(params![group_id, skill], |r| {
                    Ok(SkillEgress {
                        pattern: r.get(0)?,
                        methods: split_methods(&r.get::<_, String>(1)?),
                    })
                })
                .ctx("list skill egress")?
                .collect::<Result<Vec<_>, _>>()
                .ctx("list skill egress")?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT secret_name, host FROM group_skill_secrets
                     WHERE group_id = ?1 AND skill = ?2 ORDER BY secret_name, host",
                )
                .ctx("list skill secrets")?;
            let secrets = stmt
                .query_map(params![group_id, skill], |r| {
                    Ok(SkillSecret {
                        secret_name: r.get(0)?,
                        host: r.get(1)?,
                    })
                })
                .ctx("list skill secrets")?
                .collect::<Result<Vec<_>, _>>()
                .ctx("list skill secrets")?;
            Ok((egress, secrets))
        })
        .await
    }

    /// The egress rules of the group's ENABLED skills (paused ones' are suspended).
    pub async fn skill_egress_rules(
        &self,
        group_id: impl Into<String>,
    ) -> Result<Vec<ActiveSkillEgress>, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT e.skill, e.pattern, e.methods FROM group_skill_egress e
                     JOIN group_skills s ON s.group_id = e.group_id AND s.skill = e.skill
                     WHERE e.group_id = ?1 AND s.state = 'enabled'
                     ORDER BY e.pattern, e.skill",
                )
                .ctx("list skill egress rules")?;
            let rows = stmt
                .query_map([&group_id], |r| {
                    Ok(ActiveSkillEgress {
                        skill: r.get(0)?,
                        pattern: r.get(1)?,
                        methods: split_methods(&r.get::<_, String>(2)?),
                    })
                })
                .ctx("list skill egress rules")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list skill egress rules")
        })
        .await
    }

    /// The vault secrets the ENABLED skills of the group with folder `folder` may use, each
    /// with the secret's current version. A declared secret not in the vault is left out.
    pub async fn skill_secret_grants(
        &self,
        folder: impl Into<String>,
    ) -> Result<Vec<SkillSecretGrant>, StoreError> {
        let folder = folder.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT k.skill, k.secret_name, k.host,
                            v.name, v.version, v.nonce, v.ciphertext, v.created_at, v.retired_at
                     FROM group_skill_secrets k
                     JOIN agent_groups g ON g.id = k.group_id
                     JOIN group_skills s ON s.group_id = k.group_id AND s.skill = k.skill
                     JOIN vault_secrets vs ON vs.name = k.secret_name
                     JOIN vault_versions v ON v.name = vs.name AND v.version = vs.current_version
                     WHERE g.folder = ?1 AND s.state = 'enabled'
                     ORDER BY k.skill, k.secret_name, k.host",
                )
                .ctx("list skill secret grants")?;
            let rows = stmt
                .query_map([&folder], |r| {
                    Ok(SkillSecretGrant {
                        skill: r.get(0)?,
                        secret_name: r.get(1)?,
                        host: r.get(2)?,
                        version: SecretVersion {
                            name: r.get(3)?,
                            version: r.get(4)?,
                            nonce: r.get(5)?,
                            ciphertext: r.get(6)?,
                            created_at: r.get(7)?,
                            retired_at: r.get(8)?,
                        },
                    })
                })
                .ctx("list skill secret grants")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list skill secret grants")
        })
        .await
    }
}

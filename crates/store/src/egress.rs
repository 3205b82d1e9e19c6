//! Each group's egress policy (`group_egress_rules`, `group_egress_settings`).
//!
//! The store keeps what the owner said; the host's egress proxy parses and enforces it (and refuses
//! loopback, private and metadata addresses whatever the rows say). A group with no rows may reach
//! nothing.

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};

/// What a rule does with hosts its pattern matches. Deny wins over allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressAction {
    Allow,
    Deny,
}

impl EgressAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressAction::Allow => "allow",
            EgressAction::Deny => "deny",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(EgressAction::Allow),
            "deny" => Some(EgressAction::Deny),
            _ => None,
        }
    }
}

/// One domain rule of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    pub group_id: String,
    /// `api.example.com` or `*.example.com` (normalized by the host before it is stored).
    pub pattern: String,
    pub action: EgressAction,
    pub created_at: i64,
}

/// A group's method and port restrictions; `None` means the default (every method; ports 80 and 443).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressSettings {
    pub methods: Option<Vec<String>>,
    pub ports: Option<Vec<u16>>,
}

const RULE_COLS: &str = "group_id, pattern, action, created_at";

fn rule_at(row: &Row<'_>) -> rusqlite::Result<EgressRule> {
    let action: String = row.get(2)?;
    let action = EgressAction::parse(&action).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            format!("unknown egress action {action:?}").into(),
        )
    })?;
    Ok(EgressRule {
        group_id: row.get(0)?,
        pattern: row.get(1)?,
        action,
        created_at: row.get(3)?,
    })
}

/// Only a shape check; the host's policy parser is the authority on what a pattern means.
fn check_pattern(pattern: &str) -> Result<(), StoreError> {
    if pattern.is_empty()
        || pattern.len() > 255
        || pattern.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(StoreError::Invalid(format!(
            "egress pattern {pattern:?} must be 1-255 characters without spaces"
        )));
    }
    Ok(())
}

fn join<T: ToString>(items: &Option<Vec<T>>) -> Option<String> {
    items.as_ref().map(|v| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

impl Store {
    /// Allow or deny `pattern` for the group; replaces the pattern's earlier action if it had one.
    pub async fn set_egress_rule(
        &self,
        group_id: impl Into<String>,
        pattern: impl Into<String>,
        action: EgressAction,
    ) -> Result<EgressRule, StoreError> {
        let (group_id, pattern) = (group_id.into(), pattern.into());
        check_pattern(&pattern)?;
        self.write("set egress rule", move |tx| {
            let rule = EgressRule {
                group_id: group_id.clone(),
                pattern: pattern.clone(),
                action,
                created_at: now_ms(),
            };
            let res = tx.execute(
                &format!(
                    "INSERT INTO group_egress_rules ({RULE_COLS}) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (group_id, pattern) DO UPDATE SET action = excluded.action,
                     created_at = excluded.created_at"
                ),
                params![
                    rule.group_id,
                    rule.pattern,
                    action.as_str(),
                    rule.created_at
                ],
            );
            match res {
                Ok(_) => Ok(rule),
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    Err(StoreError::NotFound {
                        what: "group",
                        id: rule.group_id,
                    })
                }
                Err(source) => Err(StoreError::Sqlite {
                    op: "set egress rule",
                    source,
                }),
            }
        })
        .await
    }

    /// Forget the group's rule for `pattern`; `false` when it had none.
    pub async fn remove_egress_rule(
        &self,
        group_id: impl Into<String>,
        pattern: impl Into<String>,
    ) -> Result<bool, StoreError> {
        let (group_id, pattern) = (group_id.into(), pattern.into());
        self.write("remove egress rule", move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM group_egress_rules WHERE group_id = ?1 AND pattern = ?2",
                    params![group_id, pattern],
                )
                .ctx("remove egress rule")?;
            Ok(n > 0)
        })
        .await
    }

    /// The group's domain rules, by pattern.
    pub async fn egress_rules(
        &self,
        group_id: impl Into<String>,
    ) -> Result<Vec<EgressRule>, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {RULE_COLS} FROM group_egress_rules WHERE group_id = ?1 ORDER BY pattern"
                ))
                .ctx("list egress rules")?;
            let rows = stmt
                .query_map([&group_id], rule_at)
                .ctx("list egress rules")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list egress rules")
        })
        .await
    }

    /// The group's method and port restrictions (the defaults when it has none).
    pub async fn egress_settings(
        &self,
        group_id: impl Into<String>,
    ) -> Result<EgressSettings, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            let row: Option<(Option<String>, Option<String>)> = conn
                .query_row(
                    "SELECT methods, ports FROM group_egress_settings WHERE group_id = ?1",
                    [&group_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .ctx("read egress settings")?;
            let Some((methods, ports)) = row else {
                return Ok(EgressSettings::default());
            };
            let methods = methods.map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            });
            let ports = match ports {
                None => None,
                Some(p) => Some(
                    p.split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            s.parse::<u16>().map_err(|_| {
                                StoreError::Invalid(format!(
                                    "stored egress port {s:?} is not a port number; \
                                     reset with `nanoclaw group egress ports`"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            Ok(EgressSettings { methods, ports })
        })
        .await
    }

    /// Replace the group's method and port restrictions.
    pub async fn set_egress_settings(
        &self,
        group_id: impl Into<String>,
        settings: EgressSettings,
    ) -> Result<(), StoreError> {
        let group_id = group_id.into();
        if let Some(m) = settings
            .methods
            .iter()
            .flatten()
            .find(|m| m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase() || c == '-'))
        {
            return Err(StoreError::Invalid(format!(
                "egress method {m:?} must be an upper-case HTTP method such as GET"
            )));
        }
        let (methods, ports) = (join(&settings.methods), join(&settings.ports));
        self.write("set egress settings", move |tx| {
            let res = tx.execute(
                "INSERT INTO group_egress_settings (group_id, methods, ports, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (group_id) DO UPDATE SET methods = excluded.methods,
                 ports = excluded.ports, updated_at = excluded.updated_at",
                params![group_id, methods, ports, now_ms()],
            );
            match res {
                Ok(_) => Ok(()),
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    Err(StoreError::NotFound {
                        what: "group",
                        id: group_id.clone(),
                    })
                }
                Err(source) => Err(StoreError::Sqlite {
                    op: "set egress settings",
                    source,
                }),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewGroup;

    async fn store_with_group() -> (Store, String) {
        let store = Store::open_in_memory().unwrap();
        let g = store
            .ensure_group(NewGroup {
                name: "Main".into(),
                folder: "main".into(),
                ..NewGroup::default()
            })
            .await
            .unwrap();
        (store, g.id)
    }

    #[tokio::test]
    async fn rules_are_set_switched_listed_and_removed() {
        let (store, gid) = store_with_group().await;
        assert!(store.egress_rules(&gid).await.unwrap().is_empty());
        store
            .set_egress_rule(&gid, "*.example.com", EgressAction::Allow)
            .await
            .unwrap();
        store
            .set_egress_rule(&gid, "api.github.com", EgressAction::Allow)
            .await
            .unwrap();
        // Denying an allowed pattern replaces the allow: one action per pattern.
        store
            .set_egress_rule(&gid, "api.github.com", EgressAction::Deny)
            .await
            .unwrap();
        let rules = store.egress_rules(&gid).await.unwrap();
        let got: Vec<_> = rules
            .iter()
            .map(|r| (r.pattern.as_str(), r.action))
            .collect();
        assert_eq!(
            got,
            [
                ("*.example.com", EgressAction::Allow),
                ("api.github.com", EgressAction::Deny)
            ]
        );
        assert!(
            store
                .remove_egress_rule(&gid, "api.github.com")
                .await
                .unwrap()
        );
        assert!(
            !store
                .remove_egress_rule(&gid, "api.github.com")
                .await
                .unwrap()
        );
        assert_eq!(store.egress_rules(&gid).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn settings_default_to_none_and_round_trip() {
        let (store, gid) = store_with_group().await;
        assert_eq!(
            store.egress_settings(&gid).await.unwrap(),
            EgressSettings::default()
        );
        let s = EgressSettings {
            methods: Some(vec!["GET".into(), "HEAD".into()]),
            ports: Some(vec![443, 8443]),
        };
        store.set_egress_settings(&gid, s.clone()).await.unwrap();
        assert_eq!(store.egress_settings(&gid).await.unwrap(), s);
        store
            .set_egress_settings(&gid, EgressSettings::default())
            .await
            .unwrap();
        assert_eq!(
            store.egress_settings(&gid).await.unwrap(),
            EgressSettings::default()
        );
    }

    #[tokio::test]
    async fn unknown_groups_and_bad_input_are_refused() {
        let (store, gid) = store_with_group().await;
        let err = store
            .set_egress_rule("grp-nope", "a.com", EgressAction::Allow)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound { what: "group", .. }),
            "{err:?}"
        );
        for bad in ["", "a b", "a\nb"] {
            let err = store
                .set_egress_rule(&gid, bad, EgressAction::Allow)
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{bad:?}: {err:?}");
        }
        let err = store
            .set_egress_settings(
                &gid,
                EgressSettings {
                    methods: Some(vec!["get".into()]),
                    ports: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }
}

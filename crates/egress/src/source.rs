//! Where a group's [`EgressPolicy`] comes from: the store (what `nanoclaw group egress`
//! writes, re-read at most every [`STORE_POLICY_TTL`]) or a fixed table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::Method;
use nanoclaw_store::{EgressAction, Store};

use crate::PolicyError;
use crate::policy::{AddressGuard, DEFAULT_PORTS, DomainPattern, EgressPolicy, SkillRule};

/// How long a policy read from the store is reused: changes made with the CLI (another
/// process) apply within this time, without a restart.
pub const STORE_POLICY_TTL: Duration = Duration::from_secs(1);

/// The current policy of a group, by folder. An `Err` (e.g. the store failed) refuses the
/// request: the proxy fails closed.
#[async_trait]
pub trait PolicySource: Send + Sync {
    async fn policy(&self, group_folder: &str) -> Result<Arc<EgressPolicy>, PolicyError>;
}

/// A fixed table (tests, benchmarks, embedding); an unknown group may reach nothing.
#[derive(Debug, Default, Clone)]
pub struct StaticPolicies {
    policies: HashMap<String, Arc<EgressPolicy>>,
}

impl StaticPolicies {
    pub fn new() -> StaticPolicies {
        StaticPolicies::default()
    }

    /// Adds `policy` under its group folder.
    pub fn with(mut self, policy: EgressPolicy) -> StaticPolicies {
        self.policies.insert(policy.group.clone(), Arc::new(policy));
        self
    }
}

#[async_trait]
impl PolicySource for StaticPolicies {
    async fn policy(&self, group_folder: &str) -> Result<Arc<EgressPolicy>, PolicyError> {
        Ok(self
            .policies
            .get(group_folder)
            .cloned()
            .unwrap_or_else(|| Arc::new(EgressPolicy::deny_all(group_folder))))
    }
}

/// The store-backed source the host uses. Always the production [`AddressGuard`].
pub struct StorePolicySource {
    store: Store,
    cache: Mutex<HashMap<String, (Instant, Arc<EgressPolicy>)>>,
    guard: AddressGuard,
}

impl StorePolicySource {
    pub fn new(store: Store) -> StorePolicySource {
        StorePolicySource {
            store,
            cache: Mutex::new(HashMap::new()),
            guard: AddressGuard::production(),
        }
    }

    /// Tests only: the store's policies with another address guard (e.g.
    /// [`AddressGuard::allow_loopback_for_tests`], so a local upstream is reachable). The host
    /// never calls this.
    pub fn with_guard_for_tests(mut self, guard: AddressGuard) -> StorePolicySource {
        self.guard = guard;
        self
    }

    async fn load(&self, folder: &str) -> Result<EgressPolicy, PolicyError> {
        let Some(group) =
            self.store
                .group_by_folder(folder)
                .await
                .map_err(|source| PolicyError::Group {
                    folder: folder.to_owned(),
                    source,
                })?
        else {
            return Ok(EgressPolicy::deny_all(folder));
        };
        let rules = self
            .store
            .egress_rules(group.id.as_str())
            .await
            .map_err(|source| PolicyError::Rules {
                folder: folder.to_owned(),
                source,
            })?;
        let settings = self
            .store
            .egress_settings(group.id.as_str())
            .await
            .map_err(|source| PolicyError::Settings {
                folder: folder.to_owned(),
                source,
            })?;
        let skills = self
            .store
            .skill_egress_rules(group.id.as_str())
            .await
            .map_err(|source| PolicyError::Rules {
                folder: folder.to_owned(),
                source,
            })?;
        let mut policy = policy_from_rows(folder, &rules, &settings);
        policy.skill_allow = skill_rules(folder, &skills);
        policy.guard = self.guard;
        Ok(policy)
    }
}

/// The enabled skills' egress rows as policy rules. A row that no longer parses is skipped
/// (logged): skipping an allow only narrows the policy. A method that does not parse is
/// dropped, and a rule left without methods allows nothing.
pub fn skill_rules(folder: &str, rows: &[nanoclaw_store::ActiveSkillEgress]) -> Vec<SkillRule> {
    let mut out = Vec::new();
    for row in rows {
        let pattern = match DomainPattern::parse(&row.pattern) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(group = folder, skill = %row.skill, error = %e, "ignoring a stored skill egress rule");
                continue;
            }
        };
        let methods: Vec<Method> = row
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        if methods.is_empty() {
            continue;
        }
        out.push(SkillRule {
            skill: row.skill.clone(),
            pattern,
            methods,
        });
    }
    out
}

/// Builds a policy from stored rows. Rows that no longer parse are skipped (and logged):
/// skipping an allow only narrows the policy; a broken deny row is logged loudly.
pub fn policy_from_rows(
    folder: &str,
    rules: &[nanoclaw_store::EgressRule],
    settings: &nanoclaw_store::EgressSettings,
) -> EgressPolicy {
    let mut policy = EgressPolicy::deny_all(folder);
    for rule in rules {
        match DomainPattern::parse(&rule.pattern) {
            Ok(p) => match rule.action {
                EgressAction::Allow => policy.allow.push(p),
                EgressAction::Deny => policy.deny.push(p),
            },
            Err(e) => {
                tracing::error!(group = folder, error = %e, action = rule.action.as_str(), "ignoring a stored egress rule");
            }
        }
    }
    if let Some(methods) = &settings.methods {
        policy.methods = Some(
            methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
        );
    }
    policy.ports = settings
        .ports
        .clone()
        .unwrap_or_else(|| DEFAULT_PORTS.to_vec());
    policy.guard = AddressGuard::production();
    policy
}

#[async_trait]
impl PolicySource for StorePolicySource {
    async fn policy(&self, group_folder: &str) -> Result<Arc<EgressPolicy>, PolicyError> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, p)) = cache.get(group_folder)
            && at.elapsed() < STORE_POLICY_TTL
        {
            return Ok(Arc::clone(p));
        }
        let policy = Arc::new(self.load(group_folder).await?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                group_folder.to_owned(),
                (Instant::now(), Arc::clone(&policy)),
            );
        }
        Ok(policy)
    }
}

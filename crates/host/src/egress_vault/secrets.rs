//! [`EgressSecrets`] backed by the vault. Nothing decrypted is cached here; the vault keeps
//! the leak guard, rebuilt whenever the set of stored secret versions changes.

use std::sync::Arc;

use async_trait::async_trait;
use nanoclaw_vault::{Injection, LeakGuard, SecretString, Vault, host_matches, normalize_host};

use nanoclaw_egress::{Approval, EgressSecrets, SecretsError};
use nanoclaw_store::ApprovalState;

pub struct VaultSecrets {
    vault: Vault,
}

impl VaultSecrets {
    pub fn new(vault: Vault) -> VaultSecrets {
        VaultSecrets { vault }
    }
}

#[async_trait]
impl EgressSecrets for VaultSecrets {
    async fn injects_for(&self, group: &str, host: &str) -> Result<bool, SecretsError> {
        let host = normalize_host(host);
        let grants = self.vault.store().vault_group_grants(group).await?;
        if grants.iter().any(|(g, _)| host_matches(&g.host, &host)) {
            return Ok(true);
        }
        // An enabled skill's secret: intercepted so its placeholder can be swapped in.
        let skills = self.vault.store().skill_secret_grants(group).await?;
        Ok(skills.iter().any(|s| host_matches(&s.host, &host)))
    }

    async fn injection(
        &self,
        group: &str,
        host: &str,
        path: &str,
    ) -> Result<Option<Injection>, SecretsError> {
        self.vault
            .injection_for(group, host, path)
            .await
            .map_err(SecretsError::Vault)
    }

    async fn resolve_placeholder(
        &self,
        group: &str,
        placeholder: &str,
        host: &str,
        path: &str,
    ) -> Result<Option<SecretString>, SecretsError> {
        self.vault
            .resolve_placeholder(group, placeholder, host, path)
            .await
            .map_err(SecretsError::Vault)
    }

    async fn bound_to(&self, group: &str, name: &str, host: &str) -> Result<bool, SecretsError> {
        let host = normalize_host(host);
        let grants = self.vault.store().vault_group_grants(group).await?;
        if grants
            .iter()
            .any(|(g, _)| g.secret_name == name && host_matches(&g.host, &host))
        {
            return Ok(true);
        }
        let skills = self.vault.store().skill_secret_grants(group).await?;
        Ok(skills
            .iter()
            .any(|s| s.secret_name == name && host_matches(&s.host, &host)))
    }

    async fn leak_guard(&self) -> Result<Option<Arc<LeakGuard>>, SecretsError> {
        // The vault caches the guard per set of secret versions.
        let guard = self.vault.leak_guard().await?;
        Ok((!guard.is_empty()).then_some(guard))
    }

    async fn placeholder_env(&self, group: &str) -> Result<Vec<(String, String)>, SecretsError> {
        self.vault
            .placeholder_env(group)
            .await
            .map_err(SecretsError::Vault)
    }

    async fn approval(
        &self,
        grant_id: i64,
        group: &str,
        host: &str,
    ) -> Result<Approval, SecretsError> {
        let store = self.vault.store();
        if let Some(a) = store.vault_approval(grant_id).await? {
            return Ok(match a.state {
                ApprovalState::Approved => Approval::Approved,
                ApprovalState::Denied => Approval::Denied,
                ApprovalState::Pending => Approval::Pending {
                    newly_requested: false,
                },
            });
        }
        let (a, created) = store
            .vault_request_approval(grant_id, group, normalize_host(host), crate::now_ms())
            .await?;
        Ok(match a.state {
            ApprovalState::Approved => Approval::Approved,
            ApprovalState::Denied => Approval::Denied,
            ApprovalState::Pending => Approval::Pending {
                newly_requested: created,
            },
        })
    }

    async fn rate_limit(&self, name: &str) -> Result<u32, SecretsError> {
        let rec = self.vault.store().vault_secret(name).await?;
        Ok(rec
            .map(|r| u32::try_from(r.per_minute.max(0)).unwrap_or(u32::MAX))
            .unwrap_or(0))
    }
}

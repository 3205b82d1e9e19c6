//! The [`Vault`] handle: secrets, grants, injections and placeholders.
//!
//! Nothing decrypted is cached: every lookup reads the database, so a rotation or revocation made by
//! another process (`nanoclaw vault rotate`) applies to the very next request.

use std::sync::Arc;

use nanoclaw_store::{NewGrant, SecretRecord, SecretVersion, Store, StoreError, VaultGrant};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::crypto;
use crate::error::VaultError;
use crate::key::{KeyOrigin, MasterKey};
use crate::leak::LeakGuard;
use crate::rules::{
    SECRET_MARKER, Template, host_matches, host_specificity, normalize_host, path_matches,
    validate_host_pattern, validate_path_prefix, validate_secret_name,
};

const KEY_CHECK: &str = "key_check";
const PLACEHOLDER_PREFIX: &str = "nanoclaw-placeholder-";
const ENV_PREFIX: &str = "NANOCLAW_SECRET_";

/// A cheap, cloneable handle to the vault.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    key: MasterKey,
    /// The last leak guard built, with the versions it covers (name, version, nonce): the
    /// chat delivery and the egress proxy both scan with it, and it is rebuilt only when a
    /// secret is set, rotated or removed, not on every pass.
    guard: std::sync::Mutex<Option<(GuardFingerprint, std::sync::Arc<LeakGuard>)>>,
}

type GuardFingerprint = Vec<(String, i64, Vec<u8>)>;

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

/// What to put on a request to a granted host.
#[derive(Debug)]
pub struct Injection {
    pub secret_name: String,
    pub version: i64,
    pub grant_id: i64,
    /// Header name (lower case) and its full value (template with the secret filled in).
    pub header: Option<(String, SecretString)>,
    /// Query parameter and the raw secret (the caller percent-encodes it).
    pub query: Option<(String, SecretString)>,
    /// The grant needs the owner's approval before its first use.
    pub needs_approval: bool,
}

/// One version of a secret that has not been removed (the leak guard looks for all of them).
#[derive(Debug)]
pub struct LiveSecret {
    pub name: String,
    pub version: i64,
    pub value: SecretString,
}

/// What `list` shows of a secret: never its value.
#[derive(Clone, Debug, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub current_version: i64,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    /// Injections allowed per minute; 0 = no limit.
    pub per_minute: i64,
    /// Older versions kept for the leak guard.
    pub retired_versions: Vec<i64>,
    pub grants: Vec<VaultGrant>,
}

/// Input of [`Vault::grant`].
#[derive(Clone, Debug, Default)]
pub struct GrantRequest {
    pub secret_name: String,
    pub group_folder: String,
    pub host: String,
    /// Empty = any path.
    pub path_prefix: String,
    pub inject: String,
    pub needs_approval: bool,
}

impl Vault {
    /// Open the vault with `key`. The first open records a key check value; every later open
    /// verifies it, so a wrong key fails here, before anything is written.
    pub async fn open(store: Store, key: MasterKey) -> Result<Vault, VaultError> {
        let key_path = match key.origin() {
            KeyOrigin::File(p) | KeyOrigin::Created(p) => p.clone(),
            _ => crate::key::default_key_path().unwrap_or_default(),
        };
        let wrong = |key: &MasterKey| VaultError::WrongKey {
            source_desc: key.origin().to_string(),
            key_path: key_path.clone(),
        };
        match store.vault_meta(KEY_CHECK).await? {
            Some(check) => {
                if !crypto::key_matches(&key, &check) {
                    return Err(wrong(&key));
                }
            }
            None => {
                // No check value yet (a vault from before checks, or a fresh one): any stored
                // version must still open with this key before we bless it.
                if let Some(v) = store.vault_versions(None).await?.first()
                    && crypto::open(&key, &v.name, v.version, &v.nonce, &v.ciphertext).is_err()
                {
                    return Err(wrong(&key));
                }
                let stored = store
                    .vault_meta_init(KEY_CHECK, crypto::key_check(&key)?)
                    .await?;
                if !crypto::key_matches(&key, &stored) {
                    return Err(wrong(&key));
                }
            }
        }
        Ok(Vault {
            inner: Arc::new(Inner {
                store,
                key,
                guard: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Open with the key from `NANOCLAW_MASTER_KEY`, the key file or the OS keyring (see
    /// [`MasterKey::load`]). With `create`, a missing key is created — but only when the vault was
    /// never sealed with any key. `Ok(None)`: there is no key and the vault is empty.
    pub async fn open_default(
        store: Store,
        sources: &crate::KeySources,
        create: bool,
    ) -> Result<Option<Vault>, VaultError> {
        let sealed = store.vault_meta(KEY_CHECK).await?.is_some();
        let load_sources = sources.clone();
        let key =
            tokio::task::spawn_blocking(move || MasterKey::load(&load_sources, create && !sealed))
                .await
                .map_err(|e| {
                    VaultError::Invalid(format!("loading the master key failed: {e}"))
                })??;
        match key {
            Some(key) => Vault::open(store, key).await.map(Some),
            None if sealed => Err(VaultError::MissingKey {
                key_path: sources.file.clone(),
            }),
            None => Ok(None),
        }
    }

    /// The store behind the vault.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where the master key came from (for messages; never the key).
    pub fn key_origin(&self) -> &KeyOrigin {
        self.key().origin()
    }

    fn key(&self) -> &MasterKey {
        &self.inner.key
    }

    async fn add_version(
        &self,
        name: &str,
        value: SecretString,
        rotate: bool,
    ) -> Result<i64, VaultError> {
        validate_secret_name(name)?;
        if value.expose_secret().is_empty() {
            return Err(VaultError::Invalid(format!(
                "the value for secret {name:?} is empty"
            )));
        }
        let key = self.key().clone();
        let owned = name.to_owned();
        let seal = Box::new(move |version: i64| {
            crypto::seal(&key, &owned, version, &value)
                .map_err(|e| StoreError::Invalid(e.to_string()))
        });
        match self.store().vault_add_version(name, rotate, seal).await {
            Err(StoreError::NotFound { .. }) => Err(VaultError::NoSuchSecret(name.to_owned())),
            other => Ok(other?),
        }
    }

    /// Store a new secret (version 1). An existing name is an error (use [`Vault::rotate`]).
    pub async fn set(&self, name: &str, value: SecretString) -> Result<i64, VaultError> {
        let v = self.add_version(name, value, false).await?;
        tracing::info!(secret = name, version = v, "vault: secret stored");
        Ok(v)
    }

    /// Give a secret a new value (the next version); older versions are retired but kept.
    pub async fn rotate(&self, name: &str, value: SecretString) -> Result<i64, VaultError> {
        let v = self.add_version(name, value, true).await?;
        tracing::info!(secret = name, version = v, "vault: secret rotated");
        Ok(v)
    }

    /// Remove a secret with every version and grant; `false` when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, VaultError> {
        Ok(self.store().vault_remove_secret(name).await?)
    }

    /// Secrets with versions and grants, never values.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, VaultError> {
        let store = self.store();
        let secrets: Vec<SecretRecord> = store.vault_secrets().await?;
        let versions = store.vault_versions(None).await?;
        let grants = store.vault_grants(None).await?;
        Ok(secrets
            .into_iter()
            .map(|s| SecretInfo {
                retired_versions: versions
                    .iter()
                    .filter(|v| v.name == s.name && v.retired_at.is_some())
                    .map(|v| v.version)
                    .collect(),
                grants: grants
                    .iter()
                    .filter(|g| g.secret_name == s.name)
                    .cloned()
                    .collect(),
                name: s.name,
                current_version: s.current_version,
                created_at: s.created_at,
                rotated_at: s.rotated_at,
                per_minute: s.per_minute,
            })
            .collect())
    }

    /// The current value of secret `name` (for host-side use such as the model relay).
    pub async fn reveal(&self, name: &str) -> Result<SecretString, VaultError> {
        let rec = self
            .store()
            .vault_secret(name)
            .await?
            .ok_or_else(|| VaultError::NoSuchSecret(name.to_owned()))?;
        let versions = self.store().vault_versions(Some(name.to_owned())).await?;
        let v = versions
            .iter()
            .find(|v| v.version == rec.current_version)
            .ok_or_else(|| VaultError::NoSuchSecret(name.to_owned()))?;
        self.decrypt(v)
    }

    fn decrypt(&self, v: &SecretVersion) -> Result<SecretString, VaultError> {
        crypto::open(self.key(), &v.name, v.version, &v.nonce, &v.ciphertext)
    }

    /// Allow group `group_folder` to use secret `req.secret_name` on a host (validated strictly).
    pub async fn grant(&self, req: GrantRequest) -> Result<VaultGrant, VaultError> {
        validate_secret_name(&req.secret_name)?;
        nanoclaw_store::validate_folder(&req.group_folder)
            .map_err(|e| VaultError::Invalid(format!("group: {e}")))?;
        let host = validate_host_pattern(&req.host)?;
        validate_path_prefix(&req.path_prefix)?;
        let template = Template::parse(&req.inject)?;
        let res = self
            .store()
            .vault_add_grant(NewGrant {
                secret_name: req.secret_name.clone(),
                group_folder: req.group_folder,
                host,
                path_prefix: req.path_prefix,
                inject: template.to_text(),
                needs_approval: req.needs_approval,
            })
            .await;
        match res {
            Err(StoreError::NotFound { .. }) => Err(VaultError::NoSuchSecret(req.secret_name)),
            other => Ok(other?),
        }
    }

    /// Remove grants of `name` to `group` (only on `host`, when given); returns how many.
    pub async fn revoke(
        &self,
        name: &str,
        group: &str,
        host: Option<&str>,
    ) -> Result<usize, VaultError> {
        let host = host.map(validate_host_pattern).transpose()?;
        Ok(self.store().vault_revoke(name, group, host).await?)
    }

    /// The grant of `group_folder` that applies to a request to `host` + `path`, the most specific
    /// one when several match, with the secret's current value filled in. `Ok(None)`: no grant.
    pub async fn injection_for(
        &self,
        group_folder: &str,
        host: &str,
        path: &str,
    ) -> Result<Option<Injection>, VaultError> {
        let host = normalize_host(host);
        let grants = self.store().vault_group_grants(group_folder).await?;
        let best = grants
            .into_iter()
            .filter(|(g, _)| host_matches(&g.host, &host) && path_matches(&g.path_prefix, path))
            .max_by_key(|(g, _)| (host_specificity(&g.host), g.path_prefix.len()));
        let Some((grant, version)) = best else {
            return Ok(None);
        };
        let secret = self.decrypt(&version)?;
        let (header, query) = match Template::parse(&grant.inject)? {
            Template::Header { name, value } => {
                if secret
                    .expose_secret()
                    .chars()
                    .any(|c| c.is_control() && c != '\t')
                {
                    return Err(VaultError::Invalid(format!(
                        "secret {:?} holds a control character (line break?) and cannot be put \
                         in a header; rotate it without one",
                        grant.secret_name
                    )));
                }
                let filled = value.replacen(SECRET_MARKER, secret.expose_secret(), 1);
                (Some((name, SecretString::from(filled))), None)
            }
            Template::Query { param } => (None, Some((param, secret))),
        };
        Ok(Some(Injection {
            secret_name: grant.secret_name,
            version: version.version,
            grant_id: grant.id,
            header,
            query,
            needs_approval: grant.needs_approval,
        }))
    }

    /// The placeholder standing for version `version` of secret `name`: stable for that version
    /// (derived from the master key), unguessable without the key, and not the secret.
    pub fn placeholder(&self, name: &str, version: i64) -> String {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(&version.to_be_bytes());
        let tag = crypto::derive(self.key(), "placeholder", &data);
        format!("{PLACEHOLDER_PREFIX}{name}-{}", hex::encode(&tag[..8]))
    }

    /// Environment for the group's sandbox: `NANOCLAW_SECRET_<NAME>` = a placeholder, one per secret
    /// granted to the group (name upper-cased, `.` and `-` as `_`).
    pub async fn placeholder_env(
        &self,
        group_folder: &str,
    ) -> Result<Vec<(String, String)>, VaultError> {
        let mut out: Vec<(String, String)> = Vec::new();
        let hand = self.store().vault_group_grants(group_folder).await?;
        let skills = self.store().skill_secret_grants(group_folder).await?;
        let granted = hand
            .iter()
            .map(|(g, v)| (g.secret_name.as_str(), v.version))
            .chain(
                skills
                    .iter()
                    .map(|s| (s.secret_name.as_str(), s.version.version)),
            );
        for (name, version) in granted {
            let env = env_name(name);
            if out.iter().any(|(e, _)| *e == env) {
                continue;
            }
            out.push((env, self.placeholder(name, version)));
        }
        Ok(out)
    }

    /// The secret a placeholder stands for — its CURRENT value, so a rotation reaches sandboxes that
    /// still hold an older version's placeholder — but only when the group has a grant of that secret
    /// on `host`. `Ok(None)` for anything else (unknown placeholder, other host, other group).
    pub async fn resolve_placeholder(
        &self,
        group_folder: &str,
        placeholder: &str,
        host: &str,
        path: &str,
    ) -> Result<Option<SecretString>, VaultError> {
        let Some((name, _tag)) = placeholder
            .strip_prefix(PLACEHOLDER_PREFIX)
            .and_then(|rest| rest.rsplit_once('-'))
        else {
            return Ok(None);
        };
        if validate_secret_name(name).is_err() {
            return Ok(None);
        }
        let host = normalize_host(host);
        let grants = self.store().vault_group_grants(group_folder).await?;
        let mut usable = None;
        for (g, v) in grants {
            if g.secret_name != name
                || !host_matches(&g.host, &host)
                || !path_matches(&g.path_prefix, path)
            {
                continue;
            }
            // A grant waiting for (or refused) the owner's approval must not be usable through
            // a placeholder either.
            if g.needs_approval && !self.approved(g.id).await? {
                continue;
            }
            usable = Some(v);
            break;
        }
        // An enabled skill's declared secret, on one of its declared hosts (placeholders only:
        // a skill grant never injects by itself). Paused skills' grants are not listed.
        if usable.is_none() {
            usable = self
                .store()
                .skill_secret_grants(group_folder)
                .await?
                .into_iter()
                .find(|s| s.secret_name == name && host_matches(&s.host, &host))
                .map(|s| s.version);
        }
        let Some(current) = usable else {
            return Ok(None);
        };
        let known = (1..=current.version).any(|v| self.placeholder(name, v) == placeholder);
        if !known {
            return Ok(None);
        }
        self.decrypt(&current).map(Some)
    }

    /// Whether the owner approved grant `grant_id`.
    pub async fn approved(&self, grant_id: i64) -> Result<bool, VaultError> {
        Ok(self
            .store()
            .vault_approval(grant_id)
            .await?
            .is_some_and(|a| a.state == nanoclaw_store::ApprovalState::Approved))
    }

    /// Every version of every secret not removed (current and retired): the leak guard's patterns.
    /// A version that does not decrypt is skipped with a warning.
    pub async fn live_values(&self) -> Result<Vec<LiveSecret>, VaultError> {
        let versions = self.store().vault_versions(None).await?;
        let mut out = Vec::with_capacity(versions.len());
        for v in &versions {
            match self.decrypt(v) {
                Ok(value) => out.push(LiveSecret {
                    name: v.name.clone(),
                    version: v.version,
                    value,
                }),
                Err(e) => tracing::warn!(error = %e, "vault: leak guard skips a version"),
            }
        }
        Ok(out)
    }

    /// A leak guard over [`Vault::live_values`]. Cached: the versions are listed (no
    /// decryption) on every call, and the guard rebuilt only when they changed, so a
    /// rotation is covered by the very next scan.
    pub async fn leak_guard(&self) -> Result<std::sync::Arc<LeakGuard>, VaultError> {
        let fingerprint: GuardFingerprint = self
            .store()
            .vault_versions(None)
            .await?
            .into_iter()
            .map(|v| (v.name, v.version, v.nonce))
            .collect();
        if let Ok(cached) = self.inner.guard.lock()
            && let Some((fp, guard)) = cached.as_ref()
            && *fp == fingerprint
        {
            return Ok(std::sync::Arc::clone(guard));
        }
        let guard = std::sync::Arc::new(LeakGuard::new(&self.live_values().await?));
        if let Ok(mut cached) = self.inner.guard.lock() {
            *cached = Some((fingerprint, std::sync::Arc::clone(&guard)));
        }
        Ok(guard)
    }
}

/// `NANOCLAW_SECRET_<NAME>` for secret `name`.
pub fn env_name(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("{ENV_PREFIX}{upper}")
}

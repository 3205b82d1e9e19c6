//! The vault's rows: sealed secret versions, grants, vault metadata and the audit hash chain.
//!
//! The store never sees a plaintext secret or the master key: sealing (and hashing audit rows) is done by
//! the caller (crate `nanoclaw-vault`) through closures that run inside the write transaction, so a
//! version number and the ciphertext bound to it are written atomically.

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};

/// `prev_hash` of the first audit row.
pub const AUDIT_GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// A secret's metadata (never its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub current_version: i64,
    pub created_at: i64,
    /// When the current version replaced an older one; `None` if never rotated.
    pub rotated_at: Option<i64>,
    /// Injections allowed per minute (sliding window); 0 = no limit.
    #[serde(default)]
    pub per_minute: i64,
}

/// Where the owner's approval of a grant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
        }
    }

    fn parse(s: &str) -> Option<ApprovalState> {
        match s {
            "pending" => Some(ApprovalState::Pending),
            "approved" => Some(ApprovalState::Approved),
            "denied" => Some(ApprovalState::Denied),
            _ => None,
        }
    }
}

/// The approval of one grant that needs the owner's approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantApproval {
    pub grant_id: i64,
    pub secret_name: String,
    pub state: ApprovalState,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
    /// The group whose agent asked.
    pub group_folder: String,
    /// The host it asked for.
    pub host: String,
}

/// One sealed version of a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretVersion {
    pub name: String,
    pub version: i64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: i64,
    /// Set when a newer version replaced this one. Retired versions are kept (the leak guard still
    /// looks for them) until the secret is removed.
    pub retired_at: Option<i64>,
}

// Ciphertext is not secret, but there is no reason to spray it into logs either.
impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersion")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Where a secret may be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultGrant {
    pub id: i64,
    pub secret_name: String,
    pub group_folder: String,
    /// Exact host name, or `*.example.com` (any subdomain).
    pub host: String,
    /// Path prefix the grant is limited to; empty = any path.
    pub path_prefix: String,
    /// The inject template, e.g. `header:x-api-key: {secret}` or `query:key`.
    pub inject: String,
    /// The owner must approve the grant's first use.
    pub needs_approval: bool,
    pub created_at: i64,
}

/// Input of [`Store::vault_add_grant`]. Validation of host and template is the vault crate's job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewGrant {
    pub secret_name: String,
    pub group_folder: String,
    pub host: String,
    pub path_prefix: String,
    pub inject: String,
    pub needs_approval: bool,
}

/// A row to append to the audit chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAudit {
    pub at: i64,
    pub group_folder: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: Option<i64>,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub secret_name: Option<String>,
    /// `allow`, `deny` or `inject`.
    pub decision: String,
    pub reason: String,
}

/// A stored audit row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub group_folder: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: Option<i64>,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub secret_name: Option<String>,
    pub decision: String,
    pub reason: String,
    pub prev_hash: String,
    pub hash: String,
}

const SECRET_COLS: &str = "name, current_version, created_at, rotated_at, per_minute";
const VERSION_COLS: &str = "name, version, nonce, ciphertext, created_at, retired_at";
const GRANT_COLS: &str =
    "id, secret_name, group_folder, host, path_prefix, inject, needs_approval, created_at";
const AUDIT_COLS: &str = "id, at, group_folder, method, host, path, status, bytes_up, bytes_down, \
                          secret_name, decision, reason, prev_hash, hash";

fn secret_at(row: &Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        name: row.get(0)?,
        current_version: row.get(1)?,
        created_at: row.get(2)?,
        rotated_at: row.get(3)?,
        per_minute: row.get(4)?,
    })
}

fn version_at(row: &Row<'_>) -> rusqlite::Result<SecretVersion> {
    Ok(SecretVersion {
        name: row.get(0)?,
        version: row.get(1)?,
        nonce: row.get(2)?,
        ciphertext: row.get(3)?,
        created_at: row.get(4)?,
        retired_at: row.get(5)?,
    })
}

fn grant_at(row: &Row<'_>) -> rusqlite::Result<VaultGrant> {
    Ok(VaultGrant {
        id: row.get(0)?,
        secret_name: row.get(1)?,
        group_folder: row.get(2)?,
        host: row.get(3)?,
        path_prefix: row.get(4)?,
        inject: row.get(5)?,
        needs_approval: row.get(6)?,
        created_at: row.get(7)?,
    })
}

const APPROVAL_SELECT: &str =
    "SELECT a.grant_id, g.secret_name, a.state, a.requested_at, a.decided_at, a.group_folder, a.host
     FROM vault_grant_approvals a JOIN vault_grants g ON g.id = a.grant_id";

fn approval_at(row: &Row<'_>) -> rusqlite::Result<GrantApproval> {
    let state: String = row.get(2)?;
    Ok(GrantApproval {
        grant_id: row.get(0)?,
        secret_name: row.get(1)?,
        state: ApprovalState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown approval state {state:?}").into(),
            )
        })?,
        requested_at: row.get(3)?,
        decided_at: row.get(4)?,
        group_folder: row.get(5)?,
        host: row.get(6)?,
    })
}

/// Approvals whose grant is gone (foreign keys may be off on another connection; ids are reused).
fn drop_orphan_approvals(tx: &rusqlite::Connection) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM vault_grant_approvals WHERE grant_id NOT IN (SELECT id FROM vault_grants)",
        [],
    )
    .ctx("remove approvals of removed grants")?;
    Ok(())
}

fn audit_at(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.get(0)?,
        at: row.get(1)?,
        group_folder: row.get(2)?,
        method: row.get(3)?,
        host: row.get(4)?,
        path: row.get(5)?,
        status: row.get(6)?,
        bytes_up: row.get(7)?,
        bytes_down: row.get(8)?,
        secret_name: row.get(9)?,
        decision: row.get(10)?,
        reason: row.get(11)?,
        prev_hash: row.get(12)?,
        hash: row.get(13)?,
    })
}

/// Seals a value for a given version number: returns `(nonce, ciphertext)`.
pub type SealFn = dyn FnMut(i64) -> Result<(Vec<u8>, Vec<u8>), StoreError> + Send;

impl Store {
    /// A vault metadata value.
    pub async fn vault_meta(&self, key: impl Into<String>) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.into();
        self.read(move |conn| {
            conn.query_row("SELECT value FROM vault_meta WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .optional()
            .ctx("read vault metadata")
        })
        .await
    }

    /// Store `value` under `key` unless a value is already there; returns the stored value (never
    /// overwrites, so two processes initialising at once agree on one).
    pub async fn vault_meta_init(
        &self,
        key: impl Into<String>,
        value: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let key = key.into();
        self.write("initialise vault metadata", move |tx| {
            tx.execute(
                "INSERT INTO vault_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )
            .ctx("initialise vault metadata")?;
            tx.query_row("SELECT value FROM vault_meta WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .ctx("initialise vault metadata")
        })
        .await
    }

    /// Add a version of secret `name`: version 1 of a new secret (`rotate == false`; an error if the
    /// name exists) or the next version of an existing one (`rotate == true`; an error if it does not),
    /// retiring the versions before it. `seal` is called with the new version number.
    pub async fn vault_add_version(
        &self,
        name: impl Into<String>,
        rotate: bool,
        mut seal: Box<SealFn>,
    ) -> Result<i64, StoreError> {
        let name = name.into();
        self.write("add secret version", move |tx| {
            let now = now_ms();
            let current: Option<i64> = tx
                .query_row(
                    "SELECT current_version FROM vault_secrets WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()
                .ctx("read secret")?;
            let version = match (current, rotate) {
                (Some(_), false) => {
                    return Err(StoreError::Invalid(format!(
                        "a secret named {name:?} already exists; use `nanoclaw vault rotate {name}` to \
                         replace its value"
                    )));
                }
                (None, true) => {
                    return Err(StoreError::NotFound {
                        what: "secret",
                        id: name.clone(),
                    });
                }
                (None, false) => {
                    tx.execute(
                        "INSERT INTO vault_secrets (name, current_version, created_at) VALUES (?1, 1, ?2)",
                        params![name, now],
                    )
                    .ctx("add secret")?;
                    1
                }
                (Some(v), true) => {
                    let next = v + 1;
                    tx.execute(
                        "UPDATE vault_secrets SET current_version = ?2, rotated_at = ?3 WHERE name = ?1",
                        params![name, next, now],
                    )
                    .ctx("rotate secret")?;
                    tx.execute(
                        "UPDATE vault_versions SET retired_at = ?2 WHERE name = ?1 AND retired_at IS NULL",
                        params![name, now],
                    )
                    .ctx("retire old secret versions")?;
                    next
                }
            };
            let (nonce, ciphertext) = seal(version)?;
            tx.execute(
                &format!("INSERT INTO vault_versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, NULL)"),
                params![name, version, nonce, ciphertext, now],
            )
            .ctx("store secret version")?;
            Ok(version)
        })
        .await
    }

    /// Remove a secret with all its versions and grants; `false` when there was none.
    pub async fn vault_remove_secret(&self, name: impl Into<String>) -> Result<bool, StoreError> {
        let name = name.into();
        self.write("remove secret", move |tx| {
            // Explicit deletes: foreign keys may be off on a connection someone else opened.
            tx.execute("DELETE FROM vault_grants WHERE secret_name = ?1", [&name])
                .ctx("remove secret grants")?;
            drop_orphan_approvals(tx)?;
            tx.execute("DELETE FROM vault_versions WHERE name = ?1", [&name])
                .ctx("remove secret versions")?;
            let n = tx
                .execute("DELETE FROM vault_secrets WHERE name = ?1", [&name])
                .ctx("remove secret")?;
            Ok(n > 0)
        })
        .await
    }

    /// All secrets, by name.
    pub async fn vault_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SECRET_COLS} FROM vault_secrets ORDER BY name"
                ))
                .ctx("list secrets")?;
            let rows = stmt.query_map([], secret_at).ctx("list secrets")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list secrets")
        })
        .await
    }

    /// One secret's metadata.
    pub async fn vault_secret(
        &self,
        name: impl Into<String>,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let name = name.into();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {SECRET_COLS} FROM vault_secrets WHERE name = ?1"),
                [&name],
                secret_at,
            )
            .optional()
            .ctx("read secret")
        })
        .await
    }

    /// Every stored version (of secret `name`, or of all secrets), by name then version.
    pub async fn vault_versions(
        &self,
        name: Option<String>,
    ) -> Result<Vec<SecretVersion>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {VERSION_COLS} FROM vault_versions
                     WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version"
                ))
                .ctx("list secret versions")?;
            let rows = stmt
                .query_map([&name], version_at)
                .ctx("list secret versions")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list secret versions")
        })
        .await
    }

    /// The grants of group `folder`, each with the current version of its secret.
    pub async fn vault_group_grants(
        &self,
        folder: impl Into<String>,
    ) -> Result<Vec<(VaultGrant, SecretVersion)>, StoreError> {
        let folder = folder.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT g.id, g.secret_name, g.group_folder, g.host, g.path_prefix, g.inject,
                            g.needs_approval, g.created_at,
                            v.name, v.version, v.nonce, v.ciphertext, v.created_at, v.retired_at
                     FROM vault_grants g
                     JOIN vault_secrets s ON s.name = g.secret_name
                     JOIN vault_versions v ON v.name = s.name AND v.version = s.current_version
                     WHERE g.group_folder = ?1
                     ORDER BY g.id",
                )
                .ctx("list group grants")?;
            let rows = stmt
                .query_map([&folder], |r| {
                    Ok((
                        grant_at(r)?,
                        SecretVersion {
                            name: r.get(8)?,
                            version: r.get(9)?,
                            nonce: r.get(10)?,
                            ciphertext: r.get(11)?,
                            created_at: r.get(12)?,
                            retired_at: r.get(13)?,
                        },
                    ))
                })
                .ctx("list group grants")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list group grants")
        })
        .await
    }

    /// Add a grant. The same (secret, group, host, path) twice is an error.
    pub async fn vault_add_grant(&self, g: NewGrant) -> Result<VaultGrant, StoreError> {
        self.write("add grant", move |tx| {
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM vault_secrets WHERE name = ?1",
                    [&g.secret_name],
                    |_| Ok(true),
                )
                .optional()
                .ctx("add grant")?
                .unwrap_or(false);
            if !exists {
                return Err(StoreError::NotFound {
                    what: "secret",
                    id: g.secret_name.clone(),
                });
            }
            let now = now_ms();
            let n = tx
                .execute(
                    "INSERT INTO vault_grants
                       (secret_name, group_folder, host, path_prefix, inject, needs_approval, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (secret_name, group_folder, host, path_prefix) DO NOTHING",
                    params![
                        g.secret_name,
                        g.group_folder,
                        g.host,
                        g.path_prefix,
                        g.inject,
                        g.needs_approval,
                        now
                    ],
                )
                .ctx("add grant")?;
            if n == 0 {
                return Err(StoreError::Invalid(format!(
                    "secret {:?} is already granted to group {:?} on {}{}; revoke it first to change it",
                    g.secret_name, g.group_folder, g.host, g.path_prefix
                )));
            }
            Ok(VaultGrant {
                id: tx.last_insert_rowid(),
                secret_name: g.secret_name.clone(),
                group_folder: g.group_folder.clone(),
                host: g.host.clone(),
                path_prefix: g.path_prefix.clone(),
                inject: g.inject.clone(),
                needs_approval: g.needs_approval,
                created_at: now,
            })
        })
        .await
    }

    /// Remove the grants of `secret` to `group` (only those on `host`, when given); returns how many.
    pub async fn vault_revoke(
        &self,
        secret: impl Into<String>,
        group: impl Into<String>,
        host: Option<String>,
    ) -> Result<usize, StoreError> {
        let (secret, group) = (secret.into(), group.into());
        self.write("revoke grant", move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM vault_grants
                     WHERE secret_name = ?1 AND group_folder = ?2 AND (?3 IS NULL OR host = ?3)",
                    params![secret, group, host],
                )
                .ctx("revoke grant")?;
            drop_orphan_approvals(tx)?;
            Ok(n)
        })
        .await
    }

    /// All grants (of secret `name`, when given), by secret then id.
    pub async fn vault_grants(&self, name: Option<String>) -> Result<Vec<VaultGrant>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLS} FROM vault_grants
                     WHERE ?1 IS NULL OR secret_name = ?1 ORDER BY secret_name, id"
                ))
                .ctx("list grants")?;
            let rows = stmt.query_map([&name], grant_at).ctx("list grants")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list grants")
        })
        .await
    }

    /// Set secret `name`'s rate limit (injections per minute, 0 = none); `false` when there is no
    /// such secret.
    pub async fn vault_set_rate_limit(
        &self,
        name: impl Into<String>,
        per_minute: i64,
    ) -> Result<bool, StoreError> {
        let name = name.into();
        if per_minute < 0 {
            return Err(StoreError::Invalid(format!(
                "rate limit {per_minute} for {name:?} is negative; give 0 (no limit) or more"
            )));
        }
        self.write("set secret rate limit", move |tx| {
            let n = tx
                .execute(
                    "UPDATE vault_secrets SET per_minute = ?2 WHERE name = ?1",
                    params![name, per_minute],
                )
                .ctx("set secret rate limit")?;
            Ok(n > 0)
        })
        .await
    }

    /// The approval of grant `grant_id`, if it was ever asked for or decided.
    pub async fn vault_approval(&self, grant_id: i64) -> Result<Option<GrantApproval>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                &format!("{APPROVAL_SELECT} WHERE a.grant_id = ?1"),
                [grant_id],
                approval_at,
            )
            .optional()
            .ctx("read grant approval")
        })
        .await
    }

    /// Every approval (pending first, then by grant).
    pub async fn vault_approvals(&self) -> Result<Vec<GrantApproval>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "{APPROVAL_SELECT} ORDER BY a.state != 'pending', a.grant_id"
                ))
                .ctx("list grant approvals")?;
            let rows = stmt
                .query_map([], approval_at)
                .ctx("list grant approvals")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("list grant approvals")
        })
        .await
    }

    /// Record that `group` asked to use grant `grant_id` on `host`: a `pending` approval unless there
    /// is one already. Returns the approval and whether this call created it (then the owner is to
    /// be asked).
    pub async fn vault_request_approval(
        &self,
        grant_id: i64,
        group: impl Into<String>,
        host: impl Into<String>,
        now_ms: i64,
    ) -> Result<(GrantApproval, bool), StoreError> {
        let (group, host) = (group.into(), host.into());
        self.write("request grant approval", move |tx| {
            let created = tx
                .execute(
                    "INSERT INTO vault_grant_approvals (grant_id, state, requested_at, group_folder, host)
                     SELECT id, 'pending', ?2, ?3, ?4 FROM vault_grants WHERE id = ?1
                     ON CONFLICT (grant_id) DO NOTHING",
                    params![grant_id, now_ms, group, host],
                )
                .ctx("request grant approval")?
                > 0;
            let approval = tx
                .query_row(
                    &format!("{APPROVAL_SELECT} WHERE a.grant_id = ?1"),
                    [grant_id],
                    approval_at,
                )
                .optional()
                .ctx("request grant approval")?
                .ok_or_else(|| StoreError::NotFound {
                    what: "grant",
                    id: grant_id.to_string(),
                })?;
            Ok((approval, created))
        })
        .await
    }

    /// The owner's decision on grant `grant_id` (asked for or not). `None`: there is no such grant.
    pub async fn vault_decide_approval(
        &self,
        grant_id: i64,
        approve: bool,
        now_ms: i64,
    ) -> Result<Option<GrantApproval>, StoreError> {
        let state = if approve {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        self.write("decide grant approval", move |tx| {
            tx.execute(
                "INSERT INTO vault_grant_approvals
                   (grant_id, state, requested_at, decided_at, group_folder, host)
                 SELECT id, ?2, ?3, ?3, group_folder, host FROM vault_grants WHERE id = ?1
                 ON CONFLICT (grant_id) DO UPDATE SET state = ?2, decided_at = ?3",
                params![grant_id, state.as_str(), now_ms],
            )
            .ctx("decide grant approval")?;
            tx.query_row(
                &format!("{APPROVAL_SELECT} WHERE a.grant_id = ?1"),
                [grant_id],
                approval_at,
            )
            .optional()
            .ctx("decide grant approval")
        })
        .await
    }

    /// Append a row to the audit chain. `hash` computes the row's hash from the row as it will be
    /// stored (id and `prev_hash` filled in, `hash` empty). Reading the chain's head and inserting
    /// happen in one immediate transaction, so concurrent writers never fork the chain.
    pub async fn audit_append(
        &self,
        entry: NewAudit,
        hash: fn(&AuditRecord) -> String,
    ) -> Result<AuditRecord, StoreError> {
        self.write("append audit row", move |tx| {
            let head: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .ctx("read audit head")?;
            let (last_id, prev_hash) = head.unwrap_or_else(|| (0, AUDIT_GENESIS_HASH.to_owned()));
            let mut row = AuditRecord {
                id: last_id + 1,
                at: entry.at,
                group_folder: entry.group_folder.clone(),
                method: entry.method.clone(),
                host: entry.host.clone(),
                path: entry.path.clone(),
                status: entry.status,
                bytes_up: entry.bytes_up,
                bytes_down: entry.bytes_down,
                secret_name: entry.secret_name.clone(),
                decision: entry.decision.clone(),
                reason: entry.reason.clone(),
                prev_hash,
                hash: String::new(),
            };
            row.hash = hash(&row);
            tx.execute(
                &format!(
                    "INSERT INTO audit ({AUDIT_COLS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params![
                    row.id,
                    row.at,
                    row.group_folder,
                    row.method,
                    row.host,
                    row.path,
                    row.status,
                    row.bytes_up,
                    row.bytes_down,
                    row.secret_name,
                    row.decision,
                    row.reason,
                    row.prev_hash,
                    row.hash
                ],
            )
            .ctx("append audit row")?;
            Ok(row)
        })
        .await
    }

    /// Audit rows with id > `after_id` (of group `group`, when given), oldest first, at most `limit`.
    pub async fn audit_rows(
        &self,
        after_id: i64,
        group: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {AUDIT_COLS} FROM audit
                     WHERE id > ?1 AND (?2 IS NULL OR group_folder = ?2)
                     ORDER BY id LIMIT ?3"
                ))
                .ctx("read audit rows")?;
            let rows = stmt
                .query_map(params![after_id, group, limit], audit_at)
                .ctx("read audit rows")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("read audit rows")
        })
        .await
    }

    /// The newest `limit` audit rows with ids below `before` (all when `None`), newest first:
    /// a page of the dashboard's audit log.
    pub async fn audit_rows_newest(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = before.unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {AUDIT_COLS} FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
                ))
                .ctx("read the newest audit rows")?;
            let rows = stmt
                .query_map(params![before, limit], audit_at)
                .ctx("read the newest audit rows")?;
            rows.collect::<Result<Vec<_>, _>>()
                .ctx("read the newest audit rows")
        })
        .await
    }
}

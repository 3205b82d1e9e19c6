//! `nanoclaw vault …`: secrets (never on the command line, never printed), grants, the audit log.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use nanoclaw_host::config::Paths;
use nanoclaw_store::{AuditRecord, Store};
use nanoclaw_vault::{
    Audit, GrantRequest, KeyOrigin, KeySources, SecretString, Vault, VerifyError,
};

fn open_store() -> anyhow::Result<Store> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    Ok(nanoclaw_host::open_store(&paths.database(), true)?)
}

/// The vault with the master key. `create`: make a key (in the OS keyring when there is one, else a
/// key file) when there is no key at all and the vault was never sealed (first `vault set`).
pub(crate) async fn open_vault(create: bool) -> anyhow::Result<Option<Vault>> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let store = nanoclaw_host::open_store(&paths.database(), true)?;
    let sources = KeySources::for_home(&paths.home)?;
    let vault = Vault::open_default(store, &sources, create).await?;
    if let Some(v) = &vault
        && matches!(
            v.key_origin(),
            KeyOrigin::Created(_) | KeyOrigin::CreatedInKeyring
        )
    {
        eprintln!(
            "vault: master key created ({}); back it up: without it the vault cannot be read",
            v.key_origin()
        );
    }
    Ok(vault)
}

/// The vault when it can be opened without creating a key; `None` otherwise.
pub(crate) async fn open_vault_quietly() -> Option<Vault> {
    open_vault(false).await.ok().flatten()
}

async fn require_vault() -> anyhow::Result<Vault> {
    match open_vault(false).await? {
        Some(v) => Ok(v),
        None => anyhow::bail!(
            "the vault is empty and there is no master key yet; add a secret first with \
             `nanoclaw vault set NAME`"
        ),
    }
}

/// Read a secret value: a hidden prompt on a terminal, else all of stdin (one trailing newline
/// dropped, so `echo value | nanoclaw vault set NAME` stores `value`).
pub(crate) fn read_value(name: &str) -> anyhow::Result<SecretString> {
    let mut text = zeroize::Zeroizing::new(String::new());
    if std::io::stdin().is_terminal() {
        *text = rpassword::prompt_password(format!("value for {name} (not shown): "))
            .map_err(|e| anyhow::anyhow!("cannot read the value from the terminal: {e}"))?;
    } else {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| anyhow::anyhow!("cannot read the value from stdin: {e}"))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
    }
    if text.is_empty() {
        anyhow::bail!(
            "no value given for {name}: type it at the prompt or pipe it on stdin \
             (e.g. `printenv ANTHROPIC_API_KEY | nanoclaw vault set {name}`)"
        );
    }
    Ok(SecretString::from(text.as_str()))
}

/// The value is never accepted on argv: it would land in shell history and be visible in /proc.
fn refuse_argv_value(name: &str, extra: &[String]) -> anyhow::Result<()> {
    if !extra.is_empty() {
        anyhow::bail!(
            "the value is never taken from the command line (shell history, /proc); pipe it on \
             stdin or type it at the prompt: `nanoclaw vault set {name}`"
        );
    }
    Ok(())
}

pub async fn set(name: String, extra: Vec<String>) -> anyhow::Result<ExitCode> {
    refuse_argv_value(&name, &extra)?;
    nanoclaw_vault::validate_secret_name(&name)?;
    let vault = open_vault(true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no master key could be loaded or created"))?;
    let value = read_value(&name)?;
    let version = vault.set(&name, value).await?;
    println!(
        "stored secret {name} (version {version}); grant it with `nanoclaw vault grant {name} --group G --host H --inject …`"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn rotate(name: String, extra: Vec<String>) -> anyhow::Result<ExitCode> {
    refuse_argv_value(&name, &extra)?;
    let vault = require_vault().await?;
    if vault.store().vault_secret(name.as_str()).await?.is_none() {
        anyhow::bail!("no secret named {name:?}; see `nanoclaw vault list`");
    }
    let value = read_value(&name)?;
    let version = vault.rotate(&name, value).await?;
    println!(
        "rotated {name} to version {version}: the next request uses it; older versions are kept \
         (retired) for the leak guard until `nanoclaw vault rm {name}`"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn rm(name: String) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    if !store.vault_remove_secret(name.as_str()).await? {
        anyhow::bail!("no secret named {name:?}; see `nanoclaw vault list`");
    }
    println!("removed {name} with all its versions and grants");
    Ok(ExitCode::SUCCESS)
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let secrets = match open_vault(false).await? {
        Some(v) => v.list().await?,
        None => Vec::new(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&secrets)?);
        return Ok(ExitCode::SUCCESS);
    }
    if secrets.is_empty() {
        println!(
            "no secrets; add one with `nanoclaw vault set NAME` (value on stdin or at the prompt)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    for s in secrets {
        let retired = if s.retired_versions.is_empty() {
            String::new()
        } else {
            format!(", retired {:?}", s.retired_versions)
        };
        println!(
            "{}  v{}  created {}{}{}{}",
            s.name,
            s.current_version,
            when(s.created_at),
            s.rotated_at
                .map(|t| format!(", rotated {}", when(t)))
                .unwrap_or_default(),
            retired,
            if s.per_minute > 0 {
                format!(", at most {}/min", s.per_minute)
            } else {
                String::new()
            }
        );
        if s.grants.is_empty() {
            println!("    (no grants: not usable by any agent)");
        }
        for g in s.grants {
            println!(
                "    #{} group {} -> {}{}  {}{}",
                g.id,
                g.group_folder,
                g.host,
                g.path_prefix,
                g.inject,
                if g.needs_approval {
                    "  (needs approval)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw vault limit NAME --per-minute N`.
pub async fn limit(name: String, per_minute: u32) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    if !store
        .vault_set_rate_limit(name.as_str(), i64::from(per_minute))
        .await?
    {
        anyhow::bail!("no secret named {name:?}; see `nanoclaw vault list`");
    }
    if per_minute == 0 {
        println!("{name} has no rate limit now");
    } else {
        println!(
            "{name} is injected at most {per_minute} time(s) per minute; more get 429 Too Many Requests"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw vault approvals [--json]`.
pub async fn approvals(json: bool) -> anyhow::Result<ExitCode> {
    let list = open_store()?.vault_approvals().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no approvals asked for or decided");
        return Ok(ExitCode::SUCCESS);
    }
    for a in list {
        println!(
            "#{:<4} {:<8} group {} wants {} on {}  asked {}{}",
            a.grant_id,
            a.state.as_str(),
            a.group_folder,
            a.secret_name,
            a.host,
            when(a.requested_at),
            a.decided_at
                .map(|t| format!(", decided {}", when(t)))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw vault approve N` / `deny N`.
pub async fn decide(grant: i64, approve: bool) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let Some(a) = store
        .vault_decide_approval(grant, approve, nanoclaw_store::now_ms())
        .await?
    else {
        anyhow::bail!("there is no grant #{grant}; see `nanoclaw vault list`");
    };
    println!(
        "grant #{grant} ({} for group {} on {}) is {}",
        a.secret_name,
        a.group_folder,
        a.host,
        a.state.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

pub struct GrantArgs {
    pub name: String,
    pub group: String,
    pub host: String,
    pub path: Option<String>,
    pub inject: String,
    pub approval: bool,
}

pub async fn grant(a: GrantArgs) -> anyhow::Result<ExitCode> {
    let vault = require_vault().await?;
    let g = vault
        .grant(GrantRequest {
            secret_name: a.name,
            group_folder: a.group,
            host: a.host,
            path_prefix: a.path.unwrap_or_default(),
            inject: a.inject,
            needs_approval: a.approval,
        })
        .await?;
    if vault
        .store()
        .group_by_folder(g.group_folder.as_str())
        .await?
        .is_none()
    {
        eprintln!(
            "note: there is no agent group {:?} yet; the grant applies once it exists",
            g.group_folder
        );
    }
    println!(
        "granted {} to group {} on {}{} as {}{}",
        g.secret_name,
        g.group_folder,
        g.host,
        g.path_prefix,
        g.inject,
        if g.needs_approval {
            " (the owner approves its first use)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(name: String, group: String, host: Option<String>) -> anyhow::Result<ExitCode> {
    let vault = require_vault().await?;
    let n = vault.revoke(&name, &group, host.as_deref()).await?;
    if n == 0 {
        anyhow::bail!(
            "secret {name:?} has no grant to group {group:?}{}; see `nanoclaw vault list`",
            host.map(|h| format!(" on {h}")).unwrap_or_default()
        );
    }
    println!("revoked {n} grant(s) of {name} from group {group}");
    Ok(ExitCode::SUCCESS)
}

fn print_row(r: &AuditRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!(
            "{:>6} {} {:<12} {:<6} {:<7} {}{} {} up {} down {}{}{}",
            r.id,
            when(r.at),
            r.group_folder,
            r.decision,
            r.method,
            r.host,
            r.path,
            r.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            r.bytes_up,
            r.bytes_down,
            r.secret_name
                .as_deref()
                .map(|s| format!(" secret={s}"))
                .unwrap_or_default(),
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.reason)
            }
        );
    }
    Ok(())
}

/// `nanoclaw vault audit [--group G] [--follow] [--json]` (JSON: one object per line).
pub async fn audit(group: Option<String>, follow: bool, json: bool) -> anyhow::Result<ExitCode> {
    const PAGE: usize = 500;
    let audit = Audit::new(open_store()?);
    let mut last = 0i64;
    loop {
        let rows = audit.rows(last, group.clone(), PAGE).await?;
        for r in &rows {
            print_row(r, json)?;
            last = r.id;
        }
        if rows.len() == PAGE {
            continue;
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// `nanoclaw vault verify`: exit 1 naming the first row that breaks the chain.
pub async fn verify() -> anyhow::Result<ExitCode> {
    match Audit::new(open_store()?).verify().await {
        Ok(n) => {
            println!("audit chain intact: {n} rows");
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::ChainBroken { id, why }) => {
            eprintln!("audit chain BROKEN at row {id}: {why}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

//! `nanoclaw doctor`: what this machine has and lacks, with fixes.

use std::process::ExitCode;

use nanoclaw_egress::relay::ModelUpstreams;
use nanoclaw_host::config::{Config, Paths};
use serde::Serialize;

#[derive(Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    /// A failed optional check is reported but does not fail the doctor.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    optional: bool,
}

pub async fn doctor(json: bool) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    let paths = Paths::from_env().map_err(anyhow::Error::msg);
    let config = match &paths {
        Ok(p) => Config::load(&p.config_file()),
        Err(_) => Ok(Config::default()),
    };
    checks.push(match &paths {
        Ok(p) => data_dir_check(&p.home),
        Err(e) => Check {
            name: "data directory",
            ok: false,
            detail: e.to_string(),
            optional: false,
        },
    });
    let store = match &paths {
        Ok(p) => {
            let (check, store) = database_check(&p.database());
            checks.push(check);
            store
        }
        Err(_) => None,
    };
    let config = match config {
        Ok(c) => {
            checks.push(Check {
                name: "config",
                ok: true,
                detail: "valid".into(),
                optional: false,
            });
            c
        }
        Err(e) => {
            checks.push(Check {
                name: "config",
                ok: false,
                detail: e.to_string(),
                optional: false,
            });
            Config::default()
        }
    };
    let host_id = match &paths {
        Ok(p) if p.home.exists() => p.host_id().unwrap_or_default(),
        _ => String::new(),
    };
    // Before the runtime: a sandbox that would be host root is the first thing to fix.
    checks.push(sandbox_user_check());
    let runtime = nanoclaw_host::runtime::select(&config, &host_id).await;
    checks.push(Check {
        name: "sandbox runtime",
        ok: runtime.is_ok(),
        detail: match &runtime {
            Ok(r) => format!("{} works", r.name()),
            Err(e) => e.clone(),
        },
        optional: false,
    });
    checks.push(docker_image_check(&config).await);
    let agent = nanoclaw_host::find_agent_binary();
    checks.push(Check {
        name: "agent runner",
        ok: agent.is_ok(),
        detail: match &agent {
            Ok(p) => p.display().to_string(),
            Err(e) => e.clone(),
        },
        optional: false,
    });
    let upstreams = ModelUpstreams::from_env();
    let provider = config.model.provider.clone();
    // Keys stored in the vault (`nanoclaw vault set anthropic|openai`) win over the environment.
    let vault_keys: Vec<String> = match &store {
        Some(store) => store
            .vault_secrets()
            .await
            .map(|s| s.into_iter().map(|r| r.name).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let has_key = |p: &str| upstreams.has(p) || vault_keys.iter().any(|n| n == p);
    if has_key(&provider) {
        checks.push(
            verify_key(
                &upstreams,
                &provider,
                vault_keys.iter().any(|n| n == &provider),
            )
            .await,
        );
    } else {
        checks.push(Check {
            name: "model credentials",
            ok: false,
            detail: missing_key_fix(&provider),
            optional: false,
        });
    }
    if let Some(store) = &store {
        checks.push(group_providers_check(store, &provider, &has_key).await);
    }
    if let Ok(p) = &paths {
        checks.push(master_key_check(&p.home, store.clone()).await);
    }
    Ok(report(&checks, json))
}

/// Whom the sandboxes run as; one that would be host root fails.
fn sandbox_user_check() -> Check {
    let user = nanoclaw_sandbox::SandboxUser::for_this_host();
    Check {
        name: "sandbox user",
        ok: user.check().is_ok(),
        detail: match user.check() {
            Err(e) => e.to_string(),
            Ok(()) if user.dedicated => format!(
                "sandboxes run as host uid {} gid {} (the host runs as root; they never map to it)",
                user.uid, user.gid
            ),
            Ok(()) => format!(
                "sandboxes run as you (host uid {} gid {})",
                user.uid, user.gid
            ),
        },
        optional: false,
    }
}

/// Whether the Docker engine answers and has the current agent image. Optional unless the
/// config (or DOCKER_HOST) asks for Docker.
async fn docker_image_check(config: &Config) -> Check {
    // Docker is optional (the native sandbox works without it), so it only fails the check
    // when the config asks for it.
    // DOCKER_HOST set says the user means to use Docker too.
    let wants_docker = config.agents.runtime == "docker"
        || std::env::var_os("DOCKER_HOST").is_some_and(|v| !v.is_empty());
    let image = &config.agents.docker.image;
    let (docker_ok, docker_detail) = match nanoclaw_sandbox::image::connect().await {
        Err(e) => (
            false,
            format!(
                "engine not reachable: {e}; start Docker (e.g. `systemctl start docker`), fix \
                 DOCKER_HOST / agents.docker.socket, or set agents.runtime = \"native\""
            ),
        ),
        Ok(docker) => match nanoclaw_sandbox::image::image_status(&docker, image).await {
            nanoclaw_sandbox::image::ImageStatus::Current => (true, format!("{image} is current")),
            status => (
                false,
                status
                    .remedy(image)
                    .unwrap_or_else(|| format!("{image}: not usable")),
            ),
        },
    };
    Check {
        name: "docker image",
        ok: docker_ok,
        detail: docker_detail,
        optional: !wants_docker,
    }
}

/// Prints the checks (a table, or JSON) and says whether all that must pass did.
fn report(checks: &[Check], json: bool) -> ExitCode {
    let all_ok = checks.iter().all(|c| c.ok || c.optional);
    if json {
        println!("{}", serde_json::json!({"ok": all_ok, "checks": checks}));
    } else {
        for c in checks {
            let mark = match (c.ok, c.optional) {
                (true, _) => "ok  ",
                (false, true) => "--  ",
                (false, false) => "FAIL",
            };
            println!("{mark} {:<18} {}", c.name, c.detail);
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn missing_key_fix(provider: &str) -> String {
    if provider == "anthropic" {
        "set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN); try `nanoclaw demo` meanwhile".into()
    } else {
        "set OPENAI_API_KEY and/or OPENAI_BASE_URL".into()
    }
}

/// Whether the data directory can be made and written: the host writes its database, sockets
/// and group folders there.
fn data_dir_check(home: &std::path::Path) -> Check {
    let probe = home.join(format!(".doctor-probe-{}", std::process::id()));
    let written = nanoclaw_host::config::create_private_dir(home)
        .and_then(|()| std::fs::write(&probe, b"probe"))
        .and_then(|()| std::fs::remove_file(&probe));
    Check {
        name: "data directory",
        ok: written.is_ok(),
        detail: match written {
            Ok(()) => home.display().to_string(),
            Err(e) => format!(
                "{}: cannot create or write it ({e}); make it writable by this user (or remount \
                 the file system read-write), or set NANOCLAW_HOME to a writable directory",
                home.display()
            ),
        },
        optional: false,
    }
}

/// The database can be read and is intact (SQLite's `quick_check`); a missing one is made on
/// first start. Returns the opened store when it is healthy.
fn database_check(db: &std::path::Path) -> (Check, Option<nanoclaw_store::Store>) {
    let fail = |detail: String| Check {
        name: "database",
        ok: false,
        detail,
        optional: false,
    };
    let restore =
        "restore it from a backup (with nanoclaw stopped), or move it aside to start fresh";
    match std::fs::metadata(db) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                Check {
                    name: "database",
                    ok: true,
                    detail: format!("{}: not created yet (made on first start)", db.display()),
                    optional: false,
                },
                None,
            );
        }
        Err(e) => {
            return (
                fail(format!(
                    "{}: cannot read it: {e}; fix its permissions",
                    db.display()
                )),
                None,
            );
        }
        Ok(m) if m.len() == 0 => {
            return (
                fail(
                    nanoclaw_store::StoreError::Truncated {
                        path: db.to_path_buf(),
                    }
                    .to_string(),
                ),
                None,
            );
        }
        Ok(_) => {}
    }
    use nanoclaw_store::rusqlite::{Connection, OpenFlags};
    let checked = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).and_then(|c| {
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut stmt = c.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()
    });
    match checked {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {}
        Ok(rows) => {
            let found: Vec<String> = rows.into_iter().take(3).collect();
            return (
                fail(format!(
                    "{} is damaged ({}); {restore}",
                    db.display(),
                    found.join("; ")
                )),
                None,
            );
        }
        Err(e) => {
            return (
                fail(format!(
                    "{} cannot be read as a database ({e}); {restore}",
                    db.display()
                )),
                None,
            );
        }
    }
    match nanoclaw_host::open_store(db, true) {
        Ok(store) => (
            Check {
                name: "database",
                ok: true,
                detail: format!("{}: intact", db.display()),
                optional: false,
            },
            Some(store),
        ),
        Err(e) => (fail(format!("{e}")), None),
    }
}

/// One cheap authenticated request (the model list) with the configured key: a rejected key
/// fails; a network failure is only a warning (the API may be unreachable just now).
async fn verify_key(upstreams: &ModelUpstreams, provider: &str, in_vault: bool) -> Check {
    let check = |ok: bool, optional: bool, detail: String| Check {
        name: "model credentials",
        ok,
        detail,
        optional,
    };
    let upstream = match provider {
        "anthropic" => upstreams.anthropic.as_ref(),
        _ => upstreams.openai.as_ref(),
    };
    let Some(upstream) = upstream.filter(|_| !in_vault) else {
        return check(
            true,
            false,
            format!("{provider}: key in the vault (the key stays in the host)"),
        );
    };
    match probe_key(provider, upstream).await {
        KeyVerdict::Accepted(detail) => check(true, false, detail),
        KeyVerdict::Rejected(detail) => check(false, false, detail),
        KeyVerdict::Unverified(detail) => check(false, true, detail),
    }
}

/// What the provider said of a key.
pub(crate) enum KeyVerdict {
    Accepted(String),
    /// 401 or 403: the key is wrong.
    Rejected(String),
    /// No answer, or another status: maybe right, maybe not.
    Unverified(String),
}

/// Asks `provider`'s model list with `upstream`'s credential (the cheapest authenticated call).
pub(crate) async fn probe_key(
    provider: &str,
    upstream: &nanoclaw_egress::relay::Upstream,
) -> KeyVerdict {
    use nanoclaw_egress::relay::UpstreamAuth;
    let base = upstream.base_url.trim_end_matches('/');
    let url = if provider == "anthropic" {
        format!("{base}/v1/models")
    } else {
        format!("{base}/models")
    };
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => return KeyVerdict::Unverified(format!("{provider}: key not verified ({e})")),
    };
    let mut request = client.get(&url).header("anthropic-version", "2023-06-01");
    let env_name = match &upstream.auth {
        UpstreamAuth::XApiKey(key) => {
            request = request.header("x-api-key", key);
            "ANTHROPIC_API_KEY"
        }
        UpstreamAuth::Bearer(token) => {
            request = request.bearer_auth(token);
            if provider == "anthropic" {
                "ANTHROPIC_AUTH_TOKEN"
            } else {
                "OPENAI_API_KEY"
            }
        }
        // A base URL without a key: a keyless server, if it answers without one.
        UpstreamAuth::None => "ANTHROPIC_API_KEY",
    };
    let keyless = matches!(upstream.auth, UpstreamAuth::None);
    match request.send().await {
        Ok(r) if r.status().is_success() && keyless => {
            KeyVerdict::Accepted(format!("{provider}: keyless server at {base}"))
        }
        Ok(r) if r.status().is_success() => KeyVerdict::Accepted(format!(
            "{provider}: key accepted by {base} (the key stays in the host)"
        )),
        Ok(r) if keyless && matches!(r.status().as_u16(), 401 | 403) => {
            KeyVerdict::Rejected(format!("{provider}: {base} wants a key ({})", r.status()))
        }
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => KeyVerdict::Rejected(format!(
            "{provider}: {base} rejected the key ({}); set {env_name} to a valid key",
            r.status()
        )),
        Ok(r) => KeyVerdict::Unverified(format!(
            "{provider}: key not verified: {url} answered {}",
            r.status()
        )),
        Err(e) => KeyVerdict::Unverified(format!(
            "{provider}: key not verified, {base} not reachable ({e})"
        )),
    }
}

/// Every group with its own provider has a key for it; else each of its messages fails.
async fn group_providers_check(
    store: &nanoclaw_store::Store,
    default_provider: &str,
    has_key: &dyn Fn(&str) -> bool,
) -> Check {
    let groups = store.list_groups().await.unwrap_or_default();
    let missing: Vec<String> = groups
        .iter()
        .filter_map(|g| {
            let p = g.provider.as_deref().filter(|p| *p != default_provider)?;
            (!has_key(p)).then(|| {
                format!(
                    "group {} uses provider {p} but there is no key for it: {}, or `nanoclaw group \
                     set {} --provider {default_provider}`",
                    g.folder,
                    missing_key_fix(p),
                    g.folder
                )
            })
        })
        .collect();
    Check {
        name: "group providers",
        ok: missing.is_empty(),
        detail: if missing.is_empty() {
            "every group's provider has a key".into()
        } else {
            missing.join("; ")
        },
        optional: false,
    }
}

/// Where the vault's master key comes from, and that it opens the vault. No key yet is normal
/// before the first `nanoclaw vault set`; no key, or another key, while secrets exist fails.
async fn master_key_check(home: &std::path::Path, store: Option<nanoclaw_store::Store>) -> Check {
    let sources = nanoclaw_vault::KeySources::for_home(home);
    let none_yet = "none yet; the first `nanoclaw vault set` makes one (in the OS keyring when \
                    there is one, else a key file)";
    let (ok, detail) = match (sources, store) {
        (Err(e), _) => (false, e.to_string()),
        (Ok(sources), Some(store)) => {
            match nanoclaw_vault::Vault::open_default(store, &sources, false).await {
                Ok(Some(vault)) => (true, format!("from {}", vault.key_origin())),
                Ok(None) => (true, none_yet.into()),
                Err(e) => (false, e.to_string()),
            }
        }
        (Ok(sources), None) => {
            let loaded = tokio::task::spawn_blocking(move || {
                nanoclaw_vault::MasterKey::load(&sources, false).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match loaded {
                Ok(Some(key)) => (true, format!("from {}", key.origin())),
                Ok(None) => (true, none_yet.into()),
                Err(e) => (false, e),
            }
        }
    };
    Check {
        name: "vault master key",
        ok,
        detail,
        optional: false,
    }
}

//! `nanoclaw doctor`: what this machine has and lacks, with fixes.

use std::process::ExitCode;

use nanoclaw_host::config::{Config, Paths};
use nanoclaw_host::relay::ModelUpstreams;
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
    checks.push(Check {
        name: "data directory",
        ok: paths.is_ok(),
        detail: match &paths {
            Ok(p) => p.home.display().to_string(),
            Err(e) => e.to_string(),
        },
        optional: false,
    });
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
    let user = nanoclaw_sandbox::SandboxUser::for_this_host();
    checks.push(Check {
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
    });
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
    // Docker is optional (the native sandbox works without it), so it only fails the check
    // when the config asks for it.
    let wants_docker = config.agents.runtime == "docker";
    let image = &config.agents.docker.image;
    let (docker_ok, docker_detail) = match nanoclaw_sandbox::image::connect().await {
        Err(e) => (false, format!("engine not reachable: {e}")),
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
    checks.push(Check {
        name: "docker image",
        ok: docker_ok,
        detail: docker_detail,
        optional: !wants_docker,
    });
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
    checks.push(Check {
        name: "model credentials",
        ok: upstreams.has(&provider),
        detail: if upstreams.has(&provider) {
            format!("{provider}: configured (the key stays in the host)")
        } else if provider == "anthropic" {
            "set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN); try `nanoclaw demo` meanwhile".into()
        } else {
            "set OPENAI_API_KEY and/or OPENAI_BASE_URL".into()
        },
        optional: false,
    });
    if let Ok(p) = &paths {
        checks.push(master_key_check(&p.home).await);
    }
    let all_ok = checks.iter().all(|c| c.ok || c.optional);
    if json {
        println!("{}", serde_json::json!({"ok": all_ok, "checks": checks}));
    } else {
        for c in &checks {
            let mark = match (c.ok, c.optional) {
                (true, _) => "ok  ",
                (false, true) => "--  ",
                (false, false) => "FAIL",
            };
            println!("{mark} {:<18} {}", c.name, c.detail);
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where the vault's master key comes from. Only a key that is there but unreadable fails: no key yet
/// is normal before the first `nanoclaw vault set`.
async fn master_key_check(home: &std::path::Path) -> Check {
    let sources = nanoclaw_vault::KeySources::for_home(home);
    let loaded = match sources {
        Ok(sources) => tokio::task::spawn_blocking(move || {
            nanoclaw_vault::MasterKey::load(&sources, false).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    let (ok, detail) = match loaded {
        Ok(Some(key)) => (true, format!("from {}", key.origin())),
        Ok(None) => (
            true,
            "none yet; the first `nanoclaw vault set` makes one (in the OS keyring when there is \
             one, else a key file)"
                .into(),
        ),
        Err(e) => (false, e),
    };
    Check {
        name: "vault master key",
        ok,
        detail,
        optional: false,
    }
}

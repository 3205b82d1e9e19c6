//! `nanoclaw setup`: the first-run walk-through, safe to run again — each step checks what is
//! there and does only what is missing or broken (a rejected key, a missing image), so a second
//! run repairs rather than repeats. Steps: data directory and config, database, the model key
//! (verified with a real call, kept in the vault), the sandbox runtime (image built if needed),
//! the service (with `--service`), and where to go for a first channel.

use std::io::IsTerminal;
use std::process::ExitCode;

use nanoclaw_egress::relay::{ModelUpstreams, UpstreamAuth};
use nanoclaw_host::config::{
    Config, DEFAULT_CONFIG_TOML, Paths, create_private_dir, write_private_file,
};
use nanoclaw_vault::ExposeSecret;
use serde::Serialize;

use super::doctor::{KeyVerdict, probe_key};

/// What `nanoclaw setup` was asked for.
pub struct SetupArgs {
    /// Also install and start the service.
    pub service: bool,
    /// Build the agent image when the Docker runtime lacks a current one.
    pub build_image: bool,
    pub json: bool,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// Already right.
    Ok,
    /// Was missing or broken; done now.
    Fixed,
    /// Works, with a caveat.
    Warn,
    /// Left out (not asked for).
    Skipped,
    /// Not working; `detail` says how to fix it.
    Failed,
}

#[derive(Serialize)]
struct Step {
    step: &'static str,
    status: Status,
    detail: String,
}

fn step(step: &'static str, status: Status, detail: impl Into<String>) -> Step {
    Step {
        step,
        status,
        detail: detail.into(),
    }
}

pub async fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let mut steps = Vec::new();

    // Data directory and config: an existing config is the owner's, never overwritten.
    create_private_dir(&paths.home)?;
    let file = paths.config_file();
    if file.exists() {
        steps.push(step(
            "config",
            Status::Ok,
            format!("{} kept", file.display()),
        ));
    } else {
        write_private_file(&file, DEFAULT_CONFIG_TOML.as_bytes())?;
        steps.push(step(
            "config",
            Status::Fixed,
            format!("wrote {} (commented; edit it any time)", file.display()),
        ));
    }
    let config = match Config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            steps.push(step(
                "config",
                Status::Failed,
                format!("{e}; fix the file or move it away and run setup again"),
            ));
            return finish(&steps, args.json);
        }
    };

    let database = paths.database();
    let existed = database.exists();
    match nanoclaw_host::open_store(&database, true) {
        Ok(_) => steps.push(step(
            "database",
            if existed { Status::Ok } else { Status::Fixed },
            format!(
                "{} {}",
                database.display(),
                if existed { "intact" } else { "created" }
            ),
        )),
        Err(e) => steps.push(step(
            "database",
            Status::Failed,
            format!("{e}; see `nanoclaw doctor`"),
        )),
    }

    steps.push(model_key(&config).await);
    steps.push(runtime(&config, &paths, args.build_image).await);

    if args.service {
        let done = super::service::install().await;
        steps.push(match done {
            Ok(code) if code == ExitCode::SUCCESS => step(
                "service",
                Status::Fixed,
                "installed (see above); `nanoclaw service status` tells how it runs",
            ),
            Ok(_) => step("service", Status::Failed, "not installed (see above)"),
            Err(e) => step("service", Status::Failed, e.to_string()),
        });
    } else {
        steps.push(step(
            "service",
            Status::Skipped,
            "run `nanoclaw setup --service` (or `nanoclaw service install`) to keep the host running",
        ));
    }
    steps.push(step(
        "channels",
        Status::Ok,
        "the terminal chat is ready (`nanoclaw chat`); add another with `nanoclaw channel add \
         telegram|discord|slack|whatsapp|…`",
    ));
    finish(&steps, args.json)
}

/// The model key: the vault's, else the environment's (moved into the vault, since a service
/// does not see the shell's environment), else asked for (hidden prompt or stdin). A key the
/// provider rejects is never stored.
async fn model_key(config: &Config) -> Step {
    const NAME: &str = "model key";
    let provider = config.model.provider.as_str();
    let from_env = ModelUpstreams::from_env();
    let env_upstream = match provider {
        "anthropic" => from_env.anthropic,
        _ => from_env.openai,
    };
    let upstream_with =
        |key: &str| nanoclaw_egress::relay::upstream_with_key(provider, env_upstream.as_ref(), key);

    // Already in the vault: check it still works.
    if let Some(vault) = super::vault::open_vault_quietly().await
        && let Ok(secret) = vault.reveal(provider).await
    {
        return match probe_key(provider, &upstream_with(secret.expose_secret())).await {
            KeyVerdict::Accepted(d) => step(NAME, Status::Ok, format!("in the vault; {d}")),
            KeyVerdict::Unverified(d) => step(NAME, Status::Warn, format!("in the vault; {d}")),
            KeyVerdict::Rejected(d) => step(
                NAME,
                Status::Failed,
                format!(
                    "the vault's key was rejected: {d}; replace it with `nanoclaw vault rotate \
                     {provider}` and run setup again"
                ),
            ),
        };
    }

    let (key, origin) = match env_upstream.as_ref().map(|u| &u.auth) {
        Some(UpstreamAuth::XApiKey(k) | UpstreamAuth::Bearer(k)) => (
            nanoclaw_vault::SecretString::from(k.as_str()),
            "your environment",
        ),
        // A base URL alone: a keyless server (a local model) needs nothing kept; one that
        // wants a key is asked for it below.
        Some(UpstreamAuth::None)
            if let Some(upstream) = &env_upstream
                && let KeyVerdict::Accepted(d) = probe_key(provider, upstream).await =>
        {
            return step(NAME, Status::Ok, d);
        }
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "nanoclaw needs your {provider} API key; it is kept encrypted in the vault \
                     and never enters a sandbox."
                );
            }
            match super::vault::read_value(provider) {
                Ok(k) => (k, "what you typed"),
                Err(e) => {
                    return step(
                        NAME,
                        Status::Failed,
                        format!("{e}; run `nanoclaw setup` again with the key"),
                    );
                }
            }
        }
    };
    let verdict = probe_key(provider, &upstream_with(key.expose_secret())).await;
    let (status, said) = match verdict {
        KeyVerdict::Accepted(d) => (Status::Fixed, d),
        KeyVerdict::Unverified(d) => (Status::Warn, d),
        KeyVerdict::Rejected(d) => {
            return step(
                NAME,
                Status::Failed,
                format!("not stored: {d} (from {origin})"),
            );
        }
    };
    let stored = match super::vault::open_vault(true).await {
        Ok(Some(vault)) => vault.set(provider, key).await.map_err(|e| e.to_string()),
        Ok(None) => Err("no master key could be loaded or created".into()),
        Err(e) => Err(e.to_string()),
    };
    match stored {
        Ok(_) => step(
            NAME,
            status,
            format!("{said}; stored from {origin} in the vault as `{provider}`"),
        ),
        Err(e) => step(
            NAME,
            Status::Failed,
            format!("{said}, but the vault could not keep it: {e}"),
        ),
    }
}

/// The sandbox runtime: the one the host would pick, ready; for Docker, the agent image built
/// when it is missing or outdated.
async fn runtime(config: &Config, paths: &Paths, build_image: bool) -> Step {
    const NAME: &str = "runtime";
    let host_id = paths.host_id().unwrap_or_default();
    let runtime = match nanoclaw_host::runtime::select(config, &host_id).await {
        Ok(r) => r,
        Err(why) => {
            return step(
                NAME,
                Status::Failed,
                format!("no sandbox can run here, so no agent can: {why}"),
            );
        }
    };
    match runtime.probe().await {
        Ok(()) => step(NAME, Status::Ok, format!("{} ready", runtime.name())),
        Err(e) if runtime.name() == "docker" && build_image => {
            eprintln!("the agent image is not ready ({e}); building it");
            let built = super::image::build(super::image::BuildArgs {
                tag: super::image::configured_tag(),
                base: nanoclaw_sandbox::image::DEFAULT_BASE.into(),
                minimal: false,
                debootstrap: false,
                containerfile: None,
                mirror: None,
                skills: Vec::new(),
                packages: Vec::new(),
                verbose: false,
            })
            .await;
            match built {
                Ok(_) => match runtime.probe().await {
                    Ok(()) => step(NAME, Status::Fixed, "docker ready (agent image built)"),
                    Err(e) => step(NAME, Status::Failed, e.to_string()),
                },
                Err(e) => step(
                    NAME,
                    Status::Failed,
                    format!("building the agent image failed: {e:#}"),
                ),
            }
        }
        Err(e) => step(NAME, Status::Failed, e.to_string()),
    }
}

fn finish(steps: &[Step], json: bool) -> anyhow::Result<ExitCode> {
    let failed = steps.iter().any(|s| s.status == Status::Failed);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ready": !failed,
                "steps": steps,
            }))?
        );
    } else {
        for s in steps {
            let mark = match s.status {
                Status::Ok => "ok     ",
                Status::Fixed => "done   ",
                Status::Warn => "warn   ",
                Status::Skipped => "skipped",
                Status::Failed => "FAILED ",
            };
            println!("{mark} {:<9} {}", s.step, s.detail);
        }
        if failed {
            println!("\nnot ready: fix what FAILED says, then run `nanoclaw setup` again");
        } else {
            println!("\nready: `nanoclaw chat` to talk to the assistant");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

//! Choosing the sandbox runtime. No usable runtime means no agents: nanoclaw never runs an
//! agent outside a sandbox.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use nanoclaw_sandbox::Runtime;

use crate::config::Config;

/// The runtime the configuration asks for, probed. The error explains how to fix it.
/// `host_id` labels this host's containers.
pub async fn select(config: &Config, host_id: &str) -> Result<Arc<dyn Runtime>, String> {
    match config.agents.runtime.as_str() {
        "docker" => match docker(config, host_id).await {
            Ok(runtime) => Ok(runtime),
            Err(why) => {
                // Docker was asked for explicitly: an engine that is down now may be up in a
                // minute. Messages wait (the chat is told) instead of failing.
                tracing::error!("the Docker engine is not usable yet; will retry: {why}");
                Ok(Arc::new(RetryingRuntime {
                    config: config.clone(),
                    host_id: host_id.to_owned(),
                    inner: tokio::sync::Mutex::new(None),
                }))
            }
        },
        "native" => native().await,
        "apple" => apple().await,
        _ => auto(config, host_id).await,
    }
}

/// Docker when the engine answers and the image is there, else the native sandbox.
async fn auto(config: &Config, host_id: &str) -> Result<Arc<dyn Runtime>, String> {
    let docker_error = match docker(config, host_id).await {
        Ok(runtime) => return Ok(runtime),
        Err(e) => e,
    };
    match native().await {
        Ok(runtime) => {
            tracing::info!("using the native sandbox; Docker is not usable: {docker_error}");
            Ok(runtime)
        }
        Err(native_error) => Err(format!(
            "no sandbox runtime works here. Docker: {docker_error} Native: {native_error}"
        )),
    }
}

async fn docker(config: &Config, host_id: &str) -> Result<Arc<dyn Runtime>, String> {
    let settings = &config.agents.docker;
    let runtime =
        nanoclaw_sandbox::DockerRuntime::connect(nanoclaw_sandbox::docker::DockerConfig {
            socket: (!settings.socket.trim().is_empty())
                .then(|| PathBuf::from(settings.socket.trim())),
            image: settings.image.clone(),
            cpus: (settings.cpus > 0.0).then_some(settings.cpus),
            host_id: host_id.to_owned(),
        })
        .await
        .map_err(|e| e.to_string())?;
    runtime.probe().await.map_err(|e| e.to_string())?;
    // Containers of ours from an earlier run died with it (or lost their host): remove them.
    match runtime.remove_orphans(&HashSet::new()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(containers = n, "removed leftover agent containers"),
        Err(e) => tracing::warn!(error = %e, "could not remove leftover agent containers"),
    }
    Ok(Arc::new(runtime))
}

/// A runtime that is not up yet: every use tries to connect again, and until that works
/// it answers `Unavailable`, which makes the host keep messages for later.
struct RetryingRuntime {
    config: Config,
    host_id: String,
    inner: tokio::sync::Mutex<Option<Arc<dyn Runtime>>>,
}

impl RetryingRuntime {
    async fn get(&self) -> Result<Arc<dyn Runtime>, nanoclaw_sandbox::SandboxError> {
        let mut inner = self.inner.lock().await;
        if let Some(runtime) = inner.as_ref() {
            return Ok(Arc::clone(runtime));
        }
        match docker(&self.config, &self.host_id).await {
            Ok(runtime) => {
                tracing::info!("the Docker engine answers again");
                *inner = Some(Arc::clone(&runtime));
                Ok(runtime)
            }
            Err(reason) => Err(nanoclaw_sandbox::SandboxError::Unavailable {
                runtime: "docker",
                reason,
                fix: "start the Docker engine (or Podman's socket); waiting messages are answered when it is up".into(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Runtime for RetryingRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn probe(&self) -> Result<(), nanoclaw_sandbox::SandboxError> {
        self.get().await?.probe().await
    }

    async fn spawn(
        &self,
        spec: &nanoclaw_sandbox::SandboxSpec,
    ) -> Result<nanoclaw_sandbox::SandboxProcess, nanoclaw_sandbox::SandboxError> {
        self.get().await?.spawn(spec).await
    }

    async fn installed_packages(
        &self,
    ) -> Result<Option<std::collections::BTreeSet<String>>, nanoclaw_sandbox::SandboxError> {
        self.get().await?.installed_packages().await
    }
}

async fn native() -> Result<Arc<dyn Runtime>, String> {
    let runtime = nanoclaw_sandbox::NativeRuntime::detect().map_err(|e| e.to_string())?;
    runtime.probe().await.map_err(|e| e.to_string())?;
    Ok(Arc::new(runtime))
}

async fn apple() -> Result<Arc<dyn Runtime>, String> {
    let runtime = nanoclaw_sandbox::AppleRuntime::detect().map_err(|e| e.to_string())?;
    runtime.probe().await.map_err(|e| e.to_string())?;
    Ok(Arc::new(runtime))
}

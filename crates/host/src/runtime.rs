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
        "docker" => docker(config, host_id).await,
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

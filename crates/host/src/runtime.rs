//! Choosing the sandbox runtime. No usable runtime means no agents: nanoclaw never runs an
//! agent outside a sandbox.

use std::sync::Arc;

use nanoclaw_sandbox::Runtime;

use crate::config::Config;

/// The runtime the configuration asks for, probed. The error explains how to fix it.
pub async fn select(config: &Config) -> Result<Arc<dyn Runtime>, String> {
    match config.agents.runtime.as_str() {
        "auto" | "native" => native().await,
        other => Err(format!(
            "agents.runtime = {other:?} is not supported by this build; use \"auto\" or \"native\""
        )),
    }
}

async fn native() -> Result<Arc<dyn Runtime>, String> {
    let runtime = nanoclaw_sandbox::NativeRuntime::detect().map_err(|e| e.to_string())?;
    runtime.probe().await.map_err(|e| e.to_string())?;
    Ok(Arc::new(runtime))
}

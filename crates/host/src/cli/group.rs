//! `nanoclaw group …`: agent groups and their model settings.

use std::process::ExitCode;

use nanoclaw_host::config::{Config, Paths};
use nanoclaw_store::Store;

fn open() -> anyhow::Result<(Store, Config)> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let config = Config::load(&paths.config_file())?;
    let db = paths.database();
    if !db.exists() {
        anyhow::bail!(
            "no nanoclaw database at {} yet; start nanoclaw once (`nanoclaw chat` or `nanoclaw run`)",
            db.display()
        );
    }
    Ok((Store::open(&db)?, config))
}

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let (store, config) = open()?;
    let groups = store.list_groups().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<20} {:<10} {:<10} model",
        "folder", "name", "trigger", "provider"
    );
    for g in groups {
        println!(
            "{:<16} {:<20} {:<10} {:<10} {}{}",
            g.folder,
            g.name,
            g.trigger,
            g.provider.as_deref().unwrap_or(&config.model.provider),
            g.model.as_deref().unwrap_or(&config.model.model),
            if g.is_main { "  (main)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn set(
    folder: String,
    provider: Option<String>,
    model: Option<String>,
    trigger: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (store, _) = open()?;
    let Some(mut group) = store.group_by_folder(folder.as_str()).await? else {
        anyhow::bail!("no agent group with folder {folder:?}; see `nanoclaw group list`");
    };
    if let Some(p) = provider {
        if !["anthropic", "openai"].contains(&p.as_str()) {
            anyhow::bail!("provider {p:?} is not known; use anthropic or openai");
        }
        group.provider = Some(p);
    }
    if let Some(m) = model {
        if m.trim().is_empty() {
            anyhow::bail!("the model name must not be empty");
        }
        group.model = Some(m);
    }
    if let Some(t) = trigger {
        if t.trim().is_empty() {
            anyhow::bail!("the trigger must not be empty");
        }
        group.trigger = t;
    }
    store.update_group(&group).await?;
    println!(
        "updated {}: the group's next agent uses these settings",
        group.folder
    );
    Ok(ExitCode::SUCCESS)
}

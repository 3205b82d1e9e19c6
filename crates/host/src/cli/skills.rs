//! `nanoclaw skills …`: list, show, check, install, enable, disable, approve and graph the
//! skills of a group. Like `tasks`, it works on the database directly: a running host reads a
//! group's skills before each turn, so a change applies on the group's next turn.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use nanoclaw_host::config::{Paths, create_private_dir};
use nanoclaw_host::skills;
use nanoclaw_host::skills::manage::SkillAdmin;
use nanoclaw_skills::{Catalog, Format, GitSource};
use nanoclaw_store::{Group, GroupSkill, GroupSkillState, Store};
use serde_json::json;

struct Ctx {
    paths: Paths,
    store: Store,
    group: Group,
    catalog: Catalog,
    rows: Vec<GroupSkill>,
}

async fn open(folder: Option<String>) -> anyhow::Result<Ctx> {
    let (paths, _, store) = super::open_existing()?;
    let group = super::group_or_main(&store, folder).await?;
    let catalog = skills::load_catalog_blocking(&paths, &group.folder)
        .await
        .map_err(anyhow::Error::msg)?;
    let rows = store.group_skills(group.id.as_str()).await?;
    Ok(Ctx {
        paths,
        store,
        group,
        catalog,
        rows,
    })
}

fn state_of(ctx: &Ctx, name: &str) -> String {
    let row = ctx.rows.iter().find(|r| r.skill == name);
    let broken = ctx.catalog.get(name).is_some_and(|e| e.error().is_some());
    match row {
        Some(r) if r.state == GroupSkillState::Paused => "paused".into(),
        Some(_) if broken => "enabled, broken".into(),
        Some(_) => "enabled".into(),
        None if broken => "broken".into(),
        None => "disabled".into(),
    }
}

/// `nanoclaw skills list`.
pub async fn list(folder: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = open(folder).await?;
    let mut items = Vec::new();
    for e in ctx.catalog.entries() {
        let skill = e.ok();
        items.push(json!({
            "name": e.name,
            "state": state_of(&ctx, &e.name),
            "source": e.source.to_string(),
            "version": skill.and_then(|s| s.version()).map(ToString::to_string),
            "description": skill.map(|s| s.frontmatter.description.clone()),
            "error": e.error().map(ToString::to_string),
        }));
    }
    // Paused skills that are gone from every source are still the group's.
    for r in ctx
        .rows
        .iter()
        .filter(|r| ctx.catalog.get(&r.skill).is_none())
    {
        items.push(json!({
            "name": r.skill,
            "state": "paused",
            "source": r.source,
            "version": null,
            "description": null,
            "error": r.paused_reason.clone().unwrap_or_else(|| "no longer installed".into()),
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"group": ctx.group.folder, "skills": items}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if items.is_empty() {
        println!(
            "no skills installed; add one with `nanoclaw skills install PATH` (into {})",
            skills::user_dir(&ctx.paths).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<16} {:<10} {:<14} description",
        "name", "state", "version", "source"
    );
    for i in &items {
        let text = i["description"]
            .as_str()
            .or(i["error"].as_str())
            .unwrap_or("");
        let text: String = text.chars().take(70).collect();
        println!(
            "{:<24} {:<16} {:<10} {:<14} {text}",
            i["name"].as_str().unwrap_or(""),
            i["state"].as_str().unwrap_or(""),
            i["version"].as_str().unwrap_or("-"),
            i["source"].as_str().unwrap_or(""),
        );
    }
    println!("(group {})", ctx.group.folder);
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw skills show NAME`.
pub async fn show(name: String, folder: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = open(folder).await?;
    let row = ctx.rows.iter().find(|r| r.skill == name);
    let Some(entry) = ctx.catalog.get(&name) else {
        if let Some(r) = row {
            println!(
                "{name}: paused for group {} ({}); it is no longer installed. Disable it with \
                 `nanoclaw skills disable {name} --group {}`",
                ctx.group.folder,
                r.paused_reason.as_deref().unwrap_or("gone"),
                ctx.group.folder
            );
            return Ok(ExitCode::FAILURE);
        }
        anyhow::bail!("no skill {name:?}; see `nanoclaw skills list`");
    };
    let (egress, secrets) = match row {
        Some(_) => {
            ctx.store
                .group_skill_grants(ctx.group.id.as_str(), name.as_str())
                .await?
        }
        None => (Vec::new(), Vec::new()),
    };
    let skill = entry.ok();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "name": entry.name,
                "group": ctx.group.folder,
                "state": state_of(&ctx, &name),
                "source": entry.source.to_string(),
                "dir": entry.dir,
                "shadowed": entry.shadowed.iter().map(|s| json!({"source": s.source.to_string(), "dir": s.dir})).collect::<Vec<_>>(),
                "version": skill.and_then(|s| s.version()).map(ToString::to_string),
                "description": skill.map(|s| s.frontmatter.description.clone()),
                "content_hash": skill.map(|s| s.content_hash().to_owned()),
                "approved_hash": row.map(|r| r.content_hash.clone()),
                "paused_reason": row.and_then(|r| r.paused_reason.clone()),
                "offers": skill.map(skills::describe_grants).unwrap_or_default(),
                "granted_egress": egress,
                "granted_secrets": secrets,
                "warnings": skill.map(|s| s.warnings()).unwrap_or_default(),
                "error": entry.error().map(ToString::to_string),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} ({})", entry.name, state_of(&ctx, &name));
    println!("  group:   {}", ctx.group.folder);
    println!("  source:  {} ({})", entry.source, entry.dir.display());
    for s in &entry.shadowed {
        println!("  overrides: {} ({})", s.source, s.dir.display());
    }
    if let Some(e) = entry.error() {
        println!("  broken:  {e}");
    }
    if let Some(s) = skill {
        if let Some(v) = s.version() {
            println!("  version: {v}");
        }
        println!("  hash:    {}", s.content_hash());
        println!("  about:   {}", s.frontmatter.description);
        for (dep, range) in &s.manifest.requires {
            println!("  requires: {dep} {range}");
        }
        for line in skills::describe_grants(s) {
            println!("  - {line}");
        }
        for w in s.warnings() {
            println!("  warning: {w}");
        }
    }
    if let Some(r) = row {
        println!("  approved hash: {}", r.content_hash);
        if let Some(why) = &r.paused_reason {
            println!(
                "  PAUSED: {why}; review it, then `nanoclaw skills approve {name} --group {}`",
                ctx.group.folder
            );
        }
        for e in &egress {
            println!("  granted: {} ({})", e.pattern, e.methods.join(", "));
        }
        for s in &secrets {
            println!("  granted secret: {} on {}", s.secret_name, s.host);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw skills check`: every skill loads, and every enabled one still has the approved
/// hash. Exit 1 when something is wrong.
pub async fn check(folder: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = open(folder).await?;
    let mut problems: Vec<String> = ctx
        .catalog
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    for e in ctx.catalog.broken() {
        if let Some(err) = e.error() {
            problems.push(format!("{}: broken: {err}", e.name));
        }
    }
    let (_, pauses) = skills::check(&ctx.catalog, &ctx.rows);
    for p in &pauses {
        problems.push(format!(
            "{}: enabled for group {} but {}; it will be paused at the group's next turn \
             (`nanoclaw skills approve {} --group {}` after review)",
            p.skill, ctx.group.folder, p.reason, p.skill, ctx.group.folder
        ));
    }
    let warnings: Vec<String> = ctx
        .catalog
        .entries()
        .filter_map(|e| e.ok())
        .flat_map(|s| s.warnings())
        .collect();
    let ok = ctx.catalog.entries().count() - ctx.catalog.broken().count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "group": ctx.group.folder,
                "ok": ok,
                "problems": problems,
                "warnings": warnings,
            }))?
        );
    } else {
        for w in &warnings {
            println!("warning: {w}");
        }
        for p in &problems {
            println!("problem: {p}");
        }
        println!(
            "{ok} skill(s) load; {} problem(s) (group {})",
            problems.len(),
            ctx.group.folder
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where `nanoclaw skills install` takes a skill from.
pub struct InstallFrom {
    pub source: String,
    pub sha256: Option<String>,
    pub reference: Option<String>,
    pub commit: Option<String>,
    pub subdir: Option<PathBuf>,
}

/// `nanoclaw skills install SOURCE`: a folder, a `.tar.gz` with its SHA-256, or a git
/// repository at a branch or tag; into the user's skills folder, or a group's with --group.
pub async fn install(
    from: InstallFrom,
    folder: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (paths, _, store) = super::open_existing()?;
    let dest = match &folder {
        Some(f) => {
            let g = super::group_or_main(&store, Some(f.clone())).await?;
            skills::group_dir(&paths, &g.folder)
        }
        None => skills::user_dir(&paths),
    };
    if let Some(parent) = dest.parent() {
        create_private_dir(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    create_private_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let local = PathBuf::from(&from.source);
    let dest2 = dest.clone();
    let installed = tokio::task::spawn_blocking(move || {
        if let Some(reference) = from.reference {
            nanoclaw_skills::install_from_git(
                &GitSource {
                    url: from.source,
                    reference,
                    commit: from.commit,
                    subdir: from.subdir,
                },
                &dest2,
            )
            .map_err(|e| e.to_string())
        } else if local.is_dir() {
            nanoclaw_skills::install_from_dir(&local, &dest2).map_err(|e| e.to_string())
        } else if local.is_file() {
            let Some(sha) = from.sha256 else {
                return Err(format!(
                    "{} is an archive: give its SHA-256 with --sha256 (check it against what \
                     its author published)",
                    local.display()
                ));
            };
            nanoclaw_skills::install_from_archive(&local, &sha, &dest2).map_err(|e| e.to_string())
        } else {
            Err(format!(
                "{} is not a folder or an archive here; for a git repository give --ref \
                 BRANCH-OR-TAG (and --commit to pin it)",
                from.source
            ))
        }
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    let name = installed.name().to_owned();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "name": name,
                "dir": installed.dir,
                "version": installed.version().map(ToString::to_string),
                "content_hash": installed.content_hash(),
            }))?
        );
    } else {
        println!(
            "installed {name}{} into {} (hash {})",
            installed
                .version()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            dest.display(),
            installed.content_hash()
        );
        for line in skills::describe_grants(&installed) {
            println!("  - {line}");
        }
        println!(
            "enable it with `nanoclaw skills enable {name}{}`",
            folder.map(|f| format!(" --group {f}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The task scheduler skills' schedules are created with (a running host is woken after).
fn scheduler(
    config: &nanoclaw_host::config::Config,
    store: &Store,
) -> nanoclaw_host::tasks::Scheduler {
    nanoclaw_host::tasks::Scheduler::new(
        store.clone(),
        std::sync::Arc::new(nanoclaw_host::clock::SystemClock),
        config,
    )
}

/// What `enable`, `disable` and `approve` work on: the group and the host's parts.
struct Admin {
    paths: Paths,
    store: Store,
    tasks: nanoclaw_host::tasks::Scheduler,
    /// The runtime the host would run agents in: skills' declared packages are checked
    /// against it. None usable: nothing runs, so nothing to check against (said in the output).
    runtime: Option<std::sync::Arc<dyn nanoclaw_sandbox::Runtime>>,
    group: Group,
}

impl Admin {
    async fn open(folder: Option<String>, check_packages: bool) -> anyhow::Result<Admin> {
        let (paths, config, store) = super::open_existing()?;
        let group = super::group_or_main(&store, folder).await?;
        let tasks = scheduler(&config, &store);
        let runtime = if check_packages {
            nanoclaw_host::runtime::select(&config, &paths.host_id().unwrap_or_default())
                .await
                .ok()
        } else {
            None
        };
        Ok(Admin {
            paths,
            store,
            tasks,
            runtime,
            group,
        })
    }

    fn skills(&self) -> SkillAdmin<'_> {
        SkillAdmin {
            store: &self.store,
            paths: &self.paths,
            tasks: &self.tasks,
            runtime: self.runtime.as_deref(),
            by: "cli".into(),
        }
    }
}

/// Prints what was done: as JSON, or the owner-facing summary.
fn report(done: &impl serde::Serialize, summary: String, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(done)?);
    } else {
        print!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw skills enable NAME…`: the skills and what they require, their grants recorded for
/// this group only, their hashes approved.
pub async fn enable(
    names: Vec<String>,
    folder: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let admin = Admin::open(folder, true).await?;
    let done = admin
        .skills()
        .enable(&admin.group, &names)
        .await
        .map_err(anyhow::Error::msg)?;
    if !done.scheduled.is_empty() {
        wake_host(&admin.paths).await;
    }
    report(&done, done.summary(), json)
}

/// `nanoclaw skills disable NAME…`: removes exactly the grants the skills made for this group.
pub async fn disable(
    names: Vec<String>,
    folder: Option<String>,
    with_dependents: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let admin = Admin::open(folder, false).await?;
    let done = admin
        .skills()
        .disable(&admin.group, &names, with_dependents)
        .await
        .map_err(anyhow::Error::msg)?;
    if !done.cancelled_tasks.is_empty() {
        wake_host(&admin.paths).await;
    }
    report(&done, done.summary(), json)
}

/// `nanoclaw skills approve NAME`: records the skill's current hash (and its manifest's grants)
/// after the owner reviewed a change; a paused skill resumes on the group's next turn.
pub async fn approve(name: String, folder: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let admin = Admin::open(folder, true).await?;
    let done = admin
        .skills()
        .approve(&admin.group, &name)
        .await
        .map_err(anyhow::Error::msg)?;
    report(&done, done.summary(), json)
}

/// `nanoclaw skills graph`.
pub async fn graph(folder: Option<String>, format: String) -> anyhow::Result<ExitCode> {
    let format = match format.as_str() {
        "text" => Format::Text,
        "dot" => Format::Dot,
        "mermaid" => Format::Mermaid,
        "svg" => Format::Svg,
        other => anyhow::bail!("format {other:?} is not known; use text, dot, mermaid or svg"),
    };
    let (paths, _, store) = super::open_existing()?;
    let group = super::group_or_main(&store, folder).await?;
    let text = skills::chat::graph_text(&store, &paths, &group.id, &group.folder, format)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Tells a running host to look at its tasks again; nothing when none runs.
async fn wake_host(paths: &Paths) {
    if let Ok(mut client) =
        nanoclaw_host::channel::terminal::TerminalClient::connect(&paths.terminal_socket()).await
    {
        let _ = client
            .show(nanoclaw_host::channel::terminal::Scope::Own)
            .await;
        let _ = client.wake().await;
    }
}

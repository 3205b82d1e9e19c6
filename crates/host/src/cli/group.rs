//! `nanoclaw group …`: agent groups and their model settings.

use std::process::ExitCode;

use nanoclaw_host::config::{Config, Paths};
use nanoclaw_store::Store;

fn open() -> anyhow::Result<(Store, Config)> {
    let (_, config, store) = super::open_existing()?;
    Ok((store, config))
}

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let (store, config) = open()?;
    let groups = store.list_groups().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<20} {:<10} {:<20} {:<10} model",
        "folder", "name", "trigger", "time zone", "provider"
    );
    let host_zone = nanoclaw_host::host_zone(&config);
    for g in groups {
        println!(
            "{:<16} {:<20} {:<10} {:<20} {:<10} {}{}",
            g.folder,
            g.name,
            g.trigger,
            g.timezone.as_deref().unwrap_or(host_zone.name()),
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
    timezone: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (store, _) = open()?;
    let Some(mut group) = store.group_by_folder(folder.as_str()).await? else {
        anyhow::bail!("no agent group with folder {folder:?}; see `nanoclaw group list`");
    };
    let settings = nanoclaw_host::group_settings::GroupSettings {
        provider,
        model,
        trigger,
        timezone,
    };
    let changes = settings.apply(&mut group).map_err(anyhow::Error::msg)?;
    if changes.is_empty() {
        println!("{}: nothing changed", group.folder);
        return Ok(ExitCode::SUCCESS);
    }
    store.update_group(&group).await?;
    let listed: Vec<String> = changes.iter().map(ToString::to_string).collect();
    println!(
        "updated {}: {}; the group's next turn uses them (existing scheduled tasks keep their zone)",
        group.folder,
        listed.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw group mount add FOLDER HOST_PATH [--name NAME] [--rw]`: checked against the allowlist
/// now, and again at every spawn.
pub async fn mount_add(
    folder: String,
    host_path: std::path::PathBuf,
    name: Option<String>,
    rw: bool,
) -> anyhow::Result<ExitCode> {
    use nanoclaw_host::mounts::MountPolicy;
    use nanoclaw_store::{GroupMount, NewGroupMount};

    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    let Some(given) = host_path.to_str() else {
        anyhow::bail!(
            "{} is not valid UTF-8; mount a folder whose path is",
            host_path.display()
        );
    };
    // Stored as given, but made absolute: the daemon's working directory is not the caller's.
    let stored = if given.starts_with('/') || given == "~" || given.starts_with("~/") {
        given.to_owned()
    } else {
        std::env::current_dir()?.join(given).display().to_string()
    };
    let name = match name {
        Some(n) => n,
        None => {
            let resolved = std::fs::canonicalize(expand_home(&stored)).unwrap_or_default();
            let base = resolved
                .file_name()
                .or_else(|| std::path::Path::new(&stored).file_name())
                .map(|s| default_mount_name(&s.to_string_lossy()))
                .unwrap_or_default();
            if nanoclaw_store::validate_mount_name(&base).is_err() {
                anyhow::bail!(
                    "cannot name the mount after {base:?}; give a name with --name (letters, digits, '_', '.', '-')"
                );
            }
            base
        }
    };
    let policy = MountPolicy::load()?;
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let request = GroupMount {
        group_id: group.id.clone(),
        name: name.clone(),
        host_path: stored.clone(),
        read_write: rw,
        created_at: 0,
    };
    // The check scans the folder on disk: off the async runtime's workers.
    let checked = {
        let (group, home) = (group.clone(), paths.home.clone());
        tokio::task::spawn_blocking(move || {
            // Only its text is shown.
            policy
                .check(&group, &request, &home)
                .map_err(|rejection| rejection.to_string())
        })
        .await?
    };
    let approved = match checked {
        Ok(a) => a,
        Err(rejection) => anyhow::bail!("not added: {rejection}"),
    };
    store
        .add_group_mount(NewGroupMount {
            group_id: group.id.clone(),
            name: name.clone(),
            host_path: stored,
            read_write: rw,
        })
        .await
        .map_err(|e| match e {
            nanoclaw_store::StoreError::Invalid(msg) => {
                anyhow::anyhow!("{msg} (`nanoclaw group mount rm {} {name}`)", group.folder)
            }
            other => other.into(),
        })?;
    println!(
        "added {name} to {}: {} at {} ({}); the group's next agent sees it",
        group.folder,
        approved.host_path.display(),
        approved.sandbox_path.display(),
        if approved.writable {
            "read-write"
        } else {
            "read-only"
        }
    );
    for note in &approved.notes {
        println!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw group mount rm FOLDER NAME`.
pub async fn mount_rm(folder: String, name: String) -> anyhow::Result<ExitCode> {
    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    if !store.remove_group_mount(&group.id, &name).await? {
        anyhow::bail!(
            "{} has no mount named {name:?}; see `nanoclaw group mount list {}`",
            group.folder,
            group.folder
        );
    }
    println!(
        "removed {name} from {}; agents started from now on no longer see it",
        group.folder
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw group mount list FOLDER [--json]`: each request with what the allowlist says today.
pub async fn mount_list(folder: String, json: bool) -> anyhow::Result<ExitCode> {
    use nanoclaw_host::mounts::MountPolicy;

    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let policy = match MountPolicy::load() {
        Ok(p) => p,
        Err(e) => MountPolicy::unusable(
            nanoclaw_host::mounts::allowlist_path().unwrap_or_default(),
            e.to_string(),
        ),
    };
    let mounts = store.group_mounts(&group.id).await?;
    // Each check scans a folder on disk: off the async runtime's workers.
    let verdicts = {
        let (group, home, mounts) = (group.clone(), paths.home.clone(), mounts.clone());
        tokio::task::spawn_blocking(move || {
            mounts
                .iter()
                .map(|m| {
                    // Only the refusal's text is shown.
                    policy.check(&group, m, &home).map_err(|r| r.to_string())
                })
                .collect::<Vec<_>>()
        })
        .await?
    };
    let mut rows = Vec::new();
    for (m, verdict) in mounts.iter().zip(verdicts) {
        let row = match verdict {
            Ok(a) => serde_json::json!({
                "name": m.name,
                "host_path": m.host_path,
                "wants_rw": m.read_write,
                "verdict": "ok",
                "resolved": a.host_path,
                "sandbox_path": a.sandbox_path,
                "writable": a.writable,
                "notes": a.notes,
            }),
            Err(r) => serde_json::json!({
                "name": m.name,
                "host_path": m.host_path,
                "wants_rw": m.read_write,
                "verdict": "rejected",
                "reason": r,
            }),
        };
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "{} has no extra mounts; add one with `nanoclaw group mount add {} PATH`",
            group.folder, group.folder
        );
        return Ok(ExitCode::SUCCESS);
    }
    for row in &rows {
        let s = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
        if row["verdict"] == "ok" {
            let mode = if row["writable"] == true { "rw" } else { "ro" };
            println!(
                "{:<16} {mode}  {} -> {}",
                s("name"),
                s("resolved"),
                s("sandbox_path")
            );
            for note in row["notes"].as_array().into_iter().flatten() {
                println!("{:<16}     note: {}", "", note.as_str().unwrap_or_default());
            }
        } else {
            println!("{:<16} REFUSED  {}", s("name"), s("reason"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn group_or_bail(store: &Store, folder: &str) -> anyhow::Result<nanoclaw_store::Group> {
    store.group_by_folder(folder).await?.ok_or_else(|| {
        anyhow::anyhow!("no agent group with folder {folder:?}; see `nanoclaw group list`")
    })
}

/// `~/x` with the caller's home; used only to pick a default mount name.
fn expand_home(path: &str) -> std::path::PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => {
            std::path::PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => std::path::PathBuf::from(path),
    }
}

/// A folder's name made into a valid mount name: other characters become '-', leading
/// non-alphanumerics and runs of '.' go (".config" → "config", "My Files" → "My-Files").
fn default_mount_name(base: &str) -> String {
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    name.chars().take(64).collect()
}

/// `nanoclaw group egress allow|deny FOLDER PATTERN`: the pattern is checked and normalized
/// first; one action per pattern (allowing a denied pattern replaces the deny).
pub async fn egress_set(
    folder: String,
    pattern: String,
    action: nanoclaw_store::EgressAction,
) -> anyhow::Result<ExitCode> {
    use nanoclaw_egress::DomainPattern;
    let pattern = DomainPattern::parse(&pattern)?.to_string();
    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    store.set_egress_rule(&group.id, &pattern, action).await?;
    let what = match action {
        nanoclaw_store::EgressAction::Allow => "may now reach",
        nanoclaw_store::EgressAction::Deny => "may no longer reach",
    };
    println!(
        "{} {what} {pattern} (running agents included, within a second)",
        group.folder
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw group egress rm FOLDER PATTERN`.
pub async fn egress_rm(folder: String, pattern: String) -> anyhow::Result<ExitCode> {
    use nanoclaw_egress::DomainPattern;
    // Accept the pattern as typed or as stored.
    let normalized = DomainPattern::parse(&pattern)
        .map(|p| p.to_string())
        .unwrap_or(pattern.clone());
    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    if !store.remove_egress_rule(&group.id, &normalized).await? {
        anyhow::bail!(
            "{} has no egress rule for {pattern:?}; see `nanoclaw group egress list {}`",
            group.folder,
            group.folder
        );
    }
    println!(
        "removed the egress rule for {normalized} from {}",
        group.folder
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw group egress list FOLDER [--json]`.
pub async fn egress_list(folder: String, json: bool) -> anyhow::Result<ExitCode> {
    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    let rules = store.egress_rules(&group.id).await?;
    let settings = store.egress_settings(&group.id).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "group": group.folder,
                "rules": rules,
                "methods": settings.methods,
                "ports": settings.ports.clone().unwrap_or_else(|| nanoclaw_egress::DEFAULT_PORTS.to_vec()),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if rules.is_empty() {
        println!(
            "{} may reach no host (deny by default); allow one with `nanoclaw group egress allow {} api.example.com`",
            group.folder, group.folder
        );
    }
    for r in &rules {
        println!("{:<6} {}", r.action.as_str(), r.pattern);
    }
    let methods = settings
        .methods
        .map(|m| m.join(", "))
        .unwrap_or_else(|| "all".into());
    let ports = settings
        .ports
        .unwrap_or_else(|| nanoclaw_egress::DEFAULT_PORTS.to_vec())
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    println!("methods: {methods}\nports:   {ports}");
    println!(
        "always refused: loopback, private, link-local, CGNAT, unique-local, multicast and cloud-metadata addresses"
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw group egress methods FOLDER GET,HEAD|all`.
pub async fn egress_methods(folder: String, list: String) -> anyhow::Result<ExitCode> {
    let methods = if list.trim().eq_ignore_ascii_case("all") {
        None
    } else {
        let mut out = Vec::new();
        for m in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let m = m.to_ascii_uppercase();
            if http::Method::from_bytes(m.as_bytes()).is_err() || m == "CONNECT" {
                anyhow::bail!("{m:?} is not an HTTP method a group can be limited to");
            }
            out.push(m);
        }
        if out.is_empty() {
            anyhow::bail!("give methods like GET,HEAD, or `all`");
        }
        Some(out)
    };
    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    let mut settings = store.egress_settings(&group.id).await?;
    settings.methods = methods;
    store
        .set_egress_settings(&group.id, settings.clone())
        .await?;
    println!(
        "{} may use {} (HTTPS tunnels need every method until TLS inspection exists)",
        group.folder,
        settings
            .methods
            .map(|m| m.join(", "))
            .unwrap_or_else(|| "every method".into())
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw group egress ports FOLDER 80,443,8443|default`.
pub async fn egress_ports(folder: String, list: String) -> anyhow::Result<ExitCode> {
    let ports = if list.trim().eq_ignore_ascii_case("default") {
        None
    } else {
        let mut out = Vec::new();
        for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                _ => anyhow::bail!("{p:?} is not a port number (1-65535)"),
            }
        }
        if out.is_empty() {
            anyhow::bail!("give ports like 80,443, or `default`");
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    };
    let (store, _) = open()?;
    let group = group_or_bail(&store, &folder).await?;
    let mut settings = store.egress_settings(&group.id).await?;
    settings.ports = ports;
    store
        .set_egress_settings(&group.id, settings.clone())
        .await?;
    let shown = settings
        .ports
        .unwrap_or_else(|| nanoclaw_egress::DEFAULT_PORTS.to_vec())
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    println!("{} may reach ports {shown}", group.folder);
    Ok(ExitCode::SUCCESS)
}

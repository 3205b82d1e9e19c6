//! `nanoclaw channel …`: the chat platforms this build has, adding one (tokens into the
//! vault by hidden prompt or stdin, a test call, the first chat paired), their live health,
//! restarting one, removing one.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

use nanoclaw_host::channel::platforms::Backing;
use nanoclaw_host::channel::terminal::{ChannelReport, ClientLine, ServerLine, TerminalClient};
use nanoclaw_host::channel::{self, ChannelRegistration};
use nanoclaw_host::config::{Config, Paths, write_private_file};
use nanoclaw_vault::SecretString;
use secrecy::ExposeSecret;

/// How long a pairing code from `channel add` stays valid.
const PAIRING_MINUTES: i64 = 15;

pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let config = Config::load(&paths.config_file())?;
    let secrets = match super::vault::open_vault_quietly().await {
        Some(vault) => vault.list().await?.into_iter().map(|s| s.name).collect(),
        None => Vec::new(),
    };
    let rows: Vec<serde_json::Value> = channel::registrations()
        .iter()
        .map(|r| {
            let enabled = config
                .channels
                .enabled_platforms()
                .any(|(n, _)| n == r.name);
            let settings = config
                .channels
                .platforms
                .get(r.name)
                .cloned()
                .unwrap_or_default();
            // Optional secrets (an IRC server without a password) are never missing.
            let mut required: Vec<String> = r
                .secrets_for(&settings)
                .iter()
                .filter(|s| !s.optional)
                .map(|s| s.name.to_string())
                .collect();
            if let Some(named) = r.settings_secrets {
                required.extend(named(&settings));
            }
            let missing: Vec<String> = required
                .into_iter()
                .filter(|n| !secrets.iter().any(|have| have == n))
                .collect();
            serde_json::json!({
                "name": r.name,
                "summary": r.summary,
                "enabled": enabled,
                "missing_secrets": missing,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<9} {:<24} summary",
        "channel", "enabled", "secrets"
    );
    println!(
        "{:<10} {:<9} {:<24} the owner's terminal (`nanoclaw chat`)",
        "terminal", config.channels.terminal.enabled, "-"
    );
    for row in &rows {
        let missing = row["missing_secrets"].as_array().map_or(0, Vec::len);
        println!(
            "{:<10} {:<9} {:<24} {}",
            row["name"].as_str().unwrap_or_default(),
            row["enabled"],
            if missing == 0 {
                "set".to_string()
            } else {
                format!("{missing} missing")
            },
            row["summary"].as_str().unwrap_or_default()
        );
    }
    if rows.is_empty() {
        println!("(this build has no platform channels; see the cargo features in README.md)");
    }
    Ok(ExitCode::SUCCESS)
}

fn registration(name: &str) -> anyhow::Result<ChannelRegistration> {
    channel::registration(name).ok_or_else(|| {
        anyhow::anyhow!(
            "this build has no channel called {name:?}; known: {}",
            channel::known_names().join(", ")
        )
    })
}

/// `nanoclaw channel add NAME`.
pub async fn add(name: String, settings: Vec<String>, verify: bool) -> anyhow::Result<ExitCode> {
    let registration = registration(&name)?;
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let pairs = parse_settings(&settings)?;
    // Tokens first: nothing is written to the config until they are in the vault.
    let vault = super::vault::open_vault(true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the vault could not be opened"))?;
    let mut stdin_lines =
        (!std::io::stdin().is_terminal()).then(|| std::io::stdin().lock().lines());
    let secrets = registration.secrets_for(&planned_settings(&paths, &name, &pairs));
    for spec in secrets {
        let value = match stdin_lines.as_mut() {
            Some(lines) => match lines.next() {
                Some(line) => SecretString::from(line?.trim_end_matches('\r').to_owned()),
                // An optional secret may be left out at the end of the input.
                None if spec.optional => SecretString::from(String::new()),
                None => anyhow::bail!(
                    "stdin ended before {} ({}); give one secret per line, in this order: {}",
                    spec.name,
                    spec.prompt,
                    secrets
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            None => SecretString::from(rpassword::prompt_password(format!(
                "{} ({}; not shown): ",
                spec.prompt, spec.name
            ))?),
        };
        // An optional secret left empty means "none": nothing is stored (the vault refuses
        // empty values), and a value stored earlier stays.
        if spec.optional && value.expose_secret().is_empty() {
            eprintln!("{} left empty: none set", spec.name);
            continue;
        }
        // Re-running `channel add` (a wrong token, a new one) replaces the value.
        let exists = vault.list().await?.iter().any(|s| s.name == spec.name);
        if exists {
            vault.rotate(spec.name, value).await?;
            eprintln!("replaced {} in the vault", spec.name);
        } else {
            vault.set(spec.name, value).await?;
            eprintln!("stored {} in the vault", spec.name);
        }
    }
    let file = paths.config_file();
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| nanoclaw_host::config::DEFAULT_CONFIG_TOML.to_owned());
    let text = enable_in_config(&text, &name, true, &pairs)?;
    // Refuse to write a config the host would not load.
    let parsed: Config = toml::from_str(&text)?;
    drop(parsed);
    write_private_file(&file, text.as_bytes())?;
    eprintln!("enabled [channels.{name}] in {}", file.display());
    let config = Config::load(&file)?;
    if verify {
        let store = nanoclaw_host::open_store(&paths.database(), false)?;
        let backing = Backing {
            store: store.clone(),
            vault: Some(vault),
            paths: paths.clone(),
            assistant_name: config.assistant_name.clone(),
        };
        let table = config
            .channels
            .platforms
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let built = backing.build(&registration, table).await?;
        // Channels that log in as a device of the owner's account (WhatsApp linked mode)
        // show a QR or pairing code here and wait, within their own time limit.
        let show = |text: &str| eprintln!("{text}");
        match built.link(&show).await {
            Ok(Some(who)) => eprintln!("{name}: linked as {who}"),
            Ok(None) => {}
            Err(e) => anyhow::bail!(
                "{name}: linking failed: {e}. Run `nanoclaw channel add {name}` again to retry."
            ),
        }
        match tokio::time::timeout(Duration::from_secs(30), built.verify()).await {
            Ok(Ok(who)) => eprintln!("{name}: connected as {who}"),
            Ok(Err(e)) => anyhow::bail!(
                "{name}: the test call failed: {e}. Check the token and run `nanoclaw channel add {name}` again."
            ),
            Err(_) => anyhow::bail!(
                "{name}: the test call got no answer in 30 s; check the network or api_base"
            ),
        }
        if registration.settings_secrets.is_some() {
            // Its chats come from its settings (one per item), not from pairing.
            println!(
                "{name}: its chats come from its config; add them with `nanoclaw {name} add` (see docs/CHANNELS.md)"
            );
            return finish_add(&paths, &name).await;
        }
        let code = pairing_code();
        nanoclaw_host::host::ensure_main_wiring(&store, &config).await?;
        let main = store
            .main_group()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no main group; run `nanoclaw doctor`"))?;
        let expires = nanoclaw_host::now_ms() + PAIRING_MINUTES * 60_000;
        store
            .create_pairing_code(code.clone(), name.clone(), main.id, expires)
            .await?;
        println!(
            "To wire your first chat: send {code} to the bot from that chat (in a group, mention the bot \
             with it) within {PAIRING_MINUTES} minutes. Other chats ask you in the main chat first \
             (`unknown_chats` in [channels.{name}])."
        );
    }
    finish_add(&paths, &name).await
}

/// Restarts channel `name` in the running host after a change, and says what happened.
pub async fn finish_add(paths: &Paths, name: &str) -> anyhow::Result<ExitCode> {
    match restart_running(paths, name).await {
        Some(Ok(())) => eprintln!("the running host restarted the {name} channel"),
        Some(Err(e)) => {
            eprintln!("the running host: {e}; restart it (`nanoclaw run`) to start {name}")
        }
        None => eprintln!("start nanoclaw (`nanoclaw run` or `nanoclaw chat`) to connect"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The `[channels.NAME]` settings as they will be once `pairs` are set.
fn planned_settings(paths: &Paths, name: &str, pairs: &[(String, toml::Value)]) -> toml::Table {
    let mut table = Config::load(&paths.config_file())
        .ok()
        .and_then(|c| c.channels.platforms.get(name).cloned())
        .unwrap_or_default();
    for (key, value) in pairs {
        table.insert(key.clone(), value.clone());
    }
    table
}

/// Six random digits.
pub fn pairing_code() -> String {
    use rand::RngExt;
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

fn parse_settings(settings: &[String]) -> anyhow::Result<Vec<(String, toml::Value)>> {
    settings
        .iter()
        .map(|s| {
            let (key, value) = s.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "--set {s:?}: write KEY=VALUE, e.g. --set api_base=https://tg.example.com"
                )
            })?;
            let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
                Ok(mut t) => t
                    .remove("v")
                    .unwrap_or_else(|| toml::Value::String(value.to_owned())),
                Err(_) => toml::Value::String(value.to_owned()),
            };
            Ok((key.trim().to_owned(), value))
        })
        .collect()
}

/// `text` with `[channels.NAME]` present and `enabled` set, and `pairs` set in it. Other
/// lines (and their comments) are kept as they are.
pub fn enable_in_config(
    text: &str,
    name: &str,
    enabled: bool,
    pairs: &[(String, toml::Value)],
) -> anyhow::Result<String> {
    let mut all = vec![("enabled".to_owned(), toml::Value::Boolean(enabled))];
    all.extend(pairs.iter().cloned());
    set_in_table(text, &format!("channels.{name}"), &all)
}

/// `text` with the table `[TABLE]` present (appended when missing) and `pairs` set in it,
/// the first pair first. Other lines (and their comments) are kept as they are.
pub fn set_in_table(
    text: &str,
    table: &str,
    pairs: &[(String, toml::Value)],
) -> anyhow::Result<String> {
    let header = format!("[{table}]");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let start = match lines.iter().position(|l| l.trim() == header) {
        Some(i) => i,
        None => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(header.clone());
            lines.len() - 1
        }
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let set = |key: &str, value: String, lines: &mut Vec<String>, end: &mut usize| {
        let found = lines[start + 1..*end]
            .iter()
            .position(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key));
        let line = format!("{key} = {value}");
        match found {
            Some(i) => lines[start + 1 + i] = line,
            None => {
                lines.insert(start + 1, line);
                *end += 1;
            }
        }
    };
    let mut end = end;
    for (key, value) in pairs.iter().rev() {
        set(key, value.to_string(), &mut lines, &mut end);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// Asks a running host to restart channel `name`; `None` when no host runs.
async fn restart_running(paths: &Paths, name: &str) -> Option<Result<(), String>> {
    let mut client = TerminalClient::connect(&paths.terminal_socket())
        .await
        .ok()?;
    let request = ClientLine::RestartChannel {
        name: name.to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(60), client.admin(&request)).await {
        Ok(Ok(Some(ServerLine::Restarted { error: None, .. }))) => Some(Ok(())),
        Ok(Ok(Some(ServerLine::Restarted { error: Some(e), .. }))) => Some(Err(e)),
        Ok(Ok(_)) => Some(Err("the host closed the connection".into())),
        Ok(Err(e)) => Some(Err(e.to_string())),
        Err(_) => Some(Err("no answer within 60 s".into())),
    }
}

/// `nanoclaw channel status`.
/// The running host's channel reports; `None` when no host answers.
pub async fn running_reports(paths: &Paths) -> anyhow::Result<Option<Vec<ChannelReport>>> {
    Ok(
        match TerminalClient::connect(&paths.terminal_socket()).await {
            Ok(mut client) => match client.admin(&ClientLine::ChannelStatus).await? {
                Some(ServerLine::Channels { channels }) => Some(channels),
                _ => None,
            },
            Err(_) => None,
        },
    )
}

pub async fn status(json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let Some(reports) = running_reports(&paths).await? else {
        if json {
            println!(
                "{}",
                serde_json::json!({"host_running": false, "channels": []})
            );
        } else {
            println!(
                "the host is not running: no channel is connected (start it with `nanoclaw run`)"
            );
        }
        return Ok(ExitCode::from(3));
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"host_running": true, "channels": reports})
            )?
        );
    } else {
        print_reports(&reports);
    }
    let all_up = reports.iter().all(|r| r.health.is_up());
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn print_reports(reports: &[ChannelReport]) {
    let now = nanoclaw_host::now_ms();
    let ago = |t: i64| format!("{}s ago", ((now - t).max(0)) / 1000);
    println!(
        "{:<10} {:<13} {:<12} {:<12} {:<10} last error",
        "channel", "state", "since", "last event", "reconnects"
    );
    for r in reports {
        let h = &r.health;
        println!(
            "{:<10} {:<13} {:<12} {:<12} {:<10} {}",
            r.name,
            h.state.as_str(),
            ago(h.since),
            h.last_event.map(ago).unwrap_or_else(|| "-".into()),
            h.reconnects,
            match (&h.last_error, h.last_error_at) {
                (Some(e), Some(at)) => format!("{} ({})", e, ago(at)),
                (Some(e), None) => e.clone(),
                _ => "-".into(),
            }
        );
        if let Some(detail) = &h.detail {
            println!("{:<10} {detail}", "");
        }
    }
}

/// `nanoclaw channel restart NAME`.
pub async fn restart(name: String) -> anyhow::Result<ExitCode> {
    registration(&name)?;
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    match restart_running(&paths, &name).await {
        Some(Ok(())) => {
            println!("restarted {name}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(e)) => anyhow::bail!("restarting {name}: {e}"),
        None => anyhow::bail!("the host is not running; start it with `nanoclaw run`"),
    }
}

/// `nanoclaw channel remove NAME`: off in the config, its secrets and state gone.
pub async fn remove(name: String, keep_secrets: bool) -> anyhow::Result<ExitCode> {
    let registration = registration(&name)?;
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let file = paths.config_file();
    if let Ok(text) = std::fs::read_to_string(&file)
        && text
            .lines()
            .any(|l| l.trim() == format!("[channels.{name}]"))
    {
        write_private_file(
            &file,
            enable_in_config(&text, &name, false, &[])?.as_bytes(),
        )?;
        eprintln!("disabled [channels.{name}] in {}", file.display());
    }
    if !keep_secrets && let Some(vault) = super::vault::open_vault_quietly().await {
        let settings = Config::load(&file)
            .ok()
            .and_then(|c| c.channels.platforms.get(&name).cloned())
            .unwrap_or_default();
        let mut names: Vec<String> = registration
            .all_secret_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.extend(registration.secret_names_for(&settings));
        names.sort_unstable();
        names.dedup();
        for secret in names {
            if vault.remove(&secret).await? {
                eprintln!("removed {secret} from the vault");
            }
        }
    }
    // The channel's private files (a linked WhatsApp session) go with its secrets.
    let files = paths.channel_dir(&name);
    if !keep_secrets && files.exists() {
        std::fs::remove_dir_all(&files)?;
        eprintln!("removed {}", files.display());
    }
    if paths.database().exists() {
        let store = nanoclaw_host::open_store(&paths.database(), true)?;
        store.clear_channel_state(name.clone()).await?;
    }
    eprintln!(
        "the {name} channel stops when the host restarts; its chats and their history are kept"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabling_keeps_comments_and_other_tables() {
        let text =
            "# top\n[channels]\nalert_after_secs = 300\n\n[channels.terminal]\nenabled = true\n";
        let out = enable_in_config(
            text,
            "telegram",
            true,
            &[("api_base".into(), toml::Value::String("http://x".into()))],
        )
        .unwrap();
        assert!(out.contains("# top"));
        assert!(out.contains("[channels.telegram]\nenabled = true\napi_base = \"http://x\""));
        let off = enable_in_config(&out, "telegram", false, &[]).unwrap();
        assert!(off.contains("[channels.telegram]\nenabled = false\napi_base"));
        assert_eq!(off.matches("[channels.telegram]").count(), 1);
        let table: toml::Table = toml::from_str(&off).unwrap();
        assert_eq!(
            table["channels"]["terminal"]["enabled"].as_bool(),
            Some(true)
        );
    }
}

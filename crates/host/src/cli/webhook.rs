//! `nanoclaw webhook add|list|remove`: the webhook channel's hooks. Each hook is a table in
//! config.toml (`[channels.webhook.hooks.NAME]`) and a secret in the vault
//! (`webhook.NAME.secret`, by hidden prompt or one line on stdin; empty: one is generated
//! and shown once).

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use nanoclaw_channel_webhook::{WebhookConfig, secret_name, valid_hook_name};
use nanoclaw_host::config::{Config, Paths, write_private_file};
use nanoclaw_vault::SecretString;

/// What `webhook add` was given.
pub struct AddArgs {
    pub name: String,
    pub group: String,
    pub scheme: String,
    pub reply_url: Option<String>,
    pub max_body_bytes: Option<u64>,
}

fn current(paths: &Paths) -> anyhow::Result<(String, Option<WebhookConfig>)> {
    let text = std::fs::read_to_string(paths.config_file())
        .unwrap_or_else(|_| nanoclaw_host::config::DEFAULT_CONFIG_TOML.to_owned());
    let config: Config = toml::from_str(&text)?;
    let webhook = match config
        .channels
        .platforms
        .get(nanoclaw_channel_webhook::NAME)
    {
        Some(table) => Some(toml::Value::Table(table.clone()).try_into()?),
        None => None,
    };
    Ok((text, webhook))
}

/// `nanoclaw webhook add NAME --group G --scheme github|generic [--reply-url URL]`.
pub async fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    if !valid_hook_name(&args.name) {
        anyhow::bail!("a hook name is 1-64 lowercase letters, digits, '-' or '_'");
    }
    if !matches!(args.scheme.as_str(), "github" | "generic") {
        anyhow::bail!("--scheme is github or generic");
    }
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let (text, _) = current(&paths)?;
    {
        paths.prepare()?;
        let store = nanoclaw_host::open_store(&paths.database(), false)?;
        // The main group exists from the host's first start; make sure of it here too.
        let config: Config = toml::from_str(&text)?;
        nanoclaw_host::host::ensure_main_wiring(&store, &config).await?;
        if store.group_by_folder(args.group.clone()).await?.is_none() {
            anyhow::bail!(
                "no group with the folder {:?} (`nanoclaw group list`)",
                args.group
            );
        }
    }
    // The secret first: nothing is written to the config until it is in the vault.
    let vault = super::vault::open_vault(true)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the vault could not be opened"))?;
    let entered = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!(
            "Secret for hook {} (Enter: generate one; not shown): ",
            args.name
        ))?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let generated = entered.is_empty();
    let secret = if generated {
        use rand::RngExt;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    } else {
        entered
    };
    let name = secret_name(&args.name);
    if vault.list().await?.iter().any(|s| s.name == name) {
        vault
            .rotate(&name, SecretString::from(secret.clone()))
            .await?;
        eprintln!("replaced {name} in the vault");
    } else {
        vault.set(&name, SecretString::from(secret.clone())).await?;
        eprintln!("stored {name} in the vault");
    }
    let mut pairs = vec![
        ("group".to_owned(), toml::Value::String(args.group.clone())),
        (
            "scheme".to_owned(),
            toml::Value::String(args.scheme.clone()),
        ),
    ];
    if let Some(url) = &args.reply_url {
        pairs.push(("reply_url".to_owned(), toml::Value::String(url.clone())));
    }
    if let Some(max) = args.max_body_bytes {
        pairs.push((
            "max_body_bytes".to_owned(),
            toml::Value::Integer(i64::try_from(max)?),
        ));
    }
    let text = super::channel::enable_in_config(&text, nanoclaw_channel_webhook::NAME, true, &[])?;
    let text = super::channel::set_in_table(
        &text,
        &format!("channels.webhook.hooks.{}", args.name),
        &pairs,
    )?;
    // Refuse to write a config the host would not load.
    let parsed: Config = toml::from_str(&text)?;
    let webhook: WebhookConfig = toml::Value::Table(
        parsed
            .channels
            .platforms
            .get(nanoclaw_channel_webhook::NAME)
            .cloned()
            .unwrap_or_default(),
    )
    .try_into()?;
    webhook.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    write_private_file(&paths.config_file(), text.as_bytes())?;
    eprintln!(
        "added [channels.webhook.hooks.{}] to {}",
        args.name,
        paths.config_file().display()
    );
    if generated {
        println!("secret (shown once; the sender signs with it): {secret}");
    }
    let url = format!("http://{}/hooks/{}", webhook.listen, args.name);
    println!("URL: {url} (put a reverse proxy or tunnel in front to reach it from outside)");
    if args.scheme == "github" {
        println!(
            "GitHub: Settings → Webhooks → Add webhook: Payload URL = the public URL, Content type = application/json, Secret = the secret."
        );
    } else {
        println!(
            "Sign each POST: X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">, e.g."
        );
        println!("  body='{{\"text\":\"hello\"}}'; t=$(date +%s)");
        println!(
            "  sig=$(printf '%s.%s' \"$t\" \"$body\" | openssl dgst -sha256 -hmac \"$SECRET\" -r | cut -d' ' -f1)"
        );
        println!(
            "  curl -sS {url} -H \"X-Signature: t=$t,v1=$sig\" -H 'X-Webhook-Id: my-id-1' --data \"$body\""
        );
    }
    match &args.reply_url {
        Some(reply) => println!("replies: POSTed to {reply}, signed the same way"),
        None => println!("replies: to your main chat"),
    }
    super::channel::finish_add(&paths, nanoclaw_channel_webhook::NAME).await
}

/// `nanoclaw webhook list [--json]`.
pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let (_, webhook) = current(&paths)?;
    let secrets: Vec<String> = match super::vault::open_vault_quietly().await {
        Some(vault) => vault.list().await?.into_iter().map(|s| s.name).collect(),
        None => Vec::new(),
    };
    let Some(webhook) = webhook else {
        if json {
            println!("[]");
        } else {
            println!(
                "no hooks; add one with `nanoclaw webhook add NAME --group main --scheme generic`"
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let rows: Vec<serde_json::Value> = webhook
        .hooks
        .iter()
        .map(|(name, hook)| {
            serde_json::json!({
                "name": name,
                "url": format!("http://{}/hooks/{name}", webhook.listen),
                "group": hook.group,
                "scheme": format!("{:?}", hook.scheme).to_lowercase(),
                "reply_url": hook.reply_url,
                "secret_set": secrets.contains(&secret_name(name)),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for row in &rows {
        println!(
            "{:<16} {:<8} group {:<12} {} → {}{}",
            row["name"].as_str().unwrap_or_default(),
            row["scheme"].as_str().unwrap_or_default(),
            row["group"].as_str().unwrap_or_default(),
            row["url"].as_str().unwrap_or_default(),
            row["reply_url"].as_str().unwrap_or("main chat"),
            if row["secret_set"] == true {
                ""
            } else {
                " (secret missing)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` without the table `[TABLE]` (its header and keys, up to the next table); the
/// rest as it was. `None` when the table is not there.
fn without_table(text: &str, table: &str) -> Option<String> {
    let header = format!("[{table}]");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim() == header)?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut kept: Vec<&str> = lines[..start].to_vec();
    kept.extend_from_slice(&lines[end..]);
    let mut out = kept.join("\n");
    out.push('\n');
    Some(out)
}

/// `nanoclaw webhook remove NAME`: its table and its secret go; its chat and history stay.
pub async fn remove(name: String) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let (text, _) = current(&paths)?;
    let table = format!("channels.webhook.hooks.{name}");
    match without_table(&text, &table) {
        Some(out) => {
            let _: Config = toml::from_str(&out)?;
            write_private_file(&paths.config_file(), out.as_bytes())?;
            eprintln!("removed [{table}] from {}", paths.config_file().display());
        }
        None => anyhow::bail!(
            "no [{table}] in {} (hooks written inline are edited by hand)",
            paths.config_file().display()
        ),
    }
    if let Some(vault) = super::vault::open_vault_quietly().await
        && vault.remove(&secret_name(&name)).await?
    {
        eprintln!("removed {} from the vault", secret_name(&name));
    }
    super::channel::finish_add(&paths, nanoclaw_channel_webhook::NAME).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_hook_keeps_the_other_tables() {
        let text = "[channels.webhook]\nenabled = true\n\n[channels.webhook.hooks.a]\ngroup = \"main\"\n\n[channels.webhook.hooks.b]\ngroup = \"x\"\n";
        let out = without_table(text, "channels.webhook.hooks.a").unwrap();
        assert_eq!(
            out,
            "[channels.webhook]\nenabled = true\n\n[channels.webhook.hooks.b]\ngroup = \"x\"\n"
        );
        assert!(without_table(text, "channels.webhook.hooks.c").is_none());
    }
}

//! `nanoclaw chats …`: which chats reach which agent group, under what rules; pairing codes
//! for new chats; messages from unknown chats and senders waiting for the owner.

use std::process::ExitCode;

use nanoclaw_store::{Chat, SessionMode, Store, TriggerRule, UnknownSenders, WiringOptions};

/// `nanoclaw chats list`.
pub async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let (_, _, store) = super::open_existing()?;
    let chats = store.list_chats().await?;
    let routes = store.reply_routes().await?;
    let mut rows = Vec::new();
    for chat in &chats {
        let wirings = store.wirings_for_chat(chat.id).await?;
        rows.push(serde_json::json!({
            "chat": chat,
            "wirings": wirings.iter().map(|(w, g)| serde_json::json!({
                "group": g.folder,
                "trigger_rule": w.trigger_rule.as_str(),
                "trigger_pattern": w.trigger_pattern,
                "allowed_senders": w.allowed_senders,
                "unknown_senders": w.unknown_senders.as_str(),
                "session_mode": w.session_mode.as_str(),
            })).collect::<Vec<_>>(),
            "blocked": store.is_chat_blocked(chat.id).await?,
            // Its replies go to this chat instead (a webhook without a reply URL).
            "replies_to": routes.iter().find(|(from, _)| *from == chat.id).map(|(_, to)| *to),
        }));
    }
    let waiting = store.waiting_messages().await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"chats": rows, "waiting": waiting}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<5} {:<10} {:<22} {:<20} wired to",
        "id", "channel", "platform id", "name"
    );
    for (chat, row) in chats.iter().zip(&rows) {
        let wired: Vec<String> = row["wirings"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .map(|w| {
                        let mut s = format!(
                            "{} ({}, {}",
                            w["group"].as_str().unwrap_or_default(),
                            w["trigger_rule"].as_str().unwrap_or_default(),
                            w["session_mode"].as_str().unwrap_or_default()
                        );
                        if let Some(list) = w["allowed_senders"].as_array() {
                            s.push_str(&format!(", {} allowed", list.len()));
                        }
                        s.push(')');
                        s
                    })
                    .collect()
            })
            .unwrap_or_default();
        let wired = if row["blocked"].as_bool() == Some(true) {
            "(turned away)".to_string()
        } else if wired.is_empty() {
            "-".to_string()
        } else {
            wired.join(", ")
        };
        let wired = match row["replies_to"].as_i64() {
            Some(to) => format!("{wired}; replies to chat {to}"),
            None => wired,
        };
        println!(
            "{:<5} {:<10} {:<22} {:<20} {wired}",
            chat.id,
            chat.channel,
            truncate(&chat.platform_id, 22),
            truncate(&chat.name, 20)
        );
    }
    if !waiting.is_empty() {
        println!("\nwaiting for you ({}):", waiting.len());
        for h in &waiting {
            let verb = if h.reason == "unknown_chat" {
                "chat"
            } else {
                "sender"
            };
            println!(
                "  #{} {} from {} in chat {}: {:?}  → /approve {verb} {} or /deny {verb} {}",
                h.id,
                h.reason,
                h.sender,
                h.chat_id,
                truncate(&h.text, 60),
                h.id,
                h.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A chat named by its number (`nanoclaw chats list`) or as `channel:platform-id`.
async fn find_chat(store: &Store, chat: &str) -> anyhow::Result<Chat> {
    let found = match chat.parse::<i64>() {
        Ok(id) => store.chat(id).await?,
        Err(_) => match chat.split_once(':') {
            Some((channel, platform_id)) => store.chat_by_platform(channel, platform_id).await?,
            None => None,
        },
    };
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "no chat {chat:?}; name it by its number or as channel:platform-id (see `nanoclaw chats list`)"
        )
    })
}

/// What `nanoclaw chats wire` was given.
pub struct WireArgs {
    pub chat: String,
    pub group: String,
    pub trigger: String,
    pub pattern: Option<String>,
    pub allow: Vec<String>,
    pub unknown_senders: String,
    pub session: String,
}

/// `nanoclaw chats wire CHAT GROUP …`.
pub async fn wire(args: WireArgs) -> anyhow::Result<ExitCode> {
    let (_, _, store) = super::open_existing()?;
    let chat = find_chat(&store, &args.chat).await?;
    let Some(group) = store.group_by_folder(args.group.as_str()).await? else {
        anyhow::bail!(
            "no agent group with folder {:?}; see `nanoclaw group list`",
            args.group
        );
    };
    let trigger_rule: TriggerRule = args.trigger.parse().map_err(|_| {
        anyhow::anyhow!(
            "--trigger {:?}: use word, mention, always or regex",
            args.trigger
        )
    })?;
    if trigger_rule == TriggerRule::Regex {
        let Some(pattern) = &args.pattern else {
            anyhow::bail!("--trigger regex needs --pattern, e.g. --pattern '(?i)^hey bot'");
        };
        nanoclaw_host::router::compile_trigger_regex(pattern).map_err(|e| {
            anyhow::anyhow!("--pattern {pattern:?} is not a usable regular expression: {e}")
        })?;
    } else if args.pattern.is_some() {
        anyhow::bail!("--pattern only goes with --trigger regex");
    }
    let unknown_senders: UnknownSenders = args.unknown_senders.parse().map_err(|_| {
        anyhow::anyhow!(
            "--unknown-senders {:?}: use ignore or ask",
            args.unknown_senders
        )
    })?;
    let session_mode: SessionMode = args.session.parse().map_err(|_| {
        anyhow::anyhow!(
            "--session {:?}: use shared, per-thread or agent-shared",
            args.session
        )
    })?;
    let options = WiringOptions {
        trigger_rule,
        trigger_pattern: args.pattern,
        allowed_senders: (!args.allow.is_empty()).then_some(args.allow),
        unknown_senders,
        session_mode,
    };
    let wiring = store.wire(chat.id, group.id.clone(), options).await?;
    println!(
        "{} {:?} → {} ({}, {}{})",
        chat.channel,
        chat.name,
        group.folder,
        wiring.trigger_rule.as_str(),
        wiring.session_mode.as_str(),
        wiring
            .allowed_senders
            .as_ref()
            .map(|l| format!(", only {}", l.join(" ")))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw chats unwire CHAT GROUP`.
pub async fn unwire(chat: String, group: String) -> anyhow::Result<ExitCode> {
    let (_, _, store) = super::open_existing()?;
    let chat = find_chat(&store, &chat).await?;
    let Some(group) = store.group_by_folder(group.as_str()).await? else {
        anyhow::bail!("no agent group with folder {group:?}; see `nanoclaw group list`");
    };
    if store.unwire(chat.id, group.id.clone()).await? {
        println!(
            "{} {:?} no longer reaches {}",
            chat.channel, chat.name, group.folder
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{:?} was not wired to {}", chat.name, group.folder);
        Ok(ExitCode::FAILURE)
    }
}

/// `nanoclaw chats pair CHANNEL [--group G] [--minutes M]`.
pub async fn pair(channel: String, group: String, minutes: u32) -> anyhow::Result<ExitCode> {
    if nanoclaw_host::channel::registration(&channel).is_none() {
        anyhow::bail!(
            "this build has no channel called {channel:?}; known: {}",
            nanoclaw_host::channel::known_names().join(", ")
        );
    }
    if !(1..=1440).contains(&minutes) {
        anyhow::bail!("--minutes must be between 1 and 1440");
    }
    let (_, _, store) = super::open_existing()?;
    let Some(group) = store.group_by_folder(group.as_str()).await? else {
        anyhow::bail!("no agent group with folder {group:?}; see `nanoclaw group list`");
    };
    let code = super::channel::pairing_code();
    let expires = nanoclaw_host::now_ms() + i64::from(minutes) * 60_000;
    store
        .create_pairing_code(code.clone(), channel.clone(), group.id, expires)
        .await?;
    println!(
        "{code}\nSend this code to the bot on {channel} from the chat to wire (in a group, mention the \
         bot with it) within {minutes} minutes; that chat then talks to {}. The code works once.",
        group.folder
    );
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw chats main CHAT [--off]`: a direct chat with the owner on a platform becomes (or
/// stops being) an owner's main chat: wired to the main group (every message), approvals taken
/// from it, the host's notices sent to it.
pub async fn main_chat(chat: String, off: bool) -> anyhow::Result<ExitCode> {
    let (_, _, store) = super::open_existing()?;
    let chat = find_chat(&store, &chat).await?;
    if off {
        if store.unset_owner_chat(chat.id).await? {
            println!("{} {:?} is no longer a main chat", chat.channel, chat.name);
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("{:?} was not a main chat", chat.name);
        return Ok(ExitCode::FAILURE);
    }
    if chat.is_group {
        anyhow::bail!(
            "{:?} is a group chat: everyone in it could approve what only you should; use a direct chat with the bot",
            chat.name
        );
    }
    let main = store
        .main_group()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no main group yet; start nanoclaw once"))?;
    store
        .wire(
            chat.id,
            main.id,
            WiringOptions::new(false, SessionMode::Shared),
        )
        .await?;
    store.set_owner_chat(chat.id).await?;
    println!(
        "{} {:?} is now your main chat: it talks to the main group, takes /approve and gets the host's notices",
        chat.channel, chat.name
    );
    Ok(ExitCode::SUCCESS)
}

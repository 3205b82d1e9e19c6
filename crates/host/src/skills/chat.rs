//! Skills from the owner's main chat: `/skills` lists each group's skills with their states,
//! `/skills enable|disable|approve NAME… [--group G]` change them (the same code as `nanoclaw
//! skills`, see `manage.rs`), `/skill-graph [group]` draws the requirement graph as text.
//! Answered by the host and never passed to an agent; the same words from any other chat are
//! ordinary messages (like `/approve`, see `approvals.rs`).

use nanoclaw_skills::{Format, SkillState};
use nanoclaw_store::{GroupSkillState, OutboundKind, Store};

use super::manage::SkillAdmin;
use crate::channel::{InboundEvent, RouteOutcome};
use crate::config::Paths;
use crate::tasks::Scheduler;

/// A skills command of the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/skills`
    List,
    /// `/skill-graph [group]`
    Graph(Option<String>),
    /// `/skills enable NAME… [--group G]`
    Enable {
        names: Vec<String>,
        group: Option<String>,
    },
    /// `/skills disable NAME… [--group G] [--with-dependents]`
    Disable {
        names: Vec<String>,
        group: Option<String>,
        with_dependents: bool,
    },
    /// `/skills approve NAME [--group G]`
    Approve { name: String, group: Option<String> },
    /// `/skills …` that is none of the above: answered with the usage, never sent to an agent.
    Usage(String),
}

const USAGE: &str = "Usage: /skills | /skills enable NAME… [--group G] | /skills disable NAME… \
                     [--group G] [--with-dependents] | /skills approve NAME [--group G] | \
                     /skill-graph [GROUP]";

/// `/skills …` and `/skill-graph [group]`; anything else is not a skills command.
pub fn parse(text: &str) -> Option<Command> {
    let mut words = text.split_whitespace();
    match words.next()? {
        "/skill-graph" => {
            let group = words.next().map(str::to_owned);
            words.next().is_none().then_some(Command::Graph(group))
        }
        "/skills" => Some(parse_change(words.collect())),
        _ => None,
    }
}

fn parse_change(words: Vec<&str>) -> Command {
    let Some((verb, rest)) = words.split_first() else {
        return Command::List;
    };
    let mut names = Vec::new();
    let mut group = None;
    let mut with_dependents = false;
    let mut rest = rest.iter();
    while let Some(w) = rest.next() {
        match *w {
            "--group" => match rest.next() {
                Some(g) => group = Some((*g).to_owned()),
                None => return Command::Usage(format!("--group needs a group folder. {USAGE}")),
            },
            "--with-dependents" if *verb == "disable" => with_dependents = true,
            w if w.starts_with("--") => {
                return Command::Usage(format!("{w} is not an option here. {USAGE}"));
            }
            w => names.push(w.to_owned()),
        }
    }
    match *verb {
        "enable" if !names.is_empty() => Command::Enable { names, group },
        "disable" if !names.is_empty() => Command::Disable {
            names,
            group,
            with_dependents,
        },
        "approve" if names.len() == 1 => Command::Approve {
            name: names.remove(0),
            group,
        },
        "approve" => Command::Usage(format!("approve one skill at a time. {USAGE}")),
        "enable" | "disable" => Command::Usage(format!("name the skills to {verb}. {USAGE}")),
        other => Command::Usage(format!("{other:?} is not a skills command. {USAGE}")),
    }
}

/// Answers a skills command from the owner's main chat (queued in that chat); `None` for
/// anything else, including such a command from another chat.
pub async fn intercept(
    store: &Store,
    paths: &Paths,
    tasks: &Scheduler,
    runtime: Option<&dyn nanoclaw_sandbox::Runtime>,
    event: &InboundEvent,
) -> Option<RouteOutcome> {
    let command = parse(&event.text)?;
    let chat_id = match crate::host::owner_command_chat(store, event).await {
        Ok(Some(id)) => id,
        Ok(None) => return None,
        Err(e) => {
            return Some(RouteOutcome::Failed(format!(
                "could not check who may use skills commands: {e}"
            )));
        }
    };
    let admin = SkillAdmin {
        store,
        paths,
        tasks,
        runtime,
        by: format!("chat {}:{}", event.channel, event.chat_id),
    };
    let reply = match answer(&admin, &command).await {
        Ok(text) => text,
        Err(e) => format!("Could not do that: {e}"),
    };
    let (outcome, _) = crate::host::queue_command_answer(
        store,
        chat_id,
        event,
        "skills-reply",
        reply,
        OutboundKind::Message,
    )
    .await;
    Some(outcome)
}

/// The text answer to `command` (changes made through `admin`).
pub async fn answer(admin: &SkillAdmin<'_>, command: &Command) -> Result<String, String> {
    let (store, paths) = (admin.store, admin.paths);
    let groups = store.list_groups().await.map_err(|e| e.to_string())?;
    let group_named = |folder: &Option<String>| match folder {
        Some(f) => groups
            .iter()
            .find(|g| &g.folder == f)
            .ok_or_else(|| format!("there is no group {f:?}; `/skills` lists the groups")),
        None => groups
            .iter()
            .find(|g| g.is_main)
            .ok_or_else(|| "there is no main group".to_owned()),
    };
    match command {
        Command::Usage(text) => Ok(text.clone()),
        Command::Enable { names, group } => {
            Ok(admin.enable(group_named(group)?, names).await?.summary())
        }
        Command::Disable {
            names,
            group,
            with_dependents,
        } => Ok(admin
            .disable(group_named(group)?, names, *with_dependents)
            .await?
            .summary()),
        Command::Approve { name, group } => {
            Ok(admin.approve(group_named(group)?, name).await?.summary())
        }
        Command::List => {
            let mut out = String::from("Skills by group:\n");
            for g in &groups {
                let rows = store
                    .group_skills(g.id.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let catalog = super::load_catalog_blocking(paths, &g.folder).await?;
                out.push_str(&format!("\n{}:\n", g.folder));
                for entry in catalog.entries() {
                    let row = rows.iter().find(|r| r.skill == entry.name);
                    let state = match (row, entry.error()) {
                        (_, Some(_)) => "broken".to_owned(),
                        (Some(r), None) if r.state == GroupSkillState::Paused => format!(
                            "paused: {}",
                            r.paused_reason.as_deref().unwrap_or("changed")
                        ),
                        (Some(_), None) => "enabled".to_owned(),
                        (None, None) => "disabled".to_owned(),
                    };
                    out.push_str(&format!("  {} [{state}]\n", entry.name));
                }
                for r in rows.iter().filter(|r| {
                    catalog.get(&r.skill).is_none() && r.state == GroupSkillState::Paused
                }) {
                    out.push_str(&format!(
                        "  {} [paused: {}]\n",
                        r.skill,
                        r.paused_reason.as_deref().unwrap_or("gone")
                    ));
                }
                if catalog.entries().next().is_none() && rows.is_empty() {
                    out.push_str("  (no skills installed)\n");
                }
            }
            out.push_str("\nEnable one with `/skills enable NAME --group G`.");
            Ok(out)
        }
        Command::Graph(folder) => {
            let group = group_named(folder)?;
            graph_text(store, paths, &group.id, &group.folder, Format::Text).await
        }
    }
}

/// The group's requirement graph in `format`: enabled (and paused, shown disabled with a
/// note), disabled and broken skills.
pub async fn graph_text(
    store: &Store,
    paths: &Paths,
    group_id: &str,
    folder: &str,
    format: Format,
) -> Result<String, String> {
    let rows = store
        .group_skills(group_id)
        .await
        .map_err(|e| e.to_string())?;
    let catalog = super::load_catalog_blocking(paths, folder).await?;
    let enabled: Vec<String> = rows
        .iter()
        .filter(|r| r.state == GroupSkillState::Enabled)
        .map(|r| r.skill.clone())
        .collect();
    let mut states = catalog.states(&enabled);
    // A paused skill does not run: not enabled, whatever requires it.
    for r in rows.iter().filter(|r| r.state == GroupSkillState::Paused) {
        if let Some(s) = states.get_mut(&r.skill)
            && *s == SkillState::Enabled
        {
            *s = SkillState::Disabled;
        }
    }
    let mut out = catalog.graph().render(format, &states);
    if format == Format::Text {
        for r in rows.iter().filter(|r| r.state == GroupSkillState::Paused) {
            out.push_str(&format!(
                "[paused] {}: {}\n",
                r.skill,
                r.paused_reason.as_deref().unwrap_or("changed")
            ));
        }
        if out.trim().is_empty() {
            out = format!("group {folder} has no skills installed\n");
        }
    }
    Ok(out)
}

/// A skill's chat command in a message: `/name` and the rest of the text.
pub fn parse_skill_command(text: &str) -> Option<(&str, &str)> {
    let rest = text.trim_start().strip_prefix('/')?;
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    // Command names follow the skill-name rule (lower-case letters, digits, hyphens).
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then_some((name, args.trim()))
}

/// `/name args` in a chat wired to a group that enabled a skill with a command `name`: the
/// message becomes that command's prompt (or, for a tool-backed command, a request to run that
/// tool) and the arguments, addressed to the assistant (the command is an explicit call, so a
/// word or mention trigger is satisfied). Sender allowlists still apply. Nothing changes for
/// any other message.
pub async fn expand_command(store: &Store, paths: &Paths, event: &mut InboundEvent) {
    let Some((name, args)) = parse_skill_command(&event.text) else {
        return;
    };
    let (name, args) = (name.to_owned(), args.to_owned());
    let chat = match store
        .chat_by_platform(event.channel.clone(), event.chat_id.clone())
        .await
    {
        Ok(Some(chat)) => chat,
        _ => return,
    };
    let Ok(wirings) = store.wirings_for_chat(chat.id).await else {
        return;
    };
    for (_, group) in wirings {
        let Ok(rows) = store.group_skills(group.id.as_str()).await else {
            continue;
        };
        if !rows.iter().any(|r| r.state == GroupSkillState::Enabled) {
            continue;
        }
        let Ok(catalog) = super::load_catalog_blocking(paths, &group.folder).await else {
            continue;
        };
        // Only skills that would be given to the agent: enabled, with the approved hash.
        let (prepared, _) = super::check(&catalog, &rows);
        for info in &prepared.skills {
            let Some(skill) = catalog.skill(&info.name) else {
                continue;
            };
            let Some(command) = skill.manifest.commands.get(&name) else {
                continue;
            };
            // A tool-backed command asks for that tool by the name the agent knows it under
            // (`<skill>__<tool>`); the model turns the free-text arguments into its input.
            let prompt = match (&command.prompt, &command.tool) {
                (Some(prompt), _) => prompt.clone(),
                (None, Some(tool)) => format!(
                    "Run the tool `{}__{tool}` now (the /{name} command of skill {}){}, and \
                     reply with what it returns.",
                    info.name,
                    info.name,
                    if args.is_empty() {
                        String::new()
                    } else {
                        " with the input the arguments below describe".to_owned()
                    }
                ),
                (None, None) => continue,
            };
            tracing::info!(group = %group.folder, skill = %info.name, command = %name, "skill chat command");
            let mut text = format!("{} {prompt}", group.trigger);
            if !args.is_empty() {
                text.push_str(&format!("\n\n{args}"));
            }
            event.text = text;
            event.mentions_me = true;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_commands_are_taken() {
        assert_eq!(parse("/skills"), Some(Command::List));
        assert_eq!(parse("  /skills  "), Some(Command::List));
        assert_eq!(parse("/skill-graph"), Some(Command::Graph(None)));
        assert_eq!(
            parse("/skill-graph family"),
            Some(Command::Graph(Some("family".into())))
        );
        assert!(matches!(parse("/skills please"), Some(Command::Usage(_))));
        assert_eq!(parse("/skill-graph a b"), None);
        assert_eq!(
            parse("/skills enable github web-research --group family"),
            Some(Command::Enable {
                names: vec!["github".into(), "web-research".into()],
                group: Some("family".into())
            })
        );
        assert_eq!(
            parse("/skills disable github --with-dependents"),
            Some(Command::Disable {
                names: vec!["github".into()],
                group: None,
                with_dependents: true
            })
        );
        assert_eq!(
            parse("/skills approve github"),
            Some(Command::Approve {
                name: "github".into(),
                group: None
            })
        );
        assert!(matches!(
            parse("/skills approve a b"),
            Some(Command::Usage(_))
        ));
        assert!(matches!(parse("/skills enable"), Some(Command::Usage(_))));
        assert!(matches!(
            parse("/skills enable x --group"),
            Some(Command::Usage(_))
        ));
        assert!(matches!(
            parse("/skills enable x --with-dependents"),
            Some(Command::Usage(_))
        ));
        assert_eq!(parse("what /skills do you have"), None);
        assert_eq!(parse("/skillz"), None);
    }

    #[test]
    fn skill_commands_are_a_slash_and_a_skill_style_name() {
        assert_eq!(
            parse_skill_command("/weekly-summary"),
            Some(("weekly-summary", ""))
        );
        assert_eq!(
            parse_skill_command("/weekly-summary  last month please "),
            Some(("weekly-summary", "last month please"))
        );
        assert_eq!(parse_skill_command("weekly-summary"), None);
        assert_eq!(parse_skill_command("/Weekly"), None);
        assert_eq!(parse_skill_command("/"), None);
        assert_eq!(parse_skill_command("/a/b"), None);
    }
}

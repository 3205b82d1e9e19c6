//! What a line the owner submitted means: a command the client answers itself, or text for
//! the host (a message, or a command the host answers such as `/approve` or `/stop`).

/// What to do with a submitted input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing but blanks: show the prompt again.
    Empty,
    /// `/help`: the commands.
    Help,
    /// `/quit` or `/exit`.
    Quit,
    /// `/status`: the host, its channels and whether it is paused.
    Status,
    /// `/tasks`: the scheduled tasks.
    Tasks,
    /// Text for the host: a message to the assistant, or a command the host answers
    /// (`/approve`, `/deny`, `/stop`, `/pause`, `/resume`, `/skills`, a skill's `/command`).
    Send(String),
}

/// The commands, for `/help`: (command, what it does, answered by).
pub const COMMANDS: &[(&str, &str)] = &[
    ("/help", "this list"),
    ("/quit", "leave (also /exit, Ctrl-D, or Ctrl-C twice)"),
    (
        "/status",
        "the host, its channels, and whether agents are paused",
    ),
    ("/tasks", "scheduled tasks and their next run"),
    (
        "/approve N, /deny N",
        "decide what waits for you (a grant, `chat N`, `sender N`)",
    ),
    (
        "/stop",
        "stop every running reply (Ctrl-C during a reply stops this chat's)",
    ),
    (
        "/pause, /resume",
        "stop all agents and scheduled runs until /resume",
    ),
    ("/skills …", "list, enable, disable, approve skills"),
];

/// The `/help` text.
pub fn help() -> String {
    let width = COMMANDS.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let mut out = String::from("Commands (anything else is a message for the assistant):\n");
    for (command, what) in COMMANDS {
        out.push_str(&format!("  {command:<width$}  {what}\n"));
    }
    out.push_str("A paste of several lines is one message. Up/Down recall earlier messages.");
    out
}

/// Parses a submitted input. Line endings from a paste (`\r\n`, `\r`) become `\n`, and a
/// multi-line paste stays one message; blank lines around it are dropped.
pub fn parse(raw: &str) -> Input {
    let text = normalize(raw);
    if text.is_empty() {
        return Input::Empty;
    }
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default();
    let alone = words.next().is_none();
    match first {
        "/help" | "/?" if alone => Input::Help,
        "/quit" | "/exit" if alone => Input::Quit,
        "/status" if alone => Input::Status,
        "/tasks" if alone => Input::Tasks,
        _ => Input::Send(text),
    }
}

/// `raw` with `\n` line endings, trailing blanks cut from each line and blank lines removed
/// from both ends.
pub fn normalize(raw: &str) -> String {
    let unified = raw.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = unified.lines().map(str::trim_end).collect();
    let start = lines.iter().position(|l| !l.trim().is_empty());
    let end = lines.iter().rposition(|l| !l.trim().is_empty());
    match (start, end) {
        (Some(s), Some(e)) => lines[s..=e].join("\n"),
        _ => String::new(),
    }
}

/// What Ctrl-C during a reply sends: the host's `/stop` for the chat it came from.
pub const STOP_THIS_CHAT: &str = "/stop here";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_line_paste_is_one_message_with_its_lines_kept() {
        let pasted = "\r\nfirst line\r\n  indented second  \r\n\r\nthird\r\n\r\n";
        assert_eq!(
            parse(pasted),
            Input::Send("first line\n  indented second\n\nthird".into())
        );
    }

    #[test]
    fn local_commands_are_answered_by_the_client_and_the_rest_goes_to_the_host() {
        assert_eq!(parse("/help"), Input::Help);
        assert_eq!(parse("  /quit "), Input::Quit);
        assert_eq!(parse("/exit"), Input::Quit);
        assert_eq!(parse("/status"), Input::Status);
        assert_eq!(parse("/tasks"), Input::Tasks);
        // Commands the host answers, and skills' commands, go to the host as they are.
        for text in [
            "/approve 3",
            "/deny chat 2",
            "/stop",
            "/pause",
            "/resume",
            "/skills",
            "/count apples",
        ] {
            assert_eq!(parse(text), Input::Send(text.into()), "{text}");
        }
        // A command word with more after it is a message.
        assert_eq!(
            parse("/help me write a poem"),
            Input::Send("/help me write a poem".into())
        );
        assert_eq!(
            parse("what does /status do?"),
            Input::Send("what does /status do?".into())
        );
        assert_eq!(parse("  \r\n \n"), Input::Empty);
    }

    #[test]
    fn help_lists_every_command() {
        let text = help();
        for (command, _) in COMMANDS {
            assert!(text.contains(command), "{command}");
        }
    }
}

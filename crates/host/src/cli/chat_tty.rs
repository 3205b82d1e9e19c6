//! `nanoclaw chat` on a terminal: a line editor with history (reedline; kept in
//! `$NANOCLAW_HOME/chat-history`, 0600), bracketed paste (a multi-line paste is one message), a
//! spinner until the first token, replies drawn as markdown, tool activity folded into one
//! line, local commands (`/help`, `/quit`, `/status`, `/tasks`), Ctrl-C during a reply stops it
//! on the host (`/stop here`, the kill switch's path), and messages from other sources
//! labelled. Spinner, styles and the folded line only when the output is a terminal and
//! `NO_COLOR` is unset.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use nanoclaw_host::channel::sanitize::{TerminalText, for_terminal};
use nanoclaw_host::channel::terminal::{ServerLine, TerminalClient};
use nanoclaw_host::chat_ui::input::{self, Input};
use nanoclaw_host::chat_ui::label::label;
use nanoclaw_host::chat_ui::markdown::{Markdown, Stream};
use nanoclaw_host::config::Paths;
use reedline::{
    ExternalPrinter, FileBackedHistory, Prompt, PromptEditMode, PromptHistorySearch, Reedline,
    Signal,
};
use tokio::sync::mpsc;

/// Lines of history kept.
const HISTORY_LINES: usize = 1000;
const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// What the line editor's thread reports.
enum FromEditor {
    Line(String),
    CtrlC,
    CtrlD,
    Failed(String),
}

/// The line editor, on a thread of its own (it blocks): it shows the prompt when told to and
/// prints lines sent to `printer` above it while it is shown.
struct Editor {
    show_prompt: std::sync::mpsc::Sender<()>,
    lines: mpsc::UnboundedReceiver<FromEditor>,
    printer: std::sync::mpsc::SyncSender<String>,
    /// Whether the prompt is shown (else this side owns the screen).
    editing: bool,
}

impl Editor {
    fn start(history: Option<PathBuf>) -> Editor {
        let printer = ExternalPrinter::<String>::new(256);
        let sender = printer.sender();
        let (show_tx, show_rx) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut editor = Reedline::create()
                .use_bracketed_paste(true)
                .with_external_printer(printer);
            if let Some(path) = history {
                match FileBackedHistory::with_file(HISTORY_LINES, path.clone()) {
                    Ok(h) => editor = editor.with_history(Box::new(h)),
                    Err(e) => eprintln!("(no history: {}: {e})", path.display()),
                }
            }
            while show_rx.recv().is_ok() {
                let out = match editor.read_line(&ChatPrompt) {
                    Ok(Signal::Success(line)) => FromEditor::Line(line),
                    Ok(Signal::CtrlC) => FromEditor::CtrlC,
                    Ok(Signal::CtrlD) => FromEditor::CtrlD,
                    Ok(_) => FromEditor::Line(String::new()),
                    Err(e) => FromEditor::Failed(e.to_string()),
                };
                if tx.send(out).is_err() {
                    break;
                }
            }
        });
        Editor {
            show_prompt: show_tx,
            lines: rx,
            printer: sender,
            editing: false,
        }
    }

    fn prompt(&mut self) {
        if !self.editing && self.show_prompt.send(()).is_ok() {
            self.editing = true;
        }
    }

    /// Prints `text` (lines) above the prompt, or straight out when the prompt is not shown.
    fn print(&self, text: &str) {
        // Never blocks: with the editor's queue full the line is printed straight out.
        if self.editing && self.printer.try_send(text.to_owned()).is_ok() {
            return;
        }
        {
            println!("{text}");
        }
    }
}

struct ChatPrompt;

impl Prompt for ChatPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn render_prompt_indicator(&self, _mode: PromptEditMode) -> Cow<'_, str> {
        Cow::Borrowed("> ")
    }
    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("… ")
    }
    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        Cow::Owned(format!("(search: {}) ", search.term))
    }
}

/// The history file, created 0600 before the editor opens it (it then writes in place).
fn history_file(paths: &Paths) -> Option<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = paths.home.join("chat-history");
    let made = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)));
    match made {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("(no history: {}: {e})", path.display());
            None
        }
    }
}

/// The reply being waited for.
struct Waiting {
    id: String,
    /// A command for the host (`/…`): its answer may come without naming it.
    command: bool,
    /// Ctrl-C sent `/stop here` with this id.
    stop_id: Option<String>,
    /// Reply text streamed so far (its complete lines are drawn).
    stream: Stream,
    clean: TerminalText,
    /// The spinner still turns (nothing arrived yet).
    spinning: bool,
    spin_frame: usize,
    /// Tools used so far, and whether their folded line is on screen.
    tools: usize,
    tool_line: bool,
    /// Reply text was drawn since the last tool line: the final reply is on screen already.
    drew_text: bool,
}

/// The interactive chat. `styled`: draw with styles, spinner and the folded tool line.
pub async fn interactive(client: &mut TerminalClient, paths: &Paths) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    let styled = std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let mut editor = Editor::start(history_file(paths));
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    eprintln!("nanoclaw chat — /help for commands, Ctrl-D to leave.");
    let mut mine: HashSet<String> = HashSet::new();
    let mut waiting: Option<Waiting> = None;
    let mut ctrl_c_at_prompt = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    editor.prompt();
    loop {
        let spinning = waiting.as_ref().is_some_and(|w| w.spinning) && styled;
        tokio::select! {
            from = editor.lines.recv() => {
                editor.editing = false;
                let Some(from) = from else { break };
                match from {
                    FromEditor::CtrlD => break,
                    FromEditor::Failed(e) => anyhow::bail!("the line editor failed: {e}"),
                    FromEditor::CtrlC => {
                        if ctrl_c_at_prompt {
                            break;
                        }
                        ctrl_c_at_prompt = true;
                        eprintln!("(Ctrl-C again, /quit or Ctrl-D to leave)");
                        editor.prompt();
                        continue;
                    }
                    FromEditor::Line(line) => {
                        ctrl_c_at_prompt = false;
                        match input::parse(&line) {
                            Input::Empty => editor.prompt(),
                            Input::Help => {
                                println!("{}", input::help());
                                editor.prompt();
                            }
                            Input::Quit => break,
                            Input::Status => {
                                local_status(paths).await;
                                editor.prompt();
                            }
                            Input::Tasks => {
                                if let Err(e) = super::tasks::list(None, false).await {
                                    eprintln!("! {e:#}");
                                }
                                editor.prompt();
                            }
                            Input::Send(text) => {
                                let id = client.send(&text).await.context("sending the message")?;
                                mine.insert(id.clone());
                                waiting = Some(Waiting {
                                    id,
                                    command: text.starts_with('/'),
                                    stop_id: None,
                                    stream: Stream::new(styled),
                                    clean: TerminalText::new(),
                                    spinning: true,
                                    spin_frame: 0,
                                    tools: 0,
                                    tool_line: false,
                                    drew_text: false,
                                });
                            }
                        }
                    }
                }
            }
            _ = sigint.recv() => {
                // The prompt is not shown (the editor takes Ctrl-C as a key then): a reply runs.
                let Some(w) = waiting.as_mut() else { continue };
                if w.stop_id.is_some() {
                    clear_status(w, styled);
                    eprintln!("\n(left while the reply was being stopped)");
                    break;
                }
                clear_status(w, styled);
                end_partial_line(w, styled);
                let stop = client.send(input::STOP_THIS_CHAT).await.context("sending the stop")?;
                mine.insert(stop.clone());
                w.stop_id = Some(stop);
                eprintln!("^C stopping the reply… (Ctrl-C again leaves)");
            }
            _ = ticker.tick(), if spinning => {
                if let Some(w) = waiting.as_mut() {
                    w.spin_frame = (w.spin_frame + 1) % SPINNER.len();
                    eprint!("\r\x1b[2K\x1b[2m{} thinking…\x1b[0m", SPINNER[w.spin_frame]);
                    let _ = std::io::stderr().flush();
                }
            }
            line = client.next() => {
                let Some(line) = line? else {
                    if let Some(w) = waiting.as_mut() { clear_status(w, styled); }
                    eprintln!("\nthe host went away");
                    return Ok(ExitCode::FAILURE);
                };
                if on_line(line, &mut waiting, &mine, &editor, styled) {
                    waiting = None;
                    editor.prompt();
                }
            }
        }
    }
    if let Some(w) = waiting.as_mut() {
        clear_status(w, styled);
    }
    Ok(ExitCode::SUCCESS)
}

/// Handles one line from the host; `true` when the reply waited for is complete.
fn on_line(
    line: ServerLine,
    waiting: &mut Option<Waiting>,
    mine: &HashSet<String>,
    editor: &Editor,
    styled: bool,
) -> bool {
    let is_mine = |id: &str| mine.contains(id);
    match line {
        ServerLine::Delta { text } => {
            // Deltas of turns this client did not start are not shown live; their reply is.
            let Some(w) = waiting.as_mut() else {
                return false;
            };
            clear_status(w, styled);
            let clean = w.clean.push(&text);
            draw_delta(w, &clean, styled);
            false
        }
        ServerLine::Tool { tool, summary } => {
            let Some(w) = waiting.as_mut() else {
                return false;
            };
            clear_status(w, styled);
            end_partial_line(w, styled);
            w.drew_text = false;
            w.tools += 1;
            let tool = for_terminal(&tool);
            let summary: String = for_terminal(&summary)
                .replace('\n', " ")
                .chars()
                .take(100)
                .collect();
            if styled {
                // One line, rewritten for each tool.
                let count = if w.tools > 1 {
                    format!(" ({} tools)", w.tools)
                } else {
                    String::new()
                };
                eprint!("\r\x1b[2K\x1b[2m⚙ {tool}: {summary}{count}\x1b[0m");
                let _ = std::io::stderr().flush();
                w.tool_line = true;
            } else {
                eprintln!("  [{tool}] {summary}");
            }
            false
        }
        ServerLine::Message {
            kind,
            text,
            reply_to,
            answers,
            ..
        } => {
            let mut ids: Vec<&str> = answers.iter().map(String::as_str).collect();
            if let Some(r) = reply_to.as_deref() {
                ids.push(r);
            }
            let Some(w) = waiting.as_mut() else {
                show_message(editor, &kind, &text, label(&kind, &ids, &is_mine), styled);
                return false;
            };
            let answers_reply = ids.contains(&w.id.as_str());
            let answers_stop = w.stop_id.as_deref().is_some_and(|s| ids.contains(&s));
            let host_answer = w.command && ids.is_empty() && kind != "reply";
            clear_status(w, styled);
            if answers_reply && kind == "reply" && w.drew_text {
                // Streamed already: only the last line is left to draw.
                finish_stream(w, styled);
                println!();
                return true;
            }
            let tag = if answers_reply || answers_stop || host_answer {
                None
            } else {
                label(&kind, &ids, &is_mine)
            };
            end_partial_line(w, styled);
            show_message(editor, &kind, &text, tag, styled);
            // A command's answer (`/stop`, a skill's) ends the wait; a message the agent sends
            // mid-turn does not.
            answers_stop || host_answer || (answers_reply && (kind != "message" || w.command))
        }
        ServerLine::Ack { id, status, detail } if status != "accepted" => {
            let text = for_terminal(&detail.unwrap_or_default());
            editor.print(&format!("({status}: {text})"));
            waiting.as_ref().is_some_and(|w| w.id == id)
        }
        ServerLine::Error { error } => {
            editor.print(&format!("host: {}", for_terminal(&error)));
            false
        }
        ServerLine::Welcome { .. }
        | ServerLine::Ack { .. }
        | ServerLine::Channels { .. }
        | ServerLine::Restarted { .. }
        | ServerLine::Host { .. }
        | ServerLine::Stopping { .. } => false,
    }
}

/// Draws a cleaned delta: complete lines rendered; the unfinished line shown raw for now and
/// redrawn rendered once its newline (or the end) arrives.
fn draw_delta(w: &mut Waiting, clean: &str, styled: bool) {
    w.drew_text = true;
    if !styled {
        print!("{clean}");
        let _ = std::io::stdout().flush();
        w.stream.push(clean);
        return;
    }
    let before = w.stream.partial().to_owned();
    let lines = w.stream.push(clean);
    if lines.is_empty() {
        print!("{}", &w.stream.partial()[before.len()..]);
    } else {
        erase(&before);
        print!("{lines}{}", w.stream.partial());
    }
    let _ = std::io::stdout().flush();
}

/// Draws the streamed text's last, unfinished line rendered (it was shown raw).
fn finish_stream(w: &mut Waiting, styled: bool) {
    let raw = w.stream.partial().to_owned();
    let rest = w.stream.finish();
    if styled && !raw.is_empty() {
        erase(&raw);
        print!("{rest}");
    }
    let _ = std::io::stdout().flush();
}

/// Moves the cursor back over `raw` (the unfinished line, perhaps wrapped) and clears it.
fn erase(raw: &str) {
    if raw.is_empty() {
        return;
    }
    let cols = terminal_columns().max(1);
    let rows = raw.chars().count().saturating_sub(1) / cols;
    print!("\r");
    for _ in 0..rows {
        print!("\x1b[1A");
    }
    print!("\x1b[J");
}

fn terminal_columns() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize we own; stdout may not be a terminal (then 80).
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0 {
            usize::from(size.ws_col)
        } else {
            80
        }
    }
}

/// Clears the spinner or ends the folded tool line, whichever is on screen.
fn clear_status(w: &mut Waiting, styled: bool) {
    if w.spinning {
        w.spinning = false;
        if styled {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
    if w.tool_line {
        w.tool_line = false;
        eprintln!();
    }
}

/// Ends a streamed line that is not complete yet (something else is printed below it).
fn end_partial_line(w: &mut Waiting, styled: bool) {
    if !w.stream.partial().is_empty() {
        finish_stream(w, styled);
        println!();
    }
}

/// A whole message: rendered, labelled when it is not an answer to this client.
fn show_message(editor: &Editor, kind: &str, text: &str, tag: Option<String>, styled: bool) {
    let text = for_terminal(text);
    let body = Markdown::new(styled).render(&text);
    let body = match (kind, tag) {
        ("error", Some(tag)) => format!("{tag} {body}"),
        ("error", None) => format!("! {body}"),
        (_, Some(tag)) if styled => format!("\x1b[2m{tag}\x1b[0m {body}"),
        (_, Some(tag)) => format!("{tag} {body}"),
        (_, None) => body,
    };
    editor.print(&body);
}

/// `/status`: the host and its channels, and whether the owner paused agents.
async fn local_status(paths: &Paths) {
    if let Err(e) = super::status::status(false).await {
        eprintln!("! {e:#}");
    }
    if let Ok((_, _, store)) = super::open_existing() {
        match store.paused().await {
            Ok(Some(p)) => println!("agents: paused by {} (`/resume` to resume)", p.by),
            Ok(None) => println!("agents: running (`/pause` stops them all)"),
            Err(e) => eprintln!("! {e}"),
        }
    }
    let _ = paths;
}

//! The owner's kill switch, from any of the owner's main chats (the same check as `/approve`
//! and `/skills`, [`owner_command_chat`]), answered by the host and never passed to an agent:
//!
//! - `/stop` stops every running turn: its sandbox is killed at once (so no further tool runs —
//!   this is how the switch is "checked at every tool boundary": there is no next boundary),
//!   and its messages are marked done without a reply, so they are not answered again, not
//!   even after a restart. `/stop here` stops only the turns answering the chat it was sent
//!   from (what Ctrl-C in `nanoclaw chat` sends).
//! - `/pause` stops every running turn the same way, stops idle agents, and persists the pause
//!   in the store: until `/resume` no agent starts and no scheduled task fires, also across a
//!   restart. Messages that arrive meanwhile are stored and answered after `/resume`; tasks due
//!   meanwhile run once on `/resume`, marked late (as after downtime; `[scheduler] missed_runs =
//!   "skip"` skips them instead).
//! - `/resume` lifts the pause.
//!
//! From any other chat the same words have no effect on the switch: the attempt is written to
//! the audit log as refused, and the message is routed as an ordinary one.
//!
//! [`owner_command_chat`]: super::owner_command_chat

use std::collections::HashMap;
use std::sync::Arc;

use nanoclaw_store::OutboundKind;
use tokio::sync::watch;

use super::Inner;
use crate::channel::{InboundEvent, RouteOutcome};
use crate::now_ms;

/// A kill-switch command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `/stop`: every running turn.
    StopAll,
    /// `/stop here`: the turns answering this chat.
    StopHere,
    /// `/pause`
    Pause,
    /// `/resume`
    Resume,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::StopAll | Command::StopHere => "stop",
            Command::Pause => "pause",
            Command::Resume => "resume",
        }
    }
}

/// `/stop`, `/stop here`, `/pause`, `/resume` (surrounding blanks ignored); anything else is
/// not a kill-switch command.
pub fn parse(text: &str) -> Option<Command> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["/stop"] => Some(Command::StopAll),
        ["/stop", "here"] => Some(Command::StopHere),
        ["/pause"] => Some(Command::Pause),
        ["/resume"] => Some(Command::Resume),
        _ => None,
    }
}

/// A turn that is running now and how to stop it.
pub(super) struct RunningTurn {
    /// The chat it answers, as (channel, platform chat id).
    chat: (String, String),
    /// The group's folder, for the owner's answer.
    folder: String,
    /// Set to the reason when the owner stops the turn.
    stop: watch::Sender<Option<String>>,
}

/// The running turns, by session (a session runs one turn at a time).
#[derive(Default)]
pub(super) struct RunningTurns(std::sync::Mutex<HashMap<String, RunningTurn>>);

/// Registered while a turn runs; unregisters on drop. `stopped` hears the owner's reason.
pub(super) struct TurnGuard {
    inner: Arc<Inner>,
    session: String,
    pub(super) stopped: watch::Receiver<Option<String>>,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if let Ok(mut running) = self.inner.running.0.lock() {
            running.remove(&self.session);
        }
    }
}

impl TurnGuard {
    /// The reason the owner stopped this turn, if they did.
    pub(super) fn reason(&self) -> Option<String> {
        self.stopped.borrow().clone()
    }
}

/// Registers a turn of `session` answering `chat` before its agent is taken, so a `/stop` or
/// `/pause` from now on reaches it.
pub(super) fn register(
    inner: &Arc<Inner>,
    session: &str,
    chat: (String, String),
    folder: String,
) -> TurnGuard {
    let (stop, stopped) = watch::channel(None);
    if let Ok(mut running) = inner.running.0.lock() {
        running.insert(session.to_owned(), RunningTurn { chat, folder, stop });
    }
    TurnGuard {
        inner: Arc::clone(inner),
        session: session.to_owned(),
        stopped,
    }
}

/// Signals every running turn (or those answering `only`) to stop with `reason`; returns
/// what was stopped, as "folder (channel:chat)".
fn stop_turns(inner: &Inner, only: Option<(&str, &str)>, reason: &str) -> Vec<String> {
    let Ok(running) = inner.running.0.lock() else {
        return Vec::new();
    };
    let mut stopped = Vec::new();
    for turn in running.values() {
        if let Some((channel, chat)) = only
            && (turn.chat.0 != channel || turn.chat.1 != chat)
        {
            continue;
        }
        if turn.stop.borrow().is_none() {
            turn.stop.send_replace(Some(reason.to_owned()));
            stopped.push(format!("{} ({}:{})", turn.folder, turn.chat.0, turn.chat.1));
        }
    }
    stopped.sort();
    stopped
}

/// Whether the owner paused the host.
pub(super) fn is_paused(inner: &Inner) -> bool {
    *inner.paused.borrow()
}

/// Answers a kill-switch command from one of the owner's main chats; `None` for anything else,
/// and for such a command from another chat (audited as refused, then routed as usual).
pub(super) async fn intercept(inner: &Arc<Inner>, event: &InboundEvent) -> Option<RouteOutcome> {
    let command = parse(&event.text)?;
    let by = format!("chat {}:{}", event.channel, event.chat_id);
    // Host-wide, so filed under the main group (whatever its folder is called).
    let main = match inner.store.main_group().await {
        Ok(Some(g)) => g.folder,
        _ => "main".to_owned(),
    };
    let chat_id = match super::owner_command_chat(&inner.store, event).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            crate::admin_audit::record(
                &inner.store,
                &main,
                format!("/host/{}", command.name()),
                false,
                format!(
                    "refused: /{} from {by}, which is not one of the owner's main chats",
                    command.name()
                ),
            )
            .await;
            tracing::warn!(channel = %event.channel, chat = %event.chat_id, command = command.name(), "kill-switch command from a chat that is not the owner's: no effect");
            return None;
        }
        Err(e) => {
            return Some(RouteOutcome::Failed(format!(
                "could not check who may use /{}: {e}",
                command.name()
            )));
        }
    };
    let reply = match apply(inner, command, event, &by).await {
        Ok(text) => text,
        Err(e) => format!("Could not do that: {e}"),
    };
    crate::admin_audit::record(
        &inner.store,
        &main,
        format!("/host/{}", command.name()),
        true,
        format!("/{} by {by}: {reply}", command.name()),
    )
    .await;
    // A reply to the command, to the client that asked: `nanoclaw chat -m /stop` waits for it.
    let (outcome, queued) = super::queue_command_answer(
        &inner.store,
        chat_id,
        event,
        "kill-switch",
        reply,
        OutboundKind::Reply,
    )
    .await;
    // Not stored as an inbound row, so no `in_reply_to` names the command: the map does.
    if let Some(id) = queued
        && let Ok(mut map) = inner.answers.lock()
    {
        map.insert(id, vec![event.platform_msg_id.clone()]);
    }
    inner.delivery_wake.notify_one();
    Some(outcome)
}

/// Carries out `command`; the owner's answer.
async fn apply(
    inner: &Arc<Inner>,
    command: Command,
    event: &InboundEvent,
    by: &str,
) -> Result<String, String> {
    match command {
        Command::StopAll | Command::StopHere => {
            let only = (command == Command::StopHere)
                .then_some((event.channel.as_str(), event.chat_id.as_str()));
            let stopped = stop_turns(
                inner,
                only,
                &format!("stopped by the owner (/stop from {by})"),
            );
            Ok(if stopped.is_empty() {
                "Nothing was running.".to_owned()
            } else {
                said_stopped(&stopped)
            })
        }
        Command::Pause => {
            let before = inner
                .store
                .set_paused(Some(by.to_owned()), now_ms())
                .await
                .map_err(|e| format!("could not save the pause: {e}"))?;
            // Set before the running turns are stopped: a turn registering from now on sees it.
            inner.paused.send_replace(true);
            let stopped = stop_turns(
                inner,
                None,
                &format!("stopped by the owner (/pause from {by})"),
            );
            inner.pool.stop_all().await;
            tracing::warn!(%by, stopped = stopped.len(), "the owner paused the host");
            let mut text = match before {
                Some(p) => format!("Already paused (since {} by {}).", when(p.since), p.by),
                None => "Paused: no agent starts and no scheduled task runs until `/resume`, also \
                         after a restart."
                    .to_owned(),
            };
            if !stopped.is_empty() {
                text.push(' ');
                text.push_str(&said_stopped(&stopped));
            }
            text.push_str(
                " Messages that arrive meanwhile are kept and answered after `/resume`; tasks due \
                 meanwhile run once then, marked late.",
            );
            Ok(text)
        }
        Command::Resume => {
            let before = inner
                .store
                .set_paused(None, now_ms())
                .await
                .map_err(|e| format!("could not save the resume: {e}"))?;
            inner.paused.send_replace(false);
            // Waiting messages and due tasks are looked at again now.
            inner.tasks.wake();
            inner.scheduler_wake.notify_one();
            tracing::warn!(%by, "the owner resumed the host");
            Ok(match before {
                Some(p) => format!(
                    "Resumed (paused since {} by {}): waiting messages are answered and due \
                     tasks run now.",
                    when(p.since),
                    p.by
                ),
                None => "Not paused; nothing to resume.".to_owned(),
            })
        }
    }
}

/// What the owner is told of the turns a `/stop` or `/pause` stopped (`stopped` not empty).
fn said_stopped(stopped: &[String]) -> String {
    format!(
        "Stopped {} running turn{}: {}. Their messages are marked done and will not be \
         answered, not even after a restart.",
        stopped.len(),
        if stopped.len() == 1 { "" } else { "s" },
        stopped.join(", ")
    )
}

/// A unix-ms time for the owner, in UTC.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_commands_are_kill_switch_commands() {
        assert_eq!(parse("/stop"), Some(Command::StopAll));
        assert_eq!(parse("  /stop  "), Some(Command::StopAll));
        assert_eq!(parse("/stop here"), Some(Command::StopHere));
        assert_eq!(parse("/pause"), Some(Command::Pause));
        assert_eq!(parse("/resume"), Some(Command::Resume));
        // Talking about the command is a message for the assistant.
        assert_eq!(parse("/stop the music please"), None);
        assert_eq!(parse("please /stop"), None);
        assert_eq!(parse("/STOP"), None);
        assert_eq!(parse("/stopped"), None);
    }
}

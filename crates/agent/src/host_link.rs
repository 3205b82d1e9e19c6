//! The agent's side of the host link: one writer task owns stdout, and requests to the
//! host are matched to their results by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoclaw_protocol::{
    AgentMessage, LineWriter, LogLevel, MAX_TEXT_PIECE_BYTES, Request, RequestAction,
    RequestResult, WriteError, encode_line, split_text,
};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};

enum Outgoing {
    Message(AgentMessage),
    Flush(oneshot::Sender<()>),
}

/// Sends protocol messages to the host. Cheap to clone; sending never blocks, so it can be
/// used from the model's streaming callback.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Outbox {
    /// Starts the writer task that owns `output` (stdout): nothing else may write to it.
    pub fn spawn_writer<W: AsyncWrite + Unpin + Send + 'static>(output: W) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        tokio::spawn(async move {
            let mut writer = LineWriter::new(output);
            let mut broken = false;
            while let Some(item) = rx.recv().await {
                match item {
                    Outgoing::Message(msg) => {
                        if broken {
                            continue;
                        }
                        if let Err(e) = writer.send(&msg).await {
                            // Keep draining so senders never notice; the host is gone or
                            // the message was unencodable.
                            tracing::error!(error = %e, "writing a protocol message failed");
                            broken = matches!(e, nanoclaw_protocol::WriteError::Io(_));
                        }
                    }
                    Outgoing::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { tx }
    }

    /// An outbox whose messages land in a channel instead of a stream (for tests and
    /// embedding).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<AgentMessage>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Outgoing::Message(msg) => {
                        let _ = out_tx.send(msg);
                    }
                    Outgoing::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        (Self { tx }, out_rx)
    }

    /// Queues `msg`, split or cut first so that every frame fits in a protocol line (see
    /// [`fit`]): a message the writer could not encode would be lost and leave the host
    /// waiting for it.
    pub fn send(&self, msg: AgentMessage) {
        for frame in fit(msg) {
            if self.tx.send(Outgoing::Message(frame)).is_err() {
                tracing::warn!("protocol writer is gone; message dropped");
                return;
            }
        }
    }

    /// A log line for the host (also logged locally).
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        let message = message.into();
        match level {
            LogLevel::Debug => tracing::debug!("{message}"),
            LogLevel::Info => tracing::info!("{message}"),
            LogLevel::Warn => tracing::warn!("{message}"),
            LogLevel::Error => tracing::error!("{message}"),
        }
        self.send(AgentMessage::Log { level, message });
    }

    /// Waits until every message sent before this call has been written.
    pub async fn flush(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Outgoing::Flush(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// Longest error, log or tool-summary text sent in one message; longer text is cut (these
/// are for people and logs, not data).
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// `msg` as frames that each fit in one protocol line: long text deltas become several
/// deltas, a long reply becomes `reply_part` frames followed by `turn_finished` with the
/// last piece (protocol 1.3), and long notes (logs, errors, summaries) are cut. Requests
/// are checked by [`HostLink::request`] before they get here.
pub fn fit(msg: AgentMessage) -> Vec<AgentMessage> {
    match msg {
        AgentMessage::TextDelta { turn_id, text } if text.len() > MAX_TEXT_PIECE_BYTES => {
            split_text(&text, MAX_TEXT_PIECE_BYTES)
                .into_iter()
                .map(|piece| AgentMessage::TextDelta {
                    turn_id: turn_id.clone(),
                    text: piece.to_owned(),
                })
                .collect()
        }
        AgentMessage::TurnFinished(mut done) if done.reply.len() > MAX_TEXT_PIECE_BYTES => {
            let reply = std::mem::take(&mut done.reply);
            let mut pieces = split_text(&reply, MAX_TEXT_PIECE_BYTES);
            let last = pieces.pop().unwrap_or_default();
            let mut frames: Vec<AgentMessage> = pieces
                .into_iter()
                .map(|piece| AgentMessage::ReplyPart {
                    turn_id: done.turn_id.clone(),
                    text: piece.to_owned(),
                })
                .collect();
            done.reply = last.to_owned();
            frames.push(AgentMessage::TurnFinished(done));
            frames
        }
        AgentMessage::TurnFailed {
            turn_id,
            error,
            retryable,
        } => vec![AgentMessage::TurnFailed {
            turn_id,
            error: cut(error),
            retryable,
        }],
        AgentMessage::Log { level, message } => vec![AgentMessage::Log {
            level,
            message: cut(message),
        }],
        AgentMessage::Fatal { error } => vec![AgentMessage::Fatal { error: cut(error) }],
        AgentMessage::ToolActivity(mut activity) => {
            activity.tool = cut(activity.tool);
            activity.summary = cut(activity.summary);
            vec![AgentMessage::ToolActivity(activity)]
        }
        other => vec![other],
    }
}

/// `text` cut to [`MAX_NOTE_BYTES`], saying how much was left out.
fn cut(mut text: String) -> String {
    if text.len() <= MAX_NOTE_BYTES {
        return text;
    }
    let total = text.len();
    let mut end = MAX_NOTE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(" […{} more bytes cut]", total - end));
    text
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "the {action} request is {len} bytes, over the protocol's {limit}-byte line limit; send less at once"
    )]
    TooLarge {
        action: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("the host did not answer the {action} request within {secs} s")]
    Timeout { action: &'static str, secs: u64 },
    #[error("the host link closed before the {action} request was answered")]
    Closed { action: &'static str },
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<RequestResult>>>>;

/// Sends [`Request`]s to the host and waits for the matching [`RequestResult`].
#[derive(Clone)]
pub struct HostLink {
    outbox: Outbox,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl HostLink {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            pending: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Sends `action` for `turn_id` and waits up to `timeout` for the host's answer.
    pub async fn request(
        &self,
        turn_id: &str,
        action: RequestAction,
        timeout: Duration,
    ) -> Result<RequestResult, RequestError> {
        let name = action_name(&action);
        let request_id = format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let message = AgentMessage::Request(Request {
            request_id: request_id.clone(),
            turn_id: turn_id.to_owned(),
            action,
        });
        // Refused here, at once: the writer could not send it, and the tool would wait for
        // an answer that never comes.
        if let Err(WriteError::TooLong { len, limit }) = encode_line(&message) {
            return Err(RequestError::TooLarge {
                action: name,
                len,
                limit,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.lock().insert(request_id.clone(), tx);
        self.outbox.send(message);
        let outcome = tokio::time::timeout(timeout, rx).await;
        self.lock().remove(&request_id);
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(RequestError::Closed { action: name }),
            Err(_) => Err(RequestError::Timeout {
                action: name,
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Hands a result from the host to the request waiting for it. Returns false when no
    /// request with that id is waiting (late, duplicate or made up).
    pub fn resolve(&self, result: RequestResult) -> bool {
        let waiting = self.lock().remove(&result.request_id);
        match waiting {
            Some(tx) => tx.send(result).is_ok(),
            None => false,
        }
    }

    /// Fails every waiting request (the host link is closed).
    pub fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<RequestResult>>> {
        // A poisoned map only means a panic elsewhere; the data is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn action_name(action: &RequestAction) -> &'static str {
    match action {
        RequestAction::SendMessage { .. } => "send_message",
        RequestAction::ListGroups => "list_groups",
        RequestAction::RegisterChat { .. } => "register_chat",
        RequestAction::UpdateGroup { .. } => "update_group",
        RequestAction::ScheduleTask { .. } => "schedule_task",
        RequestAction::ListTasks => "list_tasks",
        RequestAction::UpdateTask { .. } => "update_task",
        RequestAction::PauseTask { .. } => "pause_task",
        RequestAction::ResumeTask { .. } => "resume_task",
        RequestAction::CancelTask { .. } => "cancel_task",
        RequestAction::MemorySave { .. } => "memory_save",
        RequestAction::MemorySearch { .. } => "memory_search",
        RequestAction::MemoryForget { .. } => "memory_forget",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_protocol::{MAX_LINE_BYTES, TurnFinished, Usage};

    #[test]
    fn a_long_reply_becomes_parts_that_each_fit_a_line() {
        // Control characters grow sixfold in JSON: the worst case for a piece.
        let reply = "\u{1}".repeat(MAX_LINE_BYTES + 3);
        let frames = fit(AgentMessage::TurnFinished(TurnFinished {
            turn_id: "t".into(),
            reply: reply.clone(),
            usage: Usage::default(),
            precheck: None,
        }));
        assert!(frames.len() > 2);
        let mut joined = String::new();
        for (i, frame) in frames.iter().enumerate() {
            assert!(encode_line(frame).is_ok(), "frame {i} fits");
            match frame {
                AgentMessage::ReplyPart { text, .. } if i + 1 < frames.len() => {
                    joined.push_str(text)
                }
                AgentMessage::TurnFinished(done) if i + 1 == frames.len() => {
                    joined.push_str(&done.reply)
                }
                other => panic!("unexpected frame {i}: {other:?}"),
            }
        }
        assert_eq!(joined, reply);
    }

    #[test]
    fn long_notes_are_cut_and_say_so() {
        let frames = fit(AgentMessage::TurnFailed {
            turn_id: "t".into(),
            error: "é".repeat(MAX_LINE_BYTES),
            retryable: false,
        });
        let [AgentMessage::TurnFailed { error, .. }] = frames.as_slice() else {
            panic!("{frames:?}");
        };
        assert!(error.len() < MAX_NOTE_BYTES + 100);
        assert!(
            error.ends_with("more bytes cut]"),
            "{}",
            &error[error.len() - 40..]
        );
    }
}

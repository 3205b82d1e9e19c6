//! The agent's side of the host link: one writer task owns stdout, and requests to the
//! host are matched to their results by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoclaw_protocol::{
    AgentMessage, LineWriter, LogLevel, Request, RequestAction, RequestResult,
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

    pub fn send(&self, msg: AgentMessage) {
        if self.tx.send(Outgoing::Message(msg)).is_err() {
            tracing::warn!("protocol writer is gone; message dropped");
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

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
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
        let (tx, rx) = oneshot::channel();
        self.lock().insert(request_id.clone(), tx);
        self.outbox.send(AgentMessage::Request(Request {
            request_id: request_id.clone(),
            turn_id: turn_id.to_owned(),
            action,
        }));
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
        RequestAction::ScheduleTask { .. } => "schedule_task",
        RequestAction::ListTasks => "list_tasks",
        RequestAction::UpdateTask { .. } => "update_task",
        RequestAction::PauseTask { .. } => "pause_task",
        RequestAction::ResumeTask { .. } => "resume_task",
        RequestAction::CancelTask { .. } => "cancel_task",
    }
}

//! The terminal channel: `nanoclaw chat` talks to the host over a Unix socket in
//! `$NANOCLAW_HOME/run/terminal.sock` (mode 0600, so only the owner can connect).
//!
//! The terminal is the owner's own chat (chat id `local`), wired to the main group, so
//! every message triggers the agent. Lines on the socket are JSON objects:
//! client → host `{"type":"message","id":…,"text":…}`;
//! host → client `ack`, `delta`, `tool`, `message` (see [`ServerLine`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    Channel, ChannelContext, ChannelError, ChannelEvent, InboundEvent, InboundSink,
    OutgoingMessage, Progress, RouteOutcome,
};

/// The only chat the terminal has: the owner at the keyboard.
pub const TERMINAL_CHAT_ID: &str = "local";
const MAX_CLIENT_LINE: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientLine {
    Message {
        id: String,
        text: String,
    },
    /// The owner's CLI changed the database (e.g. `nanoclaw tasks run-now`): look again now.
    Wake,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerLine {
    /// Sent on connect.
    Welcome { assistant: String },
    /// What became of a client message: `accepted`, `duplicate`, `ignored`, `failed`.
    Ack {
        id: String,
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Reply text as the model writes it.
    Delta { text: String },
    /// The agent is using a tool.
    Tool { tool: String, summary: String },
    /// A delivered message (`reply`, `message` or `error`).
    Message {
        key: String,
        kind: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    /// The client sent something the host could not use.
    Error { error: String },
}

pub fn factory(ctx: &ChannelContext<'_>) -> Result<Option<Arc<dyn Channel>>, ChannelError> {
    if !ctx.config.channels.terminal.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(TerminalChannel::new(
        ctx.paths.terminal_socket(),
        ctx.config.assistant_name.clone(),
    ))))
}

type ClientTx = mpsc::UnboundedSender<ServerLine>;

pub struct TerminalChannel {
    socket: PathBuf,
    assistant: String,
    clients: Mutex<HashMap<u64, ClientTx>>,
    next_client: AtomicU64,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TerminalChannel {
    pub fn new(socket: PathBuf, assistant: String) -> Self {
        Self {
            socket,
            assistant,
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            accept_task: Mutex::new(None),
        }
    }

    async fn broadcast(&self, line: ServerLine) -> usize {
        let mut clients = self.clients.lock().await;
        clients.retain(|_, tx| tx.send(line.clone()).is_ok());
        clients.len()
    }

    async fn serve_client(self: Arc<Self>, stream: tokio::net::UnixStream, sink: InboundSink) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<ServerLine>();
        let _ = tx.send(ServerLine::Welcome {
            assistant: self.assistant.clone(),
        });
        self.clients.lock().await.insert(id, tx.clone());
        let writer = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let Ok(mut bytes) = serde_json::to_vec(&line) else {
                    continue;
                };
                bytes.push(b'\n');
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        // Queued replies can go out now that someone is listening.
        let _ = sink
            .send(ChannelEvent::Reachable {
                channel: "terminal".into(),
                chat_id: TERMINAL_CHAT_ID.into(),
            })
            .await;

        let mut reader = BufReader::new(read);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = match (&mut reader)
                .take(MAX_CLIENT_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .await
            {
                Ok(n) => n,
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            if buf.len() > MAX_CLIENT_LINE {
                let _ = tx.send(ServerLine::Error {
                    error: format!("line longer than {MAX_CLIENT_LINE} bytes; disconnecting"),
                });
                break;
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let msg: ClientLine = match serde_json::from_str(line) {
                Ok(m) => m,
                Err(e) => {
                    let _ = tx.send(ServerLine::Error {
                        error: format!("unreadable line ({e}); expected {{\"type\":\"message\",\"id\":…,\"text\":…}}"),
                    });
                    continue;
                }
            };
            let (msg_id, text) = match msg {
                ClientLine::Message { id, text } => (id, text),
                ClientLine::Wake => {
                    if sink.send(ChannelEvent::Wake).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let (ack_tx, ack_rx) = oneshot::channel();
            let event = InboundEvent {
                channel: "terminal".into(),
                chat_id: TERMINAL_CHAT_ID.into(),
                chat_name: "Terminal".into(),
                is_group: false,
                thread: None,
                platform_msg_id: msg_id.clone(),
                sender: "terminal:owner".into(),
                sender_name: std::env::var("USER").ok(),
                text,
                received_at: crate::now_ms(),
                ack: Some(ack_tx),
            };
            if sink.send(ChannelEvent::Inbound(event)).await.is_err() {
                let _ = tx.send(ServerLine::Error {
                    error: "the host is shutting down".into(),
                });
                break;
            }
            let (status, detail) = match ack_rx.await {
                Ok(RouteOutcome::Accepted) => ("accepted", None),
                Ok(RouteOutcome::Duplicate) => ("duplicate", None),
                Ok(RouteOutcome::Ignored(why)) => ("ignored", Some(why)),
                Ok(RouteOutcome::Failed(why)) => ("failed", Some(why)),
                Err(_) => ("failed", Some("the host dropped the message".to_owned())),
            };
            let _ = tx.send(ServerLine::Ack {
                id: msg_id,
                status: status.into(),
                detail,
            });
        }
        self.clients.lock().await.remove(&id);
        drop(tx);
        let _ = writer.await;
    }
}

#[async_trait]
impl Channel for TerminalChannel {
    fn name(&self) -> &'static str {
        "terminal"
    }

    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        if let Some(parent) = self.socket.parent() {
            crate::config::create_private_dir(parent)
                .map_err(|e| ChannelError::Setup(format!("{}: {e}", parent.display())))?;
        }
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket).map_err(|e| {
            ChannelError::Setup(format!("cannot listen on {}: {e}", self.socket.display()))
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| ChannelError::Setup(format!("{}: {e}", self.socket.display())))?;
        }
        let me = Arc::clone(&self);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(Arc::clone(&me).serve_client(stream, sink.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "terminal channel accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        *self.accept_task.lock().await = Some(task);
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let reached = self
            .broadcast(ServerLine::Message {
                key: message.idempotency_key.clone(),
                kind: message.kind.clone(),
                text: message.text.clone(),
                reply_to: message.reply_to.clone(),
            })
            .await;
        if reached == 0 {
            return Err(ChannelError::NotConnected("no terminal client".into()));
        }
        Ok(Some(message.idempotency_key.clone()))
    }

    async fn progress(&self, _chat_id: &str, progress: Progress) {
        let line = match progress {
            Progress::TextDelta(text) => ServerLine::Delta { text },
            Progress::Tool { tool, summary } => ServerLine::Tool { tool, summary },
        };
        self.broadcast(line).await;
    }

    async fn stop(&self) {
        if let Some(task) = self.accept_task.lock().await.take() {
            task.abort();
        }
        self.clients.lock().await.clear();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The client side of the terminal channel, used by `nanoclaw chat` and by tests.
pub struct TerminalClient {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    /// Keys of messages already shown. A host that crashed between delivering a message
    /// and recording it delivers it again after restart; the client shows it once.
    seen_keys: std::collections::HashSet<String>,
}

impl TerminalClient {
    pub async fn connect(socket: &std::path::Path) -> std::io::Result<TerminalClient> {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (read, write) = stream.into_split();
        Ok(TerminalClient {
            lines: BufReader::new(read).lines(),
            write,
            seen_keys: std::collections::HashSet::new(),
        })
    }

    /// Sends a message with a fresh id, which is returned.
    pub async fn send(&mut self, text: &str) -> std::io::Result<String> {
        let id = format!("term-{}-{}", crate::now_ms(), crate::random_suffix(6));
        self.send_with_id(&id, text).await?;
        Ok(id)
    }

    /// Sends a message with a chosen id (re-sending the same id is deduplicated).
    pub async fn send_with_id(&mut self, id: &str, text: &str) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&ClientLine::Message {
            id: id.to_owned(),
            text: text.to_owned(),
        })
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write.write_all(&line).await
    }

    /// Tells the host that the database changed under it (scheduled tasks, queued runs).
    pub async fn wake(&mut self) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&ClientLine::Wake).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write.write_all(&line).await?;
        self.write.flush().await
    }

    /// Sends raw bytes (tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// The next line from the host; `None` when the host closed the connection.
    pub async fn next(&mut self) -> std::io::Result<Option<ServerLine>> {
        loop {
            let Some(line) = self.lines.next_line().await? else {
                return Ok(None);
            };
            match serde_json::from_str::<ServerLine>(&line) {
                Ok(ServerLine::Message { ref key, .. }) if !self.seen_keys.insert(key.clone()) => {
                    tracing::debug!(%key, "skipping a message delivered twice");
                }
                Ok(parsed) => return Ok(Some(parsed)),
                Err(e) => {
                    tracing::debug!(error = %e, "skipping an unreadable line from the host");
                }
            }
        }
    }

    /// Waits for the reply (or error) to message `id`, skipping everything else.
    pub async fn reply_to(&mut self, id: &str) -> std::io::Result<Option<ServerLine>> {
        while let Some(line) = self.next().await? {
            match &line {
                ServerLine::Message { kind, reply_to, .. }
                    if reply_to.as_deref() == Some(id) && (kind == "reply" || kind == "error") =>
                {
                    return Ok(Some(line));
                }
                ServerLine::Ack {
                    id: acked, status, ..
                } if acked == id && status != "accepted" => return Ok(Some(line)),
                _ => {}
            }
        }
        Ok(None)
    }
}

//! The terminal channel: `nanoclaw chat` talks to the host over a Unix socket in
//! `$NANOCLAW_HOME/run/terminal.sock` (mode 0600, so only the owner can connect).
//!
//! The terminal is the owner's own chat (chat id `local`), wired to the main group, so
//! every message triggers the agent. Lines on the socket are JSON objects:
//! client → host `{"type":"message","id":…,"text":…}`, `show`, `wake` (see [`ClientLine`]);
//! host → client `welcome`, `ack`, `delta`, `tool`, `message`, `error` (see [`ServerLine`]).
//!
//! A client sees either the whole chat ([`Scope::All`], `nanoclaw chat` on a terminal) or
//! only the answers to the messages it sent ([`Scope::Own`], `nanoclaw chat -m` and piped
//! input). A message counts as delivered only once a client that shows it has it written
//! to its socket; otherwise it stays queued.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::{
    Channel, ChannelContext, ChannelError, ChannelEvent, InboundEvent, InboundSink,
    OutgoingMessage, Progress, RouteOutcome,
};

/// The only chat the terminal has: the owner at the keyboard.
pub const TERMINAL_CHAT_ID: &str = "local";
/// The terminal channel's name.
pub const NAME: &str = "terminal";
const MAX_CLIENT_LINE: usize = 256 * 1024;
/// How long a delivery waits for a client's socket to take a message; a client that stopped
/// reading does not hold up delivery to everyone else.
const WRITE_CONFIRM: Duration = Duration::from_secs(5);
/// How long a new client has to say what it shows before it is shown the whole chat.
const DECLARE_GRACE: Duration = Duration::from_millis(300);

/// What a client shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The owner's whole chat: every message, reply and live progress (the default).
    #[default]
    All,
    /// Only the replies (and progress) of turns that answer messages this client sent.
    Own,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientLine {
    Message {
        id: String,
        text: String,
    },
    /// The owner's CLI changed the database (e.g. `nanoclaw tasks run-now`): look again now.
    Wake,
    /// What this client shows from now on (default [`Scope::All`]).
    Show {
        scope: Scope,
    },
    /// `nanoclaw channel status`: every channel's health.
    ChannelStatus,
    /// `nanoclaw channel restart NAME`.
    RestartChannel {
        name: String,
    },
    /// `nanoclaw status`: the host's own live state.
    HostStatus,
    /// `nanoclaw stop`: shut down as on SIGTERM.
    Stop,
}

/// One channel's health, for `nanoclaw channel status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelReport {
    pub name: String,
    pub health: nanoclaw_channel::Health,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerLine {
    /// Sent on connect; `warning` says why agents cannot run, when they cannot.
    Welcome {
        assistant: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
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
        /// Every message this answers (all messages of a batched turn), `reply_to` among them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        answers: Vec<String>,
    },
    /// The client sent something the host could not use.
    Error { error: String },
    /// Every channel's health (answers [`ClientLine::ChannelStatus`]).
    Channels { channels: Vec<ChannelReport> },
    /// A channel was restarted (answers [`ClientLine::RestartChannel`]).
    Restarted {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The host's live state (answers [`ClientLine::HostStatus`]).
    Host { host: super::HostState },
    /// The host is shutting down (answers [`ClientLine::Stop`]).
    Stopping { pid: u32 },
}

pub fn factory(ctx: &ChannelContext<'_>) -> Option<Arc<dyn Channel>> {
    if !ctx.config.channels.terminal.enabled {
        return None;
    }
    let mut channel = TerminalChannel::new(
        ctx.paths.terminal_socket(),
        ctx.config.assistant_name.clone(),
    );
    channel.warning = ctx.warning.clone();
    channel.files_dir = Some(ctx.paths.channel_dir(NAME).join("files"));
    Some(Arc::new(channel))
}

/// A line for one client; `written` hears when it reached the client's socket.
struct Outgoing {
    line: ServerLine,
    written: Option<oneshot::Sender<()>>,
}

type ClientTx = mpsc::UnboundedSender<Outgoing>;

struct Client {
    tx: ClientTx,
    scope: Scope,
    /// Ids of the messages this client sent.
    asked: HashSet<String>,
}

impl Client {
    /// Whether this client shows a message that answers `answers` (empty: answers nothing).
    fn shows(&self, answers: &[String]) -> bool {
        self.scope == Scope::All || answers.iter().any(|a| self.asked.contains(a))
    }
}

pub struct TerminalChannel {
    socket: PathBuf,
    assistant: String,
    /// Why agents cannot run, told to every client on connect.
    warning: Option<String>,
    clients: Mutex<HashMap<u64, Client>>,
    next_client: AtomicU64,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Clients connected right now.
    connected: watch::Sender<usize>,
    /// Set by [`Channel::until_unattended`]: stop once nobody was connected for this long.
    linger: watch::Sender<Option<Duration>>,
    /// Becomes `true` when the channel stopped accepting because nobody was connected.
    unattended: watch::Sender<bool>,
    /// Where files the agent sends are kept for the owner (the outbox copy goes once the
    /// message is delivered). `None`: only their names and sizes are shown.
    files_dir: Option<PathBuf>,
}

impl TerminalChannel {
    pub fn new(socket: PathBuf, assistant: String) -> Self {
        Self {
            socket,
            assistant,
            warning: None,
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            accept_task: Mutex::new(None),
            connected: watch::Sender::new(0),
            linger: watch::Sender::new(None),
            unattended: watch::Sender::new(false),
            files_dir: None,
        }
    }

    /// Sends `line` to every client that shows a message answering `answers`; returns
    /// how many have it written to their socket (waits for that when `confirm`).
    async fn send_to(&self, answers: &[String], line: ServerLine, confirm: bool) -> Sent {
        let mut waiting = Vec::new();
        let connected;
        {
            let mut clients = self.clients.lock().await;
            clients.retain(|_, c| !c.tx.is_closed());
            connected = clients.len();
            for client in clients.values().filter(|c| c.shows(answers)) {
                let (written, heard) = if confirm {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                let sent = client.tx.send(Outgoing {
                    line: line.clone(),
                    written,
                });
                if sent.is_ok()
                    && let Some(rx) = heard
                {
                    waiting.push(rx);
                }
            }
        }
        let mut reached = 0;
        for rx in waiting {
            if matches!(tokio::time::timeout(WRITE_CONFIRM, rx).await, Ok(Ok(()))) {
                reached += 1;
            }
        }
        Sent { connected, reached }
    }

    /// Serves one client connection: welcomes it, reads its lines until it hangs up, and
    /// forgets it.
    async fn serve_client(self: Arc<Self>, stream: tokio::net::UnixStream, sink: InboundSink) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
        let _ = tx.send(Outgoing {
            line: ServerLine::Welcome {
                assistant: self.assistant.clone(),
                warning: self.warning.clone(),
            },
            written: None,
        });
        self.clients.lock().await.insert(
            id,
            Client {
                tx: tx.clone(),
                // Until it says otherwise (see the read loop).
                scope: Scope::Own,
                asked: HashSet::new(),
            },
        );
        let writer = tokio::spawn(write_lines(write, rx));
        self.read_lines(id, read, &tx, &sink).await;
        self.clients.lock().await.remove(&id);
        drop(tx);
        let _ = writer.await;
        self.connected.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Reads client `id`'s lines until it hangs up, sends an over-long line, or the host
    /// shuts down.
    async fn read_lines(
        &self,
        id: u64,
        read: tokio::net::unix::OwnedReadHalf,
        tx: &ClientTx,
        sink: &InboundSink,
    ) {
        let mut reader = BufReader::new(read);
        let mut buf = Vec::new();
        // Shown nothing it did not ask for until it says what it shows: queued messages must
        // not go to a `chat -m` client in the moment before it says it wants only its own.
        // A client that says nothing (older clients) shows the whole chat after a moment.
        let mut declared = false;
        let grace = tokio::time::sleep(DECLARE_GRACE);
        tokio::pin!(grace);
        loop {
            let limit = (MAX_CLIENT_LINE as u64 + 1).saturating_sub(buf.len() as u64);
            let mut limited = (&mut reader).take(limit);
            let read = limited.read_until(b'\n', &mut buf);
            let read = if declared {
                read.await
            } else {
                tokio::select! {
                    read = read => read,
                    () = &mut grace => {
                        // Bytes read so far stay in `buf`; the line goes on next time.
                        declared = true;
                        self.settle(id, Scope::All, sink).await;
                        continue;
                    }
                }
            };
            let n = match read {
                Ok(n) => n,
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            if buf.len() > MAX_CLIENT_LINE {
                say(
                    tx,
                    ServerLine::Error {
                        error: format!("line longer than {MAX_CLIENT_LINE} bytes; disconnecting"),
                    },
                );
                break;
            }
            let line = String::from_utf8_lossy(&buf).trim().to_owned();
            buf.clear();
            if line.is_empty() {
                continue;
            }
            let msg: ClientLine = match serde_json::from_str(&line) {
                Ok(m) => m,
                Err(e) => {
                    say(
                        tx,
                        ServerLine::Error {
                            error: format!(
                                "unreadable line ({e}); expected {{\"type\":\"message\",\"id\":…,\"text\":…}}"
                            ),
                        },
                    );
                    continue;
                }
            };
            if !declared {
                declared = true;
                let scope = match &msg {
                    ClientLine::Show { scope } => *scope,
                    _ => Scope::All,
                };
                self.settle(id, scope, sink).await;
            }
            let (msg_id, text) = match msg {
                ClientLine::Message { id, text } => (id, text),
                ClientLine::Wake => {
                    if sink.send(ChannelEvent::Wake).await.is_err() {
                        break;
                    }
                    continue;
                }
                ClientLine::Show { scope } => {
                    self.settle(id, scope, sink).await;
                    continue;
                }
                admin @ (ClientLine::ChannelStatus
                | ClientLine::RestartChannel { .. }
                | ClientLine::HostStatus
                | ClientLine::Stop) => {
                    if !answer_admin(admin, tx, sink).await {
                        break;
                    }
                    continue;
                }
            };
            if !self.forward_message(id, msg_id, text, tx, sink).await {
                break;
            }
        }
    }

    /// Hands client `id`'s message to the host and acks it with the host's outcome;
    /// false when the host is shutting down.
    async fn forward_message(
        &self,
        id: u64,
        msg_id: String,
        text: String,
        tx: &ClientTx,
        sink: &InboundSink,
    ) -> bool {
        // Recorded before the host sees the message, so its reply cannot come first.
        if let Some(client) = self.clients.lock().await.get_mut(&id) {
            client.asked.insert(msg_id.clone());
        }
        let (ack_tx, ack_rx) = oneshot::channel();
        let event = InboundEvent {
            channel: NAME.into(),
            chat_id: TERMINAL_CHAT_ID.into(),
            chat_name: "Terminal".into(),
            is_group: false,
            thread: None,
            platform_msg_id: msg_id.clone(),
            sender: "terminal:owner".into(),
            sender_name: std::env::var("USER").ok(),
            text,
            received_at: crate::now_ms(),
            mentions_me: true,
            ack: Some(ack_tx),
            ..InboundEvent::default()
        };
        if sink.send(ChannelEvent::Inbound(event)).await.is_err() {
            say(
                tx,
                ServerLine::Error {
                    error: "the host is shutting down".into(),
                },
            );
            return false;
        }
        let (status, detail) = match ack_rx.await {
            Ok(RouteOutcome::Accepted) => ("accepted", None),
            Ok(RouteOutcome::Duplicate) => ("duplicate", None),
            Ok(RouteOutcome::Ignored(why)) => ("ignored", Some(why)),
            Ok(RouteOutcome::Held(why)) => ("held", Some(why)),
            Ok(RouteOutcome::Failed(why)) => ("failed", Some(why)),
            Err(_) => ("failed", Some("the host dropped the message".to_owned())),
        };
        say(
            tx,
            ServerLine::Ack {
                id: msg_id,
                status: status.into(),
                detail,
            },
        );
        true
    }
}

impl TerminalChannel {
    /// Records what client `id` shows. Any client makes the chat reachable again: one that
    /// shows the whole chat gets what is queued, and one that shows only its own messages
    /// must still get its replies even if an earlier delivery found nobody and parked the
    /// chat (rows that are not its own stay queued, unclaimed).
    async fn settle(&self, id: u64, scope: Scope, sink: &InboundSink) {
        if let Some(client) = self.clients.lock().await.get_mut(&id) {
            client.scope = scope;
        }
        let _ = sink
            .send(ChannelEvent::Reachable {
                channel: NAME.into(),
                chat_id: TERMINAL_CHAT_ID.into(),
            })
            .await;
    }
}

/// Answers an admin request (`channel status`, `channel restart`, `status`, `stop`) through
/// the host; false when the host is shutting down.
async fn answer_admin(msg: ClientLine, tx: &ClientTx, sink: &InboundSink) -> bool {
    match msg {
        ClientLine::ChannelStatus => {
            let (reply, heard) = oneshot::channel();
            if sink
                .send(ChannelEvent::ChannelStatus { reply })
                .await
                .is_err()
            {
                return false;
            }
            let channels = heard
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(name, health)| ChannelReport { name, health })
                .collect();
            say(tx, ServerLine::Channels { channels });
        }
        ClientLine::RestartChannel { name } => {
            let (done, heard) = oneshot::channel();
            let event = ChannelEvent::RestartChannel {
                name: name.clone(),
                done: Some(done),
            };
            if sink.send(event).await.is_err() {
                return false;
            }
            let error = match heard.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("the host dropped the request".into()),
            };
            say(tx, ServerLine::Restarted { name, error });
        }
        ClientLine::HostStatus => {
            let (reply, heard) = oneshot::channel();
            if sink.send(ChannelEvent::HostStatus { reply }).await.is_err() {
                return false;
            }
            match heard.await {
                Ok(host) => say(tx, ServerLine::Host { host }),
                Err(_) => say(
                    tx,
                    ServerLine::Error {
                        error: "the host is shutting down".into(),
                    },
                ),
            }
        }
        ClientLine::Stop => {
            if sink.send(ChannelEvent::Stop).await.is_err() {
                return false;
            }
            say(
                tx,
                ServerLine::Stopping {
                    pid: std::process::id(),
                },
            );
        }
        _ => {}
    }
    true
}

/// What a delivery reached.
struct Sent {
    /// Clients connected at all.
    connected: usize,
    /// Clients that show the message and have it written to their socket.
    reached: usize,
}

/// Whether `line` is a message that answers the client message `id`.
pub fn answers_id(line: &ServerLine, id: &str) -> bool {
    match line {
        ServerLine::Message {
            reply_to, answers, ..
        } => reply_to.as_deref() == Some(id) || answers.iter().any(|a| a == id),
        _ => false,
    }
}

/// Everything `message` answers: the turn's messages, else the one it replies to.
/// The message's text with a line per file: its name, size and where the owner finds it
/// (kept in `files_dir/<message>/`, since the outbox copy is removed once delivered).
async fn with_file_lines(
    message: &OutgoingMessage,
    files_dir: Option<PathBuf>,
) -> Result<String, ChannelError> {
    let files = message.files.clone();
    let folder = crate::router::safe_file_name(&message.idempotency_key.replace(':', "-"), 120);
    let lines = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .enumerate()
            .map(|(i, file)| {
                let size = std::fs::metadata(&file.path)
                    .map_err(|e| format!("reading {}: {e}", file.path.display()))?
                    .len();
                let Some(files_dir) = &files_dir else {
                    return Ok(format!("[file: {} ({size} bytes)]", file.file_name));
                };
                let dir = files_dir.join(&folder);
                let kept = dir.join(format!(
                    "{i}-{}",
                    crate::router::safe_file_name(&file.file_name, 100)
                ));
                crate::config::create_private_dir(&dir)
                    .and_then(|()| std::fs::copy(&file.path, &kept))
                    .map_err(|e| format!("keeping {}: {e}", kept.display()))?;
                Ok(format!(
                    "[file: {} ({size} bytes): {}]",
                    file.file_name,
                    kept.display()
                ))
            })
            .collect::<Result<Vec<String>, String>>()
    })
    .await
    .map_err(|e| ChannelError::Failed(e.to_string()))?
    .map_err(ChannelError::Failed)?;
    let mut text = message.text.clone();
    for line in lines {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&line);
    }
    Ok(text)
}

fn message_answers(message: &OutgoingMessage) -> Vec<String> {
    if message.answers.is_empty() {
        message.reply_to.iter().cloned().collect()
    } else {
        message.answers.clone()
    }
}

/// Queues a line for one client (no confirmation).
/// Writes the client's outgoing lines to its socket, one JSON object a line, confirming
/// each written line to whoever waits for it; stops when the socket fails or all senders
/// are gone.
async fn write_lines(
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        let Ok(mut bytes) = serde_json::to_vec(&out.line) else {
            continue;
        };
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            break;
        }
        if let Some(written) = out.written {
            let _ = written.send(());
        }
    }
}

fn say(tx: &ClientTx, line: ServerLine) {
    let _ = tx.send(Outgoing {
        line,
        written: None,
    });
}

#[async_trait]
impl Channel for TerminalChannel {
    fn name(&self) -> &'static str {
        NAME
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
            let mut connected = me.connected.subscribe();
            let mut linger = me.linger.subscribe();
            loop {
                let idle_after = match *linger.borrow_and_update() {
                    Some(d) if *connected.borrow_and_update() == 0 => Some(d),
                    _ => None,
                };
                let idle = async {
                    match idle_after {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            // Counted here, in the loop that decides about idleness, so an
                            // accepted client always keeps the channel open.
                            me.connected.send_modify(|n| *n += 1);
                            tokio::spawn(Arc::clone(&me).serve_client(stream, sink.clone()));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "terminal channel accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    _ = connected.changed() => {}
                    _ = linger.changed() => {}
                    () = idle => {
                        // Nobody connected for the whole linger: stop accepting. A client
                        // that connected but was not accepted sees the connection close
                        // before the welcome and starts a host again.
                        let _ = std::fs::remove_file(&me.socket);
                        drop(listener);
                        tracing::info!("no terminal client is connected any more");
                        me.unattended.send_replace(true);
                        return;
                    }
                }
            }
        });
        *self.accept_task.lock().await = Some(task);
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let answers = message_answers(message);
        let text = if message.files.is_empty() {
            message.text.clone()
        } else {
            with_file_lines(message, self.files_dir.clone()).await?
        };
        let sent = self
            .send_to(
                &answers,
                ServerLine::Message {
                    key: message.idempotency_key.clone(),
                    kind: message.kind.clone(),
                    text,
                    reply_to: message.reply_to.clone(),
                    answers: answers.clone(),
                },
                true,
            )
            .await;
        if sent.connected == 0 {
            return Err(ChannelError::NotConnected("no terminal client".into()));
        }
        if sent.reached == 0 {
            // Connected clients wait for other answers: keep it for one that shows it.
            return Err(ChannelError::Unclaimed(
                "no connected terminal client shows this message".into(),
            ));
        }
        Ok(Some(message.idempotency_key.clone()))
    }

    async fn progress(&self, _chat_id: &str, answers: &[String], progress: Progress) {
        let line = match progress {
            Progress::TextDelta(text) => ServerLine::Delta { text },
            Progress::Tool { tool, summary } => ServerLine::Tool { tool, summary },
            // The terminal shows the reply streaming in; nothing to show before that.
            Progress::Working => return,
        };
        self.send_to(answers, line, false).await;
    }

    async fn until_unattended(&self, linger: Duration) -> bool {
        let mut closed = self.unattended.subscribe();
        self.linger.send_replace(Some(linger));
        closed.wait_for(|closed| *closed).await.is_ok()
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

    /// Chooses what this client is shown (see [`Scope`]).
    pub async fn show(&mut self, scope: Scope) -> std::io::Result<()> {
        let mut line =
            serde_json::to_vec(&ClientLine::Show { scope }).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write.write_all(&line).await
    }

    /// Sends an admin request (`channel_status`, `restart_channel`, `host_status`, `stop`) as a
    /// client that shows no chat messages, and returns the host's answer to it.
    pub async fn admin(&mut self, request: &ClientLine) -> std::io::Result<Option<ServerLine>> {
        self.show(Scope::Own).await?;
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write.write_all(&line).await?;
        self.write.flush().await?;
        loop {
            match self.next().await? {
                Some(
                    answer @ (ServerLine::Channels { .. }
                    | ServerLine::Restarted { .. }
                    | ServerLine::Host { .. }
                    | ServerLine::Stopping { .. }),
                ) => {
                    return Ok(Some(answer));
                }
                Some(ServerLine::Error { error }) => return Err(std::io::Error::other(error)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// Tells the host that the database changed under it (scheduled tasks, queued runs).
    pub async fn wake(&mut self) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&ClientLine::Wake).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write.write_all(&line).await?;
        self.write.flush().await
    }

    /// Sends raw bytes (tests of malformed input; feature `test-support`).
    #[cfg(any(test, feature = "test-support"))]
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
                ServerLine::Message { kind, .. }
                    if answers_id(&line, id) && (kind == "reply" || kind == "error") =>
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

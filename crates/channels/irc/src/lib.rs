//! nanoclaw's IRC channel: a small IRC client of its own on tokio (RFC 1459/2812 with the
//! IRCv3 pieces that matter: capability negotiation, message tags, `server-time`, SASL).
//!
//! - **Connection**: TCP or TLS (rustls; the system's roots plus an optional `ca_file`),
//!   `PASS` when a password is set without SASL, SASL PLAIN when `sasl = true`, nick
//!   fallback on a collision (`andy_`, `andy__`…), then `JOIN` of the configured channels.
//!   The link is watched with PING when the server is quiet; a broken link is reconnected
//!   with [`Backoff`]. A refused password or SASL login puts the channel down (the host's
//!   supervisor retries with backoff; `channel status` says why).
//! - **In** ([`inbound`]): PRIVMSG in a channel is a group chat (chat id `#channel`), a query
//!   is a DM (chat id: the sender's nick). A channel message addresses the bot when it names
//!   our current nick as a word. NOTICEs, CTCP other than ACTION, our own messages and
//!   `ignore_nicks` are never passed on. IRC has no message ids: the server's `msgid` tag
//!   when it sends one, else a hash (see [`inbound`]).
//! - **Out**: each line of a reply is a PRIVMSG, cut to fit the 512-byte line with the
//!   prefix the server adds when relaying; CR, LF and NUL can never reach the wire inside a
//!   line ([`proto::encode`]). Every line we send, PONG included, passes a token bucket
//!   (`flood_burst`, `flood_per_sec`) so the server never disconnects us for flooding. IRC
//!   has no attachments: a file becomes the line `[file NAME not sent: IRC has no
//!   attachments]`.
//! - **Exactly once**: each line is a part in the send ledger, recorded once written to the
//!   socket. After a crash a part in doubt is *not* sent again (IRC cannot tell whether it
//!   arrived): at most once for that part.
//! - **Not done**: no rejoin after a KICK (an operator removed the bot on purpose), no
//!   DCC, no typing indicator (IRCv3 `+typing` is not widely relayed).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_channel::{
    Backoff, Channel, ChannelError, ChannelEvent, ChannelRegistration, ChannelSetup, Health,
    HealthCell, InboundSink, OutgoingMessage, SecretSpec, SendAttempt, SendLedger, now_ms,
};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod conn;
pub mod flood;
pub mod inbound;
pub mod proto;

use conn::{Conn, ConnError, Options};

/// The channel's name.
pub const NAME: &str = "irc";
/// The vault secret holding the server or SASL password (optional).
pub const PASSWORD_SECRET: &str = "irc.password";

/// What the host lists and builds.
pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: NAME,
    summary: "IRC (TLS, SASL PLAIN, flood control): channels and private messages",
    secrets: &[SecretSpec {
        name: PASSWORD_SECRET,
        prompt: "Server or SASL password (empty for none)",
        optional: true,
    }],
    modes: &[],
    settings: &[
        ("server", "irc.libera.chat:6697"),
        ("nick", ""),
        ("channels", "[]"),
        ("tls", "true"),
        ("sasl", "false"),
    ],
    settings_secrets: None,
    factory,
};

type BuiltChannel = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Arc<dyn Channel>, ChannelError>> + Send>,
>;

fn factory(setup: ChannelSetup) -> BuiltChannel {
    Box::pin(async move {
        let channel = IrcChannel::from_setup(setup).await?;
        Ok(Arc::new(channel) as Arc<dyn Channel>)
    })
}

/// `[channels.irc]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `host:port`, e.g. `irc.libera.chat:6697`.
    pub server: String,
    #[serde(default = "yes")]
    pub tls: bool,
    /// Extra CA certificates (PEM) trusted besides the system's, for a private server.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    pub nick: String,
    /// Defaults to the nick; also the SASL account name.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub realname: Option<String>,
    /// Channels joined after connecting (`#ops`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Log in with SASL PLAIN (account: `username`, password: the `irc.password` secret).
    #[serde(default)]
    pub sasl: bool,
    /// Lines sent at once before pacing starts.
    #[serde(default = "default_burst")]
    pub flood_burst: u32,
    /// Lines per second after the burst.
    #[serde(default = "default_rate")]
    pub flood_per_sec: f64,
    /// Nicks never answered (other bots).
    #[serde(default)]
    pub ignore_nicks: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_burst() -> u32 {
    4
}
fn default_rate() -> f64 {
    1.0
}

/// How long the server may stay silent before we PING it, and how long after that it has
/// to answer before the link counts as dead.
const IDLE_PING: Duration = Duration::from_secs(90);
const PING_GRACE: Duration = Duration::from_secs(60);

/// The live connection, for the deliver path.
#[derive(Clone)]
struct Link {
    sender: conn::Sender,
    nick: Arc<Mutex<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The IRC channel.
pub struct IrcChannel {
    config: IrcConfig,
    options: Options,
    ignore: Arc<Vec<String>>,
    ledger: Arc<dyn SendLedger>,
    health: Arc<HealthCell>,
    link: Arc<Mutex<Option<Link>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl IrcChannel {
    pub async fn from_setup(setup: ChannelSetup) -> Result<IrcChannel, ChannelError> {
        let config: IrcConfig = setup.settings_as(NAME)?;
        let password: Option<SecretString> = setup.secrets.secret(PASSWORD_SECRET).await?;
        IrcChannel::new(config, password, setup.ledger)
    }

    pub fn new(
        config: IrcConfig,
        password: Option<SecretString>,
        ledger: Arc<dyn SendLedger>,
    ) -> Result<IrcChannel, ChannelError> {
        if !proto::is_valid_nick(&config.nick) {
            return Err(ChannelError::Setup(format!(
                "[channels.irc] nick {:?} is not a valid nick",
                config.nick
            )));
        }
        for channel in &config.channels {
            if !proto::is_channel(channel) || proto::encode("JOIN", &[channel]).is_err() {
                return Err(ChannelError::Setup(format!(
                    "[channels.irc] channels: {channel:?} is not a channel name (e.g. \"#ops\")"
                )));
            }
        }
        if config.sasl && password.is_none() {
            return Err(ChannelError::Setup(format!(
                "[channels.irc] sasl = true needs the secret {PASSWORD_SECRET}; run `nanoclaw channel add irc`"
            )));
        }
        let username = config
            .username
            .clone()
            .unwrap_or_else(|| config.nick.clone());
        let options = Options {
            server: config.server.clone(),
            tls: config.tls,
            ca_file: config.ca_file.clone(),
            nick: config.nick.clone(),
            username,
            realname: config
                .realname
                .clone()
                .unwrap_or_else(|| "nanoclaw".to_owned()),
            sasl: config.sasl,
            password,
            flood_burst: config.flood_burst,
            flood_per_sec: config.flood_per_sec,
        };
        Ok(IrcChannel {
            ignore: Arc::new(config.ignore_nicks.iter().map(|n| proto::fold(n)).collect()),
            config,
            options,
            ledger,
            health: Arc::new(HealthCell::default()),
            link: Arc::new(Mutex::new(None)),
            task: tokio::sync::Mutex::new(None),
        })
    }

    /// Our nick right now (`None` while not connected).
    pub fn current_nick(&self) -> Option<String> {
        lock(&self.link).as_ref().map(|l| lock(&l.nick).clone())
    }
}

/// How the first connection went, for `start`.
type FirstTry = oneshot::Sender<Result<(), ConnError>>;

/// The receive loop: connect, register, join, read; reconnect with backoff.
struct Runner {
    options: Options,
    channels: Vec<String>,
    ignore: Arc<Vec<String>>,
    health: Arc<HealthCell>,
    link: Arc<Mutex<Option<Link>>>,
    sink: InboundSink,
}

/// Why a session ended.
enum End {
    /// The host stopped taking messages.
    SinkClosed,
    Failed(ConnError),
}

impl Runner {
    async fn run(self, mut first: Option<FirstTry>) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(120));
        loop {
            let end = self.session(&mut first, &mut backoff).await;
            *lock(&self.link) = None;
            match end {
                End::SinkClosed => {
                    self.health.down("the host stopped taking messages");
                    return;
                }
                End::Failed(ConnError::Io(e)) => {
                    tracing::warn!(error = %e, "irc: connection lost; reconnecting");
                    self.health.reconnecting(e.clone());
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(ConnError::Io(e)));
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                End::Failed(e) => {
                    // Refused credentials or settings that cannot work: retrying at once
                    // cannot help; the supervisor restarts the channel with backoff.
                    tracing::error!(error = %e, "irc: the server refused us");
                    self.health.down(e.to_string());
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(e));
                    }
                    return;
                }
            }
        }
    }

    async fn session(&self, first: &mut Option<FirstTry>, backoff: &mut Backoff) -> End {
        let stream = match conn::open(&self.options).await {
            Ok(stream) => stream,
            Err(e) => return End::Failed(e),
        };
        let mut conn = Conn::new(stream, self.options.flood_burst, self.options.flood_per_sec);
        let registered = match conn::register(&mut conn, &self.options).await {
            Ok(r) => r,
            Err(e) => return End::Failed(e),
        };
        tracing::info!(nick = %registered.nick, server = %self.options.server, caps = ?registered.caps, "irc: registered");
        let sender = conn.sender();
        for channel in &self.channels {
            match proto::encode("JOIN", &[channel]) {
                Ok(line) => {
                    if let Err(e) = sender.queue(line).await {
                        return End::Failed(e);
                    }
                }
                Err(e) => tracing::warn!(%channel, error = %e, "irc: channel not joined"),
            }
        }
        let nick = Arc::new(Mutex::new(registered.nick));
        *lock(&self.link) = Some(Link {
            sender: sender.clone(),
            nick: Arc::clone(&nick),
        });
        self.health.connected();
        backoff.reset();
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        let mut pinged = false;
        loop {
            let wait = if pinged { PING_GRACE } else { IDLE_PING };
            let message = match tokio::time::timeout(wait, conn.next()).await {
                Err(_) if pinged => {
                    return End::Failed(ConnError::Io(format!(
                        "the server did not answer a PING in {} s",
                        PING_GRACE.as_secs()
                    )));
                }
                Err(_) => {
                    pinged = true;
                    if let Err(e) = sender.queue("PING :nanoclaw".to_owned()).await {
                        return End::Failed(e);
                    }
                    continue;
                }
                Ok(Err(e)) => return End::Failed(e),
                Ok(Ok(None)) => {
                    pinged = false;
                    self.health.error("skipped a line that is not IRC");
                    continue;
                }
                Ok(Ok(Some(message))) => message,
            };
            pinged = false;
            if conn.writer_gone() {
                return End::Failed(ConnError::Io("writing to the server failed".into()));
            }
            match self.handle(&message, &sender, &nick).await {
                Ok(()) => {}
                Err(end) => return end,
            }
        }
    }

    async fn handle(
        &self,
        message: &proto::Message,
        sender: &conn::Sender,
        nick: &Mutex<String>,
    ) -> Result<(), End> {
        let fail = End::Failed;
        match message.command.as_str() {
            "PING" => {
                let line = proto::encode("PONG", &[message.param(0)])
                    .unwrap_or_else(|_| "PONG :nanoclaw".to_owned());
                sender.queue(line).await.map_err(fail)?;
            }
            "PRIVMSG" => {
                self.health.event();
                let current = lock(nick).clone();
                let ctx = inbound::Context {
                    nick: &current,
                    ignore: &self.ignore,
                };
                if let Some(event) = inbound::event_for(message, &ctx, now_ms()) {
                    // IRC cannot deliver a message again: the event goes without waiting
                    // for the host's verdict, which could not change anything here.
                    if self.sink.send(ChannelEvent::Inbound(event)).await.is_err() {
                        return Err(End::SinkClosed);
                    }
                }
            }
            "NICK" => {
                let mut current = lock(nick);
                if message
                    .nick()
                    .is_some_and(|n| proto::fold(n) == proto::fold(&current))
                {
                    *current = message.param(0).to_owned();
                }
            }
            "KICK" => {
                let current = lock(nick).clone();
                if proto::fold(message.param(1)) == proto::fold(&current) {
                    // Not rejoined: an operator removed the bot on purpose.
                    let why = format!(
                        "kicked from {} by {}: {}",
                        message.param(0),
                        message.nick().unwrap_or("?"),
                        message.param(2)
                    );
                    tracing::warn!("irc: {why}");
                    self.health.error(why);
                }
            }
            // Cannot join: full, invite only, banned, wrong key; cannot send to a channel.
            "471" | "473" | "474" | "475" | "404" | "401" => {
                let why = format!(
                    "{} {}: {}",
                    message.command,
                    message.param(1),
                    message.params.last().map_or("", String::as_str)
                );
                tracing::warn!("irc: {why}");
                self.health.error(why);
            }
            "ERROR" => {
                return Err(End::Failed(ConnError::Io(format!(
                    "the server closed the connection: {}",
                    message.param(0)
                ))));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A file's name as it can appear in one line of text.
fn file_note(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    format!("[file {name} not sent: IRC has no attachments]")
}

#[async_trait]
impl Channel for IrcChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Starts the receive loop and waits (up to the registration timeout) for the first
    /// connection: refused credentials fail the start; a network failure is retried inside.
    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let mut task = self.task.lock().await;
        if let Some(old) = task.take() {
            old.abort();
        }
        *lock(&self.link) = None;
        self.health.starting();
        let (first, first_result) = oneshot::channel();
        let runner = Runner {
            options: self.options.clone(),
            channels: self.config.channels.clone(),
            ignore: Arc::clone(&self.ignore),
            health: Arc::clone(&self.health),
            link: Arc::clone(&self.link),
            sink,
        };
        *task = Some(tokio::spawn(runner.run(Some(first))));
        match tokio::time::timeout(
            conn::REGISTER_TIMEOUT + Duration::from_secs(25),
            first_result,
        )
        .await
        {
            Ok(Ok(Err(ConnError::Io(e)))) => {
                tracing::warn!(error = %e, "irc: first connection failed; retrying in the background");
                Ok(())
            }
            Ok(Ok(Err(e))) => {
                if let Some(t) = task.take() {
                    t.abort();
                }
                Err(e.into_channel_error())
            }
            _ => Ok(()),
        }
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let target = message.chat_id.as_str();
        if proto::encode("PRIVMSG", &[target, "x"]).is_err() {
            return Err(ChannelError::Rejected {
                platform: NAME.to_owned(),
                detail: format!("{target:?} is not a nick or channel"),
            });
        }
        let nick = self
            .current_nick()
            .ok_or_else(|| ChannelError::NotConnected("IRC is not connected".into()))?;
        let mut lines = proto::text_lines(&message.text, proto::text_budget(&nick, target));
        lines.extend(message.files.iter().map(|f| file_note(&f.file_name)));
        if lines.is_empty() {
            tracing::debug!(key = %message.idempotency_key, "irc: nothing to send");
            return Ok(None);
        }
        let lines = &lines;
        let result = nanoclaw_channel::send_parts(
            &*self.ledger,
            &message.idempotency_key,
            lines.len(),
            |i, attempt| async move {
                if attempt == SendAttempt::AfterCrash {
                    tracing::warn!(
                        key = %message.idempotency_key,
                        part = i,
                        "irc: a line may or may not have been sent before the host stopped; not resending (IRC cannot tell)"
                    );
                    return Ok(None);
                }
                let text = lines.get(i).map_or("", String::as_str);
                let line = proto::encode("PRIVMSG", &[target, text]).map_err(|e| {
                    ChannelError::Rejected {
                        platform: NAME.to_owned(),
                        detail: e.to_string(),
                    }
                })?;
                // The link of the moment: a reconnect between two parts sends the rest on
                // the new connection.
                let link = lock(&self.link)
                    .clone()
                    .ok_or_else(|| ChannelError::NotConnected("IRC is not connected".into()))?;
                link.sender.send(line).await?;
                Ok(None)
            },
        )
        .await;
        if let Err(e) = &result {
            self.health.error(e.to_string());
        }
        result
    }

    /// Connects, registers (SASL included), and quits: "nick on server".
    async fn verify(&self) -> Result<String, ChannelError> {
        let stream = conn::open(&self.options)
            .await
            .map_err(ConnError::into_channel_error)?;
        let mut conn = Conn::new(stream, self.options.flood_burst, self.options.flood_per_sec);
        let registered = conn::register(&mut conn, &self.options)
            .await
            .map_err(ConnError::into_channel_error)?;
        let _ = conn
            .sender()
            .send("QUIT :nanoclaw channel check".to_owned())
            .await;
        // Until the server closes the link (bounded): then the nick is free again for the
        // channel that starts next.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while conn.next().await.is_ok() {}
        })
        .await;
        Ok(format!("{} on {}", registered.nick, self.options.server))
    }

    fn health(&self) -> Health {
        self.health.snapshot()
    }

    async fn stop(&self) {
        let link = lock(&self.link).take();
        if let Some(link) = link {
            // A polite QUIT, bounded: the task is stopped either way.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.sender.send("QUIT :nanoclaw stopping".to_owned()),
            )
            .await;
        }
        if let Some(task) = self.task.lock().await.take() {
            task.abort();
        }
        self.health.stopped();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn settings_have_safe_defaults_and_refuse_unknown_keys() {
        let table: toml::Table =
            toml::from_str("enabled = true\nserver = \"irc.example:6697\"\nnick = \"andy\"")
                .unwrap();
        let config: IrcConfig = toml::Value::Table(table).try_into().unwrap();
        assert!(config.tls);
        assert!(!config.sasl);
        assert_eq!((config.flood_burst, config.flood_per_sec), (4, 1.0));
        let table: toml::Table =
            toml::from_str("server = \"x:1\"\nnick = \"a\"\nchanels = []").unwrap();
        assert!(toml::Value::Table(table).try_into::<IrcConfig>().is_err());
    }

    #[test]
    fn bad_nicks_channels_and_sasl_without_password_are_setup_errors() {
        let ledger: Arc<dyn SendLedger> =
            Arc::new(nanoclaw_channel::memory::MemoryLedger::default());
        let base = |nick: &str, channels: &[&str], sasl: bool| IrcConfig {
            enabled: true,
            server: "x:6667".into(),
            tls: false,
            ca_file: None,
            nick: nick.into(),
            username: None,
            realname: None,
            channels: channels.iter().map(|c| c.to_string()).collect(),
            sasl,
            flood_burst: 4,
            flood_per_sec: 1.0,
            ignore_nicks: Vec::new(),
        };
        assert!(IrcChannel::new(base("an dy", &[], false), None, ledger.clone()).is_err());
        assert!(IrcChannel::new(base("andy", &["ops"], false), None, ledger.clone()).is_err());
        assert!(IrcChannel::new(base("andy", &["#ops"], true), None, ledger.clone()).is_err());
        assert!(IrcChannel::new(base("andy", &["#ops"], false), None, ledger).is_ok());
    }
}

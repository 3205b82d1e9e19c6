//! nanoclaw's email channel: mail in over IMAP (IDLE, a UID high-water mark kept with the
//! mailbox's UIDVALIDITY), mail out over SMTP submission, both over TLS; Gmail (or any
//! OAuth 2 provider) with XOAUTH2 and tokens renewed before they expire.
//!
//! - **Chats**: a correspondent's address is a chat (a direct one); a conversation
//!   (`References` root) is its thread, so `per-thread` sessions follow mail threads.
//! - **Who may write**: `allow_senders` (addresses and `@domains`; empty means nobody), and
//!   the receiving server's verdict on the sender ([`auth`]): with `sender_check =
//!   "required"` (the default) only mail whose DKIM, SPF or DMARC result from
//!   `trusted_authserv_id` vouches for the `From` domain is read. Mail is the easiest channel
//!   to spoof; a server that writes no `Authentication-Results` leaves only
//!   `sender_check = "off"`, which trusts the `From` address and says so in the health.
//! - **Never a loop**: mail from the channel's own address is skipped; machine mail
//!   (`Auto-Submitted`, `Precedence: bulk`, mailing lists) reaches the host marked as from a
//!   bot, which the router never answers; nanoclaw's own mail says `Auto-Submitted:
//!   auto-replied`.
//! - **Out**: a reply threads under the mail it answers and quotes it ([`reply`]); files are
//!   attachments. The `Message-ID` comes from the message's idempotency key and a copy goes
//!   to the channel's own address (envelope only): after a crash between sending and
//!   recording, the channel looks for that id in `sent_check_mailbox` and sends again only
//!   if the server never took the mail.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use nanoclaw_channel::{
    Attachment, Backoff, Channel, ChannelError, ChannelRegistration, ChannelSetup, Health,
    HealthCell, InboundEvent, InboundSink, ModeSecrets, OutgoingMessage, SecretSpec, SendAttempt,
    SendLedger, ShowToOwner, StateStore, forget_older_daily, hand_over, send_parts,
};
use serde::Deserialize;
use tokio::task::JoinHandle;

pub mod allow;
pub mod auth;
pub mod imap;
pub mod oauth;
pub mod parse;
pub mod reply;
pub mod smtp;
mod tls;

use allow::Allowlist;
use auth::SenderCheck;
use imap::{Cursor, ImapServer, Login};
use oauth::{OAuthClient, TokenSource};
use smtp::{Security, SmtpServer};

/// The channel's name.
pub const NAME: &str = "email";
/// The vault secret holding the account's password (`mode = "password"`).
pub const PASSWORD_SECRET: &str = "email.password";
const CURSOR_KEY: &str = "imap_cursor";

/// What the host lists and builds.
pub const REGISTRATION: ChannelRegistration = ChannelRegistration {
    name: NAME,
    summary: "Email over IMAP (IDLE) and SMTP submission; Gmail with OAuth 2",
    secrets: &[SecretSpec {
        name: PASSWORD_SECRET,
        prompt: "Password (or app password) of the mail account",
        optional: false,
    }],
    modes: &[ModeSecrets {
        mode: "oauth2",
        secrets: &[SecretSpec {
            name: oauth::CLIENT_SECRET_SECRET,
            prompt: "OAuth client secret (Google Cloud console → APIs & Services → Credentials)",
            optional: false,
        }],
        generated: &[oauth::REFRESH_TOKEN_SECRET],
    }],
    settings: &[
        ("address", ""),
        ("imap_host", ""),
        ("smtp_host", ""),
        ("allow_senders", "[]"),
    ],
    settings_secrets: None,
    factory,
};

type BuiltChannel =
    Pin<Box<dyn std::future::Future<Output = Result<Arc<dyn Channel>, ChannelError>> + Send>>;

fn factory(setup: ChannelSetup) -> BuiltChannel {
    Box::pin(async move {
        let channel = EmailChannel::from_setup(setup).await?;
        Ok(Arc::new(channel) as Arc<dyn Channel>)
    })
}

/// Why the mail connection failed.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("[channels.email]: {0}")]
    Config(String),
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Auth(String),
}

impl MailError {
    pub fn into_channel_error(self) -> ChannelError {
        match self {
            MailError::Config(d) => ChannelError::Setup(d),
            MailError::Connect(d) => ChannelError::NotConnected(d),
            MailError::Auth(detail) => ChannelError::Unauthorized {
                platform: NAME.into(),
                detail,
            },
        }
    }
}

/// How the account logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Password,
    #[serde(rename = "oauth2")]
    OAuth2,
}

/// Whether the receiving server's verdict on the sender is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderCheckMode {
    #[default]
    Required,
    Off,
}

/// `[channels.email]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `gmail` fills in Google's hosts, ports, OAuth endpoints and `mx.google.com`.
    #[serde(default)]
    pub provider: Option<String>,
    /// The assistant's address (the account's, and the `From` of what it sends).
    pub address: String,
    /// The login name, when it is not the address.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub imap_host: Option<String>,
    #[serde(default)]
    pub imap_port: Option<u16>,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    #[serde(default)]
    pub smtp_host: Option<String>,
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_security: Option<Security>,
    /// A PEM file of extra CA certificates (a server with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Addresses and `@domains` that may write to the assistant; empty: nobody.
    #[serde(default)]
    pub allow_senders: Vec<String>,
    #[serde(default)]
    pub sender_check: SenderCheckMode,
    /// The id the receiving server writes first in its `Authentication-Results` headers.
    #[serde(default)]
    pub trusted_authserv_id: Option<String>,
    /// The longest wait in IDLE before asking again (servers drop idle connections).
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
    /// Larger messages are skipped (and logged).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: u64,
    /// Where a sent mail's copy to the channel's own address lands (Gmail files it in
    /// `[Gmail]/All Mail` only).
    #[serde(default)]
    pub sent_check_mailbox: Option<String>,
    /// How long to wait before sending again after the server refused a message for now
    /// (a 4xx: rate limits, greylisting, a full queue).
    #[serde(default = "default_smtp_retry")]
    pub smtp_retry_secs: u64,
    /// Subject of mail that answers nothing (a scheduled task's message).
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub oauth_client_id: Option<String>,
    #[serde(default)]
    pub oauth_auth_url: Option<String>,
    #[serde(default)]
    pub oauth_token_url: Option<String>,
    #[serde(default)]
    pub oauth_scope: Option<String>,
    /// How long `channel add` waits for the browser in the OAuth flow.
    #[serde(default = "default_link_timeout")]
    pub link_timeout_secs: u64,
}

fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_idle_secs() -> u64 {
    600
}
fn default_max_message() -> u64 {
    25 * 1024 * 1024
}
fn default_smtp_retry() -> u64 {
    60
}
fn default_link_timeout() -> u64 {
    300
}

/// The settings with a provider's defaults applied and checked.
struct Resolved {
    imap_host: String,
    imap_port: u16,
    smtp_host: String,
    smtp_port: u16,
    smtp_security: Security,
    trusted_authserv_id: Option<String>,
    sent_check_mailbox: String,
    oauth: Option<OAuthClient>,
}

fn resolve(config: &EmailConfig) -> Result<Resolved, MailError> {
    let gmail = match config.provider.as_deref() {
        None => false,
        Some("gmail") => true,
        Some(other) => {
            return Err(MailError::Config(format!(
                "provider {other:?} is not known; use \"gmail\" or set imap_host and smtp_host"
            )));
        }
    };
    let need = |value: &Option<String>, gmail_value: &str, key: &str| match (value, gmail) {
        (Some(v), _) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        (_, true) => Ok(gmail_value.to_owned()),
        _ => Err(MailError::Config(format!("{key} is not set"))),
    };
    let smtp_security = config.smtp_security.unwrap_or(Security::Tls);
    let oauth = match config.mode {
        Mode::Password => None,
        Mode::OAuth2 => Some(OAuthClient {
            client_id: need(&config.oauth_client_id, "", "oauth_client_id")
                .and_then(|id| {
                    if id.is_empty() {
                        Err(MailError::Config("oauth_client_id is not set (the OAuth client's id from the provider's console)".into()))
                    } else {
                        Ok(id)
                    }
                })?,
            auth_url: config
                .oauth_auth_url
                .clone()
                .unwrap_or_else(|| oauth::GOOGLE_AUTH_URL.into()),
            token_url: config
                .oauth_token_url
                .clone()
                .unwrap_or_else(|| oauth::GOOGLE_TOKEN_URL.into()),
            scope: config
                .oauth_scope
                .clone()
                .unwrap_or_else(|| oauth::GMAIL_SCOPE.into()),
        }),
    };
    if !config.address.contains('@') {
        return Err(MailError::Config(format!(
            "address {:?} is not a mail address",
            config.address
        )));
    }
    let trusted_authserv_id = config
        .trusted_authserv_id
        .clone()
        .or_else(|| gmail.then(|| "mx.google.com".to_owned()));
    if config.sender_check == SenderCheckMode::Required && trusted_authserv_id.is_none() {
        return Err(MailError::Config(
            "sender_check = \"required\" needs trusted_authserv_id: the id your receiving server writes first in \
             Authentication-Results headers (look at a mail's headers); or set sender_check = \"off\" to trust \
             From addresses, which anyone can forge"
                .into(),
        ));
    }
    Ok(Resolved {
        imap_host: need(&config.imap_host, "imap.gmail.com", "imap_host")?,
        imap_port: config.imap_port.unwrap_or(993),
        smtp_host: need(&config.smtp_host, "smtp.gmail.com", "smtp_host")?,
        smtp_port: config.smtp_port.unwrap_or(match smtp_security {
            Security::Tls => 465,
            Security::Starttls => 587,
        }),
        smtp_security,
        trusted_authserv_id,
        sent_check_mailbox: config.sent_check_mailbox.clone().unwrap_or_else(|| {
            if gmail {
                "[Gmail]/All Mail".into()
            } else {
                config.mailbox.clone()
            }
        }),
        oauth,
    })
}

/// The email channel.
pub struct EmailChannel {
    config: EmailConfig,
    imap: ImapServer,
    smtp: SmtpServer,
    from: Mailbox,
    allow: Allowlist,
    trusted_authserv_id: Option<String>,
    sent_check_mailbox: String,
    tokens: Option<Arc<TokenSource>>,
    state: Arc<dyn StateStore>,
    ledger: Arc<dyn SendLedger>,
    health: Arc<HealthCell>,
    default_subject: String,
    receiver: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Held while a message is handed to the host and the mark moved past it.
    handing_over: tokio::sync::Mutex<()>,
}

impl EmailChannel {
    pub async fn from_setup(setup: ChannelSetup) -> Result<EmailChannel, ChannelError> {
        let config: EmailConfig = setup.settings_as(NAME)?;
        let resolved = resolve(&config).map_err(MailError::into_channel_error)?;
        let allow = Allowlist::new(&config.allow_senders).map_err(ChannelError::Setup)?;
        if allow.is_empty() {
            tracing::warn!("email: allow_senders is empty: no mail will be read");
        }
        let user = config
            .username
            .clone()
            .unwrap_or_else(|| config.address.clone());
        let (login, tokens) = match &resolved.oauth {
            None => (
                Login::Password {
                    user,
                    password: setup.require_secret(NAME, PASSWORD_SECRET).await?,
                },
                None,
            ),
            Some(client) => {
                let tokens = Arc::new(
                    TokenSource::new(client.clone(), Arc::clone(&setup.secrets))
                        .map_err(MailError::into_channel_error)?,
                );
                (
                    Login::OAuth {
                        user,
                        tokens: Arc::clone(&tokens),
                    },
                    Some(tokens),
                )
            }
        };
        let tls =
            tls::client_config(config.ca_file.as_deref()).map_err(MailError::into_channel_error)?;
        let from = Mailbox::new(
            Some(setup.assistant_name.clone()),
            config.address.parse().map_err(|e| {
                ChannelError::Setup(format!(
                    "[channels.email] address {:?}: {e}",
                    config.address
                ))
            })?,
        );
        Ok(EmailChannel {
            imap: ImapServer {
                host: resolved.imap_host,
                port: resolved.imap_port,
                tls,
                login: login.clone(),
            },
            smtp: SmtpServer {
                host: resolved.smtp_host,
                port: resolved.smtp_port,
                security: resolved.smtp_security,
                ca_file: config.ca_file.clone(),
                login,
                retry_after: Duration::from_secs(config.smtp_retry_secs),
            },
            default_subject: config
                .subject
                .clone()
                .unwrap_or_else(|| format!("Message from {}", setup.assistant_name)),
            from,
            allow,
            trusted_authserv_id: resolved.trusted_authserv_id,
            sent_check_mailbox: resolved.sent_check_mailbox,
            tokens,
            state: setup.state,
            ledger: setup.ledger,
            health: Arc::new(HealthCell::default()),
            receiver: tokio::sync::Mutex::new(None),
            handing_over: tokio::sync::Mutex::new(()),
            config,
        })
    }

    fn own_address(&self) -> String {
        self.config.address.to_ascii_lowercase()
    }

    async fn deliver_once(
        &self,
        message: &OutgoingMessage,
    ) -> Result<Option<String>, ChannelError> {
        let original = match &message.reply_to {
            Some(id) => load_original(&*self.state, id).await?,
            None => None,
        };
        let mut files = Vec::new();
        for file in &message.files {
            let data = tokio::fs::read(&file.path).await.map_err(|e| {
                ChannelError::Failed(format!("reading {}: {e}", file.path.display()))
            })?;
            files.push(reply::ReplyFile {
                name: file.file_name.clone(),
                mime_type: file.mime_type.clone(),
                data,
            });
        }
        let draft = reply::Draft {
            from: &self.from,
            to: &message.chat_id,
            text: &message.text,
            original: original.as_ref(),
            default_subject: &self.default_subject,
            idempotency_key: &message.idempotency_key,
            files,
        };
        let mail = reply::build(&draft).map_err(|e| ChannelError::Rejected {
            platform: NAME.into(),
            detail: e.to_string(),
        })?;
        let message_id = reply::message_id_for(&message.idempotency_key, &self.config.address);
        let own = self.own_address();
        send_parts(&*self.ledger, &message.idempotency_key, 1, |_, attempt| {
            let mail = &mail;
            let message_id = message_id.clone();
            let own = own.clone();
            async move {
                if attempt == SendAttempt::AfterCrash && self.was_sent(&message_id).await {
                    tracing::info!(%message_id, "email: found in the mailbox after a crash; not sent again");
                    return Ok(Some(message_id));
                }
                self.smtp.send(mail, Some(&own)).await?;
                Ok(Some(message_id))
            }
        })
        .await
    }

    /// Whether the server already took the mail with this id (its copy to our own address
    /// is in the mailbox). When the mailbox cannot be read, assumes not: sending twice
    /// beats never sending.
    async fn was_sent(&self, message_id: &str) -> bool {
        let found = async {
            let mut session = self.imap.connect().await?;
            let found =
                imap::has_message_id(&mut session, &self.sent_check_mailbox, message_id).await;
            let _ = session.logout().await;
            found
        }
        .await;
        match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "email: could not check whether a mail was sent before a crash");
                false
            }
        }
    }
}

/// How long an inbound mail's headers and text are kept for quoting and threading the
/// answer: a reply to an older mail is sent unquoted, in a new thread.
pub const ORIGINAL_RETENTION: Duration = Duration::from_secs(180 * 24 * 3600);

async fn load_original(
    state: &dyn StateStore,
    message_id: &str,
) -> Result<Option<reply::Original>, ChannelError> {
    Ok(state
        .get(&format!("orig:{message_id}"))
        .await?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

#[async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError> {
        let mut receiver = self.receiver.lock().await;
        if let Some(old) = receiver.take() {
            old.abort();
        }
        self.health.starting();
        let me = Arc::clone(&self);
        let pruning = forget_older_daily(
            Arc::clone(&self.state),
            "orig:",
            ORIGINAL_RETENTION,
            "email: answered mails' headers older than the retention",
        );
        *receiver = Some(tokio::spawn(async move {
            // The receiver ends when the host is gone; the pruning with it.
            tokio::select! {
                () = me.receive(sink) => {}
                () = pruning => {}
            }
        }));
        Ok(())
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let result = self.deliver_once(message).await;
        if let Err(e) = &result {
            self.health.error(e.to_string());
        }
        result
    }

    async fn verify(&self) -> Result<String, ChannelError> {
        let mut session = self
            .imap
            .connect()
            .await
            .map_err(MailError::into_channel_error)?;
        session
            .select(&self.config.mailbox)
            .await
            .map_err(|e| ChannelError::Setup(format!("mailbox {:?}: {e}", self.config.mailbox)))?;
        let _ = session.logout().await;
        self.smtp.check().await?;
        let mut who = format!(
            "{} (IMAP {}:{}, SMTP {}:{})",
            self.config.address, self.imap.host, self.imap.port, self.smtp.host, self.smtp.port
        );
        if self.config.sender_check == SenderCheckMode::Off {
            who.push_str("; sender_check is off: From addresses are trusted as written, and anyone can forge them");
        }
        Ok(who)
    }

    async fn link(&self, show: &ShowToOwner<'_>) -> Result<Option<String>, ChannelError> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        if tokens.access_token().await.is_ok() {
            return Ok(None);
        }
        tokens
            .link(show, Duration::from_secs(self.config.link_timeout_secs))
            .await
            .map_err(MailError::into_channel_error)?;
        Ok(Some(self.config.address.clone()))
    }

    fn health(&self) -> Health {
        let mut health = self.health.snapshot();
        if self.config.sender_check == SenderCheckMode::Off && health.last_error.is_none() {
            health.last_error = Some("sender_check is off: From addresses are not verified".into());
        }
        health
    }

    async fn stop(&self) {
        // Bounded: the host may be the one not answering (the message is then read again
        // and deduplicated by the host).
        let _settled = tokio::time::timeout(Duration::from_secs(5), self.handing_over.lock()).await;
        if let Some(task) = self.receiver.lock().await.take() {
            task.abort();
        }
        self.health.stopped();
    }
}

impl EmailChannel {
    /// The receive loop: connect, catch up, IDLE; reconnect with backoff on any failure.
    async fn receive(self: Arc<Self>, sink: InboundSink) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        loop {
            let error = match self.session(&sink, &mut backoff).await {
                Ok(()) => return, // the host is gone
                Err(e) => e,
            };
            match &error {
                MailError::Auth(_) | MailError::Config(_) => self.health.down(error.to_string()),
                MailError::Connect(_) => self.health.reconnecting(error.to_string()),
            }
            let wait = backoff.next_delay();
            tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, "email: receiving stopped; reconnecting");
            tokio::time::sleep(wait).await;
        }
    }

    /// One connection's life. `Ok` only when the host stopped listening.
    async fn session(&self, sink: &InboundSink, backoff: &mut Backoff) -> Result<(), MailError> {
        let mut session = self.imap.connect().await?;
        let mailbox = session
            .select(&self.config.mailbox)
            .await
            .map_err(|e| MailError::Connect(format!("selecting {:?}: {e}", self.config.mailbox)))?;
        let validity = mailbox.uid_validity.unwrap_or(0);
        let saved = self
            .state
            .get(CURSOR_KEY)
            .await
            .map_err(|e| MailError::Connect(e.to_string()))?
            .and_then(|t| Cursor::decode(&t));
        let mut cursor = Cursor::resume(saved, validity, mailbox.uid_next);
        if saved != Some(cursor) {
            if saved.is_some() {
                tracing::warn!(
                    old = ?saved,
                    validity,
                    "email: the mailbox was renumbered (UIDVALIDITY changed); continuing from its newest message"
                );
            }
            self.save_cursor(cursor).await?;
        }
        self.health.connected();
        backoff.reset();
        tracing::info!(address = %self.config.address, validity, last_uid = cursor.last_uid, "email: connected");
        loop {
            let new = imap::fetch_new(&mut session, cursor.last_uid, self.config.max_message_bytes)
                .await?;
            for (uid, raw) in new {
                // A stop waits for this: a message handed over always moves the mark, so a
                // restarted channel does not read it again.
                let handing_over = self.handing_over.lock().await;
                if let Some(raw) = &raw
                    && !self.hand_over(sink, raw).await?
                {
                    return Ok(());
                }
                cursor.last_uid = uid;
                self.save_cursor(cursor).await?;
                drop(handing_over);
                if raw.is_some()
                    && let Err(e) = imap::mark_seen(&mut session, uid).await
                {
                    tracing::debug!(error = %e, uid, "email: could not mark a message read");
                }
            }
            session =
                imap::idle(session, Duration::from_secs(self.config.idle_secs.max(5))).await?;
        }
    }

    async fn save_cursor(&self, cursor: Cursor) -> Result<(), MailError> {
        self.state
            .put(CURSOR_KEY, &cursor.encode())
            .await
            .map_err(|e| MailError::Connect(e.to_string()))
    }

    /// Reads one message and, when it may be read, hands it to the host and waits until the
    /// host has settled it. `Ok(false)`: the host is gone. A message the host could not
    /// store is an error (the cursor stays before it: it is fetched again).
    async fn hand_over(&self, sink: &InboundSink, raw: &[u8]) -> Result<bool, MailError> {
        let mail = match parse::parse(raw) {
            Ok(mail) => mail,
            Err(e) => {
                tracing::warn!(error = %e, "email: unreadable message skipped");
                self.health.event();
                return Ok(true);
            }
        };
        if mail.from == self.own_address() {
            return Ok(true); // our own copy (see `deliver`), or a loop
        }
        if !self.allow.allows(&mail.from) {
            tracing::info!(from = %mail.from, "email: sender not in allow_senders; skipped");
            return Ok(true);
        }
        if self.config.sender_check == SenderCheckMode::Required {
            let trusted = self.trusted_authserv_id.as_deref().unwrap_or_default();
            match auth::check_sender(&mail.from, &mail.authentication_results, trusted) {
                SenderCheck::Verified { how } => {
                    tracing::debug!(from = %mail.from, %how, "email: sender verified");
                }
                SenderCheck::Failed { why } => {
                    tracing::warn!(from = %mail.from, %why, "email: sender not verified; skipped");
                    return Ok(true);
                }
                SenderCheck::Unchecked => {
                    tracing::warn!(from = %mail.from, trusted, "email: no verdict from the trusted server; skipped");
                    return Ok(true);
                }
            }
        }
        let original = reply::Original {
            message_id: mail.message_id.clone(),
            subject: mail.subject.clone(),
            references: mail.references.clone(),
            from: match &mail.from_name {
                Some(name) => format!("{name} <{}>", mail.from),
                None => mail.from.clone(),
            },
            date: mail.date.clone(),
            text: mail.text.clone(),
        };
        if let Ok(json) = serde_json::to_string(&original) {
            self.state
                .put(&format!("orig:{}", mail.message_id), &json)
                .await
                .map_err(|e| MailError::Connect(e.to_string()))?;
        }
        let mut text = mail.text.clone();
        if mail.in_reply_to.is_none() && !mail.subject.is_empty() {
            text = format!("Subject: {}\n\n{text}", mail.subject);
        }
        let attachments = mail
            .files
            .iter()
            .map(|f| Attachment {
                file_name: f.name.clone(),
                mime_type: f.mime_type.clone(),
                data: bytes::Bytes::from(f.data.clone()),
            })
            .collect();
        let event = InboundEvent {
            channel: NAME.into(),
            chat_id: mail.from.clone(),
            chat_name: original.from.clone(),
            is_group: false,
            thread: Some(mail.thread_root().to_owned()),
            platform_msg_id: mail.message_id.clone(),
            sender: mail.from.clone(),
            sender_name: mail.from_name.clone(),
            text,
            received_at: nanoclaw_channel::now_ms(),
            mentions_me: true,
            from_bot: mail.automated,
            attachments,
            ack: None,
        };
        let outcome = hand_over(sink, event).await;
        self.health.event();
        match outcome {
            Some(outcome) if outcome.is_settled() => Ok(true),
            Some(outcome) => Err(MailError::Connect(format!(
                "the host could not store a message ({outcome:?}); it is fetched again"
            ))),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(extra: &str) -> EmailConfig {
        toml::from_str(&format!("address = \"andy@example.org\"\n{extra}")).unwrap()
    }

    #[test]
    fn gmail_fills_in_its_servers_and_trusted_checker() {
        let r = resolve(&config(
            "provider = \"gmail\"\nmode = \"oauth2\"\noauth_client_id = \"id\"",
        ))
        .unwrap();
        assert_eq!(r.imap_host, "imap.gmail.com");
        assert_eq!((r.smtp_host.as_str(), r.smtp_port), ("smtp.gmail.com", 465));
        assert_eq!(r.trusted_authserv_id.as_deref(), Some("mx.google.com"));
        assert_eq!(r.sent_check_mailbox, "[Gmail]/All Mail");
        assert_eq!(r.oauth.unwrap().token_url, oauth::GOOGLE_TOKEN_URL);
    }

    #[test]
    fn required_sender_check_needs_a_trusted_server() {
        let err = resolve(&config("imap_host = \"i\"\nsmtp_host = \"s\""))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("trusted_authserv_id"), "{err}");
        assert!(
            resolve(&config(
                "imap_host = \"i\"\nsmtp_host = \"s\"\nsender_check = \"off\""
            ))
            .is_ok()
        );
    }

    #[test]
    fn missing_hosts_and_unknown_providers_are_named() {
        let err = resolve(&config("sender_check = \"off\""))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("imap_host"), "{err}");
        let err = resolve(&config("provider = \"aol\""))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("aol"), "{err}");
    }

    #[test]
    fn starttls_defaults_to_port_587() {
        let r = resolve(&config(
            "imap_host = \"i\"\nsmtp_host = \"s\"\nsmtp_security = \"starttls\"\nsender_check = \"off\"",
        ))
        .unwrap();
        assert_eq!(r.smtp_port, 587);
    }
}

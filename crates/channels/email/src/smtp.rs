//! The sending side: SMTP submission over TLS (implicit, like port 465, or STARTTLS
//! required, like 587 — never plaintext), logging in with a password or an OAuth access
//! token (XOAUTH2). A transport is built per send, so a renewed token is always the one
//! used.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use nanoclaw_channel::ChannelError;
use secrecy::ExposeSecret;

use crate::imap::Login;
use crate::{MailError, NAME};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (submissions, port 465).
    Tls,
    /// Plaintext greeting, then STARTTLS, required (submission, port 587).
    Starttls,
}

/// Where and how mail is submitted.
#[derive(Clone)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub ca_file: Option<PathBuf>,
    pub login: Login,
    /// How long to wait after a temporary refusal (4xx): SMTP says "later", not when.
    pub retry_after: Duration,
}

const SEND_TIMEOUT: Duration = Duration::from_secs(60);

impl SmtpServer {
    async fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
        let mut params = TlsParameters::builder(self.host.clone());
        if let Some(path) = &self.ca_file {
            for der in crate::tls::extra_certs(path)? {
                let cert = Certificate::from_der(der.to_vec())
                    .map_err(|e| MailError::Config(format!("ca_file {}: {e}", path.display())))?;
                params = params.add_root_certificate(cert);
            }
        }
        let params = params
            .build_rustls()
            .map_err(|e| MailError::Config(format!("SMTP TLS: {e}")))?;
        let tls = match self.security {
            Security::Tls => Tls::Wrapper(params),
            Security::Starttls => Tls::Required(params),
        };
        let (credentials, mechanism) = match &self.login {
            Login::Password { user, password } => (
                Credentials::new(user.clone(), password.expose_secret().to_owned()),
                vec![Mechanism::Plain, Mechanism::Login],
            ),
            Login::OAuth { user, tokens } => {
                let token = tokens.access_token().await?;
                (
                    Credentials::new(user.clone(), token.expose_secret().to_owned()),
                    vec![Mechanism::Xoauth2],
                )
            }
        };
        Ok(
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.clone())
                .port(self.port)
                .tls(tls)
                .credentials(credentials)
                .authentication(mechanism)
                .timeout(Some(SEND_TIMEOUT))
                .build(),
        )
    }

    /// Submits `message` to its `To` recipients and to `also` (envelope only: a copy for
    /// the channel's own mailbox, which tells after a crash whether the server took it).
    pub async fn send(&self, message: &Message, also: Option<&str>) -> Result<(), ChannelError> {
        let transport = self
            .transport()
            .await
            .map_err(MailError::into_channel_error)?;
        let mut to = message.envelope().to().to_vec();
        if let Some(also) = also.and_then(|a| a.parse().ok())
            && !to.contains(&also)
        {
            to.push(also);
        }
        let envelope = Envelope::new(message.envelope().from().cloned(), to).map_err(|e| {
            ChannelError::Rejected {
                platform: NAME.into(),
                detail: format!("envelope: {e}"),
            }
        })?;
        let raw = message.formatted();
        match transport.send_raw(&envelope, &raw).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e, &self.login, self.retry_after)),
        }
    }

    /// Connects and logs in without sending (for `channel add`).
    pub async fn check(&self) -> Result<(), ChannelError> {
        let transport = self
            .transport()
            .await
            .map_err(MailError::into_channel_error)?;
        match transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ChannelError::NotConnected(format!(
                "SMTP {}:{} did not answer",
                self.host, self.port
            ))),
            Err(e) => Err(classify(&e, &self.login, self.retry_after)),
        }
    }
}

/// What an SMTP failure means for delivery: a server that answered 4xx or 5xx did not
/// take the message (so it is safe to send again); a failure without an answer (a
/// dropped connection mid-DATA, a timeout) may have delivered it.
fn classify(
    e: &lettre::transport::smtp::Error,
    login: &Login,
    retry_after: Duration,
) -> ChannelError {
    let code = e.status().map(u16::from);
    let detail = e.to_string();
    match code {
        Some(530 | 534 | 535) => {
            if let Login::OAuth { tokens, .. } = login {
                // A token revoked early: the next send asks for a new one.
                let tokens = Arc::clone(tokens);
                tokio::spawn(async move { tokens.invalidate().await });
            }
            ChannelError::Unauthorized {
                platform: NAME.into(),
                detail,
            }
        }
        Some(c) if (400..500).contains(&c) => ChannelError::RateLimited {
            platform: NAME.into(),
            retry_after,
        },
        Some(c) if c >= 500 => ChannelError::Rejected {
            platform: NAME.into(),
            detail,
        },
        _ if e.is_tls() || is_connect_failure(e) => ChannelError::NotConnected(detail),
        _ => ChannelError::Failed(detail),
    }
}

/// Whether nothing reached the server: the connection itself failed.
fn is_connect_failure(e: &lettre::transport::smtp::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("connection refused") || text.contains("could not connect")
}

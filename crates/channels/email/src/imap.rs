//! The receiving side: one IMAP connection over TLS that waits in IDLE for new mail,
//! fetches what arrived past the UID high-water mark, hands each message to the host and
//! moves the mark only past messages the host has settled. The mark is kept with the
//! mailbox's UIDVALIDITY: if the server renumbers the mailbox, the channel starts again
//! from the newest message instead of re-reading (or skipping) mail by stale numbers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::MailError;
use crate::oauth::{TokenSource, xoauth2};

/// An IMAP session over TLS.
pub type Session = async_imap::Session<tokio_rustls::client::TlsStream<TcpStream>>;

/// How the channel logs in (to IMAP and SMTP alike).
#[derive(Clone)]
pub enum Login {
    Password {
        user: String,
        password: SecretString,
    },
    OAuth {
        user: String,
        tokens: Arc<TokenSource>,
    },
}

impl Login {
    pub fn user(&self) -> &str {
        match self {
            Login::Password { user, .. } | Login::OAuth { user, .. } => user,
        }
    }
}

/// Where the IMAP server is.
#[derive(Clone)]
pub struct ImapServer {
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
    pub login: Login,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

struct XOAuth2(Option<String>);

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;
    /// The first challenge gets the token; a second one is the server's error report
    /// (Gmail sends JSON), which must be answered empty for the server to say NO.
    fn process(&mut self, _challenge: &[u8]) -> String {
        self.0.take().unwrap_or_default()
    }
}

impl ImapServer {
    /// Connects, checks the certificate, reads the greeting and logs in.
    pub async fn connect(&self) -> Result<Session, MailError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| MailError::Connect(format!("IMAP {}:{}: timed out", self.host, self.port)))?
        .map_err(|e| MailError::Connect(format!("IMAP {}:{}: {e}", self.host, self.port)))?;
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| MailError::Config(format!("imap_host {:?}: {e}", self.host)))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(Arc::clone(&self.tls)).connect(name, tcp),
        )
        .await
        .map_err(|_| MailError::Connect(format!("IMAP {}: TLS timed out", self.host)))?
        .map_err(|e| MailError::Connect(format!("IMAP {}: TLS: {e}", self.host)))?;
        let mut client = async_imap::Client::new(tls);
        match tokio::time::timeout(CONNECT_TIMEOUT, client.read_response()).await {
            Ok(Ok(Some(_greeting))) => {}
            Ok(Ok(None)) => {
                return Err(MailError::Connect(format!(
                    "IMAP {}: closed before the greeting",
                    self.host
                )));
            }
            Ok(Err(e)) => return Err(MailError::Connect(format!("IMAP {}: {e}", self.host))),
            Err(_) => {
                return Err(MailError::Connect(format!(
                    "IMAP {}: no greeting",
                    self.host
                )));
            }
        }
        let session = match &self.login {
            Login::Password { user, password } => client
                .login(user, password.expose_secret())
                .await
                .map_err(|(e, _)| login_error(&self.host, e))?,
            Login::OAuth { user, tokens } => {
                let token = tokens.access_token().await?;
                match client
                    .authenticate("XOAUTH2", XOAuth2(Some(xoauth2(user, &token))))
                    .await
                {
                    Ok(session) => session,
                    Err((e, _)) => {
                        // Revoked early: the next try asks for a fresh token.
                        tokens.invalidate().await;
                        return Err(login_error(&self.host, e));
                    }
                }
            }
        };
        Ok(session)
    }
}

fn login_error(host: &str, e: async_imap::error::Error) -> MailError {
    match e {
        async_imap::error::Error::No(detail) | async_imap::error::Error::Bad(detail) => {
            MailError::Auth(format!("IMAP {host} refused the login: {}", detail.trim()))
        }
        other => MailError::Connect(format!("IMAP {host}: {other}")),
    }
}

/// The high-water mark: the mailbox's UIDVALIDITY and the last UID the host settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub validity: u32,
    pub last_uid: u32,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.validity, self.last_uid)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (validity, last) = text.split_once(':')?;
        Some(Cursor {
            validity: validity.parse().ok()?,
            last_uid: last.parse().ok()?,
        })
    }

    /// Where to continue in a mailbox with this `validity` and next UID: the saved mark
    /// when the numbering is the same, else just before the next message (mail already
    /// there when the channel is first set up, or after a renumbering, is not answered).
    pub fn resume(saved: Option<Cursor>, validity: u32, uid_next: Option<u32>) -> Cursor {
        match saved {
            Some(c) if c.validity == validity => c,
            _ => Cursor {
                validity,
                last_uid: uid_next.unwrap_or(1).saturating_sub(1),
            },
        }
    }
}

/// Messages past `last_uid`, oldest first: `(uid, raw bytes)`. Skips (with a warning)
/// those larger than `max_bytes`.
pub async fn fetch_new(
    session: &mut Session,
    last_uid: u32,
    max_bytes: u64,
) -> Result<Vec<(u32, Option<Vec<u8>>)>, MailError> {
    let range = format!("{}:*", last_uid.saturating_add(1));
    let sizes: Vec<(u32, u32)> = session
        .uid_fetch(&range, "(UID RFC822.SIZE)")
        .await
        .map_err(io)?
        .try_filter_map(|f| async move { Ok(f.uid.map(|uid| (uid, f.size.unwrap_or(0)))) })
        .try_collect()
        .await
        .map_err(io)?;
    // `n:*` always names the newest message, even one below `n`.
    let mut wanted: Vec<(u32, u32)> = sizes
        .into_iter()
        .filter(|(uid, _)| *uid > last_uid)
        .collect();
    wanted.sort_unstable();
    let mut out = Vec::with_capacity(wanted.len());
    for (uid, size) in wanted {
        if u64::from(size) > max_bytes {
            tracing::warn!(uid, size, max_bytes, "email: message too large; skipped");
            out.push((uid, None));
            continue;
        }
        let fetched: Vec<Vec<u8>> = session
            .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
            .await
            .map_err(io)?
            .try_filter_map(|f| async move { Ok(f.body().map(<[u8]>::to_vec)) })
            .try_collect()
            .await
            .map_err(io)?;
        // Expunged between the two fetches: nothing to hand over.
        out.push((uid, fetched.into_iter().next()));
    }
    Ok(out)
}

/// Marks a message read (best effort: the owner sees in their mail client what the
/// assistant took).
pub async fn mark_seen(session: &mut Session, uid: u32) -> Result<(), MailError> {
    let _: Vec<_> = session
        .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Seen)")
        .await
        .map_err(io)?
        .try_collect()
        .await
        .map_err(io)?;
    Ok(())
}

/// Waits in IDLE until the server reports a change, or `max` passes. Returns the session.
pub async fn idle(session: Session, max: Duration) -> Result<Session, MailError> {
    let mut handle = session.idle();
    handle.init().await.map_err(io)?;
    let (wait, stop) = handle.wait_with_timeout(max);
    let outcome = tokio::time::timeout(max + Duration::from_secs(5), wait).await;
    drop(stop);
    match outcome {
        Ok(Ok(_)) | Err(_) => {}
        Ok(Err(e)) => return Err(io(e)),
    }
    let session = handle.done().await.map_err(io)?;
    while session.unsolicited_responses.try_recv().is_ok() {}
    Ok(session)
}

/// Whether a message with this `Message-ID` is in `mailbox` (to tell, after a crash,
/// whether a mail was already accepted by the server).
pub async fn has_message_id(
    session: &mut Session,
    mailbox: &str,
    message_id: &str,
) -> Result<bool, MailError> {
    session.select(mailbox).await.map_err(io)?;
    // Quoted string: a Message-ID has no quotes or backslashes of its own (we made it).
    let query = format!("HEADER Message-ID \"<{message_id}>\"");
    let found = session.uid_search(query).await.map_err(io)?;
    Ok(!found.is_empty())
}

fn io(e: async_imap::error::Error) -> MailError {
    MailError::Connect(format!("IMAP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_resumes_only_within_the_same_validity() {
        let saved = Cursor {
            validity: 7,
            last_uid: 41,
        };
        assert_eq!(Cursor::resume(Some(saved), 7, Some(50)), saved);
        assert_eq!(
            Cursor::resume(Some(saved), 8, Some(3)),
            Cursor {
                validity: 8,
                last_uid: 2
            }
        );
        assert_eq!(
            Cursor::resume(None, 9, Some(1)),
            Cursor {
                validity: 9,
                last_uid: 0
            }
        );
        assert_eq!(Cursor::decode(&saved.encode()), Some(saved));
        assert_eq!(Cursor::decode("garbage"), None);
    }
}

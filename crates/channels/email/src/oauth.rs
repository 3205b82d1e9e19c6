//! OAuth 2 for Gmail (and any provider that speaks it): the installed-app flow once, when
//! the owner links the account (a browser on a loopback redirect, with PKCE), then access
//! tokens from the refresh token, renewed before they expire. A provider that rotates the
//! refresh token (sends a new one with an access token) gets the new one stored in the vault
//! at once, so the credential rotates without the owner doing anything.
//!
//! Endpoints are settings (Google's by default), which is also how the tests use a local
//! token server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nanoclaw_channel::SecretSource;
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::MailError;

/// Google's endpoints and Gmail's scope.
pub const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const GMAIL_SCOPE: &str = "https://mail.google.com/";
/// The vault secret holding the refresh token.
pub const REFRESH_TOKEN_SECRET: &str = "email.oauth_refresh_token";
/// The vault secret holding the OAuth client's secret (Google issues one even to
/// installed apps).
pub const CLIENT_SECRET_SECRET: &str = "email.oauth_client_secret";
/// An access token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// The OAuth client as configured.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub auth_url: String,
    pub token_url: String,
    pub scope: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Access tokens for one account, renewed from the refresh token in the vault.
pub struct TokenSource {
    client: OAuthClient,
    http: reqwest::Client,
    secrets: Arc<dyn SecretSource>,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

impl TokenSource {
    pub fn new(
        client: OAuthClient,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<TokenSource, MailError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| MailError::Config(format!("HTTP client: {e}")))?;
        Ok(TokenSource {
            client,
            http,
            secrets,
            cached: Mutex::new(None),
        })
    }

    /// A token valid for at least a minute more.
    pub async fn access_token(&self) -> Result<SecretString, MailError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + RENEW_BEFORE < *expires
        {
            return Ok(token.clone());
        }
        let refresh = self
            .secrets
            .secret(REFRESH_TOKEN_SECRET)
            .await
            .map_err(|e| MailError::Auth(e.to_string()))?
            .ok_or_else(|| {
                MailError::Auth(format!(
                    "no {REFRESH_TOKEN_SECRET} in the vault: link the account with `nanoclaw channel add email`"
                ))
            })?;
        let client_secret = self
            .secrets
            .secret(CLIENT_SECRET_SECRET)
            .await
            .map_err(|e| MailError::Auth(e.to_string()))?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.expose_secret().to_owned()),
            ("client_id", self.client.client_id.clone()),
        ];
        if let Some(secret) = &client_secret {
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        let response = self.token_call(&form).await?;
        if let Some(rotated) = response.refresh_token
            && rotated != refresh.expose_secret()
        {
            // Stored before the access token is used: a crash now keeps the newest token.
            self.secrets
                .put_secret(REFRESH_TOKEN_SECRET, SecretString::from(rotated))
                .await
                .map_err(|e| MailError::Auth(format!("storing the rotated refresh token: {e}")))?;
            tracing::info!(
                "email: the provider rotated the refresh token; the new one is in the vault"
            );
        }
        let lifetime = Duration::from_secs(response.expires_in.unwrap_or(3600));
        let token = SecretString::from(response.access_token);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Forgets the cached token (the server refused it: it was revoked early).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn token_call(&self, form: &[(&str, String)]) -> Result<TokenResponse, MailError> {
        let response = self
            .http
            .post(&self.client.token_url)
            .form(form)
            .send()
            .await
            .map_err(|e| MailError::Connect(format!("token endpoint: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| MailError::Connect(format!("token endpoint: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                MailError::Auth(format!(
                    "the token endpoint answered something unreadable: {e}"
                ))
            });
        }
        let detail = serde_json::from_slice::<TokenError>(&body)
            .map(|e| match e.error_description {
                Some(d) => format!("{}: {d}", e.error),
                None => e.error,
            })
            .unwrap_or_else(|_| format!("HTTP {status}"));
        if status.is_server_error() || status.as_u16() == 429 {
            Err(MailError::Connect(format!("token endpoint: {detail}")))
        } else {
            // invalid_grant: revoked or expired; only the owner can link again.
            Err(MailError::Auth(format!(
                "the token endpoint refused the refresh token ({detail}); link the account again with `nanoclaw channel add email`"
            )))
        }
    }

    /// The installed-app flow: shows the owner a URL to open, waits (up to `wait`) for the
    /// browser to come back to a loopback redirect, trades the code for tokens and stores
    /// the refresh token. Returns the URL's `state` check result as an error on mismatch.
    pub async fn link(
        &self,
        show: &(dyn Fn(&str) + Send + Sync),
        wait: Duration,
    ) -> Result<(), MailError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| MailError::Connect(format!("loopback redirect listener: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| MailError::Connect(e.to_string()))?
            .port();
        let redirect = format!("http://127.0.0.1:{port}/");
        let verifier = random_token();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let state = random_token();
        let mut url = reqwest::Url::parse(&self.client.auth_url)
            .map_err(|e| MailError::Config(format!("oauth_auth_url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("response_type", "code")
            .append_pair("scope", &self.client.scope)
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state);
        show(&format!(
            "Open this address in a browser on this machine and allow access:\n{url}\n"
        ));
        let code = tokio::time::timeout(wait, wait_for_code(&listener, &state))
            .await
            .map_err(|_| {
                MailError::Auth(format!(
                    "no answer from the browser within {} s",
                    wait.as_secs()
                ))
            })??;
        let client_secret = self
            .secrets
            .secret(CLIENT_SECRET_SECRET)
            .await
            .map_err(|e| MailError::Auth(e.to_string()))?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", self.client.client_id.clone()),
            ("code_verifier", verifier),
        ];
        if let Some(secret) = &client_secret {
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        let response = self.token_call(&form).await?;
        let refresh = response.refresh_token.ok_or_else(|| {
            MailError::Auth(
                "the provider sent no refresh token (was access_type=offline honoured?)".into(),
            )
        })?;
        self.secrets
            .put_secret(REFRESH_TOKEN_SECRET, SecretString::from(refresh))
            .await
            .map_err(|e| MailError::Auth(e.to_string()))?;
        let lifetime = Duration::from_secs(response.expires_in.unwrap_or(3600));
        *self.cached.lock().await = Some((
            SecretString::from(response.access_token),
            Instant::now() + lifetime,
        ));
        Ok(())
    }
}

/// Serves the loopback redirect until a request carries the code for `state`.
async fn wait_for_code(
    listener: &tokio::net::TcpListener,
    state: &str,
) -> Result<String, MailError> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| MailError::Connect(e.to_string()))?;
        let mut buf = vec![0u8; 8192];
        let n = match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => continue,
        };
        let request = String::from_utf8_lossy(&buf[..n]);
        let target = request
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/");
        let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else {
            continue;
        };
        let get = |k: &str| {
            url.query_pairs()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.into_owned())
        };
        let (status, page, outcome) = match (get("code"), get("state"), get("error")) {
            (_, _, Some(error)) => (
                "400 Bad Request",
                "Access was not granted. You can close this tab.",
                Some(Err(MailError::Auth(format!("the provider said: {error}")))),
            ),
            (Some(code), Some(s), None) if s == state => (
                "200 OK",
                "nanoclaw is linked. You can close this tab.",
                Some(Ok(code)),
            ),
            (Some(_), _, None) => (
                "400 Bad Request",
                "This answer does not belong to the link nanoclaw started.",
                None,
            ),
            _ => ("404 Not Found", "Nothing here.", None),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SASL XOAUTH2 initial response (Google's format): `user=…^Aauth=Bearer …^A^A`.
pub fn xoauth2(user: &str, token: &SecretString) -> String {
    format!(
        "user={user}\x01auth=Bearer {}\x01\x01",
        token.expose_secret()
    )
}

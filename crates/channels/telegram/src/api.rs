//! The Bot API over HTTPS (<https://core.telegram.org/bots/api#making-requests>):
//! `POST {api_base}/bot<token>/<method>` with a JSON body (multipart for uploads), files at
//! `GET {api_base}/file/bot<token>/<file_path>`. Every answer is an envelope with `ok`; a
//! refusal carries `error_code`, `description` and sometimes `parameters.retry_after`.
//!
//! The token is part of every URL, so no URL is ever logged or put in an error.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nanoclaw_channel::ChannelError;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::types::{Envelope, File, Me, SentMessage};

const PLATFORM: &str = "telegram";
/// How long an ordinary call may take (uploads included).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Added to the long-poll timeout for the HTTP request around it.
const POLL_GRACE: Duration = Duration::from_secs(15);

/// A failed Bot API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Telegram (or a proxy in front of it) answered with an error.
    #[error("{method}: Telegram answered {code}: {description}")]
    Refused {
        method: &'static str,
        code: u16,
        description: String,
        retry_after: Option<Duration>,
        migrate_to: Option<i64>,
    },
    /// No usable answer after the request may have reached Telegram: a timeout, a reset,
    /// a body that was not the API's.
    #[error("{method}: {detail}")]
    Transport {
        method: &'static str,
        detail: String,
    },
    /// The request never left: no connection, or it could not be built.
    #[error("{method}: {detail}")]
    Unsent {
        method: &'static str,
        detail: String,
    },
}

/// The error of a request that failed before any answer, split by whether it may have
/// reached Telegram.
fn send_error(method: &'static str, error: reqwest::Error) -> ApiError {
    let unsent = error.is_connect() || error.is_builder();
    let detail = describe(error);
    if unsent {
        ApiError::Unsent { method, detail }
    } else {
        ApiError::Transport { method, detail }
    }
}

impl ApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Refused { code, .. } => Some(*code),
            ApiError::Transport { .. } | ApiError::Unsent { .. } => None,
        }
    }

    /// MarkdownV2 the API could not parse: the part can go again as plain text.
    pub fn is_entity_parse_error(&self) -> bool {
        matches!(self, ApiError::Refused { code: 400, description, .. }
            if description.to_ascii_lowercase().contains("can't parse entities"))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Refused { retry_after, .. } => *retry_after,
            ApiError::Transport { .. } | ApiError::Unsent { .. } => None,
        }
    }

    /// The channel-level error: 429 waits, 401 needs a new token, 400/403 are final.
    pub fn into_channel_error(self) -> ChannelError {
        match &self {
            ApiError::Refused { code: 429, .. } => ChannelError::RateLimited {
                platform: PLATFORM.to_string(),
                retry_after: self.retry_after().unwrap_or(Duration::from_secs(1)),
            },
            ApiError::Refused { code: 401, .. } => ChannelError::Unauthorized {
                platform: PLATFORM.to_string(),
                detail: self.to_string(),
            },
            ApiError::Refused {
                code: 400 | 403,
                migrate_to,
                ..
            } => ChannelError::Rejected {
                platform: PLATFORM.to_string(),
                detail: match migrate_to {
                    Some(id) => format!("{self} (the group is now chat {id})"),
                    None => self.to_string(),
                },
            },
            // Any other 4xx: Telegram refused this request as it is; sending it again will not help.
            ApiError::Refused { code, .. } if *code < 500 => ChannelError::Rejected {
                platform: PLATFORM.to_string(),
                detail: self.to_string(),
            },
            // No connection was made: the send ledger forgets the part, and it goes again fresh.
            ApiError::Unsent { .. } => ChannelError::NotConnected(self.to_string()),
            _ => ChannelError::Failed(self.to_string()),
        }
    }
}

/// A reqwest error without its URL (which holds the token), with its causes.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

/// `retry after N` in a 429's description, for servers that leave out `parameters`.
fn retry_from_description(description: &str) -> Option<Duration> {
    let lower = description.to_ascii_lowercase();
    let rest = &lower[lower.find("retry after ")? + "retry after ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(Duration::from_secs)
}

/// A chat id as the API takes it: an integer, or `@channelusername`.
pub fn chat_id_value(chat_id: &str) -> Value {
    match chat_id.parse::<i64>() {
        Ok(id) => json!(id),
        Err(_) => json!(chat_id),
    }
}

/// The Bot API client for one bot.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl Api {
    pub fn new(api_base: &str, token: SecretString) -> Result<Api, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ChannelError::Setup(format!("telegram HTTP client: {}", describe(e))))?;
        Ok(Api {
            http,
            base: api_base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.base, self.token.expose_secret())
    }

    /// Calls `method` with a JSON body.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        body: &Value,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let response = self
            .http
            .post(self.url(method))
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| send_error(method, e))?;
        Self::answer(method, response).await
    }

    /// Calls `method` with a multipart body (file uploads).
    pub async fn call_multipart<T: DeserializeOwned>(
        &self,
        method: &'static str,
        form: reqwest::multipart::Form,
    ) -> Result<T, ApiError> {
        let response = self
            .http
            .post(self.url(method))
            .multipart(form)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| send_error(method, e))?;
        Self::answer(method, response).await
    }

    async fn answer<T: DeserializeOwned>(
        method: &'static str,
        response: reqwest::Response,
    ) -> Result<T, ApiError> {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ApiError::Transport {
            method,
            detail: describe(e),
        })?;
        let envelope: Envelope<T> = match serde_json::from_slice(&body) {
            Ok(envelope) => envelope,
            // Not the API's JSON: a proxy's error page (502), or a broken answer.
            Err(e) if status.is_success() => {
                return Err(ApiError::Transport {
                    method,
                    detail: format!("unreadable answer: {e}"),
                });
            }
            Err(_) => {
                return Err(ApiError::Refused {
                    method,
                    code: status.as_u16(),
                    description: status.canonical_reason().unwrap_or("error").to_string(),
                    retry_after: None,
                    migrate_to: None,
                });
            }
        };
        if envelope.ok {
            return envelope.result.ok_or(ApiError::Transport {
                method,
                detail: "answer without a result".to_string(),
            });
        }
        let description = envelope.description.unwrap_or_default();
        let parameters = envelope.parameters.unwrap_or_default();
        Err(ApiError::Refused {
            method,
            code: envelope.error_code.unwrap_or(status.as_u16()),
            retry_after: parameters
                .retry_after
                .map(Duration::from_secs)
                .or_else(|| retry_from_description(&description)),
            migrate_to: parameters.migrate_to_chat_id,
            description,
        })
    }

    pub async fn get_me(&self) -> Result<Me, ApiError> {
        self.call("getMe", &json!({}), CALL_TIMEOUT).await
    }

    /// Long-polls for updates after `offset` (raw, so one malformed update does not hide
    /// the others).
    pub async fn get_updates(
        &self,
        offset: i64,
        timeout_secs: u64,
    ) -> Result<Vec<Value>, ApiError> {
        let body = json!({
            "offset": offset,
            "timeout": timeout_secs,
            "allowed_updates": ["message"],
        });
        let timeout = Duration::from_secs(timeout_secs) + POLL_GRACE;
        self.call("getUpdates", &body, timeout).await
    }

    pub async fn send_message(&self, body: &Value) -> Result<SentMessage, ApiError> {
        self.call("sendMessage", body, CALL_TIMEOUT).await
    }

    pub async fn send_document(
        &self,
        form: reqwest::multipart::Form,
    ) -> Result<SentMessage, ApiError> {
        self.call_multipart("sendDocument", form).await
    }

    pub async fn send_chat_action(&self, chat_id: &str, action: &str) -> Result<bool, ApiError> {
        let body = json!({ "chat_id": chat_id_value(chat_id), "action": action });
        self.call("sendChatAction", &body, CALL_TIMEOUT).await
    }

    pub async fn get_file(&self, file_id: &str) -> Result<File, ApiError> {
        self.call("getFile", &json!({ "file_id": file_id }), CALL_TIMEOUT)
            .await
    }

    /// Downloads a file; `None` when it is larger than `cap` bytes (stopped as soon as that
    /// is known).
    pub async fn download(&self, file_path: &str, cap: u64) -> Result<Option<Bytes>, ApiError> {
        const METHOD: &str = "file download";
        let url = format!(
            "{}/file/bot{}/{file_path}",
            self.base,
            self.token.expose_secret()
        );
        let transport = |e: reqwest::Error| send_error(METHOD, e);
        let mut response = self
            .http
            .get(url)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ApiError::Refused {
                method: METHOD,
                code: status.as_u16(),
                description: status.canonical_reason().unwrap_or("error").to_string(),
                retry_after: None,
                migrate_to: None,
            });
        }
        if response.content_length().is_some_and(|len| len > cap) {
            return Ok(None);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (data.len() + chunk.len()) as u64 > cap {
                return Ok(None);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Some(data.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16, description: &str) -> ApiError {
        ApiError::Refused {
            method: "sendMessage",
            code,
            description: description.to_string(),
            retry_after: None,
            migrate_to: None,
        }
    }

    #[test]
    fn errors_map_to_what_the_host_does_with_them() {
        assert!(matches!(
            refused(401, "Unauthorized").into_channel_error(),
            ChannelError::Unauthorized { .. }
        ));
        assert!(matches!(
            refused(403, "Forbidden: bot was blocked by the user").into_channel_error(),
            ChannelError::Rejected { .. }
        ));
        assert!(matches!(
            refused(400, "Bad Request: chat not found").into_channel_error(),
            ChannelError::Rejected { .. }
        ));
        assert!(matches!(
            refused(502, "Bad Gateway").into_channel_error(),
            ChannelError::Failed(_)
        ));
        match refused(429, "Too Many Requests: retry after 7").into_channel_error() {
            ChannelError::RateLimited { retry_after, .. } => {
                // A 429 that names no wait still waits (a second).
                assert_eq!(retry_after, Duration::from_secs(1));
            }
            other => panic!("not rate limited: {other:?}"),
        }
        assert_eq!(
            retry_from_description("Too Many Requests: retry after 7"),
            Some(Duration::from_secs(7))
        );
        assert!(refused(400, "Bad Request: can't parse entities: x").is_entity_parse_error());
        assert!(!refused(400, "Bad Request: chat not found").is_entity_parse_error());
    }

    #[test]
    fn numeric_chat_ids_go_as_integers() {
        assert_eq!(chat_id_value("-1001234"), json!(-1001234));
        assert_eq!(chat_id_value("@news"), json!("@news"));
    }
}

//! The WhatsApp Cloud API over the Graph API
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api/reference>): every call carries
//! `Authorization: Bearer <system-user token>` and goes to `{api_base}/{api_version}/…`.
//! A refusal is a Graph error, `{"error":{"message","type","code","error_subcode",
//! "fbtrace_id"}}` (<https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>).
//!
//! The token never appears in a URL, a log line or an error.

use std::time::Duration;

use bytes::Bytes;
use nanoclaw_channel::ChannelError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

pub(crate) const PLATFORM: &str = "whatsapp";
/// How long an ordinary call may take (uploads and downloads included).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The wait after a throughput or spam rate limit when no `Retry-After` header says
/// otherwise: Meta documents no wait for codes 130429/131056 ("try again later"); a minute
/// keeps the chat usable, an hour (the pair limit's worst case) would stall it.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A failed Graph API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Graph (or a proxy in front of it) answered with an error status.
    #[error("{what}: WhatsApp answered HTTP {status}{}: {message}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Refused {
        what: &'static str,
        status: u16,
        code: Option<i64>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No usable answer after the request may have reached WhatsApp: a timeout, a reset,
    /// a body that was not Graph's.
    #[error("{what}: {detail}")]
    Transport { what: &'static str, detail: String },
    /// The request never left: no connection, or it could not be built.
    #[error("{what}: {detail}")]
    Unsent { what: &'static str, detail: String },
}

/// Graph's error envelope.
#[derive(Debug, Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Debug, Deserialize)]
struct GraphError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    error_data: Option<Value>,
}

impl ApiError {
    /// The Graph error code, if Graph sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::Refused { code, .. } => *code,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the token was refused (HTTP 401, or Graph's 190 "invalid OAuth token").
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401) || self.code() == Some(190)
    }

    fn is_rate_limit(&self) -> bool {
        self.status() == Some(429) || matches!(self.code(), Some(4 | 80007 | 130429 | 131056))
    }

    /// The channel-level error: rate limits wait, a refused token needs the owner, a
    /// refused message is final, anything else may be tried again.
    pub fn into_channel_error(self) -> ChannelError {
        if self.is_rate_limit() {
            let retry_after = match &self {
                ApiError::Refused {
                    retry_after: Some(wait),
                    ..
                } => *wait,
                _ => DEFAULT_RATE_LIMIT_WAIT,
            };
            return ChannelError::RateLimited {
                platform: PLATFORM.to_string(),
                retry_after,
            };
        }
        if self.is_unauthorized() || self.status() == Some(403) {
            return ChannelError::Unauthorized {
                platform: PLATFORM.to_string(),
                detail: self.to_string(),
            };
        }
        match &self {
            ApiError::Refused {
                code: Some(131047), ..
            } => ChannelError::Rejected {
                platform: PLATFORM.to_string(),
                detail: format!(
                    "{self} — more than 24 hours since the user last wrote: WhatsApp only takes template messages until they write again"
                ),
            },
            ApiError::Refused { status, .. } if (400..500).contains(status) => {
                ChannelError::Rejected {
                    platform: PLATFORM.to_string(),
                    detail: self.to_string(),
                }
            }
            ApiError::Unsent { .. } => ChannelError::NotConnected(self.to_string()),
            _ => ChannelError::Failed(self.to_string()),
        }
    }
}

fn describe(error: reqwest::Error) -> String {
    // Without the URL: it is harmless here, but errors should not grow with query strings.
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn send_error(what: &'static str, error: reqwest::Error) -> ApiError {
    let unsent = error.is_connect() || error.is_builder();
    let detail = describe(error);
    if unsent {
        ApiError::Unsent { what, detail }
    } else {
        ApiError::Transport { what, detail }
    }
}

/// The business phone number, as `GET /{phone_number_id}` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct PhoneNumber {
    #[serde(default)]
    pub verified_name: String,
    #[serde(default)]
    pub display_phone_number: String,
}

/// A received media object's metadata (`GET /{media_id}`).
#[derive(Debug, Clone, Deserialize)]
pub struct MediaInfo {
    pub url: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// The answer to a send: `{"messaging_product","contacts":[…],"messages":[{"id"}]}`.
#[derive(Debug, Deserialize)]
struct SendAnswer {
    messages: Vec<SentId>,
}

#[derive(Debug, Deserialize)]
struct SentId {
    id: String,
}

#[derive(Debug, Deserialize)]
struct UploadAnswer {
    id: String,
}

/// The Graph API client for one business phone number.
pub struct Api {
    http: reqwest::Client,
    base: String,
    phone_number_id: String,
    token: SecretString,
}

impl Api {
    pub fn new(
        api_base: &str,
        api_version: &str,
        phone_number_id: &str,
        token: SecretString,
    ) -> Result<Api, ChannelError> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| ChannelError::Setup(format!("whatsapp: HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: format!(
                "{}/{}",
                api_base.trim_end_matches('/'),
                api_version.trim_matches('/')
            ),
            phone_number_id: phone_number_id.to_string(),
            token,
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.expose_secret())
    }

    /// Sends `request` and returns the body of a 2xx answer, or Graph's error.
    async fn call(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Bytes, ApiError> {
        let response = request
            .header(reqwest::header::AUTHORIZATION, self.bearer())
            .send()
            .await
            .map_err(|e| send_error(what, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(|e| ApiError::Transport {
            what,
            detail: describe(e),
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let (code, message) = match serde_json::from_slice::<GraphErrorBody>(&body) {
            Ok(parsed) => {
                let e = parsed.error;
                let details = e
                    .error_data
                    .as_ref()
                    .and_then(|d| d["details"].as_str())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                let sub = e
                    .error_subcode
                    .map(|s| format!(" [subcode {s}]"))
                    .unwrap_or_default();
                (e.code, format!("{}{details}{sub}", e.message))
            }
            Err(_) => (
                None,
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        Err(ApiError::Refused {
            what,
            status: status.as_u16(),
            code,
            message,
            retry_after,
        })
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let body = self.call(what, request).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Transport {
            what,
            detail: format!("unexpected answer: {e}"),
        })
    }

    /// `GET /{phone_number_id}`: who the channel is (and whether the token works).
    pub async fn phone_number(&self) -> Result<PhoneNumber, ApiError> {
        let url = format!(
            "{}/{}?fields=verified_name,display_phone_number",
            self.base, self.phone_number_id
        );
        self.call_json("phone number", self.http.get(url)).await
    }

    /// `POST /{phone_number_id}/messages` with `body`; returns the new message's `wamid`.
    pub async fn send_message(&self, body: &Value) -> Result<String, ApiError> {
        let url = format!("{}/{}/messages", self.base, self.phone_number_id);
        let answer: SendAnswer = self
            .call_json("send message", self.http.post(url).json(body))
            .await?;
        answer
            .messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| ApiError::Transport {
                what: "send message",
                detail: "the answer names no message".to_string(),
            })
    }

    /// `POST /{phone_number_id}/messages` with a read receipt (and the typing indicator).
    pub async fn mark_read(&self, message_id: &str, typing: bool) -> Result<(), ApiError> {
        let mut body = serde_json::json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        });
        if typing {
            body["typing_indicator"] = serde_json::json!({"type": "text"});
        }
        let url = format!("{}/{}/messages", self.base, self.phone_number_id);
        self.call("mark read", self.http.post(url).json(&body))
            .await
            .map(|_| ())
    }

    /// `POST /{phone_number_id}/media` (multipart): uploads a file, returns its media id.
    pub async fn upload(
        &self,
        file_name: &str,
        mime_type: &str,
        data: Vec<u8>,
    ) -> Result<String, ApiError> {
        let part = reqwest::multipart::Part::bytes(data)
            .file_name(file_name.to_string())
            .mime_str(mime_type)
            .map_err(|e| ApiError::Unsent {
                what: "upload media",
                detail: format!("mime type {mime_type:?}: {e}"),
            })?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", mime_type.to_string())
            .part("file", part);
        let url = format!("{}/{}/media", self.base, self.phone_number_id);
        let answer: UploadAnswer = self
            .call_json("upload media", self.http.post(url).multipart(form))
            .await?;
        Ok(answer.id)
    }

    /// `GET /{media_id}`: where a received file can be downloaded.
    pub async fn media_info(&self, media_id: &str) -> Result<MediaInfo, ApiError> {
        let url = format!("{}/{}", self.base, media_id);
        self.call_json("media info", self.http.get(url)).await
    }

    /// `GET {url}` with the token: a received file's bytes.
    pub async fn download(&self, url: &str) -> Result<Bytes, ApiError> {
        self.call("download media", self.http.get(url)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: Option<i64>, retry_after: Option<u64>) -> ApiError {
        ApiError::Refused {
            what: "send message",
            status,
            code,
            message: "x".into(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn graph_codes_map_to_what_the_host_does_next() {
        for code in [4, 80007, 130429, 131056] {
            assert!(matches!(
                refused(400, Some(code), None).into_channel_error(),
                ChannelError::RateLimited { retry_after, .. } if retry_after == DEFAULT_RATE_LIMIT_WAIT
            ));
        }
        assert!(matches!(
            refused(429, None, Some(7)).into_channel_error(),
            ChannelError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(7)
        ));
        assert!(matches!(
            refused(401, Some(190), None).into_channel_error(),
            ChannelError::Unauthorized { .. }
        ));
        assert!(matches!(
            refused(400, Some(190), None).into_channel_error(),
            ChannelError::Unauthorized { .. }
        ));
        for code in [100, 131026] {
            assert!(matches!(
                refused(400, Some(code), None).into_channel_error(),
                ChannelError::Rejected { .. }
            ));
        }
        assert!(matches!(
            refused(400, Some(131047), None).into_channel_error(),
            ChannelError::Rejected { detail, .. } if detail.contains("template")
        ));
        assert!(matches!(
            refused(502, None, None).into_channel_error(),
            ChannelError::Failed(_)
        ));
    }
}

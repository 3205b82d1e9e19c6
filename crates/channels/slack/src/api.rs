//! The Slack Web API client (<https://api.slack.com/methods>).
//!
//! Slack answers most failures with HTTP 200 and `{"ok":false,"error":"…"}`; rate limits are
//! HTTP 429 with a `Retry-After` header in seconds
//! (<https://api.slack.com/apis/rate-limits>). Every call goes through `Api::finish`, which
//! turns both into an [`ApiError`].

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use nanoclaw_channel::ChannelError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PLATFORM;

/// The `event_type` of the message metadata that marks a message part we sent.
pub const PART_EVENT_TYPE: &str = "nanoclaw_part";
/// How many recent messages an in-doubt part is looked for among.
const RECONCILE_WINDOW: &str = "100";
/// Used when a 429 comes without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Slack error codes that mean the token is wrong or gone.
const AUTH_ERRORS: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "not_allowed_token_type",
];
/// Slack error codes that no retry can fix.
const PERMANENT_ERRORS: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "msg_too_long",
    "no_text",
    "too_many_attachments",
    "restricted_action",
    "cannot_reply_to_message",
    "invalid_arguments",
    "invalid_metadata_format",
    "invalid_metadata_schema",
    "thread_not_found",
];

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method}: rate limited, retry after {retry_after:?}")]
    RateLimited {
        method: String,
        retry_after: Duration,
    },
    #[error("{method}: slack error {error:?}")]
    Slack { method: String, error: String },
    #[error("{method}: HTTP {status}")]
    Http { method: String, status: u16 },
    #[error("{method}: {source}")]
    Transport {
        method: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method}: unexpected response: {detail}")]
    Malformed { method: String, detail: String },
}

impl ApiError {
    pub fn is_unauthorized(&self) -> bool {
        match self {
            ApiError::Slack { error, .. } => AUTH_ERRORS.contains(&error.as_str()),
            ApiError::Http { status, .. } => *status == 401 || *status == 403,
            _ => false,
        }
    }
}

impl From<ApiError> for ChannelError {
    fn from(e: ApiError) -> ChannelError {
        let platform = PLATFORM.to_string();
        if e.is_unauthorized() {
            return ChannelError::Unauthorized {
                platform,
                detail: e.to_string(),
            };
        }
        match e {
            ApiError::RateLimited { retry_after, .. } => ChannelError::RateLimited {
                platform,
                retry_after,
            },
            ApiError::Slack { ref error, .. } if PERMANENT_ERRORS.contains(&error.as_str()) => {
                ChannelError::Rejected {
                    platform,
                    detail: e.to_string(),
                }
            }
            ApiError::Http { status: 400, .. } => ChannelError::Rejected {
                platform,
                detail: e.to_string(),
            },
            other => ChannelError::Failed(other.to_string()),
        }
    }
}

/// Who the bot is (`auth.test`).
#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    /// The bot user's id (`U…`): what `<@U…>` mentions name.
    pub user_id: String,
    /// The bot's id (`B…`): what its own messages carry as `bot_id`.
    #[serde(default)]
    pub bot_id: Option<String>,
    /// The bot user's name.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub team: String,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    bot_token: SecretString,
    app_token: SecretString,
}

impl Api {
    pub fn new(
        base: &str,
        bot_token: SecretString,
        app_token: SecretString,
    ) -> Result<Api, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ChannelError::Setup(format!("slack HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            bot_token,
            app_token,
        })
    }

    fn url(&self, method: &str) -> String {
        format!("{}/{method}", self.base)
    }

    /// Reads a Web API answer: 429 → rate limited, `ok:false` → the Slack error.
    async fn finish(method: &str, resp: reqwest::Response) -> Result<Value, ApiError> {
        let status = resp.status();
        if status.as_u16() == 429 {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
            return Err(ApiError::RateLimited {
                method: method.to_string(),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(ApiError::Http {
                method: method.to_string(),
                status: status.as_u16(),
            });
        }
        let body: Value = resp.json().await.map_err(|source| ApiError::Transport {
            method: method.to_string(),
            source,
        })?;
        if body.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(body);
        }
        let error = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error")
            .to_string();
        if error == "ratelimited" || error == "rate_limited" {
            return Err(ApiError::RateLimited {
                method: method.to_string(),
                retry_after: DEFAULT_RETRY_AFTER,
            });
        }
        Err(ApiError::Slack {
            method: method.to_string(),
            error,
        })
    }

    fn transport(method: &str) -> impl FnOnce(reqwest::Error) -> ApiError + '_ {
        move |source| ApiError::Transport {
            method: method.to_string(),
            source,
        }
    }

    /// A write method with a JSON body (chat.postMessage takes nested `metadata` this way).
    async fn call_json(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        let resp = self
            .http
            .post(self.url(method))
            .bearer_auth(self.bot_token.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(Self::transport(method))?;
        Self::finish(method, resp).await
    }

    /// A method with form parameters (the read methods take only this encoding).
    async fn call_form(
        &self,
        method: &str,
        token: &SecretString,
        params: &[(&str, &str)],
    ) -> Result<Value, ApiError> {
        let resp = self
            .http
            .post(self.url(method))
            .bearer_auth(token.expose_secret())
            .form(params)
            .send()
            .await
            .map_err(Self::transport(method))?;
        Self::finish(method, resp).await
    }

    fn field<T: serde::de::DeserializeOwned>(method: &str, body: Value) -> Result<T, ApiError> {
        serde_json::from_value(body).map_err(|e| ApiError::Malformed {
            method: method.to_string(),
            detail: e.to_string(),
        })
    }

    /// `auth.test` with the bot token: who the bot is.
    pub async fn auth_test(&self) -> Result<Identity, ApiError> {
        let body = self.call_form("auth.test", &self.bot_token, &[]).await?;
        Self::field("auth.test", body)
    }

    /// `apps.connections.open` with the app-level token: a single-use Socket Mode URL.
    pub async fn open_connection(&self) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Open {
            url: String,
        }
        let body = self
            .call_form("apps.connections.open", &self.app_token, &[])
            .await?;
        Ok(Self::field::<Open>("apps.connections.open", body)?.url)
    }

    /// `chat.postMessage`; the metadata marks the part so a crash can be reconciled.
    /// Returns the message's `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        thread_ts: Option<&str>,
        key: &str,
        part: usize,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Posted {
            ts: String,
        }
        let mut body = json!({
            "channel": channel,
            "text": text,
            "mrkdwn": true,
            "metadata": {
                "event_type": PART_EVENT_TYPE,
                "event_payload": { "key": key, "part": part },
            },
        });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        let resp = self.call_json("chat.postMessage", &body).await?;
        Ok(Self::field::<Posted>("chat.postMessage", resp)?.ts)
    }

    /// Looks for part `part` of message `key` among the recent messages of the channel (or
    /// of the thread): its `ts` when it was posted.
    pub async fn find_part(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        key: &str,
        part: usize,
    ) -> Result<Option<String>, ApiError> {
        #[derive(Deserialize)]
        struct History {
            #[serde(default)]
            messages: Vec<Value>,
        }
        let (method, body) = match thread_ts {
            Some(ts) => {
                let params = [
                    ("channel", channel),
                    ("ts", ts),
                    ("include_all_metadata", "true"),
                    ("limit", RECONCILE_WINDOW),
                ];
                let body = self
                    .call_form("conversations.replies", &self.bot_token, &params)
                    .await?;
                ("conversations.replies", body)
            }
            None => {
                let params = [
                    ("channel", channel),
                    ("include_all_metadata", "true"),
                    ("limit", RECONCILE_WINDOW),
                ];
                let body = self
                    .call_form("conversations.history", &self.bot_token, &params)
                    .await?;
                ("conversations.history", body)
            }
        };
        let history: History = Self::field(method, body)?;
        Ok(history.messages.iter().find_map(|m| {
            let meta = m.get("metadata")?;
            let payload = meta.get("event_payload")?;
            let matches = meta.get("event_type")?.as_str()? == PART_EVENT_TYPE
                && payload.get("key")?.as_str()? == key
                && payload.get("part")?.as_u64()? == part as u64;
            matches
                .then(|| m.get("ts")?.as_str().map(str::to_string))
                .flatten()
        }))
    }

    /// Uploads a file to a channel (or thread) the way Slack asks since files.upload was
    /// retired: get an upload URL, POST the bytes there, complete the upload. Returns the
    /// file id.
    pub async fn upload_file(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        file_name: &str,
        data: Vec<u8>,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct UploadUrl {
            upload_url: String,
            file_id: String,
        }
        let length = data.len().to_string();
        let params = [("filename", file_name), ("length", length.as_str())];
        let body = self
            .call_form("files.getUploadURLExternal", &self.bot_token, &params)
            .await?;
        let target: UploadUrl = Self::field("files.getUploadURLExternal", body)?;
        // The upload URL carries its own authorization: the token is not sent there.
        let resp = self
            .http
            .post(&target.upload_url)
            .body(data)
            .send()
            .await
            .map_err(Self::transport("upload_url"))?;
        if !resp.status().is_success() {
            return Err(ApiError::Http {
                method: "upload_url".into(),
                status: resp.status().as_u16(),
            });
        }
        let files = json!([{ "id": target.file_id, "title": file_name }]).to_string();
        let mut params = vec![("files", files.as_str()), ("channel_id", channel)];
        if let Some(ts) = thread_ts {
            params.push(("thread_ts", ts));
        }
        self.call_form("files.completeUploadExternal", &self.bot_token, &params)
            .await?;
        Ok(target.file_id)
    }

    /// Downloads a file shared in Slack (`url_private_download` needs the bot token).
    /// `None` when it is bigger than `cap` bytes.
    pub async fn download(&self, url: &str, cap: u64) -> Result<Option<Bytes>, ApiError> {
        let method = "url_private_download";
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.bot_token.expose_secret())
            .send()
            .await
            .map_err(Self::transport(method))?;
        if !resp.status().is_success() {
            return Err(ApiError::Http {
                method: method.into(),
                status: resp.status().as_u16(),
            });
        }
        if resp.content_length().is_some_and(|len| len > cap) {
            return Ok(None);
        }
        let mut data = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Self::transport(method))?;
            if (data.len() + chunk.len()) as u64 > cap {
                return Ok(None);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(data)))
    }
}

//! The REST client (<https://discord.com/developers/docs/reference>): `Authorization: Bot
//! <token>`, a `DiscordBot (url, version)` user agent, rate-limit buckets honoured before
//! each request and HTTP statuses mapped to [`ChannelError`]s.

use std::time::Duration;

use bytes::Bytes;
use nanoclaw_channel::{ChannelError, OutgoingFile};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::PLATFORM;
use crate::model::{ApiErrorBody, Channel, Created, GatewayBot, RateLimitBody, User};
use crate::ratelimit::{RateLimits, secs};

/// A bucket that refills within this long is waited for; a longer wait goes back to the
/// host as `RateLimited` so the chat's other work is not held up.
const MAX_BUCKET_WAIT: Duration = Duration::from_secs(5);
const USER_AGENT: &str = concat!(
    "DiscordBot (https://example.invalid/nanoclaw, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// What a request carries.
pub enum Body {
    None,
    Json(Value),
    /// `payload_json` plus `files[n]` parts.
    Multipart(Value, Vec<OutgoingFile>),
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    limits: RateLimits,
}

impl Api {
    pub fn new(base: &str, token: SecretString) -> Result<Api, ChannelError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ChannelError::Setup(format!("discord: building the HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            limits: RateLimits::default(),
        })
    }

    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// `GET /users/@me`: the bot's own user.
    pub async fn me(&self) -> Result<User, ChannelError> {
        self.json(Method::GET, "GET /users/@me", "", "/users/@me", Body::None)
            .await
    }

    /// `GET /gateway/bot`: where to open the websocket.
    pub async fn gateway_url(&self) -> Result<String, ChannelError> {
        let info: GatewayBot = self
            .json(
                Method::GET,
                "GET /gateway/bot",
                "",
                "/gateway/bot",
                Body::None,
            )
            .await?;
        Ok(info.url)
    }

    /// `GET /channels/{id}`.
    pub async fn channel(&self, id: &str) -> Result<Channel, ChannelError> {
        let path = format!("/channels/{id}");
        self.json(Method::GET, "GET /channels/{id}", id, &path, Body::None)
            .await
    }

    /// `POST /channels/{id}/messages`; returns the new message's id.
    pub async fn create_message(
        &self,
        channel: &str,
        payload: Value,
        files: Vec<OutgoingFile>,
    ) -> Result<String, ChannelError> {
        let path = format!("/channels/{channel}/messages");
        let body = if files.is_empty() {
            Body::Json(payload)
        } else {
            Body::Multipart(payload, files)
        };
        let created: Created = self
            .json(
                Method::POST,
                "POST /channels/{id}/messages",
                channel,
                &path,
                body,
            )
            .await?;
        Ok(created.id)
    }

    /// `POST /channels/{id}/typing` (answers 204).
    pub async fn typing(&self, channel: &str) -> Result<(), ChannelError> {
        let path = format!("/channels/{channel}/typing");
        self.call(
            Method::POST,
            "POST /channels/{id}/typing",
            channel,
            &path,
            Body::None,
        )
        .await
        .map(drop)
    }

    /// Downloads an attachment from its CDN `url` (signed; no token is sent there). `None`
    /// when it turns out larger than `cap` bytes.
    pub async fn download(&self, url: &str, cap: u64) -> Result<Option<Bytes>, ChannelError> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                ChannelError::Failed(format!("discord: downloading an attachment: {e}"))
            })?;
        let mut data = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ChannelError::Failed(format!("discord: downloading an attachment: {e}")))?
        {
            if (data.len() + chunk.len()) as u64 > cap {
                return Ok(None);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(data)))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        major: &str,
        path: &str,
        body: Body,
    ) -> Result<T, ChannelError> {
        let response = self.call(method, route, major, path, body).await?;
        response.json::<T>().await.map_err(|e| {
            ChannelError::Failed(format!("discord: unexpected answer to {route}: {e}"))
        })
    }

    /// Sends one request: waits out an exhausted bucket (briefly), records the answer's
    /// rate-limit headers and maps failures.
    async fn call(
        &self,
        method: Method,
        route: &str,
        major: &str,
        path: &str,
        body: Body,
    ) -> Result<reqwest::Response, ChannelError> {
        if let Some(wait) = self.limits.wait_for(route, major) {
            if wait > MAX_BUCKET_WAIT {
                return Err(ChannelError::RateLimited {
                    platform: PLATFORM.into(),
                    retry_after: wait,
                });
            }
            tracing::debug!(
                route,
                ?wait,
                "discord: bucket exhausted; waiting for it to refill"
            );
            tokio::time::sleep(wait).await;
        }
        let auth = format!("Bot {}", self.token.expose_secret());
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, auth);
        let request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Multipart(payload, files) => request.multipart(multipart(payload, files).await?),
        };
        let response = request
            .send()
            .await
            .map_err(|e| ChannelError::Failed(format!("discord: {route}: {e}")))?;
        self.limits.update(route, major, response.headers());
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(self.error(route, status, response).await)
    }

    async fn error(
        &self,
        route: &str,
        status: StatusCode,
        response: reqwest::Response,
    ) -> ChannelError {
        let retry_header = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        let text = response.text().await.unwrap_or_default();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let body: Option<RateLimitBody> = serde_json::from_str(&text).ok();
            let retry_after = secs(
                body.as_ref()
                    .map(|b| b.retry_after)
                    .or(retry_header)
                    .unwrap_or(1.0),
            );
            if body.as_ref().is_some_and(|b| b.global) {
                self.limits.global_block(retry_after);
            }
            tracing::warn!(route, ?retry_after, "discord: rate limited (429)");
            return ChannelError::RateLimited {
                platform: PLATFORM.into(),
                retry_after,
            };
        }
        let body: ApiErrorBody = serde_json::from_str(&text).unwrap_or_default();
        let detail = format!(
            "{route}: HTTP {status}: {} (code {})",
            body.message, body.code
        );
        match status {
            StatusCode::UNAUTHORIZED => ChannelError::Unauthorized {
                platform: PLATFORM.into(),
                detail,
            },
            // 403 is a missing permission (Missing Access 50001), not a bad token; 404 an
            // unknown channel (10003); 400/413 a request Discord will never take.
            StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE => ChannelError::Rejected {
                platform: PLATFORM.into(),
                detail,
            },
            _ => ChannelError::Failed(format!("discord: {detail}")),
        }
    }
}

/// `payload_json` plus `files[n]`, as the Uploading Files section describes: each file
/// also listed in the payload's `attachments` with its index as `id`.
async fn multipart(
    mut payload: Value,
    files: Vec<OutgoingFile>,
) -> Result<reqwest::multipart::Form, ChannelError> {
    let mut form = reqwest::multipart::Form::new();
    let mut listed = Vec::new();
    for (i, file) in files.into_iter().enumerate() {
        let data = tokio::fs::read(&file.path).await.map_err(|e| {
            ChannelError::Failed(format!("discord: reading {}: {e}", file.path.display()))
        })?;
        let mut part = reqwest::multipart::Part::bytes(data).file_name(file.file_name.clone());
        if let Some(mime) = &file.mime_type {
            part = part
                .mime_str(mime)
                .map_err(|e| ChannelError::Failed(format!("discord: bad mime type {mime}: {e}")))?;
        }
        form = form.part(format!("files[{i}]"), part);
        listed.push(serde_json::json!({ "id": i, "filename": file.file_name }));
    }
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("attachments".into(), Value::Array(listed));
    }
    Ok(form.text("payload_json", payload.to_string()))
}

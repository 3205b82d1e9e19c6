//! A thin client for the Matrix client-server API (<https://spec.matrix.org/v1.12/client-server-api/>):
//! the calls the channel makes, with the spec's error shape (`errcode`, `error`,
//! `retry_after_ms`) turned into what they mean for delivery.

use std::time::Duration;

use nanoclaw_channel::ChannelError;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::NAME;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer (connection refused, timeout, a dropped connection).
    #[error("homeserver unreachable: {0}")]
    Network(String),
    /// The homeserver answered with an error.
    #[error("{status} {errcode}: {message}")]
    Matrix {
        status: u16,
        errcode: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("unreadable answer: {0}")]
    Decode(String),
}

impl ApiError {
    pub fn errcode(&self) -> Option<&str> {
        match self {
            ApiError::Matrix { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// What the failure means for a message being delivered.
    pub fn into_channel_error(self) -> ChannelError {
        match self {
            ApiError::Matrix {
                status: 429,
                retry_after,
                ..
            } => ChannelError::RateLimited {
                platform: NAME.into(),
                retry_after: retry_after.unwrap_or(Duration::from_secs(5)),
            },
            ApiError::Matrix {
                status: 401,
                message,
                ..
            } => ChannelError::Unauthorized {
                platform: NAME.into(),
                detail: message,
            },
            ApiError::Matrix {
                status,
                errcode,
                message,
                ..
            } if (400..500).contains(&status) => ChannelError::Rejected {
                platform: NAME.into(),
                detail: format!("{errcode}: {message}"),
            },
            other => ChannelError::Failed(other.to_string()),
        }
    }
}

/// The client: a homeserver base URL and an access token.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errcode: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// Percent-encodes one path segment (room ids hold `!` and `:`, event ids `$`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    pub fn new(base: &str, token: SecretString) -> Result<Api, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| ChannelError::Setup(format!("HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let response = request
            .bearer_auth(self.token.expose_secret())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        let status = response.status();
        let header_retry = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()));
        }
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or(ErrorBody {
            errcode: "M_UNKNOWN".into(),
            error: String::from_utf8_lossy(&body).chars().take(200).collect(),
            retry_after_ms: None,
        });
        Err(ApiError::Matrix {
            status: status.as_u16(),
            errcode: error.errcode,
            message: error.error,
            retry_after: error
                .retry_after_ms
                .map(Duration::from_millis)
                .or(header_retry),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /account/whoami`: the user id the token belongs to.
    pub async fn whoami(&self) -> Result<String, ApiError> {
        let v = self
            .call(
                self.http.get(self.url("/_matrix/client/v3/account/whoami")),
                Duration::from_secs(30),
            )
            .await?;
        v["user_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Decode("whoami without user_id".into()))
    }

    /// `GET /sync`: waits up to `timeout` for news after `since`.
    pub async fn sync(
        &self,
        since: Option<&str>,
        timeout: Duration,
        filter: &str,
    ) -> Result<Value, ApiError> {
        let mut query: Vec<(&str, String)> = vec![
            ("timeout", timeout.as_millis().to_string()),
            ("filter", filter.to_owned()),
        ];
        if let Some(since) = since {
            query.push(("since", since.to_owned()));
        }
        self.call(
            self.http
                .get(self.url("/_matrix/client/v3/sync"))
                .query(&query),
            timeout + Duration::from_secs(30),
        )
        .await
    }

    /// `GET /rooms/{room}/messages` backwards from `from` (a `prev_batch` token) down to
    /// `to` (the previous sync's token), at most `limit` events: the events, newest first,
    /// and the token to read on from (`None` at the end).
    pub async fn messages_before(
        &self,
        room: &str,
        from: &str,
        to: &str,
        limit: u32,
    ) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages", segment(room));
        let query = [
            ("dir", "b".to_owned()),
            ("from", from.to_owned()),
            ("to", to.to_owned()),
            ("limit", limit.to_string()),
        ];
        let v = self
            .call(
                self.http.get(self.url(&path)).query(&query),
                Duration::from_secs(30),
            )
            .await?;
        let events = v
            .get("chunk")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let end = v.get("end").and_then(Value::as_str).map(str::to_owned);
        Ok((events, end))
    }

    /// `GET /account/whoami`: the user id and the device id the token belongs to.
    pub async fn whoami_device(&self) -> Result<(String, String), ApiError> {
        let v = self
            .call(
                self.http.get(self.url("/_matrix/client/v3/account/whoami")),
                Duration::from_secs(30),
            )
            .await?;
        match (v["user_id"].as_str(), v["device_id"].as_str()) {
            (Some(user), Some(device)) => Ok((user.to_owned(), device.to_owned())),
            _ => Err(ApiError::Decode(
                "whoami without user_id or device_id (a token without a device?)".into(),
            )),
        }
    }

    /// `POST /keys/upload`: device keys, one-time keys, fallback keys; the counts the
    /// homeserver now holds.
    pub async fn keys_upload(&self, body: &Value) -> Result<Value, ApiError> {
        self.call(
            self.http
                .post(self.url("/_matrix/client/v3/keys/upload"))
                .json(body),
            Duration::from_secs(60),
        )
        .await
    }

    /// `POST /keys/query`: the device keys of `users` (all their devices).
    pub async fn keys_query(&self, users: &[String]) -> Result<Value, ApiError> {
        let devices: serde_json::Map<String, Value> = users
            .iter()
            .map(|u| (u.clone(), Value::Array(Vec::new())))
            .collect();
        self.call(
            self.http
                .post(self.url("/_matrix/client/v3/keys/query"))
                .json(&serde_json::json!({"device_keys": devices, "timeout": 10000})),
            Duration::from_secs(60),
        )
        .await
    }

    /// `POST /keys/claim`: one `signed_curve25519` one-time key per device.
    pub async fn keys_claim(&self, devices: &[(String, String)]) -> Result<Value, ApiError> {
        let mut wanted = serde_json::Map::new();
        for (user, device) in devices {
            let entry = wanted
                .entry(user.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Value::Object(map) = entry {
                map.insert(device.clone(), Value::String("signed_curve25519".into()));
            }
        }
        self.call(
            self.http
                .post(self.url("/_matrix/client/v3/keys/claim"))
                .json(&serde_json::json!({"one_time_keys": wanted, "timeout": 10000})),
            Duration::from_secs(60),
        )
        .await
    }

    /// `PUT /sendToDevice/{eventType}/{txnId}`: `messages` is `{user: {device: content}}`.
    pub async fn send_to_device(
        &self,
        kind: &str,
        txn_id: &str,
        messages: &Value,
    ) -> Result<(), ApiError> {
        self.call(
            self.http
                .put(self.url(&format!(
                    "/_matrix/client/v3/sendToDevice/{}/{}",
                    segment(kind),
                    segment(txn_id)
                )))
                .json(&serde_json::json!({"messages": messages})),
            Duration::from_secs(60),
        )
        .await
        .map(|_| ())
    }

    /// `GET /rooms/{roomId}/state/m.room.encryption/`: the room's encryption settings,
    /// `None` when the room is not encrypted.
    pub async fn room_encryption(&self, room: &str) -> Result<Option<Value>, ApiError> {
        match self
            .call(
                self.http.get(self.url(&format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.encryption/",
                    segment(room)
                ))),
                Duration::from_secs(30),
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(ApiError::Matrix { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /rooms/{roomId}/joined_members`: the user ids of everyone joined.
    pub async fn joined_members(&self, room: &str) -> Result<Vec<String>, ApiError> {
        let v = self
            .call(
                self.http.get(self.url(&format!(
                    "/_matrix/client/v3/rooms/{}/joined_members",
                    segment(room)
                ))),
                Duration::from_secs(30),
            )
            .await?;
        Ok(v["joined"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`, any event type.
    pub async fn send_event(
        &self,
        room: &str,
        kind: &str,
        txn_id: &str,
        content: &Value,
    ) -> Result<String, ApiError> {
        let v = self
            .call(
                self.http
                    .put(self.url(&format!(
                        "/_matrix/client/v3/rooms/{}/send/{}/{}",
                        segment(room),
                        segment(kind),
                        segment(txn_id)
                    )))
                    .json(content),
                Duration::from_secs(60),
            )
            .await?;
        v["event_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Decode("send without event_id".into()))
    }

    /// `POST /rooms/{roomId}/join` (accepting an invite).
    pub async fn join(&self, room: &str) -> Result<(), ApiError> {
        self.call(
            self.http
                .post(self.url(&format!("/_matrix/client/v3/rooms/{}/join", segment(room))))
                .json(&serde_json::json!({})),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// How many have joined (`joined_members`, counted).
    pub async fn joined_member_count(&self, room: &str) -> Result<usize, ApiError> {
        Ok(self.joined_members(room).await?.len())
    }

    /// [`Api::send_event`] of an `m.room.message`: the homeserver answers a repeated
    /// transaction id with the event it made the first time, so a retry shows once.
    pub async fn send_message(
        &self,
        room: &str,
        txn_id: &str,
        content: &Value,
    ) -> Result<String, ApiError> {
        self.send_event(room, "m.room.message", txn_id, content)
            .await
    }

    /// `PUT /rooms/{roomId}/typing/{userId}`.
    pub async fn typing(&self, room: &str, user: &str, on: bool) -> Result<(), ApiError> {
        let body = if on {
            serde_json::json!({"typing": true, "timeout": 30000})
        } else {
            serde_json::json!({"typing": false})
        };
        self.call(
            self.http
                .put(self.url(&format!(
                    "/_matrix/client/v3/rooms/{}/typing/{}",
                    segment(room),
                    segment(user)
                )))
                .json(&body),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// `POST /_matrix/media/v3/upload`: the file's `mxc://` URI.
    pub async fn upload(
        &self,
        file_name: &str,
        mime: &str,
        data: Vec<u8>,
    ) -> Result<String, ApiError> {
        let v = self
            .call(
                self.http
                    .post(self.url("/_matrix/media/v3/upload"))
                    .query(&[("filename", file_name)])
                    .header(reqwest::header::CONTENT_TYPE, mime)
                    .body(data),
                Duration::from_secs(120),
            )
            .await?;
        v["content_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Decode("upload without content_uri".into()))
    }

    /// Downloads an `mxc://server/id` file (authenticated media, spec v1.11), up to `max`
    /// bytes; `None` when larger.
    pub async fn download(&self, mxc: &str, max: u64) -> Result<Option<Vec<u8>>, ApiError> {
        let Some((server, id)) = mxc.strip_prefix("mxc://").and_then(|r| r.split_once('/')) else {
            return Err(ApiError::Decode(format!("not an mxc URI: {mxc:?}")));
        };
        let response = self
            .http
            .get(self.url(&format!(
                "/_matrix/client/v1/media/download/{}/{}",
                segment(server),
                segment(id)
            )))
            .bearer_auth(self.token.expose_secret())
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(ApiError::Matrix {
                status: response.status().as_u16(),
                errcode: "M_UNKNOWN".into(),
                message: format!("downloading {mxc}"),
                retry_after: None,
            });
        }
        if response.content_length().is_some_and(|n| n > max) {
            return Ok(None);
        }
        let mut data = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?
        {
            if data.len() as u64 + chunk.len() as u64 > max {
                return Ok(None);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(segment("!abc:example.org"), "%21abc%3Aexample.org");
        assert_eq!(segment("$ev/../x"), "%24ev%2F..%2Fx");
    }

    #[test]
    fn errors_mean_what_the_spec_says() {
        let limited = ApiError::Matrix {
            status: 429,
            errcode: "M_LIMIT_EXCEEDED".into(),
            message: "Too Many Requests".into(),
            retry_after: Some(Duration::from_millis(1500)),
        };
        assert!(matches!(
            limited.into_channel_error(),
            ChannelError::RateLimited { retry_after, .. } if retry_after == Duration::from_millis(1500)
        ));
        let forbidden = ApiError::Matrix {
            status: 403,
            errcode: "M_FORBIDDEN".into(),
            message: "not in room".into(),
            retry_after: None,
        };
        assert!(matches!(
            forbidden.into_channel_error(),
            ChannelError::Rejected { .. }
        ));
        let token = ApiError::Matrix {
            status: 401,
            errcode: "M_UNKNOWN_TOKEN".into(),
            message: "Invalid access token".into(),
            retry_after: None,
        };
        assert!(matches!(
            token.into_channel_error(),
            ChannelError::Unauthorized { .. }
        ));
    }
}

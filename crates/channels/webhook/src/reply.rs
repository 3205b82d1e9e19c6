//! Replies to a hook's `reply_url`: one signed JSON POST per part, through the send ledger.
//!
//! The body is `{"hook", "text", "kind", "in_reply_to", "part", "parts", "files"}`
//! (`files`: `[{"name", "mime_type", "data_base64"}]`, on the last part), signed in the
//! generic scheme with the hook's secret (`X-Signature: t=…,v1=…`), with
//! `Idempotency-Key: <message key>:<part>` and the header `X-Nanoclaw-Reply: 1`. A 2xx is
//! success; 429 waits for `Retry-After` (seconds, default 60); 401/403 are refused
//! credentials; other 4xx refuse the message for good; 5xx, timeouts and broken
//! connections are tried again. A part in doubt after a crash is POSTed again with the same
//! `Idempotency-Key`: the receiver must drop a key it has seen (the documented contract).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use nanoclaw_channel::chunk::{Measure, split};
use nanoclaw_channel::{ChannelError, OutgoingMessage, SendLedger, now_ms, send_parts};
use secrecy::ExposeSecret;

use crate::{CHAT_PREFIX, Hook, sign};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A receiver's `Retry-After` is honoured up to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Posts replies.
pub struct Replier {
    hooks: Arc<BTreeMap<String, Hook>>,
    ledger: Arc<dyn SendLedger>,
    http: reqwest::Client,
    max_chars: usize,
    max_file_bytes: u64,
}

impl Replier {
    pub fn new(
        hooks: Arc<BTreeMap<String, Hook>>,
        ledger: Arc<dyn SendLedger>,
        max_chars: usize,
        max_file_bytes: u64,
    ) -> Result<Replier, ChannelError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A reply URL is the owner's choice; a redirect elsewhere is not.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ChannelError::Setup(format!("HTTP client: {e}")))?;
        Ok(Replier {
            hooks,
            ledger,
            http,
            max_chars: max_chars.max(100),
            max_file_bytes,
        })
    }

    pub async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let name = message
            .chat_id
            .strip_prefix(CHAT_PREFIX)
            .unwrap_or(&message.chat_id);
        let Some(hook) = self.hooks.get(name) else {
            return Err(rejected(format!("no hook {name:?} in the config")));
        };
        let Some(url) = hook.config.reply_url.as_deref() else {
            // The host sends such replies to the owner's main chat; one that still comes
            // here has nowhere to go.
            return Err(rejected(format!(
                "hook {name} has no reply_url; its replies go to the owner's main chat"
            )));
        };
        let Some(secret) = hook.secret.as_ref() else {
            return Err(ChannelError::Setup(format!("hook {name} has no secret")));
        };
        let files = self.read_files(message).await?;
        let parts = split(&message.text, self.max_chars, Measure::Chars);
        let count = parts.len();
        let key = message.idempotency_key.as_str();
        send_parts(&*self.ledger, key, count, |index, _attempt| {
            // Fresh or in doubt after a crash: the same key either way, so the receiver
            // shows it once.
            let part_files = if index + 1 == count {
                files.clone()
            } else {
                Vec::new()
            };
            let body = serde_json::json!({
                "hook": name,
                "text": parts[index],
                "kind": message.kind,
                "in_reply_to": message.reply_to,
                "part": index + 1,
                "parts": count,
                "files": part_files,
            });
            let part_key = format!("{key}:{index}");
            self.post(url, secret.expose_secret().as_bytes(), body, part_key)
        })
        .await
    }

    async fn read_files(
        &self,
        message: &OutgoingMessage,
    ) -> Result<Vec<serde_json::Value>, ChannelError> {
        let mut out = Vec::new();
        let mut total: u64 = 0;
        for file in &message.files {
            let data = tokio::fs::read(&file.path)
                .await
                .map_err(|e| ChannelError::Failed(format!("reading {}: {e}", file.file_name)))?;
            total += data.len() as u64;
            if total > self.max_file_bytes {
                return Err(rejected(format!(
                    "the reply's files exceed reply_max_file_bytes ({} bytes)",
                    self.max_file_bytes
                )));
            }
            out.push(serde_json::json!({
                "name": file.file_name,
                "mime_type": file.mime_type,
                "data_base64": base64::engine::general_purpose::STANDARD.encode(&data),
            }));
        }
        Ok(out)
    }

    async fn post(
        &self,
        url: &str,
        secret: &[u8],
        body: serde_json::Value,
        part_key: String,
    ) -> Result<Option<String>, ChannelError> {
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::Failed(format!("encoding the reply: {e}")))?;
        let signature = sign::sign_generic(secret, &bytes, now_ms() / 1000);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .header("idempotency-key", &part_key)
            .header("x-webhook-id", &part_key)
            .header(crate::server::REPLY_MARK, "1")
            .body(bytes)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    ChannelError::NotConnected(format!("reply_url: {e}"))
                } else {
                    ChannelError::Failed(format!("reply_url: {e}"))
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Some(part_key));
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let detail: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(match status.as_u16() {
            429 => ChannelError::RateLimited {
                platform: crate::NAME.to_owned(),
                retry_after: retry_after
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(MAX_RETRY_AFTER),
            },
            401 | 403 => ChannelError::Unauthorized {
                platform: crate::NAME.to_owned(),
                detail: format!("reply_url answered {status}: {detail}"),
            },
            400..=499 => rejected(format!("reply_url answered {status}: {detail}")),
            _ => ChannelError::Failed(format!("reply_url answered {status}: {detail}")),
        })
    }
}

fn rejected(detail: String) -> ChannelError {
    ChannelError::Rejected {
        platform: crate::NAME.to_owned(),
        detail,
    }
}

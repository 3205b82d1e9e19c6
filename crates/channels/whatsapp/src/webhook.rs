//! The webhook server Meta posts to
//! (<https://developers.facebook.com/docs/graph-api/webhooks/getting-started>,
//! <https://developers.facebook.com/docs/whatsapp/cloud-api/guides/set-up-webhooks>).
//!
//! - `GET` is the subscription handshake: `hub.mode=subscribe` with our `hub.verify_token`
//!   is answered with `hub.challenge`; anything else with 403.
//! - `POST` carries a delivery signed with the app secret: `X-Hub-Signature-256:
//!   sha256=<hex HMAC-SHA256(app_secret, raw body)>`, checked in constant time before the
//!   body is parsed (a bad or missing signature: 401). Bodies over 1 MiB: 413.
//! - The answer is 200 only once the host has settled every message of the delivery;
//!   otherwise 500, and Meta delivers it again (at least once; the host deduplicates by
//!   the message's `wamid`). A validly signed body that is not a delivery is logged and
//!   answered 200: sending it again would not fix it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{KeyInit, Mac};
use http_body_util::BodyExt;
use nanoclaw_channel::{
    ChannelEvent, HealthCell, HttpLimits, InboundEvent, InboundSink, RouteOutcome, serve_http,
    serve_with_rebind,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::Api;
use crate::inbound::{self, Message};

/// The largest delivery accepted (Meta's are a few KiB; media come by id, not inline).
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a delivery waits for the host to settle its messages before answering 500.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// What the webhook handlers share.
pub struct Webhook {
    pub api: Arc<Api>,
    /// Deliveries for other numbers of the same business account are not ours.
    pub phone_number_id: String,
    pub app_secret: SecretString,
    pub verify_token: SecretString,
    pub health: Arc<HealthCell>,
    pub sink: InboundSink,
    pub max_attachment_bytes: u64,
}

/// Serves `path` on `listen` until aborted; binds again with backoff when it cannot bind
/// or the server fails. `first` is a listener `start()` already bound.
pub async fn run(listen: String, path: String, hook: Arc<Webhook>, first: Option<TcpListener>) {
    let health = Arc::clone(&hook.health);
    serve_with_rebind(&listen, first, &health, "whatsapp webhook", |listener| {
        let app = Router::new()
            .route(&path, get(handshake).post(receive))
            .with_state(Arc::clone(&hook));
        serve_http(listener, app, HttpLimits::default())
    })
    .await;
}

async fn handshake(
    State(hook): State<Arc<Webhook>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query.get("hub.verify_token").map(String::as_str);
    let challenge = query.get("hub.challenge");
    let expected = hook.verify_token.expose_secret().as_bytes();
    let token_ok = token.is_some_and(|t| constant_time_eq(t.as_bytes(), expected));
    match (mode, challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            tracing::info!("whatsapp: webhook subscription verified");
            (StatusCode::OK, challenge.clone()).into_response()
        }
        _ => {
            tracing::warn!("whatsapp: a webhook verification with a wrong token or mode; refused");
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// Reads the body up to [`MAX_BODY`]: `Err(413)` when larger, `Err(400)` when cut off.
async fn read_body(hook: &Webhook, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        tracing::warn!(?declared, "whatsapp: webhook body over 1 MiB; refused");
        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    let mut body = body;
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                    if data.len() > MAX_BODY {
                        tracing::warn!("whatsapp: webhook body over 1 MiB; refused");
                        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
                    }
                }
            }
            Err(e) => {
                let error = format!("a webhook delivery was cut off: {e}");
                tracing::warn!(%error, "whatsapp: Meta will deliver it again");
                hook.health.error(error);
                return Err(StatusCode::BAD_REQUEST.into_response());
            }
        }
    }
    Ok(data)
}

async fn receive(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Body) -> Response {
    let raw = match read_body(&hook, &headers, body).await {
        Ok(raw) => raw,
        Err(response) => return response,
    };
    let header = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_valid(hook.app_secret.expose_secret().as_bytes(), &raw, header) {
        let error = "a webhook delivery with a missing or wrong X-Hub-Signature-256; refused";
        tracing::warn!(signed = header.is_some(), "whatsapp: {error}");
        hook.health.error(error);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    hook.health.event();
    let delivery: Value = match serde_json::from_slice(&raw) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(error = %e, "whatsapp: a signed delivery that is not JSON; skipped");
            hook.health
                .error(format!("malformed webhook delivery: {e}"));
            return StatusCode::OK.into_response();
        }
    };
    match forward(&hook, &delivery).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "whatsapp: answering 500 so Meta delivers it again");
            (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response()
        }
    }
}

/// Sends every message of `delivery` to the host and waits until each is settled.
async fn forward(hook: &Webhook, delivery: &Value) -> Result<(), String> {
    let mut acks = Vec::new();
    for value in inbound::message_changes(delivery) {
        if value.metadata.phone_number_id != hook.phone_number_id {
            tracing::debug!(number = %value.metadata.phone_number_id, "whatsapp: a delivery for another number; skipped");
            continue;
        }
        for raw in &value.messages {
            let message: Message = match serde_json::from_value(raw.clone()) {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "whatsapp: a malformed message; skipped");
                    hook.health.error(format!("malformed message: {e}"));
                    continue;
                }
            };
            let Some(mut event) = inbound::to_event(&value, &message) else {
                continue;
            };
            inbound::attach(&hook.api, &message, &mut event, hook.max_attachment_bytes)
                .await
                .map_err(|e| format!("media of {}: {e}", message.id))?;
            acks.push(send(hook, event).await?);
        }
    }
    let settled = tokio::time::timeout(ACK_WAIT, async {
        for (id, ack) in acks {
            match ack.await {
                Ok(outcome) if outcome.is_settled() => {}
                Ok(outcome) => return Err(format!("{id}: the host did not store it: {outcome:?}")),
                Err(_) => return Err(format!("{id}: the host dropped it")),
            }
        }
        Ok(())
    })
    .await;
    settled.unwrap_or_else(|_| Err("the host did not settle the messages in time".to_string()))
}

async fn send(
    hook: &Webhook,
    mut event: InboundEvent,
) -> Result<(String, oneshot::Receiver<RouteOutcome>), String> {
    let (tx, rx) = oneshot::channel();
    event.ack = Some(tx);
    let id = event.platform_msg_id.clone();
    hook.sink
        .send(ChannelEvent::Inbound(event))
        .await
        .map_err(|_| "the host is not receiving".to_string())?;
    Ok((id, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_app_secrets_hmac_of_the_exact_body_is_accepted() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid(b"s3cret", body, Some(&good)));
        assert!(!signature_valid(b"other", body, Some(&good)));
        assert!(!signature_valid(b"s3cret", b"{}", Some(&good)));
        assert!(!signature_valid(b"s3cret", body, None));
        assert!(!signature_valid(
            b"s3cret",
            body,
            Some(&good.replace("sha256=", "sha1="))
        ));
        assert!(!signature_valid(b"s3cret", body, Some("sha256=zz")));
    }
}

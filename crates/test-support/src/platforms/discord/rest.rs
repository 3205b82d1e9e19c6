//! The fake's REST routes (<https://discord.com/developers/docs/reference>,
//! <https://discord.com/developers/docs/resources/message#create-message>,
//! <https://discord.com/developers/docs/topics/rate-limits>).

// Helpers return the finished error response as their `Err`: its size does not matter in
// a test server.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Bucket, Shared, State, TOKEN};
use crate::platforms::SentMessage;

type S = AxumState<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v10/gateway/bot", get(gateway_bot))
        .route("/api/v10/users/@me", get(me))
        .route("/api/v10/channels/{id}", get(channel))
        .route("/api/v10/channels/{id}/messages", post(create_message))
        .route("/api/v10/channels/{id}/typing", post(typing))
        .route("/cdn/attachments/{channel}/{id}/{name}", get(attachment))
        .with_state(shared)
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, Json(json!({ "message": message, "code": code }))).into_response()
}

/// 401 unless `Authorization: Bot <token>` with a live token.
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let good = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {TOKEN}"));
    (!good || !shared.lock().token_valid)
        .then(|| error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized"))
}

/// The rate-limit headers Discord sends with every answer.
fn with_limits(mut response: Response, bucket: &str, limit: u64, state: Bucket) -> Response {
    let after = state
        .reset_at
        .saturating_duration_since(Instant::now())
        .as_secs_f64();
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        + after;
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-ratelimit-limit", limit.to_string());
    put("x-ratelimit-remaining", state.remaining.to_string());
    put("x-ratelimit-reset", format!("{reset:.3}"));
    put("x-ratelimit-reset-after", format!("{after:.3}"));
    put("x-ratelimit-bucket", bucket.to_string());
    response
}

/// A roomy bucket for the routes the tests do not limit.
fn relaxed(response: Response, bucket: &str) -> Response {
    let state = Bucket {
        remaining: 49,
        reset_at: Instant::now() + Duration::from_secs(1),
    };
    with_limits(response, bucket, 50, state)
}

async fn gateway_bot(AxumState(shared): S, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    let url = shared.lock().ws_base.clone();
    relaxed(
        Json(json!({
            "url": url,
            "shards": 1,
            "session_start_limit": { "total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1 },
        }))
        .into_response(),
        "fake-gateway",
    )
}

async fn me(AxumState(shared): S, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    relaxed(Json(State::bot_user()).into_response(), "fake-users-me")
}

async fn channel(AxumState(shared): S, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    let found = shared
        .lock()
        .channels
        .get(&id)
        .map(super::FakeChannel::json);
    match found {
        Some(c) => relaxed(Json(c).into_response(), "fake-channels"),
        None => error(StatusCode::NOT_FOUND, 10003, "Unknown Channel"),
    }
}

async fn typing(AxumState(shared): S, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    let mut state = shared.lock();
    if !state.channels.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
    }
    state.typing.push(id);
    relaxed(StatusCode::NO_CONTENT.into_response(), "fake-typing")
}

async fn attachment(
    AxumState(shared): S,
    Path((channel, id, name)): Path<(String, String, String)>,
) -> Response {
    match shared.lock().files.get(&format!("{channel}/{id}/{name}")) {
        Some(data) => data.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// What a create-message request carried.
struct Incoming {
    payload: Value,
    files: Vec<(String, Vec<u8>)>,
}

async fn read_body(request: Request) -> Result<Incoming, Response> {
    let bad = |what: String| {
        error(
            StatusCode::BAD_REQUEST,
            50109,
            &format!("The request body contains invalid JSON. ({what})"),
        )
    };
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|e| bad(e.to_string()))?;
        let payload = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        return Ok(Incoming {
            payload,
            files: Vec::new(),
        });
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let mut payload = json!({});
    let mut files = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| bad(e.to_string()))? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(|e| bad(e.to_string()))?;
        if name == "payload_json" {
            payload = serde_json::from_slice(&data).map_err(|e| bad(e.to_string()))?;
        } else if name.starts_with("files[") {
            files.push((file_name.unwrap_or(name), data.to_vec()));
        }
    }
    Ok(Incoming { payload, files })
}

/// A 429 from the test's forced limit or an exhausted bucket; else the bucket after
/// this request.
fn admit(state: &mut State, channel: &str) -> Result<Bucket, Response> {
    let now = Instant::now();
    if let Some(refused) = state.last_refused.take() {
        state.rl_log.push((refused, now));
    }
    if state.forced_429 > 0 {
        state.forced_429 -= 1;
        state.responses_429 += 1;
        state.last_refused = Some(now);
        let after = state.forced_retry_after.as_secs_f64();
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "message": "You are being rate limited.", "retry_after": after, "global": false })),
        )
            .into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("{}", after.ceil() as u64)) {
            h.insert(header::RETRY_AFTER, v);
        }
        h.insert("x-ratelimit-scope", HeaderValue::from_static("user"));
        return Err(r);
    }
    let limit = state.bucket_limit;
    let window = state.bucket_window;
    let bucket = state.buckets.entry(channel.to_string()).or_insert(Bucket {
        remaining: limit,
        reset_at: now + window,
    });
    if now >= bucket.reset_at {
        *bucket = Bucket {
            remaining: limit,
            reset_at: now + window,
        };
    }
    if bucket.remaining == 0 {
        let snapshot = *bucket;
        state.responses_429 += 1;
        let after = snapshot
            .reset_at
            .saturating_duration_since(now)
            .as_secs_f64();
        let r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "message": "You are being rate limited.", "retry_after": after, "global": false })),
        )
            .into_response();
        return Err(with_limits(r, "fake-messages", limit, snapshot));
    }
    bucket.remaining -= 1;
    Ok(*bucket)
}

async fn create_message(
    AxumState(shared): S,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    if let Some(r) = unauthorized(&shared, request.headers()) {
        return r;
    }
    let incoming = match read_body(request).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let (bucket, limit, message) = {
        let mut state = shared.lock();
        state.message_posts += 1;
        if !state.channels.contains_key(&channel) {
            return error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
        }
        let bucket = match admit(&mut state, &channel) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let limit = state.bucket_limit;
        match create(&mut state, &channel, incoming) {
            Ok(m) => (bucket, limit, m),
            Err(r) => return with_limits(r, "fake-messages", limit, bucket),
        }
    };
    hold(&shared).await;
    with_limits(
        Json(message).into_response(),
        "fake-messages",
        limit,
        bucket,
    )
}

/// While the test holds sends, the answer waits (the message already exists).
async fn hold(shared: &Shared) {
    let mut counted = false;
    loop {
        let released = shared.released.notified();
        {
            let mut state = shared.lock();
            if !state.holding {
                return;
            }
            if !counted {
                state.held += 1;
                counted = true;
            }
        }
        released.await;
    }
}

/// Validates and creates the message (or finds the one with the same nonce).
fn create(state: &mut State, channel: &str, incoming: Incoming) -> Result<Value, Response> {
    let p = &incoming.payload;
    let content = p["content"].as_str().unwrap_or_default().to_string();
    if content.chars().count() > 2000 {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": 50035, "message": "Invalid Form Body", "errors": { "content": { "_errors": [{ "code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length." }] } } })),
        )
            .into_response());
    }
    if content.is_empty() && incoming.files.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        ));
    }
    let nonce = match &p["nonce"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    if nonce.as_ref().is_some_and(|n| n.len() > 25) {
        return Err(error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body"));
    }
    let enforce = p["enforce_nonce"].as_bool() == Some(true);
    if let (true, Some(n)) = (enforce, &nonce) {
        let window = state.nonce_window;
        if let Some((at, existing)) = state.nonces.get(n)
            && at.elapsed() < window
        {
            return Ok(existing.clone());
        }
    }
    let mut m = state.message(channel, State::bot_user(), &content);
    let id = m["id"].as_str().unwrap_or_default().to_string();
    let reply_to = p["message_reference"]["message_id"]
        .as_str()
        .map(str::to_string);
    if let Some(r) = &reply_to {
        m["type"] = json!(19);
        m["message_reference"] = json!({ "message_id": r, "channel_id": channel });
        m["referenced_message"] = state.messages.get(r).cloned().unwrap_or(Value::Null);
    }
    let mut attachments = Vec::new();
    for (i, (name, data)) in incoming.files.iter().enumerate() {
        let path = format!("{channel}/{id}{i}/{name}");
        attachments.push(json!({ "id": format!("{id}{i}"), "filename": name, "size": data.len(), "url": format!("{}/cdn/attachments/{path}", state.http_base) }));
        state.files.insert(path, data.clone());
    }
    m["attachments"] = json!(attachments);
    if let Some(n) = &nonce {
        m["nonce"] = json!(n);
        state.nonces.insert(n.clone(), (Instant::now(), m.clone()));
    }
    state.messages.insert(id, m.clone());
    let (chat, thread) = state.place(channel);
    state.sent.push(SentMessage {
        chat,
        text: content,
        files: incoming.files,
        thread,
        reply_to,
    });
    // Discord echoes the bot's own message on the gateway.
    state.dispatch("MESSAGE_CREATE", &m);
    Ok(m)
}

//! The HTTP listener: `POST /hooks/<name>`, checked in this order — the hook exists (404),
//! the method is POST (405), the hook's rate and the in-flight limit (429), the declared
//! length (413), the body read within the time limit and never past the size limit
//! (408, 413), the signature over the raw bytes (401) — and only then anything parsed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http_body_util::BodyExt;
use nanoclaw_channel::{
    ChannelEvent, HealthCell, HttpLimits, InboundEvent, InboundSink, RouteOutcome, StateStore,
    forget_older_daily, now_ms, serve_http, serve_with_rebind,
};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use crate::sign::{self, SignatureError};
use crate::{CHAT_PREFIX, Hook, Scheme, WebhookConfig, text};

/// How long a delivery waits for the host to store it before answering 503.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// The header a nanoclaw reply carries: a delivery with it comes from an assistant, and is
/// never answered (two assistants wired to each other would talk forever).
pub const REPLY_MARK: &str = "x-nanoclaw-reply";
/// Signatures remembered against replays.
const SEEN_MAX: usize = 10_000;
/// How long a stored delivery's signature is remembered in the database. The generic
/// scheme's signed timestamp refuses replays after the replay window anyway; GitHub signs
/// no time, so a delivery captured and replayed later than this would be taken again
/// (GitHub itself redelivers only within 3 days).
pub const SEEN_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Signatures of deliveries the host has settled: the same signed bytes sent again under a
/// new delivery id (headers a replaying attacker can change; GitHub's scheme signs no time)
/// are not a new turn. The newest 10,000 are kept in memory; with a state store
/// ([`Seen::durable`], as the channel runs it) each is also kept in the host's
/// database for [`SEEN_RETENTION`], so a replay after a restart is refused too.
#[derive(Default)]
pub struct Seen {
    memory: Mutex<(HashSet<String>, VecDeque<String>)>,
    state: Option<Arc<dyn StateStore>>,
}

impl Seen {
    /// Remembers signatures in `state` as well (durable across restarts).
    pub fn durable(state: Arc<dyn StateStore>) -> Seen {
        Seen {
            memory: Mutex::default(),
            state: Some(state),
        }
    }

    fn key(sig: &str) -> String {
        format!("seen:{sig}")
    }

    async fn contains(&self, sig: &str) -> bool {
        if self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(sig)
        {
            return true;
        }
        match &self.state {
            Some(state) => match state.get(&Self::key(sig)).await {
                Ok(found) => found.is_some(),
                // Unknown: let it through to the host, whose deduplication by delivery id
                // still holds.
                Err(e) => {
                    tracing::warn!(error = %e, "webhook: remembered signatures unreadable");
                    false
                }
            },
            None => false,
        }
    }

    /// Forgets signatures stored longer ago than [`SEEN_RETENTION`], now and once a day.
    pub async fn prune_forever(self: Arc<Self>) {
        if let Some(state) = &self.state {
            let label = "webhook: delivery signatures older than the retention";
            forget_older_daily(Arc::clone(state), "seen:", SEEN_RETENTION, label).await;
        }
    }

    async fn insert(&self, sig: String) {
        if let Some(state) = &self.state
            && let Err(e) = state.put(&Self::key(&sig), &now_ms().to_string()).await
        {
            tracing::warn!(error = %e, "webhook: could not remember a signature");
        }
        let mut guard = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if set.insert(sig.clone()) {
            order.push_back(sig);
            while order.len() > SEEN_MAX {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
}

/// A token bucket per hook: `rate` per minute, bursts up to `rate`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the handlers share.
pub struct Server {
    hooks: Arc<BTreeMap<String, Hook>>,
    health: Arc<HealthCell>,
    sink: InboundSink,
    max_body: usize,
    body_timeout: Duration,
    window: i64,
    rate: u32,
    in_flight: Arc<Semaphore>,
    buckets: Mutex<HashMap<String, Bucket>>,
    seen: Arc<Seen>,
}

impl Server {
    pub fn new(
        config: &WebhookConfig,
        hooks: Arc<BTreeMap<String, Hook>>,
        health: Arc<HealthCell>,
        sink: InboundSink,
        seen: Arc<Seen>,
    ) -> Server {
        Server {
            hooks,
            health,
            sink,
            max_body: config.max_body_bytes,
            body_timeout: Duration::from_secs(config.body_timeout_secs.max(1)),
            window: i64::try_from(config.replay_window_secs).unwrap_or(i64::MAX),
            rate: config.rate_per_minute.max(1),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            buckets: Mutex::new(HashMap::new()),
            seen,
        }
    }

    /// Takes one token of `hook`'s bucket, or says how long until one is there.
    fn take_token(&self, hook: &str) -> Result<(), Duration> {
        let per_sec = f64::from(self.rate) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(hook.to_owned()).or_insert(Bucket {
            tokens: f64::from(self.rate),
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * per_sec;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(self.rate));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

/// Serves on `listen` until aborted; binds again with backoff when it cannot bind or the
/// server fails. `first` is a listener `start()` already bound.
pub async fn run(listen: String, server: Arc<Server>, first: Option<TcpListener>) {
    let health = Arc::clone(&server.health);
    let pruning = Arc::clone(&server.seen).prune_forever();
    let serving = serve_with_rebind(&listen, first, &health, "webhook", |listener| {
        let app = router(Arc::clone(&server));
        serve_http(listener, app, HttpLimits::default())
    });
    tokio::join!(serving, pruning);
}

/// The routes (also for tests that serve them on their own listener).
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/hooks/{name}", any(receive))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such hook") })
        .with_state(server)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn retry_after(message: &str, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, message);
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn status(status: StatusCode, what: &str, detail: Option<&str>) -> Response {
    let mut body = serde_json::json!({ "status": what });
    if let Some(detail) = detail {
        body["detail"] = serde_json::Value::from(detail);
    }
    (status, axum::Json(body)).into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads at most `limit` bytes: past it, stops at once.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = body;
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
        if let Some(chunk) = frame.data_ref() {
            if data.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            data.extend_from_slice(chunk);
        }
    }
    Ok(data)
}

async fn receive(
    State(server): State<Arc<Server>>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(hook) = server.hooks.get(&name) else {
        return error(StatusCode::NOT_FOUND, "no such hook");
    };
    if method != Method::POST {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if let Err(wait) = server.take_token(&name) {
        return retry_after("too many deliveries for this hook", wait);
    }
    let Ok(_permit) = Arc::clone(&server.in_flight).try_acquire_owned() else {
        return retry_after("too many deliveries in flight", Duration::from_secs(1));
    };
    let limit = hook.config.max_body_bytes.unwrap_or(server.max_body);
    let declared = header_str(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body over the hook's limit");
    }
    let raw = match tokio::time::timeout(server.body_timeout, read_limited(body, limit)).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(BodyError::TooLarge)) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body over the hook's limit");
        }
        Ok(Err(BodyError::Broken(e))) => {
            tracing::debug!(hook = %name, error = %e, "webhook: a body was cut off");
            return error(StatusCode::BAD_REQUEST, "the body was cut off");
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            );
        }
    };
    let (verified, signature) = verify(&server, hook, &headers, &raw);
    if let Err(e) = verified {
        let message = format!("hook {name}: refused a delivery: {e}");
        tracing::warn!("webhook: {message}");
        server.health.error(message);
        return error(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    server.health.event();
    // Verified: from here the bytes came from someone holding the secret.
    let signature = signature.unwrap_or_default();
    if server.seen.contains(&signature).await {
        return status(StatusCode::OK, "duplicate", None);
    }
    let delivery_id = header_str(&headers, "x-github-delivery")
        .or_else(|| header_str(&headers, "x-webhook-id"))
        .filter(|id| !id.is_empty() && id.len() <= 200)
        .map_or_else(|| format!("sig:{signature}"), str::to_owned);
    let turn = match hook.config.scheme {
        Scheme::Github => text::github_turn(&name, header_str(&headers, "x-github-event"), &raw),
        Scheme::Generic => text::generic_turn(&name, &raw),
    };
    let (tx, rx) = oneshot::channel();
    let event = InboundEvent {
        channel: crate::NAME.to_owned(),
        chat_id: format!("{CHAT_PREFIX}{name}"),
        chat_name: format!("webhook {name}"),
        // A hook is one source addressing the assistant, like a direct message.
        is_group: false,
        thread: None,
        platform_msg_id: delivery_id.clone(),
        sender: name.clone(),
        sender_name: Some(format!("webhook {name}")),
        text: turn,
        received_at: now_ms(),
        mentions_me: true,
        from_bot: headers.contains_key(REPLY_MARK),
        attachments: Vec::new(),
        ack: Some(tx),
    };
    if server
        .sink
        .send(ChannelEvent::Inbound(event))
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the host is not receiving");
    }
    let outcome = match tokio::time::timeout(ACK_WAIT, rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, "the host dropped it"),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the host did not store it in time; deliver it again",
            );
        }
    };
    if outcome.is_settled() {
        server.seen.insert(signature).await;
    }
    match outcome {
        RouteOutcome::Accepted => status(StatusCode::ACCEPTED, "accepted", None),
        RouteOutcome::Duplicate => status(StatusCode::OK, "duplicate", None),
        RouteOutcome::Held(why) => status(StatusCode::ACCEPTED, "held", Some(&why)),
        RouteOutcome::Ignored(why) => status(StatusCode::ACCEPTED, "ignored", Some(&why)),
        RouteOutcome::Failed(why) => {
            tracing::warn!(hook = %name, %why, "webhook: the host could not store a delivery");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the host could not store it; deliver it again",
            )
        }
    }
}

/// Checks the hook's scheme; returns the signature (hex) that matched.
fn verify(
    server: &Server,
    hook: &Hook,
    headers: &HeaderMap,
    raw: &[u8],
) -> (Result<(), SignatureError>, Option<String>) {
    let Some(secret) = hook.secret.as_ref() else {
        // Not reached while running (start refuses hooks without secrets): deny anyway.
        return (Err(SignatureError::Mismatch), None);
    };
    let secret = secret.expose_secret().as_bytes();
    match hook.config.scheme {
        Scheme::Github => {
            let value = header_str(headers, sign::GITHUB_HEADER);
            (
                sign::verify_github(secret, raw, value),
                value.map(|v| v.trim().trim_start_matches("sha256=").to_ascii_lowercase()),
            )
        }
        Scheme::Generic => {
            let value = header_str(headers, sign::GENERIC_HEADER);
            let now = now_ms() / 1000;
            (
                sign::verify_generic(secret, raw, value, now, server.window),
                value.map(|v| v.trim().to_ascii_lowercase()),
            )
        }
    }
}

//! The webhook channel's driver for the conformance suite. The "platform" is two things a
//! real deployment has: senders that POST signed deliveries to the channel's listener
//! (this driver signs them with the generic scheme, as `nanoclaw webhook add` documents),
//! and a receiver at each hook's `reply_url` (a local HTTP server here) that checks the
//! reply's signature, drops a repeated `Idempotency-Key` as the documented contract asks,
//! and can answer 429 with `Retry-After` or hold its answers.
//!
//! The hooks are wired by the config (`group = "main"`), not by pairing:
//! [`FakePlatform::chats_wired_by_config`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use tokio::sync::watch;

use super::{FakeChat, FakePlatform, Posted, SentMessage};

/// Hooks the fake configures: `h1`, `h2`, `h3`.
const HOOKS: u32 = 3;
/// The reply length the fake's config allows (so long replies come in parts).
const REPLY_MAX_CHARS: usize = 4000;

fn secret(hook: &str) -> String {
    format!("secret-of-{hook}")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, body: &[u8], t: i64) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Default)]
struct Inner {
    sent: Vec<SentMessage>,
    keys: HashSet<String>,
    /// Delivery id → body, for redelivery.
    posted: Vec<(String, String)>,
    rate_limited: u32,
    retry_after_secs: u64,
    last_refused: Option<Instant>,
    rate_log: Vec<(Instant, Instant)>,
    held: usize,
    bad_replies: Vec<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    hold: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The driver.
pub struct FakeWebhook {
    shared: Arc<Shared>,
    /// The channel's listener (a port chosen free at start).
    listen: String,
    receiver: String,
    http: reqwest::Client,
    next_id: AtomicU64,
    posts: AtomicU64,
}

impl FakeWebhook {
    pub async fn start() -> FakeWebhook {
        let (hold, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            hold,
        });
        let app = Router::new()
            .route("/reply/{hook}", post(reply))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // A free port for the channel's own listener.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = probe.local_addr().unwrap().to_string();
        drop(probe);
        FakeWebhook {
            shared,
            listen,
            receiver,
            http: reqwest::Client::new(),
            next_id: AtomicU64::new(1),
            posts: AtomicU64::new(0),
        }
    }

    fn hook_of(chat: &FakeChat) -> String {
        chat.platform_id
            .strip_prefix("hook:")
            .unwrap_or(&chat.platform_id)
            .to_owned()
    }

    /// POSTs `body` to `hook` signed now, with `headers`; retries while the channel is not
    /// listening (it is starting) or the host cannot take it yet. Returns the status.
    pub async fn post(&self, hook: &str, body: &str, headers: &[(&str, String)]) -> StatusCode {
        let url = format!("http://{}/hooks/{hook}", self.listen);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut request = self
                .http
                .post(&url)
                .header(
                    "x-signature",
                    sign(&secret(hook), body.as_bytes(), now_secs()),
                )
                .body(body.to_owned());
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            self.posts.fetch_add(1, Ordering::SeqCst);
            match request.send().await {
                Ok(response)
                    if response.status() != StatusCode::SERVICE_UNAVAILABLE
                        || Instant::now() > deadline =>
                {
                    return response.status();
                }
                Err(e) if Instant::now() > deadline => panic!("posting to {url}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Replies whose signature did not check out (should stay empty).
    pub fn bad_replies(&self) -> Vec<String> {
        self.shared.lock().bad_replies.clone()
    }
}

async fn reply(
    State(shared): State<Arc<Shared>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    {
        let mut inner = shared.lock();
        if inner.rate_limited > 0 {
            inner.rate_limited -= 1;
            inner.last_refused = Some(now);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(serde_json::json!({"error": "slow down"})),
            )
                .into_response();
            if let Ok(value) = inner.retry_after_secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        if let Some(refused) = inner.last_refused.take() {
            inner.rate_log.push((refused, now));
        }
        // The receiver's side of the contract: the signature over "<t>.<body>".
        let given = headers
            .get("x-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let t: i64 = given
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if given != sign(&secret(&hook), &body, t) || (now_secs() - t).abs() > 300 {
            inner.bad_replies.push(given);
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !inner.keys.insert(key) {
            // Seen: taken already, not shown again.
            return StatusCode::OK.into_response();
        }
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let files = value["files"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .map(|f| {
                        use base64::Engine;
                        (
                            f["name"].as_str().unwrap_or_default().to_owned(),
                            base64::engine::general_purpose::STANDARD
                                .decode(f["data_base64"].as_str().unwrap_or_default())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        inner.sent.push(SentMessage {
            chat: format!("hook:{hook}"),
            text: value["text"].as_str().unwrap_or_default().to_owned(),
            files,
            thread: None,
            reply_to: value["in_reply_to"].as_str().map(str::to_owned),
        });
        if *shared.hold.borrow() {
            inner.held += 1;
        }
    }
    // Held: recorded, but the answer waits (the test kills the host in between).
    let mut hold = shared.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    StatusCode::NO_CONTENT.into_response()
}

#[async_trait]
impl FakePlatform for FakeWebhook {
    fn channel(&self) -> &'static str {
        "webhook"
    }

    fn settings_toml(&self) -> String {
        let mut text = format!(
            "enabled = true\nlisten = \"{}\"\nreply_max_chars = {REPLY_MAX_CHARS}\n",
            self.listen
        );
        // Inline: the suite puts this text both under a `[channels.webhook]` header and
        // parses it as that table on its own.
        let hooks: Vec<String> = (1..=HOOKS)
            .map(|n| {
                format!(
                    "h{n} = {{ group = \"main\", scheme = \"generic\", reply_url = \"{}/reply/h{n}\" }}",
                    self.receiver
                )
            })
            .collect();
        text.push_str(&format!("hooks = {{ {} }}\n", hooks.join(", ")));
        text
    }

    fn secrets(&self) -> Vec<(String, String)> {
        (1..=HOOKS)
            .map(|n| (format!("webhook.h{n}.secret"), secret(&format!("h{n}"))))
            .collect()
    }

    fn max_message_len(&self) -> usize {
        REPLY_MAX_CHARS
    }

    fn chats_wired_by_config(&self) -> bool {
        true
    }

    fn chat(&self, n: u32, is_group: bool) -> FakeChat {
        assert!(
            (1..=HOOKS).contains(&n),
            "the fake configures hooks h1..h{HOOKS}"
        );
        FakeChat {
            platform_id: format!("hook:h{n}"),
            is_group,
            user_id: format!("h{n}"),
            user_name: format!("webhook h{n}"),
        }
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, _mention: bool) -> Posted {
        let id = format!("delivery-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let hook = Self::hook_of(chat);
        let status = self
            .post(&hook, text, &[("x-webhook-id", id.clone())])
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "posting {text:?}");
        self.shared
            .lock()
            .posted
            .push((id.clone(), text.to_owned()));
        Posted {
            chat_id: chat.platform_id.clone(),
            message_id: id,
        }
    }

    async fn user_sends_file(
        &self,
        _chat: &FakeChat,
        _file_name: &str,
        _data: &[u8],
        _caption: &str,
    ) -> Posted {
        panic!("a webhook delivery is a body, not a message with files");
    }

    /// Another assistant's reply (it carries `X-Nanoclaw-Reply`), signed with the hook's
    /// secret as a reply_url pointed back at a hook would be.
    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted {
        let id = format!("delivery-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let hook = Self::hook_of(chat);
        let status = self
            .post(
                &hook,
                text,
                &[
                    ("x-webhook-id", id.clone()),
                    ("x-nanoclaw-reply", "1".into()),
                ],
            )
            .await;
        assert!(status.is_success(), "{status}");
        Posted {
            chat_id: chat.platform_id.clone(),
            message_id: id,
        }
    }

    /// The same delivery id and body, signed anew (as a sender retrying later does).
    async fn redeliver(&self, chat: &FakeChat, message: &Posted) {
        let body = self
            .shared
            .lock()
            .posted
            .iter()
            .find(|(id, _)| *id == message.message_id)
            .map(|(_, body)| body.clone())
            .expect("a delivery this driver posted");
        let status = self
            .post(
                &Self::hook_of(chat),
                &body,
                &[("x-webhook-id", message.message_id.clone())],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "a redelivery is a duplicate");
    }

    /// Garbage a sender (or an attacker) might send: a wrong signature, no signature, a
    /// malformed header, a body over the limit. Each refused with its status.
    async fn push_malformed(&self, chat: &FakeChat) {
        let hook = Self::hook_of(chat);
        let url = format!("http://{}/hooks/{hook}", self.listen);
        let forged = self
            .http
            .post(&url)
            .header("x-signature", sign("not-the-secret", b"{", now_secs()))
            .body("{")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
        let unsigned = self
            .http
            .post(&url)
            .body("\u{0}\u{1}")
            .send()
            .await
            .unwrap();
        assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
        let malformed = self
            .http
            .post(&url)
            .header("x-signature", "t=x,v1=zz")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(malformed.status(), StatusCode::UNAUTHORIZED);
        let huge = "x".repeat(2 * 1024 * 1024);
        let big = self
            .http
            .post(&url)
            .header(
                "x-signature",
                sign(&secret(&hook), huge.as_bytes(), now_secs()),
            )
            .body(huge)
            .send()
            .await;
        if let Ok(big) = big {
            assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        }
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        self.shared
            .lock()
            .sent
            .iter()
            .filter(|m| m.chat == chat.platform_id)
            .cloned()
            .collect()
    }

    /// Nothing to drop: every delivery is its own request.
    async fn drop_connections(&self) {}

    fn connections(&self) -> u64 {
        self.posts.load(Ordering::SeqCst)
    }

    fn rate_limit_sends(&self, count: u32, retry_after: Duration) {
        let mut inner = self.shared.lock();
        inner.rate_limited = count;
        inner.retry_after_secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    }

    fn rate_limit_log(&self) -> Vec<(Instant, Instant)> {
        self.shared.lock().rate_log.clone()
    }

    fn hold_sends(&self) {
        self.shared.hold.send_replace(true);
    }

    fn release_sends(&self) {
        self.shared.hold.send_replace(false);
    }

    fn held_sends(&self) -> usize {
        self.shared.lock().held
    }
}

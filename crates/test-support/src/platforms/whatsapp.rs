//! A local WhatsApp Cloud API (Graph API) and webhook sender, for the WhatsApp channel's
//! tests and the host's conformance suite, built from Meta's public docs
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api>).
//!
//! **Graph side** (every call needs `Authorization: Bearer <token>`, else HTTP 401 with
//! Graph error 190): `GET /{version}/{phone_number_id}` (the number), `POST
//! /{version}/{phone_number_id}/messages` (text and document messages, read receipts with
//! `typing_indicator`), `POST /{version}/{phone_number_id}/media` (multipart upload), `GET
//! /{version}/{media_id}` (media URL) and the URL itself. Refusals are Graph errors
//! `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`: 100 for bad
//! parameters, 131026 for a recipient it does not know (the real API reports that later,
//! in a status webhook; the fake refuses at once), 131047 once [`FakeWhatsApp::close_window`]
//! closed a chat's 24-hour window, HTTP 429 with 130429 when asked, with a `Retry-After`
//! header (Meta does not promise one; the fake sends it so the adapter's honouring of it
//! can be checked).
//!
//! **Webhook side**: user messages are posted to the channel's `listen` address as signed
//! deliveries (`X-Hub-Signature-256: sha256=HMAC-SHA256(app secret, body)`) over keep-alive
//! connections, up to [`DELIVERY_CONCURRENCY`] at a time, and a delivery answered anything
//! but 200 is posted again after a growing pause, as Meta does. Each accepted send is
//! followed by a `statuses` delivery (`sent`), as on Meta.
//!
//! For the conformance suite: DM chat ids are E.164 digits; a group is a Groups API group
//! (id in `group_id`), where a message addressing the bot starts with `@<business number>`.
//! WhatsApp has no bot accounts: [`FakePlatform::other_bot_says`] posts a message *from the
//! business's own number* (the echo a second device or an integration would cause), which
//! the channel must drop as its own. [`FakePlatform::drop_connections`] cuts the next
//! delivery off mid-body (the TCP connection closes), after which it is posted again;
//! [`FakePlatform::connections`] counts deliveries answered 200.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

use super::{FakeChat, FakePlatform, Posted, SentMessage};

pub const ACCESS_TOKEN: &str = "EAAGfakeWhatsAppSystemUserTokenForTests";
pub const APP_SECRET: &str = "fake-app-secret-0123456789abcdef";
pub const VERIFY_TOKEN: &str = "fake-verify-token";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// The business's display number (digits, as webhooks carry it).
pub const BUSINESS_NUMBER: &str = "15550001111";
pub const VERIFIED_NAME: &str = "Nanoclaw Test";
pub const WABA_ID: &str = "102290129340398";
pub const WEBHOOK_PATH: &str = "/webhook/whatsapp";
const MAX_TEXT: usize = 4096;

/// A file on the fake: uploaded by the bot or sent by a user.
#[derive(Debug, Clone)]
struct StoredMedia {
    file_name: String,
    mime_type: String,
    data: Vec<u8>,
}

/// What the bot sent, as recorded.
#[derive(Debug, Clone)]
pub struct SentRecord {
    pub wamid: String,
    /// `text` or `document`.
    pub kind: String,
    pub message: SentMessage,
}

#[derive(Default)]
struct Inner {
    /// Known chats: id → is a group.
    chats: HashMap<String, bool>,
    closed: HashSet<String>,
    /// Deliveries posted for user messages, by wamid (for redelivery).
    deliveries: HashMap<String, Delivery>,
    known_ids: HashSet<String>,
    next_id: u64,
    sent: Vec<SentRecord>,
    reads: Vec<(String, bool)>,
    media: HashMap<String, StoredMedia>,
    queue: VecDeque<Delivery>,
    /// Order keys with a delivery being posted (or waiting to be posted again).
    busy: HashSet<String>,
    cut_next: bool,
    /// Every delivery attempt's answer (`None`: no HTTP answer).
    attempts: Vec<Option<u16>>,
    rate_limited: u32,
    retry_after_secs: u64,
    last_refused: Option<Instant>,
    rate_log: Vec<(Instant, Instant)>,
    held: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    queued: Notify,
    hold: watch::Sender<bool>,
    accepted: AtomicU64,
    base: String,
    listen_port: u16,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        inner.next_id
    }

    fn new_wamid(&self) -> String {
        let n = self.next_id();
        let id = format!("wamid.HBgLMTU1NTAwMDExMTEVAgASGBQz{n:016X}AA==");
        self.lock().known_ids.insert(id.clone());
        id
    }

    fn enqueue(&self, delivery: Delivery) {
        self.lock().queue.push_back(delivery);
        self.queued.notify_waiters();
    }

    /// The oldest queued delivery whose order key has none in flight, marked in flight.
    fn take_next(&self) -> Option<Delivery> {
        let mut inner = self.lock();
        let at = inner
            .queue
            .iter()
            .position(|d| !inner.busy.contains(&d.order_key))?;
        let delivery = inner.queue.remove(at)?;
        inner.busy.insert(delivery.order_key.clone());
        Some(delivery)
    }

    fn done(&self, delivery: &Delivery) {
        self.lock().busy.remove(&delivery.order_key);
        self.queued.notify_waiters();
    }
}

/// A webhook delivery waiting to be posted.
#[derive(Debug, Clone)]
struct Delivery {
    /// Deliveries with the same key are posted one after the other, in order: one chat's
    /// messages (so a test can read them in order), or its status receipts.
    order_key: String,
    body: Vec<u8>,
}

impl Delivery {
    fn new(order_key: impl Into<String>, body: Vec<u8>) -> Delivery {
        Delivery {
            order_key: order_key.into(),
            body,
        }
    }
}

/// How many deliveries the fake posts at the same time (different chats; one chat's go in
/// order).
pub const DELIVERY_CONCURRENCY: usize = 8;

/// The fake Cloud API; stops (server and webhook sender) when dropped.
pub struct FakeWhatsApp {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeWhatsApp {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A Graph error response.
fn graph_error(status: StatusCode, code: i64, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "AbCdEfGhIjKlMnOp"}});
    (status, axum::Json(body)).into_response()
}

fn invalid_parameter(detail: &str) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        100,
        "OAuthException",
        &format!("(#100) Invalid parameter: {detail}"),
    )
}

/// The 401 for a call without the right token.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {ACCESS_TOKEN}");
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) if value == expected => None,
        _ => Some(graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "OAuthException",
            "Invalid OAuth access token - Cannot parse access token",
        )),
    }
}

/// `sha256=<hex HMAC-SHA256(APP_SECRET, body)>`.
pub fn sign(body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A delivery of the `messages` field with `value` fields (messages, contacts, statuses).
fn delivery(fields: Value) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
    });
    for (k, v) in fields.as_object().cloned().unwrap_or_default() {
        value[k] = v;
    }
    json!({"object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}]})
}

impl FakeWhatsApp {
    /// Starts the Graph server on a free port, picks a free port for the channel's webhook
    /// server, and starts the webhook sender.
    pub async fn start() -> FakeWhatsApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake WhatsApp server");
        let addr = listener.local_addr().expect("local address");
        let listen_port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("local address").port()
        };
        let (hold, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            queued: Notify::new(),
            hold,
            accepted: AtomicU64::new(0),
            base: format!("http://{addr}"),
            listen_port,
        });
        let app = Router::new()
            .route("/whatsapp_business/attachments/", get(download))
            .route("/{version}/{id}", get(get_object))
            .route("/{version}/{id}/messages", post(messages))
            .route("/{version}/{id}/media", post(upload))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut tasks = vec![server];
        let client = reqwest::Client::builder()
            .user_agent("facebookexternalua")
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client for the webhook");
        for _ in 0..DELIVERY_CONCURRENCY {
            tasks.push(tokio::spawn(send_deliveries(
                Arc::clone(&shared),
                client.clone(),
            )));
        }
        FakeWhatsApp { shared, tasks }
    }

    pub fn api_base(&self) -> &str {
        &self.shared.base
    }

    /// The channel's webhook URL (where the fake posts deliveries).
    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}{WEBHOOK_PATH}", self.shared.listen_port)
    }

    /// Posts `body` once with `signature` as `X-Hub-Signature-256`; the HTTP status, or
    /// `None` when no answer came. Not retried, not counted.
    pub async fn post_once(&self, body: &[u8], signature: Option<&str>) -> Option<u16> {
        post_delivery(self.shared.listen_port, body, signature, false).await
    }

    /// Every delivery attempt's answer so far, in order (`None`: no HTTP answer).
    pub fn delivery_attempts(&self) -> Vec<Option<u16>> {
        self.shared.lock().attempts.clone()
    }

    /// Posts a user message with `fields` (type and its object) in `chat`, from `from`.
    pub fn post_message(&self, chat: &FakeChat, from: &str, fields: Value) -> Posted {
        let wamid = self.shared.new_wamid();
        let mut message = json!({"from": from, "id": wamid, "timestamp": now_secs().to_string()});
        if chat.is_group {
            message["group_id"] = json!(chat.platform_id);
        }
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            message[k] = v;
        }
        let body = delivery(json!({
            "contacts": [{"profile": {"name": chat.user_name}, "wa_id": from}],
            "messages": [message],
        }));
        let delivery = Delivery::new(&chat.platform_id, body.to_string().into_bytes());
        self.shared
            .lock()
            .deliveries
            .insert(wamid.clone(), delivery.clone());
        self.shared.enqueue(delivery);
        Posted {
            chat_id: chat.platform_id.clone(),
            message_id: wamid,
        }
    }

    fn addressed(chat: &FakeChat, text: &str, mention: bool) -> String {
        if chat.is_group && mention {
            format!("@{BUSINESS_NUMBER} {text}")
        } else {
            text.to_string()
        }
    }

    /// A user replies to one of the bot's messages (quoting it).
    pub fn user_replies_to_bot(&self, chat: &FakeChat, bot_wamid: &str, text: &str) -> Posted {
        self.post_message(
            chat,
            &chat.user_id,
            json!({"type": "text", "text": {"body": text},
                   "context": {"from": BUSINESS_NUMBER, "id": bot_wamid}}),
        )
    }

    fn store_media(&self, file_name: &str, mime_type: &str, data: &[u8]) -> String {
        let id = format!("{}", 1_000_000_000_000 + self.shared.next_id());
        self.shared.lock().media.insert(
            id.clone(),
            StoredMedia {
                file_name: file_name.to_string(),
                mime_type: mime_type.to_string(),
                data: data.to_vec(),
            },
        );
        id
    }

    /// A user sends media of `kind` (`image`, `audio`, `video`, `document`) with a caption.
    pub fn user_sends_media(
        &self,
        chat: &FakeChat,
        kind: &str,
        mime_type: &str,
        data: &[u8],
        caption: Option<&str>,
    ) -> Posted {
        let id = self.store_media(&format!("{kind}.bin"), mime_type, data);
        let mut object = json!({"id": id, "mime_type": mime_type, "sha256": "fake"});
        if kind == "audio" {
            object["voice"] = json!(true);
        }
        if let Some(caption) = caption {
            object["caption"] = json!(Self::addressed(chat, caption, true));
        }
        self.post_message(chat, &chat.user_id, json!({"type": kind, kind: object}))
    }

    /// The 24-hour customer service window of `chat` has passed: sends fail with 131047.
    pub fn close_window(&self, chat: &FakeChat) {
        self.shared.lock().closed.insert(chat.platform_id.clone());
    }

    /// Read receipts the bot sent: (message id, with the typing indicator).
    pub fn reads(&self) -> Vec<(String, bool)> {
        self.shared.lock().reads.clone()
    }

    pub fn sent_records(&self) -> Vec<SentRecord> {
        self.shared.lock().sent.clone()
    }
}

/// One of the fake's [`DELIVERY_CONCURRENCY`] senders: posts queued deliveries over a
/// shared keep-alive client; one not answered 200 is posted again after a growing pause
/// (Meta retries for days; the fake's pauses are short), holding back later deliveries of
/// its order key meanwhile.
///
/// Meta posts each notification as a request of its own and does not wait for one answer
/// before sending the next: its webhook docs
/// (<https://developers.facebook.com/docs/whatsapp/cloud-api/guides/set-up-webhooks>) ask
/// for an endpoint that handles concurrent requests, in the words its partners repeat
/// (<https://docs.360dialog.com/partner/messaging/receiving-messages-via-webhook>):
/// "Configure and load test your webhook server to handle concurrent requests", and it
/// promises at-least-once delivery, not order. The fake keeps one chat's deliveries in
/// order (tests read a chat's messages in sequence) and posts different chats' at once.
async fn send_deliveries(shared: Arc<Shared>, client: reqwest::Client) {
    let url = format!("http://127.0.0.1:{}{WEBHOOK_PATH}", shared.listen_port);
    loop {
        // Registered before looking, so a delivery queued in between is not missed.
        let queued = shared.queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let Some(delivery) = shared.take_next() else {
            queued.await;
            continue;
        };
        let mut pause = Duration::from_millis(50);
        loop {
            let cut = std::mem::take(&mut shared.lock().cut_next);
            let status = if cut {
                // On a connection of its own, closed halfway through the body.
                let signature = sign(&delivery.body);
                post_delivery(shared.listen_port, &delivery.body, Some(&signature), true).await
            } else {
                post_kept_alive(&client, &url, &delivery.body).await
            };
            shared.lock().attempts.push(status);
            if status == Some(200) {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        shared.done(&delivery);
    }
}

/// One signed POST over the client's pooled connections; the status, `None` without one.
async fn post_kept_alive(client: &reqwest::Client, url: &str, body: &[u8]) -> Option<u16> {
    let response = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", sign(body))
        .body(body.to_vec())
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    // Read to the end so the connection goes back to the pool.
    let _ = response.bytes().await;
    Some(status)
}

/// One HTTP/1.1 POST to the channel's webhook; `cut` closes the connection halfway
/// through the body. Returns the status, or `None` without an answer.
async fn post_delivery(port: u16, body: &[u8], signature: Option<&str>, cut: bool) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut head = format!(
        "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: facebookexternalua\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(signature) = signature {
        head.push_str(&format!("X-Hub-Signature-256: {signature}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    if cut {
        let _ = stream.write_all(&body[..body.len() / 2]).await;
        let _ = stream.shutdown().await;
        drop(stream);
        return None;
    }
    stream.write_all(body).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

async fn get_object(
    State(shared): State<Arc<Shared>>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    if id == PHONE_NUMBER_ID {
        return axum::Json(json!({"verified_name": VERIFIED_NAME,
            "display_phone_number": "+1 555-000-1111", "id": PHONE_NUMBER_ID,
            "quality_rating": "GREEN"}))
        .into_response();
    }
    let media = shared.lock().media.get(&id).cloned();
    match media {
        Some(media) => axum::Json(json!({"messaging_product": "whatsapp",
            "url": format!("{}/whatsapp_business/attachments/?mid={id}&ext=1739321024", shared.base),
            "mime_type": media.mime_type, "sha256": "fake", "file_size": media.data.len(), "id": id}))
        .into_response(),
        None => invalid_parameter(&format!(
            "Unsupported get request. Object with ID '{id}' does not exist"
        )),
    }
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    let media = query
        .get("mid")
        .and_then(|id| shared.lock().media.get(id).cloned());
    match media {
        Some(media) => (
            [(header::CONTENT_TYPE, media.mime_type.clone())],
            media.data,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path((_version, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    if let Some(refused) = unauthorized(request.headers()) {
        return refused;
    }
    if id != PHONE_NUMBER_ID {
        return invalid_parameter("unknown phone number id");
    }
    let Ok(mut form) = Multipart::from_request(request, &()).await else {
        return invalid_parameter("expected multipart/form-data");
    };
    let mut product = None;
    let mut file = None;
    while let Ok(Some(field)) = form.next_field().await {
        match field.name().unwrap_or_default() {
            "messaging_product" => product = field.text().await.ok(),
            "file" => {
                let name = field.file_name().unwrap_or("file").to_string();
                let mime = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_string();
                if let Ok(data) = field.bytes().await {
                    file = Some((name, mime, data.to_vec()));
                }
            }
            _ => {}
        }
    }
    if product.as_deref() != Some("whatsapp") {
        return invalid_parameter("messaging_product is required");
    }
    let Some((name, mime, data)) = file else {
        return invalid_parameter("file is required");
    };
    let media_id = format!("{}", 2_000_000_000_000 + shared.next_id());
    shared.lock().media.insert(
        media_id.clone(),
        StoredMedia {
            file_name: name,
            mime_type: mime,
            data,
        },
    );
    axum::Json(json!({"id": media_id})).into_response()
}

/// The 429 the fake answers when asked to.
fn rate_limited(shared: &Shared) -> Option<Response> {
    let mut inner = shared.lock();
    let now = Instant::now();
    if inner.rate_limited > 0 {
        inner.rate_limited -= 1;
        inner.last_refused = Some(now);
        let mut response = graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            130429,
            "OAuthException",
            "(#130429) Rate limit hit: Cloud API message throughput has been reached.",
        );
        if let Ok(value) = inner.retry_after_secs.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Some(response);
    }
    if let Some(refused) = inner.last_refused.take() {
        inner.rate_log.push((refused, now));
    }
    None
}

/// A message's visible content: (text, files), or the 400 to answer.
/// A sent message's visible text and its files.
type Content = (String, Vec<(String, Vec<u8>)>);

/// A message's visible content, or the invalid parameter to name in the 400.
fn content(inner: &Inner, body: &Value) -> Result<Content, String> {
    match body["type"].as_str().unwrap_or("text") {
        "text" => {
            let text = body["text"]["body"].as_str().unwrap_or_default();
            if text.trim().is_empty() {
                return Err("text['body'] is required".to_string());
            }
            if text.chars().count() > MAX_TEXT {
                return Err("Param text['body'] must be at most 4096 characters long.".to_string());
            }
            Ok((text.to_string(), Vec::new()))
        }
        "document" => {
            let id = body["document"]["id"].as_str().unwrap_or_default();
            let Some(media) = inner.media.get(id) else {
                return Err("document['id'] is not a valid media id".to_string());
            };
            let name = body["document"]["filename"]
                .as_str()
                .unwrap_or(&media.file_name)
                .to_string();
            let caption = body["document"]["caption"].as_str().unwrap_or_default();
            Ok((caption.to_string(), vec![(name, media.data.clone())]))
        }
        other => Err(format!(
            "message type {other:?} is not supported by this fake"
        )),
    }
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    if id != PHONE_NUMBER_ID {
        return invalid_parameter("unknown phone number id");
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return invalid_parameter("the body is not JSON");
    };
    if body["messaging_product"] != json!("whatsapp") {
        return invalid_parameter("messaging_product must be \"whatsapp\"");
    }
    if body["status"] == json!("read") {
        let message_id = body["message_id"].as_str().unwrap_or_default().to_string();
        let mut inner = shared.lock();
        if !inner.known_ids.contains(&message_id) {
            return invalid_parameter("message_id is not a valid message");
        }
        let typing = body["typing_indicator"]["type"] == json!("text");
        inner.reads.push((message_id, typing));
        return axum::Json(json!({"success": true})).into_response();
    }
    if let Some(refusal) = rate_limited(&shared) {
        return refusal;
    }
    send(&shared, &body).await
}

async fn send(shared: &Shared, body: &Value) -> Response {
    let to = body["to"].as_str().unwrap_or_default().to_string();
    let wamid = shared.new_wamid();
    {
        let mut inner = shared.lock();
        let group = body["recipient_type"] == json!("group");
        if inner.chats.get(&to) != Some(&group) {
            return graph_error(
                StatusCode::BAD_REQUEST,
                131026,
                "OAuthException",
                "(#131026) Message undeliverable",
            );
        }
        if inner.closed.contains(&to) {
            return graph_error(
                StatusCode::BAD_REQUEST,
                131047,
                "OAuthException",
                "(#131047) Re-engagement message: more than 24 hours have passed since the recipient last replied",
            );
        }
        let (text, files) = match content(&inner, body) {
            Ok(content) => content,
            Err(detail) => return invalid_parameter(&detail),
        };
        inner.sent.push(SentRecord {
            wamid: wamid.clone(),
            kind: body["type"].as_str().unwrap_or("text").to_string(),
            message: SentMessage {
                chat: to.clone(),
                text,
                files,
                thread: None,
                reply_to: body["context"]["message_id"].as_str().map(str::to_string),
            },
        });
        if *shared.hold.borrow() {
            inner.held += 1;
        }
    }
    // As on Meta: a `sent` status webhook follows.
    let status = delivery(json!({"statuses": [{"id": wamid, "status": "sent",
        "timestamp": now_secs().to_string(), "recipient_id": to}]}));
    shared.enqueue(Delivery::new(
        format!("status:{to}"),
        status.to_string().into_bytes(),
    ));
    // Held: recorded, but the answer waits (the test kills the host in between).
    let mut hold = shared.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    axum::Json(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": wamid}]}))
    .into_response()
}

#[async_trait]
impl FakePlatform for FakeWhatsApp {
    fn channel(&self) -> &'static str {
        "whatsapp"
    }

    fn settings_toml(&self) -> String {
        format!(
            "enabled = true\nmode = \"cloud\"\napi_base = \"{}\"\nphone_number_id = \"{PHONE_NUMBER_ID}\"\nlisten = \"127.0.0.1:{}\"\nwebhook_path = \"{WEBHOOK_PATH}\"\n",
            self.shared.base, self.shared.listen_port
        )
    }

    fn secrets(&self) -> Vec<(String, String)> {
        vec![
            (
                "whatsapp.access_token".to_string(),
                ACCESS_TOKEN.to_string(),
            ),
            ("whatsapp.app_secret".to_string(), APP_SECRET.to_string()),
            (
                "whatsapp.verify_token".to_string(),
                VERIFY_TOKEN.to_string(),
            ),
        ]
    }

    fn max_message_len(&self) -> usize {
        MAX_TEXT
    }

    /// DMs are the user's number; groups are Groups API ids.
    fn chat(&self, n: u32, is_group: bool) -> FakeChat {
        let (id, user) = if is_group {
            (
                format!("Y2FwaV9ncm91cDoxNTU1MDAwMTExMTox{n:04}"),
                format!("1555020{n:04}"),
            )
        } else {
            (format!("1555010{n:04}"), format!("1555010{n:04}"))
        };
        self.shared.lock().chats.insert(id.clone(), is_group);
        FakeChat {
            platform_id: id,
            is_group,
            user_id: user,
            user_name: format!("User {n}"),
        }
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, mention: bool) -> Posted {
        let text = Self::addressed(chat, text, mention);
        self.post_message(
            chat,
            &chat.user_id,
            json!({"type": "text", "text": {"body": text}}),
        )
    }

    async fn user_sends_file(
        &self,
        chat: &FakeChat,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Posted {
        let id = self.store_media(file_name, "text/plain", data);
        let caption = Self::addressed(chat, caption, true);
        self.post_message(
            chat,
            &chat.user_id,
            json!({"type": "document", "document": {
            "id": id, "filename": file_name, "mime_type": "text/plain", "sha256": "fake",
            "caption": caption}}),
        )
    }

    /// The business's own number "says" it (see the module docs): the channel must drop it.
    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted {
        let text = Self::addressed(chat, text, true);
        self.post_message(
            chat,
            BUSINESS_NUMBER,
            json!({"type": "text", "text": {"body": text}}),
        )
    }

    async fn redeliver(&self, _chat: &FakeChat, message: &Posted) {
        // The stored delivery carries its chat's order key.
        let body = self
            .shared
            .lock()
            .deliveries
            .get(&message.message_id)
            .cloned()
            .expect("a message posted on this fake");
        self.shared.enqueue(body);
    }

    /// Three validly signed deliveries: not JSON, `entry` of the wrong type, and a message
    /// without `from` and `id`.
    async fn push_malformed(&self, chat: &FakeChat) {
        let key = &chat.platform_id;
        self.shared.enqueue(Delivery::new(
            key,
            b"{\"object\": \"whatsapp_business_account\", \"entry\": [".to_vec(),
        ));
        self.shared.enqueue(Delivery::new(
            key,
            json!({"object": "whatsapp_business_account", "entry": "oops"})
                .to_string()
                .into_bytes(),
        ));
        let broken =
            delivery(json!({"messages": [{"type": "text", "text": {"body": chat.user_id}}]}));
        self.shared
            .enqueue(Delivery::new(key, broken.to_string().into_bytes()));
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        self.shared
            .lock()
            .sent
            .iter()
            .filter(|r| r.message.chat == chat.platform_id)
            .map(|r| r.message.clone())
            .collect()
    }

    /// The next delivery is cut off mid-body, then posted again.
    async fn drop_connections(&self) {
        self.shared.lock().cut_next = true;
    }

    fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// `Retry-After` is whole seconds: rounded up, at least 1.
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

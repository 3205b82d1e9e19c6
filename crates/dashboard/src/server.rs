//! The dashboard's HTTP side: the page, its assets, the JSON API and the web chat's streams,
//! behind the checks of [`crate::auth`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nanoclaw_channel::{
    HealthCell, HttpLimits, InboundEvent, InboundSink, RouteOutcome, hand_over, serve_http,
    serve_with_rebind,
};
use nanoclaw_store::Store;
use serde::Deserialize;

use crate::auth;
use crate::web_chat::Subscribers;
use crate::{Backend, BackendError, DashboardConfig, NAME, TaskChange};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const SIGNED_OUT_HTML: &str = include_str!("../assets/signed-out.html");

/// The longest message the web chat takes (bytes).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Requests larger than this are refused before they are read.
const MAX_BODY_BYTES: usize = 128 * 1024;
/// Messages of a chat shown when it is opened.
const TRANSCRIPT_LINES: usize = 200;
/// Audit rows per page.
const AUDIT_PAGE: usize = 200;

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub config: DashboardConfig,
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub chats: Arc<Subscribers>,
    pub sink: InboundSink,
    /// Where the address bound is kept for the channel's health.
    pub bound: Arc<std::sync::Mutex<Option<SocketAddr>>>,
}

/// One listener's state: the shared parts and the address it answers to.
#[derive(Clone)]
struct Served {
    shared: Shared,
    addr: SocketAddr,
    hosts: Arc<Vec<String>>,
}

/// A signed-in request's session.
#[derive(Clone)]
struct Session {
    digest: String,
    csrf: String,
}

/// Serves the dashboard until aborted, binding again when the listener fails.
pub(crate) async fn run(
    shared: Shared,
    first: Option<tokio::net::TcpListener>,
    health: Arc<HealthCell>,
) {
    let listen = shared.config.listen.clone();
    serve_with_rebind(&listen, first, &health, "dashboard", |listener| {
        let shared = shared.clone();
        async move {
            let addr = listener.local_addr()?;
            write_addr(&shared.config.addr_file, addr);
            if let Ok(mut bound) = shared.bound.lock() {
                *bound = Some(addr);
            }
            tracing::info!(url = %format!("http://{addr}/"), "dashboard: serving; `nanoclaw dashboard` prints a sign-in link");
            serve_http(listener, router(shared, addr), HttpLimits::default()).await
        }
    })
    .await;
}

fn write_addr(file: &std::path::Path, addr: SocketAddr) {
    if let Err(error) = std::fs::write(file, addr.to_string()) {
        tracing::warn!(%error, file = %file.display(), "dashboard: cannot record its address; `nanoclaw dashboard` will not find it");
    }
}

/// The routes for a listener bound at `addr` (tests serve them on their own listener).
pub(crate) fn router(shared: Shared, addr: SocketAddr) -> Router {
    let served = Served {
        shared,
        addr,
        hosts: Arc::new(auth::allowed_hosts(addr)),
    };
    let signed_in = Router::new()
        .route("/", get(index))
        .route("/api/session", get(session))
        .route("/api/logout", post(logout))
        .route("/api/overview", get(overview))
        .route("/api/groups", get(groups))
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{id}", post(change_task))
        .route("/api/tasks/{id}/runs", get(task_runs))
        .route("/api/vault", get(vault))
        .route("/api/vault/approvals/{grant}", post(decide))
        .route("/api/audit", get(audit))
        .route("/api/audit/verify", get(verify_audit))
        .route("/api/skills/{group}", get(skills))
        .route("/api/skills/{group}/graph.svg", get(skill_graph))
        .route("/api/chat/{group}", post(send_message))
        .route("/api/chat/{group}/history", get(history))
        .route("/api/chat/{group}/events", get(events))
        .route_layer(axum::middleware::from_fn_with_state(
            served.clone(),
            require_session,
        ));
    Router::new()
        .route("/login", get(login))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .merge(signed_in)
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(served.clone(), guard))
        .with_state(served)
}

/// On every request: the `Host` must be the dashboard's own, and every answer carries headers
/// that keep it out of frames, other origins' scripts and caches.
async fn guard(State(s): State<Served>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let mut response = if s.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        next.run(request).await
    } else {
        tracing::warn!(%host, "dashboard: refused a request for another Host (DNS rebinding?)");
        api_error(
            StatusCode::MISDIRECTED_REQUEST,
            &format!("this dashboard answers only to {}", s.hosts.join(" or ")),
        )
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Signed-in routes: a live session; for anything but GET, also its CSRF token in
/// [`auth::CSRF_HEADER`], the dashboard's own `Origin` (when the browser sends one) and a
/// JSON body (which no cross-site form can send).
async fn require_session(State(s): State<Served>, mut request: Request, next: Next) -> Response {
    let name = auth::cookie_name(s.addr);
    let token = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(|h| auth::cookie_value(h, &name).map(str::to_owned));
    let now = nanoclaw_store::now_ms();
    let session = match token {
        Some(token) => {
            let digest = auth::digest(&token);
            match s.shared.store.dashboard_session(digest.clone(), now).await {
                Ok(Some(csrf)) => Some(Session { digest, csrf }),
                Ok(None) => None,
                Err(e) => return backend_error(BackendError::Failed(e.to_string())),
            }
        }
        None => None,
    };
    let Some(session) = session else {
        if request.uri().path() == "/" {
            return (StatusCode::UNAUTHORIZED, html(SIGNED_OUT_HTML)).into_response();
        }
        return api_error(
            StatusCode::UNAUTHORIZED,
            "not signed in: open the link `nanoclaw dashboard` prints",
        );
    };
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    if changes && let Err(why) = check_change(&s, request.headers(), &session) {
        tracing::warn!(path = %request.uri().path(), %why, "dashboard: refused a change");
        return api_error(StatusCode::FORBIDDEN, why);
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

fn check_change(s: &Served, headers: &HeaderMap, session: &Session) -> Result<(), &'static str> {
    let csrf = headers
        .get(auth::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth::same_token(csrf, &session.csrf) {
        return Err("missing or wrong CSRF token: reload the dashboard");
    }
    // Every Origin the request carries must be ours (a browser sends one; a second one is
    // never a browser's).
    let foreign = headers
        .get_all(header::ORIGIN)
        .iter()
        .any(|origin| !auth::origin_allowed(origin.to_str().unwrap_or(""), &s.hosts));
    if foreign {
        return Err("the request came from another site");
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err("changes are sent as application/json");
    }
    Ok(())
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn backend_error(e: BackendError) -> Response {
    let status = match &e {
        BackendError::NotFound(_) => StatusCode::NOT_FOUND,
        BackendError::Invalid(_) => StatusCode::BAD_REQUEST,
        BackendError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(error = %e, "dashboard: the host could not answer");
    }
    api_error(status, &e.to_string())
}

fn json(result: Result<serde_json::Value, BackendError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => backend_error(e),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// `/login?token=…`: spends the one-time token, opens a session and goes to the page (so the
/// token leaves the address bar at once).
async fn login(State(s): State<Served>, Query(q): Query<LoginQuery>) -> Response {
    let Some(token) = q.token.filter(|t| !t.is_empty() && t.len() <= 128) else {
        return (StatusCode::UNAUTHORIZED, html(SIGNED_OUT_HTML)).into_response();
    };
    let session = auth::new_token();
    let now = nanoclaw_store::now_ms();
    let redeemed = s
        .shared
        .store
        .dashboard_redeem_login(
            auth::digest(&token),
            auth::digest(&session),
            auth::new_token(),
            now,
            now + auth::SESSION_TTL_MS,
        )
        .await;
    match redeemed {
        Ok(true) => {
            tracing::info!("dashboard: signed in with a login link");
            let cookie = format!(
                "{}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                auth::cookie_name(s.addr),
                auth::SESSION_TTL_MS / 1000
            );
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Ok(false) => {
            tracing::warn!("dashboard: a login link that was used, expired or never made");
            (StatusCode::UNAUTHORIZED, html(SIGNED_OUT_HTML)).into_response()
        }
        Err(e) => backend_error(BackendError::Failed(e.to_string())),
    }
}

async fn index() -> Response {
    html(INDEX_HTML)
}

async fn session(
    State(s): State<Served>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    Json(serde_json::json!({
        "csrf": session.csrf,
        "assistant_name": s.shared.config.assistant_name,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn logout(
    State(s): State<Served>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    if let Err(e) = s.shared.store.dashboard_end_session(session.digest).await {
        return backend_error(BackendError::Failed(e.to_string()));
    }
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::cookie_name(s.addr)
    );
    let mut response = Json(serde_json::json!({ "signed_out": true })).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn overview(State(s): State<Served>) -> Response {
    json(s.shared.backend.overview().await)
}

async fn groups(State(s): State<Served>) -> Response {
    json(s.shared.backend.groups().await)
}

async fn tasks(State(s): State<Served>) -> Response {
    json(s.shared.backend.tasks().await)
}

async fn task_runs(State(s): State<Served>, Path(id): Path<String>) -> Response {
    json(s.shared.backend.task_runs(&id).await)
}

#[derive(Deserialize)]
struct ChangeTask {
    action: TaskChange,
}

async fn change_task(
    State(s): State<Served>,
    Path(id): Path<String>,
    Json(change): Json<ChangeTask>,
) -> Response {
    json(s.shared.backend.change_task(&id, change.action).await)
}

async fn vault(State(s): State<Served>) -> Response {
    json(s.shared.backend.vault().await)
}

#[derive(Deserialize)]
struct Decision {
    approve: bool,
}

async fn decide(
    State(s): State<Served>,
    Path(grant): Path<i64>,
    Json(decision): Json<Decision>,
) -> Response {
    json(
        s.shared
            .backend
            .decide_approval(grant, decision.approve)
            .await,
    )
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<i64>,
}

async fn audit(State(s): State<Served>, Query(q): Query<AuditQuery>) -> Response {
    json(s.shared.backend.audit(q.before, AUDIT_PAGE).await)
}

async fn verify_audit(State(s): State<Served>) -> Response {
    json(s.shared.backend.verify_audit().await)
}

async fn skills(State(s): State<Served>, Path(group): Path<String>) -> Response {
    json(s.shared.backend.skills(&group).await)
}

async fn skill_graph(State(s): State<Served>, Path(group): Path<String>) -> Response {
    match s.shared.backend.skill_graph_svg(&group).await {
        Ok(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                // Shown through <img>, where SVG runs no script; this keeps it so if opened.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            svg,
        )
            .into_response(),
        Err(e) => backend_error(e),
    }
}

async fn history(State(s): State<Served>, Path(group): Path<String>) -> Response {
    json(s.shared.backend.transcript(&group, TRANSCRIPT_LINES).await)
}

#[derive(Deserialize)]
struct NewMessage {
    /// The browser's id for this message, so a send tried twice is stored once.
    id: String,
    text: String,
}

/// A message from the web chat: to the router like any channel's, answered with what became
/// of it.
async fn send_message(
    State(s): State<Served>,
    Path(group): Path<String>,
    Json(message): Json<NewMessage>,
) -> Response {
    let id_ok = !message.id.is_empty()
        && message.id.len() <= 64
        && message
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok {
        return api_error(
            StatusCode::BAD_REQUEST,
            "the message id must be 1 to 64 letters, digits, '-' or '_'",
        );
    }
    if message.text.trim().is_empty() {
        return api_error(StatusCode::BAD_REQUEST, "the message is empty");
    }
    if message.text.len() > MAX_MESSAGE_BYTES {
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a message may be at most {MAX_MESSAGE_BYTES} bytes"),
        );
    }
    let chat_id = match s.shared.backend.open_chat(&group).await {
        Ok(chat_id) => chat_id,
        Err(e) => return backend_error(e),
    };
    let event = InboundEvent {
        channel: NAME.into(),
        chat_name: format!("dashboard: {group}"),
        chat_id,
        platform_msg_id: format!("web-{}", message.id),
        sender: "owner".into(),
        sender_name: Some("you".into()),
        text: message.text,
        received_at: nanoclaw_store::now_ms(),
        mentions_me: true,
        ..InboundEvent::default()
    };
    let outcome = match hand_over(&s.shared.sink, event).await {
        Some(RouteOutcome::Accepted) => ("accepted", None),
        Some(RouteOutcome::Duplicate) => ("duplicate", None),
        Some(RouteOutcome::Ignored(why)) => ("ignored", Some(why)),
        Some(RouteOutcome::Held(why)) => ("held", Some(why)),
        Some(RouteOutcome::Failed(why)) => {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not stored: {why}"),
            );
        }
        None => return api_error(StatusCode::SERVICE_UNAVAILABLE, "the host is stopping"),
    };
    Json(serde_json::json!({ "outcome": outcome.0, "detail": outcome.1 })).into_response()
}

/// The chat's live stream: replies and progress as Server-Sent Events. Opening it tells the
/// host someone is there, so replies queued meanwhile are delivered now.
async fn events(State(s): State<Served>, Path(group): Path<String>) -> Response {
    let chat_id = match s.shared.backend.open_chat(&group).await {
        Ok(chat_id) => chat_id,
        Err(e) => return backend_error(e),
    };
    let rx = s.shared.chats.subscribe(&chat_id);
    let _ = s
        .shared
        .sink
        .send(nanoclaw_channel::ChannelEvent::Reachable {
            channel: NAME.into(),
            chat_id,
        })
        .await;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let data = serde_json::to_string(&event).unwrap_or_default();
        Some((Ok::<_, Infallible>(Event::default().data(data)), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

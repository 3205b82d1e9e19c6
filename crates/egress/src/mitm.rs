//! TLS interception for hosts where the group has a credential grant, and the leak guard on
//! the requests the proxy can read.
//!
//! After the policy's checks, a CONNECT to such a host is answered `200` by the proxy, which
//! then speaks TLS to the client with a leaf from the local CA and serves HTTP/1.1
//! (keep-alive) on it. Each request: the leak guard looks at its URL, headers and body;
//! placeholders bound to this host are swapped for the real values; the grant's credential
//! is set (replacing what the client sent); then it goes over real TLS — system roots, SNI =
//! the CONNECT host — to the CHECKED address, on one upstream connection kept per client
//! connection. Whatever the inner requests' `Host` says, they go to the CONNECT host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use nanoclaw_vault::{ExposeSecret, Injection};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::sync::{Mutex, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::ca::LocalCa;
use crate::proxy::{
    CONNECT_TIMEOUT, ConnSlot, Counted, Finisher, Inner, Interception, Pending, ProxyBody, Target,
    connect_any, refuse_with, strip_hop_by_hop,
};
use crate::{Approval, ApprovalRequest, EgressError, SecretsError};

/// Request bodies the leak guard buffers to scan; a larger one is refused (413).
pub const MAX_SCANNED_BODY: usize = 32 * 1024 * 1024;
/// What every placeholder starts with (the vault's `Vault::placeholder`; a test keeps the two
/// in step).
pub const PLACEHOLDER_PREFIX: &str = nanoclaw_protocol::contract::PLACEHOLDER_PREFIX;

/// The interception state shared by every sandbox's socket.
pub(crate) struct Mitm {
    pub(crate) ca: Arc<LocalCa>,
    connector: TlsConnector,
}

impl Mitm {
    pub(super) fn new(i: Interception) -> Result<Mitm, EgressError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "egress: a system root certificate could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::warn!(
                ignored,
                "egress: some system root certificates were not usable"
            );
        }
        for cert in i.extra_upstream_roots {
            roots.add(cert).map_err(EgressError::UpstreamRoot)?;
        }
        if roots.is_empty() {
            tracing::warn!("egress: no root certificates; intercepted HTTPS cannot reach anything");
        }
        tracing::debug!(system_roots = added, "egress upstream TLS roots loaded");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(EgressError::UpstreamTlsVersions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Mitm {
            ca: i.ca,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// One intercepted client connection: where its requests go and the upstream connection.
struct Conn {
    inner: Arc<Inner>,
    mitm: Arc<Mitm>,
    group: Arc<str>,
    /// The CONNECT host as policies and grants match it.
    host: String,
    port: u16,
    /// The upstream `Host` header.
    authority: String,
    server_name: ServerName<'static>,
    addrs: Vec<SocketAddr>,
    reason: String,
    /// The methods allowed on this host when only enabled skills allow it.
    methods: Option<Vec<http::Method>>,
    upstream: Mutex<Option<SendRequest<ProxyBody>>>,
}

/// Answers the CONNECT and serves the intercepted connection on its upgrade.
#[allow(clippy::too_many_arguments)]
pub(super) fn intercept(
    inner: Arc<Inner>,
    mitm: Arc<Mitm>,
    group: Arc<str>,
    req: Request<Incoming>,
    pending: Pending,
    target: Target,
    addrs: Vec<SocketAddr>,
    reason: String,
    mut shutdown: watch::Receiver<()>,
    slot: Option<ConnSlot>,
    methods: Option<Vec<http::Method>>,
) -> Response<ProxyBody> {
    let host = target.host.as_match_str();
    let fail = |inner: &Inner, pending, why: String| {
        refuse_with(
            inner,
            pending,
            StatusCode::BAD_GATEWAY,
            "intercept",
            &format!("nanoclaw egress: cannot intercept TLS for {host}: {why}"),
        )
    };
    let server_config = match mitm.ca.server_config(&host) {
        Ok(c) => c,
        Err(e) => return fail(&inner, pending, e.to_string()),
    };
    let server_name = match ServerName::try_from(host.clone()) {
        Ok(n) => n,
        Err(e) => return fail(&inner, pending, e.to_string()),
    };
    let authority = if target.port == 443 {
        target
            .authority
            .split(':')
            .next()
            .unwrap_or(&host)
            .to_owned()
    } else {
        target.authority.clone()
    };
    let authority = match &target.host {
        crate::TargetHost::Ip(std::net::IpAddr::V6(_)) => target.authority.clone(),
        _ => authority,
    };
    pending.disarm();
    let conn = Arc::new(Conn {
        inner,
        mitm,
        group,
        host,
        port: target.port,
        authority,
        server_name,
        addrs,
        reason,
        methods,
        upstream: Mutex::new(None),
    });
    tokio::spawn(async move {
        // The connection's slot of the open-connection limits lives as long as this does.
        let _slot = slot;
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "intercept: the client never took the upgrade");
                return;
            }
        };
        let tls = match TlsAcceptor::from(server_config)
            .accept(TokioIo::new(upgraded))
            .await
        {
            Ok(t) => t,
            Err(e) => {
                // Most often the client does not trust the local CA (no bundle configured).
                tracing::warn!(group = %conn.group, host = %conn.host, error = %e, "intercept: TLS handshake with the client failed");
                return;
            }
        };
        let c = Arc::clone(&conn);
        let service = hyper::service::service_fn(move |req| {
            let c = Arc::clone(&c);
            async move { Ok::<_, std::convert::Infallible>(handle(c, req).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(conn.inner.header_timeout)
            .serve_connection(TokioIo::new(tls), service);
        tokio::select! {
            res = served => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "intercepted connection ended with an error");
                }
            }
            _ = shutdown.changed() => {}
        }
    });
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::OK;
    resp
}

async fn handle(c: Arc<Conn>, req: Request<Incoming>) -> Response<ProxyBody> {
    let inner = &c.inner;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let mut pending = Pending::new(&inner.audit, &c.group, parts.method.as_str());
    pending.host = c.host.clone();
    pending.port = c.port;
    pending.path = Some(path.clone());
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Some(allowed) = &c.methods
        && !allowed.contains(&parts.method)
    {
        let list = allowed
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return refuse_with(
            inner,
            pending,
            StatusCode::FORBIDDEN,
            "method",
            &format!(
                "nanoclaw egress: {} is allowed for group {} only by a skill that declares {list}; \
                 {} was refused (change the skill's skill.toml egress methods)",
                c.host, c.group, parts.method
            ),
        );
    }
    if let Some(why) = ambiguous_path(target) {
        return refuse_with(
            inner,
            pending,
            StatusCode::BAD_REQUEST,
            "bad_path",
            &format!(
                "nanoclaw egress: the request path {target:?} has {why}, which could escape a \
                 path-scoped grant; send the normalized path"
            ),
        );
    }
    let injection = match inner.secrets.injection(&c.group, &c.host, &path).await {
        Ok(i) => i,
        Err(e) => {
            return refuse_with(
                inner,
                pending,
                StatusCode::BAD_GATEWAY,
                "vault",
                &format!("nanoclaw egress: {e}"),
            );
        }
    };
    if let Some(i) = &injection
        && i.needs_approval
    {
        pending = match check_approval(&c, i, pending).await {
            Ok(p) => p,
            Err(refused) => return refused,
        };
    }
    let mut headers = parts.headers;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let url = format!("https://{}{path_and_query}", c.authority);
    let up_count = Arc::new(AtomicU64::new(0));
    let body = match scan_request(inner, &c.group, &c.host, &url, &headers, body).await {
        Ok(Scanned::Stream(b)) => Counted::new(b, Arc::clone(&up_count), None).boxed_any(),
        Ok(Scanned::Buffered(b)) => {
            up_count.store(b.len() as u64, Ordering::Relaxed);
            Full::new(b).map_err(|never| match never {}).boxed()
        }
        Err(blocked) => return blocked.refuse(inner, pending),
    };
    strip_hop_by_hop(&mut headers);
    let swapped = match swap_placeholders(&c, &mut headers, &path).await {
        Ok(s) => s,
        Err(e) => {
            return refuse_with(
                inner,
                pending,
                StatusCode::BAD_GATEWAY,
                "vault",
                &format!("nanoclaw egress: {e}"),
            );
        }
    };
    let used: Vec<&str> = injection
        .iter()
        .map(|i| i.secret_name.as_str())
        .chain(swapped.iter().map(String::as_str))
        .collect();
    pending = match check_rate(&c, &used, pending).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let path_and_query = match &injection {
        Some(i) => apply(i, &mut headers, &path_and_query),
        None => path_and_query,
    };
    pending.secret = injection.as_ref().map(|i| i.secret_name.clone());
    drop(injection);
    dispatch(
        &c,
        pending,
        parts.method,
        headers,
        &path_and_query,
        body,
        up_count,
    )
    .await
}

/// Sends the checked, injected request upstream and streams the answer back, counting bytes
/// both ways for the audit entry written when the answer ends.
async fn dispatch(
    c: &Conn,
    mut pending: Pending,
    method: http::Method,
    mut headers: http::HeaderMap,
    path_and_query: &str,
    body: ProxyBody,
    up_count: Arc<AtomicU64>,
) -> Response<ProxyBody> {
    let inner = &c.inner;
    match HeaderValue::from_str(&c.authority) {
        Ok(v) => {
            headers.insert(header::HOST, v);
        }
        Err(_) => {
            return refuse_with(
                inner,
                pending,
                StatusCode::BAD_REQUEST,
                "bad_request",
                "nanoclaw egress: the request's host is not a valid header value",
            );
        }
    }
    let uri = match path_and_query.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => {
            return refuse_with(
                inner,
                pending,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("nanoclaw egress: bad request target: {e}"),
            );
        }
    };
    let mut upstream_req = Request::new(body);
    *upstream_req.method_mut() = method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;
    pending.dispatched = true;
    match send(c, upstream_req).await {
        Ok(resp) => {
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            let finisher = Finisher {
                audit: Arc::clone(&inner.audit),
                pending: Some(pending),
                status: rparts.status.as_u16(),
                reason: c.reason.clone(),
                up: up_count,
                down: Arc::new(AtomicU64::new(0)),
            };
            let down = Arc::clone(&finisher.down);
            Response::from_parts(
                rparts,
                Counted::new(rbody, down, Some(finisher)).boxed_any(),
            )
        }
        Err(e) => refuse_with(
            inner,
            pending,
            StatusCode::BAD_GATEWAY,
            "unreachable",
            &format!("nanoclaw egress: cannot reach {}:{} ({e})", c.host, c.port),
        ),
    }
}

/// A grant that needs the owner's approval: `Ok` once approved. Its first use records a
/// pending approval and has the owner asked (once); until decided, and when denied, 403.
async fn check_approval(
    c: &Conn,
    i: &Injection,
    mut pending: Pending,
) -> Result<Pending, Response<ProxyBody>> {
    let inner = &c.inner;
    let approval = inner.secrets.approval(i.grant_id, &c.group, &c.host).await;
    pending.secret = Some(i.secret_name.clone());
    let message = match approval {
        Ok(Approval::Approved) => {
            pending.secret = None;
            return Ok(pending);
        }
        Ok(Approval::Pending { newly_requested }) => {
            if newly_requested {
                inner
                    .notifier
                    .approval_requested(ApprovalRequest {
                        grant_id: i.grant_id,
                        group: c.group.to_string(),
                        secret: i.secret_name.clone(),
                        host: c.host.clone(),
                    })
                    .await;
            }
            format!(
                "nanoclaw egress: the use of secret {} on {} (grant #{}) waits for the owner's \
                 approval in the main chat; the owner has been asked. Tell the user, and try \
                 again once it is approved",
                i.secret_name, c.host, i.grant_id
            )
        }
        Ok(Approval::Denied) => format!(
            "nanoclaw egress: the owner denied the use of secret {} on {} (grant #{})",
            i.secret_name, c.host, i.grant_id
        ),
        Err(e) => {
            return Err(refuse_with(
                inner,
                pending,
                StatusCode::BAD_GATEWAY,
                "vault",
                &format!("nanoclaw egress: {e}"),
            ));
        }
    };
    Err(refuse_with(
        inner,
        pending,
        StatusCode::FORBIDDEN,
        "approval",
        &message,
    ))
}

/// Counts this request against the rate limit of every secret it uses; over one, 429 with
/// `retry-after`.
async fn check_rate(
    c: &Conn,
    used: &[&str],
    mut pending: Pending,
) -> Result<Pending, Response<ProxyBody>> {
    let inner = &c.inner;
    let mut limits: Vec<(String, u32)> = Vec::with_capacity(used.len());
    for name in used {
        if limits.iter().any(|(n, _)| n == name) {
            continue;
        }
        match inner.secrets.rate_limit(name).await {
            Ok(limit) => limits.push(((*name).to_owned(), limit)),
            Err(e) => {
                return Err(refuse_with(
                    inner,
                    pending,
                    StatusCode::BAD_GATEWAY,
                    "vault",
                    &format!("nanoclaw egress: {e}"),
                ));
            }
        }
    }
    let Err(over) = inner
        .limiter
        .try_acquire(&limits, std::time::Instant::now())
    else {
        return Ok(pending);
    };
    let secs = over.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    pending.secret = Some(over.secret.clone());
    let mut resp = refuse_with(
        inner,
        pending,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit",
        &format!(
            "nanoclaw egress: secret {} is limited to {} request(s) per minute and that is used \
             up; retry in {secs} s",
            over.secret, over.per_minute
        ),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Err(resp)
}

/// Sets the grant's credential: the header (replacing any the client sent) or the query
/// parameter (replacing any of that name). Returns the new path and query.
fn apply(i: &Injection, headers: &mut HeaderMap, path_and_query: &str) -> String {
    if let Some((name, value)) = &i.header
        && let (Ok(name), Ok(mut value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.expose_secret()),
        )
    {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let Some((param, secret)) = &i.query else {
        return path_and_query.to_owned();
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(param.as_str()))
        .collect();
    let pair = format!("{param}={}", percent_encode(secret.expose_secret()));
    kept.push(&pair);
    format!("{path}?{}", kept.join("&"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Replaces each placeholder in a header value by its secret when the vault says it is bound
/// to this host for this group; any other placeholder stays as it is (harmless text).
/// Returns the names of the secrets swapped in (they count against rate limits).
async fn swap_placeholders(
    c: &Conn,
    headers: &mut HeaderMap,
    path: &str,
) -> Result<Vec<String>, SecretsError> {
    let mut used = Vec::new();
    if !headers
        .values()
        .any(|v| contains(v.as_bytes(), PLACEHOLDER_PREFIX.as_bytes()))
    {
        return Ok(used);
    }
    let entries: Vec<(header::HeaderName, HeaderValue)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut out = HeaderMap::with_capacity(entries.len());
    for (name, value) in entries {
        let Ok(text) = value.to_str() else {
            out.append(name, value);
            continue;
        };
        if !text.contains(PLACEHOLDER_PREFIX) {
            out.append(name, value);
            continue;
        }
        let mut swapped = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(at) = rest.find(PLACEHOLDER_PREFIX) {
            swapped.push_str(&rest[..at]);
            let token_len = rest[at..]
                .bytes()
                .position(|b| {
                    !(b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'-' | b'_' | b'.'))
                })
                .unwrap_or(rest.len() - at);
            let token = &rest[at..at + token_len];
            match c
                .inner
                .secrets
                .resolve_placeholder(&c.group, token, &c.host, path)
                .await?
            {
                Some(real) => {
                    swapped.push_str(real.expose_secret());
                    changed = true;
                    if let Some((name, _)) = token
                        .strip_prefix(PLACEHOLDER_PREFIX)
                        .and_then(|rest| rest.rsplit_once('-'))
                        && !used.iter().any(|u| u == name)
                    {
                        used.push(name.to_owned());
                    }
                }
                None => swapped.push_str(token),
            }
            rest = &rest[at + token_len..];
        }
        swapped.push_str(rest);
        match HeaderValue::from_str(&swapped) {
            Ok(mut v) if changed => {
                v.set_sensitive(true);
                out.append(name, v);
            }
            _ => {
                out.append(name, value);
            }
        }
    }
    *headers = out;
    Ok(used)
}

/// What makes a request target's path ambiguous to a prefix match (servers normalize paths
/// in different ways, so the proxy refuses rather than guess): `.`/`..` segments, raw or
/// percent-encoded; `;` path parameters (`/v1/..;/admin` is `/admin` to some servers), raw or
/// encoded; encoded `/` or `\\`, or `\\`; an encoded `%` (double encoding such as `%252e`);
/// control characters; escapes that are not valid UTF-8 (overlong forms such as `%c0%ae`).
fn ambiguous_path(target: &str) -> Option<&'static str> {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if path.contains('\\') {
        return Some("a backslash");
    }
    if path.contains(';') {
        return Some("a `;` path parameter");
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Some("an encoded slash or backslash");
    }
    if lower.contains("%3b") {
        return Some("an encoded `;`");
    }
    if lower.contains("%25") {
        return Some("an encoded `%` (double encoding)");
    }
    // No `%25`: one decoding is the whole of it.
    let decoded = percent_decode_path(path.as_bytes());
    if decoded.iter().any(|b| b.is_ascii_control()) {
        return Some("a control character");
    }
    let Ok(decoded) = std::str::from_utf8(&decoded) else {
        return Some("an escape that is not valid UTF-8");
    };
    let dotted = decoded.split('/').any(|seg| matches!(seg, "." | ".."));
    dotted.then_some("a dot segment")
}

/// `%xx` escapes of a path decoded (`+` is a plus in a path); a bad escape stays as it is.
fn percent_decode_path(s: &[u8]) -> Vec<u8> {
    percent_decode_with(s, false)
}

/// `%xx` escapes (and `+`, as in forms) decoded; a bad escape stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    percent_decode_with(s, true)
}

fn percent_decode_with(s: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (
            s[i],
            s.get(i + 1).copied().and_then(hex),
            s.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(((h << 4) | l) as u8);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Why an intercepted request could not reach its upstream (the client gets a 502 naming it).
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("no upstream connection")]
    NoConnection,
    #[error("{0}")]
    Http(hyper::Error),
    #[error("the TLS handshake timed out")]
    HandshakeTimeout,
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
}

/// Sends on the connection's upstream (made on first use, remade when closed). A request
/// without a body is retried once on a fresh connection if a kept one failed.
async fn send(c: &Conn, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
    let mut slot = c.upstream.lock().await;
    let reused = match slot.as_mut() {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !reused {
        *slot = Some(connect(c).await?);
    }
    let Some(sender) = slot.as_mut() else {
        return Err(UpstreamError::NoConnection);
    };
    let retry = if reused && req.body().is_end_stream() {
        let (parts, _) = req.into_parts();
        let clone = clone_head(&parts);
        let first = Request::from_parts(parts, empty());
        match sender.send_request(first).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::debug!(error = %e, "kept upstream connection failed; retrying on a new one");
                clone
            }
        }
    } else {
        return sender.send_request(req).await.map_err(UpstreamError::Http);
    };
    *slot = Some(connect(c).await?);
    let Some(sender) = slot.as_mut() else {
        return Err(UpstreamError::NoConnection);
    };
    sender
        .send_request(retry)
        .await
        .map_err(UpstreamError::Http)
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn clone_head(parts: &http::request::Parts) -> Request<ProxyBody> {
    let mut r = Request::new(empty());
    *r.method_mut() = parts.method.clone();
    *r.uri_mut() = parts.uri.clone();
    *r.headers_mut() = parts.headers.clone();
    r
}

async fn connect(c: &Conn) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let tcp = connect_any(&c.addrs)
        .await
        .map_err(UpstreamError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        c.mitm.connector.connect(c.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| UpstreamError::HandshakeTimeout)?
    .map_err(|source| UpstreamError::Tls {
        host: c.host.clone(),
        source,
    })?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A request body after the leak guard.
pub(super) enum Scanned {
    /// Nothing to look for: streamed untouched.
    Stream(Incoming),
    /// Read whole and found clean.
    Buffered(Bytes),
}

/// Why the leak guard stopped a request.
pub(super) struct Blocked {
    status: StatusCode,
    tag: &'static str,
    message: String,
}

impl Blocked {
    pub(super) fn refuse(self, inner: &Inner, pending: Pending) -> Response<ProxyBody> {
        refuse_with(inner, pending, self.status, self.tag, &self.message)
    }
}

/// The leak guard on a request to `host`: its URL, header values and body are scanned for
/// every live secret version; one that is not granted to `group` on `host` blocks it.
pub(super) async fn scan_request(
    inner: &Inner,
    group: &str,
    host: &str,
    url: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Scanned, Blocked> {
    let vault_err = |e: SecretsError| Blocked {
        status: StatusCode::BAD_GATEWAY,
        tag: "vault",
        message: format!("nanoclaw egress: {e}"),
    };
    let Some(guard) = inner.secrets.leak_guard().await.map_err(vault_err)? else {
        return Ok(Scanned::Stream(body));
    };
    // A compressed body cannot be scanned (no decoder here): only hosts the group holds a
    // grant for may receive one.
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"));
    if encoded
        && !body.is_end_stream()
        && !inner
            .secrets
            .injects_for(group, host)
            .await
            .map_err(vault_err)?
    {
        return Err(Blocked {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tag: "leak_guard",
            message: format!(
                "nanoclaw egress: request bodies to {host} are scanned for secrets and a \
                 Content-Encoding other than identity cannot be; send it uncompressed"
            ),
        });
    }
    let bytes = if body.is_end_stream() {
        Bytes::new()
    } else {
        let read = Limited::new(body, MAX_SCANNED_BODY).collect();
        let Ok(read) = tokio::time::timeout(inner.body_timeout, read).await else {
            return Err(Blocked {
                status: StatusCode::REQUEST_TIMEOUT,
                tag: "body_timeout",
                message: format!(
                    "nanoclaw egress: the request body to {host} did not arrive within {} s",
                    inner.body_timeout.as_secs()
                ),
            });
        };
        match read {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Blocked {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    tag: "leak_guard",
                    message: format!(
                        "nanoclaw egress: request bodies to {host} are scanned for secrets and this one is over {} MiB",
                        MAX_SCANNED_BODY / (1024 * 1024)
                    ),
                });
            }
            Err(e) => {
                return Err(Blocked {
                    status: StatusCode::BAD_REQUEST,
                    tag: "bad_request",
                    message: format!("nanoclaw egress: reading the request body failed: {e}"),
                });
            }
        }
    };
    // The URL is scanned as sent and percent-decoded (a secret split by `%xx` escapes).
    let decoded = percent_decode(url.as_bytes());
    let mut found: Vec<usize> = guard
        .scan(url.as_bytes())
        .into_iter()
        .chain(guard.scan(&decoded))
        .chain(
            headers
                .keys()
                .flat_map(|k| guard.scan(k.as_str().as_bytes())),
        )
        .chain(headers.values().flat_map(|v| guard.scan(v.as_bytes())))
        .chain(guard.scan(&bytes))
        .map(|m| m.secret_index)
        .collect();
    found.sort_unstable();
    found.dedup();
    for idx in found {
        let name = guard.secret_name(idx);
        let bound = inner
            .secrets
            .bound_to(group, name, host)
            .await
            .map_err(vault_err)?;
        if !bound {
            tracing::warn!(
                group,
                host,
                secret = name,
                "egress: blocked a request carrying a secret"
            );
            return Err(Blocked {
                status: StatusCode::FORBIDDEN,
                tag: "leak_guard",
                message: format!(
                    "nanoclaw egress: blocked: the request carries the secret {name}, which is not granted for {host}"
                ),
            });
        }
    }
    Ok(Scanned::Buffered(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_vault::SecretString;

    #[test]
    fn a_query_credential_replaces_the_clients_and_is_percent_encoded() {
        let i = Injection {
            secret_name: "k".into(),
            version: 1,
            grant_id: 1,
            header: None,
            query: Some(("key".into(), SecretString::from("a b&c"))),
            needs_approval: false,
        };
        let mut h = HeaderMap::new();
        assert_eq!(
            apply(&i, &mut h, "/v1/x?key=fake&q=1"),
            "/v1/x?q=1&key=a%20b%26c"
        );
        assert_eq!(apply(&i, &mut h, "/v1/x"), "/v1/x?key=a%20b%26c");
    }

    #[test]
    fn percent_escapes_are_decoded_for_the_leak_guard() {
        assert_eq!(percent_decode(b"/x?k=sk%2Dab+c%zz%4"), b"/x?k=sk-ab c%zz%4");
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_ambiguous() {
        for bad in [
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E./admin",
            "/v1/./x",
            "/v1/..",
            "/v1%2fadmin",
            "/v1%5Cadmin",
            "/v1\\admin",
            "/v1/..;/admin",
            "/v1;x=1/admin",
            "/v1/%2e%2e%3b/admin",
            "/v1/%252e%252e/admin",
            "/v1/%252fadmin",
            "/v1/%c0%ae%c0%ae/admin",
            "/v1/%00/admin",
            "/v1/.%2E/admin",
        ] {
            assert!(ambiguous_path(bad).is_some(), "{bad}");
        }
        for good in [
            "/v1/x",
            "/v1/x.y",
            "/v1/..x",
            "/",
            "/v1?a=../b;c",
            "/v1/caf%C3%A9",
            "/v1/a%20b",
        ] {
            assert_eq!(ambiguous_path(good), None, "{good}");
        }
    }

    #[test]
    fn a_header_credential_replaces_the_clients() {
        let i = Injection {
            secret_name: "k".into(),
            version: 1,
            grant_id: 1,
            header: Some(("x-api-key".into(), SecretString::from("real"))),
            query: None,
            needs_approval: false,
        };
        let mut h = HeaderMap::new();
        h.append("x-api-key", HeaderValue::from_static("fake1"));
        h.append("x-api-key", HeaderValue::from_static("fake2"));
        apply(&i, &mut h, "/");
        let all: Vec<_> = h.get_all("x-api-key").iter().collect();
        assert_eq!(all, [HeaderValue::from_static("real")]);
    }
}

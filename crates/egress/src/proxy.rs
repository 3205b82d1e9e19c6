//! The per-sandbox HTTP/1.1 proxy on a Unix socket: forwards absolute-form `http://`
//! requests and tunnels `CONNECT`, after the policy's checks, to exactly the checked address.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::ca::LocalCa;
use crate::mitm::{Mitm, Scanned, scan_request};
use crate::policy::{EgressPolicy, Refusal, RefusalRule, TargetHost};
use crate::rate::RateLimiter;
use crate::resolve::{Resolve, SystemResolver};
use crate::source::PolicySource;
use crate::{
    ApprovalNotifier, EgressAudit, EgressDecision, EgressError, EgressRecord, EgressSecrets,
    LogNotifier, NoSecrets, TracingAudit,
};
use rustls_pki_types::CertificateDer;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Connecting to an upstream gives up after this.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send a request's headers within this (after the connection opens or the
/// previous answer, so it is also how long an idle keep-alive connection is kept).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body the leak guard reads whole must arrive within this once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Open connections (tunnels and intercepted connections included) per sandbox; more are
/// refused with a 503 (a runaway tool, not a use case).
pub const MAX_CONNECTIONS_PER_SANDBOX: usize = 256;
/// Open connections across every sandbox's socket, so many sandboxes cannot exhaust the
/// host's file descriptors together.
pub const MAX_CONNECTIONS_TOTAL: usize = 2048;

/// The header on every answer the proxy itself makes.
pub const EGRESS_HEADER: &str = "x-nanoclaw-egress";

/// Shared by every sandbox's socket: the policy source, resolver, audit and the upstream
/// connection pool (keyed by the checked IP and port).
#[derive(Clone)]
pub struct EgressProxy {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    policies: Arc<dyn PolicySource>,
    resolver: Arc<dyn Resolve>,
    pub(super) audit: Arc<dyn EgressAudit>,
    pub(super) secrets: Arc<dyn EgressSecrets>,
    client: Client<HttpConnector, ProxyBody>,
    /// TLS interception for hosts with a credential grant; `None`: every CONNECT is tunnelled.
    pub(super) mitm: Option<Arc<Mitm>>,
    /// Asks the owner to approve a grant's first use.
    pub(super) notifier: Arc<dyn ApprovalNotifier>,
    /// Injections per secret in the last minute.
    pub(super) limiter: RateLimiter,
    /// Open connections across all sockets.
    total_slots: Arc<Semaphore>,
    total_limit: usize,
    /// Open connections per socket (each socket makes its semaphore with this many).
    per_sandbox: usize,
    /// CONNECT ports whose tunnels must start with a TLS ClientHello naming the CONNECT host.
    tls_ports: Vec<u16>,
    /// How long a client may take to send a request's headers (idle keep-alive included).
    pub(super) header_timeout: Duration,
    /// How long a client may take to send a body the leak guard reads whole.
    pub(super) body_timeout: Duration,
    /// Refused connections being answered; beyond [`MAX_REFUSALS_IN_PROGRESS`] a refused
    /// connection is closed without an answer, so refusals cannot pile up descriptors.
    refusals: Arc<Semaphore>,
}

/// Connections refused over the limits that are answered at once, across sandboxes.
const MAX_REFUSALS_IN_PROGRESS: usize = 256;

/// What an open client connection holds: one slot of its sandbox's and of the global limit.
/// It moves into a tunnel or intercepted connection, which outlive hyper's connection.
pub(super) struct ConnSlot {
    _sandbox: tokio::sync::OwnedSemaphorePermit,
    _total: tokio::sync::OwnedSemaphorePermit,
}

/// The slot of the connection a request came on (taken by a CONNECT that upgrades).
pub(super) type SharedSlot = Arc<std::sync::Mutex<Option<ConnSlot>>>;

/// How the proxy intercepts TLS: the local CA it presents leaves from, and extra roots the
/// upstream client trusts besides the system's (tests' own upstream CA; never from the
/// environment).
pub struct Interception {
    pub ca: Arc<LocalCa>,
    pub extra_upstream_roots: Vec<CertificateDer<'static>>,
}

/// A serving socket; dropping it stops the listener, ends its connections and open tunnels,
/// and removes the socket file.
pub struct EgressHandle {
    task: JoinHandle<()>,
    socket_path: PathBuf,
    _shutdown: watch::Sender<()>,
}

impl EgressHandle {
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
}

impl Drop for EgressHandle {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

impl EgressProxy {
    /// A proxy with the system resolver, the tracing audit and no secrets.
    pub fn new(policies: Arc<dyn PolicySource>) -> EgressProxy {
        Self::build(
            policies,
            Arc::new(SystemResolver),
            Arc::new(TracingAudit),
            Arc::new(NoSecrets),
        )
    }

    /// Everything explicit (tests inject a resolver; the vault provides audit and secrets).
    /// No TLS interception: see [`EgressProxy::build_intercepting`].
    pub fn build(
        policies: Arc<dyn PolicySource>,
        resolver: Arc<dyn Resolve>,
        audit: Arc<dyn EgressAudit>,
        secrets: Arc<dyn EgressSecrets>,
    ) -> EgressProxy {
        Self::build_inner(policies, resolver, audit, secrets, None)
    }

    /// As [`EgressProxy::build`], and CONNECT to a host where the group has a credential
    /// grant is intercepted with `interception`'s CA so the credential can be injected.
    pub fn build_intercepting(
        policies: Arc<dyn PolicySource>,
        resolver: Arc<dyn Resolve>,
        audit: Arc<dyn EgressAudit>,
        secrets: Arc<dyn EgressSecrets>,
        interception: Interception,
    ) -> Result<EgressProxy, EgressError> {
        let mitm = Mitm::new(interception)?;
        Ok(Self::build_inner(
            policies,
            resolver,
            audit,
            secrets,
            Some(Arc::new(mitm)),
        ))
    }

    /// The same proxy, telling `notifier` when a grant waits for the owner's approval (the
    /// default only logs it). Call before serving: sockets already served keep the old one.
    pub fn with_approval_notifier(self, notifier: Arc<dyn ApprovalNotifier>) -> EgressProxy {
        self.rebuilt(|i| i.notifier = notifier)
    }

    /// The same proxy with other open-connection limits (defaults
    /// [`MAX_CONNECTIONS_PER_SANDBOX`], [`MAX_CONNECTIONS_TOTAL`]). Call before serving.
    pub fn with_connection_limits(self, per_sandbox: usize, total: usize) -> EgressProxy {
        self.rebuilt(|i| {
            i.per_sandbox = per_sandbox;
            i.total_limit = total;
            i.total_slots = Arc::new(Semaphore::new(total));
        })
    }

    /// The same proxy with other client timeouts (defaults [`HEADER_READ_TIMEOUT`],
    /// [`BODY_READ_TIMEOUT`]). Call before serving.
    pub fn with_timeouts(self, header: Duration, body: Duration) -> EgressProxy {
        self.rebuilt(|i| {
            i.header_timeout = header;
            i.body_timeout = body;
        })
    }

    /// The same proxy checking the TLS ClientHello of tunnels to these ports (default: 443).
    /// Call before serving.
    pub fn with_tls_ports(self, ports: &[u16]) -> EgressProxy {
        self.rebuilt(|i| i.tls_ports = ports.to_vec())
    }

    fn rebuilt(self, change: impl FnOnce(&mut Inner)) -> EgressProxy {
        let i = &self.inner;
        let mut next = Inner {
            policies: Arc::clone(&i.policies),
            resolver: Arc::clone(&i.resolver),
            audit: Arc::clone(&i.audit),
            secrets: Arc::clone(&i.secrets),
            client: i.client.clone(),
            mitm: i.mitm.clone(),
            notifier: Arc::clone(&i.notifier),
            limiter: RateLimiter::default(),
            total_slots: Arc::clone(&i.total_slots),
            total_limit: i.total_limit,
            per_sandbox: i.per_sandbox,
            tls_ports: i.tls_ports.clone(),
            header_timeout: i.header_timeout,
            body_timeout: i.body_timeout,
            refusals: Arc::clone(&i.refusals),
        };
        change(&mut next);
        EgressProxy {
            inner: Arc::new(next),
        }
    }

    /// The local CA, when the proxy intercepts TLS (its certificate goes into sandboxes).
    pub fn ca(&self) -> Option<&Arc<LocalCa>> {
        self.inner.mitm.as_ref().map(|m| &m.ca)
    }

    /// `NANOCLAW_SECRET_<NAME>` placeholders for a sandbox of `group`. A vault that cannot be
    /// read gives none (logged): tools then simply lack the variables.
    pub async fn placeholder_env(&self, group: &str) -> Vec<(String, String)> {
        match self.inner.secrets.placeholder_env(group).await {
            Ok(env) => env,
            Err(e) => {
                tracing::error!(group, error = %e, "no secret placeholders for the sandbox");
                Vec::new()
            }
        }
    }

    fn build_inner(
        policies: Arc<dyn PolicySource>,
        resolver: Arc<dyn Resolve>,
        audit: Arc<dyn EgressAudit>,
        secrets: Arc<dyn EgressSecrets>,
        mitm: Option<Arc<Mitm>>,
    ) -> EgressProxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        EgressProxy {
            inner: Arc::new(Inner {
                policies,
                resolver,
                audit,
                secrets,
                client,
                mitm,
                notifier: Arc::new(LogNotifier),
                limiter: RateLimiter::default(),
                total_slots: Arc::new(Semaphore::new(MAX_CONNECTIONS_TOTAL)),
                total_limit: MAX_CONNECTIONS_TOTAL,
                per_sandbox: MAX_CONNECTIONS_PER_SANDBOX,
                tls_ports: vec![443],
                header_timeout: HEADER_READ_TIMEOUT,
                body_timeout: BODY_READ_TIMEOUT,
                refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS)),
            }),
        }
    }

    /// Serves the proxy for the group `group_folder` on a new socket at `socket_path`
    /// (owner-only; an old file there is replaced). Must run inside a tokio runtime.
    pub fn serve(&self, socket_path: &Path, group_folder: &str) -> io::Result<EgressHandle> {
        let _ = std::fs::remove_file(socket_path);
        let listener = UnixListener::bind(socket_path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // The sandbox user is mapped to this host user, so owner-only is enough.
            std::fs::set_permissions(socket_path, std::fs::Permissions::from_mode(0o600))?;
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.inner),
            Arc::from(group_folder),
            shutdown_rx,
        ));
        tracing::debug!(group = group_folder, socket = %socket_path.display(), "egress proxy listening");
        Ok(EgressHandle {
            task,
            socket_path: socket_path.to_owned(),
            _shutdown: shutdown_tx,
        })
    }
}

async fn accept_loop(
    listener: UnixListener,
    inner: Arc<Inner>,
    group: Arc<str>,
    shutdown: watch::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(inner.per_sandbox));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, group = %group, "egress proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let sandbox = Arc::clone(&slots).try_acquire_owned();
        let total = Arc::clone(&inner.total_slots).try_acquire_owned();
        let (Ok(sandbox), Ok(total)) = (sandbox, total) else {
            let why = if slots.available_permits() == 0 {
                format!(
                    "group {group} has {} connections (tunnels included) open through the egress proxy, its limit; close some and retry",
                    inner.per_sandbox
                )
            } else {
                format!(
                    "the egress proxy has {} connections open across all sandboxes, its limit; retry later",
                    inner.total_limit
                )
            };
            tracing::warn!(group = %group, "egress proxy: {why}");
            if let Ok(permit) = Arc::clone(&inner.refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse_busy(stream, why).await;
                    drop(permit);
                });
            }
            continue;
        };
        let slot = ConnSlot {
            _sandbox: sandbox,
            _total: total,
        };
        tokio::spawn(serve_connection(
            stream,
            Arc::clone(&inner),
            Arc::clone(&group),
            shutdown.clone(),
            Arc::new(std::sync::Mutex::new(Some(slot))),
        ));
    }
}

/// Answers a connection over the limits with a 503 (without reading its request) and
/// closes it; bounded in time so refused connections do not pile up either.
async fn refuse_busy(stream: UnixStream, why: String) {
    let body = format!("nanoclaw egress: {why}\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n{EGRESS_HEADER}: error\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    answer_and_close(stream, answer.as_bytes()).await;
}

/// Writes `answer` (a whole HTTP response) to a connection that will not be served, and
/// closes it, within a second at most (the model relay refuses connections the same way).
pub(crate) async fn answer_and_close<S>(mut stream: S, answer: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
        // Closing with the request unread would reset the connection before the client
        // reads the answer; drain a little of it.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn serve_connection(
    stream: UnixStream,
    inner: Arc<Inner>,
    group: Arc<str>,
    mut shutdown: watch::Receiver<()>,
    slot: SharedSlot,
) {
    let tunnel_shutdown = shutdown.clone();
    let header_timeout = inner.header_timeout;
    let service = hyper::service::service_fn(move |req| {
        let (inner, group, sd, slot) = (
            Arc::clone(&inner),
            Arc::clone(&group),
            tunnel_shutdown.clone(),
            Arc::clone(&slot),
        );
        async move { Ok::<_, Infallible>(handle(inner, group, req, sd, slot).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "egress proxy connection ended with an error");
            }
        }
        // The handle was dropped: the sandbox is gone.
        _ = shutdown.changed() => {}
    }
}

/// What is known about a request for its audit record.
pub(super) struct Pending {
    pub(super) time_ms: i64,
    pub(super) group: String,
    pub(super) method: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path: Option<String>,
    /// The secret injected (intercepted requests).
    pub(super) secret: Option<String>,
    /// Whether the request was sent upstream (for the record of an aborted one).
    pub(super) dispatched: bool,
    /// Where a request dropped before its record was written (the client closed mid-way)
    /// is still recorded; `None` once recorded.
    audit: Option<Arc<dyn EgressAudit>>,
}

impl Pending {
    pub(super) fn new(audit: &Arc<dyn EgressAudit>, group: &str, method: &str) -> Pending {
        Pending {
            time_ms: crate::now_ms(),
            group: group.to_owned(),
            method: method.to_owned(),
            host: String::new(),
            port: 0,
            path: None,
            secret: None,
            dispatched: false,
            audit: Some(Arc::clone(audit)),
        }
    }

    /// No record for this one (an intercepted CONNECT: its requests are recorded each).
    pub(super) fn disarm(mut self) {
        self.audit = None;
    }

    pub(super) fn finish(
        mut self,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        decision: EgressDecision,
        reason: String,
    ) -> EgressRecord {
        self.audit = None;
        self.record(status, bytes_up, bytes_down, decision, reason)
    }

    fn record(
        &mut self,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        decision: EgressDecision,
        reason: String,
    ) -> EgressRecord {
        EgressRecord {
            time_ms: self.time_ms,
            group: std::mem::take(&mut self.group),
            method: std::mem::take(&mut self.method),
            host: std::mem::take(&mut self.host),
            port: self.port,
            path: self.path.take(),
            status,
            bytes_up,
            bytes_down,
            decision,
            reason,
            secret: self.secret.take(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(audit) = self.audit.take() else {
            return;
        };
        let decision = if self.dispatched {
            EgressDecision::Allowed
        } else {
            self.secret = None;
            EgressDecision::Denied
        };
        let record = self.record(0, 0, 0, decision, "aborted: client closed".into());
        audit.record(record);
    }
}

async fn handle(
    inner: Arc<Inner>,
    group: Arc<str>,
    req: Request<Incoming>,
    shutdown: watch::Receiver<()>,
    slot: SharedSlot,
) -> Response<ProxyBody> {
    let connect = req.method() == Method::CONNECT;
    let mut pending = Pending::new(&inner.audit, &group, req.method().as_str());
    let target = match target_of(&req) {
        Ok(t) => t,
        Err(refusal) => {
            pending.host = req.uri().host().map(str::to_owned).unwrap_or_default();
            return refuse(&inner, pending, &refusal);
        }
    };
    pending.host = target.host.to_string();
    pending.port = target.port;
    if !connect {
        pending.path = Some(req.uri().path().to_owned());
    }
    let policy = match inner.policies.policy(&group).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(group = %group, error = %e, "egress policy unavailable; refusing");
            let refusal = Refusal::new(
                RefusalRule::Unreachable,
                format!("group {group}'s egress policy could not be read ({e}); try again"),
            );
            return refuse(&inner, pending, &refusal);
        }
    };
    let addrs = match check(&inner, &policy, req.method(), &target).await {
        Ok(a) => a,
        Err(refusal) => return refuse(&inner, pending, &refusal),
    };
    let reason = allowed_by(&policy, &target.host);
    // A host only a skill allows takes only the skill's methods: intercepted, so each request
    // inside the tunnel is checked (without interception the tunnel's methods go unseen).
    let skill_methods = policy.skill_methods(&target.host.as_match_str());
    if connect && let Some(mitm) = inner.mitm.clone() {
        let injects = match &skill_methods {
            Some(_) => Ok(true),
            None => {
                inner
                    .secrets
                    .injects_for(&group, &target.host.as_match_str())
                    .await
            }
        };
        match injects {
            Ok(true) => {
                let slot = slot.lock().ok().and_then(|mut s| s.take());
                return crate::mitm::intercept(
                    inner,
                    mitm,
                    group,
                    req,
                    pending,
                    target,
                    addrs,
                    reason,
                    shutdown,
                    slot,
                    skill_methods,
                );
            }
            Ok(false) => {}
            Err(e) => {
                let refusal = Refusal::new(RefusalRule::Unreachable, e.to_string());
                return refuse(&inner, pending, &refusal);
            }
        }
    }
    if connect {
        let slot = slot.lock().ok().and_then(|mut s| s.take());
        let tls = inner.tls_ports.contains(&target.port).then(|| {
            (
                target.host.as_match_str(),
                matches!(target.host, TargetHost::Ip(_)),
            )
        });
        tunnel(inner, req, pending, addrs, reason, shutdown, slot, tls).await
    } else {
        forward(inner, req, pending, &target, addrs, reason).await
    }
}

pub(super) struct Target {
    pub(super) host: TargetHost,
    pub(super) port: u16,
    /// The normalized authority (the upstream's `Host` header).
    pub(super) authority: String,
}

/// The host and port a request is for: the CONNECT target, or an absolute `http://` URI.
fn target_of(req: &Request<Incoming>) -> Result<Target, Refusal> {
    let bad = |m: String| Refusal::new(RefusalRule::BadRequest, m);
    let uri = req.uri();
    let Some(authority) = uri.authority() else {
        return Err(bad(
            "this is an HTTP proxy: send absolute-form requests (http://host/path) or CONNECT host:port"
                .into(),
        ));
    };
    let port = if req.method() == Method::CONNECT {
        authority
            .port_u16()
            .ok_or_else(|| bad(format!("CONNECT {authority} needs a port")))?
    } else {
        match uri.scheme_str() {
            Some("http") => authority.port_u16().unwrap_or(80),
            Some("https") => {
                return Err(bad(format!(
                    "send https://{authority} through CONNECT (set HTTPS_PROXY), not as a plain proxy request"
                )));
            }
            other => {
                return Err(bad(format!(
                    "scheme {} is not proxied; only http:// requests and CONNECT",
                    other.unwrap_or("(none)")
                )));
            }
        }
    };
    if port == 0 {
        return Err(bad(format!("{authority}: port 0 is not a port")));
    }
    let host = TargetHost::parse(authority.host())
        .ok_or_else(|| bad(format!("{:?} is not a valid host name", authority.host())))?;
    // Rebuilt from the normalized host, so the upstream sees the name that was checked.
    let host_part = match &host {
        TargetHost::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        other => other.to_string(),
    };
    let authority = match authority.port_u16() {
        Some(p) => format!("{host_part}:{p}"),
        None => host_part,
    };
    Ok(Target {
        host,
        port,
        authority,
    })
}

/// The policy's checks, then resolution and the resolved-address checks. Returns the
/// addresses to connect to, IPv4 first (more often reachable from a host without IPv6).
async fn check(
    inner: &Inner,
    policy: &EgressPolicy,
    method: &Method,
    target: &Target,
) -> Result<Vec<SocketAddr>, Refusal> {
    policy.check_target(method, &target.host, target.port)?;
    let mut addrs = match &target.host {
        TargetHost::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        TargetHost::Name(name) => inner
            .resolver
            .resolve(name, target.port)
            .await
            .map_err(|e| {
                Refusal::new(
                    RefusalRule::Unreachable,
                    format!("cannot resolve {name}: {e}"),
                )
            })?,
    };
    policy.check_resolved(&target.host, &addrs)?;
    addrs.sort_by_key(|a| a.is_ipv6());
    Ok(addrs)
}

fn allowed_by(policy: &EgressPolicy, host: &TargetHost) -> String {
    let name = host.as_match_str();
    if let Some(p) = policy.allow.iter().find(|p| p.matches(&name)) {
        return format!("allowed by {p}");
    }
    let skills = policy.skills_allowing(&name);
    if skills.is_empty() {
        "allowed".into()
    } else {
        format!("allowed by skill {}", skills.join(", "))
    }
}

pub(super) fn refuse(inner: &Inner, pending: Pending, refusal: &Refusal) -> Response<ProxyBody> {
    refuse_with(
        inner,
        pending,
        refusal.rule.status(),
        refusal.rule.tag(),
        &refusal.message,
    )
}

/// A refusal the policy module has no rule for (leak guard, approvals, the vault).
pub(super) fn refuse_with(
    inner: &Inner,
    pending: Pending,
    status: StatusCode,
    rule_tag: &str,
    message: &str,
) -> Response<ProxyBody> {
    inner.audit.record(pending.finish(
        status.as_u16(),
        0,
        0,
        EgressDecision::Denied,
        format!("{rule_tag}: {message}"),
    ));
    let tag = if status == StatusCode::FORBIDDEN {
        "denied"
    } else {
        "error"
    };
    let mut resp = Response::new(full(format!("{message}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(EGRESS_HEADER, HeaderValue::from_static(tag));
    resp
}

pub(super) fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// Connects to the first reachable checked address.
pub(super) async fn connect_any(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )
            }
        }
    }
    Err(last)
}

/// Splices a CONNECT. On a TLS port the client's ClientHello is read first and must name
/// the CONNECT host (`tls`: that host, and whether it is an IP address).
#[allow(clippy::too_many_arguments)]
async fn tunnel(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    mut pending: Pending,
    addrs: Vec<SocketAddr>,
    reason: String,
    mut shutdown: watch::Receiver<()>,
    slot: Option<ConnSlot>,
    tls: Option<(String, bool)>,
) -> Response<ProxyBody> {
    let mut upstream = match connect_any(&addrs).await {
        Ok(s) => s,
        Err(e) => {
            let refusal = Refusal::new(
                RefusalRule::Unreachable,
                format!("cannot connect to {}:{}: {e}", pending.host, pending.port),
            );
            return refuse(&inner, pending, &refusal);
        }
    };
    let _ = upstream.set_nodelay(true);
    // From here the tunnel itself records the outcome.
    pending.dispatched = true;
    tokio::spawn(async move {
        let _slot = slot;
        let (mut up, mut down) = (0u64, 0u64);
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Some((host, is_ip)) = tls {
                    let checked = tokio::select! {
                        r = crate::sni::check_client_hello(&mut client, &host, is_ip) => r,
                        _ = shutdown.changed() => return,
                    };
                    let hello = match checked {
                        Ok(h) => h,
                        Err(refusal) => {
                            tracing::warn!(group = %pending.group, host = %host, reason = refusal.tag(), "egress tunnel refused after its ClientHello");
                            inner.audit.record(pending.finish(
                                403,
                                0,
                                0,
                                EgressDecision::Denied,
                                format!("{}: {}", refusal.tag(), refusal.message(&host)),
                            ));
                            return;
                        }
                    };
                    use tokio::io::AsyncWriteExt;
                    if let Err(e) = upstream.write_all(&hello).await {
                        tracing::debug!(error = %e, "egress tunnel: the upstream closed");
                    }
                    up = hello.len() as u64;
                }
                tokio::select! {
                    res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match res {
                        Ok((u, d)) => (up, down) = (up + u, d),
                        Err(e) => tracing::debug!(error = %e, "egress tunnel ended with an error"),
                    },
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "egress tunnel: the client never took the upgrade")
            }
        }
        inner
            .audit
            .record(pending.finish(200, up, down, EgressDecision::Allowed, reason));
    });
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

async fn forward(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    mut pending: Pending,
    target: &Target,
    addrs: Vec<SocketAddr>,
    reason: String,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // The Host the policy checked, not whatever the client put there.
    match HeaderValue::from_str(&target.authority) {
        Ok(v) => {
            headers.insert(header::HOST, v);
        }
        Err(_) => {
            let refusal = Refusal::new(
                RefusalRule::BadRequest,
                "the request's host is not a valid header value",
            );
            return refuse(&inner, pending, &refusal);
        }
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let up_count = Arc::new(AtomicU64::new(0));
    // Without a body a failed connect can be retried on the next address.
    let body_is_empty = body.is_end_stream();
    let host = target.host.as_match_str();
    let body = match scan_request(
        &inner,
        &pending.group,
        &host,
        &parts.uri.to_string(),
        &headers,
        body,
    )
    .await
    {
        Ok(Scanned::Stream(b)) => Counted::new(b, Arc::clone(&up_count), None).boxed_any(),
        Ok(Scanned::Buffered(b)) => {
            up_count.store(b.len() as u64, Ordering::Relaxed);
            Full::new(b).map_err(|never| match never {}).boxed()
        }
        Err(blocked) => return blocked.refuse(&inner, pending),
    };
    let mut body = Some(body);
    let mut last_err = String::new();
    for (i, addr) in addrs.iter().enumerate() {
        let uri = match format!("http://{addr}{path_and_query}").parse::<Uri>() {
            Ok(u) => u,
            Err(e) => {
                last_err = e.to_string();
                break;
            }
        };
        let this_body = if i == 0 {
            body.take()
                .unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed())
        } else {
            Empty::new().map_err(|never| match never {}).boxed()
        };
        let mut upstream_req = Request::new(this_body);
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = uri;
        *upstream_req.headers_mut() = headers.clone();
        pending.dispatched = true;
        match inner.client.request(upstream_req).await {
            Ok(resp) => {
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                let status = rparts.status.as_u16();
                let finisher = Finisher {
                    audit: Arc::clone(&inner.audit),
                    pending: Some(pending),
                    status,
                    reason,
                    up: up_count,
                    down: Arc::new(AtomicU64::new(0)),
                };
                let down = Arc::clone(&finisher.down);
                let body = Counted::new(rbody, down, Some(finisher)).boxed_any();
                return Response::from_parts(rparts, body);
            }
            Err(e) => {
                last_err = format!("{addr}: {e}");
                if !(e.is_connect() && body_is_empty) {
                    break;
                }
            }
        }
    }
    let refusal = Refusal::new(
        RefusalRule::Unreachable,
        format!("cannot reach {}:{} ({last_err})", target.host, target.port),
    );
    refuse(&inner, pending, &refusal)
}

/// Records the audit entry once the response body is done (or dropped).
pub(super) struct Finisher {
    pub(super) audit: Arc<dyn EgressAudit>,
    pub(super) pending: Option<Pending>,
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) up: Arc<AtomicU64>,
    pub(super) down: Arc<AtomicU64>,
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            self.audit.record(p.finish(
                self.status,
                self.up.load(Ordering::Relaxed),
                self.down.load(Ordering::Relaxed),
                EgressDecision::Allowed,
                std::mem::take(&mut self.reason),
            ));
        }
    }
}

/// A body that counts its data bytes and drops its finisher at the end.
pub(super) struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    finisher: Option<Finisher>,
}

impl<B> Counted<B>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(inner: B, count: Arc<AtomicU64>, finisher: Option<Finisher>) -> Self {
        Counted {
            inner,
            count,
            finisher,
        }
    }

    pub(super) fn boxed_any(self) -> ProxyBody {
        BodyExt::boxed(self)
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finisher = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finisher = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-foo", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}

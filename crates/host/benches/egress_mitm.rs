//! Egress proxy overhead on the INTERCEPTED HTTPS path: the proxy terminates the client's TLS
//! with a leaf from its local CA, injects a vault secret into a header, and re-encrypts to a
//! keep-alive HTTPS upstream.
//!
//! One process, a 2-worker tokio runtime (the machine has 2 cores): an HTTPS upstream on
//! 127.0.0.1 with its own test root, the host's egress proxy on a Unix socket, and a loopback
//! TCP → Unix bridge like the agent's. The proxy is wired as the host wires it when a vault
//! is open: `VaultSecrets` and `VaultAudit` over an on-disk store (WAL), so every request
//! pays the vault look-ups, the leak guard and a hash-chained audit row. Client, bridge,
//! proxy, store thread and upstream all share the same two cores, so the figures are
//! pessimistic.
//!
//! The upstream answers 200 only when `x-api-key` holds the real secret: the direct client
//! sends it itself, the intercepted client sends none and the proxy injects it.
//!
//! - latency: sequential requests on one keep-alive TLS connection (CONNECT, then TLS to the
//!   proxy's leaf), a GET and a small JSON POST to the bound host (the leak guard buffers and
//!   scans the body), direct vs through the proxy; "added" is the difference of the
//!   percentiles;
//! - throughput: 8 keep-alive TLS connections in parallel through the proxy for 3 s;
//! - a new connection per request, as curl does: CONNECT + full TLS handshake (no session
//!   resumption, leaf already cached) alone, and with its first GET (which also makes the
//!   proxy's own upstream TLS connection), vs a new direct TLS connection;
//! - where the added time goes: the same GET through a plain tunnel (no interception), and
//!   through intercepting proxies whose secrets and audit are in memory (no store round
//!   trips), then each vault call and an audit row write on their own.
//!
//! Run: `cargo bench -p nanoclaw --bench egress_mitm`.

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use nanoclaw_egress::{
    AddressGuard, Approval, EgressAudit, EgressHandle, EgressPolicy, EgressProxy, EgressSecrets,
    Interception, LocalCa, MemoryAudit, SecretsError, StaticPolicies, StaticResolver,
};
use nanoclaw_host::egress_vault::{VaultAudit, VaultSecrets};
use nanoclaw_store::Store;
use nanoclaw_vault::{
    AuditEntry, Decision, GrantRequest, Injection, LeakGuard, LiveSecret, MasterKey, SecretString,
    Vault,
};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

const SEQUENTIAL: usize = 5_000;
const WARMUP: usize = 500;
const PARALLEL: usize = 8;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);
const NEW_CONNECTIONS: usize = 500;
const NEW_WARMUP: usize = 20;
const VAULT_CALLS: usize = 2_000;

/// The host the group holds a grant for: CONNECTs to it are intercepted.
const HOST: &str = "api.bench.example";
/// An allowed host without a grant: CONNECTs to it are tunnelled untouched.
const TUNNEL_HOST: &str = "tunnel.bench.example";
const GROUP: &str = "main";
const SECRET_NAME: &str = "anthropic";
const SECRET: &str = "sk-ant-REAL-bench-0123456789abcdef";
/// A small chat-style request body (what an agent's tool would POST to an API).
const JSON_BODY: &str = r#"{"model":"bench-1","max_tokens":64,"messages":[{"role":"user","content":"Summarise the last three messages in one line, please."}]}"#;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// An HTTPS upstream for [`HOST`] and [`TUNNEL_HOST`] with its own root; keep-alive
/// HTTP/1.1. Answers "ok" when `x-api-key` is the real secret (and a POST's body arrived
/// whole), else 401.
async fn https_upstream() -> (SocketAddr, CertificateDer<'static>) {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench upstream root");
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root_params, root_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![HOST.into(), TUNNEL_HOST.into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key_der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
                        let keyed = req
                            .headers()
                            .get("x-api-key")
                            .is_some_and(|v| v.as_bytes() == SECRET.as_bytes());
                        let post = req.method() == http::Method::POST;
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let whole = !post || body == JSON_BODY.as_bytes();
                        let mut resp = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                        if !(keyed && whole) {
                            *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, root_cert.der().clone())
}

/// The agent's loopback bridge, reproduced: TCP in, the proxy's Unix socket out.
async fn bridge(socket: std::path::PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut unix = UnixStream::connect(&socket).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            });
        }
    });
    addr
}

/// Grants answered from memory: what the proxy would cost with no store round trip per
/// request (for the breakdown only; the host uses [`VaultSecrets`]).
struct MemorySecrets {
    guard: Arc<LeakGuard>,
}

impl MemorySecrets {
    fn new() -> MemorySecrets {
        MemorySecrets {
            guard: Arc::new(LeakGuard::new(&[LiveSecret {
                name: SECRET_NAME.into(),
                version: 1,
                value: SecretString::from(SECRET),
            }])),
        }
    }
}

#[async_trait::async_trait]
impl EgressSecrets for MemorySecrets {
    async fn injects_for(&self, _group: &str, host: &str) -> Result<bool, SecretsError> {
        Ok(host == HOST)
    }
    async fn injection(
        &self,
        _group: &str,
        host: &str,
        _path: &str,
    ) -> Result<Option<Injection>, SecretsError> {
        Ok((host == HOST).then(|| Injection {
            secret_name: SECRET_NAME.into(),
            version: 1,
            grant_id: 1,
            header: Some(("x-api-key".into(), SecretString::from(SECRET))),
            query: None,
            needs_approval: false,
        }))
    }
    async fn resolve_placeholder(
        &self,
        _group: &str,
        _placeholder: &str,
        _host: &str,
        _path: &str,
    ) -> Result<Option<SecretString>, SecretsError> {
        Ok(None)
    }
    async fn bound_to(&self, _group: &str, name: &str, host: &str) -> Result<bool, SecretsError> {
        Ok(name == SECRET_NAME && host == HOST)
    }
    async fn leak_guard(&self) -> Result<Option<Arc<LeakGuard>>, SecretsError> {
        Ok(Some(Arc::clone(&self.guard)))
    }
    async fn placeholder_env(&self, _group: &str) -> Result<Vec<(String, String)>, SecretsError> {
        Ok(Vec::new())
    }
    async fn approval(
        &self,
        _id: i64,
        _group: &str,
        _host: &str,
    ) -> Result<Approval, SecretsError> {
        Ok(Approval::Approved)
    }
    async fn rate_limit(&self, _name: &str) -> Result<u32, SecretsError> {
        Ok(0)
    }
}

/// An intercepting proxy for [`GROUP`] (allowing both bench hosts, resolved to the
/// upstream) on its own socket and bridge.
fn proxy(
    upstream: SocketAddr,
    upstream_root: &CertificateDer<'static>,
    ca: &Arc<LocalCa>,
    audit: Arc<dyn EgressAudit>,
    secrets: Arc<dyn EgressSecrets>,
) -> EgressProxy {
    let mut policy = EgressPolicy::deny_all(GROUP)
        .allowing(&[HOST, TUNNEL_HOST])
        .unwrap();
    policy.ports = vec![upstream.port()];
    // Benchmarks only: the upstream is on 127.0.0.1, which the host always refuses.
    policy.guard = AddressGuard::allow_loopback_for_tests();
    EgressProxy::build_intercepting(
        Arc::new(StaticPolicies::new().with(policy)),
        Arc::new(
            StaticResolver::new()
                .with(HOST, &[upstream.ip()])
                .with(TUNNEL_HOST, &[upstream.ip()]),
        ),
        audit,
        secrets,
        Interception {
            ca: Arc::clone(ca),
            extra_upstream_roots: vec![upstream_root.clone()],
        },
    )
    .unwrap()
}

async fn serve(proxy: &EgressProxy, dir: &Path, name: &str) -> (EgressHandle, SocketAddr) {
    let socket = dir.join(format!("{name}.sock"));
    let handle = proxy.serve(&socket, GROUP).unwrap();
    (handle, bridge(socket).await)
}

/// A TLS client trusting only `root`. No session resumption: every new connection is a full
/// handshake, as for a tool run once per request.
fn tls_client(root: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Where the client connects and how.
#[derive(Clone)]
struct Route {
    /// The upstream itself, or a bridge to a proxy (then CONNECT first).
    to: SocketAddr,
    via_proxy: bool,
    host: &'static str,
    port: u16,
    tls: TlsConnector,
    /// The client sends the key itself (direct, tunnel); intercepted, the proxy sets it.
    sends_key: bool,
}

impl Route {
    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// `CONNECT host:port` on the bridge; returns the stream once the proxy answered 200.
async fn connect_through(s: &mut TcpStream, authority: &str) {
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The proxy says nothing after its answer until the client's ClientHello, so reading
    // up to the blank line cannot take any TLS bytes.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed the CONNECT");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// A TLS stream to the upstream (direct, tunnel) or to the proxy's leaf (intercepted).
async fn tls_stream(route: &Route) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tcp = TcpStream::connect(route.to).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    if route.via_proxy {
        connect_through(&mut tcp, &route.authority()).await;
    }
    let name = ServerName::try_from(route.host).unwrap();
    route.tls.connect(name, tcp).await.unwrap()
}

async fn connect(route: &Route) -> Sender {
    let tls = tls_stream(route).await;
    let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

#[derive(Clone, Copy)]
enum Kind {
    Get,
    PostJson,
}

async fn one(sender: &mut Sender, route: &Route, kind: Kind) {
    sender.ready().await.unwrap();
    let (builder, body) = match kind {
        Kind::Get => (http::Request::get("/v1/models"), Bytes::new()),
        Kind::PostJson => (
            http::Request::post("/v1/messages").header("content-type", "application/json"),
            Bytes::from_static(JSON_BODY.as_bytes()),
        ),
    };
    let mut builder = builder.header("host", route.authority());
    if route.sends_key {
        builder = builder.header("x-api-key", SECRET);
    }
    let resp = sender
        .send_request(builder.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], b"ok");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn latencies(route: &Route, kind: Kind) -> Vec<Duration> {
    let mut s = connect(route).await;
    for _ in 0..WARMUP {
        one(&mut s, route, kind).await;
    }
    let mut out = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        one(&mut s, route, kind).await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn throughput(route: &Route) -> (u64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let (done, route) = (Arc::clone(&done), route.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&route).await;
            while start.elapsed() < THROUGHPUT_FOR {
                one(&mut s, &route, Kind::Get).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (done.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

/// A new connection each time: the handshake alone (`with_request` false; through the
/// proxy that is CONNECT + TLS to its leaf) or the handshake and a first GET.
async fn new_connections(route: &Route, with_request: bool) -> Vec<Duration> {
    let mut out = Vec::with_capacity(NEW_CONNECTIONS);
    for i in 0..NEW_WARMUP + NEW_CONNECTIONS {
        let t = Instant::now();
        if with_request {
            let mut s = connect(route).await;
            one(&mut s, route, Kind::Get).await;
        } else {
            let tls = tls_stream(route).await;
            assert!(tls.get_ref().1.peer_certificates().is_some());
        }
        let took = t.elapsed();
        if i >= NEW_WARMUP {
            out.push(took);
        }
    }
    out.sort();
    out
}

/// `n` calls of `f`, sorted durations.
async fn timed<F, Fut>(n: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn print_added(title: &str, direct: &[Duration], proxied: &[Duration]) {
    println!("{title}:");
    for (name, p) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
        let (d, x) = (pct(direct, p), pct(proxied, p));
        println!(
            "  {name}: direct {:>8.1} µs   via bridge+proxy {:>8.1} µs   added {:>8.1} µs",
            us(d),
            us(x),
            us(x) - us(d)
        );
    }
}

fn print_one(name: &str, sorted: &[Duration]) {
    println!(
        "  {name:<58} p50 {:>7.1} µs   p99 {:>7.1} µs",
        us(pct(sorted, 0.50)),
        us(pct(sorted, 0.99))
    );
}

async fn bench() {
    let (up, upstream_root) = https_upstream().await;
    let dir = tempfile::tempdir().unwrap();

    // As the host wires it with a vault: on-disk store, vault secrets, vault audit.
    let store = Store::open(&dir.path().join("nanoclaw.db")).unwrap();
    let vault = Vault::open(store.clone(), MasterKey::from_bytes([42; 32]))
        .await
        .unwrap();
    vault
        .set(SECRET_NAME, SecretString::from(SECRET))
        .await
        .unwrap();
    vault
        .grant(GrantRequest {
            secret_name: SECRET_NAME.into(),
            group_folder: GROUP.into(),
            host: HOST.into(),
            path_prefix: String::new(),
            inject: "header:x-api-key: {secret}".into(),
            needs_approval: false,
        })
        .await
        .unwrap();
    let ca = Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
    let vault_secrets: Arc<dyn EgressSecrets> = Arc::new(VaultSecrets::new(vault.clone()));
    let host_proxy = proxy(
        up,
        &upstream_root,
        &ca,
        Arc::new(VaultAudit::new(nanoclaw_vault::Audit::new(store.clone()))),
        Arc::clone(&vault_secrets),
    );
    let (_host_handle, host_bridge) = serve(&host_proxy, dir.path(), "host").await;

    let direct = Route {
        to: up,
        via_proxy: false,
        host: HOST,
        port: up.port(),
        tls: tls_client(&upstream_root),
        sends_key: true,
    };
    let intercepted = Route {
        to: host_bridge,
        via_proxy: true,
        tls: tls_client(ca.cert_der()),
        sends_key: false,
        ..direct.clone()
    };

    let mut get_intercepted = Vec::new();
    for (kind, title) in [(Kind::Get, "GET"), (Kind::PostJson, "POST, JSON body")] {
        let d = latencies(&direct, kind).await;
        let x = latencies(&intercepted, kind).await;
        let bytes = match kind {
            Kind::Get => 0,
            Kind::PostJson => JSON_BODY.len(),
        };
        print_added(
            &format!(
                "egress TLS interception latency, {title} ({bytes} B body), {SEQUENTIAL} sequential requests on one keep-alive TLS connection"
            ),
            &d,
            &x,
        );
        if matches!(kind, Kind::Get) {
            get_intercepted = x;
        }
    }

    let (n, took) = throughput(&intercepted).await;
    println!(
        "egress TLS interception throughput: {n} GETs in {took:.1} s over {PARALLEL} keep-alive TLS connections = {:.0} req/s (2 worker threads, client, store and upstream included)",
        n as f64 / took
    );

    let d = new_connections(&direct, false).await;
    let x = new_connections(&intercepted, false).await;
    print_added(
        &format!(
            "new connection, {NEW_CONNECTIONS} sequential: TCP + full TLS handshake (direct) vs bridge + CONNECT + full TLS handshake with the cached leaf (proxy)"
        ),
        &d,
        &x,
    );
    let d = new_connections(&direct, true).await;
    let x = new_connections(&intercepted, true).await;
    print_added(
        &format!(
            "new connection and its first GET, {NEW_CONNECTIONS} sequential (through the proxy this includes its own upstream TCP + TLS)"
        ),
        &d,
        &x,
    );

    // Where the added time goes.
    let memory_audit: Arc<dyn EgressAudit> = Arc::new(MemoryAudit::default());
    let memory_proxy = proxy(
        up,
        &upstream_root,
        &ca,
        Arc::clone(&memory_audit),
        Arc::new(MemorySecrets::new()),
    );
    let (_memory_handle, memory_bridge) = serve(&memory_proxy, dir.path(), "memory").await;
    let vault_only_proxy = proxy(
        up,
        &upstream_root,
        &ca,
        Arc::clone(&memory_audit),
        Arc::clone(&vault_secrets),
    );
    let (_vault_only_handle, vault_only_bridge) =
        serve(&vault_only_proxy, dir.path(), "vault-only").await;
    let tunnel = Route {
        to: host_bridge,
        via_proxy: true,
        host: TUNNEL_HOST,
        sends_key: true,
        ..direct.clone()
    };
    let memory = Route {
        to: memory_bridge,
        ..intercepted.clone()
    };
    let vault_only = Route {
        to: vault_only_bridge,
        ..intercepted.clone()
    };
    println!("where the time goes, GET, {SEQUENTIAL} sequential keep-alive requests each:");
    print_one(
        "via bridge+proxy, tunnelled (TLS end to end, no grant)",
        &latencies(&tunnel, Kind::Get).await,
    );
    print_one(
        "intercepted, secrets and audit in memory (no store)",
        &latencies(&memory, Kind::Get).await,
    );
    print_one(
        "intercepted, vault secrets, audit in memory",
        &latencies(&vault_only, Kind::Get).await,
    );
    print_one(
        "intercepted, vault secrets + vault audit (as the host)",
        &get_intercepted,
    );
    let (n, took) = throughput(&memory).await;
    println!(
        "  throughput intercepted, secrets and audit in memory: {:.0} req/s over {PARALLEL} connections",
        n as f64 / took
    );
    println!("each per-request vault call alone ({VAULT_CALLS} sequential):");
    print_one(
        "store round trip, trivial read (PRAGMA user_version)",
        &timed(VAULT_CALLS, || async {
            assert!(store.schema_version().await.unwrap() > 0);
        })
        .await,
    );
    print_one(
        "grants query alone (Store::vault_group_grants)",
        &timed(VAULT_CALLS, || async {
            assert_eq!(store.vault_group_grants(GROUP).await.unwrap().len(), 1);
        })
        .await,
    );
    let s = &vault_secrets;
    print_one(
        "injection (grants query + decrypt)",
        &timed(VAULT_CALLS, || async {
            assert!(
                s.injection(GROUP, HOST, "/v1/models")
                    .await
                    .unwrap()
                    .is_some()
            );
        })
        .await,
    );
    print_one(
        "leak_guard (versions query; the guard is cached)",
        &timed(VAULT_CALLS, || async {
            assert!(s.leak_guard().await.unwrap().is_some());
        })
        .await,
    );
    print_one(
        "rate_limit (secret query)",
        &timed(VAULT_CALLS, || async {
            assert_eq!(s.rate_limit(SECRET_NAME).await.unwrap(), 0);
        })
        .await,
    );
    let audit = nanoclaw_vault::Audit::new(store.clone());
    print_one(
        "audit row write (hash chain; the proxy does not wait on it)",
        &timed(VAULT_CALLS, || async {
            audit
                .record(AuditEntry {
                    at: None,
                    group_folder: GROUP.into(),
                    method: "GET".into(),
                    host: format!("{HOST}:{}", up.port()),
                    path: "/v1/models".into(),
                    status: Some(200),
                    bytes_up: 0,
                    bytes_down: 2,
                    secret_name: Some(SECRET_NAME.into()),
                    decision: Decision::Inject,
                    reason: "bench".into(),
                })
                .await
                .unwrap();
        })
        .await,
    );
}

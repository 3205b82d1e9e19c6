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
//! sends it itself, the proxied client sends none and the proxy injects it.
//!
//! - latency: sequential requests on one keep-alive TLS connection (CONNECT, then TLS to the
//!   proxy's leaf), a GET and a small JSON POST (the leak guard buffers and scans the body),
//!   direct vs through the proxy; "added" is the difference of the percentiles;
//! - throughput: 8 keep-alive TLS connections in parallel through the proxy for 3 s;
//! - a new connection per request, as curl does: CONNECT + full TLS handshake (no session
//!   resumption, leaf already cached) alone, and with its first GET (which also makes the
//!   proxy's own upstream TLS connection), vs a new direct TLS connection with its first GET.
//!
//! Run: `cargo bench -p nanoclaw --bench egress_mitm`.

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use nanoclaw_host::egress::{
    AddressGuard, EgressPolicy, EgressProxy, Interception, LocalCa, StaticPolicies, StaticResolver,
    VaultAudit, VaultSecrets,
};
use nanoclaw_store::Store;
use nanoclaw_vault::{GrantRequest, MasterKey, SecretString, Vault};
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

const HOST: &str = "api.bench.example";
const GROUP: &str = "main";
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

/// An HTTPS upstream for [`HOST`] with its own root; keep-alive HTTP/1.1. Answers "ok" when
/// `x-api-key` is the real secret (and a POST's body arrived whole), else 401.
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
    let leaf = rcgen::CertificateParams::new(vec![HOST.into()])
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
enum Route {
    /// Straight to the upstream over TLS.
    Direct {
        upstream: SocketAddr,
        tls: TlsConnector,
    },
    /// Through the bridge and proxy: CONNECT, then TLS with the proxy's leaf.
    Proxied {
        bridge: SocketAddr,
        port: u16,
        tls: TlsConnector,
    },
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// `CONNECT host:port` on the bridge; returns the stream once the proxy answered 200.
async fn connect_through(bridge: SocketAddr, port: u16) -> TcpStream {
    let mut s = tcp(bridge).await;
    s.write_all(
        format!("CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n").as_bytes(),
    )
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
    s
}

/// A TLS stream to the upstream (direct) or to the proxy's leaf (proxied).
async fn tls_stream(route: &Route) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = ServerName::try_from(HOST).unwrap();
    match route {
        Route::Direct { upstream, tls } => tls.connect(name, tcp(*upstream).await).await.unwrap(),
        Route::Proxied { bridge, port, tls } => tls
            .connect(name, connect_through(*bridge, *port).await)
            .await
            .unwrap(),
    }
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

async fn one(sender: &mut Sender, route: &Route, kind: Kind, authority: &str) {
    sender.ready().await.unwrap();
    let builder = match kind {
        Kind::Get => http::Request::get("/v1/models"),
        Kind::PostJson => {
            http::Request::post("/v1/messages").header("content-type", "application/json")
        }
    }
    .header("host", authority);
    // Direct, the tool holds the key; through the proxy it has none and the proxy sets it.
    let builder = match route {
        Route::Direct { .. } => builder.header("x-api-key", SECRET),
        Route::Proxied { .. } => builder,
    };
    let body = match kind {
        Kind::Get => Full::new(Bytes::new()),
        Kind::PostJson => Full::new(Bytes::from_static(JSON_BODY.as_bytes())),
    };
    let resp = sender
        .send_request(builder.body(body).unwrap())
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

async fn latencies(route: &Route, kind: Kind, authority: &str) -> Vec<Duration> {
    let mut s = connect(route).await;
    for _ in 0..WARMUP {
        one(&mut s, route, kind, authority).await;
    }
    let mut out = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        one(&mut s, route, kind, authority).await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// A new connection each time: the handshake alone (`with_request` false; for the proxy
/// that is CONNECT + TLS to its leaf) or the handshake and a first GET.
async fn new_connections(route: &Route, with_request: bool, authority: &str) -> Vec<Duration> {
    let mut out = Vec::with_capacity(NEW_CONNECTIONS);
    for i in 0..NEW_WARMUP + NEW_CONNECTIONS {
        let t = Instant::now();
        if with_request {
            let mut s = connect(route).await;
            one(&mut s, route, Kind::Get, authority).await;
        } else {
            let tls = tls_stream(route).await;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        }
        let took = t.elapsed();
        if i >= NEW_WARMUP {
            out.push(took);
        }
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

async fn bench() {
    let (up, upstream_root) = https_upstream().await;
    let dir = tempfile::tempdir().unwrap();

    // As the host wires it with a vault: on-disk store, vault secrets, vault audit.
    let store = Store::open(&dir.path().join("nanoclaw.db")).unwrap();
    let vault = Vault::open(store.clone(), MasterKey::from_bytes([42; 32]))
        .await
        .unwrap();
    vault
        .set("anthropic", SecretString::from(SECRET))
        .await
        .unwrap();
    vault
        .grant(GrantRequest {
            secret_name: "anthropic".into(),
            group_folder: GROUP.into(),
            host: HOST.into(),
            path_prefix: String::new(),
            inject: "header:x-api-key: {secret}".into(),
            needs_approval: false,
        })
        .await
        .unwrap();

    let mut policy = EgressPolicy::deny_all(GROUP).allowing(&[HOST]).unwrap();
    policy.ports = vec![up.port()];
    // Benchmarks only: the upstream is on 127.0.0.1, which the host always refuses.
    policy.guard = AddressGuard::allow_loopback_for_tests();
    let local: IpAddr = up.ip();
    let ca = Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
    let proxy = EgressProxy::build_intercepting(
        Arc::new(StaticPolicies::new().with(policy)),
        Arc::new(StaticResolver::new().with(HOST, &[local])),
        Arc::new(VaultAudit::new(nanoclaw_vault::Audit::new(store.clone()))),
        Arc::new(VaultSecrets::new(vault.clone())),
        Interception {
            ca: Arc::clone(&ca),
            extra_upstream_roots: vec![upstream_root.clone()],
        },
    )
    .unwrap();
    let socket = dir.path().join("proxy.sock");
    let _handle = proxy.serve(&socket, GROUP).unwrap();
    let via = bridge(socket).await;
    let authority = format!("{HOST}:{}", up.port());

    let direct = Route::Direct {
        upstream: up,
        tls: tls_client(&upstream_root),
    };
    let proxied = Route::Proxied {
        bridge: via,
        port: up.port(),
        tls: tls_client(ca.cert_der()),
    };

    for (kind, title) in [(Kind::Get, "GET"), (Kind::PostJson, "POST, JSON body")] {
        let d = latencies(&direct, kind, &authority).await;
        let x = latencies(&proxied, kind, &authority).await;
        print_added(
            &format!(
                "egress TLS interception latency, {title} ({} B body), {SEQUENTIAL} sequential requests on one keep-alive TLS connection",
                match kind {
                    Kind::Get => 0,
                    Kind::PostJson => JSON_BODY.len(),
                }
            ),
            &d,
            &x,
        );
    }

    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let (done, route, authority) = (Arc::clone(&done), proxied.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&route).await;
            while start.elapsed() < THROUGHPUT_FOR {
                one(&mut s, &route, Kind::Get, &authority).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    let took = start.elapsed().as_secs_f64();
    println!(
        "egress TLS interception throughput: {n} GETs in {took:.1} s over {PARALLEL} keep-alive TLS connections = {:.0} req/s (2 worker threads, client, store and upstream included)",
        n as f64 / took
    );

    let d = new_connections(&direct, false, &authority).await;
    let x = new_connections(&proxied, false, &authority).await;
    print_added(
        &format!(
            "new connection, {NEW_CONNECTIONS} sequential: TCP + full TLS handshake (direct) vs bridge + CONNECT + full TLS handshake with the cached leaf (proxy)"
        ),
        &d,
        &x,
    );
    let d = new_connections(&direct, true, &authority).await;
    let x = new_connections(&proxied, true, &authority).await;
    print_added(
        &format!(
            "new connection and its first GET, {NEW_CONNECTIONS} sequential (through the proxy this includes its own upstream TCP + TLS)"
        ),
        &d,
        &x,
    );
}

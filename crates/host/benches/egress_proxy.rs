//! Egress proxy overhead on loopback with a keep-alive upstream.
//!
//! One process, a 2-worker tokio runtime (the machine has 2 cores): a tiny HTTP upstream on
//! 127.0.0.1, the host's egress proxy on a Unix socket, and a loopback TCP → Unix bridge
//! like the agent's (so the measured path is the one a tool's request takes: client → TCP
//! bridge → Unix socket → proxy → policy + resolver → pooled upstream connection). Client,
//! bridge, proxy and upstream all share the same two cores, so the figures are pessimistic.
//!
//! - latency: sequential requests on one keep-alive connection, direct vs through the proxy;
//!   "added" is the difference of the percentiles;
//! - throughput: 8 keep-alive connections in parallel through the proxy for 3 s.
//!
//! Run: `cargo bench -p nanoclaw --bench egress_proxy`.

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use nanoclaw_egress::{
    AddressGuard, EgressPolicy, EgressProxy, NoSecrets, StaticPolicies, StaticResolver,
    TracingAudit,
};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const SEQUENTIAL: usize = 5_000;
const WARMUP: usize = 500;
const PARALLEL: usize = 8;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn upstream() -> SocketAddr {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
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

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn one(sender: &mut Sender, uri: &str, host: &str) {
    sender.ready().await.unwrap();
    let req = http::Request::get(uri)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latencies(addr: SocketAddr, uri: &str, host: &str) -> Vec<Duration> {
    let mut s = connect(addr).await;
    for _ in 0..WARMUP {
        one(&mut s, uri, host).await;
    }
    let mut out = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        one(&mut s, uri, host).await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn bench() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let mut policy = EgressPolicy::deny_all("bench")
        .allowing(&["api.bench.example"])
        .unwrap();
    policy.ports = vec![up.port()];
    // Benchmarks only: the upstream is on 127.0.0.1, which the host always refuses.
    policy.guard = AddressGuard::allow_loopback_for_tests();
    let proxy = EgressProxy::build(
        Arc::new(StaticPolicies::new().with(policy)),
        Arc::new(StaticResolver::new().with("api.bench.example", &[up.ip()])),
        // The real default audit (tracing); no subscriber is installed, as in a quiet host.
        Arc::new(TracingAudit),
        Arc::new(NoSecrets),
    );
    let _handle = proxy.serve(&socket, "bench").unwrap();
    let via = bridge(socket).await;
    let host = format!("api.bench.example:{}", up.port());
    let proxied_uri = format!("http://{host}/v1/x");

    let direct = latencies(up, "/v1/x", &host).await;
    let proxied = latencies(via, &proxied_uri, &host).await;
    println!("egress proxy latency, {SEQUENTIAL} sequential keep-alive requests:");
    for (name, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        let (d, x) = (pct(&direct, p), pct(&proxied, p));
        println!(
            "  {name}: direct {:>7.1} µs   via bridge+proxy {:>7.1} µs   added {:>7.1} µs",
            d.as_secs_f64() * 1e6,
            x.as_secs_f64() * 1e6,
            (x.as_secs_f64() - d.as_secs_f64()) * 1e6
        );
    }

    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let (done, uri, host) = (Arc::clone(&done), proxied_uri.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect(via).await;
            while start.elapsed() < THROUGHPUT_FOR {
                one(&mut s, &uri, &host).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "egress proxy throughput: {n} requests in {:.1} s over {PARALLEL} connections = {:.0} req/s (2 worker threads, client and upstream included)",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
}

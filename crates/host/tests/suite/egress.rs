//! The egress proxy against local upstream servers made by the test. Upstreams live on
//! 127.0.0.1, which production policy always refuses, so these policies use
//! `AddressGuard::allow_loopback_for_tests()` (never set by the host) and a static resolver
//! that maps test names to addresses.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use nanoclaw_egress::{
    AddressGuard, EgressDecision, EgressPolicy, EgressProxy, MemoryAudit, NoSecrets,
    StaticPolicies, StaticResolver,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

const LOCAL: &str = "127.0.0.1";

/// An HTTP upstream that counts hits and answers with what it saw.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn http_upstream() -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let h = Arc::clone(&h);
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut seen = format!(
                "{} {}\nhost={}\nbody={}\n",
                parts.method,
                parts.uri,
                parts
                    .headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                String::from_utf8_lossy(&body)
            );
            for name in parts.headers.keys() {
                seen.push_str(&format!("header:{name}\n"));
            }
            seen
        }
    });
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { addr, hits }
}

/// A TCP echo server (for tunnels); counts connections.
async fn echo_upstream() -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Upstream { addr, hits }
}

struct Fixture {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    audit: Arc<MemoryAudit>,
    _handle: nanoclaw_egress::EgressHandle,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Serves the proxy for group `main` with `policy` (the loopback test switch on).
fn start(policy: EgressPolicy, resolver: StaticResolver) -> Fixture {
    start_with(policy, resolver, |p| p)
}

/// As [`start`], with the proxy adjusted by `adjust` before it serves.
fn start_with(
    policy: EgressPolicy,
    resolver: StaticResolver,
    adjust: impl FnOnce(EgressProxy) -> EgressProxy,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let audit = Arc::new(MemoryAudit::default());
    let proxy = EgressProxy::build(
        Arc::new(StaticPolicies::new().with(policy)),
        Arc::new(resolver),
        audit.clone(),
        Arc::new(NoSecrets),
    );
    let handle = adjust(proxy).serve(&socket, "main").unwrap();
    Fixture {
        _dir: dir,
        socket,
        audit,
        _handle: handle,
    }
}

fn policy(allow: &[&str], ports: &[u16]) -> EgressPolicy {
    let mut p = EgressPolicy::deny_all("main").allowing(allow).unwrap();
    p.ports = ports.to_vec();
    p.guard = AddressGuard::allow_loopback_for_tests();
    p
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends one raw request (with `Connection: close`) and reads the whole answer.
async fn send(socket: &Path, raw: &str) -> Answer {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answered")
        .unwrap();
    parse(&out)
}

fn parse(out: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn get(host_port: &str, path: &str) -> String {
    format!(
        "GET http://{host_port}{path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn an_allowed_host_is_reached_over_plain_http_with_proxy_headers_stripped() {
    let up = http_upstream().await;
    let port = up.addr.port();
    let fx = start(
        policy(&["api.test.example"], &[port]),
        StaticResolver::new().with("api.test.example", &[ip(LOCAL)]),
    );
    let raw = format!(
        "POST http://API.test.example:{port}/v1/echo?key=s3cret HTTP/1.1\r\n\
         Host: evil.example:{port}\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let a = send(&fx.socket, &raw).await;
    assert_eq!(a.status, 200, "{}{}", a.head, a.body);
    assert!(a.body.contains("POST /v1/echo?key=s3cret"), "{}", a.body);
    assert!(a.body.contains("body=hello"), "{}", a.body);
    // The Host the policy checked goes upstream, not the one the client wrote.
    assert!(
        a.body.contains(&format!("host=api.test.example:{port}")),
        "{}",
        a.body
    );
    assert!(!a.body.contains("header:proxy-"), "{}", a.body);
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);

    let records = fx.audit.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.decision, EgressDecision::Allowed);
    assert_eq!((r.group.as_str(), r.method.as_str()), ("main", "POST"));
    assert_eq!(r.host, "api.test.example");
    // The path is audited without its query (which may hold credentials).
    assert_eq!(r.path.as_deref(), Some("/v1/echo"));
    assert_eq!((r.status, r.bytes_up), (200, 5));
    assert!(r.bytes_down > 0);
    assert!(r.reason.contains("api.test.example"), "{}", r.reason);
}

#[tokio::test]
async fn keep_alive_connections_carry_several_requests() {
    let up = http_upstream().await;
    let port = up.addr.port();
    let fx = start(
        policy(&["*.test.example"], &[port]),
        StaticResolver::new().with("a.test.example", &[ip(LOCAL)]),
    );
    let mut s = UnixStream::connect(&fx.socket).await.unwrap();
    for i in 0..3 {
        let raw = format!(
            "GET http://a.test.example:{port}/n{i} HTTP/1.1\r\nHost: a.test.example\r\n\r\n"
        );
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(&format!("GET /n{i}")), "{text}");
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connect_to_an_allowed_host_tunnels_bytes_both_ways() {
    let echo = echo_upstream().await;
    let port = echo.addr.port();
    let fx = start(
        policy(&["tunnel.test.example"], &[port]),
        StaticResolver::new().with("tunnel.test.example", &[ip(LOCAL)]),
    );
    let mut s = UnixStream::connect(&fx.socket).await.unwrap();
    s.write_all(
        format!("CONNECT tunnel.test.example:{port} HTTP/1.1\r\nHost: tunnel.test.example:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut back = vec![0u8; 23];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping through the tunnel");
    drop(s);
    assert_eq!(echo.hits.load(Ordering::SeqCst), 1);

    // The tunnel's record is written when it closes.
    let mut records = Vec::new();
    for _ in 0..100 {
        records = fx.audit.records();
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        (r.method.as_str(), r.status, r.path.as_deref()),
        ("CONNECT", 200, None)
    );
    assert_eq!((r.bytes_up, r.bytes_down), (23, 23));
    assert_eq!(r.decision, EgressDecision::Allowed);
}

/// Sends `raw` and checks a 403 from the proxy whose body contains `says`, that nothing
/// reached any upstream, and that the refusal was audited.
async fn assert_refused(fx: &Fixture, ups: &[&Upstream], raw: &str, says: &str) {
    let before = fx.audit.records().len();
    let a = send(&fx.socket, raw).await;
    assert_eq!(a.status, 403, "{}\n{}", a.head, a.body);
    assert!(a.head.contains("x-nanoclaw-egress: denied"), "{}", a.head);
    assert!(a.body.contains(says), "expected {says:?} in {:?}", a.body);
    for up in ups {
        assert_eq!(up.hits.load(Ordering::SeqCst), 0, "an upstream was reached");
    }
    let records = fx.audit.records();
    assert_eq!(records.len(), before + 1);
    let last = records.last().unwrap();
    assert_eq!(last.decision, EgressDecision::Denied);
    assert_eq!(last.status, 403);
}

#[tokio::test]
async fn a_host_not_allowed_is_refused_naming_the_rule_and_nothing_goes_out() {
    let up = http_upstream().await;
    let echo = echo_upstream().await;
    let port = up.addr.port();
    let eport = echo.addr.port();
    let fx = start(
        policy(&["api.test.example"], &[port, eport]),
        StaticResolver::new()
            .with("api.evil.com", &[ip(LOCAL)])
            .with("api.test.example", &[ip(LOCAL)]),
    );
    assert_refused(
        &fx,
        &[&up, &echo],
        &get(&format!("api.evil.com:{port}"), "/"),
        "nanoclaw egress: api.evil.com is not in group main's allowed domains \
         (nanoclaw group egress allow main api.evil.com)",
    )
    .await;
    assert_refused(
        &fx,
        &[&up, &echo],
        &format!("CONNECT api.evil.com:{eport} HTTP/1.1\r\nHost: api.evil.com\r\nConnection: close\r\n\r\n"),
        "api.evil.com is not in group main's allowed domains",
    )
    .await;
    // An allowed name on a port not in the list.
    assert_refused(
        &fx,
        &[&up, &echo],
        &get("api.test.example:9", "/"),
        "port 9 of api.test.example is not in group main's allowed ports",
    )
    .await;
}

#[tokio::test]
async fn a_denied_pattern_wins_over_an_allowed_one() {
    let up = http_upstream().await;
    let port = up.addr.port();
    let fx = start(
        policy(&["*.test.example"], &[port])
            .denying(&["secrets.test.example"])
            .unwrap(),
        StaticResolver::new()
            .with("secrets.test.example", &[ip(LOCAL)])
            .with("ok.test.example", &[ip(LOCAL)]),
    );
    assert_refused(
        &fx,
        &[&up],
        &get(&format!("secrets.test.example:{port}"), "/"),
        "secrets.test.example matches secrets.test.example in group main's denied domains",
    )
    .await;
    let a = send(&fx.socket, &get(&format!("ok.test.example:{port}"), "/")).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn a_method_restricted_group_may_only_use_its_methods() {
    let up = http_upstream().await;
    let port = up.addr.port();
    let mut p = policy(&["api.test.example"], &[port]);
    p.methods = Some(vec![Method::GET, Method::HEAD]);
    let fx = start(
        p,
        StaticResolver::new().with("api.test.example", &[ip(LOCAL)]),
    );
    let raw = format!(
        "DELETE http://api.test.example:{port}/x HTTP/1.1\r\nHost: api.test.example\r\nConnection: close\r\n\r\n"
    );
    assert_refused(
        &fx,
        &[&up],
        &raw,
        "group main allows only GET, HEAD requests",
    )
    .await;
    let a = send(&fx.socket, &get(&format!("api.test.example:{port}"), "/x")).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn private_metadata_link_local_and_rebinding_targets_are_refused_even_when_allowed() {
    let up = http_upstream().await;
    let port = up.addr.port();
    let fx = start(
        policy(
            &[
                "*.test.example",
                "10.0.0.1",
                "169.254.169.254",
                "[fe80::1]",
                "[fd00:ec2::254]",
            ],
            &[80, 443, port],
        ),
        StaticResolver::new()
            // Resolves to a public and a private address: the name is not trusted.
            .with(
                "rebind.test.example",
                &[ip("93.184.216.34"), ip("10.1.2.3")],
            )
            .with("mapped.test.example", &[ip("::ffff:127.0.0.1")])
            .with("meta.test.example", &[ip("169.254.169.254")]),
    );
    let cases = [
        (get("10.0.0.1", "/"), "10.0.0.1 is a private-network address"),
        (
            get("169.254.169.254", "/latest/meta-data/"),
            "169.254.169.254 is a cloud-metadata address",
        ),
        (get("[fe80::1]", "/"), "fe80::1 is a link-local address"),
        (get("[fd00:ec2::254]", "/"), "fd00:ec2::254 is a cloud-metadata address"),
        (
            get(&format!("rebind.test.example:{port}"), "/"),
            "rebind.test.example resolves to 10.1.2.3, a private-network address",
        ),
        (
            get(&format!("mapped.test.example:{port}"), "/"),
            "mapped.test.example resolves to ::ffff:127.0.0.1, a loopback address",
        ),
        (
            "CONNECT meta.test.example:443 HTTP/1.1\r\nHost: meta.test.example\r\nConnection: close\r\n\r\n"
                .to_owned(),
            "meta.test.example resolves to 169.254.169.254, a cloud-metadata address",
        ),
    ];
    for (raw, says) in &cases {
        assert_refused(&fx, &[&up], raw, says).await;
    }
}

#[tokio::test]
async fn with_the_production_guard_a_name_resolving_to_loopback_is_refused() {
    let up = http_upstream().await;
    let port = up.addr.port();
    let mut p = policy(&["rebind.test.example"], &[port]);
    p.guard = AddressGuard::production();
    let fx = start(
        p,
        StaticResolver::new().with("rebind.test.example", &[ip(LOCAL)]),
    );
    assert_refused(
        &fx,
        &[&up],
        &get(&format!("rebind.test.example:{port}"), "/"),
        "rebind.test.example resolves to 127.0.0.1, a loopback address",
    )
    .await;
}

#[tokio::test]
async fn malformed_requests_get_a_400_and_unresolvable_names_a_502() {
    let fx = start(policy(&["*.test.example"], &[80]), StaticResolver::new());
    let a = send(
        &fx.socket,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("send absolute-form requests"), "{}", a.body);
    let a = send(
        &fx.socket,
        "GET https://a.test.example/ HTTP/1.1\r\nHost: a.test.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("through CONNECT"), "{}", a.body);
    let a = send(&fx.socket, &get("gone.test.example", "/")).await;
    assert_eq!(a.status, 502);
    assert!(
        a.body.contains("cannot resolve gone.test.example"),
        "{}",
        a.body
    );
    assert!(a.head.contains("x-nanoclaw-egress: error"), "{}", a.head);
}

#[tokio::test]
async fn dropping_the_handle_removes_the_socket() {
    let fx = start(policy(&[], &[80]), StaticResolver::new());
    let path = fx.socket.clone();
    assert!(path.exists());
    drop(fx._handle);
    assert!(!path.exists());
}

fn cli(home: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    let out = nanoclaw_test_support::hermetic(cmd.args(args).env_clear())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NANOCLAW_HOME", home)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The CLI writes the rules, the store-backed source (what the host uses) reads them, and
/// the proxy applies them to a running socket without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_rules_reach_the_store_policy_and_apply_to_a_running_proxy() {
    use nanoclaw_egress::{PolicySource, StorePolicySource};
    use nanoclaw_store::{NewGroup, Store};

    let home = nanoclaw_test_support::TestHome::new();
    let db = home.path().join("nanoclaw.db");
    let store = Store::open(&db).unwrap();
    store
        .ensure_group(NewGroup {
            name: "main".into(),
            folder: "main".into(),
            is_main: true,
            ..NewGroup::default()
        })
        .await
        .unwrap();
    let source = Arc::new(StorePolicySource::new(store.clone()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let audit = Arc::new(MemoryAudit::default());
    let _h = EgressProxy::build(
        source.clone(),
        Arc::new(StaticResolver::new().with("api.github.com", &[ip("140.82.112.6")])),
        audit.clone(),
        Arc::new(NoSecrets),
    )
    .serve(&socket, "main")
    .unwrap();
    let connect =
        "CONNECT api.github.com:8443 HTTP/1.1\r\nHost: api.github.com\r\nConnection: close\r\n\r\n";

    // Deny by default.
    let a = send(&socket, connect).await;
    assert_eq!(a.status, 403);
    assert!(
        a.body.contains("not in group main's allowed domains"),
        "{}",
        a.body
    );

    let h = home.path().to_owned();
    let run = move |args: &'static [&'static str]| {
        let h = h.clone();
        tokio::task::spawn_blocking(move || cli(&h, args))
    };
    let (ok, out) = run(&["group", "egress", "allow", "main", "*.GitHub.com"])
        .await
        .unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&["group", "egress", "deny", "main", "gist.github.com"])
        .await
        .unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&["group", "egress", "allow", "main", "*"])
        .await
        .unwrap();
    assert!(!ok && out.contains("every host"), "{out}");
    let (ok, out) = run(&["group", "egress", "ports", "main", "443,8443"])
        .await
        .unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&["group", "egress", "list", "main"]).await.unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("allow  *.github.com"), "{out}");
    assert!(out.contains("deny   gist.github.com"), "{out}");
    assert!(out.contains("ports:   443, 8443"), "{out}");

    let p = source.policy("main").await.unwrap();
    // The cache may still hold the empty policy for up to a second.
    let p = if p.allow.is_empty() {
        tokio::time::sleep(nanoclaw_egress::source::STORE_POLICY_TTL).await;
        source.policy("main").await.unwrap()
    } else {
        p
    };
    assert_eq!(p.allow.len(), 1);
    assert_eq!(p.deny.len(), 1);
    assert_eq!(p.ports, [443, 8443]);
    assert!(!p.guard.loopback_allowed_for_tests());

    // The running socket applies the new deny without a restart.
    let a = send(
        &socket,
        "CONNECT gist.github.com:443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 403);
    assert!(a.body.contains("denied domains"), "{}", a.body);
    let (ok, out) = run(&["group", "egress", "rm", "main", "*.github.com"])
        .await
        .unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&["group", "egress", "rm", "main", "*.github.com"])
        .await
        .unwrap();
    assert!(!ok && out.contains("no egress rule"), "{out}");
}

/// A minimal TLS 1.2/1.3 ClientHello record naming `sni` (none when empty).
fn client_hello(sni: &str) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01, 1, 0]);
    let mut exts = Vec::new();
    if !sni.is_empty() {
        let mut entry = vec![0];
        entry.extend((sni.len() as u16).to_be_bytes());
        entry.extend(sni.as_bytes());
        exts.extend([0, 0]);
        exts.extend(((entry.len() + 2) as u16).to_be_bytes());
        exts.extend((entry.len() as u16).to_be_bytes());
        exts.extend(entry);
    }
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1, 0];
    hs.extend((body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Opens a CONNECT to `host:port` and checks the proxy's 200.
async fn open_tunnel(socket: &Path, host: &str, port: u16) -> UnixStream {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

#[tokio::test]
async fn a_tunnel_whose_client_hello_names_another_host_is_closed_before_anything_goes_out() {
    let echo = echo_upstream().await;
    let port = echo.addr.port();
    let fx = start_with(
        policy(&["cdn.test.example"], &[port]),
        StaticResolver::new().with("cdn.test.example", &[ip(LOCAL)]),
        |p| p.with_tls_ports(&[port]),
    );

    // Domain fronting: the CONNECT names the allowed host, the handshake another one.
    let mut s = open_tunnel(&fx.socket, "cdn.test.example", port).await;
    s.write_all(&client_hello("attacker.example"))
        .await
        .unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .expect("the proxy closed the tunnel")
        .ok();
    assert!(back.is_empty(), "the upstream echoed {} bytes", back.len());
    let mut records = Vec::new();
    for _ in 0..100 {
        records = fx.audit.records();
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].decision, EgressDecision::Denied);
    assert!(
        records[0].reason.starts_with("sni_mismatch"),
        "{}",
        records[0].reason
    );
    assert_eq!(records[0].bytes_up, 0);

    // Plain bytes instead of TLS are refused too.
    let mut s = open_tunnel(&fx.socket, "cdn.test.example", port).await;
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .expect("the proxy closed the tunnel")
        .ok();
    assert!(back.is_empty());

    // The matching name (case and trailing dot aside) goes through, bytes intact.
    let hello = client_hello("CDN.test.example.");
    let mut s = open_tunnel(&fx.socket, "cdn.test.example", port).await;
    s.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, hello);
}

#[tokio::test]
async fn tunnels_count_against_the_connection_limit() {
    let echo = echo_upstream().await;
    let port = echo.addr.port();
    let fx = start_with(
        policy(&["tunnel.test.example"], &[port]),
        StaticResolver::new().with("tunnel.test.example", &[ip(LOCAL)]),
        |p| p.with_connection_limits(2, 100),
    );
    let mut a = open_tunnel(&fx.socket, "tunnel.test.example", port).await;
    let mut b = open_tunnel(&fx.socket, "tunnel.test.example", port).await;
    let refused = send(
        &fx.socket,
        &format!("CONNECT tunnel.test.example:{port} HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(refused.body.contains("2 connections"), "{}", refused.body);
    // The open tunnels still work.
    for s in [&mut a, &mut b] {
        s.write_all(b"still here").await.unwrap();
        let mut back = [0u8; 10];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"still here");
    }
    // Closing one frees its slot.
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        let mut s = UnixStream::connect(&fx.socket).await.unwrap();
        s.write_all(
            format!("CONNECT tunnel.test.example:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = vec![0u8; 1024];
        let n = s.read(&mut head).await.unwrap();
        if head[..n].starts_with(b"HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed tunnel's slot was never freed");
}

#[tokio::test]
async fn a_request_the_client_abandons_is_still_audited() {
    // An upstream that accepts and never answers.
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            held.push(s);
            let _ = accepted_tx.send(());
        }
    });
    let fx = start(
        policy(&["slow.test.example"], &[port]),
        StaticResolver::new().with("slow.test.example", &[ip(LOCAL)]),
    );
    let mut s = UnixStream::connect(&fx.socket).await.unwrap();
    s.write_all(get(&format!("slow.test.example:{port}"), "/wait").as_bytes())
        .await
        .unwrap();
    // The request reached the upstream; then the client gives up.
    accepted.recv().await.unwrap();
    drop(s);
    let mut records = Vec::new();
    for _ in 0..250 {
        records = fx.audit.records();
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].reason, "aborted: client closed");
    assert_eq!(records[0].path.as_deref(), Some("/wait"));
    assert_eq!(records[0].decision, EgressDecision::Allowed);
}

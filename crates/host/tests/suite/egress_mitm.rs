//! TLS interception with credential injection, against an HTTPS upstream made by the test
//! (its own root + a leaf for api.test/other.test on 127.0.0.1). The client is reqwest
//! through the proxy, trusting ONLY the proxy's local CA — as a sandboxed tool would.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use nanoclaw_egress::{
    AddressGuard, EgressDecision, EgressPolicy, EgressProxy, Interception, LocalCa, MemoryAudit,
    MemoryNotifier, StaticPolicies, StaticResolver,
};
use nanoclaw_host::egress_vault::VaultSecrets;
use nanoclaw_store::Store;
use nanoclaw_vault::{GrantRequest, MasterKey, SecretString, Vault};
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, UnixStream};

const ANTHROPIC: &str = "sk-ant-REAL-0123456789abcdef";
const OPENAI: &str = "sk-openai-REAL-fedcba9876543210";
const CUSTOM: &str = "custom-REAL-5555-aaaa-bbbb";
const QUERYKEY: &str = "q/REAL key&9999";
const OTHER: &str = "other-REAL-7777-cccc";

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    host_sni: String,
    uri: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct Upstream {
    port: u16,
    root: CertificateDer<'static>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// An HTTPS server for api.test and other.test that records what it saw and answers with
/// the header NAMES only (a real API does not echo keys back).
async fn https_upstream() -> Upstream {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test upstream root");
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root_params, root_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec![
        "api.test".into(),
        "other.test".into(),
        "skill.test".into(),
    ])
    .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key_der)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let s = Arc::clone(&s);
                        let sni = sni.clone();
                        async move {
                            let headers: Vec<(String, String)> = req
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect();
                            let names: Vec<String> =
                                headers.iter().map(|(n, _)| n.clone()).collect();
                            s.lock().unwrap().push(Seen {
                                host_sni: sni,
                                uri: req.uri().to_string(),
                                headers,
                            });
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(format!("ok {}", names.join(","))),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream {
        port,
        root: root_cert.der().clone(),
        seen,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    vault: Vault,
    audit: Arc<MemoryAudit>,
    notifier: Arc<MemoryNotifier>,
    ca: Arc<LocalCa>,
    proxy: EgressProxy,
    proxy_url: String,
    up: Upstream,
    _handle: nanoclaw_egress::EgressHandle,
}

async fn grant(vault: &Vault, name: &str, host: &str, inject: &str) {
    vault
        .grant(GrantRequest {
            secret_name: name.into(),
            group_folder: "main".into(),
            host: host.into(),
            path_prefix: String::new(),
            inject: inject.into(),
            needs_approval: false,
        })
        .await
        .unwrap();
}

/// Proxy for group `main` allowing api.test, other.test and plain.test (all → 127.0.0.1).
async fn start() -> Fixture {
    start_tuned(|proxy| proxy).await
}

/// As [`start`], with `tune` applied to the proxy before it serves.
async fn start_tuned(tune: impl FnOnce(EgressProxy) -> EgressProxy) -> Fixture {
    let up = https_upstream().await;
    let store = Store::open_in_memory().unwrap();
    let vault = Vault::open(store, MasterKey::from_bytes([42; 32]))
        .await
        .unwrap();
    for (name, value) in [
        ("anthropic", ANTHROPIC),
        ("openai", OPENAI),
        ("custom", CUSTOM),
        ("querykey", QUERYKEY),
        ("other", OTHER),
    ] {
        vault.set(name, SecretString::from(value)).await.unwrap();
    }
    grant(
        &vault,
        "anthropic",
        "api.test",
        "header:x-api-key: {secret}",
    )
    .await;
    vault
        .grant(GrantRequest {
            secret_name: "openai".into(),
            group_folder: "main".into(),
            host: "api.test".into(),
            path_prefix: "/openai".into(),
            inject: "header:Authorization: Bearer {secret}".into(),
            needs_approval: false,
        })
        .await
        .unwrap();
    vault
        .grant(GrantRequest {
            secret_name: "custom".into(),
            group_folder: "main".into(),
            host: "api.test".into(),
            path_prefix: "/custom".into(),
            inject: "header:X-Custom-Token: tok={secret}".into(),
            needs_approval: false,
        })
        .await
        .unwrap();
    vault
        .grant(GrantRequest {
            secret_name: "querykey".into(),
            group_folder: "main".into(),
            host: "api.test".into(),
            path_prefix: "/maps".into(),
            inject: "query:key".into(),
            needs_approval: false,
        })
        .await
        .unwrap();
    // other.test has a grant of a DIFFERENT secret, so it is intercepted too.
    grant(&vault, "other", "other.test", "header:x-other: {secret}").await;

    let mut policy = EgressPolicy::deny_all("main")
        .allowing(&["api.test", "other.test", "plain.test"])
        .unwrap();
    policy.ports = vec![up.port];
    policy.guard = AddressGuard::allow_loopback_for_tests();
    // skill.test: allowed only by an enabled skill that declares GET.
    policy.skill_allow.push(nanoclaw_egress::SkillRule {
        skill: "tracker".into(),
        pattern: nanoclaw_egress::DomainPattern::parse("skill.test").unwrap(),
        methods: vec![http::Method::GET],
    });
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let resolver = StaticResolver::new()
        .with("skill.test", &[local])
        .with("api.test", &[local])
        .with("other.test", &[local])
        .with("plain.test", &[local]);
    let audit = Arc::new(MemoryAudit::default());
    let ca = Arc::new(LocalCa::ephemeral().unwrap());
    let proxy = EgressProxy::build_intercepting(
        Arc::new(StaticPolicies::new().with(policy)),
        Arc::new(resolver),
        audit.clone(),
        Arc::new(VaultSecrets::new(vault.clone())),
        Interception {
            ca: Arc::clone(&ca),
            extra_upstream_roots: vec![up.root.clone()],
        },
    )
    .unwrap();
    let notifier = Arc::new(MemoryNotifier::default());
    let proxy = tune(proxy.with_approval_notifier(notifier.clone()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let handle = proxy.serve(&socket, "main").unwrap();
    // The agent's bridge: a loopback port passed byte-for-byte to the socket.
    let bridge = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let proxy_url = format!("http://{}", bridge.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = bridge.accept().await.unwrap();
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut unix = UnixStream::connect(&socket).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            });
        }
    });
    Fixture {
        _dir: dir,
        vault,
        audit,
        notifier,
        ca,
        proxy,
        proxy_url,
        up,
        _handle: handle,
    }
}

impl Fixture {
    /// A client trusting ONLY the proxy's CA.
    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(&self.proxy_url).unwrap())
            .tls_certs_only([ca])
            .build()
            .unwrap()
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.up.port)
    }

    fn last_seen(&self) -> Seen {
        self.up.seen.lock().unwrap().last().cloned().unwrap()
    }

    fn seen_count(&self) -> usize {
        self.up.seen.lock().unwrap().len()
    }
}

#[tokio::test]
async fn each_grant_style_is_injected_and_the_client_never_sees_the_secret() {
    let fx = start().await;
    let c = fx.client();
    let all_secrets = [ANTHROPIC, OPENAI, CUSTOM, QUERYKEY, OTHER];

    // Anthropic-style; a client-sent value is replaced, not kept.
    let resp = c
        .post(fx.url("api.test", "/v1/messages"))
        .header("x-api-key", "whatever-the-agent-had")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let seen = fx.last_seen();
    assert_eq!(seen.host_sni, "api.test");
    assert_eq!(seen.header("x-api-key"), [ANTHROPIC]);
    assert_eq!(seen.header("host"), [format!("api.test:{}", fx.up.port)]);
    assert!(all_secrets.iter().all(|s| !body.contains(s)), "{body}");

    // OpenAI-style Bearer (the more specific /openai grant wins over the catch-all).
    let resp = c
        .get(fx.url("api.test", "/openai/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = fx.last_seen();
    assert_eq!(
        seen.header("authorization"),
        [format!("Bearer {OPENAI}").as_str()]
    );
    for (name, value) in resp.headers() {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(all_secrets.iter().all(|s| !v.contains(s)), "{name}: {v}");
    }

    // A custom header.
    c.get(fx.url("api.test", "/custom/x")).send().await.unwrap();
    assert_eq!(
        fx.last_seen().header("x-custom-token"),
        [format!("tok={CUSTOM}").as_str()]
    );

    // A query parameter, percent-encoded, replacing the client's.
    c.get(fx.url("api.test", "/maps/geo?key=fake&q=1"))
        .send()
        .await
        .unwrap();
    let uri = fx.last_seen().uri;
    assert_eq!(uri, "/maps/geo?q=1&key=q%2FREAL%20key%269999");

    // Audit: one inject row per request with the secret's name, path without the query.
    let records = fx.audit.records();
    let injected: Vec<_> = records.iter().filter_map(|r| r.secret.as_deref()).collect();
    assert_eq!(injected, ["anthropic", "openai", "custom", "querykey"]);
    assert!(
        records
            .iter()
            .all(|r| r.decision == EgressDecision::Allowed && r.host == "api.test")
    );
    assert!(
        records
            .iter()
            .any(|r| r.path.as_deref() == Some("/maps/geo"))
    );
    // All four reached the upstream (over the one reqwest client, keep-alive).
    assert_eq!(fx.seen_count(), 4);
}

#[tokio::test]
async fn rotation_applies_to_the_next_request_without_restart() {
    let fx = start().await;
    let c = fx.client();
    c.get(fx.url("api.test", "/v1/a")).send().await.unwrap();
    assert_eq!(fx.last_seen().header("x-api-key"), [ANTHROPIC]);
    fx.vault
        .rotate("anthropic", SecretString::from("sk-ant-ROTATED-99999999"))
        .await
        .unwrap();
    c.get(fx.url("api.test", "/v1/b")).send().await.unwrap();
    assert_eq!(
        fx.last_seen().header("x-api-key"),
        ["sk-ant-ROTATED-99999999"]
    );
}

#[tokio::test]
async fn a_placeholder_is_swapped_on_its_bound_host_only() {
    let fx = start().await;
    let env = fx.proxy.placeholder_env("main").await;
    let (_, placeholder) = env
        .iter()
        .find(|(k, _)| k == "NANOCLAW_SECRET_OPENAI")
        .cloned()
        .unwrap();
    assert!(!placeholder.contains(OPENAI));
    assert!(
        placeholder.starts_with(nanoclaw_egress::PLACEHOLDER_PREFIX),
        "{placeholder}"
    );
    let c = fx.client();
    // On api.test under /openai (openai is granted there) the placeholder becomes the real
    // value.
    c.get(fx.url("api.test", "/openai/x"))
        .header("x-tool-token", format!("token {placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        fx.last_seen().header("x-tool-token"),
        [format!("token {OPENAI}").as_str()]
    );
    // Outside the grant's path it stays a placeholder.
    c.get(fx.url("api.test", "/v1/x"))
        .header("x-tool-token", format!("token {placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        fx.last_seen().header("x-tool-token"),
        [format!("token {placeholder}").as_str()]
    );
    // On other.test it stays a placeholder: the real value never goes there.
    let resp = c
        .get(fx.url("other.test", "/x"))
        .header("x-tool-token", format!("token {placeholder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = fx.last_seen();
    assert_eq!(seen.host_sni, "other.test");
    assert_eq!(
        seen.header("x-tool-token"),
        [format!("token {placeholder}").as_str()]
    );
    assert_eq!(seen.header("x-other"), [OTHER]);
}

#[tokio::test]
async fn a_secret_in_a_body_to_a_host_it_is_not_granted_for_is_refused_and_audited() {
    let fx = start().await;
    let c = fx.client();
    let before = fx.seen_count();
    let resp = c
        .post(fx.url("other.test", "/upload"))
        .body(format!("{{\"stolen\":\"{ANTHROPIC}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("carries the secret anthropic, which is not granted for other.test"),
        "{body}"
    );
    assert_eq!(fx.seen_count(), before, "nothing reached the upstream");
    let denied = fx
        .audit
        .records()
        .into_iter()
        .find(|r| r.decision == EgressDecision::Denied)
        .unwrap();
    assert_eq!(denied.host, "other.test");
    assert_eq!(denied.status, 403);
    assert!(denied.reason.contains("anthropic"), "{}", denied.reason);

    // The same secret to the host it IS granted for goes through.
    let resp = c
        .post(fx.url("api.test", "/v1/echo"))
        .body(ANTHROPIC.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Base64 of a secret in a plain-HTTP URL is caught too (the proxy can read plain HTTP).
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(OPENAI);
    let resp = c
        .get(format!("http://plain.test:{}/?d={b64}", fx.up.port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("secret openai"));

    // Percent-escaping every byte does not hide it.
    let escaped: String = OPENAI.bytes().map(|b| format!("%{b:02X}")).collect();
    let resp = c
        .get(format!("http://plain.test:{}/?d={escaped}", fx.up.port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("secret openai"));

    // A compressed body (which cannot be scanned) to a host without a grant is refused.
    let before = fx.seen_count();
    let resp = c
        .post(format!("http://plain.test:{}/upload", fx.up.port))
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert!(resp.text().await.unwrap().contains("Content-Encoding"));
    assert_eq!(fx.seen_count(), before, "nothing reached the upstream");
}

#[tokio::test]
async fn the_leaf_is_for_the_requested_host_and_chains_to_the_local_ca() {
    let fx = start().await;
    // A client trusting only our CA completes the handshake for api.test (so the leaf's SAN
    // is api.test and it chains to our CA)...
    let resp = fx
        .client()
        .get(fx.url("api.test", "/v1/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // ...and one trusting only the system roots refuses it.
    let strict = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(&fx.proxy_url).unwrap())
        .tls_certs_only([reqwest::Certificate::from_der(fx.up.root.as_ref()).unwrap()])
        .build()
        .unwrap();
    assert!(
        strict
            .get(fx.url("api.test", "/v1/x"))
            .send()
            .await
            .is_err()
    );

    // Directly: CONNECT, then TLS trusting only our CA; the chain is [leaf, our CA] and
    // the leaf names api.test.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(fx.proxy_url.trim_start_matches("http://"))
        .await
        .unwrap();
    let port = fx.up.port;
    tcp.write_all(
        format!("CONNECT api.test:{port} HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 256];
    let n = tcp.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fx.ca.cert_der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("api.test").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
    assert_eq!(chain.len(), 2);
    assert_eq!(&chain[1], fx.ca.cert_der());
    // The handshake above verified the leaf for the name api.test against our CA only; its
    // DER names api.test (SAN and CN) and no other host.
    let der = chain[0].as_ref();
    let has = |n: &[u8]| der.windows(n.len()).any(|w| w == n);
    assert!(has(b"api.test"));
    assert!(!has(b"other.test"));
}

#[test]
fn the_proxy_knows_the_vaults_placeholder_form() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let vault = Vault::open(
            Store::open_in_memory().unwrap(),
            MasterKey::from_bytes([1; 32]),
        )
        .await
        .unwrap();
        assert!(
            vault
                .placeholder("x", 1)
                .starts_with(nanoclaw_egress::PLACEHOLDER_PREFIX)
        );
    });
}

/// A secret `gated` granted to `main` on api.test under /gated, needing the owner's approval.
async fn gated_grant(fx: &Fixture) -> i64 {
    fx.vault
        .set("gated", SecretString::from("gated-REAL-4444-dddd"))
        .await
        .unwrap();
    fx.vault
        .grant(GrantRequest {
            secret_name: "gated".into(),
            group_folder: "main".into(),
            host: "api.test".into(),
            path_prefix: "/gated".into(),
            inject: "header:x-gated: {secret}".into(),
            needs_approval: true,
        })
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_grant_needing_approval_waits_asks_the_owner_once_and_injects_once_approved() {
    let fx = start().await;
    let id = gated_grant(&fx).await;
    let c = fx.client();
    for _ in 0..2 {
        let resp = c.get(fx.url("api.test", "/gated/x")).send().await.unwrap();
        assert_eq!(resp.status(), 403);
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("waits for the owner's approval in the main chat")
                && body.contains("gated"),
            "{body}"
        );
    }
    assert_eq!(fx.seen_count(), 0, "nothing reached the upstream");
    let asked = fx.notifier.requests();
    assert_eq!(asked.len(), 1, "the owner is asked once: {asked:?}");
    assert_eq!(
        (
            asked[0].grant_id,
            asked[0].group.as_str(),
            asked[0].secret.as_str()
        ),
        (id, "main", "gated")
    );
    assert_eq!(asked[0].host, "api.test");
    let store = fx.vault.store();
    let pending = store.vault_approval(id).await.unwrap().unwrap();
    assert_eq!(pending.state, nanoclaw_store::ApprovalState::Pending);
    // Nor can a placeholder stand in for it meanwhile.
    let placeholder = fx.vault.placeholder("gated", 1);
    assert!(
        fx.vault
            .resolve_placeholder("main", &placeholder, "api.test", "/")
            .await
            .unwrap()
            .is_none()
    );

    store
        .vault_decide_approval(id, true, nanoclaw_store::now_ms())
        .await
        .unwrap()
        .unwrap();
    let resp = c.get(fx.url("api.test", "/gated/y")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fx.last_seen().header("x-gated"), ["gated-REAL-4444-dddd"]);
    assert_eq!(fx.notifier.requests().len(), 1);
    let records = fx.audit.records();
    let approvals: Vec<_> = records
        .iter()
        .filter(|r| r.reason.starts_with("approval:"))
        .collect();
    assert_eq!(approvals.len(), 2, "{records:?}");
    assert!(
        approvals
            .iter()
            .all(|r| r.decision == EgressDecision::Denied && r.status == 403)
    );
}

#[tokio::test]
async fn a_denied_grant_is_refused_and_never_injected() {
    let fx = start().await;
    let id = gated_grant(&fx).await;
    fx.vault
        .store()
        .vault_decide_approval(id, false, nanoclaw_store::now_ms())
        .await
        .unwrap()
        .unwrap();
    let resp = fx
        .client()
        .get(fx.url("api.test", "/gated/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(body.contains("the owner denied"), "{body}");
    assert_eq!(fx.seen_count(), 0);
    assert!(
        fx.notifier.requests().is_empty(),
        "a decided grant asks nobody"
    );
}

#[tokio::test]
async fn over_a_secrets_rate_limit_the_proxy_answers_429_with_retry_after() {
    let fx = start().await;
    assert!(
        fx.vault
            .store()
            .vault_set_rate_limit("anthropic", 3)
            .await
            .unwrap()
    );
    let c = fx.client();
    for i in 0..3 {
        let resp = c
            .get(fx.url("api.test", &format!("/v1/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = c.get(fx.url("api.test", "/v1/3")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("anthropic") && body.contains("3 request(s) per minute"),
        "{body}"
    );
    assert_eq!(fx.seen_count(), 3, "the upstream saw only the allowed ones");
    // Another secret is not limited by it.
    let resp = c
        .get(fx.url("api.test", "/custom/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let denied: Vec<_> = fx
        .audit
        .records()
        .into_iter()
        .filter(|r| r.decision == EgressDecision::Denied)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(denied[0].reason.starts_with("rate_limit"), "{denied:?}");
    assert_eq!(denied[0].secret.as_deref(), Some("anthropic"));
    assert_eq!(denied[0].status, 429);
}

#[tokio::test]
async fn a_path_that_could_escape_a_path_scoped_grant_is_refused_and_audited() {
    let fx = start().await;
    let c = fx.client();
    let before = fx.seen_count();
    // reqwest normalizes `..` itself; encoded slashes and backslashes reach the proxy as sent.
    for path in ["/openai%2F..%2Fadmin", "/openai/x%5c..%5cadmin"] {
        let resp = c.get(fx.url("api.test", path)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("could escape a path-scoped grant"), "{body}");
    }
    assert_eq!(fx.seen_count(), before, "nothing reached the upstream");
    let denied: Vec<_> = fx
        .audit
        .records()
        .into_iter()
        .filter(|r| r.decision == EgressDecision::Denied)
        .collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|r| r.status == 400 && r.reason.starts_with("bad_path"))
    );
}

#[tokio::test]
async fn path_parameters_and_double_encoding_cannot_reach_a_path_scoped_grant() {
    let fx = start().await;
    let c = fx.client();
    let before = fx.seen_count();
    // `openai` is granted on /openai only; each of these is /admin (or worse) to some server.
    let attempts = [
        ("/openai/..;/admin", "`;` path parameter"),
        ("/openai/%2e%2e;/admin", "`;` path parameter"),
        ("/openai/%2e%2e%3b/admin", "encoded `;`"),
        ("/openai/%252e%252e/admin", "double encoding"),
        ("/openai/%252fadmin", "double encoding"),
        ("/openai/%c0%ae%c0%ae/admin", "not valid UTF-8"),
    ];
    for (path, why) in attempts {
        let resp = c.get(fx.url("api.test", path)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("could escape a path-scoped grant") && body.contains(why),
            "{path}: {body}"
        );
        assert!(!body.contains(OPENAI), "{body}");
    }
    assert_eq!(fx.seen_count(), before, "nothing reached the upstream");
    let denied: Vec<_> = fx
        .audit
        .records()
        .into_iter()
        .filter(|r| r.decision == EgressDecision::Denied)
        .collect();
    assert_eq!(denied.len(), attempts.len(), "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|r| r.status == 400 && r.reason.starts_with("bad_path") && r.secret.is_none()),
        "{denied:?}"
    );
    // The grant itself still works on its own path.
    let resp = c
        .get(fx.url("api.test", "/openai/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        fx.last_seen().header("authorization"),
        vec![format!("Bearer {OPENAI}").as_str()]
    );
}

#[tokio::test]
async fn slow_request_heads_and_bodies_are_cut_off_and_audited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = start_tuned(|proxy| {
        proxy.with_timeouts(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(1),
        )
    })
    .await;
    let proxy_addr = fx.proxy_url.trim_start_matches("http://").to_owned();

    // A head dribbled a byte at a time is closed once overdue, however long it keeps going.
    let mut dribbler = tokio::net::TcpStream::connect(&proxy_addr).await.unwrap();
    dribbler
        .write_all(b"GET http://plain.test/ HTTP/1.1\r\n")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            dribbler.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a dribbling head was still served after 60 s"
                );
                let _ = dribbler.write_all(b"x").await;
            }
        }
    }

    // A body the leak guard must read whole but that stalls is answered 408 and audited.
    let before = fx.seen_count();
    let mut stalled = tokio::net::TcpStream::connect(&proxy_addr).await.unwrap();
    let port = fx.up.port;
    stalled
        .write_all(
            format!(
                "POST http://plain.test:{port}/upload HTTP/1.1\r\nhost: plain.test:{port}\r\ncontent-length: 100\r\n\r\nabc"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stalled.read(&mut answer),
    )
    .await
    .expect("the proxy answers a stalled body")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert_eq!(fx.seen_count(), before, "nothing reached the upstream");
    let audited = fx.audit.records();
    assert!(
        audited
            .iter()
            .any(|r| r.status == 408 && r.reason.starts_with("body_timeout")),
        "{audited:?}"
    );
}

/// A host only a skill allows is intercepted (it has no grant) so each request's method is
/// checked against the skill's declared methods inside the tunnel.
#[tokio::test]
async fn a_skill_only_host_is_intercepted_and_takes_only_the_declared_methods() {
    let fx = start().await;
    let client = fx.client();
    let ok = client
        .get(fx.url("skill.test", "/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(fx.last_seen().host_sni, "skill.test");
    let before = fx.seen_count();
    let refused = client
        .post(fx.url("skill.test", "/items"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("only by a skill") && body.contains("GET"),
        "{body}"
    );
    assert_eq!(fx.seen_count(), before, "the refused request never left");
}

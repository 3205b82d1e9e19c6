//! The listener and the replies over real HTTP on loopback: a test "host" reads what the
//! channel sends and acknowledges it as the real host does (deduplicating by platform id).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoclaw_channel::memory::MemoryLedger;
use nanoclaw_channel::{ChannelEvent, HealthCell, InboundEvent, OutgoingMessage, RouteOutcome};
use nanoclaw_channel_webhook::reply::Replier;
use nanoclaw_channel_webhook::server::{Seen, Server, router};
use nanoclaw_channel_webhook::sign::{sign_generic, sign_github};
use nanoclaw_channel_webhook::{Hook, WebhookConfig};
use secrecy::SecretString;

const SECRET: &str = "hook-secret";

fn now() -> i64 {
    nanoclaw_channel::now_ms() / 1000
}

fn hook_config(extra: &str) -> WebhookConfig {
    let text = format!(
        "{extra}\n[hooks.gh]\ngroup = \"main\"\nscheme = \"github\"\n\
         [hooks.gen]\ngroup = \"main\"\nscheme = \"generic\"\nmax_body_bytes = 1000\n"
    );
    toml::Value::Table(toml::from_str(&text).unwrap())
        .try_into()
        .unwrap()
}

fn hooks(config: &WebhookConfig) -> Arc<BTreeMap<String, Hook>> {
    Arc::new(
        config
            .hooks
            .iter()
            .map(|(name, hook)| {
                (
                    name.clone(),
                    Hook {
                        name: name.clone(),
                        config: hook.clone(),
                        secret: Some(SecretString::from(SECRET)),
                    },
                )
            })
            .collect(),
    )
}

/// What the test host received, and the platform ids it has stored.
#[derive(Default)]
struct TestHost {
    events: Mutex<Vec<InboundEvent>>,
    stored: Mutex<HashSet<(String, String)>>,
}

struct Running {
    url: String,
    host: Arc<TestHost>,
    health: Arc<HealthCell>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves the hooks of `config` on a free port; `host` keeps what is stored across
/// "restarts" (as the real host's database does); `ack_delay` holds each acknowledgement.
async fn serve(config: &WebhookConfig, host: Arc<TestHost>, ack_delay: Duration) -> Running {
    serve_remembering(config, host, ack_delay, Seen::default()).await
}

/// [`serve`] with the channel's memory of signatures (durable when given a state store).
async fn serve_remembering(
    config: &WebhookConfig,
    host: Arc<TestHost>,
    ack_delay: Duration,
    seen: Seen,
) -> Running {
    let (sink, mut rx) = tokio::sync::mpsc::channel(1024);
    let health = Arc::new(HealthCell::default());
    let server = Arc::new(Server::new(
        config,
        hooks(config),
        Arc::clone(&health),
        sink,
        Arc::new(seen),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let h = Arc::clone(&host);
    let reader = tokio::spawn(async move {
        while let Some(ChannelEvent::Inbound(mut event)) = rx.recv().await {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                tokio::time::sleep(ack_delay).await;
                let new = h
                    .stored
                    .lock()
                    .unwrap()
                    .insert((event.chat_id.clone(), event.platform_msg_id.clone()));
                let ack = event.ack.take().unwrap();
                let outcome = if new {
                    RouteOutcome::Accepted
                } else {
                    RouteOutcome::Duplicate
                };
                h.events.lock().unwrap().push(event);
                let _ = ack.send(outcome);
            });
        }
    });
    let app = router(server);
    let task = tokio::spawn(async move {
        let _reader = reader;
        axum::serve(listener, app).await.unwrap();
    });
    Running {
        url,
        host,
        health,
        task,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_github(url: &str, body: &str, delivery: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/hooks/gh"))
        .header(
            "x-hub-signature-256",
            sign_github(SECRET.as_bytes(), body.as_bytes()),
        )
        .header("x-github-event", "issues")
        .header("x-github-delivery", delivery)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn post_generic(url: &str, body: &str, t: i64, id: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(format!("{url}/hooks/gen"))
        .header(
            "x-signature",
            sign_generic(SECRET.as_bytes(), body.as_bytes(), t),
        )
        .body(body.to_owned());
    if let Some(id) = id {
        request = request.header("x-webhook-id", id);
    }
    request.send().await.unwrap()
}

async fn error_of(response: reqwest::Response) -> String {
    let v: serde_json::Value = response.json().await.unwrap();
    v["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn good_signatures_become_turns_and_bad_ones_are_refused() {
    let config = hook_config("");
    let r = serve(&config, Arc::default(), Duration::ZERO).await;
    let body = r#"{"action":"opened","issue":{"title":"Crash on start","html_url":"https://github.com/o/r/issues/1"},"repository":{"full_name":"o/r"},"sender":{"login":"alice"}}"#;
    let ok = post_github(&r.url, body, "d-1").await;
    assert_eq!(ok.status(), 202);
    let ok = post_generic(&r.url, "plain words", now(), Some("g-1")).await;
    assert_eq!(ok.status(), 202);
    {
        let events = r.host.events.lock().unwrap();
        assert_eq!(events.len(), 2);
        let gh = &events[0];
        assert_eq!(gh.chat_id, "hook:gh");
        assert_eq!(gh.platform_msg_id, "d-1");
        assert_eq!(gh.sender, "gh");
        assert!(gh.mentions_me && !gh.from_bot && !gh.is_group);
        assert!(
            gh.text.starts_with("Webhook gh (untrusted payload"),
            "{}",
            gh.text
        );
        assert!(
            gh.text
                .contains("GitHub issues.opened in o/r by alice: Crash on start https://github.com/o/r/issues/1"),
            "{}",
            gh.text
        );
        assert!(
            events[1].text.ends_with("\nplain words"),
            "{}",
            events[1].text
        );
        assert_eq!(events[1].platform_msg_id, "g-1");
    }
    // A wrong secret, a changed body, a missing header: 401, nothing reaches the host.
    let wrong = client()
        .post(format!("{}/hooks/gh", r.url))
        .header(
            "x-hub-signature-256",
            sign_github(b"guess", body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(error_of(wrong).await, "signature does not match");
    let changed = client()
        .post(format!("{}/hooks/gh", r.url))
        .header("x-hub-signature-256", sign_github(SECRET.as_bytes(), b"{}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 401);
    let unsigned = client()
        .post(format!("{}/hooks/gen", r.url))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(error_of(unsigned).await, "missing X-Signature header");
    // GitHub's signature on the generic hook does not count.
    let crossed = client()
        .post(format!("{}/hooks/gen", r.url))
        .header("x-hub-signature-256", sign_github(SECRET.as_bytes(), b"hi"))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), 401);
    assert_eq!(r.host.events.lock().unwrap().len(), 2);
    let health = r.health.snapshot();
    assert!(health.last_event.is_some());
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap()
            .contains("refused a delivery"),
        "{health:?}"
    );
    r.task.abort();
}

#[tokio::test]
async fn replays_are_refused_by_time_and_by_delivery_id_also_after_a_restart() {
    let config = hook_config("");
    let host: Arc<TestHost> = Arc::default();
    let r = serve(&config, Arc::clone(&host), Duration::ZERO).await;
    // Outside the 5-minute window either way: 401, whatever the signature.
    for t in [now() - 301, now() + 301] {
        let stale = post_generic(&r.url, "old news", t, Some("old")).await;
        assert_eq!(stale.status(), 401);
        assert_eq!(
            error_of(stale).await,
            "signature timestamp outside the replay window"
        );
    }
    let t = now();
    assert_eq!(
        post_generic(&r.url, "once", t, Some("id-1")).await.status(),
        202
    );
    // The same signed bytes again, even under a new delivery id: not a second turn.
    let again = post_generic(&r.url, "once", t, Some("id-2")).await;
    assert_eq!(again.status(), 200);
    let v: serde_json::Value = again.json().await.unwrap();
    assert_eq!(v["status"], "duplicate");
    assert_eq!(post_github(&r.url, "{}", "gh-1").await.status(), 202);
    r.task.abort();
    // A new listener (the host restarted; the channel's memory is gone): the delivery id
    // is the message's platform id, which the host has stored.
    let r = serve(&config, Arc::clone(&host), Duration::ZERO).await;
    let redelivered = post_github(&r.url, "{}", "gh-1").await;
    assert_eq!(redelivered.status(), 200);
    // Without an id header the signature is the id.
    let t = now();
    assert_eq!(post_generic(&r.url, "no id", t, None).await.status(), 202);
    r.task.abort();
    let r = serve(&config, Arc::clone(&host), Duration::ZERO).await;
    assert_eq!(post_generic(&r.url, "no id", t, None).await.status(), 200);
    let turns: Vec<String> = host
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.platform_msg_id.clone())
        .collect();
    assert_eq!(turns.len(), 5, "{turns:?}");
    let unique: HashSet<&String> = turns.iter().collect();
    assert_eq!(unique.len(), 3, "{turns:?}");
    r.task.abort();
}

/// GitHub's scheme signs no time and its delivery id header is not signed: a captured
/// delivery replayed under a new id after the host restarted must still not be a new turn.
#[tokio::test]
async fn a_github_replay_under_a_new_delivery_id_is_refused_after_a_restart() {
    let config = hook_config("");
    let host: Arc<TestHost> = Arc::default();
    // The channel's state store, which lives in the host's database across restarts.
    let state: Arc<nanoclaw_channel::memory::MemoryState> = Arc::default();
    let r = serve_remembering(
        &config,
        Arc::clone(&host),
        Duration::ZERO,
        Seen::durable(state.clone()),
    )
    .await;
    let body = r#"{"action":"opened","issue":{"title":"deploy"}}"#;
    assert_eq!(post_github(&r.url, body, "gh-a").await.status(), 202);
    r.task.abort();
    let r = serve_remembering(
        &config,
        Arc::clone(&host),
        Duration::ZERO,
        Seen::durable(state),
    )
    .await;
    let replayed = post_github(&r.url, body, "gh-forged-new-id").await;
    assert_eq!(replayed.status(), 200);
    let v: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(v["status"], "duplicate");
    assert_eq!(host.events.lock().unwrap().len(), 1, "one turn only");
    r.task.abort();
}

/// Signatures are kept in the host's database for the retention (90 days), not forever:
/// an older one is forgotten, a newer one still refuses its replay after a restart.
#[tokio::test]
async fn remembered_signatures_are_forgotten_after_the_retention_only() {
    use nanoclaw_channel_webhook::server::SEEN_RETENTION;
    let config = hook_config("");
    let host: Arc<TestHost> = Arc::default();
    let state: Arc<nanoclaw_channel::memory::MemoryState> = Arc::default();
    let r = serve_remembering(
        &config,
        Arc::clone(&host),
        Duration::ZERO,
        Seen::durable(state.clone()),
    )
    .await;
    let old_body = r#"{"action":"opened","issue":{"title":"long ago"}}"#;
    assert_eq!(post_github(&r.url, old_body, "gh-old").await.status(), 202);
    let old_keys = state.keys();
    assert_eq!(old_keys.len(), 1, "{old_keys:?}");
    let new_body = r#"{"action":"opened","issue":{"title":"today"}}"#;
    assert_eq!(post_github(&r.url, new_body, "gh-new").await.status(), 202);
    r.task.abort();
    state.backdate(&old_keys[0], SEEN_RETENTION + Duration::from_secs(3600));

    // The channel's daily pruning (its first pass runs at once).
    let seen = Arc::new(Seen::durable(state.clone()));
    let pruning = tokio::time::timeout(Duration::from_secs(2), seen.prune_forever()).await;
    assert!(pruning.is_err(), "pruning runs until the channel stops");
    let left = state.keys();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left[0], old_keys[0], "the old signature is still kept");

    let r = serve_remembering(
        &config,
        Arc::clone(&host),
        Duration::ZERO,
        Seen::durable(state),
    )
    .await;
    let replayed = post_github(&r.url, new_body, "gh-new-forged").await;
    assert_eq!(replayed.status(), 200);
    let v: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(v["status"], "duplicate");
    r.task.abort();
}

#[tokio::test]
async fn routes_methods_and_sizes_get_their_status_codes() {
    let config = hook_config("");
    let r = serve(&config, Arc::default(), Duration::ZERO).await;
    let c = client();
    let missing = c
        .post(format!("{}/hooks/nope", r.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_of(missing).await, "no such hook");
    assert_eq!(
        c.get(format!("{}/", r.url)).send().await.unwrap().status(),
        404
    );
    let get = c.get(format!("{}/hooks/gh", r.url)).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    // Declared too large: refused before a byte of the body is read.
    let big = "x".repeat(1001);
    let declared = post_generic(&r.url, &big, now(), None).await;
    assert_eq!(declared.status(), 413);
    assert_eq!(error_of(declared).await, "body over the hook's limit");
    // Streamed without a length, endlessly: refused once the limit is passed, not buffered
    // to the end (the stream would never end).
    let endless = futures_stream(256, 1_000_000);
    let streamed = c
        .post(format!("{}/hooks/gen", r.url))
        .header("x-signature", sign_generic(SECRET.as_bytes(), b"", now()))
        .body(reqwest::Body::wrap_stream(endless))
        .send()
        .await;
    match streamed {
        Ok(response) => assert_eq!(response.status(), 413),
        // The server may close the connection while the client still writes.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert!(r.host.events.lock().unwrap().is_empty());
    r.task.abort();
}

/// `chunks` chunks of `size` bytes, as a stream.
fn futures_stream(
    size: usize,
    chunks: usize,
) -> impl futures_core_stream::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_core_stream::iter((0..chunks).map(move |_| Ok(vec![b'x'; size])))
}

mod futures_core_stream {
    pub use tokio_stream::{Stream, iter};
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let config = hook_config("body_timeout_secs = 1");
    let r = serve(&config, Arc::default(), Duration::ZERO).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(b"start".to_vec())).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let response = client()
        .post(format!("{}/hooks/gen", r.url))
        .header(
            "x-signature",
            sign_generic(SECRET.as_bytes(), b"start", now()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    drop(tx);
    r.task.abort();
}

#[tokio::test]
async fn many_concurrent_posts_are_all_answered_and_limits_say_when_to_retry() {
    let config = hook_config("max_in_flight = 200\nrate_per_minute = 1000");
    let host: Arc<TestHost> = Arc::default();
    // The host takes 200 ms per delivery: they overlap.
    let r = serve(&config, Arc::clone(&host), Duration::from_millis(200)).await;
    let t = now();
    let posts: Vec<_> = (0..100)
        .map(|i| {
            let url = r.url.clone();
            tokio::spawn(async move {
                post_generic(&url, &format!("delivery {i}"), t, Some(&format!("c-{i}")))
                    .await
                    .status()
            })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.unwrap(), 202);
    }
    assert_eq!(host.events.lock().unwrap().len(), 100);
    r.task.abort();

    // Two in flight at most: the third waits its turn with a 429 and Retry-After.
    let config = hook_config("max_in_flight = 2");
    let r = serve(&config, Arc::default(), Duration::from_millis(500)).await;
    let posts: Vec<_> = (0..3)
        .map(|i| {
            let url = r.url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                post_generic(&url, &format!("p{i}"), now(), None).await
            })
        })
        .collect();
    let mut codes = Vec::new();
    for post in posts {
        let response = post.await.unwrap();
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        codes.push(response.status().as_u16());
    }
    assert_eq!(codes, vec![202, 202, 429]);
    r.task.abort();

    // A hook's rate: 2 a minute, the third is told to wait about 30 s.
    let config = hook_config("rate_per_minute = 2");
    let r = serve(&config, Arc::default(), Duration::ZERO).await;
    for i in 0..2 {
        assert_eq!(
            post_generic(&r.url, &format!("r{i}"), now(), None)
                .await
                .status(),
            202
        );
    }
    let limited = post_generic(&r.url, "r2", now(), None).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=31).contains(&wait), "{wait}");
    // Other hooks have their own budget.
    assert_eq!(post_github(&r.url, "{}", "other").await.status(), 202);
    r.task.abort();
}

/// A reply receiver: records (headers, body) and answers the queued statuses first.
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<(axum::http::HeaderMap, serde_json::Value)>>,
    answers: Mutex<Vec<(u16, Option<&'static str>)>>,
}

async fn receiver() -> (Arc<Receiver>, String) {
    use axum::response::IntoResponse;
    let rec: Arc<Receiver> = Arc::default();
    let r = Arc::clone(&rec);
    let app = axum::Router::new().route(
        "/reply",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let r = Arc::clone(&r);
                async move {
                    let next = {
                        let mut answers = r.answers.lock().unwrap();
                        (!answers.is_empty()).then(|| answers.remove(0))
                    };
                    if let Some((code, retry)) = next {
                        let mut response = axum::http::StatusCode::from_u16(code)
                            .unwrap()
                            .into_response();
                        if let Some(retry) = retry {
                            response
                                .headers_mut()
                                .insert("retry-after", retry.parse().unwrap());
                        }
                        return response;
                    }
                    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    // A receiver checks the signature as the channel documents it.
                    let sig = headers["x-signature"].to_str().unwrap();
                    nanoclaw_channel_webhook::sign::verify_generic(
                        SECRET.as_bytes(),
                        &body,
                        Some(sig),
                        now(),
                        300,
                    )
                    .unwrap();
                    r.got.lock().unwrap().push((headers, value));
                    axum::http::StatusCode::NO_CONTENT.into_response()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reply", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rec, url)
}

fn replier(url: &str, max_chars: usize, ledger: Arc<MemoryLedger>) -> Replier {
    let config: WebhookConfig = toml::Value::Table(
        toml::from_str(&format!(
            "[hooks.ci]\ngroup = \"main\"\nscheme = \"generic\"\nreply_url = \"{url}\"\n\
             [hooks.quiet]\ngroup = \"main\"\nscheme = \"generic\"\n"
        ))
        .unwrap(),
    )
    .try_into()
    .unwrap();
    Replier::new(hooks(&config), ledger, max_chars, 1024).unwrap()
}

fn message(chat: &str, text: &str) -> OutgoingMessage {
    OutgoingMessage {
        outbound_id: 1,
        idempotency_key: "out-1".into(),
        chat_id: chat.into(),
        text: text.into(),
        kind: "reply".into(),
        reply_to: Some("d-9".into()),
        ..OutgoingMessage::default()
    }
}

#[tokio::test]
async fn replies_are_signed_split_keyed_and_sent_once() {
    let (rec, url) = receiver().await;
    let ledger = Arc::new(MemoryLedger::default());
    let replies = replier(&url, 100, Arc::clone(&ledger));
    let text = (0..40)
        .map(|i| format!("word{i:02}"))
        .collect::<Vec<_>>()
        .join(" ");
    replies.deliver(&message("hook:ci", &text)).await.unwrap();
    let got = rec.got.lock().unwrap().clone();
    assert!(got.len() > 1, "{} parts", got.len());
    let mut joined = Vec::new();
    for (i, (headers, body)) in got.iter().enumerate() {
        assert_eq!(headers["idempotency-key"], format!("out-1:{i}").as_str());
        assert_eq!(headers["x-nanoclaw-reply"], "1");
        assert_eq!(body["hook"], "ci");
        assert_eq!(body["in_reply_to"], "d-9");
        assert_eq!(body["part"], i + 1);
        assert_eq!(body["parts"], got.len());
        joined.push(body["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(joined.join(" "), text);
    // Delivered again (the host retrying after losing the result): nothing new is posted.
    replies.deliver(&message("hook:ci", &text)).await.unwrap();
    assert_eq!(rec.got.lock().unwrap().len(), got.len());
    // A hook without reply_url refuses: the host sends those to the main chat.
    let err = replies
        .deliver(&message("hook:quiet", "x"))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_429_asks_to_wait_and_a_5xx_is_retried_with_the_same_key() {
    let (rec, url) = receiver().await;
    let ledger = Arc::new(MemoryLedger::default());
    let replies = replier(&url, 1000, Arc::clone(&ledger));
    rec.answers.lock().unwrap().push((429, Some("7")));
    let err = replies
        .deliver(&message("hook:ci", "hello"))
        .await
        .unwrap_err();
    match err {
        nanoclaw_channel::ChannelError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(7))
        }
        other => panic!("{other}"),
    }
    rec.answers.lock().unwrap().push((503, None));
    let err = replies
        .deliver(&message("hook:ci", "hello"))
        .await
        .unwrap_err();
    assert!(err.is_retryable() && !err.never_reached_platform(), "{err}");
    replies.deliver(&message("hook:ci", "hello")).await.unwrap();
    let got = rec.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["idempotency-key"], "out-1:0");
    rec.answers.lock().unwrap().push((404, None));
    let mut other = message("hook:ci", "gone");
    other.idempotency_key = "out-2".into();
    let err = replies.deliver(&other).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

//! The web dashboard over real HTTP: signing in with a one-time link, what is refused
//! (no session, a spent link, a change without its CSRF token, from another origin or as a
//! form, a request for another Host), the web chat end to end with the scripted model and
//! several browsers open, a reply that waits for a browser, approvals decided and audited.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::common::*;
use nanoclaw_host::config::Paths;
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_store::{ApprovalState, Store};
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};
use nanoclaw_vault::{GrantRequest, MasterKey, SecretString, Vault};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};

fn key() -> MasterKey {
    MasterKey::from_bytes([7u8; 32])
}

/// A host with the vault open and its dashboard on a free loopback port, its home and the
/// scripted model (echo) it talks to.
async fn running() -> (TestHome, ScriptedModel, Host) {
    running_with(Scenario::echo()).await
}

/// [`running`] with the model answering as `scenario` says.
async fn running_with(scenario: Scenario) -> (TestHome, ScriptedModel, Host) {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario.with_api_key(TEST_KEY))
        .await
        .unwrap();
    let host = Host::start(HostOptions {
        master_key: Some(key()),
        ..host_options(home.path(), &model, config_for_tests(), None)
    })
    .await
    .unwrap();
    (home, model, host)
}

/// Where the host's dashboard listens (`http://127.0.0.1:PORT`).
async fn base_url(home: &TestHome) -> String {
    let file = Paths::new(home.path()).dashboard_addr_file();
    let addr = eventually(30, "the dashboard to listen", || {
        let file = file.clone();
        async move { nanoclaw_dashboard::bound_addr(&file) }
    })
    .await;
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in browser: its session cookie and CSRF token.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn sign_in(base: &str, store: &Store) -> Browser {
        let http = client();
        let token = nanoclaw_dashboard::auth::mint_login(store, nanoclaw_host::now_ms())
            .await
            .unwrap();
        let login = http
            .get(format!("{base}/login?token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::SEE_OTHER);
        let set = login.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        Browser::with_cookie(base, http, cookie).await
    }

    /// The browser holding session `cookie`, with the CSRF token the page reads at start.
    async fn with_cookie(base: &str, http: reqwest::Client, cookie: String) -> Browser {
        let session: serde_json::Value = http
            .get(format!("{base}/api/session"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Browser {
            base: base.to_owned(),
            http,
            cookie,
            csrf: session["csrf"].as_str().unwrap().to_owned(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// A change as the page sends it: JSON, the CSRF token, the dashboard's own origin.
    fn post(&self, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .header("X-CSRF-Token", &self.csrf)
            .header(ORIGIN, &self.base)
            .json(&body)
    }

    /// Sends `text` to group `group`'s web chat as the page does (`id`: the page's id for the
    /// message); what the host made of it.
    async fn say(&self, group: &str, id: &str, text: &str) -> serde_json::Value {
        let response = self
            .post(
                &format!("/api/chat/{group}"),
                serde_json::json!({ "id": id, "text": text }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Opens the web chat's event stream for `group`, as an `EventSource` does.
    async fn open_chat(&self, group: &str) -> EventStream {
        let response = self.get(&format!("/api/chat/{group}/events")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        EventStream {
            response,
            buffer: String::new(),
        }
    }
}

struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// The next event of type `kind` (others are skipped), within 60 s.
    async fn next_of(&mut self, kind: &str) -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let frame: String = self.buffer.drain(..end + 2).collect();
                    let data: String = frame
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    let event: serde_json::Value = serde_json::from_str(&data).unwrap();
                    if event["type"] == kind {
                        return event;
                    }
                }
                let chunk = self.response.chunk().await.unwrap().expect("stream open");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} event within 60 s"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_link_works_once_and_nothing_works_without_a_session() {
    let (home, _model, host) = running().await; // the model serves until the test ends
    let base = base_url(&home).await;
    let http = client();

    // Signed out: the page says how to sign in; the API refuses.
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    assert!(page.text().await.unwrap().contains("nanoclaw dashboard"));
    let api = http
        .get(format!("{base}/api/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let bogus = http
        .get(format!("{base}/login?token=not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), StatusCode::UNAUTHORIZED);
    assert!(bogus.headers().get(SET_COOKIE).is_none());

    // A link minted by `nanoclaw dashboard` signs in once.
    let token = nanoclaw_dashboard::auth::mint_login(host.store(), nanoclaw_host::now_ms())
        .await
        .unwrap();
    let login = http
        .get(format!("{base}/login?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        login.headers()[LOCATION],
        "/",
        "the token leaves the address bar"
    );
    let set = login.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} missing from {set}");
    }
    let again = http
        .get(format!("{base}/login?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::UNAUTHORIZED,
        "a link works once"
    );

    // A link older than ten minutes does not work at all.
    let old = nanoclaw_dashboard::auth::mint_login(
        host.store(),
        nanoclaw_host::now_ms() - 11 * 60 * 1000,
    )
    .await
    .unwrap();
    let expired = http
        .get(format!("{base}/login?token={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);

    // Signed in: the page, with headers that keep it out of frames and other sites' scripts.
    let cookie = set.split(';').next().unwrap().to_owned();
    let browser = Browser::with_cookie(&base, http.clone(), cookie).await;
    let page = browser.get("/").await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let overview = browser.get_json("/api/overview").await;
    let web = overview["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .expect("the dashboard lists itself among the channels");
    assert_eq!(web["health"]["state"], "connected");
    assert_eq!(overview["host"]["runtime"], "native");

    // Signing out ends the session for good.
    let out = browser
        .post("/api/logout", serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert_eq!(
        browser.get("/api/overview").await.status(),
        StatusCode::UNAUTHORIZED
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_csrf_token_the_own_origin_and_json_and_are_audited() {
    let (home, _model, host) = running().await; // the model serves until the test ends
    let store = host.store().clone();
    let vault = Vault::open(store.clone(), key()).await.unwrap();
    let grant = github_grant_waiting(&vault, "main", "ghp_DASHBOARDtest0123456789").await;
    let base = base_url(&home).await;
    let browser = Browser::sign_in(&base, &store).await;
    let path = format!("/api/vault/approvals/{}", grant.id);
    let url = format!("{base}{path}");
    let approve = serde_json::json!({ "approve": true });

    // No CSRF token, a wrong one, another site's origin, a form post: all refused.
    let refused = [
        browser
            .http
            .post(&url)
            .header(COOKIE, &browser.cookie)
            .json(&approve),
        browser
            .http
            .post(&url)
            .header(COOKIE, &browser.cookie)
            .header("X-CSRF-Token", "guessed")
            .json(&approve),
        browser
            .post(&path, approve.clone())
            .header(ORIGIN, "http://evil.example"),
        browser
            .http
            .post(&url)
            .header(COOKIE, &browser.cookie)
            .header("X-CSRF-Token", &browser.csrf)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("approve=true"),
    ];
    for request in refused {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // A page on another name that resolves to 127.0.0.1 (DNS rebinding) reaches nothing.
    let rebound = browser
        .http
        .get(format!("{base}/api/vault"))
        .header(COOKIE, &browser.cookie)
        .header(HOST, "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        store.vault_approval(grant.id).await.unwrap().unwrap().state,
        ApprovalState::Pending,
        "nothing refused changed anything"
    );

    // Earlier history in the audit log, for its pages below.
    for n in 0..3 {
        nanoclaw_host::admin_audit::record(
            &store,
            "main",
            format!("/groups/main/earlier/{n}"),
            true,
            format!("earlier change {n}"),
        )
        .await;
    }

    // The page's own request approves, and the audit log says who did it.
    let vault_view = browser.get_json("/api/vault").await;
    assert_eq!(vault_view["approvals"][0]["state"], "pending");
    assert!(
        !vault_view.to_string().contains("ghp_DASHBOARD"),
        "no secret value reaches the page"
    );
    let decided = browser.post(&path, approve).send().await.unwrap();
    assert_eq!(decided.status(), StatusCode::OK);
    assert_eq!(
        store.vault_approval(grant.id).await.unwrap().unwrap().state,
        ApprovalState::Approved
    );
    let audit = browser.get_json("/api/audit").await;
    let row = &audit[0];
    assert_eq!(row["method"], "ADMIN");
    assert!(
        row["reason"].as_str().unwrap().contains("in the dashboard"),
        "{row}"
    );
    let verified = browser.get_json("/api/audit/verify").await;
    assert_eq!(verified["intact"], true, "{verified}");
    // Older pages: only rows below the one given, newest first.
    let newest = row["id"].as_i64().unwrap();
    let older = browser
        .get_json(&format!("/api/audit?before={newest}"))
        .await;
    let ids: Vec<i64> = older
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "the three earlier rows: {ids:?}");
    assert!(ids.iter().all(|id| *id < newest), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // A grant that does not exist is named as such.
    let missing = browser
        .post(
            "/api/vault/approvals/9999",
            serde_json::json!({ "approve": false }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // A row changed behind the log's back is found by the page's check.
    store
        .call(|conn| {
            conn.execute(
                "UPDATE audit SET reason = 'nothing happened' WHERE id = (SELECT MIN(id) FROM audit)",
                [],
            )
            .map(|_| ())
            .map_err(nanoclaw_store::StoreError::from)
        })
        .await
        .unwrap();
    let verified = browser.get_json("/api/audit/verify").await;
    assert_eq!(verified["intact"], false, "{verified}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_reaches_the_agent_and_every_browser_open_on_it() {
    let (home, _model, host) = running().await; // the model serves until the test ends
    let base = base_url(&home).await;
    let first = Browser::sign_in(&base, host.store()).await;
    let second = Browser::sign_in(&base, host.store()).await;
    let mut first_stream = first.open_chat("main").await;
    let mut second_stream = second.open_chat("main").await;

    let outcome = first.say("main", "m-1", "hello from the browser").await;
    assert_eq!(outcome["outcome"], "accepted", "{outcome}");
    for stream in [&mut first_stream, &mut second_stream] {
        let reply = stream.next_of("message").await;
        let text = reply["text"].as_str().unwrap();
        // The scripted model echoes what the agent was given: the message, as the agent sees it.
        assert!(
            text.starts_with("echo: ") && text.contains("hello from the browser"),
            "{text}"
        );
    }
    // The same message sent twice (a retried request) is stored once.
    let again = first.say("main", "m-1", "hello from the browser").await;
    assert_eq!(again["outcome"], "duplicate");
    let history = first.get_json("/api/chat/main/history").await;
    let lines = history.as_array().unwrap();
    assert_eq!(lines.len(), 2, "{history}");
    assert_eq!(lines[0]["direction"], "in");
    assert_eq!(lines[0]["text"], "hello from the browser");
    assert_eq!(lines[0]["from"], "you");
    assert_eq!(lines[1]["direction"], "out");
    assert!(
        lines[1]["text"]
            .as_str()
            .unwrap()
            .contains("hello from the browser")
    );

    // Bad input is named; nothing reaches the agent.
    for (body, status) in [
        (
            serde_json::json!({ "id": "m-2", "text": "  " }),
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({ "id": "../x", "text": "hi" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({ "id": "m-3", "text": "x".repeat(70 * 1024) }),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let response = first.post("/api/chat/main", body).send().await.unwrap();
        assert_eq!(response.status(), status);
    }
    let unknown = first
        .post(
            "/api/chat/nobody",
            serde_json::json!({ "id": "m-4", "text": "hi" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_no_browser_open_waits_and_arrives_when_one_opens() {
    let (home, _model, host) = running().await; // the model serves until the test ends
    let base = base_url(&home).await;
    let browser = Browser::sign_in(&base, host.store()).await;
    let sent = browser.say("main", "late-1", "answer me later").await;
    assert_eq!(sent["outcome"], "accepted");
    let store = host.store().clone();
    let chat = eventually(30, "the web chat to exist", || {
        let store = store.clone();
        async move { store.chat_by_platform("web", "main").await.unwrap() }
    })
    .await;
    eventually(60, "the reply to be written and wait", || {
        let store = store.clone();
        async move {
            let rows = store.outbound_for_chat(chat.id).await.unwrap();
            rows.iter()
                .any(|o| o.text.contains("answer me later") && o.delivered_at.is_none())
                .then_some(())
        }
    })
    .await;
    let mut stream = browser.open_chat("main").await;
    let reply = stream.next_of("message").await;
    assert!(
        reply["text"].as_str().unwrap().contains("answer me later"),
        "{reply}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_groups_tasks_and_the_skill_graph_drawn() {
    let (home, _model, host) = running().await; // the model serves until the test ends
    let base = base_url(&home).await;
    let browser = Browser::sign_in(&base, host.store()).await;
    let groups = browser.get_json("/api/groups").await;
    let main = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"]["is_main"] == true)
        .expect("the main group is listed");
    let channels: Vec<&str> = main["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chat"]["channel"].as_str().unwrap())
        .collect();
    assert!(channels.contains(&"terminal"), "{main}");
    assert_eq!(browser.get_json("/api/tasks").await, serde_json::json!([]));

    let graph = browser.get("/api/skills/main/graph.svg").await;
    assert_eq!(graph.status(), StatusCode::OK);
    assert_eq!(graph.headers()[CONTENT_TYPE], "image/svg+xml");
    let svg = graph.text().await.unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    for builtin in ["web-research", "daily-briefing"] {
        assert!(
            svg.contains(&format!("data-skill=\"{builtin}\"")),
            "{builtin} is drawn"
        );
    }
    assert_eq!(
        browser.get("/api/skills/nobody/graph.svg").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        browser.get("/api/tasks/no-such-task/runs").await.status(),
        StatusCode::NOT_FOUND
    );
    host.shutdown().await;
}

/// Runs the `nanoclaw` CLI on `home` (the owner's other hand while the host runs); its stdout.
fn cli(home: &TestHome, model: &ScriptedModel, args: &[&str]) -> String {
    let out = nanoclaw_command(home.path(), model, Some(TEST_KEY), args)
        .env("NANOCLAW_MASTER_KEY", "07".repeat(32))
        .env("NANOCLAW_KEYRING", "off")
        .env("NANOCLAW_RUNTIME", "native")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nanoclaw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What the pages show: a second group wired to a chat, two enabled skills (one bringing a
/// scheduled task, run once), a grant waiting for approval and another granted outright.
async fn seed(home: &TestHome, model: &ScriptedModel, store: &Store) -> String {
    let family = store
        .ensure_group(nanoclaw_store::NewGroup {
            name: "Family".into(),
            folder: "family".into(),
            trigger: Some("@Andy".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let chat = store
        .ensure_chat("telegram", "-100200300", "Family chat", true)
        .await
        .unwrap();
    store
        .wire(
            chat.id,
            family.id,
            nanoclaw_store::WiringOptions::new(true, nanoclaw_store::SessionMode::Shared),
        )
        .await
        .unwrap();
    let vault = Vault::open(store.clone(), key()).await.unwrap();
    github_grant_waiting(&vault, "main", "ghp_BROWSERtest0123456789").await;
    vault
        .set("weather", SecretString::from("wx_BROWSERtest0123456789"))
        .await
        .unwrap();
    vault
        .grant(GrantRequest {
            secret_name: "weather".into(),
            group_folder: "family".into(),
            host: "api.openweathermap.org".into(),
            path_prefix: "/data/".into(),
            inject: "query:appid".into(),
            needs_approval: false,
        })
        .await
        .unwrap();
    // A skill of the owner's own that builds on a bundled one and on one never installed:
    // the graph draws its edges, the missing one marked.
    let planner = home.path().join("skills/trip-planner");
    std::fs::create_dir_all(&planner).unwrap();
    std::fs::write(
        planner.join("SKILL.md"),
        "---\nname: trip-planner\ndescription: Plans trips with web research and maps.\n---\nPlan the trip.\n",
    )
    .unwrap();
    std::fs::write(
        planner.join("skill.toml"),
        "version = \"0.3.0\"\n\n[requires]\nweb-research = \"^1\"\nmaps = \"^2\"\n",
    )
    .unwrap();
    cli(
        home,
        model,
        &["skills", "enable", "daily-briefing", "web-research"],
    );
    let tasks: serde_json::Value =
        serde_json::from_str(&cli(home, model, &["tasks", "list", "--json"])).unwrap();
    let task_id = tasks[0]["task_id"].as_str().unwrap().to_owned();
    cli(home, model, &["tasks", "run-now", &task_id]);
    eventually(90, "the task's run to finish", || {
        let (store, task_id) = (store.clone(), task_id.clone());
        async move {
            let runs = store.task_runs(task_id, 10).await.unwrap();
            runs.iter().any(|r| r.finished_at.is_some()).then_some(())
        }
    })
    .await;
    task_id
}

/// Shows `hash` in the page and waits until it is drawn; times are then pinned, so a
/// screenshot compares the page, not the clock.
async fn show(page: &nanoclaw_test_support::browser::Page, hash: &str) {
    let name = hash.split('/').next().unwrap();
    page.eval(&format!(
        "document.body.dataset.ready = 'false'; location.hash = '#{hash}'; true"
    ))
    .await
    .unwrap();
    page.wait_for(
        &format!(
            "document.body.dataset.ready === 'true' && document.body.dataset.page === '{name}'"
        ),
        &format!("the {name} page"),
    )
    .await;
    page.eval("for (const t of document.querySelectorAll('time')) t.textContent = '2026-01-01 09:00:00'; true")
        .await
        .unwrap();
}

fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots")
}

/// The whole dashboard in Debian's headless Chromium: signing in by the link, every page drawn
/// and compared with its recorded screenshot, a chat with the agent typed and answered, an
/// approval clicked, the audit chain verified, signing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    use nanoclaw_test_support::browser::{Browser as Chromium, compare_screenshot};
    // Answers that do not change with the day: the screenshots compare the page, not the clock
    // the agent is told about (an echo would show it).
    let (home, model, host) = running_with(Scenario::new().rule(
        Matcher::Always,
        Reply::text("Nothing else today: the 08:00 briefing has run."),
    ))
    .await;
    let store = host.store().clone();
    let task_id = seed(&home, &model, &store).await;
    let base = base_url(&home).await;
    let chromium = Chromium::launch().await;
    let page = chromium.new_page().await;

    // Signed out, the page says how to get in.
    page.goto(&format!("{base}/")).await.unwrap();
    let text = page.eval("document.body.innerText").await.unwrap();
    assert!(
        text.as_str().unwrap().contains("nanoclaw dashboard"),
        "{text}"
    );

    // The owner's link signs in and leaves the address bar.
    let token = nanoclaw_dashboard::auth::mint_login(&store, nanoclaw_host::now_ms())
        .await
        .unwrap();
    page.goto(&format!("{base}/login?token={token}"))
        .await
        .unwrap();
    page.wait_for("document.body.dataset.ready === 'true'", "the overview")
        .await;
    assert_eq!(page.url().await, format!("{base}/"));

    // A conversation typed into the web chat and answered by the agent.
    show(&page, "chat/main").await;
    page.eval(
        "document.getElementById('chat-input').value = 'What is on today?'; \
         document.getElementById('chat-send').click(); true",
    )
    .await
    .unwrap();
    page.wait_for(
        "[...document.querySelectorAll('.msg.out')].some(m => m.textContent.includes('the 08:00 briefing has run'))",
        "the agent's reply in the chat",
    )
    .await;

    let pages: [(&str, String); 7] = [
        ("overview", "overview".into()),
        ("chat", "chat/main".into()),
        ("groups", "groups".into()),
        ("tasks", format!("tasks/{task_id}")),
        ("vault", "vault".into()),
        ("audit", "audit".into()),
        ("skills", "skills/main".into()),
    ];
    for (name, hash) in &pages {
        show(&page, hash).await;
        if *name == "skills" {
            page.wait_for(
                "(() => { const g = document.getElementById('skill-graph'); return g.complete && g.naturalWidth > 0; })()",
                "the skill graph to be drawn",
            )
            .await;
        }
        if *name == "audit" {
            page.eval("document.getElementById('verify').click(); true")
                .await
                .unwrap();
            page.wait_for(
                "document.querySelector('#verify-result .banner') !== null",
                "the chain's verdict",
            )
            .await;
            let verdict = page
                .eval("document.querySelector('#verify-result').textContent")
                .await
                .unwrap();
            assert!(
                verdict.as_str().unwrap().contains("Chain intact"),
                "{verdict}"
            );
        }
        if *name == "tasks" {
            let runs = page
                .eval("document.querySelectorAll('table')[1].querySelectorAll('tbody tr').length")
                .await
                .unwrap();
            assert_eq!(runs, 1, "the run is listed");
        }
        compare_screenshot(
            &format!("dashboard-{name}"),
            &page.screenshot().await,
            &screenshots(),
        );
    }

    // The owner approves the waiting grant with a click: through CSRF checks, into the store.
    show(&page, "vault").await;
    page.eval("document.querySelector('[data-approve]').click(); true")
        .await
        .unwrap();
    page.wait_for(
        "document.querySelector('[data-approve]') === null",
        "the approval to be decided",
    )
    .await;
    let approvals = store.vault_approvals().await.unwrap();
    assert_eq!(approvals[0].state, ApprovalState::Approved);

    // A task paused with a click.
    show(&page, &format!("tasks/{task_id}")).await;
    page.eval("document.getElementById('task-pause').click(); true")
        .await
        .unwrap();
    page.wait_for(
        "document.getElementById('task-resume') !== null",
        "the task to show as paused",
    )
    .await;
    let task = store.task(task_id.clone()).await.unwrap().unwrap();
    assert_eq!(task.status, nanoclaw_store::TaskStatus::Paused);

    // Signing out ends the session: the page asks for a link again.
    page.eval("document.getElementById('signout').click(); true")
        .await
        .unwrap();
    page.wait_for(
        "document.body.innerText.includes('nanoclaw dashboard')",
        "the signed-out page",
    )
    .await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nanoclaw_dashboard_prints_a_link_that_signs_in_once() {
    let (home, model, host) = running().await;
    let base = base_url(&home).await;
    let out = nanoclaw_command(
        home.path(),
        &model,
        Some(TEST_KEY),
        &["dashboard", "--json"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/login?token=")), "{url}");
    assert!(link["expires_at"].as_str().unwrap().ends_with('Z'));
    let http = client();
    assert_eq!(
        http.get(url).send().await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        http.get(url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    host.shutdown().await;

    // With no host running there is nothing to sign in to: exit 3, saying how to start one.
    let out = nanoclaw_command(home.path(), &model, Some(TEST_KEY), &["dashboard"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nanoclaw run"));
    assert!(out.stdout.is_empty(), "no link is printed");
}

#[test]
fn a_dashboard_on_a_non_loopback_address_is_refused_at_start() {
    let home = TestHome::new();
    let path = home.path().join("config.toml");
    std::fs::write(&path, "[dashboard]\nlisten = \"0.0.0.0:7433\"\n").unwrap();
    let err = nanoclaw_host::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dashboard.listen") && err.contains("loopback") && err.contains("ssh -L"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_run_paused_resumed_and_cancelled_from_the_dashboard() {
    let (home, model, host) = running().await;
    let store = host.store().clone();
    cli(&home, &model, &["skills", "enable", "daily-briefing"]);
    let base = base_url(&home).await;
    let browser = Browser::sign_in(&base, &store).await;
    let tasks = browser.get_json("/api/tasks").await;
    let id = tasks[0]["task_id"].as_str().unwrap().to_owned();
    let path = format!("/api/tasks/{id}");
    let act = |action: &str| browser.post(&path, serde_json::json!({ "action": action }));

    let paused: serde_json::Value = act("pause").send().await.unwrap().json().await.unwrap();
    assert_eq!(paused["status"], "paused", "{paused}");
    let resumed: serde_json::Value = act("resume").send().await.unwrap().json().await.unwrap();
    assert_eq!(resumed["status"], "active", "{resumed}");
    assert!(resumed["next_run"].is_string());

    // Run now: the host is told at once, the agent answers, the run is recorded.
    assert_eq!(
        act("run_now").send().await.unwrap().status(),
        StatusCode::OK
    );
    let runs_path = format!("/api/tasks/{id}/runs");
    eventually(90, "the run the dashboard asked for to finish", || {
        let browser = &browser;
        let runs_path = runs_path.clone();
        async move {
            let runs = browser.get_json(&runs_path).await;
            (runs[0]["status"] == "ok").then_some(())
        }
    })
    .await;

    let cancelled: serde_json::Value = act("cancel").send().await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    // A cancelled task cannot come back, and the page is told why.
    let refused = act("resume").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // What is not an action is refused before it reaches the host.
    assert!(
        act("explode")
            .send()
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
    let missing = browser
        .post(
            "/api/tasks/no-such-task",
            serde_json::json!({ "action": "pause" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    host.shutdown().await;
}

/// A crowd on one chat: many browsers open, several sending at once. Messages that arrive
/// together are answered in one turn; every browser must still see the answer to every
/// message (the lesson of the terminal's batched replies reaching only one client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_browsers_on_one_chat_all_see_every_answer() {
    const BROWSERS: usize = 12;
    const SENDERS: usize = 6;
    let (home, _model, host) = running().await; // the model serves until the test ends
    let base = base_url(&home).await;
    let mut browsers = Vec::new();
    for _ in 0..BROWSERS {
        browsers.push(Browser::sign_in(&base, host.store()).await);
    }
    let mut streams = Vec::new();
    for b in &browsers {
        streams.push(b.open_chat("main").await);
    }
    let texts: Vec<String> = (0..SENDERS).map(|i| format!("crowd message {i}")).collect();
    let sends =
        browsers
            .iter()
            .take(SENDERS)
            .zip(&texts)
            .enumerate()
            .map(|(i, (b, text))| async move {
                let r = b.say("main", &format!("crowd-{i}"), text).await;
                assert_eq!(r["outcome"], "accepted", "{r}");
            });
    futures_util::future::join_all(sends).await;
    let watch = streams.iter_mut().enumerate().map(|(n, stream)| {
        let texts = texts.clone();
        async move {
            let mut unseen: Vec<String> = texts;
            while !unseen.is_empty() {
                let reply = stream.next_of("message").await;
                let text = reply["text"].as_str().unwrap().to_owned();
                unseen.retain(|t| !text.contains(t.as_str()));
            }
            n
        }
    });
    let done = futures_util::future::join_all(watch).await;
    assert_eq!(
        done.len(),
        BROWSERS,
        "every browser saw an answer to every message"
    );
    host.shutdown().await;
}

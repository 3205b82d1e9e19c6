//! The skills nanoclaw ships (`crates/skills/bundled`): each loads as a valid skill, and each
//! script does its job against a local HTTP server speaking what the real service answers
//! (DuckDuckGo's HTML results, GitHub's REST API, a web page), with the refusals a user meets.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use nanoclaw_skills::{Catalog, Source};

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bundled")
}

const NAMES: [&str; 4] = ["daily-briefing", "github", "web-research", "weekly-summary"];

#[test]
fn every_bundled_skill_loads_without_warnings_and_they_resolve_together() {
    let catalog = Catalog::load(&[Source::builtin(bundled())]);
    let problems: Vec<String> = catalog.problems().iter().map(|e| e.to_string()).collect();
    assert!(problems.is_empty(), "{problems:?}");
    let names: Vec<&str> = catalog.entries().map(|e| e.name.as_str()).collect();
    assert_eq!(names, NAMES);
    for name in NAMES {
        let skill = catalog.skill(name).unwrap();
        assert!(
            skill.warnings().is_empty(),
            "{name}: {:?}",
            skill.warnings()
        );
        assert!(skill.version().is_some(), "{name} has a version");
    }
    let resolution = catalog.resolve(&NAMES).unwrap();
    assert_eq!(resolution.order.len(), 4);

    // What each grants is exactly what its docs table says.
    let github = &catalog.skill("github").unwrap().manifest;
    assert_eq!(github.egress.len(), 1);
    assert_eq!(github.egress[0].host, "api.github.com");
    assert_eq!(github.secrets[0].name, "github-token");
    let web = &catalog.skill("web-research").unwrap().manifest;
    let hosts: Vec<&str> = web.egress.iter().map(|e| e.host.as_str()).collect();
    assert_eq!(hosts, ["html.duckduckgo.com", "*.wikipedia.org"]);
    assert!(web.secrets.is_empty());
    for quiet in ["daily-briefing", "weekly-summary"] {
        let m = &catalog.skill(quiet).unwrap().manifest;
        assert!(
            m.egress.is_empty() && m.secrets.is_empty(),
            "{quiet} grants nothing"
        );
        assert_eq!(m.schedules.len(), 1, "{quiet} offers its schedule");
    }
}

/// One request as the local server saw it.
#[derive(Debug)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves `responses` (raw HTTP responses) one per connection, in order, and reports each
/// request it read.
fn serve(responses: Vec<String>) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for response in responses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (n, v) = line.split_once(':').unwrap();
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            stream.write_all(response.as_bytes()).unwrap();
            let _ = tx.send(Seen {
                request_line: request_line.trim_end().to_owned(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
    });
    (base, rx)
}

fn response(status: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Runs a bundled script directly (its shebang and execute bit, as the agent runs it) with
/// `input` on stdin and no proxy settings from the machine.
fn run(script: &str, input: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bundled().join(script));
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "NANOCLAW_SECRET_GITHUB_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PAGE: &str = r#"<!doctype html><html><head><title>Rust  async
 book</title><style>body{color:red}</style><script>alert("no")</script></head>
<body><nav><a href="/">Home</a></nav><h1>Async in Rust</h1>
<p>Futures are <b>lazy</b>: nothing runs until polled.</p>
<ul><li>Executors drive futures</li><li>Wakers wake them</li></ul>
<p>See <a href="/chapter2.html">chapter two</a> and <a href="javascript:void(0)">x</a>.</p>
</body></html>"#;

#[test]
fn fetch_page_reads_a_page_as_text_with_its_links() {
    let (base, seen) = serve(vec![response(
        "200 OK",
        "text/html; charset=utf-8",
        "",
        PAGE,
    )]);
    let out = run(
        "web-research/scripts/fetch_page.py",
        &format!(r#"{{"url": "{base}/book/index.html"}}"#),
        &[],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.starts_with("Title: Rust async book\n"), "{text}");
    assert!(text.contains("# Async in Rust"), "{text}");
    assert!(
        text.contains("Futures are lazy: nothing runs until polled."),
        "{text}"
    );
    assert!(text.contains("- Executors drive futures"), "{text}");
    assert!(
        !text.contains("alert") && !text.contains("color:red"),
        "{text}"
    );
    assert!(
        text.contains(&format!("chapter two — {base}/chapter2.html")),
        "{text}"
    );
    assert!(!text.contains("javascript:"), "{text}");
    let req = seen.recv().unwrap();
    assert_eq!(req.request_line, "GET /book/index.html HTTP/1.1");
    assert_eq!(req.header("user-agent"), Some("nanoclaw-web-research/1.0"));
}

#[test]
fn fetch_page_shows_a_refusal_and_refuses_other_schemes_and_binaries() {
    // What the egress proxy answers for a host the group may not reach.
    let (base, _seen) = serve(vec![
        response(
            "403 Forbidden",
            "text/plain",
            "",
            "egress to evil.example is not allowed for group family",
        ),
        response("200 OK", "application/pdf", "", "%PDF-1.7"),
    ]);
    let out = run(
        "web-research/scripts/fetch_page.py",
        &format!(r#"{{"url": "{base}/x"}}"#),
        &[],
    );
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(text.contains("not allowed for group family"), "{text}");

    let out = run(
        "web-research/scripts/fetch_page.py",
        &format!(r#"{{"url": "{base}/paper.pdf"}}"#),
        &[],
    );
    assert!(!out.status.success());
    assert!(stdout(&out).contains("application/pdf"), "{}", stdout(&out));

    for input in [
        r#"{"url": "file:///etc/passwd"}"#,
        r#"{"url": 7}"#,
        r#"{"url": "https://example.org", "max_chars": 0}"#,
        "not json",
    ] {
        let out = run("web-research/scripts/fetch_page.py", input, &[]);
        assert!(!out.status.success(), "{input}");
        assert!(!stdout(&out).is_empty(), "{input} gets a message");
    }
}

/// The shape of DuckDuckGo's HTML results page: `a.result__a` links through its redirector,
/// `a.result__snippet` text, and an ad block without a result link.
const DDG_RESULTS: &str = r#"<html><body><div class="results">
<div class="result results_links results_links_deep web-result">
 <div class="links_main links_deep result__body">
  <h2 class="result__title"><a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Ftokio.rs%2Ftokio%2Ftutorial&amp;rut=abc">Tokio <b>tutorial</b></a></h2>
  <a class="result__snippet" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Ftokio.rs">Tokio is an <b>asynchronous</b> runtime for Rust.</a>
 </div></div>
<div class="result results_links web-result">
 <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://rust-lang.github.io/async-book/">Asynchronous Programming in Rust</a></h2>
 <a class="result__snippet" href="https://rust-lang.github.io/async-book/">The async book.</a>
</div>
<div class="result result--ad"><a class="badge--ad">Ad</a></div>
</div></body></html>"#;

#[test]
fn web_search_posts_the_query_and_returns_the_real_result_urls() {
    let (base, seen) = serve(vec![response("200 OK", "text/html", "", DDG_RESULTS)]);
    let endpoint = format!("{base}/html/");
    let out = run(
        "web-research/scripts/web_search.py",
        r#"{"query": "rust async runtime", "max_results": 5}"#,
        &[("NANOCLAW_WEB_SEARCH_URL", &endpoint)],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        results,
        serde_json::json!([
            {"title": "Tokio tutorial", "url": "https://tokio.rs/tokio/tutorial",
             "snippet": "Tokio is an asynchronous runtime for Rust."},
            {"title": "Asynchronous Programming in Rust",
             "url": "https://rust-lang.github.io/async-book/", "snippet": "The async book."}
        ])
    );
    let req = seen.recv().unwrap();
    assert_eq!(req.request_line, "POST /html/ HTTP/1.1");
    assert_eq!(req.body, "q=rust+async+runtime");

    let out = run(
        "web-research/scripts/web_search.py",
        r#"{"query": "  "}"#,
        &[],
    );
    assert!(!out.status.success());
    assert!(stdout(&out).contains("non-empty"), "{}", stdout(&out));
}

#[test]
fn github_api_sends_the_placeholder_token_and_api_headers_and_reports_rate_limits() {
    let (base, seen) = serve(vec![
        response(
            "200 OK",
            "application/json; charset=utf-8",
            "x-ratelimit-limit: 5000\r\nx-ratelimit-remaining: 4998\r\nx-ratelimit-reset: 1765000000\r\n",
            r#"[{"number": 7, "title": "Crash on start", "state": "open"}]"#,
        ),
        response(
            "401 Unauthorized",
            "application/json; charset=utf-8",
            "",
            r#"{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}"#,
        ),
        response(
            "201 Created",
            "application/json; charset=utf-8",
            "",
            r#"{"number": 8, "html_url": "https://github.com/o/r/issues/8"}"#,
        ),
    ]);
    let env = [
        ("NANOCLAW_GITHUB_API_URL", base.as_str()),
        (
            "NANOCLAW_SECRET_GITHUB_TOKEN",
            "nanoclaw-placeholder-github-token-1-abc",
        ),
    ];
    let out = run(
        "github/scripts/github_api.py",
        r#"{"method": "GET", "path": "/repos/o/r/issues", "query": {"state": "open", "per_page": 2}}"#,
        &env,
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.starts_with("HTTP 200 OK\n"), "{text}");
    assert!(text.contains("x-ratelimit-remaining: 4998"), "{text}");
    assert!(text.contains("\"Crash on start\""), "{text}");
    let req = seen.recv().unwrap();
    assert_eq!(
        req.request_line,
        "GET /repos/o/r/issues?state=open&per_page=2 HTTP/1.1"
    );
    assert_eq!(
        req.header("authorization"),
        Some("Bearer nanoclaw-placeholder-github-token-1-abc")
    );
    assert_eq!(req.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(req.header("accept"), Some("application/vnd.github+json"));

    let out = run(
        "github/scripts/github_api.py",
        r#"{"method": "GET", "path": "/user"}"#,
        &env,
    );
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("HTTP 401") && text.contains("Bad credentials"),
        "{text}"
    );
    assert!(text.contains("nanoclaw vault set github-token"), "{text}");
    seen.recv().unwrap();

    let out = run(
        "github/scripts/github_api.py",
        r#"{"method": "post", "path": "/repos/o/r/issues", "body": {"title": "From chat"}}"#,
        &env,
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let req = seen.recv().unwrap();
    assert_eq!(req.request_line, "POST /repos/o/r/issues HTTP/1.1");
    assert_eq!(req.body, r#"{"title": "From chat"}"#);
    assert_eq!(req.header("content-type"), Some("application/json"));
}

#[test]
fn github_api_refuses_paths_that_could_send_the_token_elsewhere() {
    for path in [
        "https://evil.example/steal",
        "//evil.example/steal",
        "/repos/../../user",
        "repos/o/r",
        "/user#frag",
        "/user x",
    ] {
        let out = run(
            "github/scripts/github_api.py",
            &format!(r#"{{"method": "GET", "path": "{path}"}}"#),
            &[("NANOCLAW_GITHUB_API_URL", "http://127.0.0.1:9")],
        );
        assert!(!out.status.success(), "{path}");
        assert!(
            stdout(&out).contains("path must be"),
            "{path}: {}",
            stdout(&out)
        );
    }
    let out = run(
        "github/scripts/github_api.py",
        r#"{"method": "GET", "path": "/user", "body": {"a": 1}}"#,
        &[],
    );
    assert!(stdout(&out).contains("takes no body"), "{}", stdout(&out));
}

#[test]
fn the_embedded_files_are_the_bundled_folder_with_execute_bits() {
    let mut on_disk = Vec::new();
    for name in NAMES {
        let dir = bundled().join(name);
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    on_disk.push(p.strip_prefix(bundled()).unwrap().display().to_string());
                }
            }
        }
    }
    on_disk.sort();
    let embedded: Vec<&str> = nanoclaw_skills::bundled::FILES
        .iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(embedded, on_disk);
    for f in nanoclaw_skills::bundled::FILES {
        assert_eq!(
            f.contents,
            std::fs::read(bundled().join(f.path)).unwrap().as_slice()
        );
        assert_eq!(f.executable, f.path.ends_with(".py"), "{}", f.path);
    }
}

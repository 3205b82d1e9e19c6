//! `nanoclaw channel …` and `nanoclaw chats …` as a user runs them: the real binary, a
//! temporary home, the token on stdin, and the fake Telegram Bot API for the test call.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::telegram::FakeTelegram;

const KEY_HEX: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

fn nanoclaw(home: &TestHome, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    nanoclaw_test_support::hermetic(cmd.args(args).env_clear())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NANOCLAW_HOME", home.path())
        .env("NANOCLAW_MASTER_KEY", KEY_HEX)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_add_stores_the_token_enables_the_channel_and_gives_a_pairing_code() {
    let home = TestHome::new();
    let fake = FakeTelegram::start().await;
    let token = fake.secrets()[0].1.clone();
    let base = fake
        .settings_toml()
        .lines()
        .find_map(|l| {
            l.strip_prefix("api_base = ")
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap();
    // The database exists once the host ran; `config init` + a first open make it here.
    std::fs::write(
        home.path().join("config.toml"),
        "[agents]\nruntime = \"native\"\n",
    )
    .unwrap();
    let list = nanoclaw(&home, &["channel", "list", "--json"], None);
    assert!(list.status.success(), "{}", text(&list));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "telegram", "discord", "slack", "whatsapp", "email", "matrix", "irc", "webhook"
        ]
    );

    // A wrong token: the test call fails, saying so.
    let wrong = nanoclaw(
        &home,
        &[
            "channel",
            "add",
            "telegram",
            "--set",
            &format!("api_base={base}"),
        ],
        Some("123:wrong\n"),
    );
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("test call failed"),
        "{}",
        text(&wrong)
    );

    let add = nanoclaw(
        &home,
        &[
            "channel",
            "add",
            "telegram",
            "--set",
            &format!("api_base={base}"),
        ],
        Some(&format!("{token}\n")),
    );
    let out = text(&add);
    assert!(add.status.success(), "{out}");
    assert!(out.contains("connected as"), "{out}");
    assert!(!out.contains(&token), "the token is never printed");
    let code: String = out
        .split_whitespace()
        .find(|w| w.len() == 6 && w.chars().all(|c| c.is_ascii_digit()))
        .expect("a pairing code")
        .to_owned();
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(
        config.contains("[channels.telegram]\nenabled = true"),
        "{config}"
    );
    assert!(
        config.contains("runtime = \"native\""),
        "other settings kept: {config}"
    );
    assert!(
        !config.contains(&token),
        "the token stays out of config.toml"
    );
    // The token is in the vault.
    let vault = nanoclaw(&home, &["vault", "list"], None);
    assert!(
        text(&vault).contains("telegram.bot_token"),
        "{}",
        text(&vault)
    );

    // No host running: status says so (exit 3).
    let status = nanoclaw(&home, &["channel", "status"], None);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    assert!(text(&status).contains("not running"));

    // The pairing code is live in the database for telegram.
    let chats = nanoclaw(
        &home,
        &["chats", "pair", "telegram", "--minutes", "5"],
        None,
    );
    assert!(chats.status.success(), "{}", text(&chats));
    let new_code = String::from_utf8_lossy(&chats.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(new_code.len(), 6);
    assert_ne!(new_code, code, "a new code replaces the old one");

    let remove = nanoclaw(&home, &["channel", "remove", "telegram"], None);
    assert!(remove.status.success(), "{}", text(&remove));
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(
        config.contains("[channels.telegram]\nenabled = false"),
        "{config}"
    );
    let vault = nanoclaw(&home, &["vault", "list"], None);
    assert!(
        !text(&vault).contains("telegram.bot_token"),
        "{}",
        text(&vault)
    );
}

/// Linked WhatsApp offline: `channel add` asks for no Cloud token, makes the session key in
/// the vault, tries to link against a WhatsApp that cannot be reached, and says why; `channel
/// remove` takes the key and the channel's files away. (A real link needs WhatsApp's servers
/// and a phone: not tested here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_whatsapp_add_needs_no_token_and_says_why_it_cannot_link_offline() {
    let home = TestHome::new();
    std::fs::write(
        home.path().join("config.toml"),
        "[agents]\nruntime = \"native\"\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws_url = format!("ws_url=ws://127.0.0.1:{port}/ws/chat");
    let add = nanoclaw(
        &home,
        &[
            "channel",
            "add",
            "whatsapp",
            "--set",
            "mode=linked",
            "--set",
            &ws_url,
            "--set",
            "web_version=2.3000.1",
            "--set",
            "link_timeout_secs=10",
        ],
        None,
    );
    let out = text(&add);
    assert!(!add.status.success(), "{out}");
    assert!(!out.contains("stdin ended"), "no Cloud secret asked: {out}");
    assert!(out.contains("linking failed"), "{out}");
    assert!(
        out.contains(&format!("cannot reach WhatsApp at 127.0.0.1:{port}")),
        "{out}"
    );
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(config.contains("mode = \"linked\""), "{config}");
    let vault = text(&nanoclaw(&home, &["vault", "list"], None));
    assert!(vault.contains("whatsapp.session_key"), "{vault}");
    assert!(!vault.contains("whatsapp.access_token"), "{vault}");

    let list = nanoclaw(&home, &["channel", "list", "--json"], None);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let whatsapp = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "whatsapp")
        .unwrap();
    assert_eq!(whatsapp["missing_secrets"], serde_json::json!([]));

    let remove = nanoclaw(&home, &["channel", "remove", "whatsapp"], None);
    assert!(remove.status.success(), "{}", text(&remove));
    let vault = text(&nanoclaw(&home, &["vault", "list"], None));
    assert!(!vault.contains("whatsapp.session_key"), "{vault}");
    assert!(!home.path().join("channels").join("whatsapp").exists());
}

/// IRC against a real ngircd: `channel add irc` asks for the optional password, takes an
/// empty answer as "none" (nothing stored; the vault refuses empty secrets), registers on the
/// server for the test call, and `channel list` does not call the password missing.
#[cfg(feature = "irc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_add_without_a_password_registers_on_a_real_server() {
    use nanoclaw_test_support::platforms::irc::{IrcUser, Ngircd};
    let home = TestHome::new();
    std::fs::write(
        home.path().join("config.toml"),
        "[agents]\nruntime = \"native\"\n",
    )
    .unwrap();
    let server = Ngircd::start().await;
    let list = nanoclaw(&home, &["channel", "list", "--json"], None);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let irc = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "irc")
        .expect("irc listed");
    assert_eq!(irc["missing_secrets"], serde_json::json!([]), "{listed}");

    // A server that is not there: the test call fails and says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = nanoclaw(
        &home,
        &[
            "channel",
            "add",
            "irc",
            "--set",
            &format!("server={closed}"),
            "--set",
            "nick=clawbot",
            "--set",
            "tls=false",
        ],
        Some("\n"),
    );
    assert!(!down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("test call failed"), "{}", text(&down));

    let watcher = IrcUser::connect(&server.addr(), "watcher").await;
    let add = nanoclaw(
        &home,
        &[
            "channel",
            "add",
            "irc",
            "--set",
            &format!("server={}", server.addr()),
            "--set",
            "nick=clawbot",
            "--set",
            "tls=false",
            "--set",
            "channels=[\"#ops\"]",
        ],
        Some("\n"),
    );
    let out = text(&add);
    assert!(add.status.success(), "{out}");
    assert!(
        out.contains(&format!("irc: connected as clawbot on {}", server.addr())),
        "{out}"
    );
    assert!(out.contains("irc.password left empty"), "{out}");
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    let irc: toml::Table = toml::from_str::<toml::Table>(&config).unwrap()["channels"]["irc"]
        .as_table()
        .unwrap()
        .clone();
    assert_eq!(irc["enabled"].as_bool(), Some(true), "{config}");
    assert_eq!(
        irc["server"].as_str(),
        Some(server.addr().as_str()),
        "{config}"
    );
    assert_eq!(irc["channels"][0].as_str(), Some("#ops"), "{config}");
    let vault = text(&nanoclaw(&home, &["vault", "list"], None));
    assert!(!vault.contains("irc.password"), "{vault}");
    // The test call quit again: the bot is not left on the server.
    assert!(!watcher.is_online("clawbot").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_wire_checks_what_it_is_given() {
    let home = TestHome::new();
    std::fs::write(
        home.path().join("config.toml"),
        "[agents]\nruntime = \"native\"\n",
    )
    .unwrap();
    let paths = nanoclaw_host::config::Paths::new(home.path());
    paths.prepare().unwrap();
    let store = nanoclaw_host::open_store(&paths.database(), false).unwrap();
    store
        .ensure_group(nanoclaw_store::NewGroup {
            name: "Main".into(),
            folder: "main".into(),
            is_main: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let chat = store
        .ensure_chat("telegram", "-100777", "Family", true)
        .await
        .unwrap();
    drop(store);

    let bad = nanoclaw(
        &home,
        &[
            "chats",
            "wire",
            "telegram:-100777",
            "main",
            "--trigger",
            "regex",
            "--pattern",
            "(unclosed",
        ],
        None,
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("not a usable regular expression"),
        "{}",
        text(&bad)
    );
    let bad = nanoclaw(&home, &["chats", "wire", "42", "main"], None);
    assert!(text(&bad).contains("no chat \"42\""), "{}", text(&bad));
    let bad = nanoclaw(&home, &["chats", "main", "telegram:-100777"], None);
    assert!(text(&bad).contains("group chat"), "{}", text(&bad));

    let ok = nanoclaw(
        &home,
        &[
            "chats",
            "wire",
            &chat.id.to_string(),
            "main",
            "--trigger",
            "regex",
            "--pattern",
            "(?i)^andy",
            "--allow",
            "111",
            "--session",
            "per-thread",
        ],
        None,
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let list = nanoclaw(&home, &["chats", "list", "--json"], None);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let family = listed["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chat"]["platform_id"] == "-100777")
        .unwrap();
    let wiring = &family["wirings"][0];
    assert_eq!(wiring["trigger_rule"], "regex");
    assert_eq!(wiring["trigger_pattern"], "(?i)^andy");
    assert_eq!(wiring["allowed_senders"], serde_json::json!(["111"]));
    assert_eq!(wiring["session_mode"], "per-thread");
}

/// `channel add email` with the password on stdin and the servers by `--set`: the test call
/// logs in to real IMAP and SMTP servers; a wrong password says so; the right one enables
/// the channel and gives a pairing code to mail from the owner's address.
#[cfg(feature = "email")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_add_email_logs_in_to_real_mail_servers() {
    use nanoclaw_test_support::platforms::email::{BOT, BOT_PASSWORD, FakeEmail};
    let home = TestHome::new();
    let mail = FakeEmail::start().await;
    std::fs::write(
        home.path().join("config.toml"),
        "[agents]\nruntime = \"native\"\n",
    )
    .unwrap();
    let sets: Vec<String> = mail
        .settings_toml()
        .lines()
        .filter(|l| !l.starts_with("enabled"))
        .map(|l| l.replacen(" = ", "=", 1))
        .collect();
    let mut args: Vec<&str> = vec!["channel", "add", "email"];
    for set in &sets {
        args.push("--set");
        args.push(set);
    }
    let wrong = nanoclaw(&home, &args, Some("not-the-password\n"));
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("test call failed") && text(&wrong).contains("refused the login"),
        "{}",
        text(&wrong)
    );
    let add = nanoclaw(&home, &args, Some(&format!("{BOT_PASSWORD}\n")));
    let out = text(&add);
    assert!(add.status.success(), "{out}");
    assert!(out.contains(&format!("connected as {BOT}")), "{out}");
    assert!(!out.contains(BOT_PASSWORD), "the password is never printed");
    assert!(
        out.split_whitespace()
            .any(|w| w.len() == 6 && w.chars().all(|c| c.is_ascii_digit())),
        "a pairing code: {out}"
    );
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(config.contains("[channels.email]"), "{config}");
    assert!(!config.contains(BOT_PASSWORD), "{config}");
}

/// `nanoclaw webhook add` stores the hook's secret (from stdin), writes its table, prints the
/// URL and how to sign; `channel list` counts a hook whose secret is gone as missing; `channel
/// remove webhook` takes every hook's secret away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_add_stores_the_secret_and_prints_how_to_sign() {
    let home = TestHome::new();
    std::fs::write(
        home.path().join("config.toml"),
        "[agents]\nruntime = \"native\"\n",
    )
    .unwrap();
    let bad = nanoclaw(&home, &["webhook", "add", "Bad Name"], Some("x\n"));
    assert!(!bad.status.success(), "{}", text(&bad));
    let add = nanoclaw(
        &home,
        &[
            "webhook", "add", "ci", "--group", "main", "--scheme", "generic",
        ],
        Some("the-ci-secret\n"),
    );
    let out = text(&add);
    assert!(add.status.success(), "{out}");
    assert!(out.contains("URL: http://127.0.0.1:8791/hooks/ci"), "{out}");
    assert!(out.contains("X-Signature: t=<unix seconds>,v1="), "{out}");
    assert!(out.contains("replies: to your main chat"), "{out}");
    assert!(
        !out.contains("the-ci-secret"),
        "the secret is never echoed: {out}"
    );
    // Empty input: a secret is generated and shown once.
    let add = nanoclaw(
        &home,
        &[
            "webhook",
            "add",
            "gh",
            "--scheme",
            "github",
            "--reply-url",
            "https://example.invalid/r",
        ],
        Some("\n"),
    );
    let out = text(&add);
    assert!(add.status.success(), "{out}");
    assert!(out.contains("secret (shown once"), "{out}");
    assert!(out.contains("GitHub: Settings → Webhooks"), "{out}");
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    let parsed: toml::Table = toml::from_str(&config).unwrap();
    let webhook = &parsed["channels"]["webhook"];
    assert_eq!(webhook["enabled"].as_bool(), Some(true));
    assert_eq!(webhook["hooks"]["ci"]["scheme"].as_str(), Some("generic"));
    assert_eq!(
        webhook["hooks"]["gh"]["reply_url"].as_str(),
        Some("https://example.invalid/r")
    );
    let listed = nanoclaw(&home, &["webhook", "list", "--json"], None);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["secret_set"] == true)
    );

    // `webhook remove` takes one hook's table and secret; the other stays.
    let gone = nanoclaw(&home, &["webhook", "add", "old"], Some("s\n"));
    assert!(gone.status.success(), "{}", text(&gone));
    let gone = nanoclaw(&home, &["webhook", "remove", "old"], None);
    assert!(gone.status.success(), "{}", text(&gone));
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(!config.contains("hooks.old"), "{config}");
    assert!(config.contains("[channels.webhook.hooks.ci]"), "{config}");
    let vault = text(&nanoclaw(&home, &["vault", "list"], None));
    assert!(!vault.contains("webhook.old.secret"), "{vault}");
    assert!(vault.contains("webhook.ci.secret"), "{vault}");

    let rm = nanoclaw(&home, &["vault", "rm", "webhook.gh.secret"], None);
    assert!(rm.status.success(), "{}", text(&rm));
    let list = nanoclaw(&home, &["channel", "list", "--json"], None);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "webhook")
        .unwrap();
    assert_eq!(ours["enabled"], true);
    assert_eq!(
        ours["missing_secrets"],
        serde_json::json!(["webhook.gh.secret"])
    );
    let remove = nanoclaw(&home, &["channel", "remove", "webhook"], None);
    assert!(remove.status.success(), "{}", text(&remove));
    let vault = text(&nanoclaw(&home, &["vault", "list"], None));
    assert!(!vault.contains("webhook.ci.secret"), "{vault}");
}

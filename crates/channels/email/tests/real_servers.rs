//! The email channel against a real Dovecot (IMAP IDLE, LMTP) and Postfix (submission),
//! started by the test on loopback (`nanoclaw_test_support::mail`). Needs root (Postfix).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState, accepting_host};
use nanoclaw_channel::{
    Channel, ChannelError, ChannelSetup, InboundEvent, LinkState, OutgoingFile, OutgoingMessage,
    SecretSource, SendLedger,
};
use nanoclaw_channel_email::{EmailChannel, PASSWORD_SECRET, parse};
use nanoclaw_test_support::mail::{FakeOAuth, MailServers};
use tokio::sync::mpsc;

const ANDY: &str = "andy@example.test";
const ADA: &str = "ada@example.test";
const EVE: &str = "eve@example.test";

fn accounts() -> Vec<(&'static str, &'static str)> {
    vec![(ANDY, "andy-pass"), (ADA, "ada-pass"), (EVE, "eve-pass")]
}

/// The channel's settings for these servers; `extra` is more TOML.
fn settings(servers: &MailServers, extra: &str) -> toml::Table {
    let text = format!(
        r#"enabled = true
address = "{ANDY}"
imap_host = "localhost"
imap_port = {imap}
smtp_host = "localhost"
smtp_port = {smtps}
ca_file = "{ca}"
allow_senders = ["{ADA}"]
trusted_authserv_id = "mx.example.test"
idle_secs = 20
{extra}
"#,
        imap = servers.imap_port,
        smtps = servers.smtps_port,
        ca = servers.ca_file().display(),
    );
    toml::from_str(&text).unwrap()
}

struct Rig {
    channel: Arc<EmailChannel>,
    events: mpsc::Receiver<InboundEvent>,
    state: Arc<MemoryState>,
    ledger: Arc<MemoryLedger>,
}

async fn start(
    settings: toml::Table,
    secrets: Arc<MemorySecrets>,
    state: Arc<MemoryState>,
    ledger: Arc<MemoryLedger>,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let channel = Arc::new(
        EmailChannel::from_setup(ChannelSetup {
            settings,
            secrets,
            state: state.clone(),
            ledger: ledger.clone(),
            assistant_name: "Andy".into(),
            data_dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap(),
    );
    let (sink, events) = accepting_host();
    Arc::clone(&channel).start(sink).await.unwrap();
    wait_connected(&channel).await;
    Rig {
        channel,
        events,
        state,
        ledger,
    }
}

async fn wait_connected(channel: &EmailChannel) {
    for _ in 0..200 {
        if channel.health().state == LinkState::Connected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not connected: {:?}", channel.health());
}

fn password_secrets() -> Arc<MemorySecrets> {
    Arc::new(MemorySecrets::with(&[(PASSWORD_SECRET, "andy-pass")]))
}

async fn rig(servers: &MailServers) -> Rig {
    start(
        settings(servers, ""),
        password_secrets(),
        Arc::default(),
        Arc::default(),
    )
    .await
}

/// A mail from `from` as the receiving server hands it over, with its verdict on top.
fn mail(from: &str, id: &str, subject: &str, body: &str, verdict: &str) -> String {
    format!(
        "Authentication-Results: {verdict}\r\nFrom: Ada Lovelace <{from}>\r\nTo: {ANDY}\r\n\
Subject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

fn pass(domain: &str) -> String {
    format!("mx.example.test; dkim=pass header.d={domain} header.s=s1")
}

async fn next_event(rig: &mut Rig) -> InboundEvent {
    tokio::time::timeout(Duration::from_secs(30), rig.events.recv())
        .await
        .expect("no message reached the host within 30 s")
        .expect("the channel stopped")
}

async fn no_event(rig: &mut Rig, within: Duration) {
    if let Ok(Some(event)) = tokio::time::timeout(within, rig.events.recv()).await {
        panic!("unexpected message reached the host: {:?}", event.text);
    }
}

fn outgoing(key: &str, to: &str, text: &str, reply_to: Option<&str>) -> OutgoingMessage {
    OutgoingMessage {
        idempotency_key: key.into(),
        chat_id: to.into(),
        text: text.into(),
        kind: "reply".into(),
        reply_to: reply_to.map(str::to_owned),
        ..OutgoingMessage::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_becomes_a_turn_and_the_reply_threads_under_it() {
    let servers = MailServers::start(&accounts());
    let mut rig = rig(&servers).await;
    servers.deliver(
        ANDY,
        ADA,
        mail(
            ADA,
            "q1@example.test",
            "the engine",
            "Shall we run it tonight?",
            &pass("example.test"),
        )
        .as_bytes(),
    );
    let event = next_event(&mut rig).await;
    assert_eq!(event.channel, "email");
    assert_eq!(event.chat_id, ADA);
    assert_eq!(event.platform_msg_id, "q1@example.test");
    assert_eq!(event.thread.as_deref(), Some("q1@example.test"));
    assert!(event.mentions_me && !event.from_bot && !event.is_group);
    assert_eq!(
        event.text,
        "Subject: the engine\n\nShall we run it tonight?"
    );

    rig.channel
        .deliver(&outgoing(
            "k1",
            ADA,
            "Yes, at nine.",
            Some("q1@example.test"),
        ))
        .await
        .unwrap();
    let inbox = servers.wait_for_mail(ADA, 1).await;
    let answer = parse::parse(&inbox[0]).unwrap();
    assert_eq!(answer.from, ANDY);
    assert_eq!(answer.subject, "Re: the engine");
    assert_eq!(answer.in_reply_to.as_deref(), Some("q1@example.test"));
    assert_eq!(answer.references, ["q1@example.test"]);
    assert_eq!(answer.text, "Yes, at nine.");
    let raw = String::from_utf8_lossy(&inbox[0]);
    assert!(raw.contains("> Shall we run it tonight?"), "{raw}");
    // The copy to the channel's own address arrives and is not read as a question.
    servers.wait_for_mail(ANDY, 2).await;
    no_event(&mut rig, Duration::from_secs(2)).await;

    // Ada answers in the thread: same thread, the quote cut from the text.
    let follow = format!(
        "Authentication-Results: {}\r\nFrom: {ADA}\r\nTo: {ANDY}\r\nSubject: Re: the engine\r\n\
Message-ID: <q2@example.test>\r\nIn-Reply-To: <{id}>\r\nReferences: <q1@example.test> <{id}>\r\n\r\n\
Great.\r\n\r\nOn Sun, Andy wrote:\r\n> Yes, at nine.\r\n",
        pass("example.test"),
        id = answer.message_id
    );
    servers.deliver(ANDY, ADA, follow.as_bytes());
    let event = next_event(&mut rig).await;
    assert_eq!(event.text, "Great.");
    assert_eq!(event.thread.as_deref(), Some("q1@example.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_forged_senders_never_reach_the_host() {
    let servers = MailServers::start(&accounts());
    let mut rig = rig(&servers).await;
    // Not on the allowlist, though verified.
    servers.deliver(
        ANDY,
        EVE,
        mail(EVE, "e1@x", "hi", "let me in", &pass("example.test")).as_bytes(),
    );
    // Claims to be Ada; the verdict comes from a server we do not trust.
    servers.deliver(
        ANDY,
        EVE,
        mail(
            ADA,
            "e2@x",
            "hi",
            "forged one",
            "evil.example; dkim=pass header.d=example.test",
        )
        .as_bytes(),
    );
    // Claims to be Ada; our server says DKIM passed for another domain.
    servers.deliver(
        ANDY,
        EVE,
        mail(ADA, "e3@x", "hi", "forged two", &pass("evil.example")).as_bytes(),
    );
    // Ada's own, verified: the only one the host sees.
    servers.deliver(
        ANDY,
        ADA,
        mail(ADA, "a1@x", "hi", "the real one", &pass("example.test")).as_bytes(),
    );
    let event = next_event(&mut rig).await;
    assert!(event.text.ends_with("the real one"), "{:?}", event.text);
    no_event(&mut rig, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_mail_reaches_the_host_marked_as_a_bot() {
    let servers = MailServers::start(&accounts());
    let mut rig = rig(&servers).await;
    let auto = mail(
        ADA,
        "v1@x",
        "Out of office",
        "I am away",
        &pass("example.test"),
    )
    .replace("Subject:", "Auto-Submitted: auto-replied\r\nSubject:");
    servers.deliver(ANDY, ADA, auto.as_bytes());
    let event = next_event(&mut rig).await;
    assert!(event.from_bot, "an auto-reply must never be answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_read_twice_or_lost_across_a_restart() {
    let servers = MailServers::start(&accounts());
    let state = Arc::new(MemoryState::default());
    let mut rig = start(
        settings(&servers, ""),
        password_secrets(),
        state.clone(),
        Arc::default(),
    )
    .await;
    servers.deliver(
        ANDY,
        ADA,
        mail(ADA, "r1@x", "one", "first", &pass("example.test")).as_bytes(),
    );
    assert!(next_event(&mut rig).await.text.ends_with("first"));
    rig.channel.stop().await;
    drop(rig);
    // Arrives while the channel is down.
    servers.deliver(
        ANDY,
        ADA,
        mail(ADA, "r2@x", "two", "second", &pass("example.test")).as_bytes(),
    );
    let mut rig = start(
        settings(&servers, ""),
        password_secrets(),
        state,
        Arc::default(),
    )
    .await;
    let event = next_event(&mut rig).await;
    assert!(event.text.ends_with("second"), "{:?}", event.text);
    no_event(&mut rig, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_already_there_when_first_set_up_is_not_answered() {
    let servers = MailServers::start(&accounts());
    servers.deliver(
        ANDY,
        ADA,
        mail(ADA, "old@x", "old", "from last year", &pass("example.test")).as_bytes(),
    );
    let mut rig = rig(&servers).await;
    no_event(&mut rig, Duration::from_secs(2)).await;
    servers.deliver(
        ANDY,
        ADA,
        mail(ADA, "new@x", "new", "from today", &pass("example.test")).as_bytes(),
    );
    assert!(next_event(&mut rig).await.text.ends_with("from today"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_reconnects_after_the_imap_server_restarts() {
    let mut servers = MailServers::start(&accounts());
    let mut rig = rig(&servers).await;
    let before = servers.imap_logins();
    servers.restart_dovecot();
    // Delivered right after the restart, maybe before the channel is back: not lost.
    servers.deliver(
        ANDY,
        ADA,
        mail(
            ADA,
            "after@x",
            "back",
            "are you there",
            &pass("example.test"),
        )
        .as_bytes(),
    );
    let event = next_event(&mut rig).await;
    assert!(event.text.ends_with("are you there"));
    wait_connected(&rig.channel).await;
    assert!(
        servers.imap_logins() > before,
        "no new login after the restart:\n{}",
        servers.dovecot_log()
    );
    let health = rig.channel.health();
    assert!(health.reconnects >= 1, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_travel_both_ways() {
    let servers = MailServers::start(&accounts());
    let mut rig = rig(&servers).await;
    let with_file = format!(
        "Authentication-Results: {}\r\nFrom: {ADA}\r\nTo: {ANDY}\r\nSubject: data\r\n\
Message-ID: <f1@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n\
Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAH/\r\n--b--\r\n",
        pass("example.test")
    );
    servers.deliver(ANDY, ADA, with_file.as_bytes());
    let event = next_event(&mut rig).await;
    assert_eq!(event.attachments.len(), 1);
    assert_eq!(event.attachments[0].file_name, "data.bin");
    assert_eq!(&event.attachments[0].data[..], &[0u8, 1, 255]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, b"report\x00\xff").unwrap();
    let mut message = outgoing("k-file", ADA, "the report", Some("f1@x"));
    message.files = vec![OutgoingFile {
        file_name: "report.bin".into(),
        path,
        mime_type: None,
    }];
    rig.channel.deliver(&message).await.unwrap();
    let inbox = servers.wait_for_mail(ADA, 1).await;
    let got = parse::parse(&inbox[0]).unwrap();
    assert_eq!(got.files.len(), 1);
    assert_eq!(got.files[0].name, "report.bin");
    assert_eq!(got.files[0].data, b"report\x00\xff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_doubt_after_a_crash_is_not_sent_twice() {
    let servers = MailServers::start(&accounts());
    let rig = rig(&servers).await;
    // Sent, then the record lost: the ledger says "begun, outcome unknown".
    rig.channel
        .deliver(&outgoing("k-crash", ADA, "once only", None))
        .await
        .unwrap();
    servers.wait_for_mail(ADA, 1).await;
    servers.wait_for_mail(ANDY, 1).await; // our copy, which tells it was taken
    let fresh = Arc::new(MemoryLedger::default());
    fresh.begin("k-crash", 0).await.unwrap();
    let after = start(
        settings(&servers, ""),
        password_secrets(),
        rig.state.clone(),
        fresh,
    )
    .await;
    after
        .channel
        .deliver(&outgoing("k-crash", ADA, "once only", None))
        .await
        .unwrap();
    // Begun but never sent: sent now, once.
    let fresh = Arc::new(MemoryLedger::default());
    fresh.begin("k-never", 0).await.unwrap();
    let again = start(
        settings(&servers, ""),
        password_secrets(),
        rig.state.clone(),
        fresh,
    )
    .await;
    again
        .channel
        .deliver(&outgoing("k-never", ADA, "sent late", None))
        .await
        .unwrap();
    let inbox = servers.wait_for_mail(ADA, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let texts: Vec<String> = servers
        .mailbox(ADA)
        .iter()
        .map(|m| parse::parse(m).unwrap().text)
        .collect();
    assert_eq!(texts, ["once only", "sent late"], "{} mails", inbox.len());
    let _ = rig.ledger;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_submission_works() {
    let servers = MailServers::start(&accounts());
    let mut table = settings(&servers, "");
    table.insert("smtp_security".into(), "starttls".into());
    table.insert(
        "smtp_port".into(),
        i64::from(servers.submission_port).into(),
    );
    let rig = start(table, password_secrets(), Arc::default(), Arc::default()).await;
    rig.channel
        .deliver(&outgoing("k-587", ADA, "via 587", None))
        .await
        .unwrap();
    let inbox = servers.wait_for_mail(ADA, 1).await;
    assert_eq!(parse::parse(&inbox[0]).unwrap().text, "via 587");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_untrusted_certificate_is_said_plainly() {
    let servers = MailServers::start(&accounts());
    let dir = tempfile::tempdir().unwrap();
    let setup = |settings: toml::Table, password: &str| ChannelSetup {
        settings,
        secrets: Arc::new(MemorySecrets::with(&[(PASSWORD_SECRET, password)])),
        state: Arc::new(MemoryState::default()),
        ledger: Arc::new(MemoryLedger::default()),
        assistant_name: "Andy".into(),
        data_dir: dir.path().to_path_buf(),
    };
    let wrong = EmailChannel::from_setup(setup(settings(&servers, ""), "nope"))
        .await
        .unwrap();
    let err = wrong.verify().await.unwrap_err();
    assert!(matches!(err, ChannelError::Unauthorized { .. }), "{err}");

    // Without the test CA, the server's certificate is not trusted.
    let mut no_ca = settings(&servers, "");
    no_ca.remove("ca_file");
    let untrusted = EmailChannel::from_setup(setup(no_ca, "andy-pass"))
        .await
        .unwrap();
    let err = untrusted.verify().await.unwrap_err().to_string();
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}");

    let right = EmailChannel::from_setup(setup(settings(&servers, ""), "andy-pass"))
        .await
        .unwrap();
    let who = right.verify().await.unwrap();
    assert!(who.starts_with(ANDY), "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_are_renewed_and_the_rotated_refresh_token_is_kept() {
    // Access tokens live 3 s: the channel must renew them while it works.
    let oauth = FakeOAuth::start(ANDY, Duration::from_secs(3)).await;
    let servers = MailServers::start_with(&accounts(), Some(oauth.introspection()));
    let first_refresh = oauth.grant_refresh_token();
    let secrets = Arc::new(MemorySecrets::with(&[
        ("email.oauth_refresh_token", &first_refresh),
        ("email.oauth_client_secret", "client-secret"),
    ]));
    let extra = format!(
        "mode = \"oauth2\"\noauth_client_id = \"client-id\"\noauth_token_url = \"{}/token\"\noauth_auth_url = \"{}/auth\"\nidle_secs = 5",
        oauth.base, oauth.base
    );
    let mut table = settings(&servers, "");
    for (k, v) in toml::from_str::<toml::Table>(&extra).unwrap() {
        table.insert(k, v);
    }
    let mut rig = start(table, secrets.clone(), Arc::default(), Arc::default()).await;
    for round in 0..3 {
        let id = format!("o{round}@x");
        servers.deliver(
            ANDY,
            ADA,
            mail(
                ADA,
                &id,
                "t",
                &format!("round {round}"),
                &pass("example.test"),
            )
            .as_bytes(),
        );
        assert!(
            next_event(&mut rig)
                .await
                .text
                .ends_with(&format!("round {round}"))
        );
        rig.channel
            .deliver(&outgoing(
                &format!("ko{round}"),
                ADA,
                &format!("answer {round}"),
                Some(&id),
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await; // the token expires
    }
    servers.wait_for_mail(ADA, 3).await;
    assert!(
        oauth.refreshes() >= 2,
        "renewed {} times",
        oauth.refreshes()
    );
    // Each renewal rotated the refresh token; the vault holds the newest, the first is dead.
    let stored = secrets
        .secret("email.oauth_refresh_token")
        .await
        .unwrap()
        .map(|s| secrecy::ExposeSecret::expose_secret(&s).to_owned())
        .unwrap();
    assert_ne!(stored, first_refresh);
    assert!(oauth.refresh_token_valid(&stored));
    assert!(!oauth.refresh_token_valid(&first_refresh));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_gets_a_refresh_token_through_the_browser_flow() {
    let oauth = FakeOAuth::start(ANDY, Duration::from_secs(3600)).await;
    let servers = MailServers::start_with(&accounts(), Some(oauth.introspection()));
    let secrets = Arc::new(MemorySecrets::with(&[("email.oauth_client_secret", "s")]));
    let extra = format!(
        "mode = \"oauth2\"\noauth_client_id = \"client-id\"\noauth_token_url = \"{}/token\"\noauth_auth_url = \"{}/auth\"\nlink_timeout_secs = 20",
        oauth.base, oauth.base
    );
    let mut table = settings(&servers, "");
    for (k, v) in toml::from_str::<toml::Table>(&extra).unwrap() {
        table.insert(k, v);
    }
    let dir = tempfile::tempdir().unwrap();
    let channel = EmailChannel::from_setup(ChannelSetup {
        settings: table,
        secrets: secrets.clone(),
        state: Arc::new(MemoryState::default()),
        ledger: Arc::new(MemoryLedger::default()),
        assistant_name: "Andy".into(),
        data_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    // The owner's browser: opens the URL the channel shows (the consent page redirects
    // back to the channel's loopback listener).
    let show = |text: &str| {
        let url = text
            .lines()
            .find(|l| l.starts_with("http"))
            .expect("a URL to open")
            .to_owned();
        tokio::spawn(async move {
            let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
            assert!(page.contains("linked"), "{page}");
        });
    };
    let linked = channel.link(&show).await.unwrap();
    assert_eq!(linked.as_deref(), Some(ANDY));
    assert!(
        secrets
            .secret("email.oauth_refresh_token")
            .await
            .unwrap()
            .is_some()
    );
    // And the token works against the real IMAP server.
    let who = channel.verify().await.unwrap();
    assert!(who.starts_with(ANDY), "{who}");
}

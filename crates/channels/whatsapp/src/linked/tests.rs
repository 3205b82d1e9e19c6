//! The linked channel as the host drives it, offline: no session, a session that does not
//! open, and a linked session with WhatsApp out of reach (a closed loopback port).

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState};
use nanoclaw_channel::{Channel, ChannelError, ChannelSetup, LinkState, OutgoingMessage};
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::traits::DeviceStore;

use super::seal::{SealedFile, SessionKey};
use super::store::SealedStore;
use super::{NOT_LINKED, SESSION_FILE, SESSION_KEY_SECRET};

fn setup(dir: &std::path::Path, secrets: Arc<MemorySecrets>, extra: &str) -> ChannelSetup {
    ChannelSetup {
        settings: toml::from_str(&format!("enabled = true\nmode = \"linked\"\n{extra}")).unwrap(),
        secrets,
        state: Arc::new(MemoryState::default()),
        ledger: Arc::new(MemoryLedger::default()),
        assistant_name: "Andy".into(),
        data_dir: dir.to_path_buf(),
    }
}

async fn build(setup: ChannelSetup) -> Arc<dyn Channel> {
    (crate::REGISTRATION.factory)(setup).await.unwrap()
}

/// A session as whatsapp-rust leaves it after linking +15550001111.
async fn linked_session(dir: &std::path::Path, secrets: &MemorySecrets) {
    let key = SessionKey::load_or_create(secrets).await.unwrap();
    let store = SealedStore::open(SealedFile::new(dir.join(SESSION_FILE), key)).unwrap();
    let mut device = Device::new();
    device.pn = Some("15550001111@s.whatsapp.net".parse().unwrap());
    device.lid = Some("100000012345678@lid".parse().unwrap());
    store.save(&device).await.unwrap();
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn without_a_session_the_channel_is_down_and_says_how_to_link() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Arc::new(MemorySecrets::default());
    let channel = build(setup(dir.path(), Arc::clone(&secrets), "")).await;
    use nanoclaw_channel::SecretSource;
    assert!(
        secrets.secret(SESSION_KEY_SECRET).await.unwrap().is_some(),
        "the session key is made in the vault on first use"
    );
    let (sink, _rx) = tokio::sync::mpsc::channel(4);
    let e = Arc::clone(&channel).start(sink).await.unwrap_err();
    assert!(e.to_string().contains(NOT_LINKED), "{e}");
    let health = channel.health();
    assert_eq!(health.state, LinkState::Down);
    assert_eq!(health.last_error.as_deref(), Some(NOT_LINKED));
    assert!(NOT_LINKED.contains("nanoclaw channel add whatsapp"));
    let e = channel.verify().await.unwrap_err();
    assert!(e.to_string().contains("not linked"), "{e}");
    let sent = channel
        .deliver(&OutgoingMessage {
            idempotency_key: "k".into(),
            chat_id: "1@s.whatsapp.net".into(),
            text: "hi".into(),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(sent, Err(ChannelError::NotConnected(_))),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_session_file_that_does_not_open_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Arc::new(MemorySecrets::default());
    linked_session(dir.path(), &secrets).await;
    // Another key in the vault (it was removed and made again).
    let other = Arc::new(MemorySecrets::default());
    let channel = build(setup(dir.path(), other, "")).await;
    let (sink, _rx) = tokio::sync::mpsc::channel(4);
    let e = Arc::clone(&channel)
        .start(sink)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the WhatsApp session could not be opened"),
        "{e}"
    );
    assert!(e.contains("nanoclaw channel add whatsapp"), "{e}");
    assert_eq!(channel.health().state, LinkState::Down);
}

#[tokio::test]
async fn a_logged_out_session_says_so_until_linked_again() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Arc::new(MemorySecrets::default());
    linked_session(dir.path(), &secrets).await;
    let key = SessionKey::load_or_create(&*secrets).await.unwrap();
    SealedFile::new(dir.path().join(SESSION_FILE), key)
        .retire()
        .unwrap();
    let channel = build(setup(dir.path(), secrets, "")).await;
    let (sink, _rx) = tokio::sync::mpsc::channel(4);
    let e = Arc::clone(&channel)
        .start(sink)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("logged out"), "{e}");
    assert_eq!(
        channel.health().last_error.as_deref(),
        Some(super::LOGGED_OUT)
    );
}

#[tokio::test]
async fn a_linked_session_reports_its_number_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Arc::new(MemorySecrets::default());
    linked_session(dir.path(), &secrets).await;
    let channel = build(setup(dir.path(), secrets, "")).await;
    assert_eq!(
        channel.verify().await.unwrap(),
        "+15550001111 (linked device)"
    );
    let shown = std::sync::Mutex::new(Vec::<String>::new());
    let show = |text: &str| shown.lock().unwrap().push(text.to_string());
    let who = channel.link(&show).await.unwrap().unwrap();
    assert!(who.starts_with("+15550001111 (linked earlier"), "{who}");
    assert!(
        shown.lock().unwrap().is_empty(),
        "no QR code for a linked session"
    );
}

#[tokio::test]
async fn with_whatsapp_out_of_reach_the_channel_reconnects_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Arc::new(MemorySecrets::default());
    linked_session(dir.path(), &secrets).await;
    let port = closed_port();
    let extra = format!("ws_url = \"ws://127.0.0.1:{port}/ws/chat\"\nweb_version = \"2.3000.1\"\n");
    let channel = build(setup(dir.path(), Arc::clone(&secrets), &extra)).await;
    let (sink, _rx) = tokio::sync::mpsc::channel(4);
    Arc::clone(&channel).start(sink).await.unwrap();

    // A second process on the same session is refused while this one holds it.
    let second = build(setup(dir.path(), secrets, &extra)).await;
    let (sink2, _rx2) = tokio::sync::mpsc::channel(4);
    let e = Arc::clone(&second)
        .start(sink2)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("another nanoclaw process"), "{e}");

    let mut health = channel.health();
    for _ in 0..300 {
        if health.state == LinkState::Reconnecting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = channel.health();
    }
    assert_eq!(health.state, LinkState::Reconnecting, "{health:?}");
    let error = health.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!("cannot reach WhatsApp at 127.0.0.1:{port}")),
        "{error}"
    );
    channel.stop().await;
    assert_eq!(channel.health().state, LinkState::Stopped);
}

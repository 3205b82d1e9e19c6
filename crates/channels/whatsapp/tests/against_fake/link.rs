use nanoclaw_channel::{ChannelError, LinkState};
use nanoclaw_test_support::platforms::FakePlatform;

use crate::common::{Harness, eventually, start};

#[tokio::test]
async fn a_delivery_cut_off_mid_body_is_posted_again_and_health_shows_it() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.user_says(&dm, "before", false).await;
    assert_eq!(run.next_accepted().await.text, "before");
    h.fake.drop_connections().await;
    h.fake.user_says(&dm, "during", false).await;
    assert_eq!(run.next_accepted().await.text, "during");
    eventually("the retry accepted", || h.fake.connections() >= 2).await;
    assert!(h.fake.delivery_attempts().contains(&None));
    let health = run.channel.health();
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("cut off"),
        "{health:?}"
    );
    assert_eq!(health.state, LinkState::Connected);
}

#[tokio::test]
async fn a_refused_token_fails_the_start_and_shows_the_channel_down() {
    let h = Harness::new().await;
    let channel = h.build_with("EAAG-not-the-token", "").await;
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let err = channel.clone().start(tx).await.unwrap_err();
    assert!(matches!(err, ChannelError::Unauthorized { .. }), "{err:?}");
    let health = channel.health();
    assert_eq!(health.state, LinkState::Down);
    assert!(health.last_error.unwrap().contains("190"));
    assert!(matches!(
        channel.verify().await,
        Err(ChannelError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn verify_names_the_business_number() {
    let h = Harness::new().await;
    let channel = h.build().await;
    assert_eq!(
        channel.verify().await.unwrap(),
        "Nanoclaw Test (+1 555-000-1111)"
    );
}

#[tokio::test]
async fn a_stopped_channel_frees_its_port_and_messages_wait_for_the_restart() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.user_says(&dm, "one", false).await;
    assert_eq!(run.next_accepted().await.text, "one");
    run.channel.stop().await;
    assert_eq!(run.channel.health().state, LinkState::Stopped);
    h.fake.user_says(&dm, "while stopped", false).await;
    eventually("a refused attempt", || {
        h.fake.delivery_attempts().iter().any(Option::is_none)
    })
    .await;
    let mut run = start(run.channel).await;
    assert_eq!(run.next_accepted().await.text, "while stopped");
    assert_eq!(run.channel.health().state, LinkState::Connected);
}

#[tokio::test]
async fn a_taken_port_does_not_block_the_start_and_shows_reconnecting() {
    let h = Harness::new().await;
    let squatter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = squatter.local_addr().unwrap().port();
    // The fake's settings, but the webhook on a port another process holds.
    let toml_text = h
        .fake
        .settings_toml()
        .lines()
        .filter(|l| !l.starts_with("listen"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let channel = h
        .build_from_toml(&format!("{toml_text}listen = \"127.0.0.1:{port}\"\n"))
        .await;
    let run = start(channel).await;
    let health = run.channel.health();
    assert_eq!(health.state, LinkState::Reconnecting, "{health:?}");
    assert!(health.last_error.unwrap().contains("cannot listen"));
    drop(squatter);
    eventually("serving once the port is free", || {
        run.channel.health().state == LinkState::Connected
    })
    .await;
    run.channel.stop().await;
}

#[tokio::test]
async fn linked_mode_needs_no_cloud_secret_and_stays_down_until_linked() {
    let h = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    // No Cloud API token, app secret or verify token in the vault.
    let setup = nanoclaw_channel::ChannelSetup {
        settings: "enabled = true\nmode = \"linked\"\n".parse().unwrap(),
        secrets: std::sync::Arc::new(nanoclaw_channel::memory::MemorySecrets::default()),
        state: h.state.clone(),
        ledger: h.ledger.clone(),
        assistant_name: "Andy".into(),
        data_dir: dir.path().to_path_buf(),
    };
    let channel = (nanoclaw_channel_whatsapp::REGISTRATION.factory)(setup)
        .await
        .expect("linked mode builds without Cloud secrets");
    let (sink, _rx) = tokio::sync::mpsc::channel(4);
    match std::sync::Arc::clone(&channel).start(sink).await {
        Err(ChannelError::Setup(detail)) => {
            assert!(detail.contains("not linked"), "{detail}")
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert_eq!(channel.health().state, LinkState::Down);
}

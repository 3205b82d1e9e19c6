use nanoclaw_channel::{ChannelError, LinkState};
use nanoclaw_test_support::platforms::FakePlatform;

use crate::common::{Harness, eventually, start};

#[tokio::test]
async fn after_the_server_drops_the_poll_the_channel_reconnects_and_loses_nothing() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.user_says(&dm, "before", false).await;
    assert_eq!(run.next_accepted().await.text, "before");
    let polls = h.fake.connections();
    eventually("a pending long poll", || h.fake.connections() > polls).await;

    h.fake.drop_connections().await;
    h.fake.user_says(&dm, "during", false).await;
    assert_eq!(run.next_accepted().await.text, "during");
    let health = run.channel.health();
    assert!(health.reconnects > 0, "{health:?}");
    assert!(
        health.last_error.as_deref().unwrap_or("").contains("502"),
        "{health:?}"
    );
    eventually("connected again", || {
        run.channel.health().state == LinkState::Connected
    })
    .await;
    assert!(h.fake.connections() > polls + 1);
}

#[tokio::test]
async fn a_refused_token_fails_the_start_and_shows_the_channel_down() {
    let h = Harness::new().await;
    let channel = h.build_with("7000001:not-the-token", "").await;
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let err = channel.clone().start(tx).await.unwrap_err();
    assert!(matches!(err, ChannelError::Unauthorized { .. }), "{err:?}");
    let health = channel.health();
    assert_eq!(health.state, LinkState::Down);
    assert!(health.last_error.unwrap().contains("401"));
    assert!(matches!(
        channel.verify().await,
        Err(ChannelError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn verify_names_the_bot() {
    let h = Harness::new().await;
    let channel = h.build().await;
    assert_eq!(channel.verify().await.unwrap(), "@nanoclaw_test_bot");
}

#[tokio::test]
async fn a_second_poller_with_the_same_token_shows_the_conflict() {
    let h = Harness::new().await;
    let first = h.start().await;
    let second = start(h.build().await).await;
    // Each poll ends the other's with 409; at least one of them reports it.
    eventually("a 409 in health", || {
        [&first, &second].iter().any(|r| {
            r.channel
                .health()
                .last_error
                .is_some_and(|e| e.contains("409"))
        })
    })
    .await;
    second.channel.stop().await;
    assert_eq!(second.channel.health().state, LinkState::Stopped);
}

#[tokio::test]
async fn an_unreachable_server_does_not_block_the_start_and_shows_reconnecting() {
    let h = Harness::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let setup_toml = format!("enabled = true\napi_base = \"http://127.0.0.1:{port}\"\n");
    let channel = h.build_from_toml(&setup_toml).await;
    let run = start(channel).await;
    let health = run.channel.health();
    assert_eq!(health.state, LinkState::Reconnecting, "{health:?}");
    assert!(health.last_error.is_some());
    run.channel.stop().await;
}

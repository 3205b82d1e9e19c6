//! The Discord channel against `FakeDiscord`: receiving over the gateway (DMs, mentions,
//! threads, resumes, opcodes, close codes, heartbeats, malformed dispatches, bots).

use std::time::Duration;

use super::common::{Harness, wait_for};
use nanoclaw_channel::{ChannelError, LinkState, OutgoingMessage};
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::discord::{BOT_NAME, FakeDiscord};

#[tokio::test]
async fn dms_guild_mentions_replies_and_threads_arrive_as_the_host_needs_them() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let dm = h.fake.chat(1, false);
    let group = h.fake.chat(2, true);

    let posted = h.fake.user_says(&dm, "hello in private", false).await;
    let e = h.next().await;
    assert_eq!(
        (e.chat_id.as_str(), e.platform_msg_id.as_str()),
        (dm.platform_id.as_str(), posted.message_id.as_str())
    );
    assert!(!e.is_group && e.mentions_me, "a DM addresses the bot");
    assert_eq!(e.chat_name, dm.user_name);
    assert_eq!(e.sender, dm.user_id);
    assert_eq!(e.text, "hello in private");
    assert!(
        e.received_at > 1_600_000_000_000,
        "the time comes from the snowflake"
    );

    h.fake.user_says(&group, "are you there?", true).await;
    let e = h.next().await;
    assert!(e.is_group && e.mentions_me && !e.from_bot);
    assert_eq!(e.chat_name, "general-2");
    assert_eq!(e.text, format!("@{BOT_NAME} are you there?"));
    assert_eq!(e.thread, None);

    h.fake.user_says(&group, "just chatting", false).await;
    assert!(!h.next().await.mentions_me);

    // A reply to the bot's message addresses it without an @mention.
    let reply = OutgoingMessage {
        idempotency_key: "r1".into(),
        chat_id: group.platform_id.clone(),
        text: "I am here".into(),
        ..Default::default()
    };
    let bot_msg = h.channel.deliver(&reply).await.unwrap().unwrap();
    h.fake.user_replies(&group, "thanks", &bot_msg).await;
    let e = h.next().await;
    assert!(e.mentions_me, "a reply to the bot addresses it");
    assert_eq!(e.text, "thanks");

    // Threads: one announced with THREAD_CREATE, one the adapter must look up.
    for announce in [true, false] {
        let thread = h.fake.create_thread(&group, "topic", announce);
        let posted = h.fake.user_says(&thread, "in the thread", true).await;
        let e = h.next().await;
        assert_eq!(posted.chat_id, group.platform_id);
        assert_eq!(
            e.chat_id, group.platform_id,
            "a thread reports its parent channel"
        );
        assert_eq!(e.thread.as_deref(), Some(thread.platform_id.as_str()));
        assert_eq!(e.chat_name, "general-2");
    }
}

#[tokio::test]
async fn a_dropped_connection_resumes_and_replays_what_was_missed_once() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);
    let first = h.fake.user_says(&chat, "one", false).await;
    assert_eq!(h.next().await.platform_msg_id, first.message_id);

    h.fake.drop_connections().await;
    let two = h.fake.user_says(&chat, "two", false).await;
    let three = h.fake.user_says(&chat, "three", false).await;
    assert_eq!(h.next().await.platform_msg_id, two.message_id);
    assert_eq!(h.next().await.platform_msg_id, three.message_id);
    wait_for("the resume", || h.fake.resumes() == 1).await;
    assert_eq!(h.fake.identifies(), 1, "resumed, not identified afresh");

    // Nothing was reported twice: the next event is the next message.
    let four = h.fake.user_says(&chat, "four", false).await;
    assert_eq!(h.next().await.platform_msg_id, four.message_id);
    let health = h.channel.health();
    assert_eq!(health.state, LinkState::Connected);
    assert!(health.reconnects >= 1);
}

#[tokio::test]
async fn a_restarted_host_resumes_the_stored_session() {
    let fake = FakeDiscord::start().await;
    let mut h = Harness::start(fake).await;
    let chat = h.fake.chat(1, false);
    h.fake.user_says(&chat, "before", false).await;
    h.next().await;
    h.channel.stop().await;
    h.fake.drop_connections().await;
    let missed = h
        .fake
        .user_says(&chat, "while the host was down", false)
        .await;

    // A new channel over the same state store: what a restarted host builds.
    let mut again = Harness::with_state(h.fake, h.state.clone(), "").await;
    let e = again.next().await;
    assert_eq!(e.platform_msg_id, missed.message_id);
    assert_eq!(again.fake.identifies(), 1);
    assert_eq!(again.fake.resumes(), 1);
}

#[tokio::test]
async fn op7_reconnect_resumes_and_op9_decides_between_resume_and_identify() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);

    h.fake.request_reconnect();
    wait_for("a resume after op 7", || h.fake.resumes() == 1).await;
    assert_eq!(h.fake.connections(), 2);

    h.fake.invalidate_session(true);
    wait_for("a resume after op 9 d=true", || h.fake.resumes() == 2).await;
    assert_eq!(h.fake.identifies(), 1);

    h.fake.invalidate_session(false);
    wait_for("a fresh identify after op 9 d=false", || {
        h.fake.identifies() == 2
    })
    .await;
    assert_eq!(h.fake.resumes(), 2);

    let posted = h.fake.user_says(&chat, "still there?", false).await;
    assert_eq!(h.next().await.platform_msg_id, posted.message_id);
}

#[tokio::test]
async fn close_4004_takes_the_channel_down_without_a_reconnect_loop() {
    let h = Harness::start(FakeDiscord::start().await).await;
    h.fake.revoke_token();
    h.fake.close_connections(4000);
    wait_for("health down", || {
        h.channel.health().state == LinkState::Down
    })
    .await;
    let error = h.channel.health().last_error.unwrap_or_default();
    assert!(error.contains("4004"), "{error}");
    let connections = h.fake.connections();
    // Long enough for several backoff rounds (500 ms, 1 s) had it kept trying.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.fake.connections(),
        connections,
        "no reconnects after 4004"
    );

    // A start with the refused token fails with Unauthorized at once.
    let err = std::sync::Arc::clone(&h.channel)
        .start(h.sink.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn a_disallowed_intent_is_a_clear_setup_error() {
    let fake = FakeDiscord::start().await;
    fake.refuse_message_content_intent();
    let h = Harness::build(fake, std::sync::Arc::default(), "").await;
    let err = std::sync::Arc::clone(&h.channel)
        .start(h.sink.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Message Content"), "{err}");
    assert_eq!(h.channel.health().state, LinkState::Down);
}

#[tokio::test]
async fn a_missing_heartbeat_ack_reconnects_and_resumes() {
    let fake = FakeDiscord::start().await;
    fake.set_heartbeat_interval(Duration::from_millis(200));
    let mut h = Harness::start(fake).await;
    let chat = h.fake.chat(1, false);
    wait_for("heartbeats", || h.fake.heartbeats() >= 2).await;
    h.fake.stop_heartbeat_acks();
    wait_for("a resume after the zombie connection", || {
        h.fake.resumes() >= 1
    })
    .await;
    h.fake.resume_heartbeat_acks();
    let error = h.channel.health().last_error.unwrap_or_default();
    assert!(error.contains("zombie"), "{error}");
    let posted = h.fake.user_says(&chat, "after the zombie", false).await;
    assert_eq!(h.next().await.platform_msg_id, posted.message_id);
}

#[tokio::test]
async fn malformed_dispatches_are_skipped_and_the_loop_goes_on() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, true);
    h.fake.push_malformed(&chat).await;
    let posted = h.fake.user_says(&chat, "after the junk", true).await;
    assert_eq!(h.next().await.platform_msg_id, posted.message_id);
    let health = h.channel.health();
    assert_eq!(health.state, LinkState::Connected);
    assert!(
        health
            .last_error
            .unwrap_or_default()
            .contains("malformed MESSAGE_CREATE")
    );
    assert_eq!(h.fake.connections(), 1);
}

#[tokio::test]
async fn the_bots_own_messages_are_dropped_and_other_bots_are_flagged() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, true);
    // Discord echoes this back as a MESSAGE_CREATE by the bot.
    let out = OutgoingMessage {
        idempotency_key: "own".into(),
        chat_id: chat.platform_id.clone(),
        text: "my own words".into(),
        ..Default::default()
    };
    h.channel.deliver(&out).await.unwrap();
    let bot = h.fake.other_bot_says(&chat, "hi fellow bot").await;
    let user = h.fake.user_says(&chat, "a person", true).await;
    let e = h.next().await;
    assert_eq!(
        e.platform_msg_id, bot.message_id,
        "the own echo never arrives"
    );
    assert!(e.from_bot && e.mentions_me);
    assert_eq!(h.next().await.platform_msg_id, user.message_id);
}

#[tokio::test]
async fn a_stopped_channel_starts_again() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);
    h.channel.stop().await;
    assert_eq!(h.channel.health().state, LinkState::Stopped);
    std::sync::Arc::clone(&h.channel)
        .start(h.sink.clone())
        .await
        .unwrap();
    let posted = h.fake.user_says(&chat, "back again", false).await;
    assert_eq!(h.next().await.platform_msg_id, posted.message_id);
    assert_eq!(h.channel.verify().await.unwrap(), BOT_NAME);
}

#[tokio::test]
async fn a_message_the_host_failed_to_store_is_replayed_on_the_next_resume() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);
    let lost = h.fake.user_says(&chat, "store me", false).await;
    let e = h
        .next_with(nanoclaw_channel::RouteOutcome::Failed("disk full".into()))
        .await;
    assert_eq!(e.platform_msg_id, lost.message_id);
    h.fake.drop_connections().await;
    let e = h.next().await;
    assert_eq!(
        e.platform_msg_id, lost.message_id,
        "the cursor stayed before the failed message"
    );
    let after = h.fake.user_says(&chat, "next", false).await;
    assert_eq!(h.next().await.platform_msg_id, after.message_id);
}

#[tokio::test]
async fn a_heartbeat_request_is_answered_at_once() {
    // A ten-minute interval: the scheduled beats are (almost surely) far off.
    let fake = FakeDiscord::start().await;
    fake.set_heartbeat_interval(Duration::from_secs(600));
    let h = Harness::start(fake).await;
    let before = h.fake.heartbeats();
    h.fake.request_heartbeat();
    wait_for("a heartbeat after op 1", || h.fake.heartbeats() > before).await;
    assert_eq!(h.channel.health().state, LinkState::Connected);
}

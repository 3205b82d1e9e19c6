use std::time::Duration;

use nanoclaw_channel::RouteOutcome;
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::telegram::BOT_ID;
use serde_json::json;

use crate::common::{Harness, ack, start};

#[tokio::test]
async fn a_dm_a_group_mention_and_a_topic_message_arrive_as_the_host_needs_them() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    let group = h.fake.chat(2, true);

    let posted = h.fake.user_says(&dm, "hello there", false).await;
    let ev = run.next_accepted().await;
    assert_eq!(ev.channel, "telegram");
    assert_eq!(ev.chat_id, dm.platform_id);
    assert_eq!(ev.platform_msg_id, posted.message_id);
    assert_eq!(ev.text, "hello there");
    assert_eq!(ev.sender, dm.user_id);
    assert_eq!(ev.sender_name.as_deref(), Some("User 1"));
    assert!(!ev.is_group);
    assert!(ev.mentions_me, "a DM always addresses the bot");
    assert!(!ev.from_bot);
    assert_eq!(ev.thread, None);

    h.fake.user_says(&group, "what's up", true).await;
    let ev = run.next_accepted().await;
    assert!(ev.is_group);
    assert!(ev.chat_id.starts_with("-100"));
    assert_eq!(ev.chat_name, "Group 2");
    assert!(ev.mentions_me);
    assert_eq!(
        ev.text, "@nanoclaw_test_bot what's up",
        "text is kept as sent"
    );

    h.fake.user_says(&group, "just chatting", false).await;
    let ev = run.next_accepted().await;
    assert!(!ev.mentions_me);

    h.fake.user_says_in_topic(&group, 42, "in a topic", true);
    let ev = run.next_accepted().await;
    assert_eq!(ev.thread.as_deref(), Some("42"));
    assert!(ev.mentions_me);
}

#[tokio::test]
async fn a_reply_to_the_bot_addresses_it() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let group = h.fake.chat(3, true);
    let sent = run
        .channel
        .deliver(&nanoclaw_channel::OutgoingMessage {
            idempotency_key: "k-reply".into(),
            chat_id: group.platform_id.clone(),
            text: "I am the bot".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    let bot_message: i64 = sent.rsplit(':').next().unwrap().parse().unwrap();
    h.fake.user_replies_to_bot(&group, bot_message, "thanks");
    let ev = run.next_accepted().await;
    assert_eq!(ev.text, "thanks");
    assert!(ev.mentions_me);
}

#[tokio::test]
async fn the_offset_is_persisted_and_nothing_comes_again_after_a_restart() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.user_says(&dm, "one", false).await;
    h.fake.user_says(&dm, "two", false).await;
    assert_eq!(run.next_accepted().await.text, "one");
    assert_eq!(run.next_accepted().await.text, "two");
    h.wait_offset(1).await;
    let offset = h.offset().await.unwrap();

    // The same channel stopped and started again (`channel restart`).
    run.channel.stop().await;
    let mut run = start(run.channel).await;
    h.fake.user_says(&dm, "three", false).await;
    assert_eq!(run.next_accepted().await.text, "three");
    h.wait_offset(offset + 1).await;
    run.channel.stop().await;

    // A new process: a new channel with the same state store.
    let mut run = h.start().await;
    h.fake.user_says(&dm, "four", false).await;
    assert_eq!(run.next_accepted().await.text, "four");
    assert!(h.fake.confirmed_offset() >= offset);
}

#[tokio::test]
async fn a_message_the_host_did_not_settle_comes_again() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    let posted = h.fake.user_says(&dm, "store me", false).await;

    let mut ev = run.next().await;
    ack(&mut ev, RouteOutcome::Failed("disk full".into()));
    let mut again = run.next().await;
    assert_eq!(again.platform_msg_id, posted.message_id);
    // Dropped without an answer: also not settled.
    drop(again.ack.take());
    let mut third = run.next().await;
    assert_eq!(third.platform_msg_id, posted.message_id);
    ack(&mut third, RouteOutcome::Accepted);
    h.wait_offset(1).await;
    run.assert_quiet(Duration::from_millis(1500)).await;
    assert!(
        run.channel
            .health()
            .last_error
            .unwrap()
            .contains("not stored"),
        "the failure shows in health"
    );
}

#[tokio::test]
async fn a_batch_interrupted_by_a_crash_is_delivered_again_to_the_next_process() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.user_says(&dm, "a", false).await;
    h.fake.user_says(&dm, "b", false).await;
    let mut a = run.next().await;
    let _b = run.next().await;
    ack(&mut a, RouteOutcome::Accepted);
    // The host dies before settling "b".
    run.channel.stop().await;
    drop(run);
    let mut run = h.start().await;
    // "a" may come again (its batch was not settled; the host deduplicates); "b" must.
    let mut seen = Vec::new();
    while !seen.contains(&"b".to_string()) {
        assert!(seen.len() < 2, "got {seen:?}");
        seen.push(run.next_accepted().await.text);
    }
}

#[tokio::test]
async fn malformed_updates_are_skipped_and_the_next_message_arrives() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.push_malformed(&dm).await;
    h.fake.push_update(json!({"update_id_missing": true}));
    h.fake.user_says(&dm, "still here", false).await;
    let ev = run.next_accepted().await;
    assert_eq!(ev.text, "still here");
    let health = run.channel.health();
    assert!(health.is_up(), "{health:?}");
    assert!(health.last_error.unwrap().contains("malformed"));
}

#[tokio::test]
async fn the_bots_own_messages_are_dropped_and_other_bots_are_marked() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let group = h.fake.chat(4, true);
    h.fake.post(
        &group,
        json!({"id": BOT_ID, "is_bot": true, "first_name": "Nanoclaw"}),
        json!({"text": "my own words"}),
    );
    h.fake.other_bot_says(&group, "hi bot").await;
    let ev = run.next_accepted().await;
    assert_eq!(ev.text, "@nanoclaw_test_bot hi bot");
    assert!(ev.from_bot);
    h.fake.user_says(&group, "a human", true).await;
    let ev = run.next_accepted().await;
    assert_eq!(ev.text, "@nanoclaw_test_bot a human");
    assert!(!ev.from_bot);
}

#[tokio::test]
async fn files_photos_and_voice_notes_are_downloaded() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let group = h.fake.chat(5, true);
    h.fake
        .user_sends_file(&group, "report.pdf", b"%PDF-1.7 data", "see this")
        .await;
    let ev = run.next_accepted().await;
    assert_eq!(ev.text, "@nanoclaw_test_bot see this");
    assert!(ev.mentions_me, "the caption's mention counts");
    assert_eq!(ev.attachments.len(), 1);
    assert_eq!(ev.attachments[0].file_name, "report.pdf");
    assert_eq!(&ev.attachments[0].data[..], b"%PDF-1.7 data");

    h.fake
        .user_sends_photo(&group, b"full size jpeg", "a photo");
    let ev = run.next_accepted().await;
    assert_eq!(ev.attachments.len(), 1, "only the largest size");
    assert_eq!(&ev.attachments[0].data[..], b"full size jpeg");
    assert_eq!(ev.attachments[0].mime_type.as_deref(), Some("image/jpeg"));

    let dm = h.fake.chat(6, false);
    h.fake.user_sends_voice(&dm, b"OggS voice");
    let ev = run.next_accepted().await;
    assert_eq!(&ev.attachments[0].data[..], b"OggS voice");
    assert_eq!(ev.attachments[0].mime_type.as_deref(), Some("audio/ogg"));
}

#[tokio::test]
async fn a_file_over_the_cap_is_skipped_with_a_note() {
    let h = Harness::new().await;
    let channel = h
        .build_with(
            nanoclaw_test_support::platforms::telegram::BOT_TOKEN,
            "max_attachment_bytes = 8\n",
        )
        .await;
    let mut run = start(channel).await;
    let dm = h.fake.chat(1, false);
    h.fake
        .user_sends_file(&dm, "big.bin", b"more than eight bytes", "here")
        .await;
    let ev = run.next_accepted().await;
    assert!(ev.attachments.is_empty());
    assert!(ev.text.starts_with("here\n"), "{}", ev.text);
    assert!(ev.text.contains("big.bin") && ev.text.contains("skipped"));
}

use nanoclaw_channel::RouteOutcome;
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::whatsapp::{BUSINESS_NUMBER, DELIVERY_CONCURRENCY, sign};

use crate::common::{Harness, ack, eventually};

#[tokio::test]
async fn a_dm_and_group_messages_arrive_as_the_host_needs_them() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    let posted = h.fake.user_says(&dm, "hello there", false).await;
    let e = run.next_accepted().await;
    assert_eq!(e.channel, "whatsapp");
    assert_eq!(e.chat_id, dm.platform_id);
    assert_eq!(e.platform_msg_id, posted.message_id);
    assert_eq!(e.sender, dm.user_id);
    assert_eq!(e.sender_name.as_deref(), Some("User 1"));
    assert_eq!(e.text, "hello there");
    assert!(!e.is_group && e.mentions_me && !e.from_bot);
    assert!(e.received_at > 0);

    let group = h.fake.chat(2, true);
    h.fake.user_says(&group, "chatter", false).await;
    let e = run.next_accepted().await;
    assert_eq!(e.chat_id, group.platform_id);
    assert!(e.is_group && !e.mentions_me);
    h.fake.user_says(&group, "question", true).await;
    let e = run.next_accepted().await;
    assert!(e.mentions_me);
    assert_eq!(e.text, format!("@{BUSINESS_NUMBER} question"));
    assert!(run.channel.health().last_event.is_some());
}

#[tokio::test]
async fn a_reply_to_the_business_in_a_group_addresses_it() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let group = h.fake.chat(2, true);
    h.fake
        .user_replies_to_bot(&group, "wamid.OURS", "yes please");
    let e = run.next_accepted().await;
    assert!(e.is_group && e.mentions_me);
}

#[tokio::test]
async fn a_delivery_is_answered_500_until_the_host_settles_it_and_meta_retries() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    let posted = h.fake.user_says(&dm, "keep me", false).await;
    let mut first = run.next().await;
    ack(&mut first, RouteOutcome::Failed("disk full".into()));
    let again = run.next_accepted().await;
    assert_eq!(again.platform_msg_id, posted.message_id);
    eventually("the retried delivery accepted", || {
        h.fake.connections() >= 1
    })
    .await;
    let attempts = h.fake.delivery_attempts();
    assert_eq!(attempts[..2], [Some(500), Some(200)], "{attempts:?}");
}

#[tokio::test]
async fn the_business_own_echo_and_status_receipts_never_reach_the_host() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.other_bot_says(&dm, "my own words").await;
    h.fake.user_says(&dm, "from the user", false).await;
    assert_eq!(run.next_accepted().await.text, "from the user");
    // A send makes Meta post a `sent` status; it is answered 200 and nothing arrives.
    let msg = nanoclaw_channel::OutgoingMessage {
        idempotency_key: "k".into(),
        chat_id: dm.platform_id.clone(),
        text: "reply".into(),
        ..Default::default()
    };
    run.channel.deliver(&msg).await.unwrap();
    h.fake.user_says(&dm, "after the status", false).await;
    assert_eq!(run.next_accepted().await.text, "after the status");
    eventually("every delivery accepted", || h.fake.connections() == 4).await;
}

#[tokio::test]
async fn malformed_deliveries_are_answered_200_and_skipped() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake.push_malformed(&dm).await;
    h.fake.user_says(&dm, "still here", false).await;
    assert_eq!(run.next_accepted().await.text, "still here");
    eventually("all accepted", || h.fake.connections() == 4).await;
    assert!(h.fake.delivery_attempts().iter().all(|s| *s == Some(200)));
    assert!(run.channel.health().last_error.is_some());
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_refused_and_an_oversized_body_is_413() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    assert_eq!(h.fake.post_once(body, None).await, Some(401));
    let forged = sign(b"something else");
    assert_eq!(h.fake.post_once(body, Some(&forged)).await, Some(401));
    assert_eq!(h.fake.post_once(body, Some(&sign(body))).await, Some(200));
    let big = vec![b' '; 1024 * 1024 + 1];
    assert_eq!(h.fake.post_once(&big, Some(&sign(&big))).await, Some(413));
    h.fake.user_says(&dm, "the real one", false).await;
    assert_eq!(run.next_accepted().await.text, "the real one");
}

#[tokio::test]
async fn the_subscription_handshake_echoes_the_challenge_only_for_our_token() {
    let h = Harness::new().await;
    let _run = h.start().await;
    let url = h.fake.webhook_url();
    let client = reqwest::Client::new();
    let good = client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token=fake-verify-token&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=fake-verify-token&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
    ] {
        let refused = client.get(format!("{url}?{query}")).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{query}");
    }
}

#[tokio::test]
async fn documents_photos_and_voice_notes_are_downloaded() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let dm = h.fake.chat(1, false);
    h.fake
        .user_sends_file(&dm, "report.txt", b"numbers 1 2 3", "read this")
        .await;
    let e = run.next_accepted().await;
    assert_eq!(e.text, "read this");
    assert_eq!(e.attachments.len(), 1);
    assert_eq!(e.attachments[0].file_name, "report.txt");
    assert_eq!(&e.attachments[0].data[..], b"numbers 1 2 3");

    h.fake
        .user_sends_media(&dm, "image", "image/jpeg", b"\xff\xd8jpeg", Some("look"));
    let e = run.next_accepted().await;
    assert_eq!(e.text, "look");
    assert!(e.attachments[0].file_name.ends_with(".jpeg"));
    assert_eq!(e.attachments[0].mime_type.as_deref(), Some("image/jpeg"));

    h.fake
        .user_sends_media(&dm, "audio", "audio/ogg; codecs=opus", b"OggS", None);
    let e = run.next_accepted().await;
    assert_eq!(e.text, "");
    assert_eq!(&e.attachments[0].data[..], b"OggS");
    assert!(e.attachments[0].file_name.starts_with("audio-"));
}

#[tokio::test]
async fn a_file_over_the_cap_is_skipped_with_a_note() {
    let h = Harness::new().await;
    let channel = h
        .build_with(
            nanoclaw_test_support::platforms::whatsapp::ACCESS_TOKEN,
            "max_attachment_bytes = 10\n",
        )
        .await;
    let mut run = crate::common::start(channel).await;
    let dm = h.fake.chat(1, false);
    h.fake
        .user_sends_file(&dm, "big.bin", &[7u8; 64], "too big")
        .await;
    let e = run.next_accepted().await;
    assert!(e.attachments.is_empty());
    assert!(
        e.text
            .starts_with("too big\n[big.bin (64 bytes) was not downloaded"),
        "{}",
        e.text
    );
}

#[tokio::test]
async fn deliveries_for_different_chats_are_posted_at_once_and_each_chat_stays_in_order() {
    let h = Harness::new().await;
    let mut run = h.start().await;
    let chats: Vec<_> = (1..=DELIVERY_CONCURRENCY as u32)
        .map(|n| h.fake.chat(n, false))
        .collect();
    let mut first = Vec::new();
    for chat in &chats {
        first.push(h.fake.user_says(chat, "first", false).await);
    }
    let second = h.fake.user_says(&chats[0], "second", false).await;
    // Each delivery waits for the host's answer; every chat's first message still arrives
    // while none is answered, because Meta (and the fake) post them concurrently.
    let mut held = Vec::new();
    for _ in &chats {
        held.push(run.next().await);
    }
    let mut ids: Vec<&str> = held.iter().map(|e| e.platform_msg_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = first.iter().map(|p| p.message_id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    for e in &mut held {
        ack(e, RouteOutcome::Accepted);
    }
    // The first chat's second message waited for its first.
    assert_eq!(run.next_accepted().await.platform_msg_id, second.message_id);
    eventually("every delivery answered 200", || {
        h.fake.connections() == chats.len() as u64 + 1
    })
    .await;
}

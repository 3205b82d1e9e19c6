//! The Discord channel against `FakeDiscord`: sending (chunking, nonces after a crash,
//! rate limits, errors, files, typing) and receiving attachments.

use std::sync::Arc;
use std::time::Duration;

use super::common::{Harness, wait_for};
use nanoclaw_channel::{
    Channel, ChannelError, OutgoingFile, OutgoingMessage, PartState, Progress, SendLedger,
};
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::discord::FakeDiscord;

fn message(key: &str, chat: &str, text: &str) -> OutgoingMessage {
    OutgoingMessage {
        idempotency_key: key.into(),
        chat_id: chat.into(),
        text: text.into(),
        kind: "reply".into(),
        ..Default::default()
    }
}

/// Numbered words, so order and completeness can be checked.
fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn a_long_reply_goes_out_in_2000_character_parts_in_order() {
    let h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, true);
    let asked = h.fake.user_says(&chat, "tell me a lot", true).await;
    let text = words(1200); // about 6,000 characters
    let out = OutgoingMessage {
        reply_to: Some(asked.message_id.clone()),
        ..message("long", &chat.platform_id, &text)
    };
    let first = h.channel.deliver(&out).await.unwrap();
    let sent = h.fake.sent(&chat).await;
    assert!(sent.len() >= 3, "{} parts", sent.len());
    assert!(sent.iter().all(|m| m.text.chars().count() <= 2000));
    let joined: Vec<String> = sent
        .iter()
        .flat_map(|m| {
            m.text
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(joined.join(" "), text, "every word, in order");
    assert_eq!(sent[0].reply_to.as_deref(), Some(asked.message_id.as_str()));
    assert!(
        sent[1..].iter().all(|m| m.reply_to.is_none()),
        "only the first part replies"
    );
    assert!(first.is_some());

    // Delivering the same message again sends nothing more (the ledger has every part).
    h.channel.deliver(&out).await.unwrap();
    assert_eq!(h.fake.sent(&chat).await.len(), sent.len());
}

#[tokio::test]
async fn a_reply_in_a_thread_goes_to_the_thread() {
    let h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, true);
    let thread = h.fake.create_thread(&chat, "topic", true);
    let out = OutgoingMessage {
        thread: Some(thread.platform_id.clone()),
        ..message("t", &chat.platform_id, "in the thread")
    };
    h.channel.deliver(&out).await.unwrap();
    let sent = h.fake.sent(&chat).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].chat, chat.platform_id);
    assert_eq!(sent[0].thread.as_deref(), Some(thread.platform_id.as_str()));
}

#[tokio::test]
async fn a_part_in_doubt_after_a_crash_is_resent_with_its_nonce_and_shown_once() {
    let h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);
    let out = message("crashy", &chat.platform_id, "exactly once, please");
    h.fake.hold_sends();
    let channel = Arc::clone(&h.channel);
    let sending = tokio::spawn({
        let out = out.clone();
        async move { channel.deliver(&out).await }
    });
    wait_for("the send to reach Discord", || h.fake.held_sends() == 1).await;
    // The host dies before it hears back: the ledger says "being sent".
    sending.abort();
    let _ = sending.await;
    assert_eq!(
        h.ledger.part("crashy", 0).await.unwrap(),
        PartState::InDoubt
    );
    h.fake.release_sends();

    let id = h.channel.deliver(&out).await.unwrap();
    assert_eq!(
        h.fake.message_posts(),
        2,
        "the in-doubt part was sent again"
    );
    let sent = h.fake.sent(&chat).await;
    assert_eq!(sent.len(), 1, "Discord deduplicated it by nonce");
    assert_eq!(
        h.ledger.part("crashy", 0).await.unwrap(),
        PartState::Sent(id)
    );
}

#[tokio::test]
async fn a_429_becomes_rate_limited_with_discords_retry_after() {
    let h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);
    h.fake.rate_limit_sends(1, Duration::from_millis(1500));
    let out = message("limited", &chat.platform_id, "hello");
    match h.channel.deliver(&out).await {
        Err(ChannelError::RateLimited {
            platform,
            retry_after,
        }) => {
            assert_eq!(platform, "discord");
            assert_eq!(retry_after, Duration::from_millis(1500));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(h.fake.sent(&chat).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.channel.deliver(&out).await.unwrap();
    assert_eq!(
        h.fake.sent(&chat).await.len(),
        1,
        "sent once after the wait"
    );
    assert_eq!(h.fake.rate_limit_log().len(), 1);
}

#[tokio::test]
async fn an_exhausted_bucket_is_waited_out_instead_of_hitting_a_429() {
    let fake = FakeDiscord::start().await;
    fake.set_message_bucket(2, Duration::from_millis(1500));
    let h = Harness::start(fake).await;
    let chat = h.fake.chat(1, false);
    // Three parts through a bucket of two: the third must wait for the reset.
    let out = message("bucketed", &chat.platform_id, &words(900));
    h.channel.deliver(&out).await.unwrap();
    assert_eq!(h.fake.sent(&chat).await.len(), 3);
    assert_eq!(
        h.fake.responses_429(),
        0,
        "the bucket headers were honoured"
    );
}

#[tokio::test]
async fn refusals_map_to_rejected_and_a_bad_token_to_unauthorized() {
    let h = Harness::start(FakeDiscord::start().await).await;
    let err = h
        .channel
        .deliver(&message("nowhere", "123456789012345678", "hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::Rejected { detail, .. } if detail.contains("Unknown Channel")),
        "{err}"
    );
    assert!(!err.is_retryable());

    let chat = h.fake.chat(1, false);
    h.fake.revoke_token();
    let err = h
        .channel
        .deliver(&message("revoked", &chat.platform_id, "hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::Unauthorized { .. }), "{err}");
    assert!(matches!(
        h.channel.verify().await,
        Err(ChannelError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn files_go_up_as_multipart_with_the_text() {
    let h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    std::fs::write(&path, b"a,b\n1,2\n").unwrap();
    let out = OutgoingMessage {
        files: vec![OutgoingFile {
            file_name: "report.csv".into(),
            path,
            mime_type: Some("text/csv".into()),
        }],
        ..message("file", &chat.platform_id, "here is the report")
    };
    h.channel.deliver(&out).await.unwrap();
    let sent = h.fake.sent(&chat).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "here is the report");
    assert_eq!(
        sent[0].files,
        vec![("report.csv".to_string(), b"a,b\n1,2\n".to_vec())]
    );
}

#[tokio::test]
async fn attachments_are_downloaded_and_oversized_ones_noted() {
    let fake = FakeDiscord::start().await;
    let mut h = Harness::with_state(fake, Arc::default(), "max_attachment_bytes = 16\n").await;
    let chat = h.fake.chat(1, true);
    h.fake
        .user_sends_file(&chat, "small.txt", b"tiny file", "look")
        .await;
    let e = h.next().await;
    assert_eq!(e.attachments.len(), 1);
    assert_eq!(e.attachments[0].file_name, "small.txt");
    assert_eq!(&e.attachments[0].data[..], b"tiny file");
    assert!(e.mentions_me);

    h.fake
        .user_sends_file(&chat, "big.bin", &[7u8; 64], "too big")
        .await;
    let e = h.next().await;
    assert!(e.attachments.is_empty());
    assert!(
        e.text.contains("big.bin") && e.text.contains("skipped"),
        "{}",
        e.text
    );
}

#[tokio::test]
async fn working_shows_typing() {
    let h = Harness::start(FakeDiscord::start().await).await;
    let chat = h.fake.chat(1, false);
    h.channel
        .progress(&chat.platform_id, &[], Progress::Working)
        .await;
    assert_eq!(h.fake.typing(), vec![chat.platform_id.clone()]);
    let channel: &dyn Channel = &*h.channel;
    assert_eq!(channel.name(), "discord");
}

use std::time::Duration;

use nanoclaw_channel::chunk::Measure;
use nanoclaw_channel::{ChannelError, OutgoingFile, OutgoingMessage, Progress};
use nanoclaw_test_support::platforms::FakePlatform;

use crate::common::{Harness, eventually};

fn message(key: &str, chat: &str, text: &str) -> OutgoingMessage {
    OutgoingMessage {
        idempotency_key: key.to_string(),
        chat_id: chat.to_string(),
        text: text.to_string(),
        kind: "reply".to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_long_reply_is_split_in_order_under_4096_utf16_units() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    // Emoji are two UTF-16 units each: a split by chars would overflow.
    let text: String = (0..1500).map(|i| format!("w{i}😀 ")).collect();
    assert!(Measure::Utf16.len(&text) > 2 * 4096);
    channel
        .deliver(&message("long", &dm.platform_id, &text))
        .await
        .unwrap();
    let sent = h.fake.sent(&dm).await;
    assert!(sent.len() >= 3, "{} parts", sent.len());
    for part in &sent {
        assert!(part.text.encode_utf16().count() <= 4096);
    }
    let words: Vec<String> = sent
        .iter()
        .flat_map(|p| {
            p.text
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    assert_eq!(words, expected);
    // Delivered again (a retry after the host restarted): nothing new is sent.
    channel
        .deliver(&message("long", &dm.platform_id, &text))
        .await
        .unwrap();
    assert_eq!(h.fake.sent(&dm).await.len(), sent.len());
}

#[tokio::test]
async fn markdown_goes_as_markdown_v2_that_telegram_accepts() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    let text = "# Result\n**Done.** 2+2=4 (see _notes_) - [docs](https://e.x/a_(b)) `a_b` ~~old~~!\n```rust\nlet x = \"`\\\\\";\n```";
    channel
        .deliver(&message("md", &dm.platform_id, text))
        .await
        .unwrap();
    let records = h.fake.sent_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].parse_mode.as_deref(), Some("MarkdownV2"));
    assert_eq!(
        records[0].message.text,
        "Result\nDone. 2+2=4 (see notes) - docs a_b old!\nlet x = \"`\\\\\";"
    );
}

#[tokio::test]
async fn markdown_telegram_refuses_goes_again_as_plain_text() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    h.fake.refuse_markdown(1);
    channel
        .deliver(&message("plain", &dm.platform_id, "**bold** text."))
        .await
        .unwrap();
    let records = h.fake.sent_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].parse_mode, None);
    assert_eq!(records[0].message.text, "**bold** text.");
}

#[tokio::test]
async fn a_429_is_rate_limited_with_its_retry_after_and_the_retry_sends_once() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    h.fake.rate_limit_sends(1, Duration::from_secs(3));
    let msg = message("rl", &dm.platform_id, "hello");
    match channel.deliver(&msg).await {
        Err(ChannelError::RateLimited {
            platform,
            retry_after,
        }) => {
            assert_eq!(platform, "telegram");
            assert_eq!(retry_after, Duration::from_secs(3));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(h.fake.sent(&dm).await.is_empty());
    // The refused part is in doubt in the ledger, but this process knows it was not sent.
    channel.deliver(&msg).await.unwrap();
    let sent = h.fake.sent(&dm).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "hello");
}

#[tokio::test]
async fn a_part_in_doubt_after_a_crash_is_not_sent_twice() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    h.fake.hold_sends();
    let msg = message("doubt", &dm.platform_id, "exactly once please");
    let sending = {
        let channel = channel.clone();
        let msg = msg.clone();
        tokio::spawn(async move { channel.deliver(&msg).await })
    };
    eventually("the send to reach the server", || h.fake.held_sends() == 1).await;
    // The host dies between the send and its record.
    sending.abort();
    drop(channel);
    h.fake.release_sends();
    let channel = h.build().await;
    channel.deliver(&msg).await.unwrap();
    assert_eq!(h.fake.sent(&dm).await.len(), 1);
}

#[tokio::test]
async fn replies_and_topics_are_kept_and_the_reply_is_on_the_first_part_only() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let group = h.fake.chat(2, true);
    let asked = h.fake.user_says_in_topic(&group, 42, "question", true);
    let text: String = (0..1200).map(|i| format!("line {i}\n")).collect();
    let mut msg = message("thread", &group.platform_id, &text);
    msg.thread = Some("42".into());
    msg.reply_to = Some(asked.message_id.clone());
    let first = channel.deliver(&msg).await.unwrap().unwrap();
    let sent = h.fake.sent(&group).await;
    assert!(sent.len() >= 2);
    assert!(sent.iter().all(|s| s.thread.as_deref() == Some("42")));
    assert_eq!(sent[0].reply_to.as_deref(), Some(asked.message_id.as_str()));
    assert!(sent[1..].iter().all(|s| s.reply_to.is_none()));
    assert!(first.starts_with(&format!("{}:", group.platform_id)));
}

#[tokio::test]
async fn files_go_as_documents_with_the_text_as_caption_when_it_fits() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    std::fs::write(&path, b"a,b\n1,2\n").unwrap();
    let file = OutgoingFile {
        file_name: "out.csv".into(),
        path: path.clone(),
        mime_type: Some("text/csv".into()),
    };
    let mut msg = message("doc", &dm.platform_id, "Here it is.");
    msg.files = vec![file.clone()];
    channel.deliver(&msg).await.unwrap();
    let sent = h.fake.sent(&dm).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "Here it is.");
    assert_eq!(
        sent[0].files,
        vec![("out.csv".to_string(), b"a,b\n1,2\n".to_vec())]
    );

    // Too long for a caption: the text first, then the document.
    let long = "x ".repeat(700);
    let mut msg = message("doc2", &dm.platform_id, &long);
    msg.files = vec![file];
    channel.deliver(&msg).await.unwrap();
    let sent = h.fake.sent(&dm).await;
    assert_eq!(sent.len(), 3);
    assert!(sent[1].files.is_empty() && sent[1].text.starts_with("x x"));
    assert_eq!(sent[2].files.len(), 1);
    assert_eq!(sent[2].text, "");
}

#[tokio::test]
async fn a_missing_or_blocked_chat_is_rejected_for_good() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let err = channel
        .deliver(&message("nochat", "424242", "hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::Rejected { detail, .. } if detail.contains("chat not found")),
        "{err:?}"
    );
    let dm = h.fake.chat(1, false);
    h.fake.block_bot(&dm);
    let err = channel
        .deliver(&message("blocked", &dm.platform_id, "hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::Rejected { detail, .. } if detail.contains("blocked")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn working_shows_typing() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    channel
        .progress(&dm.platform_id, &[], Progress::Working)
        .await;
    channel
        .progress(&dm.platform_id, &[], Progress::TextDelta("x".into()))
        .await;
    assert_eq!(h.fake.chat_actions(&dm), vec!["typing".to_string()]);
}

use std::time::Duration;

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
async fn a_long_reply_is_split_in_order_under_4096_characters_and_sent_once() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    let text: String = (0..2000).map(|i| format!("wörd{i} ")).collect();
    assert!(text.chars().count() > 2 * 4096);
    let first = channel
        .deliver(&message("long", &dm.platform_id, &text))
        .await
        .unwrap();
    let sent = h.fake.sent(&dm).await;
    assert!(sent.len() >= 3, "{} parts", sent.len());
    assert!(sent.iter().all(|p| p.text.chars().count() <= 4096));
    let words: Vec<&str> = sent
        .iter()
        .flat_map(|p| p.text.split_whitespace())
        .collect();
    let expected: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words, expected);
    assert_eq!(first, Some(h.fake.sent_records()[0].wamid.clone()));
    // Delivered again (a retry after the host restarted): nothing new is sent.
    channel
        .deliver(&message("long", &dm.platform_id, &text))
        .await
        .unwrap();
    assert_eq!(h.fake.sent(&dm).await.len(), sent.len());
}

#[tokio::test]
async fn markdown_goes_as_whatsapp_formatting() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    let text = "# Result\n**Done** in _no_ time, ~~slow~~ [docs](https://e.x/d)\n```\nlet a_b = **c**;\n```";
    channel
        .deliver(&message("md", &dm.platform_id, text))
        .await
        .unwrap();
    assert_eq!(
        h.fake.sent(&dm).await[0].text,
        "*Result*\n*Done* in _no_ time, ~slow~ docs (https://e.x/d)\n```\nlet a_b = **c**;\n```"
    );
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
            assert_eq!(platform, "whatsapp");
            assert_eq!(retry_after, Duration::from_secs(3));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(h.fake.sent(&dm).await.is_empty());
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
    sending.abort();
    drop(channel);
    h.fake.release_sends();
    let channel = h.build().await;
    channel.deliver(&msg).await.unwrap();
    assert_eq!(h.fake.sent(&dm).await.len(), 1);
}

#[tokio::test]
async fn the_first_part_quotes_the_question_and_groups_get_group_messages() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let group = h.fake.chat(2, true);
    let asked = h.fake.user_says(&group, "question", true).await;
    let text: String = (0..1200).map(|i| format!("line {i}\n")).collect();
    let mut msg = message("quote", &group.platform_id, &text);
    msg.reply_to = Some(asked.message_id.clone());
    channel.deliver(&msg).await.unwrap();
    let sent = h.fake.sent(&group).await;
    assert!(sent.len() >= 2);
    assert_eq!(sent[0].reply_to.as_deref(), Some(asked.message_id.as_str()));
    assert!(sent[1..].iter().all(|s| s.reply_to.is_none()));
}

#[tokio::test]
async fn files_are_uploaded_and_sent_as_documents_after_the_text() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    std::fs::write(&path, b"a,b\n1,2\n").unwrap();
    let mut msg = message("doc", &dm.platform_id, "Here it is.");
    msg.files = vec![OutgoingFile {
        file_name: "out.csv".into(),
        path,
        mime_type: Some("text/csv".into()),
    }];
    channel.deliver(&msg).await.unwrap();
    let records = h.fake.sent_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].kind, "text");
    assert_eq!(records[0].message.text, "Here it is.");
    assert_eq!(records[1].kind, "document");
    assert_eq!(
        records[1].message.files,
        vec![("out.csv".to_string(), b"a,b\n1,2\n".to_vec())]
    );
}

#[tokio::test]
async fn an_unknown_number_or_a_closed_window_is_rejected_for_good() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let err = channel
        .deliver(&message("nobody", "19999999999", "hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::Rejected { detail, .. } if detail.contains("131026")),
        "{err:?}"
    );
    let dm = h.fake.chat(1, false);
    h.fake.close_window(&dm);
    let err = channel
        .deliver(&message("late", &dm.platform_id, "hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::Rejected { detail, .. } if detail.contains("template")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn working_marks_the_last_answered_message_read_with_typing() {
    let h = Harness::new().await;
    let channel = h.build().await;
    let dm = h.fake.chat(1, false);
    let a = h.fake.user_says(&dm, "a", false).await;
    let b = h.fake.user_says(&dm, "b", false).await;
    let answers = vec![a.message_id, b.message_id.clone()];
    channel
        .progress(&dm.platform_id, &answers, Progress::Working)
        .await;
    channel
        .progress(&dm.platform_id, &answers, Progress::TextDelta("x".into()))
        .await;
    assert_eq!(h.fake.reads(), vec![(b.message_id, true)]);
}

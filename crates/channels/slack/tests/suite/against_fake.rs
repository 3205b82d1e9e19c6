//! The Slack channel against the local Slack (`FakeSlack`): what a user would notice.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState};
use nanoclaw_channel::{
    Channel, ChannelError, ChannelEvent, ChannelSetup, InboundEvent, LinkState, OutgoingFile,
    OutgoingMessage, RouteOutcome, SendLedger,
};
use nanoclaw_channel_slack::REGISTRATION;
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::slack::{self, FakeSlack};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    fake: FakeSlack,
    channel: Arc<dyn Channel>,
    rx: mpsc::Receiver<ChannelEvent>,
    ledger: Arc<MemoryLedger>,
    _dir: tempfile::TempDir,
}

async fn build(
    fake: &FakeSlack,
    extra: &str,
    bot_token: &str,
) -> (Arc<dyn Channel>, Arc<MemoryLedger>, tempfile::TempDir) {
    let settings: toml::Table = format!("{}{extra}", fake.settings_toml()).parse().unwrap();
    let ledger = Arc::new(MemoryLedger::default());
    let dir = tempfile::tempdir().unwrap();
    let setup = ChannelSetup {
        settings,
        secrets: Arc::new(MemorySecrets::with(&[
            ("slack.app_token", slack::APP_TOKEN),
            ("slack.bot_token", bot_token),
        ])),
        state: Arc::new(MemoryState::default()),
        ledger: ledger.clone(),
        assistant_name: "Andy".into(),
        data_dir: dir.path().to_path_buf(),
    };
    let channel = (REGISTRATION.factory)(setup).await.unwrap();
    (channel, ledger, dir)
}

async fn started_with(extra: &str) -> Harness {
    let fake = FakeSlack::start().await;
    let (channel, ledger, dir) = build(&fake, extra, slack::BOT_TOKEN).await;
    let (tx, rx) = mpsc::channel(64);
    channel.clone().start(tx).await.unwrap();
    Harness {
        fake,
        channel,
        rx,
        ledger,
        _dir: dir,
    }
}

async fn started() -> Harness {
    started_with("").await
}

impl Harness {
    async fn next(&mut self) -> InboundEvent {
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some(ChannelEvent::Inbound(ev))) => return ev,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("sink closed"),
                Err(_) => panic!("no inbound event within {WAIT:?}"),
            }
        }
    }

    /// The next inbound event, answered `Accepted` like the host does once it is stored.
    async fn accept_next(&mut self) -> InboundEvent {
        let mut ev = self.next().await;
        if let Some(ack) = ev.ack.take() {
            let _ = ack.send(RouteOutcome::Accepted);
        }
        ev
    }

    fn message(&self, chat: &str, key: &str, text: &str) -> OutgoingMessage {
        OutgoingMessage {
            idempotency_key: key.into(),
            chat_id: chat.into(),
            text: text.into(),
            kind: "reply".into(),
            ..Default::default()
        }
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_dm_reaches_the_host_and_is_acked_only_after_it_is_settled() {
    let mut h = started().await;
    let chat = h.fake.chat(1, false);
    let posted = h.fake.user_says(&chat, "hello there", false).await;
    let mut ev = h.next().await;
    assert_eq!(ev.chat_id, chat.platform_id);
    assert_eq!(ev.platform_msg_id, posted.message_id);
    assert_eq!(
        (ev.text.as_str(), ev.sender.as_str()),
        ("hello there", chat.user_id.as_str())
    );
    assert!(ev.mentions_me && !ev.is_group && !ev.from_bot);
    assert!(ev.received_at > 0);
    // The host has not answered: the envelope is still unacknowledged.
    assert!(
        h.fake
            .deliveries(&posted.message_id)
            .iter()
            .all(|(_, acked)| !acked)
    );
    ev.ack.take().unwrap().send(RouteOutcome::Accepted).unwrap();
    until("the ack", || {
        h.fake
            .deliveries(&posted.message_id)
            .iter()
            .all(|(_, a)| *a)
    })
    .await;
    assert_eq!(h.channel.health().state, LinkState::Connected);
    assert!(h.channel.health().last_event.is_some());
}

#[tokio::test]
async fn a_channel_mention_sent_as_app_mention_and_message_reaches_the_host_once() {
    let mut h = started().await;
    let chat = h.fake.chat(2, true);
    let posted = h.fake.user_says(&chat, "what's up", true).await;
    let ev = h.accept_next().await;
    assert_eq!(ev.platform_msg_id, posted.message_id);
    assert!(ev.mentions_me && ev.is_group);
    assert!(ev.text.contains("what's up"));
    // The second copy was dropped: the next event is the next message, not mentioning us.
    let plain = h.fake.user_says(&chat, "just chatting", false).await;
    let next = h.accept_next().await;
    assert_eq!(next.platform_msg_id, plain.message_id);
    assert!(!next.mentions_me);
    // Both envelopes of the first message are acknowledged, so Slack stops retrying.
    until("both acks", || {
        let d = h.fake.deliveries(&posted.message_id);
        d.len() == 2 && d.iter().all(|(_, a)| *a)
    })
    .await;
}

#[tokio::test]
async fn a_thread_message_keeps_its_thread_and_the_reply_goes_there() {
    let mut h = started().await;
    let chat = h.fake.chat(3, true);
    let parent = h.fake.user_says(&chat, "start", true).await;
    h.accept_next().await;
    let parent_ts = parent.message_id.split(':').nth(1).unwrap().to_string();
    h.fake
        .user_posts(&chat, "in thread", true, Some(&parent_ts), Vec::new());
    let ev = h.accept_next().await;
    assert_eq!(ev.thread.as_deref(), Some(parent_ts.as_str()));
    let mut reply = h.message(&chat.platform_id, "k-thread", "**sure**");
    reply.thread = ev.thread.clone();
    h.channel.deliver(&reply).await.unwrap();
    let sent = h.fake.sent(&chat).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].thread.as_deref(), Some(parent_ts.as_str()));
    assert_eq!(sent[0].text, "*sure*");

    // A reply (without a mention) in a thread the bot started addresses the bot.
    let ours = h.message(&chat.platform_id, "k-top", "shall I go on?");
    let id = h.channel.deliver(&ours).await.unwrap().unwrap();
    let our_ts = id.split(':').nth(1).unwrap().to_string();
    h.fake
        .user_posts(&chat, "yes please", false, Some(&our_ts), Vec::new());
    let ev = h.accept_next().await;
    assert_eq!(ev.text, "yes please");
    assert!(ev.mentions_me);
    assert_eq!(ev.thread.as_deref(), Some(our_ts.as_str()));
}

#[tokio::test]
async fn an_envelope_the_host_did_not_store_is_redelivered_with_the_same_message_id() {
    let mut h = started().await;
    let chat = h.fake.chat(4, false);
    let posted = h.fake.user_says(&chat, "keep me", false).await;
    let mut first = h.next().await;
    first
        .ack
        .take()
        .unwrap()
        .send(RouteOutcome::Failed("disk full".into()))
        .unwrap();
    // Unacknowledged, Slack retries; the host sees the same id again.
    let second = h.accept_next().await;
    assert_eq!(second.platform_msg_id, posted.message_id);
    assert_eq!(second.text, "keep me");
    until("the retry's ack", || {
        h.fake
            .deliveries(&posted.message_id)
            .iter()
            .any(|(n, acked)| *n >= 2 && *acked)
    })
    .await;
}

#[tokio::test]
async fn a_refresh_request_moves_to_a_new_connection_without_a_gap() {
    let mut h = started().await;
    assert_eq!(h.fake.connections(), 1);
    h.fake.disconnect("refresh_requested");
    until("a second connection", || h.fake.connections() == 2).await;
    let chat = h.fake.chat(5, false);
    let posted = h.fake.user_says(&chat, "after refresh", false).await;
    assert_eq!(h.accept_next().await.platform_msg_id, posted.message_id);
    let health = h.channel.health();
    assert_eq!(health.state, LinkState::Connected);
    // A planned move is not a lost connection.
    assert_eq!(health.reconnects, 0);
}

#[tokio::test]
async fn a_dropped_socket_reconnects_and_nothing_is_lost() {
    let mut h = started().await;
    let chat = h.fake.chat(6, false);
    h.fake.drop_connections().await;
    // Posted while the link may be down: delivered once the adapter is back.
    let posted = h.fake.user_says(&chat, "during the outage", false).await;
    assert_eq!(h.accept_next().await.platform_msg_id, posted.message_id);
    assert!(h.fake.connections() >= 2);
    let health = h.channel.health();
    assert!(health.reconnects >= 1);
    assert!(health.last_error.is_some());
}

#[tokio::test]
async fn a_long_reply_is_split_into_ordered_parts_with_part_metadata() {
    let h = started().await;
    let chat = h.fake.chat(7, true);
    let text: String = (0..2500).map(|i| format!("w{i} ")).collect();
    h.channel
        .deliver(&h.message(&chat.platform_id, "k-long", &text))
        .await
        .unwrap();
    let sent = h.fake.sent(&chat).await;
    assert!(sent.len() >= 3, "{} parts", sent.len());
    assert!(
        sent.iter()
            .all(|m| m.text.chars().count() <= h.fake.max_message_len())
    );
    let words: Vec<String> = sent
        .iter()
        .flat_map(|m| {
            m.text
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<String> = (0..2500).map(|i| format!("w{i}")).collect();
    assert_eq!(words, expected);
    let parts: Vec<u64> = h
        .fake
        .messages(&chat)
        .iter()
        .map(|m| m["metadata"]["event_payload"]["part"].as_u64().unwrap())
        .collect();
    assert_eq!(parts, (0..sent.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_part_in_doubt_after_a_crash_is_found_by_its_metadata_and_not_sent_twice() {
    let h = started().await;
    let chat = h.fake.chat(8, true);
    let msg = h.message(&chat.platform_id, "k-crash", "only once please");
    // The host dies while Slack has the message but before the answer is recorded.
    h.fake.hold_sends();
    let channel = h.channel.clone();
    let pending = msg.clone();
    let send = tokio::spawn(async move { channel.deliver(&pending).await });
    until("the held send", || h.fake.held_sends() == 1).await;
    send.abort();
    h.fake.release_sends();
    // Restarted, the host delivers the message again: the part is in doubt.
    let id = h.channel.deliver(&msg).await.unwrap();
    assert_eq!(h.fake.sent(&chat).await.len(), 1);
    assert_eq!(h.fake.post_calls(), 1);
    let ts = h.fake.messages(&chat)[0]["ts"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id, Some(format!("{}:{ts}", chat.platform_id)));

    // In doubt but never reached Slack: sent now.
    h.ledger.begin("k-lost", 0).await.unwrap();
    h.channel
        .deliver(&h.message(&chat.platform_id, "k-lost", "lost one"))
        .await
        .unwrap();
    let sent = h.fake.sent(&chat).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].text, "lost one");
}

#[tokio::test]
async fn a_429_is_reported_with_slacks_retry_after() {
    let h = started().await;
    let chat = h.fake.chat(9, true);
    h.fake.rate_limit_sends(1, Duration::from_secs(3));
    let msg = h.message(&chat.platform_id, "k-429", "hi");
    match h.channel.deliver(&msg).await {
        Err(ChannelError::RateLimited {
            retry_after,
            platform,
        }) => {
            assert_eq!(retry_after, Duration::from_secs(3));
            assert_eq!(platform, "slack");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(h.fake.sent(&chat).await.is_empty());
    h.channel.deliver(&msg).await.unwrap();
    assert_eq!(h.fake.sent(&chat).await.len(), 1);
}

#[tokio::test]
async fn slack_refusals_map_to_rejected() {
    let h = started().await;
    let err = h
        .channel
        .deliver(&h.message("nope", "k-x", "hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::Rejected { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_malformed_envelope_is_skipped_acknowledged_and_the_loop_goes_on() {
    let mut h = started().await;
    let chat = h.fake.chat(10, false);
    h.fake.push_malformed(&chat).await;
    until("the malformed envelope's ack", || h.fake.malformed_acked()).await;
    let posted = h.fake.user_says(&chat, "still here", false).await;
    assert_eq!(h.accept_next().await.platform_msg_id, posted.message_id);
    let health = h.channel.health();
    assert_eq!(health.state, LinkState::Connected);
    assert!(health.last_error.unwrap().contains("malformed"));
}

#[tokio::test]
async fn our_own_echo_is_dropped_and_another_bot_is_flagged() {
    let mut h = started().await;
    let chat = h.fake.chat(11, true);
    h.channel
        .deliver(&h.message(&chat.platform_id, "k-echo", "from me"))
        .await
        .unwrap();
    let other = h.fake.other_bot_says(&chat, "hi bot").await;
    // Slack echoed our post before the other bot spoke; the first event is the other bot.
    let ev = h.accept_next().await;
    assert_eq!(ev.platform_msg_id, other.message_id);
    assert!(ev.from_bot && ev.mentions_me);
    assert_eq!(ev.sender, slack::OTHER_BOT_ID);
    until("every envelope acked", || h.fake.all_acked()).await;
}

#[tokio::test]
async fn files_come_in_with_the_bot_token_and_go_out_by_external_upload() {
    let mut h = started().await;
    let chat = h.fake.chat(12, true);
    h.fake
        .user_sends_file(&chat, "notes.txt", b"file body", "read this")
        .await;
    let ev = h.accept_next().await;
    assert_eq!(ev.attachments.len(), 1);
    assert_eq!(ev.attachments[0].file_name, "notes.txt");
    assert_eq!(&ev.attachments[0].data[..], b"file body");
    assert!(ev.text.contains("read this"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    std::fs::write(&path, b"a,b\n1,2\n").unwrap();
    let mut msg = h.message(&chat.platform_id, "k-file", "here it is");
    msg.files = vec![OutgoingFile {
        file_name: "report.csv".into(),
        path,
        mime_type: None,
    }];
    h.channel.deliver(&msg).await.unwrap();
    let sent = h.fake.sent(&chat).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].text, "here it is");
    assert_eq!(
        sent[1].files,
        vec![("report.csv".to_string(), b"a,b\n1,2\n".to_vec())]
    );
}

#[tokio::test]
async fn an_oversized_file_is_skipped_with_a_note() {
    let mut h = started_with("max_attachment_bytes = 4\n").await;
    let chat = h.fake.chat(13, true);
    h.fake
        .user_sends_file(&chat, "big.bin", b"more than four", "big one")
        .await;
    let ev = h.accept_next().await;
    assert!(ev.attachments.is_empty());
    assert!(
        ev.text.contains("big.bin") && ev.text.contains("skipped"),
        "{}",
        ev.text
    );
}

#[tokio::test]
async fn a_refused_token_takes_the_channel_down() {
    let fake = FakeSlack::start().await;
    let (channel, _, _dir) = build(&fake, "", "xoxb-wrong").await;
    let (tx, _rx) = mpsc::channel(8);
    let err = channel.clone().start(tx).await.unwrap_err();
    assert!(matches!(err, ChannelError::Unauthorized { .. }), "{err:?}");
    assert_eq!(channel.health().state, LinkState::Down);
    assert!(channel.verify().await.is_err());
}

#[tokio::test]
async fn a_token_revoked_while_connected_takes_the_loop_down() {
    let h = started().await;
    h.fake.revoke_tokens();
    h.fake.drop_connections().await;
    until("down", || h.channel.health().state == LinkState::Down).await;
    assert!(
        h.channel
            .health()
            .last_error
            .unwrap()
            .contains("invalid_auth")
    );
}

#[tokio::test]
async fn verify_names_the_bot_and_a_stopped_channel_starts_again() {
    let mut h = started().await;
    assert!(
        h.channel
            .verify()
            .await
            .unwrap()
            .starts_with(slack::BOT_NAME)
    );
    h.channel.stop().await;
    assert_eq!(h.channel.health().state, LinkState::Stopped);
    let (tx, rx) = mpsc::channel(64);
    h.rx = rx;
    h.channel.clone().start(tx).await.unwrap();
    let chat = h.fake.chat(14, false);
    let posted = h.fake.user_says(&chat, "again", false).await;
    assert_eq!(h.accept_next().await.platform_msg_id, posted.message_id);
    assert_eq!(h.fake.connections(), 2);
}

#[tokio::test]
async fn fifty_messages_reach_the_host_before_it_answers_and_each_is_acked_once_settled() {
    let mut h = started().await;
    let chat = h.fake.chat(7, false);
    let mut posted = Vec::new();
    for i in 0..50 {
        posted.push(h.fake.user_says(&chat, &format!("m{i}"), false).await);
    }
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(h.next().await);
    }
    let ids: Vec<&str> = held.iter().map(|e| e.platform_msg_id.as_str()).collect();
    let expected: Vec<&str> = posted.iter().map(|p| p.message_id.as_str()).collect();
    assert_eq!(
        ids, expected,
        "all fifty reached the host before any answer"
    );
    assert!(
        posted
            .iter()
            .all(|p| h.fake.deliveries(&p.message_id).iter().all(|(_, a)| !a)),
        "nothing is acknowledged before the host settles it"
    );
    // The host answers out of order, and cannot store m20.
    for (i, e) in held.iter_mut().enumerate().rev() {
        let outcome = if i == 20 {
            RouteOutcome::Failed("disk full".into())
        } else {
            RouteOutcome::Accepted
        };
        e.ack.take().unwrap().send(outcome).unwrap();
    }
    until("every settled envelope acknowledged", || {
        posted
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 20)
            .all(|(_, p)| h.fake.deliveries(&p.message_id).iter().any(|(_, a)| *a))
    })
    .await;
    // m20 was not acknowledged: Slack redelivers it and it reaches the host again, once.
    let again = h.accept_next().await;
    assert_eq!(again.platform_msg_id, posted[20].message_id);
    until("m20's retry acknowledged", || {
        h.fake
            .deliveries(&posted[20].message_id)
            .iter()
            .any(|(_, a)| *a)
    })
    .await;
    let after = h.fake.user_says(&chat, "after", false).await;
    assert_eq!(h.accept_next().await.platform_msg_id, after.message_id);
}

#[tokio::test]
async fn mentions_sent_twice_reach_the_host_once_each_while_many_are_in_flight() {
    let mut h = started().await;
    let chat = h.fake.chat(8, true);
    let mut posted = Vec::new();
    for i in 0..20 {
        // Each arrives as an app_mention and a message envelope.
        posted.push(h.fake.user_says(&chat, &format!("hey {i}"), true).await);
    }
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(h.next().await);
    }
    let mut ids: Vec<String> = held.iter().map(|e| e.platform_msg_id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = posted.iter().map(|p| p.message_id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected, "each message once");
    for e in &mut held {
        e.ack.take().unwrap().send(RouteOutcome::Accepted).unwrap();
    }
    until("both envelopes of every message acknowledged", || {
        posted.iter().all(|p| {
            let d = h.fake.deliveries(&p.message_id);
            d.len() >= 2 && d.iter().all(|(_, a)| *a)
        })
    })
    .await;
    // Nothing else reached the host: the next event is the next message.
    let after = h.fake.user_says(&chat, "after", true).await;
    assert_eq!(h.accept_next().await.platform_msg_id, after.message_id);
}

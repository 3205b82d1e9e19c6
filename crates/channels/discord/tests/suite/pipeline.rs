//! Inbound pipelining: messages reach the host without waiting for its answers, and the
//! resume cursor follows only what the host settled.

#![allow(clippy::expect_used)] // a test helper: a missing ack should fail loudly

use std::time::Duration;

use super::common::{Harness, wait_for};
use nanoclaw_channel::{InboundEvent, RouteOutcome};
use nanoclaw_test_support::platforms::discord::FakeDiscord;
use nanoclaw_test_support::platforms::{FakePlatform, Posted};

fn answer(event: &mut InboundEvent, outcome: RouteOutcome) {
    let ack = event.ack.take().expect("an unanswered event");
    let _ = ack.send(outcome);
}

async fn post(h: &Harness, n: usize) -> Vec<Posted> {
    let chat = h.fake.chat(1, false);
    let mut posted = Vec::new();
    for i in 0..n {
        posted.push(h.fake.user_says(&chat, &format!("m{i}"), false).await);
    }
    posted
}

#[tokio::test]
async fn fifty_messages_reach_the_host_before_it_answers_any_and_heartbeats_go_on() {
    let fake = FakeDiscord::start().await;
    fake.set_heartbeat_interval(Duration::from_millis(200));
    let mut h = Harness::start(fake).await;
    let posted = post(&h, 50).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(h.next_unanswered().await);
    }
    let ids: Vec<&str> = held.iter().map(|e| e.platform_msg_id.as_str()).collect();
    let expected: Vec<&str> = posted.iter().map(|p| p.message_id.as_str()).collect();
    assert_eq!(ids, expected, "all fifty, in order, none answered yet");
    let beats = h.fake.heartbeats();
    wait_for("heartbeats while the host holds its answers", || {
        h.fake.heartbeats() >= beats + 2
    })
    .await;
    for e in &mut held {
        answer(e, RouteOutcome::Accepted);
    }

    // A clean stop saves the cursor past all fifty: a restarted host replays none of them.
    h.channel.stop().await;
    h.fake.drop_connections().await;
    let mut again = Harness::with_state(h.fake, h.state.clone(), "").await;
    let chat = again.fake.chat(1, false);
    let after = again
        .fake
        .user_says(&chat, "after the restart", false)
        .await;
    assert_eq!(again.next().await.platform_msg_id, after.message_id);
    assert_eq!(again.fake.resumes(), 1);
}

#[tokio::test]
async fn a_stop_saves_the_cursor_only_over_what_the_host_settled() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let posted = post(&h, 50).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(h.next_unanswered().await);
    }
    // The host answers the first twenty and the last ten; 20..40 are still undecided.
    for (i, e) in held.iter_mut().enumerate() {
        if !(20..40).contains(&i) {
            answer(e, RouteOutcome::Accepted);
        }
    }
    h.channel.stop().await;
    h.fake.drop_connections().await;
    drop(held);

    let mut again = Harness::with_state(h.fake, h.state.clone(), "").await;
    // The restarted channel has no memory of what was settled: the resume alone decides.
    for p in &posted[20..] {
        assert_eq!(again.next().await.platform_msg_id, p.message_id);
    }
}

#[tokio::test]
async fn a_failure_in_the_middle_is_replayed_on_resume_and_nothing_settled_is_lost() {
    let mut h = Harness::start(FakeDiscord::start().await).await;
    let posted = post(&h, 10).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(h.next_unanswered().await);
    }
    for (i, e) in held.iter_mut().enumerate() {
        let outcome = if i == 4 {
            RouteOutcome::Failed("disk full".into())
        } else {
            RouteOutcome::Accepted
        };
        answer(e, outcome);
    }
    h.fake.drop_connections().await;
    // Discord replays 4..10 on resume; only the failed one reaches the host again.
    let e = h.next().await;
    assert_eq!(e.platform_msg_id, posted[4].message_id);
    let chat = h.fake.chat(1, false);
    let after = h.fake.user_says(&chat, "after", false).await;
    assert_eq!(h.next().await.platform_msg_id, after.message_id);
    wait_for("the resume", || h.fake.resumes() == 1).await;

    // The cursor moved past everything once the replay settled: a restart replays nothing.
    h.channel.stop().await;
    h.fake.drop_connections().await;
    let mut again = Harness::with_state(h.fake, h.state.clone(), "").await;
    let later = again.fake.user_says(&chat, "later", false).await;
    assert_eq!(again.next().await.platform_msg_id, later.message_id);
}

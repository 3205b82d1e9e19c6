//! Wiring per chat: trigger rules, bots, sender allowlists, unknown chats held for the owner
//! (asked once, replayed on approval, turned away on denial), pairing codes, inbound files.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::common::*;
use bytes::Bytes;
use nanoclaw_host::Host;
use nanoclaw_host::channel::{Attachment, ChannelEvent, InboundEvent, RouteOutcome};
use nanoclaw_host::config::Paths;
use nanoclaw_store::{NewGroup, SessionMode, TriggerRule, UnknownSenders, WiringOptions};
use nanoclaw_test_support::scripted_model::{Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};

fn event(chat: &str, id: &str, sender: &str, text: &str) -> InboundEvent {
    InboundEvent {
        channel: "test".into(),
        chat_id: chat.into(),
        chat_name: format!("Room {chat}"),
        is_group: true,
        platform_msg_id: id.into(),
        sender: sender.into(),
        sender_name: Some(sender.to_uppercase()),
        text: text.into(),
        received_at: nanoclaw_host::now_ms(),
        ..InboundEvent::default()
    }
}

/// A direct message (always addresses the bot).
fn dm(chat: &str, id: &str, sender: &str, text: &str) -> InboundEvent {
    let mut e = event(chat, id, sender, text);
    e.is_group = false;
    e
}

/// A group message the platform says mentions the bot.
fn mention(chat: &str, id: &str, sender: &str, text: &str) -> InboundEvent {
    let mut e = event(chat, id, sender, text);
    e.mentions_me = true;
    e
}

async fn send(host: &Host, mut event: InboundEvent) -> RouteOutcome {
    let (tx, rx) = tokio::sync::oneshot::channel();
    event.ack = Some(tx);
    host.inbound_sink()
        .send(ChannelEvent::Inbound(event))
        .await
        .unwrap();
    rx.await.unwrap()
}

/// The owner types `text` in the terminal (the main chat).
async fn owner_says(host: &Host, id: &str, text: &str) -> RouteOutcome {
    let mut e = event("local", id, "terminal:owner", text);
    e.channel = "terminal".into();
    e.is_group = false;
    send(host, e).await
}

async fn start(home: &TestHome) -> (Host, ScriptedModel) {
    let model = ScriptedModel::start(Scenario::echo().with_api_key(TEST_KEY))
        .await
        .unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    (host, model)
}

async fn wire(host: &Host, chat: &str, options: WiringOptions) -> i64 {
    let store = host.store();
    let group = store
        .ensure_group(NewGroup {
            name: "team".into(),
            folder: "team".into(),
            trigger: Some("@Andy".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let chat = store.ensure_chat("test", chat, chat, true).await.unwrap();
    store.wire(chat.id, group.id, options).await.unwrap();
    chat.id
}

async fn texts(host: &Host, chat_id: i64) -> Vec<String> {
    host.store()
        .outbound_for_chat(chat_id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.text)
        .collect()
}

async fn owner_notices(host: &Host) -> Vec<String> {
    let owner = nanoclaw_host::host::owner_chat(host.store())
        .await
        .unwrap()
        .unwrap();
    texts(host, owner.id).await
}

fn rule(rule: TriggerRule, pattern: Option<&str>) -> WiringOptions {
    let mut o = WiringOptions::new(true, SessionMode::Shared);
    o.trigger_rule = rule;
    o.trigger_pattern = pattern.map(str::to_owned);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_rules_decide_which_messages_wake_the_group() {
    let home = TestHome::new();
    let (host, _model) = start(&home).await;
    wire(&host, "m", rule(TriggerRule::Mention, None)).await;
    wire(
        &host,
        "r",
        rule(TriggerRule::Regex, Some("(?i)^hey bot\\b")),
    )
    .await;
    wire(&host, "w", rule(TriggerRule::Word, None)).await;

    // mention: the platform's word, or the trigger word.
    assert!(matches!(
        send(&host, event("m", "1", "u", "hello all")).await,
        RouteOutcome::Ignored(_)
    ));
    let mut mentioned = event("m", "2", "u", "hello");
    mentioned.mentions_me = true;
    assert_eq!(send(&host, mentioned).await, RouteOutcome::Accepted);
    assert_eq!(
        send(&host, event("m", "3", "u", "@andy hi")).await,
        RouteOutcome::Accepted
    );
    // regex
    assert_eq!(
        send(&host, event("r", "1", "u", "Hey bot, weather?")).await,
        RouteOutcome::Accepted
    );
    assert!(matches!(
        send(&host, event("r", "2", "u", "they said hey bot")).await,
        RouteOutcome::Ignored(_)
    ));
    // word: a platform mention alone is not the trigger word.
    let mut mentioned = event("w", "1", "u", "hello");
    mentioned.mentions_me = true;
    assert!(matches!(
        send(&host, mentioned).await,
        RouteOutcome::Ignored(_)
    ));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_are_never_answered_even_where_every_message_counts() {
    let home = TestHome::new();
    let (host, model) = start(&home).await;
    let chat = wire(&host, "b", WiringOptions::new(false, SessionMode::Shared)).await;
    let mut from_bot = event("b", "1", "otherbot", "@Andy ping");
    from_bot.from_bot = true;
    let outcome = send(&host, from_bot).await;
    assert!(
        matches!(outcome, RouteOutcome::Ignored(ref why) if why.contains("bots")),
        "{outcome:?}"
    );
    assert!(texts(&host, chat).await.is_empty());
    assert!(model.requests().is_empty());
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_chat_is_held_asked_once_and_replayed_when_the_owner_approves() {
    let home = TestHome::new();
    let (host, _model) = start(&home).await;
    // Chatter in the room that does not address the bot is not the owner's business.
    let chatter = send(&host, event("new", "0", "sam", "lunch anyone?")).await;
    assert!(matches!(chatter, RouteOutcome::Ignored(_)), "{chatter:?}");
    let first = send(&host, mention("new", "1", "sam", "first question")).await;
    assert!(matches!(first, RouteOutcome::Held(_)), "{first:?}");
    let second = send(&host, mention("new", "2", "sam", "second question")).await;
    assert!(matches!(second, RouteOutcome::Held(_)), "{second:?}");
    // A redelivery of a held message is a duplicate, not a new question for the owner.
    assert_eq!(
        send(&host, mention("new", "1", "sam", "first question")).await,
        RouteOutcome::Duplicate
    );
    let notices = eventually(30, "the owner is asked", || async {
        let n = owner_notices(&host).await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert_eq!(notices.len(), 1, "asked once per chat: {notices:?}");
    assert!(
        notices[0].contains("first question") && notices[0].contains("SAM"),
        "{}",
        notices[0]
    );
    let held = host.store().waiting_messages().await.unwrap();
    assert_eq!(held.len(), 2);
    assert!(notices[0].contains(&format!("/approve chat {}", held[0].id)));

    // Only the owner's own chat decides.
    let not_owner = send(
        &host,
        mention("new", "3", "sam", &format!("/approve chat {}", held[0].id)),
    )
    .await;
    assert!(matches!(not_owner, RouteOutcome::Held(_)), "{not_owner:?}");
    assert_eq!(
        owner_says(&host, "o1", &format!("/approve chat {}", held[0].id)).await,
        RouteOutcome::Accepted
    );

    let chat = host
        .store()
        .chat_by_platform("test", "new")
        .await
        .unwrap()
        .unwrap();
    let wirings = host.store().wirings_for_chat(chat.id).await.unwrap();
    assert_eq!(wirings.len(), 1);
    assert!(wirings[0].1.is_main);
    assert_eq!(
        wirings[0].0.trigger_rule,
        TriggerRule::Mention,
        "a group chat answers mentions"
    );
    // All three held messages reach the agent (the echo model repeats them), possibly in
    // more than one turn: the stranger's "/approve" was only an ordinary message of their
    // chat and is replayed like the others; it decided nothing (the chat was approved by the
    // owner's command alone, once).
    let replies = eventually(90, "the held messages answered", || async {
        let r = texts(&host, chat.id).await.join("\n");
        (r.contains("first question")
            && r.contains("second question")
            && r.contains("/approve chat"))
        .then_some(r)
    })
    .await;
    assert!(replies.contains("/approve chat"), "{replies}");
    assert_eq!(
        owner_notices(&host)
            .await
            .iter()
            .filter(|t| t.contains("first question"))
            .count(),
        1
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_the_owner_denies_is_ignored_from_then_on() {
    let home = TestHome::new();
    let (host, model) = start(&home).await;
    assert!(matches!(
        send(&host, dm("spam", "1", "x", "buy now")).await,
        RouteOutcome::Held(_)
    ));
    let held = host.store().waiting_messages().await.unwrap();
    assert_eq!(
        owner_says(&host, "o1", &format!("/deny chat {}", held[0].id)).await,
        RouteOutcome::Accepted
    );
    let mut dm = event("spam", "2", "x", "buy now!!");
    dm.is_group = false;
    let later = send(&host, dm).await;
    assert!(
        matches!(later, RouteOutcome::Ignored(ref why) if why.contains("turned")),
        "{later:?}"
    );
    assert_eq!(
        owner_notices(&host)
            .await
            .iter()
            .filter(|t| t.contains("buy now"))
            .count(),
        1
    );
    assert!(model.requests().is_empty(), "nothing reached a model");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_off_the_allowlist_waits_for_the_owner() {
    let home = TestHome::new();
    let (host, _model) = start(&home).await;
    let mut options = WiringOptions::new(false, SessionMode::Shared);
    options.allowed_senders = Some(vec!["alice".into()]);
    options.unknown_senders = UnknownSenders::Ask;
    let chat = wire(&host, "fam", options).await;
    assert_eq!(
        send(&host, event("fam", "1", "alice", "from alice")).await,
        RouteOutcome::Accepted
    );
    let outcome = send(&host, event("fam", "2", "mallory", "from mallory")).await;
    assert!(matches!(outcome, RouteOutcome::Held(_)), "{outcome:?}");
    let held = host.store().waiting_messages().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        owner_says(&host, "o1", &format!("/approve sender {}", held[0].id)).await,
        RouteOutcome::Accepted
    );
    let wiring = &host.store().wirings_for_chat(chat).await.unwrap()[0].0;
    assert_eq!(
        wiring.allowed_senders.as_deref(),
        Some(&["alice".to_string(), "mallory".to_string()][..])
    );
    eventually(90, "mallory's held message answered", || async {
        texts(&host, chat)
            .await
            .join("\n")
            .contains("from mallory")
            .then_some(())
    })
    .await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_code_wires_the_one_chat_that_sends_it() {
    let home = TestHome::new();
    let (host, _model) = start(&home).await;
    let main = host.store().main_group().await.unwrap().unwrap();
    host.store()
        .create_pairing_code("482910", "test", main.id, nanoclaw_host::now_ms() + 60_000)
        .await
        .unwrap();
    // A wrong code pairs nothing (the chat is held as any unknown chat).
    assert!(matches!(
        send(&host, dm("a", "1", "u", "111111")).await,
        RouteOutcome::Held(_)
    ));
    assert_eq!(
        send(&host, event("b", "1", "u", "@andy_bot 482910")).await,
        RouteOutcome::Accepted
    );
    let chat = host
        .store()
        .chat_by_platform("test", "b")
        .await
        .unwrap()
        .unwrap();
    let wirings = host.store().wirings_for_chat(chat.id).await.unwrap();
    assert_eq!(wirings.len(), 1);
    assert!(wirings[0].1.is_main);
    eventually(30, "the pairing confirmed in the chat", || async {
        texts(&host, chat.id)
            .await
            .iter()
            .any(|t| t.starts_with("Paired"))
            .then_some(())
    })
    .await;
    // The code works once.
    let mut again = event("c", "1", "u", "482910");
    again.is_group = false;
    let again = send(&host, again).await;
    assert!(matches!(again, RouteOutcome::Held(_)), "{again:?}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_files_land_in_the_groups_inbox_under_a_safe_name() {
    let home = TestHome::new();
    let (host, model) = start(&home).await;
    wire(&host, "f", WiringOptions::new(false, SessionMode::Shared)).await;
    let mut with_file = event("f", "m/7", "u", "see attached");
    with_file.attachments = vec![Attachment {
        file_name: "../../etc/report.pdf".into(),
        mime_type: Some("application/pdf".into()),
        data: Bytes::from_static(b"%PDF-1.4 test"),
    }];
    assert_eq!(send(&host, with_file).await, RouteOutcome::Accepted);
    let inbox = Paths::new(home.path()).group_dir("team").join("inbox");
    let saved = inbox.join("m_7-0-report.pdf");
    assert_eq!(std::fs::read(&saved).unwrap(), b"%PDF-1.4 test");
    assert_eq!(
        std::fs::read_dir(&inbox).unwrap().count(),
        1,
        "nothing written outside the inbox name"
    );
    eventually(90, "the agent told about the file", || async {
        model
            .requests()
            .iter()
            .any(|r| {
                r.body
                    .to_string()
                    .contains("/workspace/group/inbox/m_7-0-report.pdf (application/pdf, 13 bytes)")
            })
            .then_some(())
    })
    .await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_dm_can_be_the_owners_main_chat() {
    let home = TestHome::new();
    let (host, _model) = start(&home).await;
    let store = host.store();
    let owner_dm = store
        .ensure_chat("test", "owner-dm", "Me", false)
        .await
        .unwrap();
    let main = store.main_group().await.unwrap().unwrap();
    store
        .wire(
            owner_dm.id,
            main.id,
            WiringOptions::new(false, SessionMode::Shared),
        )
        .await
        .unwrap();
    // Before it is made a main chat, its /approve is an ordinary message.
    assert!(matches!(
        send(&host, dm("stranger", "1", "x", "hello?")).await,
        RouteOutcome::Held(_)
    ));
    let held = store.waiting_messages().await.unwrap();
    let approve = format!("/approve chat {}", held[0].id);
    assert_eq!(
        send(&host, dm("owner-dm", "a1", "me", &approve)).await,
        RouteOutcome::Accepted
    );
    assert_eq!(
        store.waiting_messages().await.unwrap().len(),
        1,
        "not decided by a non-owner chat"
    );

    store.set_owner_chat(owner_dm.id).await.unwrap();
    // Notices now go to the platform chat, and its /approve decides.
    assert!(matches!(
        send(&host, dm("stranger2", "1", "y", "hi there")).await,
        RouteOutcome::Held(_)
    ));
    eventually(30, "the notice in the platform main chat", || async {
        texts(&host, owner_dm.id)
            .await
            .iter()
            .any(|t| t.contains("hi there"))
            .then_some(())
    })
    .await;
    assert_eq!(
        send(&host, dm("owner-dm", "a2", "me", &approve)).await,
        RouteOutcome::Accepted
    );
    let stranger = store
        .chat_by_platform("test", "stranger")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.wirings_for_chat(stranger.id).await.unwrap().len(), 1);
    host.shutdown().await;
}

/// Whether any request the model received mentions `needle` (in any message of its history).
fn model_saw(model: &ScriptedModel, last_user_text: &str, needle: &str) -> bool {
    model.requests().iter().any(|r| {
        let body = r.body.to_string();
        body.contains(last_user_text) && body.contains(needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_shared_chats_talk_into_one_conversation_and_each_reply_goes_home() {
    let home = TestHome::new();
    let (host, model) = start(&home).await;
    let a = wire(
        &host,
        "a",
        WiringOptions::new(false, SessionMode::AgentShared),
    )
    .await;
    let b = wire(
        &host,
        "b",
        WiringOptions::new(false, SessionMode::AgentShared),
    )
    .await;
    let c = wire(&host, "c", WiringOptions::new(false, SessionMode::Shared)).await;

    assert_eq!(
        send(&host, event("a", "1", "u", "the code word is pelican")).await,
        RouteOutcome::Accepted
    );
    eventually(60, "chat a's reply", || async {
        (!texts(&host, a).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        send(&host, event("b", "1", "v", "which bird was it")).await,
        RouteOutcome::Accepted
    );
    assert_eq!(
        send(&host, event("c", "1", "w", "which animal was it")).await,
        RouteOutcome::Accepted
    );
    eventually(60, "replies in chats b and c", || async {
        (!texts(&host, b).await.is_empty() && !texts(&host, c).await.is_empty()).then_some(())
    })
    .await;

    // One conversation for a and b: chat b's turn carried what was said in chat a.
    assert!(
        model_saw(&model, "which bird was it", "pelican"),
        "chat b's turn did not see chat a's message"
    );
    // A chat wired `shared` keeps its own conversation.
    assert!(
        !model_saw(&model, "which animal was it", "pelican"),
        "chat c saw another chat's conversation"
    );
    // Each reply went to the chat whose message it answers, once.
    let (in_a, in_b) = (texts(&host, a).await, texts(&host, b).await);
    assert!(in_a.len() == 1 && in_a[0].contains("pelican"), "{in_a:?}");
    assert!(
        in_b.len() == 1 && in_b[0].contains("which bird"),
        "{in_b:?}"
    );
    let sessions = host
        .store()
        .sessions_for_group(
            host.store()
                .group_by_folder("team")
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap();
    assert_eq!(
        sessions.len(),
        2,
        "a+b share one session, c has its own: {sessions:?}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_across_chats_is_stored_in_each_chats_order() {
    let home = TestHome::new();
    let (host, _model) = start(&home).await;
    let chats = ["x", "y", "z"];
    for chat in chats {
        wire(&host, chat, WiringOptions::new(false, SessionMode::Shared)).await;
    }
    // Everything handed over at once, as a channel with a backlog does; acks awaited after.
    let mut acks = Vec::new();
    for n in 0..40 {
        for chat in chats {
            let mut e = event(chat, &format!("{n:03}"), "u", &format!("message {n}"));
            // One timestamp for all: the stored order is then the order of storing alone.
            e.received_at = 1_700_000_000_000;
            let (tx, rx) = tokio::sync::oneshot::channel();
            e.ack = Some(tx);
            host.inbound_sink()
                .send(ChannelEvent::Inbound(e))
                .await
                .unwrap();
            acks.push(rx);
        }
    }
    for ack in acks {
        assert_eq!(ack.await.unwrap(), RouteOutcome::Accepted);
    }
    let store = host.store();
    let group = store.group_by_folder("team").await.unwrap().unwrap();
    let sessions = store.sessions_for_group(group.id).await.unwrap();
    assert_eq!(sessions.len(), 3);
    for session in sessions {
        let stored: Vec<String> = store
            .inbound_for_session(session.id.clone())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.platform_msg_id)
            .collect();
        let expected: Vec<String> = (0..40).map(|n| format!("{n:03}")).collect();
        assert_eq!(
            stored, expected,
            "stored out of order in {}",
            session.chat_id
        );
    }
    host.shutdown().await;
}

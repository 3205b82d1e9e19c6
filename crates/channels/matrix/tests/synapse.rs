//! The Matrix channel against a real Synapse started by the test
//! (`nanoclaw_test_support::matrix`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Rig, started};
use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState};
use nanoclaw_channel::{
    Channel, ChannelError, ChannelSetup, InboundEvent, OutgoingFile, OutgoingMessage, SendLedger,
    StateStore,
};
use nanoclaw_channel_matrix::{MatrixChannel, TOKEN_SECRET};
use nanoclaw_test_support::matrix::{MatrixUser, Synapse};
use serde_json::json;

fn settings(synapse: &Synapse, invites_from: &str) -> toml::Table {
    toml::from_str(&format!(
        "enabled = true\nhomeserver = \"{}\"\ninvites_from = [{invites_from}]\nsync_timeout_secs = 5\n",
        synapse.base
    ))
    .unwrap()
}

async fn start(
    settings: toml::Table,
    token: &str,
    state: Arc<MemoryState>,
    ledger: Arc<MemoryLedger>,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    started(ChannelSetup {
        settings,
        secrets: vault(token),
        state,
        ledger,
        assistant_name: "Andy".into(),
        data_dir: dir.path().to_path_buf(),
    })
    .await
}

/// The bot's vault: one per token, kept across restarts as the host's is (it holds the key
/// that unlocks the channel's encryption state).
fn vault(token: &str) -> Arc<MemorySecrets> {
    static VAULTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<MemorySecrets>>>,
    > = std::sync::OnceLock::new();
    let mut vaults = VAULTS.get_or_init(Default::default).lock().unwrap();
    vaults
        .entry(token.to_owned())
        .or_insert_with(|| Arc::new(MemorySecrets::with(&[(TOKEN_SECRET, token)])))
        .clone()
}

/// The channel as the bot, accepting invites from the whole server, fresh state and ledger.
async fn rig(synapse: &Synapse, bot: &MatrixUser) -> Rig {
    start(
        settings(synapse, "\":localhost\""),
        &bot.token,
        Arc::default(),
        Arc::default(),
    )
    .await
}

async fn next(rig: &mut Rig) -> InboundEvent {
    tokio::time::timeout(Duration::from_secs(30), rig.events.recv())
        .await
        .expect("no message reached the host within 30 s")
        .unwrap()
}

async fn none(rig: &mut Rig, within: Duration) {
    if let Ok(Some(e)) = tokio::time::timeout(within, rig.events.recv()).await {
        panic!("unexpected message: {:?}", e.text);
    }
}

/// A room `owner` made with the bot (and `others`), once everyone has joined.
async fn room_with(owner: &MatrixUser, bot: &MatrixUser, others: &[&MatrixUser]) -> String {
    let mut invite = vec![bot.user_id.as_str()];
    invite.extend(others.iter().map(|u| u.user_id.as_str()));
    let room = owner.create_room(&invite, others.is_empty()).await;
    for other in others {
        other.join(&room).await;
    }
    let want = 2 + others.len();
    for _ in 0..300 {
        if owner.joined_members(&room).await == want {
            return room;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bot did not join {room}");
}

fn reply(key: &str, room: &str, text: &str, reply_to: Option<&str>) -> OutgoingMessage {
    OutgoingMessage {
        idempotency_key: key.into(),
        chat_id: room.into(),
        text: text.into(),
        kind: "reply".into(),
        reply_to: reply_to.map(str::to_owned),
        ..OutgoingMessage::default()
    }
}

async fn bot_messages(user: &MatrixUser, room: &str, bot: &MatrixUser) -> Vec<serde_json::Value> {
    user.messages(room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == bot.user_id.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_is_answered_in_reply_and_group_rooms_need_a_mention() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    let bob = synapse.register("bob", false).await;
    let mut rig = rig(&synapse, &bot).await;

    let dm = room_with(&ada, &bot, &[]).await;
    let asked = ada.say(&dm, "hello there", None).await;
    let event = next(&mut rig).await;
    assert_eq!(event.chat_id, dm);
    assert_eq!(event.platform_msg_id, asked);
    assert_eq!(event.text, "hello there");
    assert!(!event.is_group && event.mentions_me && !event.from_bot);
    rig.channel
        .deliver(&reply("k1", &dm, "hi Ada", Some(&asked)))
        .await
        .unwrap();
    let sent = bot_messages(&ada, &dm, &bot).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["content"]["body"], "hi Ada");
    assert_eq!(sent[0]["content"]["msgtype"], "m.notice");
    assert_eq!(
        sent[0]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        asked.as_str()
    );

    let group = room_with(&ada, &bot, &[&bob]).await;
    bob.say(&group, "chatter", None).await;
    let chatter = next(&mut rig).await;
    assert!(chatter.is_group && !chatter.mentions_me);
    let root = bob.say(&group, "deploy please", Some(&bot.user_id)).await;
    let mentioned = next(&mut rig).await;
    assert!(mentioned.mentions_me);
    // In a thread: the reply goes to the thread.
    let in_thread = bob
        .send(
            &group,
            json!({"msgtype": "m.text", "body": "andy: and the docs",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    let threaded = next(&mut rig).await;
    assert_eq!(threaded.thread.as_deref(), Some(root.as_str()));
    assert!(threaded.mentions_me, "named in the text");
    let mut answer = reply("k2", &group, "docs done", Some(&in_thread));
    answer.thread = Some(root.clone());
    rig.channel.deliver(&answer).await.unwrap();
    let sent = bot_messages(&bob, &group, &bot).await;
    let relates = &sent.last().unwrap()["content"]["m.relates_to"];
    assert_eq!(relates["rel_type"], "m.thread");
    assert_eq!(relates["event_id"], root.as_str());
    assert_eq!(relates["m.in_reply_to"]["event_id"], in_thread.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_are_joined_only_from_who_the_owner_named() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let owner = synapse.register("owner", false).await;
    let stranger = synapse.register("stranger", false).await;
    let _rig = start(
        settings(&synapse, "\"@owner:localhost\""),
        &bot.token,
        Arc::default(),
        Arc::default(),
    )
    .await;
    let theirs = stranger.create_room(&[&bot.user_id], true).await;
    let ours = room_with(&owner, &bot, &[]).await;
    assert_eq!(owner.joined_members(&ours).await, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stranger.joined_members(&theirs).await,
        1,
        "joined a stranger's room"
    );
}

/// More messages than one sync's timeline holds (100) arrive while the channel is down:
/// the sync answers with a cut (`limited`) timeline, and the channel reads the rest back with
/// `/messages` — every message reaches the host, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_timeline_is_read_back_and_nothing_is_skipped() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    let state = Arc::new(MemoryState::default());
    let mut rig = start(
        settings(&synapse, "\":localhost\""),
        &bot.token,
        state.clone(),
        Arc::default(),
    )
    .await;
    let dm = room_with(&ada, &bot, &[]).await;
    ada.say(&dm, "before", None).await;
    assert_eq!(next(&mut rig).await.text, "before");
    rig.channel.stop().await;
    drop(rig);
    const DOWN: usize = 130;
    for i in 0..DOWN {
        ada.say(&dm, &format!("while down {i}"), None).await;
    }
    let mut rig = start(
        settings(&synapse, "\":localhost\""),
        &bot.token,
        state,
        Arc::default(),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..DOWN {
        got.push(next(&mut rig).await.text);
    }
    let want: Vec<String> = (0..DOWN).map(|i| format!("while down {i}")).collect();
    assert_eq!(got, want);
    none(&mut rig, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_not_answered_and_nothing_is_read_twice_across_a_restart() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    // The room and a message exist before the channel ever ran.
    let dm = ada.create_room(&[&bot.user_id], true).await;
    bot.join(&dm).await;
    ada.say(&dm, "from before", None).await;
    let state = Arc::new(MemoryState::default());
    let mut rig = start(
        settings(&synapse, "\":localhost\""),
        &bot.token,
        state.clone(),
        Arc::default(),
    )
    .await;
    none(&mut rig, Duration::from_secs(2)).await;
    ada.say(&dm, "first", None).await;
    assert_eq!(next(&mut rig).await.text, "first");
    rig.channel.stop().await;
    drop(rig);
    let before_down = state.get("next_batch").await.unwrap().unwrap();
    ada.say(&dm, "while it was down", None).await;
    let mut rig = start(
        settings(&synapse, "\":localhost\""),
        &bot.token,
        state.clone(),
        Arc::default(),
    )
    .await;
    let down = next(&mut rig).await;
    assert_eq!(down.text, "while it was down");
    none(&mut rig, Duration::from_secs(2)).await;
    // A token rolled back (a crash before it was saved) brings the same event again with
    // the same id, which the host deduplicates.
    rig.channel.stop().await;
    drop(rig);
    state.put("next_batch", &before_down).await.unwrap();
    let mut rig = start(
        settings(&synapse, "\":localhost\""),
        &bot.token,
        state,
        Arc::default(),
    )
    .await;
    let again = next(&mut rig).await;
    assert_eq!(again.platform_msg_id, down.platform_msg_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_sent_again_after_a_crash_shows_once() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    // The same state store across the restart (it holds the device's encryption keys).
    let state = Arc::new(MemoryState::default());
    let rig = start(
        settings(&synapse, "\":localhost\""),
        &bot.token,
        state.clone(),
        Arc::default(),
    )
    .await;
    let dm = room_with(&ada, &bot, &[]).await;
    rig.channel
        .deliver(&reply("k-crash", &dm, "once", None))
        .await
        .unwrap();
    // The record was lost: the ledger says "begun, outcome unknown"; the channel sends again
    // with the same transaction id, and the homeserver gives back the same event.
    let ledger = Arc::new(MemoryLedger::default());
    ledger.begin("k-crash", 0).await.unwrap();
    let again = start(
        settings(&synapse, "\":localhost\""),
        &bot.token,
        state,
        ledger,
    )
    .await;
    again
        .channel
        .deliver(&reply("k-crash", &dm, "once", None))
        .await
        .unwrap();
    let sent = bot_messages(&ada, &dm, &bot).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_send_says_when_to_try_again() {
    let synapse = Synapse::start();
    let admin = synapse.register("admin", true).await;
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    let rig = rig(&synapse, &bot).await;
    let dm = room_with(&ada, &bot, &[]).await;
    admin.override_ratelimit(&bot.user_id, Some((1, 1))).await;
    let mut limited = None;
    for i in 0..5 {
        match rig
            .channel
            .deliver(&reply(&format!("k{i}"), &dm, &format!("m{i}"), None))
            .await
        {
            Ok(_) => {}
            Err(ChannelError::RateLimited { retry_after, .. }) => {
                limited = Some(retry_after);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let retry_after = limited.expect("Synapse answered 429 at 1 message/s");
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_secs(2),
        "{retry_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_travel_both_ways_and_ciphertext_without_a_key_waits() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    let mut rig = rig(&synapse, &bot).await;
    let dm = room_with(&ada, &bot, &[]).await;
    let mxc = ada.upload("numbers.txt", b"1,2,3\n").await;
    ada.send(
        &dm,
        json!({"msgtype": "m.file", "body": "read this", "filename": "numbers.txt", "url": mxc,
        "info": {"mimetype": "text/plain", "size": 6}}),
    )
    .await;
    let event = next(&mut rig).await;
    assert_eq!(event.text, "read this");
    assert_eq!(event.attachments.len(), 1);
    assert_eq!(event.attachments[0].file_name, "numbers.txt");
    assert_eq!(&event.attachments[0].data[..], b"1,2,3\n");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, b"report\x00\xff").unwrap();
    let mut message = reply("k-file", &dm, "the report", None);
    message.files = vec![OutgoingFile {
        file_name: "report.bin".into(),
        path,
        mime_type: None,
    }];
    rig.channel.deliver(&message).await.unwrap();
    let sent = bot_messages(&ada, &dm, &bot).await;
    let file = sent
        .iter()
        .find(|e| e["content"]["msgtype"] == "m.file")
        .expect("a file message");
    assert_eq!(file["content"]["filename"], "report.bin");
    let data = ada.download(file["content"]["url"].as_str().unwrap()).await;
    assert_eq!(data, b"report\x00\xff");

    // A client writing ciphertext no key was ever sent for: not handed over; it waits
    // (in case the key comes late), and the health counts it.
    ada.send_event(
        &dm,
        "m.room.encrypted",
        json!({"algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEn...", "device_id": "X", "sender_key": "k", "session_id": "s"}),
    )
    .await;
    ada.send(&dm, json!({"msgtype": "m.text", "body": "after the file"}))
        .await;
    assert_eq!(next(&mut rig).await.text, "after the file");
    let health = rig.channel.health();
    assert!(
        health
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("1 waiting for their key")),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_syncs_again_after_the_homeserver_restarts() {
    let mut synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    let mut rig = rig(&synapse, &bot).await;
    let dm = room_with(&ada, &bot, &[]).await;
    tokio::task::block_in_place(|| synapse.restart());
    ada.say(&dm, "are you back", None).await;
    assert_eq!(next(&mut rig).await.text, "are you back");
    let health = rig.channel.health();
    assert!(
        health.reconnects >= 1 || health.last_error.is_some(),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_plainly() {
    let synapse = Synapse::start();
    let dir = tempfile::tempdir().unwrap();
    let channel = MatrixChannel::from_setup(ChannelSetup {
        settings: settings(&synapse, ""),
        secrets: Arc::new(MemorySecrets::with(&[(TOKEN_SECRET, "syt_not_a_token")])),
        state: Arc::new(MemoryState::default()),
        ledger: Arc::new(MemoryLedger::default()),
        assistant_name: "Andy".into(),
        data_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let err = channel.verify().await.unwrap_err();
    assert!(matches!(err, ChannelError::Unauthorized { .. }), "{err}");
}

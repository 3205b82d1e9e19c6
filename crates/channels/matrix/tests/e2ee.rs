//! End-to-end encryption against a real Synapse, with the reference implementation on the
//! other side: the owner's client is matrix-sdk-crypto's `OlmMachine` (the crypto engine of
//! matrix-sdk and Element X), driven over plain HTTP here. Hostile clients are made from
//! vodozemac directly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use common::{Rig, started};
use matrix_sdk_crypto::types::requests::{AnyOutgoingRequest, ToDeviceRequest};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement,
};
use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState, accepting_host};
use nanoclaw_channel::{Channel, ChannelSetup, InboundEvent, LinkState, OutgoingMessage};
use nanoclaw_channel_matrix::{MatrixChannel, TOKEN_SECRET};
use nanoclaw_test_support::matrix::{MatrixUser, Synapse};
use ruma::api::auth_scheme::{AccessToken, SendAccessToken};
use ruma::api::client::keys::get_keys;
use ruma::api::client::sync::sync_events;
use ruma::api::client::to_device::send_event_to_device;
use ruma::api::path_builder::VersionHistory;
use ruma::api::{IncomingResponse, MatrixVersion, OutgoingRequest, SupportedVersions};
use ruma::serde::Raw;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The owner: OlmMachine over HTTP.

struct Owner {
    user: MatrixUser,
    machine: OlmMachine,
    http: reqwest::Client,
    since: Option<String>,
}

fn settings_untrusted() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}

impl Owner {
    async fn new(synapse: &Synapse, name: &str) -> Owner {
        let user = synapse.register(name, false).await;
        let device = user.device_id().await;
        let user_id = UserId::parse(&user.user_id).unwrap();
        let machine = OlmMachine::new(&user_id, device.as_str().into()).await;
        let mut owner = Owner {
            user,
            machine,
            http: reqwest::Client::new(),
            since: None,
        };
        // Uploads its device keys.
        owner.sync().await;
        owner
    }

    async fn send<R>(&self, request: R) -> R::IncomingResponse
    where
        R: OutgoingRequest<Authentication = AccessToken, PathBuilder = VersionHistory>,
    {
        let versions = SupportedVersions {
            versions: [MatrixVersion::V1_12].into(),
            features: Default::default(),
        };
        let request = request
            .try_into_http_request::<Vec<u8>>(
                &self.user.base,
                SendAccessToken::IfRequired(&self.user.token),
                Cow::Owned(versions),
            )
            .unwrap();
        let (parts, body) = request.into_parts();
        let response = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap().to_vec();
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        let response = http::Response::builder().status(status).body(body).unwrap();
        R::IncomingResponse::try_from_http_response(response)
            .map_err(|e| format!("{e:?}"))
            .unwrap()
    }

    async fn to_device(&self, request: &ToDeviceRequest) -> send_event_to_device::v3::Response {
        let ruma = send_event_to_device::v3::Request::new_raw(
            request.event_type.clone(),
            request.txn_id.clone(),
            request.messages.clone(),
        );
        self.send(ruma).await
    }

    async fn process_outgoing(&self) {
        for r in self.machine.outgoing_requests().await.unwrap() {
            match r.request() {
                AnyOutgoingRequest::KeysUpload(request) => {
                    let response = self.send(request.clone()).await;
                    self.machine
                        .mark_request_as_sent(r.request_id(), &response)
                        .await
                        .unwrap();
                }
                AnyOutgoingRequest::KeysQuery(request) => {
                    let mut query = get_keys::v3::Request::new();
                    query.device_keys = request.device_keys.clone();
                    let response = self.send(query).await;
                    self.machine
                        .mark_request_as_sent(r.request_id(), &response)
                        .await
                        .unwrap();
                }
                AnyOutgoingRequest::KeysClaim(request) => {
                    let response = self.send(request.clone()).await;
                    self.machine
                        .mark_request_as_sent(r.request_id(), &response)
                        .await
                        .unwrap();
                }
                AnyOutgoingRequest::ToDeviceRequest(request) => {
                    let response = self.to_device(request).await;
                    self.machine
                        .mark_request_as_sent(r.request_id(), &response)
                        .await
                        .unwrap();
                }
                AnyOutgoingRequest::SignatureUpload(request) => {
                    let response = self.send(request.clone()).await;
                    self.machine
                        .mark_request_as_sent(r.request_id(), &response)
                        .await
                        .unwrap();
                }
                AnyOutgoingRequest::RoomMessage(_) => {}
            }
        }
    }

    async fn sync(&mut self) {
        self.process_outgoing().await;
        let mut request = sync_events::v3::Request::new();
        request.since = self.since.clone();
        request.timeout = Some(Duration::ZERO);
        let response = self.send(request).await;
        let changes = EncryptionSyncChanges {
            to_device_events: response.to_device.events.clone(),
            changed_devices: &response.device_lists,
            one_time_keys_counts: &response.device_one_time_keys_count,
            unused_fallback_keys: response.device_unused_fallback_key_types.as_deref(),
            next_batch_token: Some(response.next_batch.clone()),
        };
        self.machine
            .receive_sync_changes(changes, &settings_untrusted())
            .await
            .unwrap();
        self.process_outgoing().await;
        self.since = Some(response.next_batch);
    }

    /// Sends `content` encrypted to everyone joined, the way Element does.
    async fn send_encrypted(&mut self, room: &str, content: Value) -> String {
        self.sync().await;
        let room_id = RoomId::parse(room).unwrap();
        let members: Vec<OwnedUserId> = self
            .user
            .joined_member_ids(room)
            .await
            .iter()
            .map(|u| UserId::parse(u).unwrap())
            .collect();
        self.machine
            .update_tracked_users(members.iter().map(|u| u.as_ref()))
            .await
            .unwrap();
        self.process_outgoing().await;
        if let Some((txn, request)) = self
            .machine
            .get_missing_sessions(members.iter().map(|u| u.as_ref()))
            .await
            .unwrap()
        {
            let response = self.send(request).await;
            self.machine
                .mark_request_as_sent(&txn, &response)
                .await
                .unwrap();
        }
        let requests = self
            .machine
            .share_room_key(
                &room_id,
                members.iter().map(|u| u.as_ref()),
                EncryptionSettings::default(),
            )
            .await
            .unwrap();
        for request in requests {
            let response = self.to_device(&request).await;
            self.machine
                .mark_request_as_sent(&request.txn_id, &response)
                .await
                .unwrap();
        }
        let raw = Raw::new(&content).unwrap().cast_unchecked();
        let encrypted = self
            .machine
            .encrypt_room_event_raw(&room_id, "m.room.message", &raw)
            .await
            .unwrap();
        let content: Value = serde_json::from_str(encrypted.content.json().get()).unwrap();
        self.user
            .send_event(room, "m.room.encrypted", content)
            .await
    }

    async fn say(&mut self, room: &str, text: &str) -> String {
        self.send_encrypted(room, json!({"msgtype": "m.text", "body": text}))
            .await
    }

    /// What `from` wrote in `room` that this client can decrypt, as cleartext contents;
    /// and how many of `from`'s encrypted events it cannot.
    async fn read(&mut self, room: &str, from: &str) -> (Vec<Value>, usize) {
        self.sync().await;
        let room_id = RoomId::parse(room).unwrap();
        let mut read = Vec::new();
        let mut unreadable = 0;
        for event in self.user.events(room).await {
            if event["sender"] != from || event["type"] != "m.room.encrypted" {
                continue;
            }
            let raw = Raw::from_json(serde_json::value::to_raw_value(&event).unwrap());
            match self
                .machine
                .decrypt_room_event(&raw, &room_id, &settings_untrusted())
                .await
            {
                Ok(decrypted) => {
                    let v: Value = serde_json::from_str(decrypted.event.json().get()).unwrap();
                    read.push(v["content"].clone());
                }
                Err(_) => unreadable += 1,
            }
        }
        (read, unreadable)
    }

    /// Waits until `count` of `from`'s messages in `room` decrypt.
    async fn read_at_least(&mut self, room: &str, from: &str, count: usize) -> Vec<Value> {
        for _ in 0..100 {
            let (read, _) = self.read(room, from).await;
            if read.len() >= count {
                return read;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (read, unreadable) = self.read(room, from).await;
        panic!("{} read, {unreadable} unreadable: {read:?}", read.len());
    }

    /// The bot's devices as this client knows them: (device id, ed25519).
    async fn devices_of(&mut self, user: &str) -> Vec<(String, String)> {
        let user_id = UserId::parse(user).unwrap();
        self.machine
            .update_tracked_users([user_id.as_ref()])
            .await
            .unwrap();
        self.machine
            .mark_all_tracked_users_as_dirty()
            .await
            .unwrap();
        self.process_outgoing().await;
        let devices = self
            .machine
            .get_user_devices(&user_id, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        devices
            .devices()
            .map(|d| {
                (
                    d.device_id().to_string(),
                    d.ed25519_key().map(|k| k.to_base64()).unwrap_or_default(),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The channel.

/// What a channel keeps across a restart: its state store and the vault.
#[derive(Clone)]
struct Keep {
    state: Arc<MemoryState>,
    secrets: Arc<MemorySecrets>,
}

impl Keep {
    fn new(bot: &MatrixUser) -> Keep {
        Keep {
            state: Arc::default(),
            secrets: Arc::new(MemorySecrets::with(&[(TOKEN_SECRET, &bot.token)])),
        }
    }
}

async fn start(synapse: &Synapse, keep: &Keep) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let settings: toml::Table = toml::from_str(&format!(
        "enabled = true\nhomeserver = \"{}\"\ninvites_from = [\":localhost\"]\nsync_timeout_secs = 2\n",
        synapse.base
    ))
    .unwrap();
    started(ChannelSetup {
        settings,
        secrets: keep.secrets.clone(),
        state: keep.state.clone(),
        ledger: Arc::new(MemoryLedger::default()),
        assistant_name: "Andy".into(),
        data_dir: dir.path().to_path_buf(),
    })
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

/// An encrypted room `owner` made with the bot (and `others`), once all have joined.
async fn encrypted_room(owner: &Owner, bot: &MatrixUser, others: &[&MatrixUser]) -> String {
    let mut invite = vec![bot.user_id.as_str()];
    invite.extend(others.iter().map(|u| u.user_id.as_str()));
    let room = owner
        .user
        .create_encrypted_room(&invite, others.is_empty())
        .await;
    for other in others {
        other.join(&room).await;
    }
    let want = 2 + others.len();
    for _ in 0..300 {
        if owner.user.joined_members(&room).await == want {
            return room;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bot did not join {room}");
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_room_is_read_and_answered_encrypted() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let mut owner = Owner::new(&synapse, "owner").await;
    let keep = Keep::new(&bot);
    let mut rig = start(&synapse, &keep).await;
    let health = rig.channel.health();
    let detail = health.detail.unwrap_or_default();
    assert!(
        detail.starts_with("end-to-end encryption: on, device "),
        "{detail}"
    );

    let room = encrypted_room(&owner, &bot, &[]).await;
    let asked = owner.say(&room, "the secret plan").await;
    let event = next(&mut rig).await;
    assert_eq!(event.text, "the secret plan");
    assert_eq!(event.platform_msg_id, asked);
    assert_eq!(event.sender, owner.user.user_id);
    assert!(event.mentions_me && !event.is_group);
    // The homeserver never saw the text.
    let stored = owner.user.events(&room).await;
    assert!(
        !serde_json::to_string(&stored)
            .unwrap()
            .contains("secret plan"),
        "cleartext on the homeserver"
    );

    rig.channel
        .deliver(&reply("k1", &room, "plan received", Some(&asked)))
        .await
        .unwrap();
    let read = owner.read_at_least(&room, &bot.user_id, 1).await;
    assert_eq!(read[0]["body"], "plan received");
    assert_eq!(read[0]["msgtype"], "m.notice");
    assert_eq!(
        read[0]["m.relates_to"]["m.in_reply_to"]["event_id"],
        asked.as_str()
    );
    assert!(
        bot_plain_messages(&owner.user, &room, &bot)
            .await
            .is_empty(),
        "the reply went out in the clear"
    );
    // The relation travels in the clear part of the encrypted event (the spec), so the
    // homeserver can thread it.
    let raw_reply = owner
        .user
        .events(&room)
        .await
        .into_iter()
        .rfind(|e| e["sender"] == bot.user_id.as_str())
        .unwrap();
    assert_eq!(raw_reply["type"], "m.room.encrypted");
    assert_eq!(
        raw_reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        asked.as_str()
    );

    // A thread, encrypted: the host sees the thread, and the reply goes into it.
    let in_thread = owner
        .send_encrypted(
            &room,
            json!({"msgtype": "m.text", "body": "and the details",
                "m.relates_to": {"rel_type": "m.thread", "event_id": asked}}),
        )
        .await;
    let threaded = next(&mut rig).await;
    assert_eq!(threaded.text, "and the details");
    assert_eq!(threaded.thread.as_deref(), Some(asked.as_str()));
    let mut answer = reply("k2", &room, "details follow", Some(&in_thread));
    answer.thread = Some(asked.clone());
    rig.channel.deliver(&answer).await.unwrap();
    let read = owner.read_at_least(&room, &bot.user_id, 2).await;
    assert_eq!(read[1]["body"], "details follow");
    assert_eq!(read[1]["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(read[1]["m.relates_to"]["event_id"], asked.as_str());
}

async fn bot_plain_messages(user: &MatrixUser, room: &str, bot: &MatrixUser) -> Vec<Value> {
    user.messages(room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == bot.user_id.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_channel_is_the_same_device() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let mut owner = Owner::new(&synapse, "owner").await;
    let keep = Keep::new(&bot);
    let mut rig = start(&synapse, &keep).await;
    let room = encrypted_room(&owner, &bot, &[]).await;
    owner.say(&room, "before").await;
    assert_eq!(next(&mut rig).await.text, "before");
    rig.channel
        .deliver(&reply("k1", &room, "one", None))
        .await
        .unwrap();
    owner.read_at_least(&room, &bot.user_id, 1).await;
    let devices_before = owner.devices_of(&bot.user_id).await;
    assert_eq!(devices_before.len(), 1, "{devices_before:?}");

    rig.channel.stop().await;
    drop(rig);
    let mut rig = start(&synapse, &keep).await;
    owner.say(&room, "after").await;
    assert_eq!(next(&mut rig).await.text, "after");
    rig.channel
        .deliver(&reply("k2", &room, "two", None))
        .await
        .unwrap();
    let read = owner.read_at_least(&room, &bot.user_id, 2).await;
    assert_eq!(read[1]["body"], "two");
    let devices_after = owner.devices_of(&bot.user_id).await;
    assert_eq!(
        devices_after, devices_before,
        "one bot device, the same keys"
    );
    none(&mut rig, Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------
// A hostile client: a device made from vodozemac directly, writing whatever it likes.

struct Forger {
    user: MatrixUser,
    device: String,
    account: vodozemac::olm::Account,
}

impl Forger {
    async fn new(synapse: &Synapse, name: &str) -> Forger {
        Forger::with(synapse.register(name, false).await).await
    }

    /// Uploads device keys of its own for `user`'s token.
    async fn with(user: MatrixUser) -> Forger {
        Forger::with_one_time_keys(user, 5).await
    }

    /// The same, with `count` one-time keys.
    async fn with_one_time_keys(user: MatrixUser, count: usize) -> Forger {
        use nanoclaw_channel_matrix::e2ee::keys::{add_signature, signable};
        let device = user.device_id().await;
        let mut account = vodozemac::olm::Account::new();
        let mut keys = json!({
            "user_id": user.user_id, "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {format!("curve25519:{device}"): account.curve25519_key().to_base64(),
                     format!("ed25519:{device}"): account.ed25519_key().to_base64()},
        });
        let signature = account.sign(signable(&keys));
        add_signature(
            &mut keys,
            &user.user_id,
            &format!("ed25519:{device}"),
            &signature,
        );
        // Signed one-time keys, so that others can open Olm sessions to this device.
        account.generate_one_time_keys(count);
        let mut one_time_keys = serde_json::Map::new();
        for (id, key) in account.one_time_keys() {
            let mut object = json!({"key": key.to_base64()});
            let signature = account.sign(signable(&object));
            add_signature(
                &mut object,
                &user.user_id,
                &format!("ed25519:{device}"),
                &signature,
            );
            one_time_keys.insert(format!("signed_curve25519:{}", id.to_base64()), object);
        }
        account.mark_keys_as_published();
        user.request(
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/upload",
            Some(json!({"device_keys": keys, "one_time_keys": one_time_keys})),
        )
        .await;
        Forger {
            user,
            device,
            account,
        }
    }

    fn ed25519(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    /// Sends `payload` over a new Olm session to `to`'s one device (with its keys).
    async fn olm_to(&mut self, to: &str, payload: Value) {
        let query = self
            .user
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/keys/query",
                Some(json!({"device_keys": {to: []}})),
            )
            .await;
        let devices = query["device_keys"][to].as_object().unwrap().clone();
        assert_eq!(devices.len(), 1);
        let (device, keys) = devices.into_iter().next().unwrap();
        let curve = keys["keys"][format!("curve25519:{device}")]
            .as_str()
            .unwrap()
            .to_owned();
        let claimed = self
            .user
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/keys/claim",
                Some(json!({"one_time_keys": {to: {&device: "signed_curve25519"}}})),
            )
            .await;
        let otk = claimed["one_time_keys"][to][&device]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut session = self
            .account
            .create_outbound_session(
                vodozemac::olm::SessionConfig::version_1(),
                vodozemac::Curve25519PublicKey::from_base64(&curve).unwrap(),
                vodozemac::Curve25519PublicKey::from_base64(&otk).unwrap(),
            )
            .unwrap();
        let mut payload = payload;
        payload["recipient"] = json!(to);
        payload["recipient_keys"] = json!({"ed25519": keys["keys"][format!("ed25519:{device}")]});
        let message = session.encrypt(payload.to_string()).unwrap();
        self.user
            .send_to_device(
                "m.room.encrypted",
                json!({to: {device: {
                    "algorithm": "m.olm.v1.curve25519-aes-sha2",
                    "sender_key": self.account.curve25519_key().to_base64(),
                    "ciphertext": {curve: message},
                }}}),
            )
            .await;
    }

    /// Sends a room key (`room_id` as claimed) for `session`, with the payload's `sender`
    /// and `keys.ed25519` as given.
    async fn share_key(
        &mut self,
        to: &str,
        session: &vodozemac::megolm::GroupSession,
        claimed_room: &str,
        claimed_sender: &str,
        claimed_ed25519: &str,
    ) {
        self.olm_to(
            to,
            json!({
                "type": "m.room_key",
                "content": {"algorithm": "m.megolm.v1.aes-sha2", "room_id": claimed_room,
                    "session_id": session.session_id(),
                    "session_key": session.session_key().to_base64()},
                "sender": claimed_sender,
                "sender_device": self.device,
                "keys": {"ed25519": claimed_ed25519},
            }),
        )
        .await;
    }

    /// A Megolm event in `room` (its payload naming `room`).
    async fn megolm_say(
        &self,
        room: &str,
        session: &mut vodozemac::megolm::GroupSession,
        text: &str,
    ) -> String {
        let payload = json!({"type": "m.room.message", "room_id": room,
            "content": {"msgtype": "m.text", "body": text}});
        let message = session.encrypt(payload.to_string());
        self.user
            .send_event(
                room,
                "m.room.encrypted",
                json!({"algorithm": "m.megolm.v1.aes-sha2",
                    "sender_key": self.account.curve25519_key().to_base64(),
                    "ciphertext": message.to_base64(), "session_id": session.session_id(),
                    "device_id": self.device}),
            )
            .await
    }
}

/// Waits until the health's last error says `needle`.
async fn refusal(rig: &Rig, needle: &str) {
    for _ in 0..100 {
        if rig
            .channel
            .health()
            .last_error
            .is_some_and(|e| e.contains(needle))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never refused for {needle:?}: {:?}", rig.channel.health());
}

fn refused(rig: &Rig) -> u64 {
    let detail = rig.channel.health().detail.unwrap_or_default();
    detail
        .rsplit(", ")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refused count in {detail:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_sessions_and_keys_are_refused() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let mut owner = Owner::new(&synapse, "owner").await;
    let mut mallory = Forger::new(&synapse, "mallory").await;
    let keep = Keep::new(&bot);
    let mut rig = start(&synapse, &keep).await;
    let room = encrypted_room(&owner, &bot, &[&mallory.user]).await;
    let other = encrypted_room(&owner, &bot, &[&mallory.user]).await;
    owner.say(&room, "andy: a real one").await;
    assert_eq!(next(&mut rig).await.text, "andy: a real one");
    let real = owner
        .user
        .events(&room)
        .await
        .into_iter()
        .rfind(|e| e["type"] == "m.room.encrypted")
        .unwrap();

    // 1. Mallory resends the owner's ciphertext as her own event: the session is the
    //    owner's, not hers.
    mallory
        .user
        .send_event(&room, "m.room.encrypted", real["content"].clone())
        .await;
    refusal(&rig, "with a session of @owner:localhost").await;
    // 2. The owner's own ciphertext again, as a new event: a replayed index.
    owner
        .user
        .send_event(&room, "m.room.encrypted", real["content"].clone())
        .await;
    refusal(&rig, "replay").await;
    none(&mut rig, Duration::from_secs(2)).await;
    assert_eq!(refused(&rig), 2, "{:?}", rig.channel.health());

    // 3. Mallory's session, its key claiming the other room, used in this one.
    let mut session =
        vodozemac::megolm::GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
    let ed = mallory.ed25519();
    mallory
        .share_key(
            &bot.user_id,
            &session,
            &other,
            &mallory.user.user_id.clone(),
            &ed,
        )
        .await;
    mallory
        .megolm_say(&room, &mut session, "andy: wrong room")
        .await;
    refusal(&rig, "belongs to another room").await;
    none(&mut rig, Duration::from_secs(2)).await;
    assert_eq!(refused(&rig), 3);
    // Where the key said it belongs, it does decrypt: the refusal was about the room.
    mallory
        .megolm_say(&other, &mut session, "andy: right room")
        .await;
    assert_eq!(next(&mut rig).await.text, "andy: right room");

    // 4. A room key whose payload claims the owner sent it: refused, and the message
    //    that uses it is never handed over.
    let before = refused(&rig);
    let mut forged =
        vodozemac::megolm::GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
    mallory
        .share_key(
            &bot.user_id,
            &forged,
            &room,
            &owner.user.user_id.clone(),
            &ed,
        )
        .await;
    refusal(&rig, "the payload's sender is not the to-device sender").await;
    // 5. One whose payload names a device key that is not the sending device's.
    let mut forged2 =
        vodozemac::megolm::GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
    let owner_ed = owner.machine.identity_keys().ed25519.to_base64();
    mallory
        .share_key(
            &bot.user_id,
            &forged2,
            &room,
            &mallory.user.user_id.clone(),
            &owner_ed,
        )
        .await;
    refusal(&rig, "ed25519 key is not the sending device's").await;
    mallory
        .megolm_say(&room, &mut forged, "andy: as the owner")
        .await;
    mallory
        .megolm_say(&room, &mut forged2, "andy: with the owner's key")
        .await;
    none(&mut rig, Duration::from_secs(3)).await;
    assert_eq!(refused(&rig), before + 2, "{:?}", rig.channel.health());
    // Their messages wait for a key that will never come (dropped after 24 h).
    let detail = rig.channel.health().detail.unwrap_or_default();
    assert!(detail.contains("2 waiting"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_follow_who_is_in_the_room() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let mut owner = Owner::new(&synapse, "owner").await;
    let mut bob = Owner::new(&synapse, "bob").await;
    let keep = Keep::new(&bot);
    let mut rig = start(&synapse, &keep).await;
    let room = encrypted_room(&owner, &bot, &[]).await;
    owner.say(&room, "hi").await;
    next(&mut rig).await;
    rig.channel
        .deliver(&reply("k1", &room, "just us", None))
        .await
        .unwrap();
    owner.read_at_least(&room, &bot.user_id, 1).await;

    owner.user.invite(&room, &bob.user.user_id).await;
    bob.user.join(&room).await;
    rig.channel
        .deliver(&reply("k2", &room, "welcome bob", None))
        .await
        .unwrap();
    let owner_read = owner.read_at_least(&room, &bot.user_id, 2).await;
    assert_eq!(owner_read[1]["body"], "welcome bob");
    let bob_read = bob.read_at_least(&room, &bot.user_id, 1).await;
    assert_eq!(bob_read.last().unwrap()["body"], "welcome bob");

    bob.user.leave(&room).await;
    rig.channel
        .deliver(&reply("k3", &room, "bob has gone", None))
        .await
        .unwrap();
    let owner_read = owner.read_at_least(&room, &bot.user_id, 3).await;
    assert_eq!(owner_read[2]["body"], "bob has gone");
    // The leaver holds the old session's key; the new message is under a new session.
    let events: Vec<Value> = owner
        .user
        .events(&room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == bot.user_id.as_str() && e["type"] == "m.room.encrypted")
        .collect();
    let last = events.last().unwrap();
    assert_ne!(
        last["content"]["session_id"],
        events[1]["content"]["session_id"]
    );
    bob.sync().await;
    let raw = Raw::from_json(serde_json::value::to_raw_value(last).unwrap());
    assert!(
        bob.machine
            .decrypt_room_event(&raw, &RoomId::parse(&room).unwrap(), &settings_untrusted())
            .await
            .is_err(),
        "the member who left read the next reply"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_key_comes_late_is_handed_over_then() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let mut owner = Owner::new(&synapse, "owner").await;
    let keep = Keep::new(&bot);
    let mut rig = start(&synapse, &keep).await;
    let room = encrypted_room(&owner, &bot, &[]).await;
    // The owner's client encrypts, sends the message, and only later the key.
    owner.sync().await;
    let room_id = RoomId::parse(&room).unwrap();
    let members: Vec<OwnedUserId> = [&owner.user.user_id, &bot.user_id]
        .iter()
        .map(|u| UserId::parse(u.as_str()).unwrap())
        .collect();
    owner
        .machine
        .update_tracked_users(members.iter().map(|u| u.as_ref()))
        .await
        .unwrap();
    owner.process_outgoing().await;
    if let Some((txn, request)) = owner
        .machine
        .get_missing_sessions(members.iter().map(|u| u.as_ref()))
        .await
        .unwrap()
    {
        let response = owner.send(request).await;
        owner
            .machine
            .mark_request_as_sent(&txn, &response)
            .await
            .unwrap();
    }
    let held = owner
        .machine
        .share_room_key(
            &room_id,
            members.iter().map(|u| u.as_ref()),
            EncryptionSettings::default(),
        )
        .await
        .unwrap();
    let raw = Raw::new(&json!({"msgtype": "m.text", "body": "late but here"}))
        .unwrap()
        .cast_unchecked();
    let encrypted = owner
        .machine
        .encrypt_room_event_raw(&room_id, "m.room.message", &raw)
        .await
        .unwrap();
    let content: Value = serde_json::from_str(encrypted.content.json().get()).unwrap();
    let sent = owner
        .user
        .send_event(&room, "m.room.encrypted", content)
        .await;
    // Several syncs go by (the token moves on) without the key.
    none(&mut rig, Duration::from_secs(5)).await;
    let detail = rig.channel.health().detail.unwrap_or_default();
    assert!(detail.contains("1 waiting"), "{detail}");
    for request in held {
        let response = owner.to_device(&request).await;
        owner
            .machine
            .mark_request_as_sent(&request.txn_id, &response)
            .await
            .unwrap();
    }
    let event = next(&mut rig).await;
    assert_eq!(event.text, "late but here");
    assert_eq!(event.platform_msg_id, sent);
    // Forgotten once the host has it (just after the hand-over).
    let mut detail = String::new();
    for _ in 0..50 {
        detail = rig.channel.health().detail.unwrap_or_default();
        if detail.contains("0 waiting") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(detail.contains("0 waiting"), "{detail}");
    none(&mut rig, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_already_on_the_server_for_the_device_stop_the_start() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    // Another client (Element, say) used the token first and uploaded its keys.
    let _element = Forger::with(bot.clone()).await;
    let keep = Keep::new(&bot);
    let dir = tempfile::tempdir().unwrap();
    let settings: toml::Table = toml::from_str(&format!(
        "enabled = true\nhomeserver = \"{}\"\n",
        synapse.base
    ))
    .unwrap();
    let channel = Arc::new(
        MatrixChannel::from_setup(ChannelSetup {
            settings,
            secrets: keep.secrets.clone(),
            state: keep.state.clone(),
            ledger: Arc::new(MemoryLedger::default()),
            assistant_name: "Andy".into(),
            data_dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap(),
    );
    let (sink, _events) = accepting_host();
    let err = Arc::clone(&channel).start(sink).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, nanoclaw_channel::ChannelError::Setup(_)) && text.contains("fresh device"),
        "{text}"
    );
    assert_eq!(channel.health().state, LinkState::Down);
    // Nothing was uploaded over the other client's keys.
    let query = bot
        .request(
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/query",
            Some(json!({"device_keys": {&bot.user_id: []}})),
        )
        .await;
    let device = bot.device_id().await;
    assert_eq!(
        query["device_keys"][&bot.user_id][&device]["keys"][format!("ed25519:{device}")],
        _element.ed25519().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_an_encrypted_room_travel_encrypted_both_ways() {
    use matrix_sdk_crypto::{AttachmentDecryptor, AttachmentEncryptor, MediaEncryptionInfo};
    use std::io::Read;
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let mut owner = Owner::new(&synapse, "owner").await;
    let keep = Keep::new(&bot);
    let mut rig = start(&synapse, &keep).await;
    let room = encrypted_room(&owner, &bot, &[]).await;

    // The owner's client encrypts the file the way Element does.
    let plain = b"quarterly numbers: 1,2,3\n".to_vec();
    let mut reader = std::io::Cursor::new(plain.clone());
    let mut encryptor = AttachmentEncryptor::new(&mut reader);
    let mut cipher = Vec::new();
    encryptor.read_to_end(&mut cipher).unwrap();
    let info = encryptor.finish();
    let mxc = owner.user.upload("numbers.txt", &cipher).await;
    let mut file = serde_json::to_value(&info).unwrap();
    file["url"] = json!(mxc);
    let first_file = file.clone();
    owner
        .send_encrypted(
            &room,
            json!({"msgtype": "m.file", "body": "read this", "filename": "numbers.txt",
                "file": file, "info": {"mimetype": "text/plain", "size": plain.len()}}),
        )
        .await;
    let event = next(&mut rig).await;
    assert_eq!(event.text, "read this");
    assert_eq!(event.attachments.len(), 1);
    assert_eq!(&event.attachments[0].data[..], &plain[..]);

    // The bot's file: only ciphertext on the homeserver; the owner decrypts it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, b"report\x00\xff secret").unwrap();
    let mut message = reply("k-file", &room, "the report", None);
    message.files = vec![nanoclaw_channel::OutgoingFile {
        file_name: "report.bin".into(),
        path,
        mime_type: None,
    }];
    rig.channel.deliver(&message).await.unwrap();
    let read = owner.read_at_least(&room, &bot.user_id, 2).await;
    let sent = read
        .iter()
        .find(|c| c["msgtype"] == "m.file")
        .expect("a file message");
    assert!(
        sent.get("url").is_none(),
        "a clear url in an encrypted room"
    );
    let stored = owner
        .user
        .download(sent["file"]["url"].as_str().unwrap())
        .await;
    assert!(!stored.windows(6).any(|w| w == b"secret"));
    let info: MediaEncryptionInfo = serde_json::from_value(sent["file"].clone()).unwrap();
    let mut cursor = std::io::Cursor::new(stored);
    let mut decryptor = AttachmentDecryptor::new(&mut cursor, info).unwrap();
    let mut data = Vec::new();
    decryptor.read_to_end(&mut data).unwrap();
    assert_eq!(data, b"report\x00\xff secret");

    // A file whose bytes were changed on the server is not handed over as the file.
    let mut tampered = cipher.clone();
    tampered[0] ^= 1;
    let mut bad = first_file;
    bad["url"] = json!(owner.user.upload("numbers.txt", &tampered).await);
    owner
        .send_encrypted(
            &room,
            json!({"msgtype": "m.file", "body": "again", "filename": "numbers.txt",
                "file": bad, "info": {"mimetype": "text/plain", "size": plain.len()}}),
        )
        .await;
    let event = next(&mut rig).await;
    assert!(event.attachments.is_empty());
    assert!(
        event.text.contains("could not be decrypted"),
        "{}",
        event.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_keys_are_topped_up_as_others_claim_them() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let ada = synapse.register("ada", false).await;
    let keep = Keep::new(&bot);
    let _rig = start(&synapse, &keep).await;
    // `/keys/upload` with nothing in it answers the device's counts.
    let count = || async {
        bot.request(
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/upload",
            Some(json!({})),
        )
        .await["one_time_key_counts"]["signed_curve25519"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(count().await, 50);
    let device = bot.device_id().await;
    for _ in 0..30 {
        ada.request(
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/claim",
            Some(json!({"one_time_keys": {&bot.user_id: {&device: "signed_curve25519"}}})),
        )
        .await;
    }
    assert_eq!(count().await, 20);
    let mut now = 0;
    for _ in 0..100 {
        now = count().await;
        if now == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, 50, "not topped up");
}

/// The `session_id`s of the bot's encrypted events in `room`, oldest first.
async fn bot_sessions(viewer: &MatrixUser, room: &str, bot: &MatrixUser) -> Vec<String> {
    viewer
        .events(room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == bot.user_id.as_str() && e["type"] == "m.room.encrypted")
        .map(|e| e["content"]["session_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_key_rotates_after_the_rooms_message_count() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let mut owner = Owner::new(&synapse, "owner").await;
    let keep = Keep::new(&bot);
    let rig = start(&synapse, &keep).await;
    let room = owner
        .user
        .request(
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(
                json!({"invite": [bot.user_id], "is_direct": true, "preset": "private_chat",
                "initial_state": [{"type": "m.room.encryption", "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 2}}]}),
            ),
        )
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..300 {
        if owner.user.joined_members(&room).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        rig.channel
            .deliver(&reply(&format!("k{i}"), &room, &format!("m{i}"), None))
            .await
            .unwrap();
    }
    let read = owner.read_at_least(&room, &bot.user_id, 3).await;
    let bodies: Vec<&str> = read.iter().map(|c| c["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    let sessions = bot_sessions(&owner.user, &room, &bot).await;
    assert_eq!(sessions[0], sessions[1]);
    assert_ne!(sessions[1], sessions[2], "not rotated after 2 messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_keys_change_gets_no_more_room_keys() {
    let synapse = Synapse::start();
    let bot = synapse.register("andy", false).await;
    let owner = Owner::new(&synapse, "owner").await;
    let mallory = Forger::new(&synapse, "mallory").await;
    let keep = Keep::new(&bot);
    let rig = start(&synapse, &keep).await;
    let room = encrypted_room(&owner, &bot, &[&mallory.user]).await;
    // To-device events that reach Mallory's device.
    let since = mallory
        .user
        .request(
            reqwest::Method::GET,
            "/_matrix/client/v3/sync?timeout=0",
            None,
        )
        .await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let to_device = |since: String| {
        let user = mallory.user.clone();
        async move {
            let v = user
                .request(
                    reqwest::Method::GET,
                    &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
                    None,
                )
                .await;
            (
                v["to_device"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                v["next_batch"].as_str().unwrap().to_owned(),
            )
        }
    };
    rig.channel
        .deliver(&reply("k1", &room, "first", None))
        .await
        .unwrap();
    let (events, since) = to_device(since).await;
    assert_eq!(
        events.len(),
        1,
        "the first room key went to Mallory's device"
    );

    // The same device id, new keys (the spec says they never change).
    let _changed = Forger::with_one_time_keys(mallory.user.clone(), 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.channel
        .deliver(&reply("k2", &room, "second", None))
        .await
        .unwrap();
    let (events, _) = to_device(since).await;
    assert!(
        events.is_empty(),
        "a room key went to the changed device: {events:?}"
    );
    let sessions = bot_sessions(&owner.user, &room, &bot).await;
    assert_ne!(
        sessions[0], sessions[1],
        "the session it had was not replaced"
    );
}

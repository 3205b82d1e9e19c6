//! End-to-end encryption (<https://spec.matrix.org/v1.12/client-server-api/#end-to-end-encryption>):
//! Olm and Megolm from vodozemac, the protocol glue here, on the channel's own [`Api`].
//!
//! - **Device**: the access token's device. The first start makes an Olm account and
//!   uploads its signed device keys, one-time keys and a fallback key; one-time keys are
//!   topped up from each sync's count. Keys the homeserver already holds for the device
//!   that are not ours stop the start (never overwritten). Everything is kept in the state
//!   store ([`store`]), secrets as pickles encrypted with the vault's pickle key, so a
//!   restart is the same device.
//! - **In**: to-device `m.olm.v1.curve25519-aes-sha2` events carrying `m.room_key` give
//!   Megolm sessions, once the payload's `sender`, `recipient`, `recipient_keys` and
//!   `keys.ed25519` agree with the to-device sender, us, and the sender's device (from
//!   `/keys/query`, its self-signature checked). A room event decrypts only with a session
//!   of its room given by its sender; a message index used again by another event is a
//!   replay and refused. A message whose key is missing waits (24 h, 1,000 at most).
//! - **Out**: one Megolm session per room, shared over Olm with every device of every
//!   joined member, rotated after the room's `rotation_period_msgs`/`_ms` (100 / a week)
//!   and when a device it was shared with is gone (a member left).
//! - **Trust**: trust on first use. No cross-signing; a device whose keys change under the
//!   same id is refused.

pub mod attachment;
pub mod keys;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use nanoclaw_channel::{ChannelError, SecretSource, StateStore, now_ms};
use serde_json::{Value, json};
use vodozemac::megolm::{
    GroupSession, GroupSessionPickle, InboundGroupSession, InboundGroupSessionPickle,
    MegolmMessage, SessionConfig as MegolmConfig, SessionKey,
};
use vodozemac::olm::{
    Account, AccountPickle, OlmMessage, Session, SessionConfig as OlmConfig, SessionPickle,
};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey};

use crate::api::{Api, ApiError};
use store::{Device, InboundRecord, OutboundRecord, Pending, Persisted, PickleKey, STATE_KEY};

pub const OLM: &str = "m.olm.v1.curve25519-aes-sha2";
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";
/// One-time keys kept on the homeserver.
const ONE_TIME_KEYS: u64 = 50;
/// Messages waiting for their key: at most this many, this long.
const PENDING_MAX: usize = 1_000;
const PENDING_MS: i64 = 24 * 3600 * 1000;

/// A failure of the encryption layer.
#[derive(Debug, thiserror::Error)]
pub enum E2eeError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("encryption state: {0}")]
    Store(String),
    #[error("{0}")]
    Setup(String),
}

impl E2eeError {
    pub fn into_channel_error(self) -> ChannelError {
        match self {
            E2eeError::Api(e) => e.into_channel_error(),
            E2eeError::Store(e) => ChannelError::Failed(e),
            E2eeError::Setup(e) => ChannelError::Setup(e),
        }
    }
}

/// What became of a room event's decryption.
#[derive(Debug)]
pub enum Decrypted {
    /// The cleartext event (type, content, event_id, sender, origin_server_ts).
    Event(Value),
    /// Its key has not arrived: kept to try again when one does.
    Missing,
    /// Refused (a spoof, a replay, garbage): never handed over.
    Refused(String),
}

struct Inbound {
    session: InboundGroupSession,
    record: InboundRecord,
}

struct Outbound {
    session: GroupSession,
    record: OutboundRecord,
}

/// The device's keys and sessions.
pub struct Crypto {
    key: PickleKey,
    user: String,
    device: String,
    account: Account,
    uploaded: bool,
    olm: HashMap<String, Vec<Session>>,
    /// By `(room, session_id)`.
    inbound: HashMap<(String, String), Inbound>,
    outbound: HashMap<String, Outbound>,
    devices: BTreeMap<String, BTreeMap<String, Device>>,
    /// Users whose device lists changed since we read them.
    stale: HashSet<String>,
    pending: Vec<Pending>,
    /// Refused events and messages dropped unread, since the start (for the health).
    pub refused: u64,
    /// The last to-device refusal, for the health (taken by the channel).
    pub last_refusal: Option<String>,
}

fn store_err(e: impl std::fmt::Display) -> E2eeError {
    E2eeError::Store(e.to_string())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

impl Crypto {
    /// The device's encryption, loaded from the state store or made (and its keys uploaded).
    pub async fn load_or_create(
        api: &Api,
        state: &dyn StateStore,
        secrets: &dyn SecretSource,
    ) -> Result<Crypto, E2eeError> {
        let (user, device) = api.whoami_device().await.map_err(|e| match e {
            ApiError::Decode(why) => E2eeError::Setup(format!(
                "{why}: end-to-end encryption needs a token with a device (a login's), or set \
                 [channels.matrix] encryption = false"
            )),
            other => E2eeError::Api(other),
        })?;
        let key = PickleKey::load_or_create(secrets)
            .await
            .map_err(|e| E2eeError::Setup(e.to_string()))?;
        let saved = state.get(STATE_KEY).await.map_err(store_err)?;
        let saved: Option<Persisted> = match saved {
            Some(text) => Some(serde_json::from_str(&text).map_err(store_err)?),
            None => None,
        };
        let mut crypto = match saved {
            Some(p) if p.user == user && p.device == device => Crypto::from_persisted(p, key)?,
            Some(p) => {
                tracing::warn!(old = %p.device, new = %device, "matrix: the access token belongs to another device now; making new encryption keys for it");
                Crypto::new(key, user, device)
            }
            None => Crypto::new(key, user, device),
        };
        crypto.ensure_uploaded(api, state).await?;
        Ok(crypto)
    }

    fn new(key: PickleKey, user: String, device: String) -> Crypto {
        Crypto {
            key,
            user,
            device,
            account: Account::new(),
            uploaded: false,
            olm: HashMap::new(),
            inbound: HashMap::new(),
            outbound: HashMap::new(),
            devices: BTreeMap::new(),
            stale: HashSet::new(),
            pending: Vec::new(),
            refused: 0,
            last_refusal: None,
        }
    }

    fn from_persisted(p: Persisted, key: PickleKey) -> Result<Crypto, E2eeError> {
        let k = &*key.0;
        let unpickle = |what: &str, e: vodozemac::PickleError| {
            E2eeError::Setup(format!(
                "the Matrix encryption {what} cannot be unlocked with the vault's pickle key ({e})"
            ))
        };
        let account = Account::from_pickle(
            AccountPickle::from_encrypted(&p.account, k).map_err(|e| unpickle("account", e))?,
        );
        let mut olm = HashMap::new();
        for (curve, pickles) in p.olm {
            let mut sessions = Vec::new();
            for pickle in pickles {
                sessions.push(Session::from_pickle(
                    SessionPickle::from_encrypted(&pickle, k)
                        .map_err(|e| unpickle("Olm session", e))?,
                ));
            }
            olm.insert(curve, sessions);
        }
        let mut inbound = HashMap::new();
        for record in p.inbound {
            let session = InboundGroupSession::from_pickle(
                InboundGroupSessionPickle::from_encrypted(&record.pickle, k)
                    .map_err(|e| unpickle("Megolm session", e))?,
            );
            inbound.insert(
                (record.room.clone(), record.session_id.clone()),
                Inbound { session, record },
            );
        }
        let mut outbound = HashMap::new();
        for (room, record) in p.outbound {
            let session = GroupSession::from_pickle(
                GroupSessionPickle::from_encrypted(&record.pickle, k)
                    .map_err(|e| unpickle("Megolm session", e))?,
            );
            outbound.insert(room, Outbound { session, record });
        }
        Ok(Crypto {
            user: p.user,
            device: p.device,
            account,
            uploaded: p.uploaded,
            olm,
            inbound,
            outbound,
            devices: p.devices,
            stale: HashSet::new(),
            pending: p.pending,
            refused: 0,
            last_refusal: None,
            key,
        })
    }

    /// Writes everything to the state store.
    pub async fn save(&self, state: &dyn StateStore) -> Result<(), E2eeError> {
        let k = &*self.key.0;
        let p = Persisted {
            user: self.user.clone(),
            device: self.device.clone(),
            account: self.account.pickle().encrypt(k),
            uploaded: self.uploaded,
            olm: self
                .olm
                .iter()
                .map(|(curve, sessions)| {
                    (
                        curve.clone(),
                        sessions.iter().map(|s| s.pickle().encrypt(k)).collect(),
                    )
                })
                .collect(),
            inbound: self
                .inbound
                .values()
                .map(|i| InboundRecord {
                    pickle: i.session.pickle().encrypt(k),
                    ..i.record.clone()
                })
                .collect(),
            outbound: self
                .outbound
                .iter()
                .map(|(room, o)| {
                    (
                        room.clone(),
                        OutboundRecord {
                            pickle: o.session.pickle().encrypt(k),
                            ..o.record.clone()
                        },
                    )
                })
                .collect(),
            devices: self.devices.clone(),
            pending: self.pending.clone(),
        };
        let text = serde_json::to_string(&p).map_err(store_err)?;
        state.put(STATE_KEY, &text).await.map_err(store_err)
    }

    pub fn device_id(&self) -> &str {
        &self.device
    }

    /// The device's ed25519 key (its fingerprint, as clients show it).
    pub fn ed25519(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn device_keys(&self) -> Value {
        let d = &self.device;
        let ids = self.account.identity_keys();
        let mut keys = json!({
            "user_id": self.user,
            "device_id": d,
            "algorithms": [OLM, MEGOLM],
            "keys": {
                format!("curve25519:{d}"): ids.curve25519.to_base64(),
                format!("ed25519:{d}"): ids.ed25519.to_base64(),
            },
        });
        let signature = self.account.sign(keys::signable(&keys));
        keys::add_signature(&mut keys, &self.user, &format!("ed25519:{d}"), &signature);
        keys
    }

    fn signed_key(&self, key: &Curve25519PublicKey, fallback: bool) -> Value {
        let mut object = json!({"key": key.to_base64()});
        if fallback {
            object["fallback"] = Value::Bool(true);
        }
        let signature = self.account.sign(keys::signable(&object));
        keys::add_signature(
            &mut object,
            &self.user,
            &format!("ed25519:{}", self.device),
            &signature,
        );
        object
    }

    /// Uploads the device keys once, refusing a device that already has other keys.
    async fn ensure_uploaded(
        &mut self,
        api: &Api,
        state: &dyn StateStore,
    ) -> Result<(), E2eeError> {
        let answer = api.keys_query(std::slice::from_ref(&self.user)).await?;
        let on_server = answer
            .pointer(&format!(
                "/device_keys/{}/{}",
                pointer_escape(&self.user),
                pointer_escape(&self.device)
            ))
            .cloned();
        if let Some(server) = on_server {
            let theirs = str_at(&server, &format!("/keys/ed25519:{}", self.device));
            if theirs != Some(self.ed25519().as_str()) {
                return Err(E2eeError::Setup(format!(
                    "the homeserver already holds end-to-end encryption keys for device {} that \
                     are not nanoclaw's (was this access token used by another client, e.g. \
                     Element?). Give the bot a fresh device: log in again to get a new access \
                     token, store it with `nanoclaw channel add matrix`, and restart",
                    self.device
                )));
            }
            if !self.uploaded {
                self.uploaded = true;
                self.save(state).await?;
            }
            return Ok(());
        }
        // Saved before the upload: a crash in between still finds our keys next time.
        self.account.generate_one_time_keys(ONE_TIME_KEYS as usize);
        self.account.generate_fallback_key();
        self.save(state).await?;
        let body = json!({
            "device_keys": self.device_keys(),
            "one_time_keys": self.unpublished_one_time_keys(),
            "fallback_keys": self.unpublished_fallback_key(),
        });
        api.keys_upload(&body).await?;
        self.account.mark_keys_as_published();
        self.uploaded = true;
        self.save(state).await?;
        tracing::info!(device = %self.device, ed25519 = %self.ed25519(), "matrix: encryption keys uploaded");
        Ok(())
    }

    fn unpublished_one_time_keys(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (id, key) in self.account.one_time_keys() {
            map.insert(
                format!("signed_curve25519:{}", id.to_base64()),
                self.signed_key(&key, false),
            );
        }
        Value::Object(map)
    }

    fn unpublished_fallback_key(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (id, key) in self.account.fallback_key() {
            map.insert(
                format!("signed_curve25519:{}", id.to_base64()),
                self.signed_key(&key, true),
            );
        }
        Value::Object(map)
    }

    /// Tops up one-time keys (and replaces a used fallback key) from a sync's counts.
    pub async fn top_up(
        &mut self,
        api: &Api,
        state: &dyn StateStore,
        count: Option<u64>,
        unused_fallback: Option<&[String]>,
    ) -> Result<(), E2eeError> {
        let want_otks = count
            .filter(|c| *c < ONE_TIME_KEYS / 2)
            .map(|c| ONE_TIME_KEYS - c);
        let want_fallback =
            unused_fallback.is_some_and(|types| !types.iter().any(|t| t == "signed_curve25519"));
        if want_otks.is_none() && !want_fallback {
            return Ok(());
        }
        if let Some(n) = want_otks {
            self.account.generate_one_time_keys(n as usize);
        }
        if want_fallback {
            self.account.generate_fallback_key();
        }
        self.save(state).await?;
        let body = json!({
            "one_time_keys": self.unpublished_one_time_keys(),
            "fallback_keys": self.unpublished_fallback_key(),
        });
        api.keys_upload(&body).await?;
        self.account.mark_keys_as_published();
        self.save(state).await?;
        tracing::debug!(?want_otks, want_fallback, "matrix: one-time keys topped up");
        Ok(())
    }

    /// Marks users whose devices changed (sync's `device_lists.changed`).
    pub fn devices_changed(&mut self, users: &[String]) {
        self.stale.extend(users.iter().cloned());
    }

    /// Reads the devices of `users` that are unknown or changed.
    async fn refresh_devices(&mut self, api: &Api, users: &[String]) -> Result<(), E2eeError> {
        let wanted: Vec<String> = users
            .iter()
            .filter(|u| self.stale.contains(*u) || !self.devices.contains_key(*u))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let answer = api.keys_query(&wanted).await?;
        for user in &wanted {
            let listed = answer
                .get("device_keys")
                .and_then(|d| d.get(user))
                .and_then(Value::as_object);
            let Some(listed) = listed else {
                // Not answered (a remote server down): try again next time.
                continue;
            };
            let known = self.devices.entry(user.clone()).or_default();
            for device in known.values_mut() {
                device.active = false;
            }
            for (device_id, keys) in listed {
                let Some(read) = read_device_keys(user, device_id, keys) else {
                    tracing::warn!(%user, %device_id, "matrix: device keys unsigned or malformed; ignored");
                    continue;
                };
                match known.get_mut(device_id) {
                    Some(old)
                        if old.ed25519 != read.ed25519 || old.curve25519 != read.curve25519 =>
                    {
                        // The spec: a device's keys never change. Keep the first ones.
                        tracing::warn!(%user, %device_id, "matrix: a device's keys changed under the same id; refused");
                    }
                    Some(old) => old.active = true,
                    None => {
                        known.insert(device_id.clone(), read);
                    }
                }
            }
            self.stale.remove(user);
        }
        Ok(())
    }

    fn device_by_curve(&self, user: &str, curve: &str) -> Option<(String, Device)> {
        self.devices.get(user).and_then(|devices| {
            devices
                .iter()
                .find(|(_, d)| d.active && d.curve25519 == curve)
                .map(|(id, d)| (id.clone(), d.clone()))
        })
    }

    /// Reads a sync's to-device events; the number of Megolm sessions they gave.
    pub async fn receive_to_device(
        &mut self,
        api: &Api,
        state: &dyn StateStore,
        events: &[Value],
    ) -> Result<usize, E2eeError> {
        let mut added = 0;
        for event in events {
            if event.get("type").and_then(Value::as_str) != Some("m.room.encrypted") {
                continue;
            }
            match self.receive_olm(api, event).await {
                Ok(true) => added += 1,
                Ok(false) => {}
                Err(OlmRefusal::Api(e)) => return Err(E2eeError::Api(e)),
                Err(OlmRefusal::Refused(why)) => {
                    self.refused += 1;
                    self.last_refusal = Some(format!("a to-device message was refused: {why}"));
                    tracing::warn!(sender = ?event.get("sender"), why, "matrix: a to-device message was refused");
                }
            }
        }
        if !events.is_empty() {
            self.save(state).await?;
        }
        Ok(added)
    }

    async fn receive_olm(&mut self, api: &Api, event: &Value) -> Result<bool, OlmRefusal> {
        let refuse = |why: &str| OlmRefusal::Refused(why.to_owned());
        let sender = str_at(event, "/sender").ok_or_else(|| refuse("no sender"))?;
        let content = event.get("content").ok_or_else(|| refuse("no content"))?;
        if str_at(content, "/algorithm") != Some(OLM) {
            return Err(refuse("not Olm"));
        }
        let sender_key = str_at(content, "/sender_key").ok_or_else(|| refuse("no sender_key"))?;
        let their_key =
            Curve25519PublicKey::from_base64(sender_key).map_err(|_| refuse("bad sender_key"))?;
        let ours = self.account.curve25519_key().to_base64();
        let message: OlmMessage = content
            .get("ciphertext")
            .and_then(|c| c.get(&ours))
            .cloned()
            .and_then(|m| serde_json::from_value(m).ok())
            .ok_or_else(|| refuse("no ciphertext for this device"))?;
        let plaintext = self
            .olm_decrypt(sender_key, their_key, &message)
            .map_err(|e| OlmRefusal::Refused(format!("Olm: {e}")))?;
        let payload: Value =
            serde_json::from_slice(&plaintext).map_err(|_| refuse("payload is not JSON"))?;
        // The spec's checks: who sent it, to whom, with which keys.
        if str_at(&payload, "/sender") != Some(sender) {
            return Err(refuse("the payload's sender is not the to-device sender"));
        }
        if str_at(&payload, "/recipient") != Some(self.user.as_str()) {
            return Err(refuse("the payload is for another user"));
        }
        if str_at(&payload, "/recipient_keys/ed25519") != Some(self.ed25519().as_str()) {
            return Err(refuse("the payload is for another device"));
        }
        self.refresh_devices(api, &[sender.to_owned()])
            .await
            .map_err(|e| match e {
                E2eeError::Api(e) => OlmRefusal::Api(e),
                other => OlmRefusal::Refused(other.to_string()),
            })?;
        if self.device_by_curve(sender, sender_key).is_none() {
            // A device newer than our list of the sender's: read it again once.
            self.stale.insert(sender.to_owned());
            self.refresh_devices(api, &[sender.to_owned()])
                .await
                .map_err(|e| match e {
                    E2eeError::Api(e) => OlmRefusal::Api(e),
                    other => OlmRefusal::Refused(other.to_string()),
                })?;
        }
        let (device_id, device) = self
            .device_by_curve(sender, sender_key)
            .ok_or_else(|| refuse("no device of the sender has this curve25519 key"))?;
        if str_at(&payload, "/keys/ed25519") != Some(device.ed25519.as_str()) {
            return Err(refuse(
                "the payload's ed25519 key is not the sending device's",
            ));
        }
        if str_at(&payload, "/type") != Some("m.room_key") {
            // m.dummy and others: nothing to keep.
            return Ok(false);
        }
        let key = payload.get("content").ok_or_else(|| refuse("no content"))?;
        if str_at(key, "/algorithm") != Some(MEGOLM) {
            return Err(refuse("a room key for another algorithm"));
        }
        let (Some(room), Some(session_id), Some(session_key)) = (
            str_at(key, "/room_id"),
            str_at(key, "/session_id"),
            str_at(key, "/session_key"),
        ) else {
            return Err(refuse(
                "a room key without room_id, session_id or session_key",
            ));
        };
        let session_key =
            SessionKey::from_base64(session_key).map_err(|_| refuse("bad session_key"))?;
        let session = InboundGroupSession::new(&session_key, MegolmConfig::version_1());
        if session.session_id() != session_id {
            return Err(refuse("session_id does not match the session key"));
        }
        let slot = (room.to_owned(), session_id.to_owned());
        if let Some(existing) = self.inbound.get(&slot) {
            // Only the same sender may bring a session again (e.g. from an earlier index).
            if existing.record.sender_key != sender_key
                || existing.session.first_known_index() <= session.first_known_index()
            {
                return Ok(false);
            }
        }
        tracing::info!(%room, %sender, %device_id, session = %session_id, "matrix: room key received");
        let seen = self
            .inbound
            .remove(&slot)
            .map(|i| i.record.seen)
            .unwrap_or_default();
        self.inbound.insert(
            slot,
            Inbound {
                session,
                record: InboundRecord {
                    pickle: String::new(),
                    room: room.to_owned(),
                    session_id: session_id.to_owned(),
                    sender: sender.to_owned(),
                    sender_device: device_id,
                    sender_key: sender_key.to_owned(),
                    seen,
                },
            },
        );
        Ok(true)
    }

    fn olm_decrypt(
        &mut self,
        sender_key: &str,
        their_key: Curve25519PublicKey,
        message: &OlmMessage,
    ) -> Result<Vec<u8>, String> {
        let sessions = self.olm.entry(sender_key.to_owned()).or_default();
        if let OlmMessage::PreKey(pre) = message {
            // A pre-key message of a session we have goes to it; otherwise it starts one.
            if let Some(session) = sessions
                .iter_mut()
                .find(|s| s.session_keys() == pre.session_keys())
            {
                return session.decrypt(message).map_err(|e| e.to_string());
            }
            let created = self
                .account
                .create_inbound_session(OlmConfig::version_1(), their_key, pre)
                .map_err(|e| e.to_string())?;
            let sessions = self.olm.entry(sender_key.to_owned()).or_default();
            sessions.push(created.session);
            return Ok(created.plaintext);
        }
        for session in sessions.iter_mut() {
            if let Ok(plaintext) = session.decrypt(message) {
                return Ok(plaintext);
            }
        }
        Err("no Olm session decrypts it".into())
    }

    /// Decrypts a room's `m.room.encrypted` event (as received).
    pub fn decrypt(&mut self, room: &str, event: &Value) -> Decrypted {
        let refused = |why: String| Decrypted::Refused(why);
        let (Some(event_id), Some(sender), Some(content)) = (
            str_at(event, "/event_id"),
            str_at(event, "/sender"),
            event.get("content"),
        ) else {
            return refused("malformed event".into());
        };
        if str_at(content, "/algorithm") != Some(MEGOLM) {
            return refused("not Megolm".into());
        }
        let (Some(session_id), Some(ciphertext)) = (
            str_at(content, "/session_id"),
            str_at(content, "/ciphertext"),
        ) else {
            return refused("no session_id or ciphertext".into());
        };
        let Some(inbound) = self
            .inbound
            .get_mut(&(room.to_owned(), session_id.to_owned()))
        else {
            if self.inbound.keys().any(|(_, s)| s == session_id) {
                return refused(format!("session {session_id} belongs to another room"));
            }
            return Decrypted::Missing;
        };
        if inbound.record.sender != sender {
            return refused(format!(
                "sent by {sender} with a session of {}",
                inbound.record.sender
            ));
        }
        let Ok(message) = MegolmMessage::from_base64(ciphertext) else {
            return refused("undecodable ciphertext".into());
        };
        let plain = match inbound.session.decrypt(&message) {
            Ok(plain) => plain,
            Err(vodozemac::megolm::DecryptionError::UnknownMessageIndex(..)) => {
                return Decrypted::Missing;
            }
            Err(e) => return refused(format!("Megolm: {e}")),
        };
        match inbound.record.seen.get(&plain.message_index) {
            Some(earlier) if earlier != event_id => {
                return refused(format!(
                    "replay: index {} was used by {earlier}",
                    plain.message_index
                ));
            }
            _ => {
                inbound
                    .record
                    .seen
                    .insert(plain.message_index, event_id.to_owned());
            }
        }
        let Ok(payload) = serde_json::from_slice::<Value>(&plain.plaintext) else {
            return refused("payload is not JSON".into());
        };
        if str_at(&payload, "/room_id") != Some(room) {
            return refused("the payload names another room".into());
        }
        if str_at(&payload, "/type") == Some("m.room.encrypted") {
            return refused("ciphertext inside ciphertext".into());
        }
        let mut content = payload.get("content").cloned().unwrap_or(Value::Null);
        // Relations travel in the clear (the spec), for the server to see threads.
        if let (Some(relates), Value::Object(map)) = (content_relates(event), &mut content)
            && !map.contains_key("m.relates_to")
        {
            map.insert("m.relates_to".into(), relates);
        }
        Decrypted::Event(json!({
            "type": payload.get("type").cloned().unwrap_or(Value::Null),
            "content": content,
            "event_id": event_id,
            "sender": sender,
            "origin_server_ts": event.get("origin_server_ts").cloned().unwrap_or(Value::Null),
        }))
    }

    /// Keeps an event whose key has not arrived, within the bounds.
    pub fn defer(&mut self, room: &str, event: &Value) {
        let id = str_at(event, "/event_id");
        if self
            .pending
            .iter()
            .any(|p| str_at(&p.event, "/event_id") == id)
        {
            return;
        }
        self.pending.push(Pending {
            room: room.to_owned(),
            event: event.clone(),
            received_ms: now_ms(),
        });
        self.expire_pending();
    }

    fn expire_pending(&mut self) {
        let now = now_ms();
        let before = self.pending.len();
        self.pending.retain(|p| now - p.received_ms < PENDING_MS);
        if self.pending.len() > PENDING_MAX {
            let extra = self.pending.len() - PENDING_MAX;
            self.pending.drain(..extra);
        }
        let dropped = before - self.pending.len();
        if dropped > 0 {
            self.refused += dropped as u64;
            tracing::warn!(
                dropped,
                "matrix: encrypted messages whose key never came were dropped"
            );
        }
    }

    /// Tries the waiting events again: the ones that now decrypt, as `(room, event)`. They
    /// stay waiting until [`Crypto::forget_pending`] (after the host took them).
    pub fn retry_pending(&mut self) -> Vec<(String, Value)> {
        self.expire_pending();
        let mut ready = Vec::new();
        let mut refused = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for p in &pending {
            match self.decrypt(&p.room, &p.event) {
                Decrypted::Event(event) => ready.push((p.room.clone(), event)),
                Decrypted::Missing => {}
                Decrypted::Refused(why) => {
                    tracing::warn!(room = %p.room, why, "matrix: a waiting encrypted message was refused");
                    refused.push(str_at(&p.event, "/event_id").map(str::to_owned));
                }
            }
        }
        self.refused += refused.len() as u64;
        self.pending = pending
            .into_iter()
            .filter(|p| !refused.contains(&str_at(&p.event, "/event_id").map(str::to_owned)))
            .collect();
        ready
    }

    pub fn forget_pending(&mut self, event_id: &str) {
        self.pending
            .retain(|p| str_at(&p.event, "/event_id") != Some(event_id));
    }

    /// Encrypts `content` (an `event_type` event) for `room`, sharing the room key first
    /// with every device that lacks it. `settings`: the room's `m.room.encryption` content.
    pub async fn encrypt(
        &mut self,
        api: &Api,
        state: &dyn StateStore,
        room: &str,
        settings: &Value,
        event_type: &str,
        content: &Value,
    ) -> Result<Value, E2eeError> {
        let members = api.joined_members(room).await?;
        self.refresh_devices(api, &members).await?;
        let mut targets: BTreeMap<(String, String), Device> = BTreeMap::new();
        for member in &members {
            for (id, device) in self.devices.get(member).into_iter().flatten() {
                if device.active && !(member == &self.user && id == &self.device) {
                    targets.insert((member.clone(), id.clone()), device.clone());
                }
            }
        }
        let max_msgs = settings
            .get("rotation_period_msgs")
            .and_then(Value::as_u64)
            .unwrap_or(100)
            .max(1);
        let max_ms = settings
            .get("rotation_period_ms")
            .and_then(Value::as_i64)
            .unwrap_or(7 * 24 * 3600 * 1000);
        let rotate = self.outbound.get(room).is_some_and(|o| {
            o.record.sent >= max_msgs
                || now_ms() - o.record.created_ms >= max_ms
                || o.record.shared.iter().any(|d| !targets.contains_key(d))
        });
        if rotate {
            tracing::info!(room, "matrix: a new room key (rotation, or a member left)");
            self.outbound.remove(room);
        }
        if !self.outbound.contains_key(room) {
            self.outbound.insert(
                room.to_owned(),
                Outbound {
                    session: GroupSession::new(MegolmConfig::version_1()),
                    record: OutboundRecord {
                        pickle: String::new(),
                        created_ms: now_ms(),
                        sent: 0,
                        shared: BTreeSet::new(),
                    },
                },
            );
        }
        let missing: Vec<(String, String)> = match self.outbound.get(room) {
            Some(o) => targets
                .keys()
                .filter(|d| !o.record.shared.contains(*d))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        if !missing.is_empty() {
            self.share(api, state, room, &missing, &targets).await?;
        }
        let Some(outbound) = self.outbound.get_mut(room) else {
            return Err(E2eeError::Store("the room's session vanished".into()));
        };
        let mut inner = content.clone();
        let relates = inner.as_object_mut().and_then(|m| m.remove("m.relates_to"));
        let payload = json!({"type": event_type, "content": inner, "room_id": room});
        let message = outbound.session.encrypt(payload.to_string());
        outbound.record.sent += 1;
        let mut encrypted = json!({
            "algorithm": MEGOLM,
            "sender_key": self.account.curve25519_key().to_base64(),
            "ciphertext": message.to_base64(),
            "session_id": outbound.session.session_id(),
            "device_id": self.device,
        });
        if let Some(relates) = relates {
            encrypted["m.relates_to"] = relates;
        }
        self.save(state).await?;
        Ok(encrypted)
    }

    /// Sends the room's session key over Olm to `devices`.
    async fn share(
        &mut self,
        api: &Api,
        state: &dyn StateStore,
        room: &str,
        devices: &[(String, String)],
        known: &BTreeMap<(String, String), Device>,
    ) -> Result<(), E2eeError> {
        // Olm sessions first, from claimed one-time keys, for devices we have none with.
        let without: Vec<(String, String)> = devices
            .iter()
            .filter(|d| {
                known
                    .get(*d)
                    .is_some_and(|k| self.olm.get(&k.curve25519).is_none_or(Vec::is_empty))
            })
            .cloned()
            .collect();
        if !without.is_empty() {
            let claimed = api.keys_claim(&without).await?;
            for (user, device_id) in &without {
                let Some(device) = known.get(&(user.clone(), device_id.clone())) else {
                    continue;
                };
                let otk = claimed
                    .get("one_time_keys")
                    .and_then(|k| k.get(user))
                    .and_then(|k| k.get(device_id))
                    .and_then(Value::as_object)
                    .and_then(|keys| keys.values().next().cloned());
                let Some(otk) = otk else {
                    tracing::warn!(%user, %device_id, "matrix: no one-time key to claim; the device will not get the room key");
                    continue;
                };
                let signed_by = Ed25519PublicKey::from_base64(&device.ed25519).ok();
                let valid = signed_by.is_some_and(|key| {
                    keys::verify(&otk, user, &format!("ed25519:{device_id}"), &key)
                });
                let otk_key =
                    str_at(&otk, "/key").and_then(|k| Curve25519PublicKey::from_base64(k).ok());
                let identity = Curve25519PublicKey::from_base64(&device.curve25519).ok();
                let (true, Some(otk_key), Some(identity)) = (valid, otk_key, identity) else {
                    tracing::warn!(%user, %device_id, "matrix: a claimed one-time key is not signed by its device; refused");
                    continue;
                };
                match self.account.create_outbound_session(
                    OlmConfig::version_1(),
                    identity,
                    otk_key,
                ) {
                    Ok(session) => self
                        .olm
                        .entry(device.curve25519.clone())
                        .or_default()
                        .push(session),
                    Err(e) => {
                        tracing::warn!(%user, %device_id, error = %e, "matrix: no Olm session")
                    }
                }
            }
        }
        let Some(outbound) = self.outbound.get(room) else {
            return Ok(());
        };
        let session_key = outbound.session.session_key().to_base64();
        let session_id = outbound.session.session_id();
        let our_curve = self.account.curve25519_key().to_base64();
        let our_ed = self.ed25519();
        let mut messages = serde_json::Map::new();
        let mut sent_to = Vec::new();
        for (user, device_id) in devices {
            let Some(device) = known.get(&(user.clone(), device_id.clone())) else {
                continue;
            };
            let Some(session) = self
                .olm
                .get_mut(&device.curve25519)
                .and_then(|s| s.last_mut())
            else {
                continue;
            };
            let payload = json!({
                "type": "m.room_key",
                "content": {
                    "algorithm": MEGOLM,
                    "room_id": room,
                    "session_id": session_id,
                    "session_key": session_key,
                },
                "sender": self.user,
                "sender_device": self.device,
                "keys": {"ed25519": our_ed},
                "recipient": user,
                "recipient_keys": {"ed25519": device.ed25519},
            });
            let Ok(message) = session.encrypt(payload.to_string()) else {
                continue;
            };
            let content = json!({
                "algorithm": OLM,
                "sender_key": our_curve,
                "ciphertext": {device.curve25519.clone(): message},
            });
            let for_user = messages
                .entry(user.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Value::Object(for_user) = for_user {
                for_user.insert(device_id.clone(), content);
            }
            sent_to.push((user.clone(), device_id.clone()));
        }
        if sent_to.is_empty() {
            return Ok(());
        }
        // The Olm ratchets moved: kept before the keys leave.
        self.save(state).await?;
        let txn = format!("nckey{}", hex::encode(rand::random::<[u8; 12]>()));
        api.send_to_device("m.room.encrypted", &txn, &Value::Object(messages))
            .await?;
        if let Some(outbound) = self.outbound.get_mut(room) {
            outbound.record.shared.extend(sent_to);
        }
        self.save(state).await?;
        Ok(())
    }
}

enum OlmRefusal {
    Api(ApiError),
    Refused(String),
}

/// A device's keys, when its self-signature holds and its ids are the ones it is listed
/// under.
fn read_device_keys(user: &str, device_id: &str, keys: &Value) -> Option<Device> {
    if str_at(keys, "/user_id") != Some(user) || str_at(keys, "/device_id") != Some(device_id) {
        return None;
    }
    let ed25519 = keys
        .get("keys")?
        .get(format!("ed25519:{device_id}"))?
        .as_str()?;
    let curve25519 = keys
        .get("keys")?
        .get(format!("curve25519:{device_id}"))?
        .as_str()?;
    let key = Ed25519PublicKey::from_base64(ed25519).ok()?;
    if !keys::verify(keys, user, &format!("ed25519:{device_id}"), &key) {
        return None;
    }
    Some(Device {
        ed25519: ed25519.to_owned(),
        curve25519: curve25519.to_owned(),
        active: true,
    })
}

fn content_relates(event: &Value) -> Option<Value> {
    event.pointer("/content/m.relates_to").cloned()
}

/// Escapes a JSON pointer segment (`~` and `/`).
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn crypto() -> Crypto {
        Crypto::new(
            PickleKey(zeroize::Zeroizing::new([7; 32])),
            "@bot:hs".into(),
            "BOT".into(),
        )
    }

    fn event(id: usize) -> Value {
        json!({"event_id": format!("${id}"), "sender": "@a:hs", "type": "m.room.encrypted",
            "content": {"algorithm": MEGOLM, "session_id": "nope", "ciphertext": "x"}})
    }

    #[test]
    fn waiting_messages_are_bounded_in_number_and_age() {
        let mut c = crypto();
        for i in 0..=PENDING_MAX {
            c.defer("!r:hs", &event(i));
        }
        assert_eq!(c.pending_count(), PENDING_MAX);
        assert_eq!(c.refused, 1, "the oldest was dropped");
        assert_eq!(str_at(&c.pending[0].event, "/event_id"), Some("$1"));
        // The same event again is not kept twice.
        c.defer("!r:hs", &event(5));
        assert_eq!(c.pending_count(), PENDING_MAX);
        c.pending[0].received_ms -= PENDING_MS + 1;
        assert!(c.retry_pending().is_empty());
        assert_eq!(c.pending_count(), PENDING_MAX - 1);
        assert_eq!(c.refused, 2);
    }

    #[test]
    fn a_session_decrypts_only_its_room_and_sender_and_no_index_twice() {
        let mut c = crypto();
        let mut outbound = GroupSession::new(MegolmConfig::version_1());
        let session = InboundGroupSession::new(&outbound.session_key(), MegolmConfig::version_1());
        let id = session.session_id();
        c.inbound.insert(
            ("!r:hs".into(), id.clone()),
            Inbound {
                session,
                record: InboundRecord {
                    pickle: String::new(),
                    room: "!r:hs".into(),
                    session_id: id.clone(),
                    sender: "@a:hs".into(),
                    sender_device: "A".into(),
                    sender_key: "k".into(),
                    seen: BTreeMap::new(),
                },
            },
        );
        let ciphertext = outbound
            .encrypt(
                json!({"type": "m.room.message", "room_id": "!r:hs",
                "content": {"msgtype": "m.text", "body": "hi"}})
                .to_string(),
            )
            .to_base64();
        let ev = |event_id: &str, sender: &str| {
            json!({"event_id": event_id, "sender": sender, "origin_server_ts": 1,
                "content": {"algorithm": MEGOLM, "session_id": id, "ciphertext": ciphertext,
                    "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}})
        };
        match c.decrypt("!r:hs", &ev("$1", "@a:hs")) {
            Decrypted::Event(e) => {
                assert_eq!(e["content"]["body"], "hi");
                assert_eq!(e["content"]["m.relates_to"]["event_id"], "$root");
            }
            other => panic!("{other:?}"),
        }
        // The same event again (a re-sync) is fine; another event at that index is not.
        assert!(matches!(
            c.decrypt("!r:hs", &ev("$1", "@a:hs")),
            Decrypted::Event(_)
        ));
        assert!(
            matches!(c.decrypt("!r:hs", &ev("$2", "@a:hs")), Decrypted::Refused(w) if w.contains("replay"))
        );
        assert!(
            matches!(c.decrypt("!r:hs", &ev("$3", "@m:hs")), Decrypted::Refused(w) if w.contains("with a session of"))
        );
        assert!(
            matches!(c.decrypt("!other:hs", &ev("$4", "@a:hs")), Decrypted::Refused(w) if w.contains("another room"))
        );
    }
}

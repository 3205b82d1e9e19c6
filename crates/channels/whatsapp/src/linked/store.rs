//! whatsapp-rust's storage [`Backend`](whatsapp_rust::store::traits::Backend) over the sealed session file.
//!
//! The whole session (Signal identities, sessions, pre-keys, sender keys, app-state keys,
//! LID↔phone mappings, device lists, the device itself …) is held in memory and written,
//! sealed, as one file after every change ([`super::seal`]). A write returns only once the
//! file on disk holds it — the library relies on that before it sends (a ratchet step that
//! was not stored must not go on the wire). Writes that arrive while one is under way are
//! coalesced into the next one, so a burst costs a few file writes, not one each.
//!
//! The cost is a rewrite of the whole file per burst, which grows with the number of
//! contacts and groups the account talks to; fine for one person's assistant, not for
//! thousands of chats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, ProtocolStore, SignalStore, TcTokenEntry,
    merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

use super::seal::{SealedFile, SessionError};

/// Sent messages kept for retry receipts, at most (as whatsapp-rust's in-memory store).
const MAX_SENT_MESSAGES: usize = 4096;

/// Byte strings as base64 in the JSON (a third the size of a list of numbers).
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }
}

/// A byte string that serializes as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Blob(#[serde(with = "b64")] Vec<u8>);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stamped {
    data: Blob,
    at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MsgSecretRow {
    secret: Blob,
    expires_at: i64,
    message_ts: i64,
}

/// Everything the library stores, as it is sealed on disk.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct SessionState {
    identities: BTreeMap<String, Blob>,
    sessions: BTreeMap<String, Blob>,
    prekeys: BTreeMap<u32, Blob>,
    signed_prekeys: BTreeMap<u32, Blob>,
    sender_keys: BTreeMap<String, Blob>,
    /// By base64 of the key id.
    sync_keys: BTreeMap<String, AppStateSyncKey>,
    latest_sync_key_id: Option<Blob>,
    versions: BTreeMap<String, HashState>,
    /// Collection → base64 of the index MAC → value MAC.
    mutation_macs: BTreeMap<String, BTreeMap<String, Blob>>,
    /// Group → device → has the sender key.
    sender_key_devices: BTreeMap<String, BTreeMap<String, bool>>,
    /// By LID user.
    lid_mappings: BTreeMap<String, LidPnMappingEntry>,
    /// Address → message id → base key.
    base_keys: BTreeMap<String, BTreeMap<String, Blob>>,
    device_lists: BTreeMap<String, DeviceListRecord>,
    group_metadata: BTreeMap<String, Blob>,
    tc_tokens: BTreeMap<String, TcTokenEntry>,
    /// Chat → message id → payload.
    sent_messages: BTreeMap<String, BTreeMap<String, Stamped>>,
    /// `chat\0sender\0id` → message.
    pending_inbound: BTreeMap<String, Stamped>,
    /// `chat\0sender\0id` → secret.
    msg_secrets: BTreeMap<String, MsgSecretRow>,
    device: Option<Device>,
}

fn triple(chat: &str, sender: &str, id: &str) -> String {
    format!("{chat}\0{sender}\0{id}")
}

fn serialization(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Serialization(Box::new(e))
}

fn io(e: SessionError) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}

/// The sealed session store.
pub struct SealedStore {
    state: Mutex<SessionState>,
    file: SealedFile,
    /// Changes made in memory so far.
    changes: AtomicU64,
    /// Held while the file is written; the changes the file on disk holds.
    written: Mutex<u64>,
}

impl SealedStore {
    /// Opens the session in `file`; an empty store when there is none yet.
    pub fn open(file: SealedFile) -> std::result::Result<SealedStore, SessionError> {
        let state = match file.read()? {
            Some(plain) => serde_json::from_slice(&plain)
                .map_err(|e| SessionError::Unreadable(format!("its contents do not parse: {e}")))?,
            None => SessionState::default(),
        };
        Ok(SealedStore {
            state: Mutex::new(state),
            file,
            changes: AtomicU64::new(0),
            written: Mutex::new(0),
        })
    }

    /// Whether the store holds a linked device (a device that has an account).
    pub async fn is_linked(&self) -> bool {
        self.state
            .lock()
            .await
            .device
            .as_ref()
            .is_some_and(|d| d.pn.is_some())
    }

    /// Changes the state with `f`, then writes the file; returns `f`'s result once the
    /// file holds the change.
    async fn change<T>(&self, f: impl FnOnce(&mut SessionState) -> T) -> Result<T> {
        let out = {
            let mut state = self.state.lock().await;
            let out = f(&mut state);
            self.changes.fetch_add(1, Ordering::SeqCst);
            out
        };
        self.persist().await?;
        Ok(out)
    }

    async fn read<T>(&self, f: impl FnOnce(&SessionState) -> T) -> T {
        f(&*self.state.lock().await)
    }

    /// Writes the file unless a write since this change already holds it.
    async fn persist(&self) -> Result<()> {
        let wanted = self.changes.load(Ordering::SeqCst);
        let mut written = self.written.lock().await;
        if *written >= wanted {
            return Ok(());
        }
        let (plain, upto) = {
            let state = self.state.lock().await;
            let upto = self.changes.load(Ordering::SeqCst);
            (serde_json::to_vec(&*state).map_err(serialization)?, upto)
        };
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.write(&plain))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
            .map_err(io)?;
        *written = upto;
        Ok(())
    }
}

#[async_trait]
impl SignalStore for SealedStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.change(|s| s.identities.insert(address.into(), Blob(key.to_vec())))
            .await
            .map(drop)
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        Ok(self
            .read(|s| s.identities.get(address).cloned())
            .await
            .and_then(|b| <[u8; 32]>::try_from(b.0).ok()))
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.change(|s| s.identities.remove(address))
            .await
            .map(drop)
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .read(|s| s.sessions.get(address).map(|b| Bytes::from(b.0.clone())))
            .await)
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.change(|s| s.sessions.insert(address.into(), Blob(session.to_vec())))
            .await
            .map(drop)
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.change(|s| {
            for (address, session) in sessions {
                s.sessions
                    .insert(address.to_string(), Blob(session.to_vec()));
            }
        })
        .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.change(|s| s.sessions.remove(address)).await.map(drop)
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        let of_user = |address: &String| {
            address
                .strip_prefix(user)
                .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
        };
        Ok(self
            .read(|s| s.sessions.keys().any(of_user) || s.identities.keys().any(of_user))
            .await)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], _uploaded: bool) -> Result<()> {
        self.change(|s| s.prekeys.insert(id, Blob(record.to_vec())))
            .await
            .map(drop)
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], _uploaded: bool) -> Result<()> {
        self.change(|s| {
            for (id, record) in keys {
                s.prekeys.insert(*id, Blob(record.to_vec()));
            }
        })
        .await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self
            .read(|s| s.prekeys.get(&id).map(|b| Bytes::from(b.0.clone())))
            .await)
    }

    async fn mark_prekeys_uploaded(&self, _ids: &[u32]) -> Result<()> {
        // The upload flag is not kept (as in whatsapp-rust's in-memory store); what matters
        // is that a removed pre-key is not brought back, which doing nothing ensures.
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.change(|s| s.prekeys.remove(&id)).await.map(drop)
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        Ok(self
            .read(|s| s.prekeys.keys().next_back().copied().unwrap_or(0))
            .await)
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.change(|s| s.signed_prekeys.insert(id, Blob(record.to_vec())))
            .await
            .map(drop)
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read(|s| s.signed_prekeys.get(&id).map(|b| b.0.clone()))
            .await)
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        Ok(self
            .read(|s| {
                s.signed_prekeys
                    .iter()
                    .map(|(id, b)| (*id, b.0.clone()))
                    .collect()
            })
            .await)
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.change(|s| s.signed_prekeys.remove(&id))
            .await
            .map(drop)
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.change(|s| s.sender_keys.insert(address.into(), Blob(record.to_vec())))
            .await
            .map(drop)
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.change(|s| {
            for (address, record) in sender_keys {
                s.sender_keys
                    .insert(address.to_string(), Blob(record.to_vec()));
            }
        })
        .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read(|s| s.sender_keys.get(address).map(|b| b.0.clone()))
            .await)
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.change(|s| s.sender_keys.remove(address))
            .await
            .map(drop)
    }
}

#[async_trait]
impl AppSyncStore for SealedStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        let id = b64::encode(key_id);
        Ok(self.read(|s| s.sync_keys.get(&id).cloned()).await)
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.change(|s| {
            s.sync_keys.insert(b64::encode(key_id), key);
            s.latest_sync_key_id = Some(Blob(key_id.to_vec()));
        })
        .await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        Ok(self
            .read(|s| s.versions.get(name).cloned().unwrap_or_default())
            .await)
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.change(|s| s.versions.insert(name.into(), state))
            .await
            .map(drop)
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        _version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        self.change(|s| {
            let macs = s.mutation_macs.entry(name.into()).or_default();
            for m in mutations {
                macs.insert(b64::encode(&m.index_mac), Blob(m.value_mac.clone()));
            }
        })
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        let index = b64::encode(index_mac);
        Ok(self
            .read(|s| {
                s.mutation_macs
                    .get(name)
                    .and_then(|m| m.get(&index))
                    .map(|b| b.0.clone())
            })
            .await)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        self.change(|s| {
            if let Some(macs) = s.mutation_macs.get_mut(name) {
                for index in index_macs {
                    macs.remove(&b64::encode(index));
                }
            }
        })
        .await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.change(|s| s.mutation_macs.remove(name))
            .await
            .map(drop)
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read(|s| s.latest_sync_key_id.as_ref().map(|b| b.0.clone()))
            .await)
    }
}

#[async_trait]
impl ProtocolStore for SealedStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .read(|s| {
                s.sender_key_devices
                    .get(group_jid)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unwrap_or_default()
            })
            .await)
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        self.change(|s| {
            let devices = s.sender_key_devices.entry(group_jid.into()).or_default();
            for (device, has_key) in entries {
                devices.insert((*device).to_string(), *has_key);
            }
        })
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.change(|s| s.sender_key_devices.remove(group_jid))
            .await
            .map(drop)
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        self.change(|s| {
            for devices in s.sender_key_devices.values_mut() {
                devices.retain(|jid, _| !device_jids.contains(&jid.as_str()));
            }
        })
        .await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.change(|s| s.sender_key_devices.clear()).await
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        Ok(self.read(|s| s.lid_mappings.get(lid).cloned()).await)
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        // The newest mapping wins when a number was seen with more than one LID.
        Ok(self
            .read(|s| {
                s.lid_mappings
                    .values()
                    .filter(|e| e.phone_number == phone)
                    .max_by_key(|e| e.updated_at)
                    .cloned()
            })
            .await)
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.change(|s| {
            // A number maps to one LID: an older LID for the same number goes.
            s.lid_mappings
                .retain(|lid, e| e.phone_number != entry.phone_number || *lid == entry.lid);
            s.lid_mappings.insert(entry.lid.clone(), entry.clone());
        })
        .await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        Ok(self
            .read(|s| s.lid_mappings.values().cloned().collect())
            .await)
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.change(|s| {
            s.base_keys
                .entry(address.into())
                .or_default()
                .insert(message_id.into(), Blob(base_key.to_vec()))
        })
        .await
        .map(drop)
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .read(|s| {
                s.base_keys
                    .get(address)
                    .and_then(|m| m.get(message_id))
                    .is_some_and(|b| b.0 == current_base_key)
            })
            .await)
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.change(|s| {
            if let Some(keys) = s.base_keys.get_mut(address) {
                keys.remove(message_id);
                if keys.is_empty() {
                    s.base_keys.remove(address);
                }
            }
        })
        .await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.change(|s| s.device_lists.insert(record.user.clone(), record))
            .await
            .map(drop)
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        self.change(|s| {
            for record in records {
                s.device_lists.insert(record.user.clone(), record);
            }
        })
        .await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        Ok(self.read(|s| s.device_lists.get(user).cloned()).await)
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.change(|s| s.device_lists.remove(user)).await.map(drop)
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read(|s| s.group_metadata.get(group_jid).map(|b| b.0.clone()))
            .await)
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.change(|s| {
            s.group_metadata
                .insert(group_jid.into(), Blob(blob.to_vec()))
        })
        .await
        .map(drop)
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.change(|s| s.group_metadata.remove(group_jid))
            .await
            .map(drop)
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        Ok(self.read(|s| s.tc_tokens.get(jid).cloned()).await)
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.change(|s| s.tc_tokens.insert(jid.into(), entry.clone()))
            .await
            .map(drop)
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.change(|s| s.tc_tokens.remove(jid)).await.map(drop)
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        Ok(self.read(|s| s.tc_tokens.keys().cloned().collect()).await)
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        self.change(|s| {
            let before = s.tc_tokens.len();
            // A row stays while the received token or our own issue is still fresh.
            s.tc_tokens.retain(|_, e| {
                let token_live = !e.token.is_empty() && e.token_timestamp >= token_cutoff;
                let sender_live = e.sender_timestamp.is_some_and(|t| t >= sender_cutoff);
                token_live || sender_live
            });
            count(before - s.tc_tokens.len())
        })
        .await
    }

    async fn touch_tc_token_sender_timestamp(&self, jid: &str, at: i64) -> Result<()> {
        self.change(|s| {
            let entry = s.tc_tokens.entry(jid.into()).or_insert(TcTokenEntry {
                token: Vec::new(),
                token_timestamp: at,
                sender_timestamp: None,
            });
            entry.sender_timestamp = Some(entry.sender_timestamp.map_or(at, |t| t.max(at)));
        })
        .await
    }

    async fn store_received_tc_token(&self, jid: &str, token: &[u8], at: i64) -> Result<()> {
        self.change(|s| match s.tc_tokens.get_mut(jid) {
            // Newer wins; a placeholder never blocks the first real token.
            Some(e) if e.token.is_empty() || at >= e.token_timestamp => {
                e.token = token.to_vec();
                e.token_timestamp = at;
            }
            Some(_) => {}
            None => {
                s.tc_tokens.insert(
                    jid.into(),
                    TcTokenEntry {
                        token: token.to_vec(),
                        token_timestamp: at,
                        sender_timestamp: None,
                    },
                );
            }
        })
        .await
    }

    async fn store_sent_message(&self, chat: &str, id: &str, payload: &[u8]) -> Result<()> {
        let now = now_secs();
        self.change(|s| {
            trim_sent_messages(s);
            s.sent_messages.entry(chat.into()).or_default().insert(
                id.into(),
                Stamped {
                    data: Blob(payload.to_vec()),
                    at: now,
                },
            );
        })
        .await
    }

    async fn take_sent_message(&self, chat: &str, id: &str) -> Result<Option<Vec<u8>>> {
        self.change(|s| {
            let taken = s.sent_messages.get_mut(chat).and_then(|m| m.remove(id));
            if s.sent_messages.get(chat).is_some_and(BTreeMap::is_empty) {
                s.sent_messages.remove(chat);
            }
            taken.map(|e| e.data.0)
        })
        .await
    }

    async fn delete_expired_sent_messages(&self, cutoff: i64) -> Result<u32> {
        self.change(|s| {
            let mut removed = 0;
            for messages in s.sent_messages.values_mut() {
                let before = messages.len();
                messages.retain(|_, e| e.at >= cutoff);
                removed += before - messages.len();
            }
            s.sent_messages.retain(|_, m| !m.is_empty());
            count(removed)
        })
        .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let now = now_secs();
        self.change(|s| {
            s.pending_inbound.insert(
                triple(chat, sender, id),
                Stamped {
                    data: Blob(message.to_vec()),
                    at: now,
                },
            )
        })
        .await
        .map(drop)
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let key = triple(chat, sender, id);
        Ok(self
            .read(|s| s.pending_inbound.get(&key).map(|e| e.data.0.clone()))
            .await)
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        let key = triple(chat, sender, id);
        self.change(|s| s.pending_inbound.remove(&key))
            .await
            .map(drop)
    }

    async fn delete_expired_pending_inbound(&self, cutoff: i64) -> Result<u32> {
        self.change(|s| {
            let before = s.pending_inbound.len();
            s.pending_inbound.retain(|_, e| e.at >= cutoff);
            count(before - s.pending_inbound.len())
        })
        .await
    }
}

/// Drops the oldest sent messages once there are too many (a memory bound; the library's
/// keepalive sweep expires them by age).
fn trim_sent_messages(s: &mut SessionState) {
    let total: usize = s.sent_messages.values().map(BTreeMap::len).sum();
    if total < MAX_SENT_MESSAGES {
        return;
    }
    let mut ages: Vec<(i64, String, String)> = s
        .sent_messages
        .iter()
        .flat_map(|(chat, m)| m.iter().map(|(id, e)| (e.at, chat.clone(), id.clone())))
        .collect();
    ages.sort_unstable();
    for (_, chat, id) in ages.into_iter().take(total - MAX_SENT_MESSAGES * 3 / 4) {
        if let Some(messages) = s.sent_messages.get_mut(&chat) {
            messages.remove(&id);
        }
    }
    s.sent_messages.retain(|_, m| !m.is_empty());
}

#[async_trait]
impl MsgSecretStore for SealedStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        self.change(|s| {
            for e in entries {
                let key = triple(&e.chat, &e.sender, &e.msg_id);
                let row = s.msg_secrets.entry(key).or_insert(MsgSecretRow {
                    secret: Blob(Vec::new()),
                    expires_at: e.expires_at,
                    message_ts: e.message_ts,
                });
                row.secret = Blob(e.secret.to_vec());
                row.expires_at = merge_msg_secret_expiry(row.expires_at, e.expires_at);
                row.message_ts = merge_msg_secret_message_ts(row.message_ts, e.message_ts);
            }
        })
        .await?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        let key = triple(chat, sender, msg_id);
        Ok(self
            .read(|s| {
                s.msg_secrets
                    .get(&key)
                    .map(|r| (r.secret.0.clone(), r.message_ts))
            })
            .await)
    }

    async fn delete_expired_msg_secrets(&self, cutoff: i64) -> Result<u32> {
        self.change(|s| {
            let before = s.msg_secrets.len();
            s.msg_secrets
                .retain(|_, r| r.expires_at == 0 || r.expires_at > cutoff);
            count(before - s.msg_secrets.len())
        })
        .await
    }
}

#[async_trait]
impl DeviceStore for SealedStore {
    async fn save(&self, device: &Device) -> Result<()> {
        self.change(|s| s.device = Some(device.clone())).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        Ok(self.read(|s| s.device.clone()).await)
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.read(|s| s.device.is_some()).await)
    }

    async fn create(&self) -> Result<i32> {
        // One file holds one device.
        self.change(|s| {
            if s.device.is_none() {
                s.device = Some(Device::new());
            }
        })
        .await?;
        Ok(1)
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn now_secs() -> i64 {
    nanoclaw_channel::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linked::seal::SessionKey;

    fn store_at(dir: &std::path::Path, key: &SessionKey) -> SealedStore {
        SealedStore::open(SealedFile::new(dir.join("session"), key.clone())).unwrap()
    }

    #[tokio::test]
    async fn what_the_library_stores_is_there_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::generate();
        {
            let store = store_at(dir.path(), &key);
            assert!(!store.exists().await.unwrap());
            store.create().await.unwrap();
            store
                .put_identity("123@s.whatsapp.net:0", [7; 32])
                .await
                .unwrap();
            store
                .put_session("123@s.whatsapp.net:0", b"ratchet")
                .await
                .unwrap();
            store
                .put_sessions_batch(&[(Arc::from("456.0"), Bytes::from_static(b"other"))])
                .await
                .unwrap();
            store
                .store_prekeys_batch(
                    &[
                        (5, Bytes::from_static(b"p5")),
                        (9, Bytes::from_static(b"p9")),
                    ],
                    false,
                )
                .await
                .unwrap();
            store.remove_prekey(5).await.unwrap();
            store.store_signed_prekey(1, b"signed").await.unwrap();
            store.put_sender_key("g@g.us::123", b"sk").await.unwrap();
            store
                .set_sync_key(
                    b"\x00\x01",
                    AppStateSyncKey {
                        key_data: vec![1, 2],
                        fingerprint: vec![3],
                        timestamp: 4,
                    },
                )
                .await
                .unwrap();
            store
                .put_mutation_macs(
                    "regular",
                    1,
                    &[AppStateMutationMAC {
                        index_mac: vec![9; 32],
                        value_mac: vec![8; 32],
                    }],
                )
                .await
                .unwrap();
            store
                .put_lid_mapping(&LidPnMappingEntry {
                    lid: "100000012345678".into(),
                    phone_number: "15550001111".into(),
                    created_at: 1,
                    updated_at: 1,
                    learning_source: "usync".into(),
                })
                .await
                .unwrap();
            store
                .store_sent_message("123@s.whatsapp.net", "M1", b"payload")
                .await
                .unwrap();
            store
                .store_pending_inbound("chat", "sender", "id1", b"inbound")
                .await
                .unwrap();
            store
                .put_msg_secret("chat", "me", "M1", &[3; 32])
                .await
                .unwrap();
        }
        let store = store_at(dir.path(), &key);
        assert!(store.exists().await.unwrap());
        assert_eq!(
            store.load_identity("123@s.whatsapp.net:0").await.unwrap(),
            Some([7; 32])
        );
        assert_eq!(
            store
                .get_session("123@s.whatsapp.net:0")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"ratchet"[..])
        );
        assert!(store.has_session("456.0").await.unwrap());
        assert!(store.has_signal_state_for_user("123").await.unwrap());
        assert!(!store.has_signal_state_for_user("12").await.unwrap());
        assert!(store.load_prekey(5).await.unwrap().is_none());
        assert_eq!(store.get_max_prekey_id().await.unwrap(), 9);
        assert_eq!(
            store.load_all_signed_prekeys().await.unwrap(),
            vec![(1, b"signed".to_vec())]
        );
        assert_eq!(
            store.get_sender_key("g@g.us::123").await.unwrap().unwrap(),
            b"sk"
        );
        assert_eq!(
            store.get_latest_sync_key_id().await.unwrap().unwrap(),
            b"\x00\x01"
        );
        assert_eq!(
            store
                .get_sync_key(b"\x00\x01")
                .await
                .unwrap()
                .unwrap()
                .key_data,
            vec![1, 2]
        );
        assert_eq!(
            store.get_mutation_mac("regular", &[9; 32]).await.unwrap(),
            Some(vec![8; 32])
        );
        assert_eq!(
            store
                .get_pn_mapping("15550001111")
                .await
                .unwrap()
                .unwrap()
                .lid,
            "100000012345678"
        );
        assert_eq!(
            store
                .take_sent_message("123@s.whatsapp.net", "M1")
                .await
                .unwrap()
                .unwrap(),
            b"payload"
        );
        assert!(
            store
                .take_sent_message("123@s.whatsapp.net", "M1")
                .await
                .unwrap()
                .is_none(),
            "taken once"
        );
        assert_eq!(
            store
                .get_pending_inbound("chat", "sender", "id1")
                .await
                .unwrap()
                .unwrap(),
            b"inbound"
        );
        assert_eq!(
            store.get_msg_secret("chat", "me", "M1").await.unwrap(),
            Some(vec![3; 32])
        );
    }

    #[tokio::test]
    async fn a_wrong_key_or_a_changed_file_is_refused_not_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::generate();
        let store = store_at(dir.path(), &key);
        store.create().await.unwrap();
        drop(store);
        let other = SealedStore::open(SealedFile::new(
            dir.path().join("session"),
            SessionKey::generate(),
        ));
        let e = other.err().unwrap().to_string();
        assert!(
            e.contains("the WhatsApp session could not be opened"),
            "{e}"
        );
        let path = dir.path().join("session");
        let mut raw = std::fs::read(&path).unwrap();
        raw[30] ^= 0x40;
        std::fs::write(&path, raw).unwrap();
        assert!(SealedStore::open(SealedFile::new(path, key)).is_err());
    }

    #[tokio::test]
    async fn a_newer_lid_for_a_number_replaces_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), &SessionKey::generate());
        for (lid, at) in [("111", 1), ("222", 2)] {
            store
                .put_lid_mapping(&LidPnMappingEntry {
                    lid: lid.into(),
                    phone_number: "1555".into(),
                    created_at: at,
                    updated_at: at,
                    learning_source: "usync".into(),
                })
                .await
                .unwrap();
        }
        assert_eq!(
            store.get_pn_mapping("1555").await.unwrap().unwrap().lid,
            "222"
        );
        assert!(store.get_lid_mapping("111").await.unwrap().is_none());
        assert_eq!(store.get_all_lid_mappings().await.unwrap().len(), 1);
    }
}

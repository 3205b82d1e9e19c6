//! What the encryption keeps across restarts, in the channel's state store: every secret
//! (the Olm account, Olm and Megolm sessions) as a vodozemac pickle encrypted with the
//! vault's pickle key; public facts (device keys, which devices a session was shared
//! with, messages waiting for their key) as plain JSON.

use std::collections::{BTreeMap, BTreeSet};

use nanoclaw_channel::{ChannelError, SecretSource};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// The vault secret holding the pickle key (64 hex digits), made on first start.
pub const PICKLE_KEY_SECRET: &str = "matrix.pickle_key";
/// The state store key of [`Persisted`].
pub const STATE_KEY: &str = "e2ee";

/// The 32-byte key vodozemac encrypts pickles with.
pub struct PickleKey(pub Zeroizing<[u8; 32]>);

impl PickleKey {
    /// The key from the vault, made and stored there first when there is none.
    pub async fn load_or_create(secrets: &dyn SecretSource) -> Result<PickleKey, ChannelError> {
        if let Some(secret) = secrets.secret(PICKLE_KEY_SECRET).await? {
            let bytes = hex::decode(secret.expose_secret().trim()).ok();
            return bytes
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(|k| PickleKey(Zeroizing::new(k)))
                .ok_or_else(|| {
                    ChannelError::Setup(format!(
                        "the vault secret {PICKLE_KEY_SECRET} is not 64 hex digits; it unlocks \
                         the Matrix encryption keys, so restore it (a new one means a new \
                         device: a new access token)"
                    ))
                });
        }
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        secrets
            .put_secret(
                PICKLE_KEY_SECRET,
                SecretString::from(hex::encode(key.as_ref())),
            )
            .await?;
        tracing::info!(
            secret = PICKLE_KEY_SECRET,
            "matrix: made a new pickle key in the vault"
        );
        Ok(PickleKey(key))
    }
}

/// A device's public keys, as its owner signed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub ed25519: String,
    pub curve25519: String,
    /// Still listed by the homeserver (a removed device keeps its keys here, so the same
    /// id coming back with other keys is refused).
    pub active: bool,
}

/// An inbound Megolm session and who gave it (checked when it arrived over Olm).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundRecord {
    pub pickle: String,
    pub room: String,
    pub session_id: String,
    pub sender: String,
    pub sender_device: String,
    pub sender_key: String,
    /// Message index -> the event that used it (a second event at an index is a replay).
    pub seen: BTreeMap<u32, String>,
}

/// The room's outbound Megolm session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboundRecord {
    pub pickle: String,
    pub created_ms: i64,
    pub sent: u64,
    /// `(user, device)` it was shared with.
    pub shared: BTreeSet<(String, String)>,
}

/// A message whose room key has not arrived yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub room: String,
    pub event: Value,
    pub received_ms: i64,
}

/// Everything, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub user: String,
    pub device: String,
    /// The encrypted account pickle.
    pub account: String,
    /// Whether the device keys are on the homeserver.
    pub uploaded: bool,
    /// Olm sessions (encrypted pickles) by the other device's curve25519 key.
    pub olm: BTreeMap<String, Vec<String>>,
    pub inbound: Vec<InboundRecord>,
    /// Outbound sessions by room.
    pub outbound: BTreeMap<String, OutboundRecord>,
    /// user -> device id -> keys.
    pub devices: BTreeMap<String, BTreeMap<String, Device>>,
    pub pending: Vec<Pending>,
}

//! In-memory ledger, state and secrets, for adapters' unit tests and tools that need no
//! durability.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::channel::ChannelError;
use crate::ledger::{PartState, SendLedger};
use crate::setup::{SecretSource, StateStore};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
pub struct MemoryLedger(Mutex<HashMap<(String, u32), PartState>>);

#[async_trait]
impl SendLedger for MemoryLedger {
    async fn part(&self, key: &str, part: u32) -> Result<PartState, ChannelError> {
        Ok(lock(&self.0)
            .get(&(key.to_string(), part))
            .cloned()
            .unwrap_or(PartState::Unsent))
    }
    async fn begin(&self, key: &str, part: u32) -> Result<(), ChannelError> {
        lock(&self.0).insert((key.to_string(), part), PartState::InDoubt);
        Ok(())
    }
    async fn sent(&self, key: &str, part: u32, id: Option<&str>) -> Result<(), ChannelError> {
        lock(&self.0).insert(
            (key.to_string(), part),
            PartState::Sent(id.map(str::to_string)),
        );
        Ok(())
    }
    async fn abandon(&self, key: &str, part: u32) -> Result<(), ChannelError> {
        let mut map = lock(&self.0);
        if map.get(&(key.to_string(), part)) == Some(&PartState::InDoubt) {
            map.remove(&(key.to_string(), part));
        }
        Ok(())
    }
}

/// State in memory: each value with when it was written.
#[derive(Debug, Default)]
pub struct MemoryState(Mutex<HashMap<String, (String, std::time::Instant)>>);

impl MemoryState {
    /// Every key held, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.0).keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Makes `key` look written `age` ago (for tests of pruning).
    pub fn backdate(&self, key: &str, age: std::time::Duration) {
        if let Some((_, at)) = lock(&self.0).get_mut(key)
            && let Some(earlier) = std::time::Instant::now().checked_sub(age)
        {
            *at = earlier;
        }
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn get(&self, key: &str) -> Result<Option<String>, ChannelError> {
        Ok(lock(&self.0).get(key).map(|(value, _)| value.clone()))
    }
    async fn put(&self, key: &str, value: &str) -> Result<(), ChannelError> {
        lock(&self.0).insert(
            key.to_string(),
            (value.to_string(), std::time::Instant::now()),
        );
        Ok(())
    }
    async fn forget_older(
        &self,
        prefix: &str,
        age: std::time::Duration,
    ) -> Result<usize, ChannelError> {
        let mut map = lock(&self.0);
        let before = map.len();
        map.retain(|key, (_, at)| !(key.starts_with(prefix) && at.elapsed() > age));
        Ok(before - map.len())
    }
}

#[derive(Default)]
pub struct MemorySecrets(Mutex<HashMap<String, String>>);

impl MemorySecrets {
    pub fn with(pairs: &[(&str, &str)]) -> MemorySecrets {
        MemorySecrets(Mutex::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }
}

#[async_trait]
impl SecretSource for MemorySecrets {
    async fn secret(&self, name: &str) -> Result<Option<SecretString>, ChannelError> {
        Ok(lock(&self.0)
            .get(name)
            .map(|v| SecretString::from(v.clone())))
    }
    async fn put_secret(&self, name: &str, value: SecretString) -> Result<(), ChannelError> {
        use secrecy::ExposeSecret;
        lock(&self.0).insert(name.to_string(), value.expose_secret().to_string());
        Ok(())
    }
}

/// A host for adapters' tests that stores every message: each inbound message is settled
/// as [`crate::RouteOutcome::Accepted`] and passed on to the returned receiver (ack taken).
pub fn accepting_host() -> (
    crate::InboundSink,
    tokio::sync::mpsc::Receiver<crate::InboundEvent>,
) {
    let (sink, mut raw) = tokio::sync::mpsc::channel(64);
    let (tx, events) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(event) = raw.recv().await {
            if let crate::ChannelEvent::Inbound(mut event) = event {
                if let Some(ack) = event.ack.take() {
                    let _ = ack.send(crate::RouteOutcome::Accepted);
                }
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    });
    (sink, events)
}

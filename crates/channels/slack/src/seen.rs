//! Messages seen recently, by (channel, ts).
//!
//! Slack sends one message twice when the app subscribes to both `app_mention` and
//! `message.channels` (two envelopes), and again when an envelope was not acknowledged in
//! time. The host deduplicates by platform id anyway; this keeps the second copy from
//! reaching it at all, and lets its envelope be acknowledged once the first copy is settled.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::watch;

/// How many messages are remembered.
const CAPACITY: usize = 4096;

/// Where the first copy of a message stands: `None` while the host decides, then whether
/// it was settled.
pub type Outcome = watch::Receiver<Option<bool>>;

pub enum Check {
    /// First time: deliver it and report the outcome with [`Seen::settle`].
    New,
    /// Seen before; acknowledge this copy once the outcome says settled.
    Duplicate(Outcome),
}

#[derive(Default)]
pub struct Seen(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    map: HashMap<String, watch::Sender<Option<bool>>>,
    order: VecDeque<String>,
}

impl Seen {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn check(&self, id: &str) -> Check {
        let mut inner = self.lock();
        if let Some(tx) = inner.map.get(id) {
            return Check::Duplicate(tx.subscribe());
        }
        inner.map.insert(id.to_string(), watch::Sender::new(None));
        inner.order.push_back(id.to_string());
        while inner.order.len() > CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
        Check::New
    }

    /// The host answered for the first copy. A message it could not store is forgotten, so
    /// Slack's redelivery reaches the host again.
    pub fn settle(&self, id: &str, settled: bool) {
        let mut inner = self.lock();
        if let Some(tx) = inner.map.get(id) {
            tx.send_replace(Some(settled));
        }
        if !settled {
            inner.map.remove(id);
            inner.order.retain(|k| k != id);
        }
    }
}

/// Waits for the first copy's outcome: whether a duplicate may be acknowledged.
pub async fn settled(mut outcome: Outcome) -> bool {
    matches!(
        outcome.wait_for(Option::is_some).await.map(|v| *v),
        Ok(Some(true))
    )
}

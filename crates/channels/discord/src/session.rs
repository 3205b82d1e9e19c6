//! The gateway session that a reconnect — or a restarted host — resumes: its id, the
//! `resume_gateway_url` READY gave, and the last sequence number the host has settled.
//! Kept in the channel's state store so a host restarted within Discord's resume window
//! gets the messages that arrived while it was away (replayed on RESUMED) instead of
//! losing them to a fresh IDENTIFY.

use std::sync::Arc;

use nanoclaw_channel::StateStore;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

const KEY: &str = "gateway_session";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub resume_url: String,
    /// The last dispatch the host is done with; a resume replays everything after it.
    pub seq: Option<u64>,
}

pub struct SessionStore {
    state: Arc<dyn StateStore>,
    /// `None` inside: no session (identify). Outer `None`: not loaded from the store yet.
    current: Mutex<Option<Option<Session>>>,
}

impl SessionStore {
    pub fn new(state: Arc<dyn StateStore>) -> SessionStore {
        SessionStore {
            state,
            current: Mutex::new(None),
        }
    }

    /// The session to resume, if any (read from the state store the first time).
    pub async fn current(&self) -> Option<Session> {
        let mut current = self.current.lock().await;
        if current.is_none() {
            let stored = match self.state.get(KEY).await {
                Ok(Some(text)) if text.is_empty() => None,
                Ok(Some(text)) => serde_json::from_str(&text)
                    .map_err(|e| tracing::warn!(error = %e, "discord: stored gateway session unreadable; identifying afresh"))
                    .ok(),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "discord: reading the stored gateway session");
                    None
                }
            };
            *current = Some(stored);
        }
        current.clone().flatten()
    }

    /// READY: a new session starts.
    pub async fn begin(&self, session_id: &str, resume_url: &str) {
        let session = Session {
            session_id: session_id.to_string(),
            resume_url: resume_url.to_string(),
            seq: None,
        };
        self.store(Some(session)).await;
    }

    /// The host is done with dispatch `seq` of `session_id`.
    pub async fn settled(&self, session_id: &str, seq: u64) {
        let session = {
            let current = self.current.lock().await;
            match current.clone().flatten() {
                Some(mut s) if s.session_id == session_id && s.seq.is_none_or(|old| seq > old) => {
                    s.seq = Some(seq);
                    s
                }
                _ => return,
            }
        };
        self.store(Some(session)).await;
    }

    /// The session cannot be resumed (invalid session, 4007, 4009): identify afresh.
    pub async fn clear(&self) {
        self.store(None).await;
    }

    async fn store(&self, session: Option<Session>) {
        let text = session
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok())
            .unwrap_or_default();
        *self.current.lock().await = Some(session);
        if let Err(e) = self.state.put(KEY, &text).await {
            tracing::warn!(error = %e, "discord: saving the gateway session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_channel::memory::MemoryState;

    #[tokio::test]
    async fn a_settled_sequence_survives_a_restart_and_never_goes_back() {
        let state = Arc::new(MemoryState::default());
        let store = SessionStore::new(state.clone());
        assert_eq!(store.current().await, None);
        store.begin("s1", "wss://resume").await;
        store.settled("s1", 5).await;
        store.settled("s1", 3).await;
        store.settled("other", 9).await;
        let again = SessionStore::new(state.clone());
        let session = again.current().await.unwrap();
        assert_eq!(session.seq, Some(5));
        assert_eq!(session.resume_url, "wss://resume");
        again.clear().await;
        assert_eq!(SessionStore::new(state).current().await, None);
    }
}

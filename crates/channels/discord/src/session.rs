//! The gateway session that a reconnect — or a restarted host — resumes: its id, the
//! `resume_gateway_url` READY gave, and the last sequence number the host has settled.
//! Kept in the channel's state store so a host restarted within Discord's resume window
//! gets the messages that arrived while it was away (replayed on RESUMED) instead of
//! losing them to a fresh IDENTIFY.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::StateStore;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

const KEY: &str = "gateway_session";
/// A settled sequence is saved at most this long after it settled…
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// …or once this many dispatches settled since the last save, whichever comes first.
const SAVE_AFTER: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub resume_url: String,
    /// The last dispatch the host is done with; a resume replays everything after it.
    pub seq: Option<u64>,
}

/// The session as known in memory, and how far the saved copy lags behind it.
struct Known {
    /// `None` inside: no session (identify). Outer `None`: not loaded from the store yet.
    session: Option<Option<Session>>,
    /// Settled dispatches not saved yet.
    unsaved: u32,
    last_save: Instant,
}

/// Reconnects resume from the sequence in memory, which follows every settled dispatch.
/// The state store gets it less often (see [`SAVE_EVERY`]): writing each of a thousand
/// messages a second would cost the host a store write per message. A crash therefore
/// resumes from a slightly older sequence and Discord replays up to a second (or 100
/// dispatches) more; the host stores a message once by its id, so the replayed ones come
/// back as duplicates and nothing is shown twice. A clean stop or a closed connection
/// saves at once ([`SessionStore::flush`]).
pub struct SessionStore {
    state: Arc<dyn StateStore>,
    known: Mutex<Known>,
}

impl SessionStore {
    pub fn new(state: Arc<dyn StateStore>) -> SessionStore {
        SessionStore {
            state,
            known: Mutex::new(Known {
                session: None,
                unsaved: 0,
                last_save: Instant::now(),
            }),
        }
    }

    /// The session to resume, if any (read from the state store the first time).
    pub async fn current(&self) -> Option<Session> {
        let mut known = self.known.lock().await;
        if known.session.is_none() {
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
            known.session = Some(stored);
        }
        known.session.clone().flatten()
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

    /// The host is done with dispatch `seq` of `session_id`. Saved when due.
    pub async fn settled(&self, session_id: &str, seq: u64) {
        let mut known = self.known.lock().await;
        match known.session.as_mut().and_then(Option::as_mut) {
            Some(s) if s.session_id == session_id && s.seq.is_none_or(|old| seq > old) => {
                s.seq = Some(seq);
            }
            _ => return,
        }
        known.unsaved += 1;
        if known.unsaved >= SAVE_AFTER || known.last_save.elapsed() >= SAVE_EVERY {
            self.save(&mut known).await;
        }
    }

    /// Saves a settled sequence that has waited [`SAVE_EVERY`] (called on a timer).
    pub async fn save_if_stale(&self) {
        let mut known = self.known.lock().await;
        if known.unsaved > 0 && known.last_save.elapsed() >= SAVE_EVERY {
            self.save(&mut known).await;
        }
    }

    /// Saves what is not saved yet (a clean stop, a closed connection).
    pub async fn flush(&self) {
        let mut known = self.known.lock().await;
        if known.unsaved > 0 {
            self.save(&mut known).await;
        }
    }

    /// The session cannot be resumed (invalid session, 4007, 4009): identify afresh.
    pub async fn clear(&self) {
        self.store(None).await;
    }

    async fn store(&self, session: Option<Session>) {
        let mut known = self.known.lock().await;
        known.session = Some(session);
        self.save(&mut known).await;
    }

    /// Writes the session in memory to the state store. The lock stays held so that two
    /// saves cannot land in the wrong order.
    async fn save(&self, known: &mut Known) {
        let text = known
            .session
            .clone()
            .flatten()
            .and_then(|s| serde_json::to_string(&s).ok())
            .unwrap_or_default();
        known.unsaved = 0;
        known.last_save = Instant::now();
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
        store.flush().await;
        let again = SessionStore::new(state.clone());
        let session = again.current().await.unwrap();
        assert_eq!(session.seq, Some(5));
        assert_eq!(session.resume_url, "wss://resume");
        again.clear().await;
        assert_eq!(SessionStore::new(state).current().await, None);
    }

    /// The sequence saved in `state`, as a restarted host would resume from it.
    async fn saved_seq(state: &Arc<MemoryState>) -> Option<u64> {
        SessionStore::new(state.clone()).current().await?.seq
    }

    #[tokio::test(start_paused = true)]
    async fn settled_sequences_are_saved_every_second_or_hundred_and_on_flush() {
        let state = Arc::new(MemoryState::default());
        let store = SessionStore::new(state.clone());
        store.begin("s1", "wss://resume").await;
        for seq in 1..=99 {
            store.settled("s1", seq).await;
        }
        assert_eq!(saved_seq(&state).await, None, "not saved per message");
        assert_eq!(
            store.current().await.unwrap().seq,
            Some(99),
            "resumes use memory"
        );
        store.settled("s1", 100).await;
        assert_eq!(saved_seq(&state).await, Some(100), "the hundredth saves");

        store.settled("s1", 101).await;
        store.save_if_stale().await;
        assert_eq!(saved_seq(&state).await, Some(100), "not a second old yet");
        tokio::time::advance(SAVE_EVERY).await;
        store.save_if_stale().await;
        assert_eq!(saved_seq(&state).await, Some(101), "saved after a second");

        store.settled("s1", 102).await;
        store.settled("s1", 103).await;
        store.flush().await;
        assert_eq!(saved_seq(&state).await, Some(103), "a clean stop saves");
    }
}

//! Truthful channel health: what `nanoclaw channel status` shows.

use serde::{Deserialize, Serialize};

use crate::now_ms;

/// Where a channel's link to its platform stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Started, not yet connected.
    Starting,
    /// Connected and receiving.
    Connected,
    /// Lost the connection; trying again with backoff.
    Reconnecting,
    /// Stopped trying: the credentials were refused or the receive loop ended. The host
    /// restarts it with backoff.
    Down,
    /// Stopped on purpose.
    Stopped,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Starting => "starting",
            LinkState::Connected => "connected",
            LinkState::Reconnecting => "reconnecting",
            LinkState::Down => "down",
            LinkState::Stopped => "stopped",
        }
    }
}

/// A snapshot of a channel's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub state: LinkState,
    /// When `state` began (unix ms).
    pub since: i64,
    /// The last event received from the platform (unix ms).
    pub last_event: Option<i64>,
    /// The last error, kept after recovery so the owner can see what happened.
    pub last_error: Option<String>,
    /// When `last_error` happened (unix ms).
    pub last_error_at: Option<i64>,
    /// Reconnects since the channel started.
    pub reconnects: u64,
    /// What the channel says about itself beyond the link (e.g. Matrix's encryption device).
    #[serde(default)]
    pub detail: Option<String>,
}

impl Health {
    /// For channels with no remote link (the terminal): connected since now.
    pub fn always_up() -> Health {
        Health {
            state: LinkState::Connected,
            since: now_ms(),
            last_event: None,
            last_error: None,
            last_error_at: None,
            reconnects: 0,
            detail: None,
        }
    }

    /// Whether the channel is working (connected, or starting for the first time).
    pub fn is_up(&self) -> bool {
        matches!(self.state, LinkState::Connected | LinkState::Starting)
    }
}

/// Shared, updatable health; adapters keep one and report into it as things happen.
#[derive(Debug)]
pub struct HealthCell(std::sync::Mutex<Health>);

impl Default for HealthCell {
    fn default() -> Self {
        let mut health = Health::always_up();
        health.state = LinkState::Starting;
        HealthCell(std::sync::Mutex::new(health))
    }
}

impl HealthCell {
    fn update(&self, f: impl FnOnce(&mut Health)) {
        // A poisoned lock only means another thread panicked mid-update; the data is still usable.
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
    }

    fn set_state(health: &mut Health, state: LinkState) {
        if health.state != state {
            health.state = state;
            health.since = now_ms();
        }
    }

    /// Sets what [`Health::detail`] says.
    pub fn detail(&self, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(|h| h.detail = Some(detail));
    }

    pub fn snapshot(&self) -> Health {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The link works.
    pub fn connected(&self) {
        self.update(|h| Self::set_state(h, LinkState::Connected));
    }

    /// Something arrived from the platform (an event, a successful poll).
    pub fn event(&self) {
        self.update(|h| {
            h.last_event = Some(now_ms());
            Self::set_state(h, LinkState::Connected);
        });
    }

    /// The link broke; the adapter is retrying.
    pub fn reconnecting(&self, error: impl Into<String>) {
        let error = error.into();
        self.update(|h| {
            h.reconnects += 1;
            h.last_error = Some(error);
            h.last_error_at = Some(now_ms());
            Self::set_state(h, LinkState::Reconnecting);
        });
    }

    /// An error that did not break the link (a failed send, a malformed payload).
    pub fn error(&self, error: impl Into<String>) {
        let error = error.into();
        self.update(|h| {
            h.last_error = Some(error);
            h.last_error_at = Some(now_ms());
        });
    }

    /// The adapter gave up (credentials refused, loop ended).
    pub fn down(&self, error: impl Into<String>) {
        let error = error.into();
        self.update(|h| {
            h.last_error = Some(error);
            h.last_error_at = Some(now_ms());
            Self::set_state(h, LinkState::Down);
        });
    }

    pub fn stopped(&self) {
        self.update(|h| Self::set_state(h, LinkState::Stopped));
    }

    pub fn starting(&self) {
        self.update(|h| Self::set_state(h, LinkState::Starting));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_kept_after_the_link_recovers() {
        let cell = HealthCell::default();
        assert_eq!(cell.snapshot().state, LinkState::Starting);
        cell.reconnecting("connection reset");
        cell.event();
        let h = cell.snapshot();
        assert_eq!(h.state, LinkState::Connected);
        assert_eq!(h.reconnects, 1);
        assert_eq!(h.last_error.as_deref(), Some("connection reset"));
        assert!(h.last_event.is_some());
    }
}

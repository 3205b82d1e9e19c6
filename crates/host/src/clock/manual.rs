//! A clock that only moves when told to: the test double for [`Clock`](super::Clock)
//! (compiled for this crate's tests and with the `test-support` feature).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::Clock;

/// A clock that only moves when told to (tests, benchmarks; feature `test-support`).
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    moved: Notify,
}

impl ManualClock {
    /// A clock standing at `start` until moved.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
            moved: Notify::new(),
        }
    }

    /// Move the clock to `to` (never backwards) and wake sleepers.
    pub fn set(&self, to: DateTime<Utc>) {
        {
            let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
            if to > *now {
                *now = to;
            }
        }
        self.moved.notify_waiters();
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let to = self.now() + chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        self.set(to);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn sleep_until(&self, until: DateTime<Utc>) {
        loop {
            // Registered before the check, so a move between the check and the await is not lost.
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.now() >= until {
                return;
            }
            moved.await;
        }
    }
}

//! The scheduler's clock: the system's, or one the tests move by hand.
//!
//! Only scheduled tasks read this clock; everything else in the host uses real time. That is enough
//! to test schedules: a test sets the clock, and the scheduler fires exactly what is due by it.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// Wall-clock time for the scheduler.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Sleep until `until` or less; the caller checks the time again, so an early return is fine.
    async fn sleep_until(&self, until: DateTime<Utc>);
}

/// The longest single sleep of the system clock. Tokio sleeps on the monotonic clock, which stops
/// while the machine is suspended and ignores wall-clock steps; waking at least this often bounds how
/// late a run can be after either.
const MAX_SYSTEM_SLEEP: Duration = Duration::from_secs(60);

/// The system's clock.
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, until: DateTime<Utc>) {
        let wait = (until - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SYSTEM_SLEEP);
        tokio::time::sleep(wait).await;
    }
}

/// A clock that only moves when told to (tests, benchmarks).
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    moved: Notify,
}

impl ManualClock {
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

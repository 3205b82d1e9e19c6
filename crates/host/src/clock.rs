//! The scheduler's clock: the system's, or one the tests move by hand.
//!
//! Only scheduled tasks read this clock; everything else in the host uses real time. That is enough
//! to test schedules: a test sets the clock, and the scheduler fires exactly what is due by it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[cfg(any(test, feature = "test-support"))]
mod manual;
#[cfg(any(test, feature = "test-support"))]
pub use manual::ManualClock;

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

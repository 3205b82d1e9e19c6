//! Exponential backoff with jitter, for reconnects and retried sends.

use std::time::Duration;

use rand::RngExt;

/// Doubles from `initial` up to `max` on each failure, with ±20 % jitter so that many
/// channels (or many hosts) do not retry in step; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            failures: 0,
        }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let jitter = rand::rng().random_range(0.8..1.2);
        base.mul_f64(jitter).min(self.max)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(800));
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}

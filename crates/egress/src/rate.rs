//! Rate limits per secret: injections counted in a sliding one-minute window, in memory (per
//! host process; a restart starts the count afresh).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window limits are counted over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A secret over its limit: which, the limit, and when the oldest use leaves the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub secret: String,
    pub per_minute: u32,
    pub retry_after: Duration,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    uses: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Counts one use of each `(secret, per_minute)` at `now` — all or none: when any of them
    /// (with a limit > 0) already had `per_minute` uses in the last minute, nothing is counted.
    pub fn try_acquire(&self, secrets: &[(String, u32)], now: Instant) -> Result<(), OverLimit> {
        let mut uses = match self.uses.lock() {
            Ok(u) => u,
            Err(e) => e.into_inner(),
        };
        for (secret, limit) in secrets {
            if *limit == 0 {
                continue;
            }
            let q = uses.entry(secret.clone()).or_default();
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
            {
                q.pop_front();
            }
            if q.len() >= *limit as usize {
                let oldest = q.front().copied().unwrap_or(now);
                return Err(OverLimit {
                    secret: secret.clone(),
                    per_minute: *limit,
                    retry_after: RATE_WINDOW.saturating_sub(now.saturating_duration_since(oldest)),
                });
            }
        }
        for (secret, limit) in secrets {
            if *limit > 0 {
                uses.entry(secret.clone()).or_default().push_back(now);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides_and_a_refusal_counts_nothing() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        let a = vec![("a".to_owned(), 2)];
        r.try_acquire(&a, t0).unwrap();
        r.try_acquire(&a, t0 + Duration::from_secs(10)).unwrap();
        let over = r.try_acquire(&a, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(over.per_minute, 2);
        assert_eq!(over.retry_after, Duration::from_secs(40));
        // Both or neither: "b" is not counted when "a" is over.
        let both = vec![("b".to_owned(), 1), ("a".to_owned(), 2)];
        assert!(r.try_acquire(&both, t0 + Duration::from_secs(30)).is_err());
        r.try_acquire(&[("b".to_owned(), 1)], t0 + Duration::from_secs(30))
            .unwrap();
        // The first use left the window.
        r.try_acquire(&a, t0 + Duration::from_secs(60)).unwrap();
        // No limit, no count.
        for _ in 0..100 {
            r.try_acquire(&[("c".to_owned(), 0)], t0).unwrap();
        }
    }
}

//! Flood control: a token bucket every line we send passes through.
//!
//! IRC servers throttle or disconnect ("Excess Flood") a client that sends faster than they
//! allow; a 20-line reply sent at once would get the bot thrown off. The bucket lets
//! `burst` lines go at once, then one line every `1 / per_sec` seconds.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket; [`TokenBucket::take`] waits for a token.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `burst` lines at once (at least 1), `per_sec` lines a second after that (at least
    /// one line a minute).
    pub fn new(burst: u32, per_sec: f64) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        let per_sec = if per_sec.is_finite() {
            per_sec.max(1.0 / 60.0)
        } else {
            1.0
        };
        TokenBucket {
            burst,
            per_sec,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// How long until a token is free (zero: now).
    pub fn wait(&mut self) -> Duration {
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }

    /// Waits for a token and takes it.
    pub async fn take(&mut self) {
        loop {
            let wait = self.wait();
            if wait.is_zero() {
                self.tokens -= 1.0;
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_lines_are_paced() {
        let mut bucket = TokenBucket::new(3, 2.0);
        let start = Instant::now();
        for _ in 0..3 {
            bucket.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..4 {
            bucket.take().await;
        }
        // Four more at two a second: two seconds.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took <= Duration::from_millis(2100),
            "{took:?}"
        );
    }
}

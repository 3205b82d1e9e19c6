//! Per-route rate-limit buckets, from the headers Discord puts on every response
//! (<https://discord.com/developers/docs/topics/rate-limits>): `X-RateLimit-Bucket` names
//! the bucket a route shares, `X-RateLimit-Remaining` the requests left in it and
//! `X-RateLimit-Reset-After` the seconds until it refills. Buckets are per major parameter
//! (the channel), so the key is the bucket hash plus the channel id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct BucketState {
    remaining: u64,
    reset_at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// Route (e.g. `POST /channels/{id}/messages`) → the bucket hash Discord said it uses.
    route_bucket: HashMap<String, String>,
    /// (bucket hash, major parameter) → what is left.
    buckets: HashMap<(String, String), BucketState>,
    /// Until when every request waits (a global 429).
    global_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct RateLimits(Mutex<Inner>);

impl RateLimits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a request on `route` for `major` must wait before it may go out, if at all.
    pub fn wait_for(&self, route: &str, major: &str) -> Option<Duration> {
        let inner = self.lock();
        let now = Instant::now();
        let global = inner
            .global_until
            .filter(|until| *until > now)
            .map(|until| until - now);
        let bucket = inner
            .route_bucket
            .get(route)
            .and_then(|hash| inner.buckets.get(&(hash.clone(), major.to_string())))
            .filter(|b| b.remaining == 0 && b.reset_at > now)
            .map(|b| b.reset_at - now);
        match (global, bucket) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records what a response's headers say about its bucket.
    pub fn update(&self, route: &str, major: &str, headers: &HeaderMap) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(hash) = header("x-ratelimit-bucket") else {
            return;
        };
        let remaining = header("x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        let reset_after = header("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok());
        let mut inner = self.lock();
        inner
            .route_bucket
            .insert(route.to_string(), hash.to_string());
        if let (Some(remaining), Some(reset_after)) = (remaining, reset_after) {
            let reset_at = Instant::now() + secs(reset_after);
            inner.buckets.insert(
                (hash.to_string(), major.to_string()),
                BucketState {
                    remaining,
                    reset_at,
                },
            );
        }
    }

    /// A 429 with `global: true`: every route waits.
    pub fn global_block(&self, retry_after: Duration) {
        self.lock().global_until = Some(Instant::now() + retry_after);
    }
}

/// Seconds as Discord writes them (floats), clamped to something sane.
pub fn secs(value: f64) -> Duration {
    if value.is_finite() && value > 0.0 {
        Duration::from_secs_f64(value.min(86_400.0))
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(bucket: &str, remaining: &str, reset_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-bucket", HeaderValue::from_str(bucket).unwrap());
        h.insert(
            "x-ratelimit-remaining",
            HeaderValue::from_str(remaining).unwrap(),
        );
        h.insert(
            "x-ratelimit-reset-after",
            HeaderValue::from_str(reset_after).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn an_exhausted_bucket_makes_only_its_channel_wait() {
        let limits = RateLimits::default();
        let route = "POST /channels/{id}/messages";
        limits.update(route, "1", &headers("abc", "0", "2.5"));
        let wait = limits.wait_for(route, "1").unwrap();
        assert!(wait > Duration::from_secs(2) && wait <= Duration::from_millis(2500));
        assert_eq!(limits.wait_for(route, "2"), None);
        limits.update(route, "1", &headers("abc", "4", "2.5"));
        assert_eq!(limits.wait_for(route, "1"), None);
    }

    #[tokio::test]
    async fn a_global_limit_holds_every_route() {
        let limits = RateLimits::default();
        limits.global_block(Duration::from_secs(3));
        assert!(limits.wait_for("GET /users/@me", "").is_some());
    }
}

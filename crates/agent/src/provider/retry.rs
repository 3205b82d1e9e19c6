//! Retry policy shared by the providers: exponential backoff with jitter, honouring
//! the server's `retry-after`.
//!
//! Retries also happen after part of an answer was streamed (a mid-stream
//! `overloaded_error` is common). `on_text` then receives the new attempt's text from
//! its beginning, so a caller that shows streamed text live may show a partial answer
//! followed by the full one; the returned `ModelResponse` holds only the final
//! attempt's content and is the authoritative answer.

use std::time::Duration;

use rand::RngExt;

use super::ProviderError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// Delay before the first retry; doubles for each further one.
    pub base_delay: Duration,
    /// Upper bound for any delay, including a server's `retry-after`.
    pub max_delay: Duration,
    /// An attempt whose response (headers, then each piece of the stream) sends nothing for
    /// this long fails as a retryable transport error, so a stalled upstream costs this
    /// much per try instead of the whole turn timeout.
    pub stream_idle_timeout: Duration,
}

/// The default [`RetryPolicy::stream_idle_timeout`]; the host normally sends its own.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// Retries like the default but without waiting: for tests.
    pub fn immediate() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }

    /// This policy with another stream idle timeout.
    pub fn with_stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// Never retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first retry). A server's
    /// `retry-after` wins over the computed backoff; both are capped at `max_delay`.
    /// The backoff is `base_delay * 2^retry` with jitter drawn from its upper half, so
    /// clients that failed together do not retry together.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_delay);
        }
        let factor = 2u32.saturating_pow(retry.min(16));
        let full = self.base_delay.saturating_mul(factor).min(self.max_delay);
        if full.is_zero() {
            return full;
        }
        let half = full / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter_nanos = rand::rng().random_range(0..=half_nanos);
        half + Duration::from_nanos(jitter_nanos)
    }

    /// Whether to retry after `failure` on retry number `retry`, and how long to
    /// wait first; `None` means give up and return the error.
    pub(crate) fn next_delay(&self, retry: u32, failure: &Failure) -> Option<Duration> {
        if retry >= self.max_retries || !failure.error.is_retryable() {
            return None;
        }
        Some(self.backoff(retry, failure.retry_after))
    }
}

/// One failed attempt: the error and the server's `retry-after`, if it sent one.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: ProviderError,
    pub retry_after: Option<Duration>,
}

impl From<ProviderError> for Failure {
    fn from(error: ProviderError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// `fut`, or a retryable transport error naming `what` when it takes longer than `idle`.
pub(crate) async fn within_idle<T>(
    provider: &'static str,
    idle: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(idle, fut)
        .await
        .map_err(|_| ProviderError::Transport {
            provider,
            message: format!(
                "{what}: nothing received for {} s (stream idle timeout)",
                idle.as_secs()
            ),
        })
}

/// Parses `retry-after` in seconds (integer or decimal). The HTTP-date form is not
/// used by the model APIs and is ignored.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Tracks the retries of one request. Used as a plain loop in each provider (a
/// closure-taking helper would have to borrow `on_text` across attempts, which the
/// `Send` bound of the trait's future does not allow for `dyn FnMut`).
pub(crate) struct Retries<'a> {
    policy: &'a RetryPolicy,
    provider: &'static str,
    done: u32,
}

impl<'a> Retries<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy, provider: &'static str) -> Self {
        Self {
            policy,
            provider,
            done: 0,
        }
    }

    /// After a failed attempt: waits as the policy says and returns `Ok` to try again,
    /// or returns the error when it is not retryable or retries are used up.
    pub(crate) async fn wait_or_give_up(&mut self, failure: Failure) -> Result<(), ProviderError> {
        let Some(delay) = self.policy.next_delay(self.done, &failure) else {
            return Err(failure.error);
        };
        self.done += 1;
        tracing::warn!(
            provider = self.provider,
            error = %failure.error,
            retry = self.done,
            max_retries = self.policy.max_retries,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "model request failed; retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

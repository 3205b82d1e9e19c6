//! Exactly-once sends: a ledger keyed by the message's idempotency key and part number.
//!
//! Before a part goes out the ledger records that it is being sent; after the platform
//! answers it records the platform's id. A part found "being sent" after a restart (the
//! host died between the send and the record) is *in doubt*: the adapter decides with
//! [`SendAttempt::AfterCrash`] — resend with the same nonce where the platform deduplicates
//! (Discord), look it up where the platform can be searched (Slack), or leave it (Telegram,
//! which can neither) rather than show it twice.

use std::future::Future;

use async_trait::async_trait;

use crate::channel::ChannelError;

/// What the ledger knows of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartState {
    /// Never tried.
    Unsent,
    /// Tried, but the outcome was never recorded: the host stopped in between.
    InDoubt,
    /// Sent; the platform's id for it, when it gave one.
    Sent(Option<String>),
}

/// The durable record of what was sent (the host keeps it in SQLite).
#[async_trait]
pub trait SendLedger: Send + Sync {
    async fn part(&self, key: &str, part: u32) -> Result<PartState, ChannelError>;
    /// Records that `part` is about to be sent (durably, before the send).
    async fn begin(&self, key: &str, part: u32) -> Result<(), ChannelError>;
    /// Records that `part` was sent.
    async fn sent(
        &self,
        key: &str,
        part: u32,
        platform_id: Option<&str>,
    ) -> Result<(), ChannelError>;
    /// Forgets a begun `part` that certainly never reached the platform (it refused it, or
    /// no connection was made), so the next try is a fresh send, not an in-doubt one.
    async fn abandon(&self, key: &str, part: u32) -> Result<(), ChannelError>;
}

/// How a part is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendAttempt {
    /// Never tried before.
    Fresh,
    /// Tried before a crash, outcome unknown. Return `Ok(None)` to treat it as sent without
    /// sending again.
    AfterCrash,
}

/// Sends `count` parts of message `key` through `send`, skipping parts already sent and
/// recording each in the ledger. Returns the platform id of the first part.
///
/// `send(part, attempt)` returns the platform's id of what it sent (`None`: nothing to
/// record, e.g. an in-doubt part the adapter chose not to resend).
pub async fn send_parts<F, Fut>(
    ledger: &dyn SendLedger,
    key: &str,
    count: usize,
    mut send: F,
) -> Result<Option<String>, ChannelError>
where
    F: FnMut(usize, SendAttempt) -> Fut,
    Fut: Future<Output = Result<Option<String>, ChannelError>>,
{
    let mut first: Option<String> = None;
    for index in 0..count {
        let part = u32::try_from(index)
            .map_err(|_| ChannelError::Failed(format!("message {key} has too many parts")))?;
        let attempt = match ledger.part(key, part).await? {
            PartState::Sent(id) => {
                if index == 0 {
                    first = id;
                }
                continue;
            }
            PartState::InDoubt => SendAttempt::AfterCrash,
            PartState::Unsent => {
                ledger.begin(key, part).await?;
                SendAttempt::Fresh
            }
        };
        if attempt == SendAttempt::AfterCrash {
            tracing::warn!(
                key,
                part,
                "a part was being sent when the host stopped; asking the channel"
            );
        }
        let id = match send(index, attempt).await {
            Ok(id) => id,
            Err(e) => {
                if e.never_reached_platform() {
                    ledger.abandon(key, part).await?;
                }
                return Err(e);
            }
        };
        ledger.sent(key, part, id.as_deref()).await?;
        if index == 0 {
            first = id;
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLedger;

    #[tokio::test]
    async fn parts_already_sent_are_not_sent_again() {
        let ledger = MemoryLedger::default();
        let mut sent = Vec::new();
        // The first try fails at part 2 (a 5xx, say): parts 0 and 1 are recorded.
        let result = send_parts(&ledger, "k", 3, |i, _| {
            sent.push(i);
            async move {
                if i == 2 {
                    Err(ChannelError::Failed("boom".into()))
                } else {
                    Ok(Some(format!("m{i}")))
                }
            }
        })
        .await;
        assert!(result.is_err());
        // Part 2 failed in a way that may have reached the platform (a timeout, a 5xx): it
        // is in doubt, and the adapter is asked what to do.
        let mut attempts = Vec::new();
        let first = send_parts(&ledger, "k", 3, |i, a| {
            attempts.push((i, a));
            async move { Ok(Some(format!("m{i}"))) }
        })
        .await
        .unwrap();
        assert_eq!(first.as_deref(), Some("m0"));
        assert_eq!(sent, vec![0, 1, 2]);
        assert_eq!(attempts, vec![(2, SendAttempt::AfterCrash)]);
        assert_eq!(
            ledger.part("k", 2).await.unwrap(),
            PartState::Sent(Some("m2".into()))
        );
    }

    #[tokio::test]
    async fn a_part_the_platform_refused_is_sent_fresh_next_time() {
        let ledger = MemoryLedger::default();
        let refused = send_parts(&ledger, "k", 1, |_, _| async {
            Err(ChannelError::RateLimited {
                platform: "p".into(),
                retry_after: std::time::Duration::from_secs(1),
            })
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(ledger.part("k", 0).await.unwrap(), PartState::Unsent);
        let mut attempts = Vec::new();
        send_parts(&ledger, "k", 1, |i, a| {
            attempts.push((i, a));
            async { Ok(Some("m0".to_string())) }
        })
        .await
        .unwrap();
        assert_eq!(attempts, vec![(0, SendAttempt::Fresh)]);
    }
}

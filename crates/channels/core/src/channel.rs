//! The `Channel` trait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::event::{ChannelEvent, InboundEvent, OutgoingMessage, Progress, RouteOutcome};
use crate::health::Health;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Nobody is there to receive it right now; the message stays queued.
    #[error("{0} is not connected")]
    NotConnected(String),
    /// Someone is connected, but nobody who asked for this message or shows the whole chat:
    /// the message stays queued without holding up the chat's other messages.
    #[error("not delivered yet: {0}")]
    Unclaimed(String),
    /// The platform asked to slow down; try again after `retry_after`.
    #[error("rate limited by {platform}; retry after {retry_after:?}")]
    RateLimited {
        platform: String,
        retry_after: Duration,
    },
    /// The platform refused the message for good (e.g. the chat no longer exists); retrying
    /// cannot help.
    #[error("rejected by {platform}: {detail}")]
    Rejected { platform: String, detail: String },
    #[error("delivery failed: {0}")]
    Failed(String),
    #[error("channel setup failed: {0}")]
    Setup(String),
    /// The platform refused our credentials: the owner must fix the token.
    #[error("{platform} refused the credentials: {detail}")]
    Unauthorized { platform: String, detail: String },
}

impl ChannelError {
    /// Whether the platform certainly did not take the message: it refused it (429, a 4xx,
    /// bad credentials) or no connection was made. A timeout or a 5xx is not: the message
    /// may have been shown.
    pub fn never_reached_platform(&self) -> bool {
        matches!(
            self,
            ChannelError::NotConnected(_)
                | ChannelError::Unclaimed(_)
                | ChannelError::RateLimited { .. }
                | ChannelError::Rejected { .. }
                | ChannelError::Unauthorized { .. }
                | ChannelError::Setup(_)
        )
    }

    /// Whether the send may be tried again later with the same message.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ChannelError::Rejected { .. })
    }
}

/// A chat named by a channel's configuration (see [`Channel::configured_chats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredChat {
    /// The chat's id on the channel (`InboundEvent::chat_id`).
    pub chat_id: String,
    pub name: String,
    /// The folder of the agent group its messages go to.
    pub group: String,
    /// The chat cannot show replies (nowhere to send them): the host sends them to the
    /// owner's main chat instead.
    pub replies_to_owner: bool,
}

/// Prints what the owner must see while a channel links (a QR code, a pairing code).
pub type ShowToOwner<'a> = dyn Fn(&str) + Send + Sync + 'a;

/// Where channels send what they receive.
pub type InboundSink = mpsc::Sender<ChannelEvent>;

/// Hands one message to the host and waits until the host has decided about it (stored,
/// ignored, held, or failed). `None`: the host stopped listening, or dropped the message
/// undecided. For channels that move a cursor one message at a time; many in flight at once
/// is [`crate::Pipeline`].
pub async fn hand_over(sink: &InboundSink, mut event: InboundEvent) -> Option<RouteOutcome> {
    let (ack, decided) = tokio::sync::oneshot::channel();
    event.ack = Some(ack);
    sink.send(ChannelEvent::Inbound(event)).await.ok()?;
    decided.await.ok()
}

#[async_trait]
pub trait Channel: Send + Sync {
    /// Channel type, e.g. `telegram`.
    fn name(&self) -> &'static str;

    /// Starts receiving; events go to `sink`. Returns once the channel is set up (for
    /// network channels: once the first connection was tried; reconnects run inside).
    async fn start(self: Arc<Self>, sink: InboundSink) -> Result<(), ChannelError>;

    /// Delivers one message. Returns the platform's message id when it has one.
    async fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError>;

    /// Shows progress of a turn in a chat (best effort; default: nothing). `answers`: the
    /// platform ids of the messages the turn answers.
    async fn progress(&self, _chat_id: &str, _answers: &[String], _progress: Progress) {}

    /// How long the platform shows a typing indicator after [`Progress::Working`]; the host
    /// sends it again before then while a turn is still working. `None` (the default): it
    /// lasts until the reply, or the channel shows no indicator.
    fn typing_lasts(&self) -> Option<Duration> {
        None
    }

    /// Checks the credentials and the connection with one real call; returns who the
    /// channel is on the platform (e.g. the bot's username). Used by `nanoclaw channel add`.
    async fn verify(&self) -> Result<String, ChannelError> {
        Ok(self.name().to_string())
    }

    /// Links the channel as a device of the owner's account, interactively, for channels
    /// that log in that way (a QR code or a pairing code shown in the owner's terminal):
    /// `show` prints what the owner must see. Returns who was linked, or `None` when the
    /// channel has nothing to link (the default) or is linked already. Used by
    /// `nanoclaw channel add` before [`Channel::verify`]; the channel bounds its own wait.
    async fn link(&self, _show: &ShowToOwner<'_>) -> Result<Option<String>, ChannelError> {
        Ok(None)
    }

    /// Chats that exist because the channel's configuration names them (webhook endpoints),
    /// not because someone wrote from them. The host wires each to its group when the
    /// channel starts, so the owner configures them in one place. Default: none.
    fn configured_chats(&self) -> Vec<ConfiguredChat> {
        Vec::new()
    }

    /// The channel's real state for `nanoclaw channel status`.
    fn health(&self) -> Health {
        Health::always_up()
    }

    /// For a host started on demand by clients: returns `true` once nobody has been
    /// connected for `linger` and the channel has stopped accepting; `false` at once when the
    /// channel cannot tell (the default).
    async fn until_unattended(&self, _linger: Duration) -> bool {
        false
    }

    /// Stops receiving. A stopped channel can be started again (`channel restart`).
    async fn stop(&self) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event() -> InboundEvent {
        InboundEvent {
            channel: "t".into(),
            chat_id: "c".into(),
            chat_name: "c".into(),
            is_group: false,
            thread: None,
            platform_msg_id: "m1".into(),
            sender: "s".into(),
            sender_name: None,
            text: "hi".into(),
            received_at: 0,
            mentions_me: true,
            from_bot: false,
            attachments: Vec::new(),
            ack: None,
        }
    }

    #[tokio::test]
    async fn hand_over_returns_what_the_host_decided_or_none_when_it_is_gone() {
        let (sink, mut host) = mpsc::channel(1);
        let decide = tokio::spawn(async move {
            let Some(ChannelEvent::Inbound(mut e)) = host.recv().await else {
                panic!("no event");
            };
            e.ack.take().unwrap().send(RouteOutcome::Duplicate).unwrap();
            // Undecided: the ack is dropped with the event.
            let Some(ChannelEvent::Inbound(_undecided)) = host.recv().await else {
                panic!("no second event");
            };
        });
        assert_eq!(
            hand_over(&sink, event()).await,
            Some(RouteOutcome::Duplicate)
        );
        assert_eq!(hand_over(&sink, event()).await, None);
        decide.await.unwrap();
        assert_eq!(hand_over(&sink, event()).await, None, "the host is gone");
    }
}

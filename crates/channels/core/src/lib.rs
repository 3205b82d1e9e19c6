//! The seam between nanoclaw's host and the chat platforms.
//!
//! A channel turns a platform's events into [`InboundEvent`]s and delivers
//! [`OutgoingMessage`]s back. Each platform lives in its own crate and exports a
//! [`ChannelRegistration`]; the host lists the registrations it was built with and starts
//! the channels the configuration enables. Channels run in the host, never in a sandbox:
//! their tokens come from the vault through [`SecretSource`].
//!
//! What every adapter needs and should not write again lives here: [`chunk`] (splitting long
//! replies in order), [`Backoff`] (reconnects), [`HealthCell`] (truthful status),
//! [`send_parts`] (exactly-once delivery against the host's [`SendLedger`]) and
//! [`Pipeline`] (many inbound messages in flight, outcomes reported in arrival order).

mod backoff;
mod channel;
pub mod chunk;
mod event;
mod health;
mod http;
mod ledger;
mod listen;
pub mod memory;
mod pipeline;
mod setup;
mod supervisor;

pub use backoff::Backoff;
pub use channel::{Channel, ChannelError, ConfiguredChat, InboundSink, ShowToOwner, hand_over};
pub use event::{
    Attachment, ChannelEvent, HostState, InboundEvent, OutgoingFile, OutgoingMessage, Progress,
    RouteOutcome,
};
pub use health::{Health, HealthCell, LinkState};
pub use http::{HttpLimits, serve_http};
pub use ledger::{PartState, SendAttempt, SendLedger, send_parts};
pub use listen::{bind_first, serve_with_rebind};
pub use pipeline::{DEFAULT_IN_FLIGHT, Pipeline, Settlement};
pub use setup::{
    ChannelFactory, ChannelRegistration, ChannelSetup, ModeSecrets, SecretSource, SecretSpec,
    StateStore, forget_older_daily,
};
pub use supervisor::{Alerts, Supervisor, SupervisorConfig};

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

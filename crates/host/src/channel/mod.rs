//! Chat channels: where messages come from and where replies go.
//!
//! The seam itself (the `Channel` trait and the message types) is the `nanoclaw-channel`
//! crate; each platform is a crate of its own that exports a [`ChannelRegistration`]. The
//! host lists the registrations it was built with in [`registrations`] (one line per
//! platform, each behind its cargo feature) and builds those the configuration enables. The
//! terminal is the host's own channel (the owner's `nanoclaw chat`), built here.

use std::sync::Arc;

pub use nanoclaw_channel::{
    Attachment, Channel, ChannelError, ChannelEvent, ChannelRegistration, Health, HostState,
    InboundEvent, InboundSink, LinkState, OutgoingFile, OutgoingMessage, Progress, RouteOutcome,
};

use crate::config::{Config, Paths};

pub mod platforms;
pub mod sanitize;
pub mod terminal;

/// What the terminal's factory may look at.
pub struct ChannelContext<'a> {
    pub config: &'a Config,
    pub paths: &'a Paths,
    /// Why agents cannot run here, for channels that tell people on arrival.
    pub warning: Option<String>,
}

/// Every platform channel this build contains: one line per platform crate, each behind its
/// cargo feature.
const REGISTRATIONS: &[ChannelRegistration] = &[
    #[cfg(feature = "telegram")]
    nanoclaw_channel_telegram::REGISTRATION,
    #[cfg(feature = "discord")]
    nanoclaw_channel_discord::REGISTRATION,
    #[cfg(feature = "slack")]
    nanoclaw_channel_slack::REGISTRATION,
    #[cfg(feature = "whatsapp")]
    nanoclaw_channel_whatsapp::REGISTRATION,
    #[cfg(feature = "email")]
    nanoclaw_channel_email::REGISTRATION,
    #[cfg(feature = "matrix")]
    nanoclaw_channel_matrix::REGISTRATION,
    #[cfg(feature = "irc")]
    nanoclaw_channel_irc::REGISTRATION,
    #[cfg(feature = "webhook")]
    nanoclaw_channel_webhook::REGISTRATION,
];

/// Every platform channel this build contains, by name.
pub fn registrations() -> Vec<ChannelRegistration> {
    REGISTRATIONS.to_vec()
}

/// The registration named `name`, if this build has it.
pub fn registration(name: &str) -> Option<ChannelRegistration> {
    registrations().into_iter().find(|r| r.name == name)
}

/// The names of every channel this build knows (the terminal first).
pub fn known_names() -> Vec<&'static str> {
    let mut names = vec![terminal::NAME];
    names.extend(registrations().iter().map(|r| r.name));
    names
}

/// The terminal channel, unless the configuration turns it off.
pub fn build_terminal(ctx: &ChannelContext<'_>) -> Option<Arc<dyn Channel>> {
    terminal::factory(ctx)
}

//! The host <-> agent protocol.
//!
//! One JSON object per line over the agent process's stdin (host → agent) and stdout
//! (agent → host). The transport is plain stdio so it works the same for every sandbox
//! runtime (bubblewrap, Docker attach, Apple container, Kubernetes exec).
//!
//! The session opens with a handshake: the host sends [`HostMessage::Hello`], the agent
//! answers [`AgentMessage::Ready`] (or [`AgentMessage::Fatal`] when the major versions
//! differ). See `docs/PROTOCOL.md` for the full description.

mod codec;
mod messages;

pub use codec::{LineReader, LineWriter, ReadError, WriteError, decode_line, encode_line};
pub use messages::*;

/// Major version: bumped on incompatible changes. Host and agent must agree on it.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Minor version: bumped on backwards-compatible additions (new optional fields, new
/// message kinds that the peer may ignore).
pub const PROTOCOL_MINOR: u32 = 2;

/// The longest line either side accepts, in bytes. Turns carry whole chat batches and
/// tool output is capped well below this, so a longer line is a bug or an attack.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Whether a peer speaking `major.minor` can talk to us.
pub fn is_compatible(major: u32) -> bool {
    major == PROTOCOL_MAJOR
}

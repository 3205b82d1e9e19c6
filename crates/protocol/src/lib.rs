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
pub mod contract;
mod messages;

pub use codec::{LineReader, LineWriter, ReadError, WriteError, decode_line, encode_line};
pub use messages::*;

/// Major version: bumped on incompatible changes. Host and agent must agree on it.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Minor version: bumped on backwards-compatible additions (new optional fields, new
/// message kinds that the peer may ignore).
pub const PROTOCOL_MINOR: u32 = 6;

/// The longest line either side accepts, in bytes. Turns carry whole chat batches and
/// tool output is capped well below this, so a longer line is a bug or an attack.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Raw text bytes a sender puts in one frame when it splits long text (`text_delta`,
/// `reply_part`). JSON escaping grows text at most sixfold (`\u001f`), so a piece of this size
/// always fits in a line of [`MAX_LINE_BYTES`] with room for the other fields.
pub const MAX_TEXT_PIECE_BYTES: usize = 512 * 1024;

/// `text` cut into pieces of at most `max` bytes, on char boundaries (a piece may be
/// shorter; none is empty unless `text` is).
pub fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max.max(1);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // `max` is smaller than one char: take the whole char.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// Whether a peer speaking `major.minor` can talk to us.
pub fn is_compatible(major: u32) -> bool {
    major == PROTOCOL_MAJOR
}

#[cfg(test)]
mod split_tests {
    use super::split_text;

    #[test]
    fn split_text_keeps_chars_whole_and_loses_nothing() {
        let text = "aé€😀".repeat(100);
        for max in [1, 2, 3, 5, 64] {
            let pieces = split_text(&text, max);
            assert_eq!(pieces.concat(), text);
            for p in &pieces {
                assert!(
                    !p.is_empty() && (p.len() <= max || p.chars().count() == 1),
                    "max {max}: piece {p:?}"
                );
            }
        }
        assert_eq!(split_text("", 4), vec![""]);
    }
}

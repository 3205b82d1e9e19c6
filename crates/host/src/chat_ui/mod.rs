//! The parts of `nanoclaw chat`'s terminal interface that need no terminal: what the owner's
//! input means ([`input`]), how a reply is drawn ([`markdown`]) and how messages from other
//! sources are labelled ([`label`]). The line editor and the screen are in the CLI
//! (`cli/chat_tty.rs`); keeping these apart lets them be tested without a TTY.

pub mod input;
pub mod label;
pub mod markdown;

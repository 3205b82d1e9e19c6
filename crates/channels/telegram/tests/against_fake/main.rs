//! The Telegram channel against the local Bot API server (`FakeTelegram`), with the
//! in-memory ledger and state store.

mod common;
mod inbound;
mod link;
mod markdown;
mod outbound;

//! The WhatsApp channel (Cloud mode) against the local Cloud API and webhook sender
//! (`FakeWhatsApp`), with the in-memory ledger and state store.

mod common;
mod inbound;
mod link;
mod outbound;

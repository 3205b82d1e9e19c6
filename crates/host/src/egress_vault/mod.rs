//! The vault behind the egress proxy: [`VaultSecrets`] gives `nanoclaw_egress` the credentials,
//! placeholders, approvals and rate limits from the vault, and [`VaultAudit`] records its
//! decisions in the vault's hash-chained audit log.

mod audit;
mod secrets;

pub use audit::{AUDIT_BACKLOG, VaultAudit};
pub use secrets::VaultSecrets;

//! One module per former test file; `cargo test -p nanoclaw --test all <module>::` runs one of them.

// The harness stays at `tests/common/mod.rs`: the test binaries outside `all` use it too.
#[path = "../common/mod.rs"]
mod common;

mod admin;
mod agent_io;
mod chat_clients;
mod cli;
mod containment;
mod crash;
mod e2e;
mod hostile_agent;
mod model_relay;
mod mounts;
mod routing;
mod task_properties;
mod tasks;
mod vault_approvals;
mod vault_cli;
mod vault_e2e;
mod vault_keyring;

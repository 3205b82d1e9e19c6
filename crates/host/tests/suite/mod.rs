//! One module per former test file; `cargo test -p nanoclaw --test all <module>::` runs one of them.

mod common;
#[macro_use]
mod conformance;

mod admin;
mod agent_io;
mod channel_cli;
mod chat_clients;
mod chat_tty;
mod chat_wiring;
mod cli;
mod containment;
mod crash;
mod dashboard;
mod e2e;
mod egress;
mod egress_mitm;
mod hostile_agent;
mod kill_switch;
mod mcp;
mod memory;
mod model_relay;
mod mounts;
mod ops;
mod outgoing_files;
mod relay_tcp;
mod relay_transport;
mod routing;
mod service;
mod setup;
mod skills;
mod task_properties;
mod tasks;
mod vault_approvals;
mod vault_cli;
mod vault_e2e;
mod vault_keyring;
#[cfg(feature = "webhook")]
mod webhook;

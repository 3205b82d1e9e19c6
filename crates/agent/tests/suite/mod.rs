//! The agent's integration tests, one module per area, built as one test binary (`all.rs`)
//! so the crate links once. The tests that run the agent binary pass its configuration as
//! the child process's environment, never through this process's, so they can run in
//! parallel.

mod egress;
mod mcp;
mod providers;
mod runner;
mod tcp_relay;

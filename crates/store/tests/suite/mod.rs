//! One module per former test file; `cargo test --test all <module>::` runs one of them.

mod memories;
mod skills;
mod store;
mod tasks;

//! One module per former test file; `cargo test --test all <module>::` runs one of them.

mod dst_2026;
mod properties;

//! One module per test file; `cargo test -p nanoclaw-channel-slack --test all <module>::` runs one.

mod against_fake;

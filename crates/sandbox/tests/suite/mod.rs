//! One module per former test file; `cargo test -p nanoclaw-sandbox --test all <module>::` runs one.

mod common;

mod docker;
mod image;
mod native;

//! The one integration test binary of the agent; the tests live in `suite/`.

// Test helpers may panic: a panic is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

//! The Slack channel's integration tests, as one test binary: each file is a module of `suite`.

mod suite;

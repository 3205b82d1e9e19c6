//! The sandbox crate's integration tests, as one test binary (one link, one process): each
//! former test file is a module of `suite`.

mod suite;

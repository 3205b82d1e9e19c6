//! Every integration test of the Discord channel, in one binary (against the fake Discord).

mod suite;

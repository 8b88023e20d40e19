//! End-to-end tests of the `cairn` binary on local repositories: one test
//! binary, one module per area.

mod common;
mod faults;
mod roundtrip;

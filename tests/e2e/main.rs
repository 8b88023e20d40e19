//! End-to-end tests of the `cairn` binary, on local repositories and on
//! real servers of every network backend: one test binary, one module per
//! area.

mod api;
mod browser;
mod common;
mod copy;
mod daemon;
mod deploy;
mod faults;
mod hostile;
mod inplace;
mod jobs;
mod keys;
mod locks;
mod metrics;
mod mount;
mod prune;
mod replicas;
mod retention;
mod rotation;
mod roundtrip;
mod secrets;
mod servers;
mod sources;
#[path = "../support/mod.rs"]
mod support;
mod tamper;

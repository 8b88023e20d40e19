//! The operations: one module per command, each driving a
//! [`crate::repo::Repository`] and returning a typed report that the CLI
//! (and later the daemon and the API) only render.

pub mod audit;
pub mod backup;
pub mod browse;
pub mod check;
pub mod copy;
pub mod diff;
mod finding;
pub mod forget;
pub mod keys;
pub mod ls;
mod outcome;
mod packer;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod status;
pub mod sync;

pub use finding::{Finding, Problem, Severity};
pub use outcome::{ExitCode, Outcome};

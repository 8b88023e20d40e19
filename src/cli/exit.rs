//! Exit codes, documented in docs/exit-codes.md. The library decides them
//! ([`cairn::ops::ExitCode`], from an operation's [`cairn::ops::Outcome`]
//! or from the error that ended it); these names are for the few places of
//! the binary that return a code of their own.

use cairn::config::ConfigError;
use cairn::ops::{ExitCode, Outcome};
use cairn::Error;

pub const OK: i32 = ExitCode::Ok as i32;
pub const FAILURE: i32 = ExitCode::Failure as i32;
pub const USAGE: i32 = ExitCode::Usage as i32;
pub const UNREACHABLE: i32 = ExitCode::Unreachable as i32;

/// The exit code for an error that ended a command.
pub fn code_for(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.exit_code().code();
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return e.exit_code().code();
        }
        if cause.downcast_ref::<super::UsageError>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<super::ReplicaUnusable>().is_some() {
            return UNREACHABLE;
        }
    }
    FAILURE
}

/// The exit code of an operation's outcome.
pub fn of(outcome: &Outcome) -> i32 {
    outcome.exit_code().code()
}

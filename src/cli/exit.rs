//! Exit codes, documented in docs/exit-codes.md. The library decides them
//! ([`cairn::ops::ExitCode`], from an operation's [`cairn::ops::Outcome`]
//! or from the error that ended it); these names are for the few places of
//! the binary that return a code of their own.

use std::sync::{Arc, Mutex};

use cairn::config::ConfigError;
use cairn::ops::{ExitCode, Outcome};
use cairn::repo::rollback::Tracker;
use cairn::repo::Repository;
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

/// What the opened repositories said about integrity, for [`with_integrity`].
static SEEN: Mutex<Integrity> = Mutex::new(Integrity {
    bad_config: false,
    records: Vec::new(),
});

struct Integrity {
    /// A replica was set aside for a damaged or unauthentic `config`.
    bad_config: bool,
    /// The local records of opened repositories (rollbacks found).
    records: Vec<Arc<Tracker>>,
}

/// Remember what `repo` found at opening, and its record, whose rollback
/// findings the exit code reflects.
pub fn watch(repo: &Repository) {
    let mut seen = SEEN.lock().unwrap();
    if repo
        .unavailable()
        .iter()
        .any(|u| matches!(u.error, Error::BadConfig { .. }))
    {
        seen.bad_config = true;
    }
    if let Some(r) = repo.record() {
        seen.records.push(r.clone());
    }
}

/// `code`, raised to 5 (damaged) when a replica's config was refused, or
/// with `strict` when a replica was found rolled back, unless the command
/// ended worse (a failure, a lock, an interruption).
pub fn with_integrity(code: i32, strict: bool) -> i32 {
    let seen = SEEN.lock().unwrap();
    let rolled_back = strict && seen.records.iter().any(|r| !r.found().is_empty());
    let lesser = [
        ExitCode::Ok,
        ExitCode::Incomplete,
        ExitCode::ReplicaFailed,
        ExitCode::Unreachable,
    ]
    .map(ExitCode::code);
    if (seen.bad_config || rolled_back) && lesser.contains(&code) {
        ExitCode::Damaged.code()
    } else {
        code
    }
}

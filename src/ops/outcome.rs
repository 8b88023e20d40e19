//! How an operation ended, and the one mapping from that (or from the
//! error that ended it) to the documented exit codes (docs/exit-codes.md).
//! Every front end renders the same [`Outcome`]: the CLI exits with its
//! code, the daemon and the API will report it.

use serde::Serialize;

use crate::error::Error;

/// The process exit codes of docs/exit-codes.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCode {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Incomplete = 3,
    ReplicaFailed = 4,
    Damaged = 5,
    Unreachable = 6,
    /// `restore --in-place` failed and put the directory back as it was.
    RolledBack = 7,
    /// `restore --in-place` failed and could not put the directory back.
    RollbackFailed = 8,
    NoRepository = 10,
    Locked = 11,
    WrongPassphrase = 12,
    Interrupted = 130,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// How an operation that returned a report ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Everything was done.
    #[default]
    Ok,
    /// Done, but some items (files, objects) could not be handled; the
    /// report names them.
    Incomplete,
    /// Done on some replicas; these failed (or are behind) and stay
    /// consistent.
    Partial { replicas: Vec<String> },
    /// Stored data is damaged or lost; the report names it.
    Damaged,
    /// These replicas could not be reached or used.
    Unreachable { replicas: Vec<String> },
    /// Done nowhere (e.g. a backup that failed on every replica).
    Failed,
    /// Stopped by a cancellation (Ctrl-C) at a safe point.
    Interrupted,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Ok => ExitCode::Ok,
            Outcome::Incomplete => ExitCode::Incomplete,
            Outcome::Partial { .. } => ExitCode::ReplicaFailed,
            Outcome::Damaged => ExitCode::Damaged,
            Outcome::Unreachable { .. } => ExitCode::Unreachable,
            Outcome::Failed => ExitCode::Failure,
            Outcome::Interrupted => ExitCode::Interrupted,
        }
    }

    /// How bad an outcome is, to pick the one to report when several
    /// apply: an interruption first, then a total failure, then damage
    /// (it needs a human, whatever else happened), then unreachable and
    /// failed replicas, then skipped items.
    fn rank(&self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Incomplete => 1,
            Outcome::Partial { .. } => 2,
            Outcome::Unreachable { .. } => 3,
            Outcome::Damaged => 4,
            Outcome::Failed => 5,
            Outcome::Interrupted => 6,
        }
    }

    /// The worse of two outcomes; two of the same kind name the replicas
    /// of both.
    #[must_use]
    pub fn worst(self, other: Outcome) -> Outcome {
        fn union(mut a: Vec<String>, b: Vec<String>) -> Vec<String> {
            for r in b {
                if !a.contains(&r) {
                    a.push(r);
                }
            }
            a
        }
        match (self, other) {
            (Outcome::Partial { replicas: a }, Outcome::Partial { replicas: b }) => {
                Outcome::Partial {
                    replicas: union(a, b),
                }
            }
            (Outcome::Unreachable { replicas: a }, Outcome::Unreachable { replicas: b }) => {
                Outcome::Unreachable {
                    replicas: union(a, b),
                }
            }
            (a, b) if b.rank() > a.rank() => b,
            (a, _) => a,
        }
    }

    pub fn is_ok(&self) -> bool {
        *self == Outcome::Ok
    }
}

impl Error {
    /// The exit code of a command that this error ended.
    pub fn exit_code(&self) -> ExitCode {
        use crate::format::keys::KeyError;
        use cairn_backends::ErrorKind;
        match self {
            Error::Key(KeyError::WrongPassphrase | KeyError::SlotRevoked(_)) => {
                ExitCode::WrongPassphrase
            }
            Error::NotARepository(_) => ExitCode::NoRepository,
            Error::Invalid(_) => ExitCode::Usage,
            Error::Locked(_) => ExitCode::Locked,
            Error::BadConfig { .. } => ExitCode::Damaged,
            Error::Interrupted => ExitCode::Interrupted,
            // The replica answered nothing, or refused these credentials:
            // it cannot be used, whatever it holds.
            Error::Backend { source, .. }
                if matches!(
                    source.kind(),
                    ErrorKind::Unreachable
                        | ErrorKind::Transient
                        | ErrorKind::Unauthenticated
                        | ErrorKind::PermissionDenied
                ) =>
            {
                ExitCode::Unreachable
            }
            Error::AllReplicasFailed(_) => ExitCode::Unreachable,
            _ => ExitCode::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_outcome_wins() {
        let p = |r: &[&str]| Outcome::Partial {
            replicas: r.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(Outcome::Ok.worst(Outcome::Incomplete), Outcome::Incomplete);
        assert_eq!(Outcome::Damaged.worst(p(&["a"])), Outcome::Damaged);
        assert_eq!(p(&["a"]).worst(p(&["b", "a"])), p(&["a", "b"]));
        assert_eq!(
            Outcome::Unreachable {
                replicas: vec!["x".into()]
            }
            .worst(Outcome::Damaged),
            Outcome::Damaged
        );
        assert_eq!(
            Outcome::Failed.worst(Outcome::Interrupted),
            Outcome::Interrupted
        );
        assert_eq!(Outcome::Interrupted.exit_code().code(), 130);
    }
}

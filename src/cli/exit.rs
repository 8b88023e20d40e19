//! Exit codes, documented in docs/exit-codes.md.

use cairn::backends::ErrorKind;
use cairn::config::ConfigError;
use cairn::format::keys::KeyError;
use cairn::Error;

pub const OK: i32 = 0;
/// Any other failure.
pub const FAILURE: i32 = 1;
/// Bad command line or configuration.
pub const USAGE: i32 = 2;
/// Backup or restore completed, but some files could not be read or written.
pub const INCOMPLETE: i32 = 3;
/// At least one replica failed while others succeeded.
pub const REPLICA_FAILED: i32 = 4;
/// `check` found damage.
pub const DAMAGED: i32 = 5;
/// A replica could not be reached.
pub const UNREACHABLE: i32 = 6;
/// No repository at the given location.
pub const NO_REPOSITORY: i32 = 10;
/// Another process holds a conflicting lock.
pub const LOCKED: i32 = 11;
/// The passphrase opens no key slot.
pub const WRONG_PASSPHRASE: i32 = 12;
/// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const INTERRUPTED: i32 = 130;

/// The exit code for an error that ended a command.
pub fn code_for(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return match e {
                Error::Key(KeyError::WrongPassphrase) => WRONG_PASSPHRASE,
                Error::NotARepository(_) => NO_REPOSITORY,
                Error::Locked(_) => LOCKED,
                Error::Interrupted => INTERRUPTED,
                Error::Invalid(_) => USAGE,
                // The replica answered nothing, or refused these
                // credentials: it cannot be used, whatever it holds.
                Error::Backend { source, .. }
                    if matches!(
                        source.kind(),
                        ErrorKind::Unreachable
                            | ErrorKind::Transient
                            | ErrorKind::Unauthenticated
                            | ErrorKind::PermissionDenied
                    ) =>
                {
                    UNREACHABLE
                }
                Error::AllReplicasFailed(_) => UNREACHABLE,
                _ => FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                // A mistake in cairn.toml, an option or a URL.
                ConfigError::Invalid(_) | ConfigError::Backend { .. } => USAGE,
                ConfigError::Path { .. } => FAILURE,
            };
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

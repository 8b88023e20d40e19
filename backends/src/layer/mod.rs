//! Decorators: each wraps any `Arc<dyn Backend>` and is itself a [`Backend`](crate::Backend),
//! so behaviour is composed by stacking, e.g.
//! `Retry(Metrics(Limit(Throttle(local))))`.
//!
//! - [`RetryBackend`]: retries transient failures with backoff.
//! - [`LimitBackend`]: caps concurrent requests.
//! - [`ThrottleBackend`]: caps upload and download bandwidth.
//! - [`MetricsBackend`]: counts requests, errors, bytes and latency.
//! - `FaultyBackend`: fault injection, for tests only (cargo feature
//!   `testing`).
//! - [`DryRunBackend`]: reads pass through, writes are only logged.
//!
//! Order matters: a limit inside a retry holds its permit only during one
//! attempt (not during the backoff sleep); metrics inside a retry count every
//! attempt, outside it count logical operations.

mod dry_run;
#[cfg(feature = "testing")]
mod faulty;
mod limit;
mod metrics;
mod retry;
mod throttle;

use std::fmt;

pub use dry_run::DryRunBackend;
#[cfg(feature = "testing")]
pub use faulty::{FaultPlan, FaultyBackend};
pub use limit::LimitBackend;
pub use metrics::{Metrics, MetricsBackend, MetricsSnapshot, OpStats};
pub use retry::{RetryBackend, RetryConfig};
pub use throttle::{ThrottleBackend, ThrottleConfig};

/// One of the operations of [`Backend`](crate::Backend), for metrics labels
/// and for choosing which calls a fault plan affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Put,
    Get,
    Head,
    List,
    Delete,
    /// [`Backend::create`](crate::Backend::create), the container; not
    /// `PutMode::Create`, which is a `Put`.
    Create,
}

impl Op {
    /// Every operation, in a fixed order (the order of [`MetricsSnapshot`]).
    pub const ALL: [Op; 6] = [Op::Put, Op::Get, Op::Head, Op::List, Op::Delete, Op::Create];

    /// A lower-case name, usable as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Create => "create",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

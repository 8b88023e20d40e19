//! Jobs that run unattended: the `[jobs.NAME]` model checked, the run of
//! one job (hooks, retries, timeout) through the operations, the local run
//! history, what the daemon observes (metrics, health) and the
//! notifications it sends. `cairn run NAME` and `cairn daemon` both run a
//! job through [`run`], so a job behaves the same in either.

pub mod health;
pub mod history;
pub mod hooks;
pub mod metrics;
pub mod notify;
pub mod record;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod state;

pub use record::{ReplicaRun, RunRecord, RunStatus, Trigger};
pub use run::{Opener, Recorded, Runner};
pub use spec::{Job, JobKind};
pub use state::Observations;

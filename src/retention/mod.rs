//! Retention planning, pure: policies ([`Policy`], read from flags or
//! `cairn.toml`), calendar durations ([`CalSpan`]) and the planner that
//! decides which snapshots a policy keeps and why ([`plan`]). No I/O; the
//! `forget` operation feeds it the union of every replica's snapshots.
//! [`gc`] plans `prune`: what each replica can free and what to repack.

pub mod gc;
pub mod plan;
pub mod policy;
pub mod span;

#[cfg(test)]
mod tests;

pub use gc::{plan_gc, GcPlan, PackDesc, PackUsage, RepackRules};
pub use plan::{plan, Candidate, Context, Decision, Period, Reason};
pub use policy::{parse_size, GroupBy, Policy, PolicyError};
pub use span::CalSpan;

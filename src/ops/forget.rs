//! `forget`: apply each replica's retention policy, reconciled across
//! replicas.
//!
//! The snapshots are the union of every replica's. Each replica's policy is
//! evaluated over that union (so a replica that missed backups is judged on
//! the true history), then each replica is brought to hold what its policy
//! keeps: kept snapshots it lacks are first copied to it (as `sync` does),
//! and only then are the others forgotten. A snapshot is removed from a
//! replica only once every replica whose policy keeps it holds it; if one
//! of those is unreachable or a copy failed, the removal is deferred and
//! the report names the replica. Forgetting deletes snapshot objects only;
//! `prune` frees the data.

use std::collections::{BTreeMap, HashSet};

use cairn_backends::{Handle, Kind};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::ops::sync::{sync_locked, SyncOptions, SyncProgress};
use crate::ops::Outcome;
use crate::repo::{LockMode, Repository, SnapshotEntry};
use crate::retention::{plan, Candidate, Context, Policy, PolicyError, Reason};

/// Which policy governs which replica.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// For replicas without their own.
    pub default: Option<Policy>,
    /// By replica name (the `cairn.toml` backend name).
    pub by_replica: BTreeMap<String, Policy>,
}

impl Policies {
    /// One policy for every replica (from command-line rules).
    pub fn uniform(p: Policy) -> Policies {
        Policies {
            default: Some(p),
            by_replica: BTreeMap::new(),
        }
    }

    pub fn for_replica(&self, name: &str) -> Option<&Policy> {
        self.by_replica.get(name).or(self.default.as_ref())
    }

    fn is_empty(&self) -> bool {
        self.default.is_none() && self.by_replica.is_empty()
    }
}

/// Only snapshots matching every given filter are considered.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Any of these hosts.
    pub hosts: Vec<String>,
    /// Any of these tags.
    pub tags: Vec<String>,
    /// Each of these paths among the snapshot's.
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, e: &SnapshotEntry) -> bool {
        let s = &e.snapshot;
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.tags.is_empty() || s.tags.iter().any(|t| self.tags.contains(t)))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

#[derive(Clone, Debug)]
pub struct ForgetOptions {
    pub policies: Policies,
    /// Forget these on every replica, whatever the policies say.
    pub ids: Vec<Id>,
    pub filter: SnapshotFilter,
    /// Time zone of the calendar buckets.
    pub tz: TimeZone,
    /// "Now" for `max_age`.
    pub now: Timestamp,
    pub dry_run: bool,
    /// Do not copy kept snapshots to replicas that lack them; report them.
    pub no_copy: bool,
}

impl ForgetOptions {
    pub fn new(policies: Policies) -> ForgetOptions {
        ForgetOptions {
            policies,
            ids: Vec::new(),
            filter: SnapshotFilter::default(),
            tz: TimeZone::system(),
            now: Timestamp::now(),
            dry_run: false,
            no_copy: false,
        }
    }
}

/// What happens to one snapshot on one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Held and kept.
    Keep,
    /// Held and not kept: removed (or, in a dry run, would be).
    Forget,
    /// Kept but not held: copied to it (or would be).
    Copy,
    /// Kept but not held, and not copied (`--no-copy`, or the copy failed).
    Missing,
    /// Not kept, but not removed: a replica whose policy keeps it does not
    /// hold it (yet), or cannot be reached. Named in `waiting_for`.
    Deferred,
    /// Neither held nor kept.
    Absent,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub replica: String,
    pub held: bool,
    /// Empty: the replica's policy does not keep it.
    pub reasons: Vec<Reason>,
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotPlan {
    pub id: Id,
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub group: String,
    /// Forgotten because its id was given.
    pub requested: bool,
    pub replicas: Vec<Verdict>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaForget {
    pub replica: String,
    /// The policy applied; `None`: no policy, everything it holds is kept.
    pub policy: Option<Policy>,
    pub kept: u64,
    pub forgotten: u64,
    pub copied: u64,
    pub missing: u64,
    pub deferred: u64,
    /// Why this replica could not be used or finished.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub snapshots: Vec<SnapshotPlan>,
    pub replicas: Vec<ReplicaForget>,
}

impl ForgetReport {
    /// Deferred removals and failed replicas end the command with exit 4,
    /// naming them; missing copies with exit 3.
    pub fn outcome(&self) -> Outcome {
        let behind: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.error.is_some() || r.deferred > 0)
            .map(|r| r.replica.clone())
            .collect();
        if !behind.is_empty() {
            Outcome::Partial { replicas: behind }
        } else if self.replicas.iter().any(|r| r.missing > 0) {
            Outcome::Incomplete
        } else {
            Outcome::Ok
        }
    }
}

/// Apply the policies (see the module docs).
pub async fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    if opts.policies.is_empty() && opts.ids.is_empty() {
        return Err(Error::Invalid(PolicyError::Empty.to_string()));
    }
    for p in opts
        .policies
        .default
        .iter()
        .chain(opts.policies.by_replica.values())
    {
        p.validate().map_err(|e| Error::Invalid(e.to_string()))?;
    }
    repo.with_lock(LockMode::Shared, "forget", async || {
        forget_locked(repo, opts).await
    })
    .await
}

/// Per replica position: which snapshots (by position in `snaps`) its
/// policy keeps, with the reasons; `None` for a replica without a policy.
pub type Keeps = Vec<Option<Vec<Vec<Reason>>>>;

/// What each named replica's policy keeps of `snaps` (for `status`).
pub fn judge(
    policies: &Policies,
    names: &[&str],
    snaps: &[&SnapshotEntry],
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Keeps> {
    let mut opts = ForgetOptions::new(policies.clone());
    opts.tz = tz.clone();
    opts.now = now;
    let stored: Vec<u64> = snaps
        .iter()
        .map(|e| e.snapshot.summary.bytes_stored)
        .collect();
    let size_of = |kept: &[usize]| kept.iter().map(|&i| stored[i]).sum::<u64>();
    Ok(evaluate(names, snaps, &opts, &size_of)?.0)
}

fn evaluate(
    names: &[&str],
    snaps: &[&SnapshotEntry],
    opts: &ForgetOptions,
    size_of: &dyn Fn(&[usize]) -> u64,
) -> Result<(Keeps, Vec<String>)> {
    let candidates: Vec<Candidate> = snaps
        .iter()
        .map(|e| Candidate {
            id: e.id,
            time: e.snapshot.time,
            host: e.snapshot.host.clone(),
            paths: e.snapshot.paths.clone(),
            tags: e.snapshot.tags.clone(),
        })
        .collect();
    let ctx = Context {
        now: opts.now,
        tz: opts.tz.clone(),
        size_of,
    };
    let mut groups = vec![String::new(); snaps.len()];
    let mut keeps = Vec::new();
    for name in names {
        let Some(policy) = opts.policies.for_replica(name) else {
            keeps.push(None);
            continue;
        };
        let decisions =
            plan(policy, &candidates, &ctx).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut r = vec![Vec::new(); snaps.len()];
        for d in decisions {
            groups[d.index] = d.group;
            r[d.index] = d.reasons;
        }
        keeps.push(Some(r));
    }
    Ok((keeps, groups))
}

async fn forget_locked(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let all = repo.list_snapshots().await?;
    let snaps: Vec<&SnapshotEntry> = all.iter().filter(|e| opts.filter.matches(e)).collect();
    let requested: HashSet<Id> = opts.ids.iter().copied().collect();
    let reachable: Vec<&str> = repo.replicas().iter().map(|r| r.name.as_str()).collect();
    let unreachable: Vec<&str> = repo.unavailable().iter().map(|u| u.name.as_str()).collect();
    // The size a replica keeps: without an index walk per candidate set,
    // estimate by the stored bytes each snapshot's backup added.
    let stored: Vec<u64> = snaps
        .iter()
        .map(|e| e.snapshot.summary.bytes_stored)
        .collect();
    let size_of = |kept: &[usize]| kept.iter().map(|&i| stored[i]).sum::<u64>();
    let (keeps, groups) = evaluate(&reachable, &snaps, opts, &size_of)?;
    let (far_keeps, _) = evaluate(&unreachable, &snaps, opts, &size_of)?;

    let mut replicas: Vec<ReplicaForget> = reachable
        .iter()
        .map(|n| ReplicaForget {
            replica: n.to_string(),
            policy: opts.policies.for_replica(n).cloned(),
            ..Default::default()
        })
        .chain(repo.unavailable().iter().map(|u| ReplicaForget {
            replica: u.name.clone(),
            policy: opts.policies.for_replica(&u.name).cloned(),
            error: Some(crate::error::chain(&u.error)),
            ..Default::default()
        }))
        .collect();
    // A replica without a policy keeps what it holds.
    let keeps_at = |r: usize, s: usize| {
        !requested.contains(&snaps[s].id)
            && match &keeps[r] {
                Some(k) => !k[s].is_empty(),
                None => snaps[s].replicas.contains(r),
            }
    };

    // 1. Copies: kept snapshots a replica lacks.
    let mut held: Vec<Vec<bool>> = (0..reachable.len())
        .map(|r| snaps.iter().map(|e| e.replicas.contains(r)).collect())
        .collect();
    let mut copied = vec![vec![false; snaps.len()]; reachable.len()];
    for r in 0..reachable.len() {
        let lacking: HashSet<Id> = (0..snaps.len())
            .filter(|&s| keeps_at(r, s) && !held[r][s])
            .map(|s| snaps[s].id)
            .collect();
        if lacking.is_empty() || opts.no_copy {
            continue;
        }
        if opts.dry_run {
            for s in 0..snaps.len() {
                copied[r][s] = lacking.contains(&snaps[s].id);
            }
            continue;
        }
        let sync_opts = SyncOptions {
            from: repo.all().without(r),
            to: vec![r],
            dry_run: false,
            only: Some(lacking.clone()),
        };
        let progress = SyncProgress::new(repo, &[r]);
        let reports = sync_locked(repo, &sync_opts, &progress).await?;
        if let Some(e) = reports.iter().find_map(|rep| rep.error.clone()) {
            replicas[r].error = Some(e);
        }
        // What the replica holds now, from its own listing.
        let now_held: HashSet<String> = match repo.replica(r).backend.list(Kind::Snapshot).await {
            Ok(l) => l.into_iter().map(|m| m.handle.name.clone()).collect(),
            Err(e) => {
                replicas[r].error = Some(crate::error::chain(&Error::backend(reachable[r], e)));
                HashSet::new()
            }
        };
        for s in 0..snaps.len() {
            if lacking.contains(&snaps[s].id) && now_held.contains(&snaps[s].id.to_hex()) {
                held[r][s] = true;
                copied[r][s] = true;
            }
        }
    }

    // 2. Verdicts, and removals that every keeping replica allows.
    let mut out = Vec::with_capacity(snaps.len());
    for (s, e) in snaps.iter().enumerate() {
        let mut waiting: Vec<String> = Vec::new();
        for r in 0..reachable.len() {
            if keeps_at(r, s) && !held[r][s] && !(opts.dry_run && copied[r][s]) {
                waiting.push(reachable[r].to_string());
            }
        }
        for (u, name) in unreachable.iter().enumerate() {
            let keeps_it = !requested.contains(&e.id)
                && far_keeps[u].as_ref().is_some_and(|k| !k[s].is_empty());
            if keeps_it {
                waiting.push(name.to_string());
            }
        }
        let mut verdicts = Vec::new();
        for r in 0..reachable.len() {
            let reasons = keeps[r].as_ref().map(|k| k[s].clone()).unwrap_or_default();
            let was_held = e.replicas.contains(r);
            let keep = keeps_at(r, s);
            let action = match (was_held, keep) {
                (true, true) => Action::Keep,
                (false, true) if copied[r][s] => Action::Copy,
                (false, true) => Action::Missing,
                (false, false) => Action::Absent,
                (true, false) if requested.contains(&e.id) || waiting.is_empty() => Action::Forget,
                (true, false) => Action::Deferred,
            };
            let rep = &mut replicas[r];
            match action {
                Action::Keep => rep.kept += 1,
                Action::Copy => {
                    rep.kept += 1;
                    rep.copied += 1
                }
                Action::Missing => rep.missing += 1,
                Action::Deferred => rep.deferred += 1,
                Action::Forget | Action::Absent => {}
            }
            verdicts.push(Verdict {
                replica: reachable[r].to_string(),
                held: was_held,
                reasons,
                waiting_for: if action == Action::Deferred {
                    waiting.clone()
                } else {
                    Vec::new()
                },
                action,
            });
        }
        out.push(SnapshotPlan {
            id: e.id,
            time: e.snapshot.time,
            host: e.snapshot.host.clone(),
            paths: e.snapshot.paths.clone(),
            tags: e.snapshot.tags.clone(),
            group: groups[s].clone(),
            requested: requested.contains(&e.id),
            replicas: verdicts,
        });
    }

    // 3. Removals, per replica; one failing replica does not stop the rest.
    if !opts.dry_run {
        // Recorded before deleting: an interrupted forget must not look
        // like a rollback to the next command on this host.
        let gone: Vec<Id> = out
            .iter()
            .filter(|p| p.replicas.iter().any(|v| v.action == Action::Forget))
            .map(|p| p.id)
            .collect();
        repo.record_forgotten(&gone);
        for (r, rep) in replicas.iter_mut().enumerate().take(reachable.len()) {
            for p in &out {
                if p.replicas[r].action != Action::Forget {
                    continue;
                }
                let h = Handle::new(Kind::Snapshot, p.id.to_hex());
                match repo.replica(r).backend.delete(&h).await {
                    Ok(()) => rep.forgotten += 1,
                    Err(e) => {
                        rep.error = Some(crate::error::chain(&Error::backend(reachable[r], e)));
                        break;
                    }
                }
            }
        }
    } else {
        for (r, rep) in replicas.iter_mut().enumerate().take(reachable.len()) {
            rep.forgotten = out
                .iter()
                .filter(|p| p.replicas[r].action == Action::Forget)
                .count() as u64;
        }
    }
    Ok(ForgetReport {
        dry_run: opts.dry_run,
        snapshots: out,
        replicas,
    })
}

//! Prune's plan, pure: which packs each replica still needs, which it can
//! let go, and which partly used packs are worth repacking.
//!
//! Each replica is judged on its own snapshots (`live`: every blob they
//! reach). A live blob *claims* one pack holding it on that replica: packs
//! the replica has not marked claim first, then packs more replicas hold,
//! so a marked pack whose blobs
//! all have another home is freed, and one that a later backup started to
//! reuse (its blob has no other home) is claimed again and so un-marked.
//!
//! A pack is repacked as a whole for every replica holding it: its
//! *needed* blobs are those any holder claims, and the new packs holding
//! them go to every holder, so a pack name means the same bytes on every
//! replica (sync, repair and reads falling back from one replica to
//! another keep working). A replica with a shorter policy than another
//! holder may then keep a few blobs it does not need itself.

use std::collections::HashSet;

use crate::format::id::Id;
use crate::repo::ReplicaSet;

/// A pack as prune sees it.
#[derive(Clone, Debug)]
pub struct PackDesc {
    pub id: Id,
    /// Stored size.
    pub size: u64,
    /// Its blobs, with their stored lengths.
    pub blobs: Vec<(Id, u32)>,
    /// Replicas that both store it and describe it in an index file.
    pub holders: ReplicaSet,
    /// Replicas whose marks list it.
    pub marked: ReplicaSet,
}

/// What the replicas make of one pack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackUsage {
    /// Holders on which at least one blob of the pack is claimed.
    pub used_on: ReplicaSet,
    /// Positions (in [`PackDesc::blobs`]) of blobs some holder claims.
    pub needed: Vec<u32>,
    /// Stored bytes of those blobs.
    pub needed_bytes: u64,
}

/// When a partly used pack is repacked.
#[derive(Clone, Copy, Debug)]
pub struct RepackRules {
    /// Repack a pack whose unneeded share of its size is above this
    /// (0.0–1.0).
    pub max_unused: f64,
    /// Repack packs of at most this many bytes in total.
    pub max_repack: u64,
}

#[derive(Clone, Debug, Default)]
pub struct GcPlan {
    /// Parallel to the packs given.
    pub usage: Vec<PackUsage>,
    /// Positions of the packs to repack, most wasteful first.
    pub repack: Vec<usize>,
}

impl GcPlan {
    /// Whether replica `r` can let pack `p` go: it holds the pack but
    /// claims nothing in it, or the pack is being repacked (its needed
    /// blobs then live in the new packs).
    pub fn frees(&self, packs: &[PackDesc], p: usize, r: usize) -> bool {
        packs[p].holders.contains(r)
            && (!self.usage[p].used_on.contains(r) || self.repack.contains(&p))
    }
}

/// Plan prune over `packs`, with `live[r]` the blobs replica `r`'s
/// snapshots reach.
pub fn plan_gc(packs: &[PackDesc], live: &[HashSet<Id>], rules: RepackRules) -> GcPlan {
    let mut usage = vec![PackUsage::default(); packs.len()];
    let mut needed: Vec<HashSet<u32>> = vec![HashSet::new(); packs.len()];
    for (r, live) in live.iter().enumerate() {
        let mut order: Vec<usize> = (0..packs.len())
            .filter(|&p| packs[p].holders.contains(r))
            .collect();
        // Packs more replicas hold claim before packs fewer hold, so that
        // where an interrupted run left a blob in two packs, every replica
        // keeps the same one (the same pack names everywhere).
        order.sort_by_key(|&p| {
            (
                packs[p].marked.contains(r),
                std::cmp::Reverse(packs[p].holders.len()),
                packs[p].id,
            )
        });
        let mut claimed: HashSet<Id> = HashSet::new();
        for p in order {
            for (b, (id, _)) in packs[p].blobs.iter().enumerate() {
                if live.contains(id) && claimed.insert(*id) {
                    usage[p].used_on.insert(r);
                    needed[p].insert(b as u32);
                }
            }
        }
    }
    for (p, n) in needed.into_iter().enumerate() {
        let mut n: Vec<u32> = n.into_iter().collect();
        n.sort_unstable();
        usage[p].needed_bytes = n.iter().map(|&b| packs[p].blobs[b as usize].1 as u64).sum();
        usage[p].needed = n;
    }
    let mut candidates: Vec<(f64, usize)> = (0..packs.len())
        .filter(|&p| !usage[p].used_on.is_empty() && packs[p].size > 0)
        .filter_map(|p| {
            let blob_bytes: u64 = packs[p].blobs.iter().map(|b| b.1 as u64).sum();
            let unused = blob_bytes.saturating_sub(usage[p].needed_bytes);
            let share = unused as f64 / packs[p].size as f64;
            (unused > 0 && share > rules.max_unused).then_some((share, p))
        })
        .collect();
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(packs[a.1].id.cmp(&packs[b.1].id)));
    let mut budget = rules.max_repack;
    let mut repack = Vec::new();
    for (_, p) in candidates {
        if packs[p].size <= budget {
            budget -= packs[p].size;
            repack.push(p);
        }
    }
    GcPlan { usage, repack }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    /// Up to 3 replicas, 8 packs of blobs drawn from 24 ids (so blobs
    /// repeat across packs), random holders, marks and live sets.
    fn world() -> impl Strategy<Value = (Vec<PackDesc>, Vec<HashSet<Id>>, f64, u64)> {
        let pack = (
            proptest::collection::vec((0u8..24, 1u32..1000), 1..6),
            1u64..8,
            0u64..8,
        );
        (
            proptest::collection::vec(pack, 0..8),
            proptest::collection::vec(proptest::collection::hash_set(0u8..24, 0..24), 1..4),
            0.0f64..1.0,
            0u64..20_000,
        )
            .prop_map(|(packs, live, max_unused, max_repack)| {
                let n = live.len();
                let packs = packs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (blobs, holders, marked))| {
                        let mut seen = HashSet::new();
                        let blobs: Vec<(Id, u32)> = blobs
                            .into_iter()
                            .filter(|(b, _)| seen.insert(*b))
                            .map(|(b, l)| (id(b), l))
                            .collect();
                        let size = 40 + blobs.iter().map(|b| b.1 as u64).sum::<u64>();
                        PackDesc {
                            id: Id([100 + i as u8; 32]),
                            size,
                            blobs,
                            holders: ReplicaSet::from_bits(holders)
                                .intersection(ReplicaSet::all(n)),
                            marked: ReplicaSet::from_bits(marked).intersection(ReplicaSet::all(n)),
                        }
                    })
                    .collect();
                let live = live
                    .into_iter()
                    .map(|s| s.into_iter().map(id).collect())
                    .collect();
                (packs, live, max_unused, max_repack)
            })
    }

    /// The blobs replica `r` holds in `packs`.
    fn held(packs: &[PackDesc], r: usize) -> HashSet<Id> {
        packs
            .iter()
            .filter(|p| p.holders.contains(r))
            .flat_map(|p| p.blobs.iter().map(|b| b.0))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// After each replica drops what the plan frees and receives the
        /// repacked blobs, it still holds every live blob it held.
        #[test]
        fn no_live_blob_is_lost((packs, live, max_unused, max_repack) in world()) {
            let plan = plan_gc(&packs, &live, RepackRules { max_unused, max_repack });
            for (r, live) in live.iter().enumerate() {
                let before = held(&packs, r);
                let mut after: HashSet<Id> = HashSet::new();
                for (p, pack) in packs.iter().enumerate() {
                    if !pack.holders.contains(r) {
                        continue;
                    }
                    if plan.repack.contains(&p) {
                        after.extend(plan.usage[p].needed.iter().map(|&b| pack.blobs[b as usize].0));
                    } else if !plan.frees(&packs, p, r) {
                        after.extend(pack.blobs.iter().map(|b| b.0));
                    }
                }
                for b in live.intersection(&before) {
                    prop_assert!(after.contains(b), "replica {} lost {:?}", r, b);
                }
            }
        }

        /// Repacking respects its budget and threshold, and a pack nobody
        /// needs is never repacked (it is freed instead).
        #[test]
        fn repack_follows_the_rules((packs, live, max_unused, max_repack) in world()) {
            let plan = plan_gc(&packs, &live, RepackRules { max_unused, max_repack });
            let total: u64 = plan.repack.iter().map(|&p| packs[p].size).sum();
            prop_assert!(total <= max_repack);
            for &p in &plan.repack {
                prop_assert!(!plan.usage[p].used_on.is_empty());
                let blob_bytes: u64 = packs[p].blobs.iter().map(|b| b.1 as u64).sum();
                let unused = blob_bytes - plan.usage[p].needed_bytes;
                prop_assert!(unused as f64 / packs[p].size as f64 > max_unused);
            }
            for (p, u) in plan.usage.iter().enumerate() {
                prop_assert!(packs[p].holders.is_superset(u.used_on));
            }
        }
    }

    #[test]
    fn a_blob_in_two_packs_is_kept_in_the_one_more_replicas_hold() {
        let x = Id([1; 32]);
        // "solo" sorts first by id, but only replica 0 holds it.
        let solo = PackDesc {
            id: Id([0; 32]),
            size: 100,
            blobs: vec![(x, 100)],
            holders: ReplicaSet::single(0),
            marked: ReplicaSet::EMPTY,
        };
        let shared = PackDesc {
            id: Id([9; 32]),
            holders: ReplicaSet::all(2),
            ..solo.clone()
        };
        let live = vec![HashSet::from([x]), HashSet::from([x])];
        let rules = RepackRules {
            max_unused: 1.0,
            max_repack: 0,
        };
        let plan = plan_gc(&[solo.clone(), shared.clone()], &live, rules);
        let packs = [solo, shared];
        assert!(plan.frees(&packs, 0, 0), "{plan:?}");
        assert!(!plan.frees(&packs, 1, 0), "{plan:?}");
        assert!(!plan.frees(&packs, 1, 1), "{plan:?}");
    }

    #[test]
    fn unmarked_copies_claim_first() {
        let a = PackDesc {
            id: id(1),
            size: 100,
            blobs: vec![(id(9), 50)],
            holders: ReplicaSet::single(0),
            marked: ReplicaSet::EMPTY,
        };
        let b = PackDesc {
            id: id(0),
            marked: ReplicaSet::single(0),
            ..a.clone()
        };
        let live = vec![[id(9)].into_iter().collect()];
        let rules = RepackRules {
            max_unused: 0.1,
            max_repack: u64::MAX,
        };
        let plan = plan_gc(&[a.clone(), b.clone()], &live, rules);
        assert!(plan.usage[0].used_on.contains(0));
        assert!(plan.usage[1].used_on.is_empty());
        // A blob reused after its pack was marked, with no other home,
        // claims the marked pack again.
        let plan = plan_gc(&[b], &live, rules);
        assert!(plan.usage[0].used_on.contains(0));
    }
}

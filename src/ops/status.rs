//! `status`: which replica holds which snapshot, completely or not, and how
//! far each replica is behind.

use jiff::Timestamp;
use serde::Serialize;

use crate::error::Result;
use crate::repo::survey::{list_all, Listing, NeedsCache};
use crate::repo::Repository;

/// Whether one replica holds one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Presence {
    /// The snapshot and everything it needs are on the replica.
    Complete,
    /// The replica has no copy of the snapshot.
    Missing,
    /// The snapshot file is there but `packs` packs it needs are not (or
    /// are not in the replica's own index); `cairn sync` or `repair packs`.
    Incomplete { packs: u64 },
    /// Some of the snapshot's data is on no replica at all.
    Damaged,
    /// The replica could not be asked.
    Unreachable,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotStatus {
    pub id: String,
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// One entry per replica, in the order of [`Status::replicas`].
    pub replicas: Vec<Presence>,
    /// Per replica (same order): why its retention policy keeps the
    /// snapshot (empty: `forget` would remove it), or `None` when it has
    /// no policy. Empty when no policy was given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<Option<Vec<crate::retention::Reason>>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    /// Why the replica could not be used, if it could not.
    pub error: Option<String>,
    /// Snapshot files on the replica.
    pub snapshots: u64,
    /// Snapshots complete on the replica.
    pub complete: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Time of the newest snapshot complete on the replica: the replica
    /// can restore everything up to then.
    pub latest: Option<Timestamp>,
    /// When the last backup or sync completed on the replica (when its
    /// newest snapshot file was written), if the backend reports it.
    pub last_write: Option<Timestamp>,
    /// Snapshots complete on some replica but not on this one.
    pub behind_snapshots: u64,
    /// Bytes of packs this replica would need to catch up (what
    /// `cairn sync` would copy for those snapshots).
    pub behind_bytes: u64,
    /// The newest keyring generation the replica holds; behind the newest
    /// anywhere when it missed a key operation (`cairn sync` copies it).
    pub keyring_generation: Option<u64>,
    pub keyring_behind: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub replicas: Vec<ReplicaStatus>,
    pub snapshots: Vec<SnapshotStatus>,
}

impl Status {
    /// A replica unreachable; else data lost everywhere; else replicas
    /// behind; else ok.
    pub fn outcome(&self) -> crate::ops::Outcome {
        use crate::ops::Outcome;
        let names = |f: fn(&ReplicaStatus) -> bool| -> Vec<String> {
            self.replicas
                .iter()
                .filter(|r| f(r))
                .map(|r| r.name.clone())
                .collect()
        };
        let unreachable = names(|r| r.error.is_some());
        if !unreachable.is_empty() {
            Outcome::Unreachable {
                replicas: unreachable,
            }
        } else if self
            .snapshots
            .iter()
            .any(|s| s.replicas.contains(&Presence::Damaged))
        {
            Outcome::Damaged
        } else if !self.all_complete() || self.replicas.iter().any(|r| r.keyring_behind) {
            Outcome::Partial {
                replicas: names(|r| r.behind_snapshots > 0 || r.keyring_behind),
            }
        } else {
            Outcome::Ok
        }
    }

    /// Whether every replica is reachable and holds every snapshot.
    pub fn all_complete(&self) -> bool {
        self.replicas
            .iter()
            .all(|r| r.error.is_none() && r.behind_snapshots == 0)
            && self
                .snapshots
                .iter()
                .all(|s| s.replicas.iter().all(|p| *p == Presence::Complete))
    }
}

/// The retention policies to judge snapshots by, in `status`.
pub struct Retention<'a> {
    pub policies: &'a crate::ops::forget::Policies,
    pub tz: jiff::tz::TimeZone,
    pub now: Timestamp,
}

/// Survey every replica. Replicas that were not usable when the
/// repository was opened are listed last, with their error. With
/// `retention`, each snapshot says which replicas' policies keep it, and
/// why (judged over all snapshots, as `forget` does).
pub async fn status(repo: &Repository, retention: Option<&Retention<'_>>) -> Result<Status> {
    let listings = list_all(repo).await;
    let (index, _) = repo.load_index_files().await?;
    let snaps = repo.list_snapshots().await?;
    let mut cache = NeedsCache::default();
    let n = repo.replicas().len();
    let mut replicas: Vec<ReplicaStatus> = repo
        .replicas()
        .iter()
        .zip(&listings)
        .map(|(r, l)| ReplicaStatus {
            name: r.name.clone(),
            error: l.as_ref().err().map(|e| crate::error::chain(e)),
            snapshots: l.as_ref().map_or(0, |l| l.snapshots.len() as u64),
            complete: 0,
            packs: l.as_ref().map_or(0, |l| l.packs.len() as u64),
            pack_bytes: l.as_ref().map_or(0, Listing::pack_bytes),
            latest: None,
            last_write: l
                .as_ref()
                .ok()
                .and_then(|l| l.last_snapshot_write)
                .and_then(|t| Timestamp::try_from(t).ok()),
            behind_snapshots: 0,
            behind_bytes: 0,
            keyring_generation: None,
            keyring_behind: false,
        })
        .collect();
    let generations = crate::repo::keyring::list_generations(repo.replicas()).await;
    let newest = generations.first().map(|(g, _)| *g);
    for (i, r) in replicas.iter_mut().enumerate() {
        r.keyring_generation = generations
            .iter()
            .find(|(_, on)| on.contains(i))
            .map(|(g, _)| *g);
        r.keyring_behind = r.error.is_none() && r.keyring_generation < newest;
    }
    // Packs each replica lacks for snapshots complete elsewhere, counted once.
    let mut lacking: Vec<std::collections::HashSet<u32>> = vec![Default::default(); n];
    let mut out = Vec::new();
    for entry in &snaps {
        let needs = cache.of_snapshot(repo, &index, &entry.snapshot).await;
        let on_some = |p: &u32| {
            let id = index.packs[*p as usize].id;
            listings
                .iter()
                .any(|l| l.as_ref().is_ok_and(|l| l.packs.contains_key(&id)))
        };
        let damaged = needs.is_broken() || !needs.packs.iter().all(on_some);
        let mut presence = Vec::with_capacity(n);
        for (i, l) in listings.iter().enumerate() {
            let p = match l {
                Err(_) => Presence::Unreachable,
                Ok(_) if damaged => Presence::Damaged,
                Ok(l) if !l.snapshots.contains(&entry.id.to_hex()) => Presence::Missing,
                Ok(l) => match needs.missing_on(&index, i, l) {
                    0 => Presence::Complete,
                    packs => Presence::Incomplete { packs },
                },
            };
            presence.push(p);
        }
        let complete_somewhere = presence.contains(&Presence::Complete);
        for (i, p) in presence.iter().enumerate() {
            let r = &mut replicas[i];
            match p {
                Presence::Complete => {
                    r.complete += 1;
                    r.latest = r.latest.max(Some(entry.snapshot.time));
                }
                Presence::Missing | Presence::Incomplete { .. } if complete_somewhere => {
                    r.behind_snapshots += 1;
                    let Ok(l) = &listings[i] else { continue };
                    for &pk in &needs.packs {
                        let info = &index.packs[pk as usize];
                        if !l.packs.contains_key(&info.id) && lacking[i].insert(pk) {
                            r.behind_bytes += info.size;
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(SnapshotStatus {
            id: entry.id.to_hex(),
            time: entry.snapshot.time,
            host: entry.snapshot.host.clone(),
            paths: entry.snapshot.paths.clone(),
            tags: entry.snapshot.tags.clone(),
            replicas: presence,
            retention: Vec::new(),
        });
    }
    let restorable = out
        .iter()
        .filter(|s| s.replicas.contains(&Presence::Complete))
        .count() as u64;
    for u in repo.unavailable() {
        replicas.push(ReplicaStatus {
            name: u.name.clone(),
            error: Some(crate::error::chain(&u.error)),
            snapshots: 0,
            complete: 0,
            packs: 0,
            pack_bytes: 0,
            latest: None,
            last_write: None,
            behind_snapshots: restorable,
            behind_bytes: 0,
            keyring_generation: None,
            keyring_behind: false,
        });
        for s in &mut out {
            s.replicas.push(Presence::Unreachable);
        }
    }
    if let Some(ret) = retention {
        let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
        let entries: Vec<&crate::repo::SnapshotEntry> = snaps.iter().collect();
        let keeps = crate::ops::forget::judge(ret.policies, &names, &entries, &ret.tz, ret.now)?;
        for (s, snap) in out.iter_mut().enumerate() {
            snap.retention = keeps
                .iter()
                .map(|k| k.as_ref().map(|k| k[s].clone()))
                .collect();
        }
    }
    Ok(Status {
        replicas,
        snapshots: out,
    })
}

/// A short id for display.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

//! Repacking: the needed blobs of partly used packs are copied into new
//! packs, built once and stored with the same bytes (and so the same
//! name) on every replica that holds the old ones. A source pack is read
//! from a local replica when one holds it (the fetch order), and every blob is
//! authenticated and checked against its id before it is copied.

use std::collections::{BTreeMap, HashSet};

use cairn_backends::Kind;

use super::world::World;
use super::PruneReport;
use crate::error::Result;
use crate::format::id::Id;
use crate::ops::packer::{copy_blobs, PackWriter};
use crate::repo::{ReplicaSet, Repository};
use crate::retention::GcPlan;

/// Repack `gc.repack`, grouped by the replicas holding each pack; the new
/// packs and their index files are added to `w`.
pub(super) async fn run(
    repo: &Repository,
    w: &mut World,
    gc: &GcPlan,
    report: &mut PruneReport,
) -> Result<()> {
    let mut groups: BTreeMap<u64, (ReplicaSet, Vec<usize>)> = BTreeMap::new();
    for &p in &gc.repack {
        let h = w.packs[p].holders;
        groups.entry(bits(h)).or_insert((h, Vec::new())).1.push(p);
    }
    for (_, (holders, sources)) in groups {
        let mut out = PackWriter::new(repo, holders);
        let mut copied: HashSet<Id> = HashSet::new();
        for p in sources {
            repo.check_cancelled()?;
            let needed: HashSet<Id> = gc.usage[p]
                .needed
                .iter()
                .map(|&b| w.packs[p].blobs[b as usize].0)
                .collect();
            let desc = &w.packs[p];
            copy_blobs(
                repo,
                desc.id,
                desc.holders,
                Some(&needed),
                &mut copied,
                &mut out,
            )
            .await?;
        }
        let new = out.finish().await?;
        for r in holders.iter() {
            let rep = &mut report.replicas[r];
            rep.new_packs += new.len() as u64;
            rep.new_bytes += new.iter().map(|p| p.size).sum::<u64>();
        }
        // The new packs' index files, on every holder, before anything
        // marks the old packs: the blobs stay findable throughout.
        let files = repo.seal_index_files(&new);
        for r in holders.iter() {
            for (name, data) in &files {
                repo.put_doc(repo.replica(r), Kind::Index, name, data.clone())
                    .await?;
                report.replicas[r].index_written += 1;
                if let Some(l) = w.listings[r].as_mut() {
                    l.index.insert(name.clone());
                }
            }
            w.index.add(r, &new);
        }
        for p in new {
            for r in holders.iter() {
                if let Some(l) = w.listings[r].as_mut() {
                    l.packs.insert(p.id, p.size);
                }
            }
            w.packs.push(crate::retention::PackDesc {
                id: p.id,
                size: p.size,
                blobs: p.blobs.iter().map(|b| (b.id, b.stored_len)).collect(),
                holders,
                marked: ReplicaSet::EMPTY,
            });
            w.descs.insert(p.id, p);
        }
    }
    Ok(())
}

fn bits(s: ReplicaSet) -> u64 {
    s.iter().fold(0, |acc, i| acc | (1u64 << i))
}

//! Repacking: the needed blobs of partly used packs are copied into new
//! packs, built once and stored with the same bytes (and so the same
//! name) on every replica that holds the old ones. A source pack is read
//! from a local replica when one holds it (the fetch order), and every blob is
//! authenticated and checked against its id before it is copied.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use cairn_backends::{Handle, Kind, PutMode};

use super::world::World;
use super::PruneReport;
use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::crypto::TAG_LEN;
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::pack::{self, BlobKind, PackBuilder};
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
        let mut out = Writer {
            repo,
            holders,
            builders: [None, None],
            done: Vec::new(),
        };
        let mut copied: HashSet<Id> = HashSet::new();
        for p in sources {
            repo.check_cancelled()?;
            let needed: HashSet<Id> = gc.usage[p]
                .needed
                .iter()
                .map(|&b| w.packs[p].blobs[b as usize].0)
                .collect();
            copy_needed(repo, w, p, &needed, &mut copied, &mut out).await?;
        }
        out.flush_all().await?;
        let new = out.done;
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

/// Read pack `p` (a local holder first) and hand its needed blobs, once
/// each, to `out`.
async fn copy_needed(
    repo: &Repository,
    w: &World,
    p: usize,
    needed: &HashSet<Id>,
    copied: &mut HashSet<Id>,
    out: &mut Writer<'_>,
) -> Result<()> {
    let desc = &w.packs[p];
    let h = Handle::new(Kind::Pack, desc.id.to_hex());
    // Local holders are asked first (fetch order), buckets after.
    let data = repo.get_verified_from(&h, desc.holders).await?.0;
    let keyring = repo.keyring();
    let (header, entries) =
        pack::read_footer(&data, &keyring.repo_id, |e| keyring.epoch_key(e).cloned())
            .map_err(|e| Error::Corrupt(format!("{h}: {e}")))?;
    let ek = keyring
        .epoch_key(header.epoch)
        .ok_or_else(|| Error::Corrupt(format!("{h}: unknown key epoch {}", header.epoch)))?;
    let mut found = 0;
    for e in entries {
        if !needed.contains(&e.id) {
            continue;
        }
        found += 1;
        if !copied.insert(e.id) {
            continue;
        }
        let range = e.offset as usize..e.offset as usize + e.stored_len as usize;
        let payload = pack::open_blob(&header, ek, &keyring.repo_id, e.seq, data[range].to_vec())
            .map_err(|source| Error::Crypto {
            what: format!("{h}: blob {}", e.id.short()),
            source,
        })?;
        let plain = codec::decompress(e.codec, payload.clone(), e.raw_len as usize)
            .map_err(|err| Error::Corrupt(format!("{h}: blob {}: {err}", e.id.short())))?;
        if keyring.chunk_id(&plain) != e.id {
            return Err(Error::Corrupt(format!(
                "{h}: blob {} does not hash to its id",
                e.id.short()
            )));
        }
        out.add(e.id, e.kind, e.codec, e.raw_len, &payload).await?;
    }
    if found < needed.len() {
        return Err(Error::Corrupt(format!(
            "{h}: lacks {} of the blobs its index entry lists (run `cairn check --read-data`)",
            needed.len() - found
        )));
    }
    Ok(())
}

/// New packs being filled (one for data blobs, one for trees), stored on
/// every replica of `holders` as each fills up.
struct Writer<'a> {
    repo: &'a Repository,
    holders: ReplicaSet,
    builders: [Option<PackBuilder>; 2],
    done: Vec<IndexPack>,
}

impl Writer<'_> {
    async fn add(
        &mut self,
        id: Id,
        kind: BlobKind,
        codec: codec::Codec,
        raw_len: u32,
        payload: &[u8],
    ) -> Result<()> {
        let slot = usize::from(kind == BlobKind::Tree);
        let target = self.repo.config().pack_size as usize;
        if self.builders[slot]
            .as_ref()
            .is_some_and(|b| b.would_overflow(payload.len() + TAG_LEN, target))
        {
            self.flush(slot).await?;
        }
        let keyring = self.repo.keyring();
        let epoch = keyring.current();
        self.builders[slot]
            .get_or_insert_with(|| PackBuilder::new(epoch.id, &epoch.key, &keyring.repo_id, target))
            .add(id, kind, codec, raw_len, payload);
        Ok(())
    }

    async fn flush(&mut self, slot: usize) -> Result<()> {
        let Some(b) = self.builders[slot].take() else {
            return Ok(());
        };
        let p = b.finish();
        let h = Handle::new(Kind::Pack, p.id.to_hex());
        let data = Bytes::from(p.data);
        for r in self.holders.iter() {
            let replica = self.repo.replica(r);
            match replica.backend.put(&h, data.clone(), PutMode::Create).await {
                Ok(()) => {}
                // Same name, same bytes.
                Err(e) if e.kind() == cairn_backends::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::backend(&replica.name, e)),
            }
        }
        self.done.push(IndexPack {
            id: p.id,
            size: data.len() as u64,
            header: p.header,
            blobs: p.entries,
        });
        Ok(())
    }

    async fn flush_all(&mut self) -> Result<()> {
        self.flush(0).await?;
        self.flush(1).await
    }
}

//! Copying blobs out of existing packs into new ones under the current
//! data-key epoch: prune's repacking and key re-encryption share it. A
//! source pack is read once from the cheapest replica holding it (local
//! first), every blob is authenticated and checked against its id, and
//! each new pack is built once and stored with the same bytes (so the same
//! name) on every replica that held the old ones.

use std::collections::HashSet;

use bytes::Bytes;
use cairn_backends::{Handle, Kind, PutMode};

use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::crypto::TAG_LEN;
use crate::format::id::Id;
use crate::format::index::IndexPack;
use crate::format::pack::{self, BlobKind, PackBuilder};
use crate::repo::{ReplicaSet, Repository};

/// Read pack `pack` from one of `holders` (a local one first, the fetch
/// order) and hand its blobs — only those in `needed`, when given — once
/// each, to `out`. Every blob is authenticated and checked against its id.
/// Returns the stored bytes read.
pub(crate) async fn copy_blobs(
    repo: &Repository,
    pack: Id,
    holders: ReplicaSet,
    needed: Option<&HashSet<Id>>,
    copied: &mut HashSet<Id>,
    out: &mut PackWriter<'_>,
) -> Result<u64> {
    let h = Handle::new(Kind::Pack, pack.to_hex());
    let data = repo.get_verified_from(&h, holders).await?.0;
    let keyring = repo.keyring();
    let (header, entries) =
        pack::read_footer(&data, &keyring.repo_id, |e| keyring.epoch_key(e).cloned())
            .map_err(|e| Error::Corrupt(format!("{h}: {e}")))?;
    let ek = keyring
        .epoch_key(header.epoch)
        .ok_or_else(|| Error::Corrupt(format!("{h}: unknown key epoch {}", header.epoch)))?;
    let mut found = 0;
    for e in entries {
        if needed.is_some_and(|n| !n.contains(&e.id)) {
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
    if let Some(needed) = needed.filter(|n| found < n.len()) {
        return Err(Error::Corrupt(format!(
            "{h}: lacks {} of the blobs its index entry lists (run `cairn check --read-data`)",
            needed.len() - found
        )));
    }
    Ok(data.len() as u64)
}

/// New packs being filled (one for data blobs, one for trees) under the
/// current epoch, stored on every replica of `holders` as each fills up:
/// built once, so every holder gets the same bytes and name.
pub(crate) struct PackWriter<'a> {
    repo: &'a Repository,
    holders: ReplicaSet,
    builders: [Option<PackBuilder>; 2],
    done: Vec<IndexPack>,
}

impl<'a> PackWriter<'a> {
    pub(crate) fn new(repo: &'a Repository, holders: ReplicaSet) -> PackWriter<'a> {
        PackWriter {
            repo,
            holders,
            builders: [None, None],
            done: Vec::new(),
        }
    }

    /// Store what is still being filled; the packs written, for the index.
    pub(crate) async fn finish(mut self) -> Result<Vec<IndexPack>> {
        self.flush(0).await?;
        self.flush(1).await?;
        Ok(self.done)
    }

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
}

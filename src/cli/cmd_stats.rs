//! `cairn stats` and `cairn cat`.

use std::collections::HashSet;

use anyhow::bail;
use cairn::backends::{Handle, Kind};
use cairn::format::crypto::ObjectKind;
use cairn::format::tree::NodeKind;
use cairn::repo::{open_doc, Repository};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::output::{self, bytes};
use super::{exit, repos, Global, UsageError};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only this snapshot (id, prefix or `latest`) [default: all].
    pub snapshot: Option<String>,
}

pub async fn stats(g: &Global, a: StatsArgs) -> anyhow::Result<i32> {
    let repo = repos::open(g, false).await?;
    let _lock = repo.lock(cairn::repo::LockMode::Shared, "stats").await?;
    let snaps = repo.list_snapshots().await?;
    let chosen: Vec<_> = match &a.snapshot {
        Some(s) => vec![Repository::find_snapshot(&snaps, s)?.clone()],
        None => snaps.clone(),
    };
    let index = repo.load_index().await?;
    let (mut files, mut restore_size) = (0u64, 0u64);
    let mut blobs = HashSet::new();
    let mut trees_seen = HashSet::new();
    for s in &chosen {
        let mut stack = vec![s.snapshot.tree.clone()];
        while let Some(ids) = stack.pop() {
            blobs.extend(ids.iter().copied());
            let first = trees_seen.insert(ids.clone());
            let tree = repo.load_tree(&index, &ids).await?;
            for n in &tree.nodes {
                if n.kind == NodeKind::File {
                    files += 1;
                    restore_size += n.size;
                    if first {
                        blobs.extend(n.content.iter().copied());
                    }
                }
                if n.kind == NodeKind::Dir {
                    stack.push(n.subtree.clone());
                }
            }
        }
    }
    let (mut raw, mut stored) = (0u64, 0u64);
    for id in &blobs {
        if let Some((_, loc)) = index.get(id) {
            raw += loc.raw_len as u64;
            stored += loc.stored_len as u64;
        }
    }
    let mut per_replica = Vec::new();
    for r in repo.replicas() {
        let packs = r
            .backend
            .list(Kind::Pack)
            .await
            .map_err(|e| cairn::Error::backend(&r.name, e))?;
        per_replica.push(json!({"name": r.name, "packs": packs.len(), "bytes": packs.iter().map(|p| p.size).sum::<u64>()}));
    }
    if g.json {
        output::print_json(&json!({
            "type": "stats", "snapshots": chosen.len(), "files": files, "restore_size": restore_size,
            "unique_blobs": blobs.len(), "unique_raw_bytes": raw, "unique_stored_bytes": stored,
            "replicas": per_replica,
        }));
    } else {
        println!("snapshots:            {}", chosen.len());
        println!("files:                {files}");
        println!("restore size:         {}", bytes(restore_size));
        println!(
            "unique blobs:         {} ({} raw, {} stored)",
            blobs.len(),
            bytes(raw),
            bytes(stored)
        );
        if stored > 0 {
            println!(
                "dedup + compression:  {:.2}x",
                restore_size as f64 / stored as f64
            );
        }
        for r in &per_replica {
            println!(
                "replica {}: {} packs, {}",
                r["name"].as_str().unwrap_or(""),
                r["packs"],
                bytes(r["bytes"].as_u64().unwrap_or(0))
            );
        }
    }
    Ok(exit::OK)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CatWhat {
    Config,
    Snapshot,
    Index,
    Keys,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    pub what: CatWhat,
    /// Object id (for snapshot and index; `latest` works for snapshots).
    pub id: Option<String>,
    /// Read from this replica first; others serve what it cannot
    /// [default: a local replica first].
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
}

pub async fn cat(g: &Global, a: CatArgs) -> anyhow::Result<i32> {
    let sel = repos::select(g)?;
    match a.what {
        CatWhat::Config => {
            // Public: readable without the passphrase.
            let r = &sel.replicas[0];
            let data =
                r.backend
                    .get(&Handle::config(), None)
                    .await
                    .map_err(|e| match e.kind() {
                        cairn::backends::ErrorKind::NotFound => {
                            cairn::Error::NotARepository(r.name.clone())
                        }
                        _ => cairn::Error::backend(&r.name, e),
                    })?;
            let v: serde_json::Value = serde_json::from_slice(&data)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        CatWhat::Keys => {
            let r = &sel.replicas[0];
            let mut out = Vec::new();
            for m in r
                .backend
                .list(Kind::Key)
                .await
                .map_err(|e| cairn::Error::backend(&r.name, e))?
            {
                let d = r
                    .backend
                    .get(&m.handle, None)
                    .await
                    .map_err(|e| cairn::Error::backend(&r.name, e))?;
                let slot: cairn::format::keys::KeySlot = serde_json::from_slice(&d)?;
                out.push(
                    json!({"id": m.handle.name, "created": slot.created, "host": slot.host,
                                "username": slot.username, "kdf": slot.kdf, "params": slot.params}),
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        CatWhat::Snapshot => {
            let Some(id) = a.id else {
                bail!(UsageError("cat snapshot needs an id".into()))
            };
            let repo = repos::open_from(g, a.from.as_deref()).await?;
            let snaps = repo.list_snapshots().await?;
            let s = Repository::find_snapshot(&snaps, &id)?;
            println!("{}", serde_json::to_string_pretty(&s.snapshot)?);
            output::report_fallbacks(g, &repo);
        }
        CatWhat::Index => {
            let Some(id) = a.id else {
                bail!(UsageError("cat index needs an id".into()))
            };
            let repo = repos::open_from(g, a.from.as_deref()).await?;
            let h = Handle::new(Kind::Index, &id);
            let data = repo.get_verified(&h, repo.all()).await?;
            let plain = open_doc(repo.keyring(), ObjectKind::Index, &h.to_string(), &data)?;
            let packs = cairn::format::index::decode(&plain)
                .map_err(|e| cairn::Error::Corrupt(e.to_string()))?;
            let v: Vec<_> = packs
                .iter()
                .map(|p| json!({"pack": p.id.to_hex(), "size": p.size, "epoch": p.header.epoch,
                    "blobs": p.blobs.iter().map(|b| json!({"id": b.id.to_hex(), "kind": b.kind,
                        "offset": b.offset, "stored_len": b.stored_len, "raw_len": b.raw_len})).collect::<Vec<_>>()}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
            output::report_fallbacks(g, &repo);
        }
    }
    Ok(exit::OK)
}

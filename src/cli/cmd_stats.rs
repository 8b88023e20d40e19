//! `cairn stats` and `cairn cat`.

use anyhow::bail;
use cairn::backends::Handle;
use cairn::ops::stats;
use cairn::repo::{key_slots, Repository};
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
    let st = stats::stats(&repo, a.snapshot.as_deref()).await?;
    if g.json {
        let mut v = serde_json::to_value(&st).expect("stats serialize");
        v["type"] = json!("stats");
        output::print_json(&v);
    } else {
        println!("snapshots:            {}", st.snapshots);
        println!("files:                {}", st.files);
        println!("restore size:         {}", bytes(st.restore_size));
        println!(
            "unique blobs:         {} ({} raw, {} stored)",
            st.unique_blobs,
            bytes(st.unique_raw_bytes),
            bytes(st.unique_stored_bytes)
        );
        if st.unique_stored_bytes > 0 {
            println!(
                "dedup + compression:  {:.2}x",
                st.restore_size as f64 / st.unique_stored_bytes as f64
            );
        }
        for r in &st.replicas {
            println!("replica {}: {} packs, {}", r.name, r.packs, bytes(r.bytes));
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
            // What identifies a slot, not the wrapped keyring.
            let out: Vec<_> = key_slots(&sel.replicas[0])
                .await?
                .into_iter()
                .map(|(name, slot)| {
                    json!({"id": name, "created": slot.created, "host": slot.host,
                           "username": slot.username, "kdf": slot.kdf, "params": slot.params})
                })
                .collect();
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
            let packs = repo.read_index_file(&id, repo.all()).await?;
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

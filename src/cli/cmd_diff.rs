//! `cairn diff`: added (+), removed (-), modified (M) and type-changed (T)
//! paths between two snapshots. Directories whose tree ids are equal are
//! skipped without being read.

use std::collections::BTreeMap;

use cairn::format::tree::{Node, NodeKind};
use cairn::repo::Repository;
use clap::Args;
use serde_json::json;

use super::{exit, output, repos, Global};

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub snapshot1: String,
    pub snapshot2: String,
    /// Read from this replica first; others serve what it cannot
    /// [default: a local replica first].
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
}

fn modified(a: &Node, b: &Node) -> bool {
    a.content != b.content
        || a.mode != b.mode
        || a.mtime != b.mtime
        || a.target != b.target
        || a.uid != b.uid
        || a.gid != b.gid
}

pub async fn run(g: &Global, a: DiffArgs) -> anyhow::Result<i32> {
    let repo = repos::open_from(g, a.from.as_deref()).await?;
    let _lock = repo.lock(cairn::repo::LockMode::Shared, "diff").await?;
    let snaps = repo.list_snapshots().await?;
    let s1 = Repository::find_snapshot(&snaps, &a.snapshot1)?;
    let s2 = Repository::find_snapshot(&snaps, &a.snapshot2)?;
    let index = repo.load_index().await?;
    let mut changes: Vec<(char, String)> = Vec::new();
    let mut stack = vec![(
        String::new(),
        Some(s1.snapshot.tree.clone()),
        Some(s2.snapshot.tree.clone()),
    )];
    while let Some((dir, t1, t2)) = stack.pop() {
        if t1 == t2 {
            continue;
        }
        let load = |ids: Option<Vec<cairn::format::id::Id>>| {
            let (repo, index) = (&repo, &index);
            async move {
                match ids {
                    Some(ids) => repo.load_tree(index, &ids).await.map(|t| t.nodes),
                    None => Ok(Vec::new()),
                }
            }
        };
        let mut both: BTreeMap<Vec<u8>, (Option<Node>, Option<Node>)> = BTreeMap::new();
        for n in load(t1).await? {
            let k = n.name.0.clone();
            both.entry(k).or_default().0 = Some(n);
        }
        for n in load(t2).await? {
            let k = n.name.0.clone();
            both.entry(k).or_default().1 = Some(n);
        }
        for (name, (x, y)) in both {
            let path = format!("{dir}/{}", String::from_utf8_lossy(&name));
            let sub = |n: &Option<Node>| {
                n.as_ref()
                    .filter(|n| n.kind == NodeKind::Dir)
                    .map(|n| n.subtree.clone())
            };
            match (&x, &y) {
                (Some(_), None) => changes.push(('-', path.clone())),
                (None, Some(_)) => changes.push(('+', path.clone())),
                (Some(p), Some(q)) if p.kind != q.kind => changes.push(('T', path.clone())),
                (Some(p), Some(q)) if p.kind != NodeKind::Dir && modified(p, q) => {
                    changes.push(('M', path.clone()))
                }
                _ => {}
            }
            if sub(&x).is_some() || sub(&y).is_some() {
                stack.push((path, sub(&x), sub(&y)));
            }
        }
    }
    changes.sort_by(|a, b| a.1.cmp(&b.1));
    if g.json {
        output::print_json(&json!({
            "type": "diff",
            "from": s1.id.to_hex(),
            "to": s2.id.to_hex(),
            "changes": changes.iter().map(|(c, p)| json!({"change": c.to_string(), "path": p})).collect::<Vec<_>>(),
        }));
    } else {
        println!("comparing snapshot {} to {}:", s1.id.short(), s2.id.short());
        for (c, p) in &changes {
            println!("{c}    {p}");
        }
        let count = |k| changes.iter().filter(|(c, _)| *c == k).count();
        println!(
            "{} added, {} removed, {} modified, {} type changed",
            count('+'),
            count('-'),
            count('M'),
            count('T')
        );
    }
    output::report_fallbacks(g, &repo);
    Ok(exit::OK)
}

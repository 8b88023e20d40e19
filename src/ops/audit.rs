//! The key-management audit trail on the replicas (format in
//! [`crate::format::audit`]): appending an entry to every replica, and
//! reading and verifying each replica's trail (`cairn key audit`).

use bytes::Bytes;
use cairn_backends::{ErrorKind, Handle, Kind, PutMode};
use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::audit::{
    audit_key, entry_name, seal_entry, verify, AuditEntry, AuditProblem, MAX_ENTRIES,
    MAX_ENTRY_BYTES,
};
use crate::format::id::Id;
use crate::repo::Repository;

/// One replica's trail.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaAudit {
    pub replica: String,
    pub entries: Vec<AuditEntry>,
    pub problems: Vec<AuditProblem>,
    /// Why the trail could not be read.
    pub error: Option<String>,
}

/// Read and verify the trail of every replica.
pub async fn read_audit(repo: &Repository) -> Result<Vec<ReplicaAudit>> {
    let key = audit_key(&repo.keyring().id_key, &repo.keyring().repo_id);
    let mut out = Vec::new();
    for r in repo.replicas() {
        let mut objects = Vec::new();
        let mut oversized = Vec::new();
        let listed = r.backend.list(Kind::Audit).await;
        let metas = match listed {
            Ok(m) => m,
            Err(e) => {
                out.push(ReplicaAudit {
                    replica: r.name.clone(),
                    entries: Vec::new(),
                    problems: Vec::new(),
                    error: Some(crate::error::chain(&Error::backend(&r.name, e))),
                });
                continue;
            }
        };
        for m in metas.into_iter().take(MAX_ENTRIES) {
            if m.size > MAX_ENTRY_BYTES {
                oversized.push(AuditProblem {
                    object: m.handle.to_string(),
                    message: format!("{} bytes, not an audit entry; not read", m.size),
                });
                continue;
            }
            let data = r.get_at_most(&m.handle, MAX_ENTRY_BYTES).await?;
            objects.push((m.handle.name, data.to_vec()));
        }
        let (entries, mut problems) = verify(&key, &repo.keyring().repo_id, objects);
        problems.extend(oversized);
        out.push(ReplicaAudit {
            replica: r.name.clone(),
            entries,
            problems,
            error: None,
        });
    }
    Ok(out)
}

/// Append an entry for `operation` to every replica's trail. It follows
/// the longest trail any replica holds, so every replica gets the same
/// entry (one that lags shows the gap until it is brought up to date).
pub async fn record(repo: &Repository, operation: &str, detail: &str, outcome: &str) -> Result<()> {
    let key = audit_key(&repo.keyring().id_key, &repo.keyring().repo_id);
    for _attempt in 0..5 {
        // The newest entry anywhere, and its stored bytes.
        let mut head: Option<(u64, Vec<u8>)> = None;
        for r in repo.replicas() {
            let metas = r
                .backend
                .list(Kind::Audit)
                .await
                .map_err(|e| Error::backend(&r.name, e))?;
            let Some(last) = metas
                .iter()
                .filter(|m| m.size <= MAX_ENTRY_BYTES)
                .filter_map(|m| Some((m.handle.name.parse::<u64>().ok()?, m)))
                .max_by_key(|(s, _)| *s)
            else {
                continue;
            };
            if head.as_ref().is_some_and(|(s, _)| *s >= last.0) {
                continue;
            }
            let data = r.get_at_most(&last.1.handle, MAX_ENTRY_BYTES).await?;
            head = Some((last.0, data.to_vec()));
        }
        let (seq, prev) = match &head {
            Some((s, data)) => (s + 1, Id::of_stored(data).to_hex()),
            None => (1, String::new()),
        };
        let entry = AuditEntry {
            seq,
            prev,
            time: Timestamp::now(),
            user: crate::sys::username(),
            host: crate::sys::hostname(),
            operation: operation.into(),
            slot: repo.opened_slot().map(str::to_string),
            epoch: repo.keyring().current_epoch,
            replicas: repo.replicas().iter().map(|r| r.name.clone()).collect(),
            outcome: outcome.into(),
            detail: detail.into(),
        };
        let data = Bytes::from(seal_entry(&key, &repo.keyring().repo_id, &entry));
        let h = Handle::new(Kind::Audit, entry_name(seq));
        let mut raced = false;
        for r in repo.replicas() {
            match r.backend.put(&h, data.clone(), PutMode::Create).await {
                Ok(()) => {}
                // Another key operation took this number: start again.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    raced = true;
                    break;
                }
                Err(e) => return Err(Error::backend(&r.name, e)),
            }
        }
        if !raced {
            return Ok(());
        }
    }
    Err(Error::Invalid(
        "the audit trail is being written by another process; try again".into(),
    ))
}

/// Copy to replica `t` the audit entries the replicas in `from` hold and
/// it lacks (entries are never deleted, so a missing one is only behind).
/// An entry is copied only if it opens with the repository's audit key, so
/// junk planted on one replica does not spread. Returns how many were (or,
/// in a dry run, would be) copied.
pub(crate) async fn copy_missing(
    repo: &Repository,
    t: usize,
    from: crate::repo::ReplicaSet,
    dry_run: bool,
) -> Result<u64> {
    use crate::format::crypto::{open_document, ObjectKind};
    let key = audit_key(&repo.keyring().id_key, &repo.keyring().repo_id);
    let target = repo.replica(t);
    let have: std::collections::HashSet<String> = target
        .backend
        .list(Kind::Audit)
        .await
        .map_err(|e| Error::backend(&target.name, e))?
        .into_iter()
        .map(|m| m.handle.name)
        .collect();
    let mut done = std::collections::HashSet::new();
    for s in from.iter() {
        let src = repo.replica(s);
        let Ok(metas) = src.backend.list(Kind::Audit).await else {
            continue;
        };
        for m in metas {
            let name = m.handle.name.clone();
            if have.contains(&name) || done.contains(&name) || m.size > MAX_ENTRY_BYTES {
                continue;
            }
            let Ok(data) = src.get_at_most(&m.handle, MAX_ENTRY_BYTES).await else {
                continue;
            };
            let authentic = open_document(&data, ObjectKind::Audit, &repo.keyring().repo_id, |e| {
                (e == 0).then_some(&key)
            })
            .is_ok();
            if !authentic {
                tracing::warn!("{}: {} does not open; not copied", src.name, m.handle);
                continue;
            }
            if !dry_run {
                match target.backend.put(&m.handle, data, PutMode::Create).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::backend(&target.name, e)),
                }
            }
            done.insert(name);
        }
    }
    Ok(done.len() as u64)
}

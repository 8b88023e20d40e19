//! Repository locks.

use bytes::Bytes;
use cairn_backends::{Handle, Kind, PutMode};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Repository;
use crate::format::crypto::ObjectKind;
use crate::format::id::Id;

/// A lock object written at the start of a command (see docs/format.md).
#[derive(Debug, Serialize, Deserialize)]
pub struct LockInfo {
    pub purpose: String,
    pub host: String,
    pub pid: u32,
    pub time: Timestamp,
    pub exclusive: bool,
}

impl Repository {
    /// Write a shared lock object on every replica. Locks are advisory: they
    /// let a later exclusive command (prune) see that a backup is running.
    /// A replica that refuses the lock is left to fail on its first write.
    pub async fn lock(&self, purpose: &str) -> Vec<(usize, Handle)> {
        let info = LockInfo {
            purpose: purpose.to_string(),
            host: crate::sys::hostname(),
            pid: std::process::id(),
            time: Timestamp::now(),
            exclusive: false,
        };
        let sealed = Bytes::from(self.keyring.seal(
            ObjectKind::Lock,
            &serde_json::to_vec(&info).expect("lock serializes"),
        ));
        let h = Handle::new(Kind::Lock, Id::of_stored(&sealed).to_hex());
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            match r.backend.put(&h, sealed.clone(), PutMode::Create).await {
                Ok(()) => out.push((i, h.clone())),
                Err(e) => tracing::warn!("{}: cannot write lock: {e}", r.name),
            }
        }
        out
    }

    /// Remove the locks written by [`Repository::lock`].
    pub async fn unlock(&self, locks: Vec<(usize, Handle)>) {
        for (i, h) in locks {
            if let Err(e) = self.replicas[i].backend.delete(&h).await {
                tracing::warn!("{}: cannot remove lock {h}: {e}", self.replicas[i].name);
            }
        }
    }
}

//! Repository locks: shared (backup, restore, check, sync, ls) and
//! exclusive (repair, later prune's delete phase).
//!
//! A lock is one sealed object `locks/<random id>` on every replica,
//! created create-only and rewritten every [`LockOptions::refresh_every`]
//! with a new time while it is held. A lock conflicts with ours when one of
//! the two is exclusive, unless it is *stale*: not refreshed for
//! [`LockOptions::stale_after`] (its holder stopped refreshing it, so it is
//! gone or hung), or written on this host by a process that no longer
//! exists.
//!
//! Taking a lock: write ours on every replica, then list the locks of
//! every replica; if one conflicts, remove ours and wait (with jitter, so
//! two waiters do not collide forever) or give up. Of two processes that
//! lock at the same moment, at least one sees the other's lock. The guard
//! removes the lock when released, and when dropped on an error or a
//! cancellation path ([`wait_released`] lets the binary finish that before
//! it exits).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_backends::{Backend, ErrorKind, Handle, Kind, PutMode};
use futures::stream::{self, StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Repository;
use crate::error::{Error, Result};
use crate::format::crypto::ObjectKind;
use crate::format::id::hex_encode;
use crate::format::keys::Keyring;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Many at once: commands that add objects or only read.
    Shared,
    /// Alone: commands that delete objects or rewrite the index.
    Exclusive,
}

/// How long to wait for a lock and when a lock counts as stale.
#[derive(Clone, Debug)]
pub struct LockOptions {
    /// Keep trying this long when the repository is locked (`--retry-lock`).
    pub wait: Duration,
    /// A lock not refreshed for this long is stale.
    pub stale_after: Duration,
    /// How often a held lock is refreshed.
    pub refresh_every: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: Duration::ZERO,
            stale_after: Duration::from_secs(30 * 60),
            refresh_every: Duration::from_secs(5 * 60),
        }
    }
}

/// The content of a lock object (sealed, kind `Lock`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub purpose: String,
    pub host: String,
    #[serde(default)]
    pub username: String,
    pub pid: u32,
    /// When the lock was last written (taken or refreshed).
    pub time: Timestamp,
    pub exclusive: bool,
}

impl LockInfo {
    fn mode(&self) -> LockMode {
        if self.exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        }
    }

    /// Whether the holder is gone: not refreshed for `stale_after`, or a
    /// process of this host that no longer exists.
    pub fn is_stale(&self, stale_after: Duration, now: Timestamp) -> bool {
        let age = now.duration_since(self.time);
        if age.as_secs_f64() > stale_after.as_secs_f64() {
            return true;
        }
        self.host == crate::sys::hostname() && !crate::sys::process_exists(self.pid)
    }
}

/// A lock found on a replica.
#[derive(Clone, Debug, Serialize)]
pub struct LockEntry {
    pub replica: String,
    pub name: String,
    /// `None` when the object could not be read or authenticated.
    pub info: Option<LockInfo>,
    pub stale: bool,
}

impl std::fmt::Display for LockEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.info {
            Some(i) => write!(
                f,
                "{}: {} lock by {} (pid {} on {}{}), last refreshed {}{}",
                self.replica,
                if i.exclusive {
                    "an exclusive"
                } else {
                    "a shared"
                },
                i.purpose,
                i.pid,
                i.host,
                if i.username.is_empty() {
                    String::new()
                } else {
                    format!(", user {}", i.username)
                },
                i.time.strftime("%Y-%m-%d %H:%M:%S UTC"),
                if self.stale { " (stale)" } else { "" },
            ),
            None => write!(f, "{}: locks/{} (unreadable)", self.replica, self.name),
        }
    }
}

/// The largest object in `locks/` read as a lock.
const MAX_LOCK_BYTES: u64 = 64 << 10;

/// Lock objects of one replica read at once while scanning.
const LOCK_READS: usize = 8;

fn conflicts(want: LockMode, held: LockMode) -> bool {
    want == LockMode::Exclusive || held == LockMode::Exclusive
}

/// What the refresher and the release need, independent of the repository.
struct Held {
    /// `(replica name, backend)` of every replica holding the lock.
    replicas: Vec<(String, Arc<dyn Backend>)>,
    handle: Handle,
    info: Mutex<LockInfo>,
    keyring: Arc<Keyring>,
}

impl Held {
    fn sealed(&self) -> Bytes {
        let info = self.info.lock().unwrap().clone();
        seal(&self.keyring, &info)
    }

    async fn refresh(&self) {
        self.info.lock().unwrap().time = Timestamp::now();
        let data = self.sealed();
        for (name, b) in &self.replicas {
            if let Err(e) = b.put(&self.handle, data.clone(), PutMode::Overwrite).await {
                tracing::warn!("{name}: cannot refresh lock {}: {e}", self.handle);
            }
        }
    }

    async fn remove(&self) {
        for (name, b) in &self.replicas {
            match b.delete(&self.handle).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("{name}: cannot remove lock {}: {e}", self.handle),
            }
        }
    }
}

fn seal(keyring: &Keyring, info: &LockInfo) -> Bytes {
    Bytes::from(keyring.seal(
        ObjectKind::Lock,
        &serde_json::to_vec(info).expect("lock serializes"),
    ))
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it
/// releases it in the background (see [`wait_released`]).
pub struct LockGuard {
    held: Option<Arc<Held>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl LockGuard {
    pub fn mode(&self) -> LockMode {
        self.held
            .as_ref()
            .map_or(LockMode::Shared, |h| h.info.lock().unwrap().mode())
    }

    /// Stop refreshing and remove the lock from every replica.
    pub async fn release(mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        if let Some(h) = self.held.take() {
            h.remove().await;
        }
    }
}

/// Releases started by dropped guards, awaited by [`wait_released`].
static PENDING: Mutex<Vec<tokio::task::JoinHandle<()>>> = Mutex::new(Vec::new());

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        let Some(held) = self.held.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let task = rt.spawn(async move { held.remove().await });
                let mut pending = PENDING.lock().unwrap();
                // A long-running process (the daemon) drops guards all day:
                // only releases still under way are kept.
                pending.retain(|t| !t.is_finished());
                pending.push(task);
            }
            Err(_) => tracing::warn!(
                "lock {} not removed (no runtime); it will be stale",
                held.handle
            ),
        }
    }
}

/// Wait until the locks of dropped guards are removed. The binary calls
/// this before it exits, so an error or Ctrl-C leaves no lock behind.
pub async fn wait_released() {
    loop {
        let tasks: Vec<_> = std::mem::take(&mut *PENDING.lock().unwrap());
        if tasks.is_empty() {
            return;
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Repository {
    /// Every lock on every replica. A replica that cannot be listed is an
    /// error: a lock there could not be honoured.
    pub async fn list_locks(&self) -> Result<Vec<LockEntry>> {
        self.scan_locks(None, false).await
    }

    /// The locks of every replica but the one named `own` (ours: no need
    /// to read it back). With `tolerant`, a replica that cannot be listed
    /// is warned about and passed over: a shared lock does not need it,
    /// and the command fails on that replica at its first write anyway.
    async fn scan_locks(&self, own: Option<&str>, tolerant: bool) -> Result<Vec<LockEntry>> {
        let now = Timestamp::now();
        let stale_after = self.lock_options().stale_after;
        // Every replica at once, and the locks of each read at once (a few
        // at a time): the answer is the same as one request after the
        // other, in the same order, with fewer round trips in a row.
        let scanned = futures::future::join_all(self.replicas().iter().map(|r| async move {
            let metas = match r.backend.list(Kind::Lock).await {
                Ok(m) => m,
                Err(e) if tolerant => {
                    tracing::warn!("{}: cannot list locks: {e}", r.name);
                    return Ok(Vec::new());
                }
                Err(e) => return Err(Error::backend(&r.name, e)),
            };
            let metas = metas
                .into_iter()
                .filter(|m| Some(m.handle.name.as_str()) != own);
            stream::iter(metas)
                .map(|m| async move {
                    // A lock is a few hundred bytes: a larger object is not
                    // one, and is not downloaded.
                    if m.size > MAX_LOCK_BYTES {
                        return Ok((m, Some(None)));
                    }
                    match r.backend.get(&m.handle, None).await {
                        Ok(d) => Ok((m, Some(self.open_lock(&d)))),
                        // Removed since the listing: its holder is done.
                        Err(e) if e.kind() == ErrorKind::NotFound => Ok((m, None)),
                        Err(e) if tolerant => {
                            tracing::warn!("{}: cannot read {}: {e}", r.name, m.handle);
                            Ok((m, None))
                        }
                        Err(e) => Err(Error::backend(&r.name, e)),
                    }
                })
                .buffered(LOCK_READS)
                .try_collect::<Vec<_>>()
                .await
        }))
        .await;
        let mut out = Vec::new();
        for (r, found) in self.replicas().iter().zip(scanned) {
            // `None`: gone or passed over; `Some(info)`: read.
            for (m, info) in found? {
                let Some(info) = info else { continue };
                if info.is_none() {
                    tracing::warn!(
                        "{}: {} is not a lock of this repository; ignored \
                         (`cairn unlock --remove-all` removes it)",
                        r.name,
                        m.handle
                    );
                }
                out.push(LockEntry {
                    replica: r.name.clone(),
                    name: m.handle.name.clone(),
                    stale: info.as_ref().is_some_and(|i| i.is_stale(stale_after, now)),
                    info,
                });
            }
        }
        Ok(out)
    }

    fn open_lock(&self, data: &[u8]) -> Option<LockInfo> {
        let plain = self.keyring().open(ObjectKind::Lock, data).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Locks that stop us from taking a `mode` lock now.
    async fn conflicting(&self, mode: LockMode, own: Option<&str>) -> Result<Vec<LockEntry>> {
        let tolerant = mode == LockMode::Shared;
        Ok(self
            .scan_locks(own, tolerant)
            .await?
            .into_iter()
            .filter(|l| match &l.info {
                Some(i) => !l.stale && conflicts(mode, i.mode()),
                None => false,
            })
            .collect())
    }

    /// Take a `mode` lock on every replica for `purpose`, waiting up to
    /// [`LockOptions::wait`] while another process holds a conflicting one.
    pub async fn lock(&self, mode: LockMode, purpose: &str) -> Result<LockGuard> {
        let opts = self.lock_options().clone();
        let deadline = tokio::time::Instant::now() + opts.wait;
        let mut pause = Duration::from_millis(200);
        loop {
            // Write first, then look: of two processes that lock at the
            // same moment, at least one sees the other (both may, and both
            // back off), so one listing per attempt is enough.
            let guard = self.write_lock(mode, purpose).await?;
            let own = guard.held.as_ref().map(|h| h.handle.name.clone());
            let found = self.conflicting(mode, own.as_deref()).await?;
            if found.is_empty() {
                return Ok(guard);
            }
            guard.release().await;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Locked(format!(
                    "the repository is locked: {}{}",
                    found
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                    if opts.wait.is_zero() {
                        " (wait for it with --retry-lock DURATION; remove a stale \
                         lock with `cairn unlock`)"
                    } else {
                        ""
                    }
                )));
            }
            tracing::info!("waiting for the lock: {}", found[0]);
            // Jitter, so that two processes that collided do not collide
            // again at every retry.
            let jitter = Duration::from_millis(rand::random::<u64>() % 500);
            let sleep = (pause + jitter).min(deadline - now);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.cancel_token().cancelled() => return Err(Error::Interrupted),
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Run `f` holding a `mode` lock, and release the lock afterwards
    /// whatever `f` returned.
    pub async fn with_lock<T>(
        &self,
        mode: LockMode,
        purpose: &str,
        f: impl AsyncFnOnce() -> Result<T>,
    ) -> Result<T> {
        let lock = self.lock(mode, purpose).await?;
        let res = f().await;
        lock.release().await;
        res
    }

    /// Write our lock object on every replica. A replica that refuses it is
    /// an error for an exclusive lock; for a shared lock it is warned about
    /// and left to fail on its first write.
    async fn write_lock(&self, mode: LockMode, purpose: &str) -> Result<LockGuard> {
        let mut raw = [0u8; 32];
        crate::format::crypto::fill_random(&mut raw);
        let handle = Handle::new(Kind::Lock, hex_encode(&raw));
        let info = LockInfo {
            purpose: purpose.to_string(),
            host: crate::sys::hostname(),
            username: crate::sys::username(),
            pid: std::process::id(),
            time: Timestamp::now(),
            exclusive: mode == LockMode::Exclusive,
        };
        let data = seal(self.keyring(), &info);
        let mut held = Held {
            replicas: Vec::new(),
            handle: handle.clone(),
            info: Mutex::new(info),
            keyring: self.shared_keyring(),
        };
        // Every replica at once; the caller lists the locks only after all
        // of these answered.
        let written = futures::future::join_all(
            self.replicas()
                .iter()
                .map(|r| r.backend.put(&handle, data.clone(), PutMode::Create)),
        )
        .await;
        let mut refused = None;
        for (r, res) in self.replicas().iter().zip(written) {
            match res {
                Ok(()) => held.replicas.push((r.name.clone(), r.backend.clone())),
                Err(e) if mode == LockMode::Exclusive => {
                    refused.get_or_insert_with(|| Error::backend(&r.name, e));
                }
                Err(e) => tracing::warn!("{}: cannot write lock: {e}", r.name),
            }
        }
        if let Some(e) = refused {
            held.remove().await;
            return Err(e);
        }
        let held = Arc::new(held);
        let refresher = {
            let held = held.clone();
            let every = self.lock_options().refresh_every;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    held.refresh().await;
                }
            })
        };
        Ok(LockGuard {
            held: Some(held),
            refresher: Some(refresher),
        })
    }

    /// Remove stale locks (or, with `all`, every lock) from every replica.
    pub async fn remove_locks(&self, all: bool) -> Result<Vec<LockEntry>> {
        let mut removed = Vec::new();
        for l in self.list_locks().await? {
            if !(all || l.stale) {
                continue;
            }
            let r = self
                .replicas()
                .iter()
                .find(|r| r.name == l.replica)
                .expect("listed from this replica");
            match r.backend.delete(&Handle::new(Kind::Lock, &l.name)).await {
                Ok(()) => removed.push(l),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::backend(&r.name, e)),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(host: &str, pid: u32, age_secs: i64) -> LockInfo {
        LockInfo {
            purpose: "test".into(),
            host: host.into(),
            username: String::new(),
            pid,
            time: Timestamp::now() - jiff::SignedDuration::from_secs(age_secs),
            exclusive: false,
        }
    }

    #[test]
    fn staleness() {
        let after = Duration::from_secs(1800);
        let now = Timestamp::now();
        let me = crate::sys::hostname();
        assert!(!info(&me, std::process::id(), 10).is_stale(after, now));
        assert!(info(&me, std::process::id(), 1801).is_stale(after, now));
        // A pid no process has on this host.
        assert!(info(&me, u32::MAX - 1, 10).is_stale(after, now));
        // Another host's process cannot be checked: only its age counts.
        assert!(!info("elsewhere.invalid", u32::MAX - 1, 10).is_stale(after, now));
    }

    #[test]
    fn what_conflicts() {
        use LockMode::*;
        assert!(!conflicts(Shared, Shared));
        assert!(conflicts(Shared, Exclusive));
        assert!(conflicts(Exclusive, Shared));
        assert!(conflicts(Exclusive, Exclusive));
    }

    async fn repo() -> (Repository, Repository) {
        use crate::test_support::{init, memory_replicas, open};
        let replicas = memory_replicas(1);
        (init(replicas.clone()).await, open(replicas).await)
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let (a, b) = repo().await;
        let s1 = a.lock(LockMode::Shared, "one").await.unwrap();
        let s2 = b.lock(LockMode::Shared, "two").await.unwrap();
        let e = b.lock(LockMode::Exclusive, "ex").await.err().unwrap();
        assert!(matches!(e, Error::Locked(_)), "{e}");
        assert!(e.to_string().contains("by one"), "{e}");
        s1.release().await;
        s2.release().await;
        assert!(a.list_locks().await.unwrap().is_empty());
        let x = b.lock(LockMode::Exclusive, "ex").await.unwrap();
        assert!(matches!(
            a.lock(LockMode::Shared, "s").await,
            Err(Error::Locked(_))
        ));
        x.release().await;
    }

    /// Locks are written and listed on every replica at once: a lock
    /// held on one replica only (the others lost it) still stops a
    /// conflicting one, which leaves nothing behind; an object in `locks/`
    /// that is not a lock is reported, not taken for one.
    #[tokio::test]
    async fn a_lock_on_any_one_replica_is_seen() {
        use crate::test_support::{init, memory_replicas, open};
        let replicas = memory_replicas(3);
        let a = init(replicas.clone()).await;
        let b = open(replicas).await;
        let x = a.lock(LockMode::Exclusive, "ex").await.unwrap();
        let locks = a.list_locks().await.unwrap();
        assert_eq!(locks.len(), 3);
        let name = locks[0].name.clone();
        for i in [0, 2] {
            a.replica(i)
                .backend
                .delete(&Handle::new(Kind::Lock, &name))
                .await
                .unwrap();
        }
        let planted = Handle::new(Kind::Lock, "ab".repeat(32));
        a.replica(0)
            .backend
            .put(&planted, Bytes::from_static(b"junk"), PutMode::Create)
            .await
            .unwrap();
        for mode in [LockMode::Shared, LockMode::Exclusive] {
            let e = b.lock(mode, "second").await.err().unwrap();
            assert!(matches!(e, Error::Locked(_)), "{e}");
            assert!(
                e.to_string().contains("mem1: an exclusive lock by ex"),
                "{e}"
            );
        }
        let left = a.list_locks().await.unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().any(|l| l.replica == "mem1" && l.name == name));
        assert!(left.iter().any(|l| l.replica == "mem0" && l.info.is_none()));
        x.release().await;
        // The junk is no lock: a shared and an exclusive lock are taken.
        b.lock(LockMode::Shared, "s").await.unwrap().release().await;
        b.lock(LockMode::Exclusive, "e")
            .await
            .unwrap()
            .release()
            .await;
        assert_eq!(a.list_locks().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_it_is_released() {
        let (a, mut b) = repo().await;
        b.set_lock_options(LockOptions {
            wait: Duration::from_secs(30),
            ..Default::default()
        });
        let held = a.lock(LockMode::Exclusive, "first").await.unwrap();
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            held.release().await;
        };
        let (got, ()) = tokio::join!(b.lock(LockMode::Exclusive, "second"), release);
        got.unwrap().release().await;
    }

    #[tokio::test]
    async fn a_dropped_guard_is_released_and_refreshes_keep_it_fresh() {
        let (mut a, _) = repo().await;
        a.set_lock_options(LockOptions {
            refresh_every: Duration::from_millis(50),
            ..Default::default()
        });
        let g = a.lock(LockMode::Shared, "refreshed").await.unwrap();
        let t0 = a.list_locks().await.unwrap()[0].info.clone().unwrap().time;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t1 = a.list_locks().await.unwrap()[0].info.clone().unwrap().time;
        assert!(t1 > t0, "not refreshed");
        drop(g);
        wait_released().await;
        assert!(a.list_locks().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_stops_waiting() {
        let (a, mut b) = repo().await;
        b.set_lock_options(LockOptions {
            wait: Duration::from_secs(600),
            ..Default::default()
        });
        let _held = a.lock(LockMode::Exclusive, "first").await.unwrap();
        let token = b.cancel_token().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            token.cancel();
        });
        assert!(matches!(
            b.lock(LockMode::Shared, "w").await,
            Err(Error::Interrupted)
        ));
    }
}

//! Engine tests on in-memory backends with fault injection: fan-out
//! isolation, write ordering under failure, and fallback reads.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use cairn::backends::layer::{FaultPlan, FaultyBackend, Op};
use cairn::backends::memory::MemoryBackend;
use cairn::backends::{Backend, ErrorKind, Kind};
use cairn::format::keys::KdfParams;
use cairn::ops::backup::progress::Progress;
use cairn::ops::backup::{backup, BackupOptions};
use cairn::ops::check::{check, CheckOptions, CheckProgress};
use cairn::ops::restore::{restore, RestoreOptions, RestoreProgress};
use cairn::repo::{InitOptions, Replica, Repository};
use secrecy::SecretString;

#[path = "support/mod.rs"]
mod support;

fn pass() -> SecretString {
    SecretString::from("engine test")
}

fn init_opts() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        },
        pack_size: 1 << 20,
        ..Default::default()
    }
}

fn replica(name: &str, b: Arc<dyn Backend>) -> Replica {
    Replica {
        name: name.into(),
        backend: b,
    }
}

fn source(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let data = support::noise(88172645463325252, 6_000_000);
    std::fs::write(dir.join("sub/random.bin"), &data).unwrap();
    std::fs::write(dir.join("text.txt"), "some text\n".repeat(5000)).unwrap();
}

async fn run_backup(repo: &Repository, src: &Path) -> cairn::ops::backup::BackupOutcome {
    let mut opts = BackupOptions::new(vec![src.to_path_buf()]);
    opts.workers = 2;
    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    backup(repo, &opts, progress).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replica_fails_alone_and_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    source(&src);
    let good = Arc::new(MemoryBackend::new());
    let full_inner = Arc::new(MemoryBackend::new());
    let full = Arc::new(FaultyBackend::new(full_inner.clone(), FaultPlan::default()));
    Repository::init(
        vec![replica("good", good.clone()), replica("full", full.clone())],
        &pass(),
        &init_opts(),
    )
    .await
    .unwrap();
    // The disk fills up after 2 MB of this backup.
    full.set_plan(FaultPlan {
        disk_full_after_bytes: Some(full.bytes_written() + 2_000_000),
        ..Default::default()
    });
    let repo = Repository::open(
        vec![replica("good", good.clone()), replica("full", full.clone())],
        &pass(),
    )
    .await
    .unwrap();
    let out = run_backup(&repo, &src).await;
    assert!(out.id.is_some());
    assert!(out.replicas[0].error.is_none());
    let err = out.replicas[1]
        .error
        .as_ref()
        .expect("the full replica fails");
    assert_eq!(err.backend_kind(), Some(ErrorKind::StorageFull), "{err}");

    // The full replica got no snapshot and no index of this run, and what
    // it holds checks clean.
    assert!(full_inner.list(Kind::Snapshot).await.unwrap().is_empty());
    assert!(full_inner.list(Kind::Index).await.unwrap().is_empty());
    let alone = Repository::open(vec![replica("full", full_inner.clone())], &pass())
        .await
        .unwrap();
    let report = check(
        &alone,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
        &CheckProgress::default(),
    )
    .await
    .unwrap();
    assert!(report[0].is_clean(), "{report:?}");

    // The good one restores.
    let good_repo = Repository::open(vec![replica("good", good.clone())], &pass())
        .await
        .unwrap();
    let report = check(
        &good_repo,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
        &CheckProgress::default(),
    )
    .await
    .unwrap();
    assert!(report[0].is_clean(), "{report:?}");
    let snaps = good_repo.list_snapshots().await.unwrap();
    let index = good_repo.load_index().await.unwrap();
    let target = dir.path().join("restore");
    let opts = RestoreOptions {
        target: target.clone(),
        subpath: None,
        include: vec![],
        verify: true,
        workers: 2,
        allow_devices: false,
        keep_setuid: false,
        batch_files: cairn::ops::restore::BATCH_FILES,
    };
    let res = restore(
        &good_repo,
        &index,
        &snaps[0],
        &opts,
        &RestoreProgress::default(),
    )
    .await
    .unwrap();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("sub/random.bin")).unwrap(),
        std::fs::read(src.join("sub/random.bin")).unwrap()
    );

    // The next backup to both, with space again, completes on both; data
    // the full replica lacks is written again rather than referenced.
    full.set_plan(FaultPlan::default());
    let repo = Repository::open(
        vec![replica("good", good.clone()), replica("full", full.clone())],
        &pass(),
    )
    .await
    .unwrap();
    let out = run_backup(&repo, &src).await;
    assert!(
        out.replicas.iter().all(|r| r.error.is_none()),
        "{:?}",
        out.replicas
    );
    let report = check(
        &alone,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
        &CheckProgress::default(),
    )
    .await
    .unwrap();
    assert!(report[0].is_clean(), "{report:?}");
    assert_eq!(full_inner.list(Kind::Snapshot).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_and_unreachable_replicas_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    source(&src);
    let a = Arc::new(MemoryBackend::new());
    let b_inner = Arc::new(MemoryBackend::new());
    let b = Arc::new(FaultyBackend::new(b_inner.clone(), FaultPlan::default()));
    Repository::init(
        vec![replica("a", a.clone()), replica("b", b.clone())],
        &pass(),
        &init_opts(),
    )
    .await
    .unwrap();
    let repo = Repository::open(
        vec![replica("a", a.clone()), replica("b", b.clone())],
        &pass(),
    )
    .await
    .unwrap();
    // Every write to b fails from now on.
    b.set_plan(FaultPlan {
        fail_fraction: 1.0,
        fail_kind: ErrorKind::PermissionDenied,
        fail_ops: vec![Op::Put],
        ..Default::default()
    });
    let out = run_backup(&repo, &src).await;
    assert!(out.id.is_some());
    assert!(out.replicas[0].error.is_none());
    assert_eq!(
        out.replicas[1].error.as_ref().unwrap().backend_kind(),
        Some(ErrorKind::PermissionDenied)
    );
    assert!(b_inner.list(Kind::Snapshot).await.unwrap().is_empty());

    // A replica that is down when the repository is opened is set aside.
    b.set_plan(FaultPlan::default());
    b.set_failing(true);
    let repo = Repository::open(
        vec![replica("a", a.clone()), replica("b", b.clone())],
        &pass(),
    )
    .await
    .unwrap();
    assert_eq!(repo.replicas().len(), 1);
    assert_eq!(repo.unavailable()[0].name, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_another_replica() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    source(&src);
    let a = Arc::new(MemoryBackend::new());
    let b = Arc::new(MemoryBackend::new());
    let replicas = || vec![replica("a", a.clone()), replica("b", b.clone())];
    Repository::init(replicas(), &pass(), &init_opts())
        .await
        .unwrap();
    let repo = Repository::open(replicas(), &pass()).await.unwrap();
    run_backup(&repo, &src).await;
    // Damage every pack on a: flip a byte in the middle of each.
    for m in a.list(Kind::Pack).await.unwrap() {
        a.tamper(&m.handle, |d| {
            let i = d.len() / 2;
            d[i] ^= 1;
        });
    }
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
        &CheckProgress::default(),
    )
    .await
    .unwrap();
    assert!(!report[0].errors.is_empty(), "damage on a is found");
    assert!(report[1].is_clean(), "{:?}", report[1]);
    let snaps = repo.list_snapshots().await.unwrap();
    let index = repo.load_index().await.unwrap();
    let target = dir.path().join("restore");
    let opts = RestoreOptions {
        target: target.clone(),
        subpath: None,
        include: vec![],
        verify: true,
        workers: 2,
        allow_devices: false,
        keep_setuid: false,
        batch_files: cairn::ops::restore::BATCH_FILES,
    };
    let res = restore(&repo, &index, &snaps[0], &opts, &RestoreProgress::default())
        .await
        .unwrap();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("sub/random.bin")).unwrap(),
        std::fs::read(src.join("sub/random.bin")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_failed_every_write_is_completed_by_sync() {
    use cairn::ops::status::status;
    use cairn::ops::sync::{sync, SyncOptions, SyncProgress};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    source(&src);
    let a = Arc::new(MemoryBackend::new());
    let b_inner = Arc::new(MemoryBackend::new());
    let b = Arc::new(FaultyBackend::new(b_inner.clone(), FaultPlan::default()));
    let replicas = || vec![replica("a", a.clone()), replica("b", b.clone())];
    Repository::init(replicas(), &pass(), &init_opts())
        .await
        .unwrap();
    let repo = Repository::open(replicas(), &pass()).await.unwrap();
    run_backup(&repo, &src).await;
    // b fails every write during the second backup.
    std::fs::write(src.join("new.bin"), vec![7u8; 300_000]).unwrap();
    b.set_plan(FaultPlan {
        fail_fraction: 1.0,
        fail_kind: ErrorKind::Transient,
        fail_ops: vec![Op::Put],
        ..Default::default()
    });
    let out = run_backup(&repo, &src).await;
    assert!(out.replicas[0].error.is_none());
    assert!(out.replicas[1].error.is_some());
    let st = status(&repo, None).await.unwrap();
    assert!(!st.all_complete());
    assert_eq!(st.replicas[1].behind_snapshots, 1, "{st:?}");

    // While b still fails, sync reports it and leaves it consistent.
    let opts = SyncOptions {
        from: repo.all(),
        to: vec![1],
        dry_run: false,
        only: None,
    };
    let reports = sync(&repo, &opts, &SyncProgress::new(&repo, &[1]))
        .await
        .unwrap();
    assert!(reports[0].error.is_some(), "{reports:?}");
    let alone = Repository::open(vec![replica("b", b_inner.clone())], &pass())
        .await
        .unwrap();
    let check_b = || async {
        check(
            &alone,
            &CheckOptions {
                read_data: true,
                ..Default::default()
            },
            &CheckProgress::default(),
        )
        .await
        .unwrap()
    };
    let report = check_b().await;
    assert!(report[0].is_clean(), "{report:?}");

    // b recovers; sync completes it.
    b.set_plan(FaultPlan::default());
    let reports = sync(&repo, &opts, &SyncProgress::new(&repo, &[1]))
        .await
        .unwrap();
    assert!(reports[0].is_ok(), "{reports:?}");
    assert_eq!(reports[0].snapshots, 1);
    let st = status(&repo, None).await.unwrap();
    assert!(st.all_complete(), "{st:?}");
    let report = check_b().await;
    assert!(report[0].is_clean(), "{report:?}");
    assert_eq!(b_inner.list(Kind::Snapshot).await.unwrap().len(), 2);
}

/// A backend that counts completed pack uploads and, when `lead_over` is
/// set, records after each of its own how far it is ahead of another one.
#[derive(Debug)]
struct CountPacks {
    inner: Arc<dyn Backend>,
    done: Arc<AtomicU64>,
    lead_over: Option<(Arc<AtomicU64>, Arc<AtomicU64>)>,
}

impl std::fmt::Display for CountPacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl Backend for CountPacks {
    fn capabilities(&self) -> cairn::backends::Capabilities {
        self.inner.capabilities()
    }
    async fn put(
        &self,
        h: &cairn::backends::Handle,
        data: bytes::Bytes,
        mode: cairn::backends::PutMode,
    ) -> cairn::backends::Result<()> {
        self.inner.put(h, data, mode).await?;
        if h.kind == Kind::Pack {
            let mine = self.done.fetch_add(1, Relaxed) + 1;
            if let Some((other, lead)) = &self.lead_over {
                lead.fetch_max(mine.saturating_sub(other.load(Relaxed)), Relaxed);
            }
        }
        Ok(())
    }
    async fn get(
        &self,
        h: &cairn::backends::Handle,
        r: Option<std::ops::Range<u64>>,
    ) -> cairn::backends::Result<bytes::Bytes> {
        self.inner.get(h, r).await
    }
    async fn head(
        &self,
        h: &cairn::backends::Handle,
    ) -> cairn::backends::Result<cairn::backends::ObjectMeta> {
        self.inner.head(h).await
    }
    async fn list(&self, k: Kind) -> cairn::backends::Result<Vec<cairn::backends::ObjectMeta>> {
        self.inner.list(k).await
    }
    async fn delete(&self, h: &cairn::backends::Handle) -> cairn::backends::Result<()> {
        self.inner.delete(h).await
    }
}

/// A very slow replica makes the backup wait instead of buffering: the
/// fast replica is never more than the queue and the in-flight uploads
/// ahead of the slow one, so memory is bounded by those packs, not by the
/// size of the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_makes_the_backup_wait_within_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = support::noise(0x2545F4914F6CDD1D, 40_000_000);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    // The lead of the fast replica only grows when one of its uploads
    // completes, so measuring it at each of those moments sees the peak.
    let slow_done = Arc::new(AtomicU64::new(0));
    let lead = Arc::new(AtomicU64::new(0));
    let fast = Arc::new(CountPacks {
        inner: Arc::new(MemoryBackend::new()),
        done: Arc::new(AtomicU64::new(0)),
        lead_over: Some((slow_done.clone(), lead.clone())),
    });
    let slow_inner = Arc::new(CountPacks {
        inner: Arc::new(MemoryBackend::new()),
        done: slow_done,
        lead_over: None,
    });
    let slow = Arc::new(FaultyBackend::new(slow_inner.clone(), FaultPlan::default()));
    let replicas = || vec![replica("fast", fast.clone()), replica("slow", slow.clone())];
    Repository::init(replicas(), &pass(), &init_opts())
        .await
        .unwrap();
    let repo = Repository::open(replicas(), &pass()).await.unwrap();
    slow.set_plan(FaultPlan {
        latency: Some(std::time::Duration::from_millis(60)),
        ..Default::default()
    });
    let mut opts = BackupOptions::new(vec![src.clone()]);
    opts.workers = 2;
    let progress = Arc::new(Progress::new(
        repo.replicas().iter().map(|r| r.name.clone()),
    ));
    let out = backup(&repo, &opts, progress).await.unwrap();
    assert!(out.replicas.iter().all(|r| r.error.is_none()));
    let packs = fast.list(Kind::Pack).await.unwrap().len() as u64;
    assert!(packs >= 15, "{packs} packs");
    // Ahead of the slow replica's completed uploads: only data packs that
    // still hold a place in the run's budget of packs alive (the busiest
    // replica's uploads + the one being filled), whatever `--queue` says,
    // and the tree pack, which is outside the budget.
    let uploads = |caps| cairn::ops::backup::fanout::upload_connections(opts.connections, &caps);
    let budget = uploads(slow.capabilities()).max(uploads(fast.capabilities())) + 1;
    let bound = (budget + 1) as u64;
    let seen = lead.load(Relaxed);
    assert!(
        seen <= bound,
        "the fast replica ran {seen} packs ahead (bound {bound})"
    );
}

/// A replica whose writes and deletes fail at random during prune (before
/// or after taking effect): no snapshot loses data, `check` accepts both
/// replicas, and the next prune completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_survives_a_backend_failing_midway() {
    use cairn::ops::forget::{forget, ForgetOptions, Policies};
    use cairn::ops::prune::{prune, PruneOptions};
    let mut failed_runs = 0;
    for seed in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        source(&src);
        let a = Arc::new(MemoryBackend::new());
        let b = Arc::new(FaultyBackend::new(
            Arc::new(MemoryBackend::new()),
            FaultPlan::default(),
        ));
        let replicas = || vec![replica("a", a.clone()), replica("b", b.clone())];
        Repository::init(replicas(), &pass(), &init_opts())
            .await
            .unwrap();
        let repo = Repository::open(replicas(), &pass()).await.unwrap();
        let first = run_backup(&repo, &src).await.id.unwrap();
        std::fs::write(src.join("sub/random.bin"), support::noise(seed, 3_000_000)).unwrap();
        std::fs::write(src.join("extra.txt"), "more text\n".repeat(3000)).unwrap();
        run_backup(&repo, &src).await;
        let mut f = ForgetOptions::new(Policies::default());
        f.ids = vec![first];
        forget(&repo, &f).await.unwrap();

        b.set_plan(FaultPlan {
            seed,
            fail_fraction: 0.3,
            fail_kind: ErrorKind::Unreachable,
            fail_ops: vec![Op::Put, Op::Delete],
            fail_after_call: seed % 2 == 1,
            ..Default::default()
        });
        let opts = PruneOptions {
            grace: std::time::Duration::ZERO,
            max_unused: 0.0,
            ..Default::default()
        };
        match prune(&repo, &opts).await {
            Ok(r) if r.replicas.iter().all(|r| r.error.is_none()) => {}
            _ => failed_runs += 1,
        }
        b.set_plan(FaultPlan::default());
        // Removing prune's own lock may have failed too: `cairn unlock`.
        repo.remove_locks(true).await.unwrap();

        let check_clean = async |what: &str| {
            let report = check(
                &repo,
                &CheckOptions {
                    read_data: true,
                    ..Default::default()
                },
                &CheckProgress::default(),
            )
            .await
            .unwrap();
            for r in &report {
                assert!(r.errors.is_empty(), "seed {seed}, {what}: {:?}", r.errors);
            }
        };
        check_clean("after the failing prune").await;
        let report = prune(&repo, &opts).await.unwrap();
        assert!(
            report.replicas.iter().all(|r| r.error.is_none()),
            "seed {seed}: {report:?}"
        );
        check_clean("after the next prune").await;
        let snaps = repo.list_snapshots().await.unwrap();
        assert_eq!(snaps.len(), 1);
        let index = repo.load_index().await.unwrap();
        for only in [0usize, 1] {
            let one = repo.single(only);
            let target = dir.path().join(format!("restore{only}"));
            let mut ro = RestoreOptions::new(target.clone());
            ro.verify = true;
            let res = restore(&one, &index, &snaps[0], &ro, &RestoreProgress::default())
                .await
                .unwrap();
            assert!(res.errors.is_empty(), "seed {seed}: {:?}", res.errors);
            let restored = target.join(src.strip_prefix("/").unwrap());
            assert_eq!(
                std::fs::read(restored.join("sub/random.bin")).unwrap(),
                std::fs::read(src.join("sub/random.bin")).unwrap()
            );
        }
    }
    assert!(failed_runs > 0, "the faults never hit prune");
}

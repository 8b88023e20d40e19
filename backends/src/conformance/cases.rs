//! The cases of the conformance suite and their helpers. Each case takes the
//! shared context by `Arc` (it runs in its own task), writes through
//! [`Ctx::put`] so the runner can clean up after a failure, and returns a
//! message naming the object and the expectation that failed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::SuiteOptions;
use crate::{Backend, BackendError, ErrorKind, Handle, Kind, ObjectMeta, PutMode};

type Outcome = Result<(), String>;

/// Every character a name may contain (see [`Handle::is_valid_name`]).
const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

/// State shared by the cases of one run.
pub(super) struct Ctx {
    pub backend: Arc<dyn Backend>,
    pub opts: SuiteOptions,
    /// Random, in every name but `config`, so leftovers of an earlier run
    /// cannot be mistaken for this run's objects.
    pub run: String,
    /// Objects the current case may have written, for cleanup.
    written: Mutex<HashSet<Handle>>,
}

impl Ctx {
    pub fn new(backend: Arc<dyn Backend>, opts: SuiteOptions) -> Self {
        Ctx {
            backend,
            opts,
            run: format!("{:08x}", rand::random::<u32>()),
            written: Mutex::new(HashSet::new()),
        }
    }

    fn written(&self) -> MutexGuard<'_, HashSet<Handle>> {
        // Only poisoned by a panic while inserting; the set is still usable.
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A name for this run. `tag` comes first so that packs made with
    /// different tags land in different `data/xx` directories.
    fn name(&self, tag: &str) -> String {
        format!("{tag}-{}", self.run)
    }

    /// Put, remembering the object for cleanup unless it was there before
    /// (`AlreadyExists`: not ours to delete). Any other failure may still
    /// have written it.
    async fn put(
        &self,
        h: &Handle,
        data: impl Into<Bytes>,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        let r = self.backend.put(h, data.into(), mode).await;
        if !matches!(&r, Err(e) if e.kind() == ErrorKind::AlreadyExists) {
            self.written().insert(h.clone());
        }
        r
    }

    /// Delete, forgetting the object once it is gone.
    async fn delete(&self, h: &Handle) -> Result<(), BackendError> {
        let r = self.backend.delete(h).await;
        if r.is_ok() || matches!(&r, Err(e) if e.kind() == ErrorKind::NotFound) {
            self.written().remove(h);
        }
        r
    }

    /// Delete whatever the last case left; `NotFound` is fine.
    pub async fn cleanup(&self) -> Outcome {
        let left: Vec<Handle> = self.written().drain().collect();
        let mut errors = Vec::new();
        for h in left {
            match self.backend.delete(&h).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("deleting {}: {e}", at(&h))),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// How failure messages name an object.
fn at(h: &Handle) -> String {
    format!("{} {:?}", h.kind, h.name)
}

/// Turn a backend error into a case failure with context.
trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, String>;
}

impl<T> Context<T> for Result<T, BackendError> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, String> {
        self.map_err(|e| format!("{}: unexpected error: {e}", what()))
    }
}

/// The call must fail with `want`.
fn expect_kind<T: Describe>(
    r: Result<T, BackendError>,
    want: ErrorKind,
    what: impl FnOnce() -> String,
) -> Outcome {
    match r {
        Err(e) if e.kind() == want => Ok(()),
        Err(e) => Err(format!(
            "{}: expected {want}, got error {:?}: {e}",
            what(),
            e.kind()
        )),
        Ok(v) => Err(format!(
            "{}: expected {want}, but it succeeded ({})",
            what(),
            v.describe()
        )),
    }
}

/// A short description of a successful result, for failure messages.
trait Describe {
    fn describe(&self) -> String;
}

impl Describe for () {
    fn describe(&self) -> String {
        "ok".into()
    }
}

impl Describe for Bytes {
    fn describe(&self) -> String {
        format!("{} bytes", self.len())
    }
}

impl Describe for ObjectMeta {
    fn describe(&self) -> String {
        format!("size {}", self.size)
    }
}

/// Compare bytes read back with what was written.
fn same(got: &[u8], want: &[u8], what: impl FnOnce() -> String) -> Outcome {
    if got.len() != want.len() {
        return Err(format!(
            "{}: read {} bytes, expected {}",
            what(),
            got.len(),
            want.len()
        ));
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!("{}: content differs from offset {i}", what())),
    }
}

/// Deterministic pseudo-random content, fast enough for large objects.
fn pattern(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(seed.as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// The listing of `kind` as a map, failing on duplicates and on entries
/// that are not valid objects of that kind (temporary files, strays).
async fn listing(cx: &Ctx, kind: Kind) -> Result<HashMap<String, u64>, String> {
    let entries = cx.backend.list(kind).await.ctx(|| format!("list {kind}"))?;
    let mut map = HashMap::with_capacity(entries.len());
    for e in entries {
        if e.handle.kind != kind {
            return Err(format!(
                "list {kind} returned {}, an object of another kind",
                at(&e.handle)
            ));
        }
        if !Handle::is_valid_name(kind, &e.handle.name) {
            return Err(format!(
                "list {kind} returned {:?}, not a valid object name (temporary file or stray?)",
                e.handle.name
            ));
        }
        if let Some(t) = e.modified {
            // Every object here was written moments ago; a day off means a
            // misread time (wrong unit, time zone, epoch), not clock skew.
            let now = std::time::SystemTime::now();
            let off = now
                .duration_since(t)
                .or_else(|_| t.duration_since(now))
                .unwrap_or_default();
            if off > std::time::Duration::from_secs(86_400) {
                return Err(format!(
                    "list {kind} gives {} a modification time {} s away from now",
                    at(&e.handle),
                    off.as_secs()
                ));
            }
        }
        if map.insert(e.handle.name.clone(), e.size).is_some() {
            return Err(format!("list {kind} returned {} twice", at(&e.handle)));
        }
    }
    Ok(map)
}

/// Check that `h` is listed with `size`.
async fn listed_with(cx: &Ctx, h: &Handle, size: u64) -> Outcome {
    let map = listing(cx, h.kind).await?;
    match map.get(&h.name) {
        Some(&s) if s == size => Ok(()),
        Some(&s) => Err(format!(
            "list {} gives size {s} for {}, expected {size}",
            h.kind,
            at(h)
        )),
        None => Err(format!("list {} does not return {}", h.kind, at(h))),
    }
}

async fn not_listed(cx: &Ctx, h: &Handle) -> Outcome {
    let map = listing(cx, h.kind).await?;
    ensure(!map.contains_key(&h.name), || {
        format!(
            "list {} still returns {} after it was deleted",
            h.kind,
            at(h)
        )
    })
}

/// Run `f` on every item with at most `limit` in flight; all items run even
/// if some fail, and the first failures are reported.
async fn concurrently<I, F, Fut>(items: Vec<I>, limit: usize, f: F) -> Outcome
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut errors = Vec::new();
    fn collect(r: Result<Outcome, tokio::task::JoinError>, errors: &mut Vec<String>) {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("task failed: {e}")),
        }
    }
    for item in items {
        while set.len() >= limit.max(1) {
            if let Some(r) = set.join_next().await {
                collect(r, &mut errors);
            }
        }
        set.spawn(f(item));
    }
    while let Some(r) = set.join_next().await {
        collect(r, &mut errors);
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.swap_remove(0)),
        n => Err(format!("{} (and {} more failures)", errors[0], n - 1)),
    }
}

/// `create` works and is idempotent; every kind can be listed afterwards.
pub(super) async fn create(cx: Arc<Ctx>) -> Outcome {
    let caps = cx.backend.capabilities();
    ensure(caps.default_connections >= 1, || {
        format!(
            "capabilities: default_connections is {}",
            caps.default_connections
        )
    })?;
    cx.backend.create().await.ctx(|| "create".into())?;
    cx.backend
        .create()
        .await
        .ctx(|| "create, a second time (must be idempotent)".into())?;
    for kind in Kind::ALL {
        listing(&cx, kind).await?;
    }
    Ok(())
}

/// put/head/get/list/delete of one object of `kind`, then the same name
/// created again after its deletion (how locks are released and retaken).
pub(super) async fn roundtrip(cx: Arc<Ctx>, kind: Kind) -> Outcome {
    let h = match kind {
        Kind::Config => Handle::config(),
        _ => Handle::new(kind, cx.name("rt")),
    };
    let data = pattern(&h.path(), 1000 + kind as usize);
    cx.put(&h, data.clone(), PutMode::Create).await.ctx(|| {
        format!(
            "put (create) {} into what should be an empty namespace",
            at(&h)
        )
    })?;
    let meta = cx
        .backend
        .head(&h)
        .await
        .ctx(|| format!("head {}", at(&h)))?;
    ensure(meta.size == data.len() as u64 && meta.handle == h, || {
        format!(
            "head {} gives {:?}, expected size {}",
            at(&h),
            meta,
            data.len()
        )
    })?;
    let got = cx
        .backend
        .get(&h, None)
        .await
        .ctx(|| format!("get {}", at(&h)))?;
    same(&got, &data, || format!("get {}", at(&h)))?;
    listed_with(&cx, &h, data.len() as u64).await?;

    cx.delete(&h).await.ctx(|| format!("delete {}", at(&h)))?;
    expect_kind(cx.backend.get(&h, None).await, ErrorKind::NotFound, || {
        format!("get {} after delete", at(&h))
    })?;
    expect_kind(cx.backend.head(&h).await, ErrorKind::NotFound, || {
        format!("head {} after delete", at(&h))
    })?;
    not_listed(&cx, &h).await?;

    let again = pattern(&format!("{} again", h.path()), 700);
    cx.put(&h, again.clone(), PutMode::Create)
        .await
        .ctx(|| format!("put (create) {} again after deleting it", at(&h)))?;
    let got = cx
        .backend
        .get(&h, None)
        .await
        .ctx(|| format!("get {} (re-created)", at(&h)))?;
    same(&got, &again, || format!("get {} (re-created)", at(&h)))?;
    cx.delete(&h)
        .await
        .ctx(|| format!("delete {} (re-created)", at(&h)))?;
    Ok(())
}

/// Ranged reads return `range ∩ [0, size)`, and a range starting past the
/// end is `InvalidRange` (see [`crate::clip_range`]).
pub(super) async fn ranged_reads(cx: Arc<Ctx>) -> Outcome {
    let h = Handle::new(Kind::Pack, cx.name("range"));
    let data = pattern(&h.name, 4103);
    let len = data.len() as u64;
    cx.put(&h, data.clone(), PutMode::Create)
        .await
        .ctx(|| format!("put {}", at(&h)))?;

    let ok_cases: [(&str, Range<u64>); 9] = [
        ("start", 0..10),
        ("middle", 100..2000),
        ("end", len - 10..len),
        ("end past the object (truncated)", len - 10..len + 100),
        ("everything, open-ended", 0..u64::MAX),
        ("whole object, exact", 0..len),
        ("empty range in the middle", 500..500),
        ("empty range at the end", len..len),
        ("starting exactly at the end", len..len + 10),
    ];
    for (what, r) in ok_cases {
        let got = cx
            .backend
            .get(&h, Some(r.clone()))
            .await
            .ctx(|| format!("get {} range {r:?} ({what})", at(&h)))?;
        let start = r.start.min(len) as usize;
        let end = r.end.min(len) as usize;
        same(&got, &data[start..end], || {
            format!("get {} range {r:?} ({what})", at(&h))
        })?;
    }
    for r in [len + 1..len + 10, len + 1000..len + 2000] {
        expect_kind(
            cx.backend.get(&h, Some(r.clone())).await,
            ErrorKind::InvalidRange,
            || {
                format!(
                    "get {} ({len} bytes) range {r:?}, starting past the end",
                    at(&h)
                )
            },
        )?;
    }
    cx.delete(&h).await.ctx(|| format!("delete {}", at(&h)))?;
    Ok(())
}

pub(super) async fn zero_byte_object(cx: Arc<Ctx>) -> Outcome {
    let h = Handle::new(Kind::Snapshot, cx.name("empty"));
    cx.put(&h, Bytes::new(), PutMode::Create)
        .await
        .ctx(|| format!("put empty {}", at(&h)))?;
    let meta = cx
        .backend
        .head(&h)
        .await
        .ctx(|| format!("head empty {}", at(&h)))?;
    ensure(meta.size == 0, || {
        format!("head empty {} gives size {}", at(&h), meta.size)
    })?;
    let got = cx
        .backend
        .get(&h, None)
        .await
        .ctx(|| format!("get empty {}", at(&h)))?;
    same(&got, &[], || format!("get empty {}", at(&h)))?;
    for r in [0..0, 0..10] {
        let got = cx
            .backend
            .get(&h, Some(r.clone()))
            .await
            .ctx(|| format!("get empty {} range {r:?}", at(&h)))?;
        same(&got, &[], || format!("get empty {} range {r:?}", at(&h)))?;
    }
    expect_kind(
        cx.backend.get(&h, Some(1..2)).await,
        ErrorKind::InvalidRange,
        || format!("get empty {} range 1..2", at(&h)),
    )?;
    listed_with(&cx, &h, 0).await?;
    cx.delete(&h)
        .await
        .ctx(|| format!("delete empty {}", at(&h)))?;
    expect_kind(cx.backend.head(&h).await, ErrorKind::NotFound, || {
        format!("head empty {} after delete", at(&h))
    })
}

pub(super) async fn large_object(cx: Arc<Ctx>) -> Outcome {
    let h = Handle::new(Kind::Pack, cx.name("large"));
    let size = cx.opts.large_object_bytes;
    let data = Bytes::from(pattern(&h.name, size));
    let want_hash = blake3::hash(&data);
    cx.put(&h, data.clone(), PutMode::Overwrite)
        .await
        .ctx(|| format!("put {} of {size} bytes", at(&h)))?;
    let meta = cx
        .backend
        .head(&h)
        .await
        .ctx(|| format!("head {}", at(&h)))?;
    ensure(meta.size == size as u64, || {
        format!("head {} gives size {}, expected {size}", at(&h), meta.size)
    })?;
    let got = cx
        .backend
        .get(&h, None)
        .await
        .ctx(|| format!("get {}", at(&h)))?;
    ensure(got.len() == size, || {
        format!("get {} read {} bytes, expected {size}", at(&h), got.len())
    })?;
    let got_hash = blake3::hash(&got);
    ensure(got_hash == want_hash, || {
        format!(
            "get {}: BLAKE3 of the data read back is {got_hash}, written {want_hash}",
            at(&h)
        )
    })?;
    drop(got);
    // A window across the middle, where multipart uploads split objects.
    let start = size / 2;
    let end = (start + (1 << 20)).min(size);
    let r = start as u64..end as u64;
    let got = cx
        .backend
        .get(&h, Some(r.clone()))
        .await
        .ctx(|| format!("get {} range {r:?}", at(&h)))?;
    same(&got, &data[start..end], || {
        format!("get {} range {r:?}", at(&h))
    })?;
    cx.delete(&h).await.ctx(|| format!("delete {}", at(&h)))?;
    Ok(())
}

/// A create-only put of an existing name fails with `AlreadyExists` and
/// leaves the object alone. Without `atomic_create` the backend checks for
/// existence first, so a *sequential* second create must fail just the
/// same; only racing creates may both succeed (see `concurrent_writers`).
pub(super) async fn create_only_put(cx: Arc<Ctx>) -> Outcome {
    let atomic = cx.backend.capabilities().atomic_create;
    let h = Handle::new(Kind::Lock, cx.name("create"));
    let first = pattern("first writer", 300);
    let second = pattern("second writer", 200);
    cx.put(&h, first.clone(), PutMode::Create)
        .await
        .ctx(|| format!("first create of {}", at(&h)))?;
    expect_kind(
        cx.put(&h, second, PutMode::Create).await,
        ErrorKind::AlreadyExists,
        || {
            format!(
                "second create of {} with different bytes (atomic_create = {atomic})",
                at(&h)
            )
        },
    )?;
    let got = cx
        .backend
        .get(&h, None)
        .await
        .ctx(|| format!("get {}", at(&h)))?;
    same(&got, &first, || {
        format!("get {} after a rejected second create", at(&h))
    })?;

    // The same name in another kind is another object.
    let other = Handle::new(Kind::Snapshot, h.name.clone());
    cx.put(&other, pattern("other kind", 100), PutMode::Create)
        .await
        .ctx(|| format!("create {} while {} exists", at(&other), at(&h)))?;
    let got = cx
        .backend
        .get(&h, None)
        .await
        .ctx(|| format!("get {}", at(&h)))?;
    same(&got, &first, || {
        format!("get {} after creating {}", at(&h), at(&other))
    })?;

    cx.delete(&h).await.ctx(|| format!("delete {}", at(&h)))?;
    cx.delete(&other)
        .await
        .ctx(|| format!("delete {}", at(&other)))?;
    Ok(())
}

/// An overwriting put replaces the whole object, including by a shorter
/// one (no stale tail), and works on a name that does not exist yet.
pub(super) async fn overwrite_put(cx: Arc<Ctx>) -> Outcome {
    for (kind, first_mode) in [
        (Kind::Index, PutMode::Overwrite),
        (Kind::Key, PutMode::Create),
    ] {
        let h = Handle::new(kind, cx.name("overwrite"));
        let long = pattern("long version", 3000);
        let short = pattern("short version", 100);
        cx.put(&h, long.clone(), first_mode)
            .await
            .ctx(|| format!("first put ({first_mode:?}) of {}", at(&h)))?;
        let got = cx
            .backend
            .get(&h, None)
            .await
            .ctx(|| format!("get {}", at(&h)))?;
        same(&got, &long, || {
            format!("get {} after the first put", at(&h))
        })?;
        cx.put(&h, short.clone(), PutMode::Overwrite)
            .await
            .ctx(|| format!("overwriting put of {}", at(&h)))?;
        let got = cx
            .backend
            .get(&h, None)
            .await
            .ctx(|| format!("get {}", at(&h)))?;
        same(&got, &short, || {
            format!("get {} after overwriting with a shorter object", at(&h))
        })?;
        let meta = cx
            .backend
            .head(&h)
            .await
            .ctx(|| format!("head {}", at(&h)))?;
        ensure(meta.size == short.len() as u64, || {
            format!(
                "head {} after overwrite gives size {}, expected {}",
                at(&h),
                meta.size,
                short.len()
            )
        })?;
        listed_with(&cx, &h, short.len() as u64).await?;
        cx.delete(&h).await.ctx(|| format!("delete {}", at(&h)))?;
    }
    Ok(())
}

/// get, ranged get, head and delete of a missing object give `NotFound`,
/// for every kind (packs also when their `data/xx` directory is missing).
pub(super) async fn missing_objects(cx: Arc<Ctx>) -> Outcome {
    for kind in Kind::ALL {
        // The namespace may hold a config by now only if the suite's own
        // roundtrip failed to delete it; that case reports it.
        if kind == Kind::Config {
            continue;
        }
        let h = Handle::new(kind, cx.name("zz-missing"));
        expect_kind(cx.backend.get(&h, None).await, ErrorKind::NotFound, || {
            format!("get of missing {}", at(&h))
        })?;
        expect_kind(
            cx.backend.get(&h, Some(0..10)).await,
            ErrorKind::NotFound,
            || format!("ranged get of missing {}", at(&h)),
        )?;
        expect_kind(cx.backend.head(&h).await, ErrorKind::NotFound, || {
            format!("head of missing {}", at(&h))
        })?;
        expect_kind(cx.backend.delete(&h).await, ErrorKind::NotFound, || {
            format!("delete of missing {}", at(&h))
        })?;
    }
    Ok(())
}

/// Names using every allowed character, the longest allowed name (128) and,
/// for packs, the shortest (2, the name equal to its directory).
pub(super) async fn allowed_names(cx: Arc<Ctx>) -> Outcome {
    let run = &cx.run;
    let mut long = format!("{run}-{ALPHABET}");
    while long.len() < 128 {
        long.push_str(ALPHABET);
    }
    long.truncate(128);
    let base = vec![
        long,
        format!("-{run}"),
        format!("_{run}."),
        format!("{run}..tmp"),
        format!("{run}.tmp-x"),
        format!("UPPER-{run}"),
    ];
    for kind in Kind::ALL {
        if kind == Kind::Config {
            continue;
        }
        let mut names = base.clone();
        if kind == Kind::Pack {
            // Two characters from the run id, in upper case so they differ
            // from the other names' directories.
            names.push(
                run[..2]
                    .to_uppercase()
                    .replace(|c: char| c.is_ascii_digit(), "Q"),
            );
        }
        let handles: Vec<Handle> = names.into_iter().map(|n| Handle::new(kind, n)).collect();
        for h in &handles {
            ensure(Handle::is_valid_name(kind, &h.name), || {
                format!("suite bug: {} is not a valid name", at(h))
            })?;
            let data = pattern(&h.name, 64 + h.name.len());
            cx.put(h, data.clone(), PutMode::Create)
                .await
                .ctx(|| format!("put {}", at(h)))?;
            let got = cx
                .backend
                .get(h, None)
                .await
                .ctx(|| format!("get {}", at(h)))?;
            same(&got, &data, || format!("get {}", at(h)))?;
            let meta = cx.backend.head(h).await.ctx(|| format!("head {}", at(h)))?;
            ensure(meta.size == data.len() as u64, || {
                format!(
                    "head {} gives size {}, expected {}",
                    at(h),
                    meta.size,
                    data.len()
                )
            })?;
        }
        let map = listing(&cx, kind).await?;
        for h in &handles {
            let want = 64 + h.name.len() as u64;
            match map.get(&h.name) {
                Some(&s) if s == want => {}
                Some(&s) => {
                    return Err(format!(
                        "list {kind} gives size {s} for {}, expected {want}",
                        at(h)
                    ))
                }
                None => return Err(format!("list {kind} does not return {}", at(h))),
            }
        }
        for h in &handles {
            cx.delete(h).await.ctx(|| format!("delete {}", at(h)))?;
            expect_kind(cx.backend.head(h).await, ErrorKind::NotFound, || {
                format!("head {} after delete", at(h))
            })?;
        }
    }
    Ok(())
}

/// List `many_objects` packs (more than one page of most listing APIs, and
/// spread over the `data/xx` directories): exactly that set, each once.
pub(super) async fn many_objects(cx: Arc<Ctx>) -> Outcome {
    let n = cx.opts.many_objects;
    let suffix = cx.name("many");
    let handles: Vec<Handle> = (0..n)
        .map(|i| Handle::new(Kind::Pack, format!("{:02x}-{i}-{suffix}", i % 256)))
        .collect();
    let content = |h: &Handle| Bytes::from(format!("content of {}", h.name));

    let put_cx = cx.clone();
    concurrently(handles.clone(), cx.opts.concurrency, move |h: Handle| {
        let cx = put_cx.clone();
        async move {
            cx.put(&h, content(&h), PutMode::Create)
                .await
                .ctx(|| format!("put {}", at(&h)))
        }
    })
    .await?;

    let map = listing(&cx, Kind::Pack).await?;
    let ours: HashMap<&String, u64> = map
        .iter()
        .filter(|(name, _)| name.ends_with(&suffix))
        .map(|(name, size)| (name, *size))
        .collect();
    let mut missing = Vec::new();
    for h in &handles {
        match ours.get(&h.name) {
            Some(&s) if s == content(h).len() as u64 => {}
            Some(&s) => {
                return Err(format!(
                    "list pack gives size {s} for {}, expected {}",
                    at(h),
                    content(h).len()
                ))
            }
            None => missing.push(h.name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "list pack returned {} of {n} objects written; missing e.g. {:?}",
            n - missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    ensure(ours.len() == n, || {
        format!(
            "list pack returned {} objects of this case, {n} were written",
            ours.len()
        )
    })?;

    let del_cx = cx.clone();
    concurrently(handles, cx.opts.concurrency, move |h: Handle| {
        let cx = del_cx.clone();
        async move { cx.delete(&h).await.ctx(|| format!("delete {}", at(&h))) }
    })
    .await?;
    let map = listing(&cx, Kind::Pack).await?;
    let left = map.keys().filter(|name| name.ends_with(&suffix)).count();
    ensure(left == 0, || {
        format!("list pack still returns {left} of the {n} objects after deleting them all")
    })
}

/// Concurrent writers of distinct objects all succeed; racing create-only
/// puts of one name: with `atomic_create` exactly one wins and the others
/// get `AlreadyExists`. Without it, at least one wins, every loser gets
/// `AlreadyExists`, and the stored object is one winner's, never a mix.
pub(super) async fn concurrent_writers(cx: Arc<Ctx>) -> Outcome {
    let atomic = cx.backend.capabilities().atomic_create;
    let writers = cx.opts.concurrency.max(1);
    let racers = cx.opts.concurrency.max(2);
    let race = Handle::new(Kind::Lock, cx.name("race"));
    let racer_data = |r: usize| Bytes::from(pattern(&format!("racer {r}"), 500 + r));

    let mut distinct = JoinSet::new();
    for w in 0..writers {
        let cx = cx.clone();
        distinct.spawn(async move {
            let mut written = Vec::new();
            for i in 0..4 {
                let h = Handle::new(Kind::Snapshot, cx.name(&format!("w{w}-{i}")));
                let data = Bytes::from(pattern(&h.name, 100 + i));
                cx.put(&h, data.clone(), PutMode::Create)
                    .await
                    .ctx(|| format!("concurrent put {}", at(&h)))?;
                written.push((h, data));
            }
            Ok::<_, String>(written)
        });
    }
    let barrier = Arc::new(Barrier::new(racers));
    let mut racing = JoinSet::new();
    for r in 0..racers {
        let (cx, race, barrier) = (cx.clone(), race.clone(), barrier.clone());
        let data = racer_data(r);
        racing.spawn(async move {
            barrier.wait().await;
            (r, cx.put(&race, data, PutMode::Create).await)
        });
    }

    let mut written = Vec::new();
    while let Some(j) = distinct.join_next().await {
        written.extend(j.map_err(|e| format!("writer task failed: {e}"))??);
    }
    let mut winners = Vec::new();
    while let Some(j) = racing.join_next().await {
        let (r, result) = j.map_err(|e| format!("racer task failed: {e}"))?;
        match result {
            Ok(()) => winners.push(r),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "racing create {r} of {}: expected success or already exists, got {e}",
                    at(&race)
                ))
            }
        }
    }
    winners.sort_unstable();
    if atomic {
        ensure(winners.len() == 1, || {
            format!(
                "{racers} racing creates of {}: racers {winners:?} succeeded; atomic_create promises exactly one",
                at(&race)
            )
        })?;
    } else {
        ensure(!winners.is_empty(), || {
            format!("{racers} racing creates of {}: none succeeded", at(&race))
        })?;
    }
    let stored = cx
        .backend
        .get(&race, None)
        .await
        .ctx(|| format!("get {}", at(&race)))?;
    ensure(winners.iter().any(|&r| stored == racer_data(r)), || {
        format!(
            "{} holds {} bytes that are not what a winning racer ({winners:?}) wrote",
            at(&race),
            stored.len()
        )
    })?;

    let listed = listing(&cx, Kind::Snapshot).await?;
    for (h, data) in &written {
        let got = cx
            .backend
            .get(h, None)
            .await
            .ctx(|| format!("get {}", at(h)))?;
        same(&got, data, || format!("get {} written concurrently", at(h)))?;
        ensure(listed.get(&h.name) == Some(&(data.len() as u64)), || {
            format!(
                "list snapshot does not return {} with size {}",
                at(h),
                data.len()
            )
        })?;
    }
    cx.delete(&race)
        .await
        .ctx(|| format!("delete {}", at(&race)))?;
    for (h, _) in &written {
        cx.delete(h).await.ctx(|| format!("delete {}", at(h)))?;
    }
    Ok(())
}

/// While objects are being written, listings and reads never show a
/// temporary file or a partial object; afterwards no kind lists anything
/// that is not a valid object name.
pub(super) async fn no_partial_or_temporary_objects(cx: Arc<Ctx>) -> Outcome {
    let size = cx.opts.large_object_bytes.clamp(1, 4 << 20);
    let suffix = cx.name("partial");
    let handles: Vec<Handle> = (0..4)
        .map(|i| Handle::new(Kind::Pack, format!("p{i}-{suffix}")))
        .collect();
    let writer = {
        let (cx, handles) = (cx.clone(), handles.clone());
        tokio::spawn(async move {
            for h in &handles {
                let data = pattern(&h.name, size);
                cx.put(h, data, PutMode::Create)
                    .await
                    .ctx(|| format!("put {}", at(h)))?;
            }
            Ok::<_, String>(())
        })
    };
    let mut rounds = 0u32;
    loop {
        let done = writer.is_finished();
        let map = listing(&cx, Kind::Pack).await?;
        for (name, &s) in map.iter().filter(|(n, _)| n.ends_with(&suffix)) {
            ensure(s == size as u64, || {
                format!("list pack returned pack {name:?} with size {s} while it was being written ({size} bytes)")
            })?;
        }
        match cx.backend.get(&handles[0], None).await {
            Ok(d) => ensure(d.len() == size, || {
                format!(
                    "get {} returned {} of {size} bytes while objects were being written",
                    at(&handles[0]),
                    d.len()
                )
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "get {} while it was being written: {e}",
                    at(&handles[0])
                ))
            }
        }
        rounds += 1;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer
        .await
        .map_err(|e| format!("writer task failed: {e}"))??;
    tracing::debug!(rounds, "listed while writing");

    for kind in Kind::ALL {
        listing(&cx, kind).await?;
    }
    for h in &handles {
        cx.delete(h).await.ctx(|| format!("delete {}", at(h)))?;
    }
    Ok(())
}

/// No object of this run is left in any listing.
pub(super) async fn nothing_left_behind(cx: Arc<Ctx>) -> Outcome {
    let mut left = Vec::new();
    for kind in Kind::ALL {
        let map = listing(&cx, kind).await?;
        left.extend(
            map.into_keys()
                .filter(|n| n.contains(&cx.run))
                .map(|n| format!("{kind} {n:?}")),
        );
    }
    ensure(left.is_empty(), || {
        format!(
            "objects of this run are still listed after their deletion: {}",
            left.join(", ")
        )
    })
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("backend", &self.backend)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// Every call through `rejected` (the same location, credentials the
/// service refuses) fails with `Unauthenticated`: not NotFound (which would
/// make `init` think the repository is new), not a transient error (which
/// would be retried). The object written with good credentials stays.
pub(super) async fn unauthenticated(cx: Arc<Ctx>, rejected: Arc<dyn Backend>) -> Outcome {
    let h = Handle::new(Kind::Key, cx.name("auth"));
    let data = pattern(&h.path(), 321);
    cx.put(&h, data.clone(), PutMode::Create)
        .await
        .ctx(|| format!("put {} with good credentials", at(&h)))?;
    let other = Handle::new(Kind::Key, cx.name("auth-new"));
    cx.written().insert(other.clone());
    let want = ErrorKind::Unauthenticated;
    let what = |op: &str, h: &Handle| format!("{op} {} with rejected credentials", at(h));
    expect_kind(
        rejected
            .put(&other, Bytes::from_static(b"x"), PutMode::Create)
            .await,
        want,
        || what("put (create)", &other),
    )?;
    expect_kind(rejected.get(&h, None).await, want, || what("get", &h))?;
    expect_kind(rejected.get(&h, Some(0..10)).await, want, || {
        what("ranged get", &h)
    })?;
    expect_kind(rejected.head(&h).await, want, || what("head", &h))?;
    expect_kind(rejected.list(Kind::Key).await.map(|_| ()), want, || {
        format!("list {} with rejected credentials", Kind::Key)
    })?;
    expect_kind(rejected.delete(&h).await, want, || what("delete", &h))?;
    unchanged_after(&cx, &h, &data, &other, "rejected").await
}

/// After calls that must have failed (`how`: "rejected", "denied"): `h`
/// still holds `data` and `other` was not created, as seen with good
/// credentials, also in the listing (no temporary file under its name).
async fn unchanged_after(cx: &Ctx, h: &Handle, data: &[u8], other: &Handle, how: &str) -> Outcome {
    let got = cx
        .backend
        .get(h, None)
        .await
        .ctx(|| format!("get {} with good credentials after the {how} calls", at(h)))?;
    same(&got, data, || format!("{} after the {how} calls", at(h)))?;
    expect_kind(cx.backend.head(other).await, ErrorKind::NotFound, || {
        format!("{} must not exist after a {how} put", at(other))
    })?;
    not_listed(cx, other).await
}

/// Through `reader` (the same location, credentials that may read and list
/// but not write or delete): reads work, every write and delete fails with
/// `PermissionDenied`, and nothing changes.
pub(super) async fn permission_denied(cx: Arc<Ctx>, reader: Arc<dyn Backend>) -> Outcome {
    let h = Handle::new(Kind::Snapshot, cx.name("ro"));
    let data = pattern(&h.path(), 4321);
    cx.put(&h, data.clone(), PutMode::Create)
        .await
        .ctx(|| format!("put {} with good credentials", at(&h)))?;
    let got = reader
        .get(&h, None)
        .await
        .ctx(|| format!("get {} with read-only credentials", at(&h)))?;
    same(&got, &data, || {
        format!("{} read with read-only credentials", at(&h))
    })?;
    let listed = reader
        .list(h.kind)
        .await
        .ctx(|| format!("list {} with read-only credentials", h.kind))?;
    ensure(listed.iter().any(|m| m.handle == h), || {
        format!(
            "list {} with read-only credentials does not return {}",
            h.kind,
            at(&h)
        )
    })?;
    let other = Handle::new(Kind::Snapshot, cx.name("ro-new"));
    cx.written().insert(other.clone());
    let want = ErrorKind::PermissionDenied;
    let what = |op: &str, h: &Handle| format!("{op} {} with read-only credentials", at(h));
    expect_kind(
        reader
            .put(&other, Bytes::from_static(b"new"), PutMode::Create)
            .await,
        want,
        || what("put (create)", &other),
    )?;
    expect_kind(
        reader
            .put(&h, Bytes::from_static(b"replaced"), PutMode::Overwrite)
            .await,
        want,
        || what("put (overwrite)", &h),
    )?;
    expect_kind(reader.delete(&h).await, want, || what("delete", &h))?;
    unchanged_after(&cx, &h, &data, &other, "denied").await
}

//! A repository in a directory of the local filesystem (or anything mounted
//! there: a USB disk, NFS, …).
//!
//! Durability is the point of this module: a `put` writes a temporary file
//! (`.tmp-<random>`) next to its target, fsyncs it, publishes it under its
//! final name with one atomic step, then fsyncs the directory, so after a
//! crash an object is either entirely there or not there at all. Listings
//! skip temporary files, which a crash can leave behind.
//!
//! All blocking filesystem work runs in `tokio::task::spawn_blocking`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    clip_range, Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode,
    Result,
};

/// Prefix of the temporary files a `put` writes before publishing. Names of
/// objects never start with a dot (see [`Handle::is_valid_name`]), so these
/// cannot collide with an object.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Key slots hold wrapped key material: readable by the owner only.
const KEY_FILE_MODE: u32 = 0o600;
/// Everything else is encrypted (or, for `config`, public).
const FILE_MODE: u32 = 0o644;

/// A repository rooted at a local directory.
#[derive(Clone)]
pub struct LocalBackend {
    // Shared with the blocking tasks, which need an owned, 'static root.
    root: Arc<PathBuf>,
}

impl LocalBackend {
    /// A backend for the repository at `root`. Nothing is touched until the
    /// first request; [`Backend::create`] makes the directory tree.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: Arc::new(root.into()),
        }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `handle` lives, after checking its name: a name is joined onto
    /// a path, so an unchecked one (`../x`) could escape the repository.
    fn object_path(&self, handle: &Handle) -> Result<PathBuf> {
        if !Handle::is_valid_name(handle.kind, &handle.name) {
            return Err(BackendError::new(
                ErrorKind::Other,
                format!("invalid {} name {:?} ({self})", handle.kind, handle.name),
            ));
        }
        Ok(self.root.join(handle.path()))
    }
}

impl fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBackend")
            .field("root", &self.root)
            .finish()
    }
}

impl fmt::Display for LocalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "local:{}", self.root.display())
    }
}

/// Run blocking filesystem work off the async executor.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        // A panic in the closure is a bug; let it surface as one.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(BackendError::with_source(
            ErrorKind::Other,
            "filesystem task was cancelled",
            e,
        )),
    }
}

/// An I/O error of `action` on `path`, mapped onto a kind.
fn io_err(action: &str, path: &Path, err: io::Error) -> BackendError {
    BackendError::from_io(format!("{action} {}", path.display()), err)
}

/// Make a directory's entries (new, renamed or removed files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    // An empty parent means the current directory (relative roots).
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing directory", dir, e))
}

/// The repository root must exist: creating it on demand would turn a
/// missing mount (an unplugged USB disk) into a backup silently written to
/// the mount point's own filesystem.
fn check_root(root: &Path) -> Result<()> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(BackendError::new(
            ErrorKind::Other,
            format!("repository path {} is not a directory", root.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BackendError::with_source(
            ErrorKind::NotFound,
            format!(
                "repository directory {} does not exist (not initialised, or not mounted?)",
                root.display()
            ),
            e,
        )),
        Err(e) => Err(io_err("checking repository directory", root, e)),
    }
}

/// Make sure `dir` (the root or below it) exists, creating missing levels
/// below the root and fsyncing the parent of each, so a published file
/// cannot be lost with a directory entry that was never made durable.
fn ensure_dir(root: &Path, dir: &Path) -> Result<()> {
    if dir == root {
        return check_root(root);
    }
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(BackendError::new(
                ErrorKind::Other,
                format!("{} is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("checking directory", dir, e)),
    }
    let parent = dir.parent().ok_or_else(|| {
        BackendError::new(
            ErrorKind::Other,
            format!("{} has no parent directory", dir.display()),
        )
    })?;
    ensure_dir(root, parent)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        // A concurrent put made it. We still fsync the parent below: the
        // other writer may not have done so yet, and our object must not
        // depend on it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating directory", dir, e)),
    }
    sync_dir(parent)
}

fn put_blocking(root: &Path, path: &Path, kind: Kind, data: &[u8], mode: PutMode) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        BackendError::new(
            ErrorKind::Other,
            format!("{} has no parent directory", path.display()),
        )
    })?;
    ensure_dir(root, dir)?;
    let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    let file_mode = if kind == Kind::Key {
        KEY_FILE_MODE
    } else {
        FILE_MODE
    };
    if let Err(e) = write_and_publish(&tmp, path, file_mode, data, mode) {
        // Best effort: the temporary file may not exist (open failed) or be
        // gone already (published by rename). A leftover is ignored by list.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

fn write_and_publish(
    tmp: &Path,
    path: &Path,
    file_mode: u32,
    data: &[u8],
    mode: PutMode,
) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file_mode)
        .open(tmp)
        .map_err(|e| io_err("creating", tmp, e))?;
    file.write_all(data)
        .map_err(|e| io_err("writing", tmp, e))?;
    file.sync_all().map_err(|e| io_err("syncing", tmp, e))?;
    // The pages are clean now, so this drops them (borg does the same with
    // its segment files). A backup writes far more than it will read back
    // soon; left cached, those pages evict the user's working set, and the
    // kernel keeps taking fresh pages for the next pack instead of reusing
    // these: a third of a 3-replica backup's CPU went to that copy. Only a
    // hint: a file system that ignores it loses nothing. (macOS has no
    // posix_fadvise.)
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
    drop(file);
    match mode {
        PutMode::Overwrite => fs::rename(tmp, path).map_err(|e| io_err("renaming to", path, e)),
        PutMode::Create => {
            // link(2) never replaces its target: it fails with EEXIST, so of
            // two racing creates exactly one wins, and the object appears
            // complete. (rename(2) would silently replace.)
            fs::hard_link(tmp, path).map_err(|e| io_err("publishing", path, e))?;
            if let Err(e) = fs::remove_file(tmp) {
                // The object is published; failing now would report a write
                // that happened as failed. The leftover is invisible to list.
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove temporary file");
            }
            Ok(())
        }
    }
}

fn get_blocking(handle: &Handle, path: &Path, range: Option<Range<u64>>) -> Result<Bytes> {
    let mut file = File::open(path).map_err(|e| io_err("opening", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| io_err("reading metadata of", path, e))?
        .len();
    let range = match range {
        None => 0..size,
        Some(r) => clip_range(handle, &r, size)?,
    };
    if range.start > 0 {
        file.seek(SeekFrom::Start(range.start))
            .map_err(|e| io_err("seeking in", path, e))?;
    }
    let want = range.end - range.start;
    // The capacity is only a hint; a file that shrank since `metadata` is
    // returned shorter, and the engine checks lengths.
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want)
        .read_to_end(&mut buf)
        .map_err(|e| io_err("reading", path, e))?;
    Ok(Bytes::from(buf))
}

fn head_blocking(handle: &Handle, path: &Path) -> Result<ObjectMeta> {
    let meta = fs::metadata(path).map_err(|e| io_err("reading metadata of", path, e))?;
    if !meta.is_file() {
        return Err(BackendError::new(
            ErrorKind::NotFound,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(ObjectMeta {
        handle: handle.clone(),
        size: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Regular files directly in `dir` that are objects of `kind`; `rel` is the
/// path of `dir` relative to the root, as [`Handle::from_path`] expects it.
/// `Ok(false)` when `dir` does not exist.
fn list_dir(dir: &Path, rel: &str, kind: Kind, out: &mut Vec<ObjectMeta>) -> Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: not ours
        };
        let Some(handle) = Handle::from_path(kind, &format!("{rel}/{name}")) else {
            continue; // temporary file or stray
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Deleted between readdir and stat: it is simply gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("reading metadata of", &entry.path(), e)),
        };
        if meta.is_file() {
            out.push(ObjectMeta {
                handle,
                size: meta.len(),
                modified: meta.modified().ok(),
            });
        }
    }
    Ok(true)
}

fn list_blocking(root: &Path, kind: Kind) -> Result<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    match kind {
        Kind::Config => {
            let handle = Handle::config();
            let path = root.join(handle.path());
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => out.push(ObjectMeta {
                    handle,
                    size: m.len(),
                    modified: m.modified().ok(),
                }),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => check_root(root)?,
                Err(e) => return Err(io_err("reading metadata of", &path, e)),
            }
        }
        Kind::Pack => {
            let data = root.join(kind.dir());
            let entries = match fs::read_dir(&data) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    check_root(root)?;
                    return Ok(out);
                }
                Err(e) => return Err(io_err("listing", &data, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err("listing", &data, e))?;
                let Some(sub) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // Only the two-character fan-out directories hold packs;
                // list_dir checks each name against its directory.
                if sub.len() != 2 || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                list_dir(
                    &entry.path(),
                    &format!("{}/{sub}", kind.dir()),
                    kind,
                    &mut out,
                )?;
            }
        }
        _ => {
            if !list_dir(&root.join(kind.dir()), kind.dir(), kind, &mut out)? {
                check_root(root)?;
            }
        }
    }
    Ok(out)
}

fn delete_blocking(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| io_err("deleting", path, e))?;
    // Without this a deleted lock could reappear after a crash.
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn create_blocking(root: &Path) -> Result<()> {
    if !root.exists() {
        fs::create_dir_all(root).map_err(|e| io_err("creating repository directory", root, e))?;
        if let Some(parent) = root.parent() {
            sync_dir(parent)?;
        }
    }
    for kind in Kind::ALL {
        if !kind.dir().is_empty() {
            ensure_dir(root, &root.join(kind.dir()))?;
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for LocalBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_create: true,
            max_object_size: None,
            default_connections: 4,
            local: true,
        }
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let path = self.object_path(handle)?;
        let root = Arc::clone(&self.root);
        let kind = handle.kind;
        blocking(move || put_blocking(&root, &path, kind, &data, mode)).await
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let path = self.object_path(handle)?;
        let handle = handle.clone();
        blocking(move || get_blocking(&handle, &path, range)).await
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        let path = self.object_path(handle)?;
        let handle = handle.clone();
        blocking(move || head_blocking(&handle, &path)).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        let root = Arc::clone(&self.root);
        blocking(move || list_blocking(&root, kind)).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let path = self.object_path(handle)?;
        blocking(move || delete_blocking(&path)).await
    }

    async fn create(&self) -> Result<()> {
        let root = Arc::clone(&self.root);
        blocking(move || create_blocking(&root)).await
    }
}

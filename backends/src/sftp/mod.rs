//! SFTP backend (SSH File Transfer Protocol v3, as spoken by OpenSSH).
//!
//! `sftp://[user@]host[:port]/absolute/path` (`/~/dir` for a path below the
//! login directory). Objects are files laid out by [`Handle::path`] below the
//! path; directories are created on demand.
//!
//! Writes go to a temporary file `.tmp-<random>` in the target directory,
//! are flushed with `fsync@openssh.com` when the server has it, and are then
//! renamed into place, so a reader never sees a partial object:
//! - [`PutMode::Create`] uses the plain SFTP rename, which OpenSSH implements
//!   with `link(2)`+`unlink(2)` and which therefore fails when the target
//!   exists: an atomic create-if-absent (on file systems with hard links;
//!   elsewhere OpenSSH falls back to a racy stat-then-rename).
//! - [`PutMode::Overwrite`] uses `posix-rename@openssh.com` (an atomic
//!   replace); on servers without it, remove + rename, which leaves a short
//!   window in which the object is missing.
//!
//! Transfers are pipelined: a large `put` or `get` keeps up to
//! [`PIPELINE_DEPTH`] requests of up to 255 KiB in flight on one channel,
//! and independent operations run on different channels of one SSH
//! connection (option `connections`, default 4).
//!
//! Host keys are always verified (module `known_hosts`); authentication by key
//! file, ssh-agent or password (module `conn`).

mod conn;
pub(crate) mod known_hosts;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use serde::Deserialize;

use self::conn::{is_transport_error, Auth, Channel, Conn, Pool, Target};
use self::known_hosts::HostKeyPolicy;
use crate::net_url::{read_secret_file, temp_name, UrlParts};
use crate::options::{self, OptionMap};
use crate::{
    clip_range, Backend, BackendError, Capabilities, ErrorKind, Handle, Kind, ObjectMeta, PutMode,
    Result,
};

/// Requests kept in flight by one transfer. With 255 KiB requests this is
/// about 4 MiB, enough to fill a loopback or LAN link; OpenSSH's `sftp`
/// keeps 64 × 32 KiB = 2 MiB.
pub const PIPELINE_DEPTH: usize = 16;

/// A directory entry: name, size, whether it is a directory.
/// Name, size, whether it is a directory, modification time.
type Entry = (String, u64, bool, Option<std::time::SystemTime>);

fn mtime(attrs: &russh_sftp::protocol::FileAttributes) -> Option<std::time::SystemTime> {
    attrs
        .mtime
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.into()))
}

/// Directory listings in flight while listing packs.
const LIST_PARALLEL: usize = 16;

/// The options of an SFTP repository; unset means the default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftpOptions {
    /// File to verify the host key against (env `CAIRN_SFTP_KNOWN_HOSTS`,
    /// default `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// `SHA256:…` of the host key, instead of known_hosts.
    pub host_key_fingerprint: Option<String>,
    /// Private key (env `CAIRN_SFTP_KEY`); when neither is set, ssh-agent
    /// and then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`. An encrypted
    /// key's passphrase comes from `CAIRN_SFTP_KEY_PASSPHRASE`.
    pub key_file: Option<PathBuf>,
    /// File whose first line is the password. The password is the URL's if
    /// it has one, else this file's, else env `CAIRN_SFTP_PASSWORD`; it is
    /// tried after the keys.
    pub password_file: Option<PathBuf>,
    /// Login name when the URL has none (env `CAIRN_SFTP_USER`, then
    /// `$USER`).
    pub user: Option<String>,
    /// SFTP channels on the SSH connection (default 4, at most 64).
    pub connections: Option<usize>,
    /// Connect and per-request timeout in seconds (default 60).
    pub timeout_secs: Option<u64>,
    /// Flush each object to disk before publishing it (default true; only
    /// where the server offers `fsync@openssh.com`).
    pub fsync: Option<bool>,
}

impl SftpOptions {
    /// The options as text (cairn.toml, [`SftpBackend::from_url`]); an
    /// unknown key is an error.
    pub fn from_map(text: &OptionMap) -> Result<SftpOptions> {
        options::from_map("sftp", text)
    }
}

/// An SFTP server holding one repository.
pub struct SftpBackend {
    pool: Pool,
    /// Directory prefix of every object path: `""` (login directory),
    /// `"/"`, or `"/srv/repo/"`.
    prefix: String,
    fsync: bool,
    display: String,
    /// Directories this process has created or written into: a put into
    /// one of them opens its temporary file straight away. A put into any
    /// other sends `mkdir` and the open back to back (see
    /// [`SftpBackend::open_tmp`]).
    known_dirs: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl fmt::Debug for SftpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpBackend")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SftpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl SftpBackend {
    /// [`SftpBackend::new`] with the options as text (see
    /// [`SftpOptions::from_map`]). Async only for the callers written
    /// against it: nothing is contacted here either.
    pub async fn from_url(url: &str, options: &OptionMap) -> Result<Self> {
        Self::new(url, SftpOptions::from_map(options)?)
    }

    /// Parse the URL and check the options (reads `password_file`). Nothing
    /// is contacted yet: the first operation connects (and reconnects after
    /// a failure), so one unreachable backend does not stop a multi-backend
    /// run from starting; a wrong host key, credential or address is
    /// reported by that operation.
    pub fn new(url: &str, options: SftpOptions) -> Result<Self> {
        let u = UrlParts::parse(url, &["sftp"])?;
        let user = u
            .user
            .clone()
            .or(options.user)
            .or_else(|| env_nonempty("CAIRN_SFTP_USER"))
            .or_else(|| env_nonempty("USER"))
            .ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Other,
                    format!("{}: no user name in the URL", u.redacted(None)),
                )
            })?;
        let display = u.redacted(Some(&user));
        let port = u.port.unwrap_or(22);

        let host_keys = if let Some(fp) = options.host_key_fingerprint {
            HostKeyPolicy::Fingerprint(fp)
        } else {
            let path = options
                .known_hosts
                .map(crate::home::expand)
                .or_else(|| env_nonempty("CAIRN_SFTP_KNOWN_HOSTS").map(PathBuf::from))
                .or_else(|| crate::home::dir().map(|h| h.join(".ssh/known_hosts")))
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::Other,
                        format!("{display}: no known_hosts file (no HOME); set known_hosts"),
                    )
                })?;
            HostKeyPolicy::KnownHosts(path)
        };

        let password = match (&u.password, options.password_file.map(crate::home::expand)) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(f)) => Some(read_secret_file("sftp", "password_file", &f)?),
            (None, None) => env_nonempty("CAIRN_SFTP_PASSWORD"),
        };
        let key_file = options
            .key_file
            .map(crate::home::expand)
            .or_else(|| env_nonempty("CAIRN_SFTP_KEY").map(PathBuf::from));
        let default_keys = match (&key_file, crate::home::dir()) {
            (None, Some(h)) => ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|n| h.join(".ssh").join(n))
                .collect(),
            _ => Vec::new(),
        };
        let auth = Auth {
            key_file,
            key_passphrase: env_nonempty("CAIRN_SFTP_KEY_PASSPHRASE"),
            password,
            default_keys,
        };
        let channels = options.connections.unwrap_or(4).clamp(1, 64);
        let target = Target {
            host: u.host.clone(),
            port,
            user,
            auth,
            host_keys,
            timeout: Duration::from_secs(options.timeout_secs.unwrap_or(60).max(1)),
            channels,
            label: display.clone(),
        };

        // "/~/x" (and "/~") is relative to the login directory, as in
        // OpenSSH's sftp URLs; anything else is absolute.
        let path = u.path.as_str();
        let prefix = if path.is_empty() || path == "/~" {
            String::new()
        } else if let Some(rel) = path.strip_prefix("/~/") {
            dir_prefix(rel)
        } else {
            dir_prefix(path)
        };
        Ok(SftpBackend {
            pool: Pool::new(Arc::new(target)),
            prefix,
            fsync: options.fsync.unwrap_or(true),
            display,
            known_dirs: Default::default(),
        })
    }

    fn full(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// The repository directory itself, for `mkdir`.
    fn root_dir(&self) -> String {
        match self.prefix.as_str() {
            "" => ".".to_string(),
            "/" => "/".to_string(),
            p => p.trim_end_matches('/').to_string(),
        }
    }

    /// Turn an SFTP error into a [`BackendError`], dropping the connection
    /// when the transport failed.
    fn fail(&self, conn: &Arc<Conn>, what: &str, path: &str, e: SftpError) -> BackendError {
        // The server's status text ("No such file", "Permission denied")
        // goes into the message: many reports print only the message.
        let msg = format!("{what} {path} on {}: {e}", self.display);
        if is_transport_error(&e) {
            self.pool.invalidate(conn);
            return BackendError::with_source(ErrorKind::Transient, msg, e);
        }
        let kind = match &e {
            SftpError::Status(s) => match s.status_code {
                StatusCode::NoSuchFile => ErrorKind::NotFound,
                StatusCode::PermissionDenied => ErrorKind::PermissionDenied,
                StatusCode::OpUnsupported => ErrorKind::Unsupported,
                StatusCode::BadMessage => ErrorKind::Corrupt,
                StatusCode::Eof => ErrorKind::Corrupt,
                _ => ErrorKind::Other,
            },
            SftpError::Limited(_) => ErrorKind::Other,
            _ => ErrorKind::Transient,
        };
        BackendError::with_source(kind, msg, e)
    }

    async fn connection(&self) -> Result<(Arc<Conn>, Arc<Channel>)> {
        let conn = self.pool.get().await?;
        let ch = conn.channel();
        Ok((conn, ch))
    }

    /// `mkdir -p dir`, tolerating concurrent creators.
    async fn ensure_dir(&self, conn: &Arc<Conn>, ch: &Channel, dir: &str) -> Result<()> {
        // Walk up until a mkdir succeeds or finds the directory, then down.
        let mut pending = vec![dir.to_string()];
        while let Some(d) = pending.last().cloned() {
            match ch.raw.mkdir(d.as_str(), FileAttributes::empty()).await {
                Ok(_) => {
                    pending.pop();
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {
                    match parent(&d) {
                        Some(p) if !pending.contains(&p) => pending.push(p),
                        _ => {
                            return Err(self.fail(
                                conn,
                                "creating directory",
                                &d,
                                SftpError::Status(s),
                            ))
                        }
                    }
                }
                // Exists already (OpenSSH says "Failure" for EEXIST), or a
                // real failure: stat tells which.
                Err(e) if !is_transport_error(&e) => match ch.raw.stat(d.as_str()).await {
                    Ok(a) if a.attrs.is_dir() => {
                        pending.pop();
                    }
                    _ => return Err(self.fail(conn, "creating directory", &d, e)),
                },
                Err(e) => return Err(self.fail(conn, "creating directory", &d, e)),
            }
        }
        Ok(())
    }

    /// Create the temporary file `tmp` in `dir` (exclusive). In a directory
    /// not known to exist, `mkdir dir` goes out just before the open, on
    /// the same channel: the server handles them in order
    /// (draft-ietf-secsh-filexfer-02, 6.1), so a new `data/xx/` costs one
    /// round trip instead of three (open fails, mkdir, open again), and an
    /// existing one costs nothing more (the mkdir fails, unread). When the
    /// open still finds no directory (a parent is missing too), the full
    /// `mkdir -p` walk runs and the open is tried once more.
    async fn open_tmp(
        &self,
        conn: &Arc<Conn>,
        ch: &Arc<Channel>,
        dir: &str,
        tmp: &str,
        flags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<russh_sftp::protocol::Handle> {
        let known = self.known_dirs.lock().unwrap().contains(dir);
        let opened = if known {
            ch.raw.open(tmp, flags, attrs.clone()).await
        } else {
            let (_made, opened) = futures_util::join!(
                ch.raw.mkdir(dir, FileAttributes::empty()),
                ch.raw.open(tmp, flags, attrs.clone())
            );
            opened
        };
        let file = match opened {
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {
                self.ensure_dir(conn, ch, dir).await?;
                ch.raw.open(tmp, flags, attrs).await
            }
            r => r,
        }
        .map_err(|e| self.fail(conn, "creating", tmp, e))?;
        self.known_dirs.lock().unwrap().insert(dir.to_string());
        Ok(file)
    }

    async fn put_inner(
        &self,
        conn: &Arc<Conn>,
        ch: &Arc<Channel>,
        handle: &Handle,
        data: &Bytes,
        mode: PutMode,
    ) -> Result<()> {
        let path = self.full(&handle.path());
        let dir = parent(&path).unwrap_or_else(|| ".".into());
        let tmp = format!("{dir}/{}", temp_name());
        let mut attrs = FileAttributes::empty();
        if handle.kind == Kind::Key {
            // Key slots hold wrapped keys: readable by the owner only.
            attrs.permissions = Some(0o600);
        }
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;

        let file = self.open_tmp(conn, ch, &dir, &tmp, flags, attrs).await?;
        let mut guard = Cleanup::new(ch, file.handle, Some(tmp.clone()));
        let fh = guard.handle.clone().unwrap_or_default();

        let fsync = self.fsync && ch.features.fsync;
        let (synced, closed) = if data.len() <= ch.features.write_len as usize {
            // One write request (locks, indexes, snapshots, small packs):
            // write, fsync and close go out back to back instead of one
            // round trip each. A server processes the requests on one
            // handle in the order received (draft-ietf-secsh-filexfer-02,
            // 6.1; OpenSSH handles a channel's requests one by one), so the
            // file is still synced before it is closed, and the rename
            // below still waits for all three answers.
            let (written, synced, closed) = futures_util::join!(
                async {
                    if data.is_empty() {
                        return Ok(());
                    }
                    ch.raw
                        .write(fh.as_str(), 0, data.to_vec())
                        .await
                        .map(|_| ())
                },
                async {
                    if !fsync {
                        return Ok(());
                    }
                    ch.raw.fsync(fh.as_str()).await.map(|_| ())
                },
                async { ch.raw.close(fh.as_str()).await.map(|_| ()) }
            );
            (written.and(synced), closed)
        } else {
            // Every write answered first; then fsync and close back to
            // back (handled in order, as above): one round trip less per
            // pack. The rename still waits for both answers.
            match self.write_all(ch, &fh, data).await {
                Ok(()) if fsync => {
                    let (synced, closed) = futures_util::join!(ch.raw.fsync(fh.as_str()), async {
                        ch.raw.close(fh.as_str()).await.map(|_| ())
                    });
                    (synced.map(|_| ()), closed)
                }
                written => (written, ch.raw.close(fh.as_str()).await.map(|_| ())),
            }
        };
        guard.handle = None;
        if let Err(e) = synced.and(closed) {
            let err = self.write_failure(conn, ch, &tmp, data.len(), e).await;
            self.remove_quietly(ch, &tmp).await;
            guard.tmp = None;
            return Err(err);
        }

        let renamed = match mode {
            PutMode::Create => ch.raw.rename(tmp.as_str(), path.as_str()).await.map(|_| ()),
            PutMode::Overwrite if ch.features.posix_rename => {
                conn::posix_rename(&ch.raw, &tmp, &path).await
            }
            PutMode::Overwrite => match ch.raw.rename(tmp.as_str(), path.as_str()).await {
                Ok(_) => Ok(()),
                // No atomic replace on this server: remove, then rename.
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Failure => {
                    match ch.raw.remove(path.as_str()).await {
                        Ok(_) => ch.raw.rename(tmp.as_str(), path.as_str()).await.map(|_| ()),
                        Err(_) => Err(SftpError::Status(s)),
                    }
                }
                Err(e) => Err(e),
            },
        };
        match renamed {
            Ok(()) => {
                guard.tmp = None;
                Ok(())
            }
            // The guard removes the temporary file once the connection is
            // back (or never, if it is gone; listings skip it).
            Err(e) if is_transport_error(&e) => Err(self.fail(conn, "renaming into", &path, e)),
            Err(e) => {
                self.remove_quietly(ch, &tmp).await;
                guard.tmp = None;
                if mode == PutMode::Create && ch.raw.stat(path.as_str()).await.is_ok() {
                    return Err(BackendError::new(
                        ErrorKind::AlreadyExists,
                        format!("{handle} on {}", self.display),
                    ));
                }
                Err(self.fail(conn, "renaming into", &path, e))
            }
        }
    }

    /// Write `data` at offset 0, keeping [`PIPELINE_DEPTH`] requests in flight.
    async fn write_all(&self, ch: &Channel, fh: &str, data: &Bytes) -> Result<(), SftpError> {
        let chunk = ch.features.write_len as usize;
        let raw = &ch.raw;
        stream::iter((0..data.len()).step_by(chunk))
            .map(|off| {
                // Copied lazily, as the window advances: memory stays at
                // PIPELINE_DEPTH chunks whatever the object size.
                let piece = data[off..(off + chunk).min(data.len())].to_vec();
                async move { raw.write(fh, off as u64, piece).await.map(|_| ()) }
            })
            .buffer_unordered(PIPELINE_DEPTH)
            .try_for_each(|()| async { Ok(()) })
            .await
    }

    /// Classify a failed upload: SFTP v3 reports a full disk as the generic
    /// "Failure", so ask the server for free space when it can tell.
    async fn write_failure(
        &self,
        conn: &Arc<Conn>,
        ch: &Channel,
        tmp: &str,
        len: usize,
        e: SftpError,
    ) -> BackendError {
        let generic = matches!(&e, SftpError::Status(s) if s.status_code == StatusCode::Failure);
        if generic && ch.features.statvfs {
            if let Ok(st) = ch.raw.statvfs(tmp).await {
                let avail = st.blocks_avail.saturating_mul(st.fragment_size.max(1));
                if avail < len as u64 || st.blocks_avail == 0 {
                    return BackendError::with_source(
                        ErrorKind::StorageFull,
                        format!("writing {tmp} on {}: {avail} bytes free", self.display),
                        e,
                    );
                }
            }
        }
        self.fail(conn, "writing", tmp, e)
    }

    async fn remove_quietly(&self, ch: &Channel, path: &str) {
        if let Err(e) = ch.raw.remove(path).await {
            tracing::debug!("sftp {}: leaving temporary {path}: {e}", self.display);
        }
    }

    async fn get_inner(
        &self,
        conn: &Arc<Conn>,
        ch: &Arc<Channel>,
        handle: &Handle,
        range: Option<Range<u64>>,
    ) -> Result<Bytes> {
        let path = self.full(&handle.path());
        let file = ch
            .raw
            .open(path.as_str(), OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| self.fail(conn, "opening", &path, e))?;
        let guard = Cleanup::new(ch, file.handle, None);
        let fh = guard.handle.clone().unwrap_or_default();
        let fh = fh.as_str();
        let result = async {
            // The size and the first piece at once, so that a small object
            // (config, key, index, snapshot) takes one round trip after the
            // open instead of two. The piece is used if it starts where the
            // clipped range starts; anything it lacks is read after it.
            let start = range.as_ref().map_or(0, |r| r.start);
            let end = range.as_ref().map_or(u64::MAX, |r| r.end);
            let want = (end.saturating_sub(start)).min(ch.features.read_len as u64) as u32;
            let (stat, first) = futures_util::join!(ch.raw.fstat(fh), async {
                if want == 0 {
                    return None;
                }
                // Past the end (EOF) or any other failure: read normally
                // below, which reports a real error.
                ch.raw.read(fh, start, want).await.ok().map(|d| d.data)
            });
            let size = stat
                .map_err(|e| self.fail(conn, "stat of", &path, e))?
                .attrs
                .size
                .unwrap_or(0);
            let r = match range {
                None => 0..size,
                Some(r) => clip_range(handle, &r, size)?,
            };
            let mut out = Vec::new();
            let mut from = r.start;
            if let Some(d) = first {
                if r.start == start && d.len() as u64 <= r.end - r.start {
                    from += d.len() as u64;
                    out = d;
                }
            }
            if from < r.end {
                let mut rest = self
                    .read_range(ch, fh, from..r.end)
                    .await
                    .map_err(|e| self.fail(conn, "reading", &path, e))?;
                if out.is_empty() {
                    out = rest;
                } else {
                    out.append(&mut rest);
                }
            }
            Ok(out)
        }
        .await;
        // Closing a read handle cannot lose data, so nothing waits for it:
        // the guard sends the close (a task of its own), and the server
        // handles it before the next request on this channel. A failure
        // would only mean the connection is gone, which the next request
        // sees.
        drop(guard);
        let data = result?;
        Ok(Bytes::from(data))
    }

    /// Read exactly `r`, pipelined; a short reply is completed by follow-up
    /// reads, and end-of-file before `r.end` is an error (the object is
    /// shorter than its size said).
    async fn read_range(
        &self,
        ch: &Channel,
        fh: &str,
        r: Range<u64>,
    ) -> Result<Vec<u8>, SftpError> {
        let chunk = ch.features.read_len as u64;
        let len = (r.end - r.start) as usize;
        let mut out = Vec::with_capacity(len);
        let raw = &ch.raw;
        let mut replies = stream::iter((r.start..r.end).step_by(chunk as usize))
            .map(|off| {
                let n = chunk.min(r.end - off) as u32;
                async move { (off, n, raw.read(fh, off, n).await) }
            })
            .buffered(PIPELINE_DEPTH);
        while let Some((off, n, reply)) = replies.next().await {
            let mut data = reply?.data;
            let mut got = data.len() as u64;
            out.append(&mut data);
            while got < n as u64 {
                let more = raw.read(fh, off + got, (n as u64 - got) as u32).await?.data;
                if more.is_empty() {
                    return Err(short_read(off + got));
                }
                got += more.len() as u64;
                out.extend_from_slice(&more);
            }
        }
        Ok(out)
    }

    async fn list_dir(&self, conn: &Arc<Conn>, ch: &Arc<Channel>, dir: &str) -> Result<Vec<Entry>> {
        let handle = match ch.raw.opendir(dir).await {
            Ok(h) => h.handle,
            // A kind directory that was never written to is an empty list.
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(self.fail(conn, "listing", dir, e)),
        };
        // Closing a directory handle cannot lose anything: the guard sends
        // the close from a task of its own, nothing waits for it.
        let guard = Cleanup::new(ch, handle, None);
        let dh = guard.handle.clone().unwrap_or_default();
        let dh = dh.as_str();
        let mut entries = Vec::new();
        let mut add = |name: russh_sftp::protocol::Name| {
            for f in name.files {
                if f.filename == "." || f.filename == ".." {
                    continue;
                }
                let is_dir = f.attrs.is_dir();
                entries.push((
                    f.filename,
                    f.attrs.size.unwrap_or(0),
                    is_dir,
                    mtime(&f.attrs),
                ));
            }
        };
        // Two READDIRs back to back: the server answers the requests on a
        // handle in order (draft-ietf-secsh-filexfer-02, 6.1), so a
        // directory that fits in one reply (OpenSSH sends up to 100
        // names) is read, end-of-file included, in one round trip instead
        // of two. Then one request at a time, as before.
        let (first, second) = futures_util::join!(ch.raw.readdir(dh), ch.raw.readdir(dh));
        let mut pending = vec![second, first];
        let result = loop {
            let reply = match pending.pop() {
                Some(r) => r,
                None => ch.raw.readdir(dh).await,
            };
            match reply {
                Ok(name) => add(name),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(e) => break Err(self.fail(conn, "listing", dir, e)),
            }
        };
        drop(guard);
        result.map(|()| entries)
    }

    async fn list_inner(
        &self,
        conn: &Arc<Conn>,
        ch: &Arc<Channel>,
        kind: Kind,
    ) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        match kind {
            Kind::Config => {
                let path = self.full("config");
                match ch.raw.stat(path.as_str()).await {
                    Ok(a) if !a.attrs.is_dir() => out.push(ObjectMeta {
                        handle: Handle::config(),
                        size: a.attrs.size.unwrap_or(0),
                        modified: mtime(&a.attrs),
                    }),
                    Ok(_) => {}
                    Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
                    Err(e) => return Err(self.fail(conn, "stat of", &path, e)),
                }
            }
            Kind::Pack => {
                // 256 sub-directories: list them concurrently, spread over
                // the channels, so a listing costs a few round trips, not
                // hundreds.
                let data = self.full("data");
                let subs: Vec<String> = self
                    .list_dir(conn, ch, &data)
                    .await?
                    .into_iter()
                    .filter(|(name, _, is_dir, _)| *is_dir && name.len() == 2)
                    .map(|(name, ..)| name)
                    .collect();
                let listed: Vec<(String, Vec<Entry>)> = stream::iter(subs)
                    .map(|sub| {
                        let ch = conn.channel();
                        let dir = format!("{data}/{sub}");
                        async move {
                            let entries = self.list_dir(conn, &ch, &dir).await?;
                            Ok::<_, BackendError>((sub, entries))
                        }
                    })
                    .buffer_unordered(LIST_PARALLEL)
                    .try_collect()
                    .await?;
                for (sub, entries) in listed {
                    for (name, size, is_dir, modified) in entries {
                        if is_dir {
                            continue;
                        }
                        if let Some(h) = Handle::from_path(kind, &format!("data/{sub}/{name}")) {
                            out.push(ObjectMeta {
                                handle: h,
                                size,
                                modified,
                            });
                        }
                    }
                }
            }
            k => {
                let dir = k.dir();
                for (name, size, is_dir, modified) in
                    self.list_dir(conn, ch, &self.full(dir)).await?
                {
                    if is_dir {
                        continue;
                    }
                    if let Some(h) = Handle::from_path(k, &format!("{dir}/{name}")) {
                        out.push(ObjectMeta {
                            handle: h,
                            size,
                            modified,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// An open remote handle (and, for an upload, its temporary file) that is
/// closed and removed in the background if the operation is cancelled
/// half-way, so that abandoned uploads do not pile up open handles in the
/// server's sftp process. The owner clears the fields as it finishes.
struct Cleanup {
    ch: Arc<Channel>,
    handle: Option<String>,
    tmp: Option<String>,
}

impl Cleanup {
    fn new(ch: &Arc<Channel>, handle: String, tmp: Option<String>) -> Self {
        Cleanup {
            ch: ch.clone(),
            handle: Some(handle),
            tmp,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.handle.is_none() && self.tmp.is_none() {
            return;
        }
        let (ch, handle, tmp) = (self.ch.clone(), self.handle.take(), self.tmp.take());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(h) = handle {
                    let _ = ch.raw.close(h.as_str()).await;
                }
                if let Some(t) = tmp {
                    let _ = ch.raw.remove(t.as_str()).await;
                }
            });
        }
    }
}

fn short_read(at: u64) -> SftpError {
    SftpError::Status(russh_sftp::protocol::Status {
        id: 0,
        status_code: StatusCode::Eof,
        error_message: format!("object ended at byte {at}, before its recorded size"),
        language_tag: String::new(),
    })
}

/// `"/a/b/c"` → `"/a/b"`; `"x"` → `None`.
fn parent(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let i = trimmed.rfind('/')?;
    Some(if i == 0 {
        "/".into()
    } else {
        trimmed[..i].to_string()
    })
}

/// A directory path as a prefix ending in `/`.
fn dir_prefix(path: &str) -> String {
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        // `path` was "/" (or "///").
        if path.starts_with('/') {
            "/".into()
        } else {
            String::new()
        }
    } else {
        format!("{p}/")
    }
}

#[async_trait]
impl Backend for SftpBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_create: true,
            max_object_size: None,
            default_connections: self.pool.target().channels,
            local: false,
        }
    }

    async fn put(&self, handle: &Handle, data: Bytes, mode: PutMode) -> Result<()> {
        let (conn, ch) = self.connection().await?;
        self.put_inner(&conn, &ch, handle, &data, mode).await
    }

    async fn get(&self, handle: &Handle, range: Option<Range<u64>>) -> Result<Bytes> {
        let (conn, ch) = self.connection().await?;
        self.get_inner(&conn, &ch, handle, range).await
    }

    async fn head(&self, handle: &Handle) -> Result<ObjectMeta> {
        let (conn, ch) = self.connection().await?;
        let path = self.full(&handle.path());
        let attrs = ch
            .raw
            .stat(path.as_str())
            .await
            .map_err(|e| self.fail(&conn, "stat of", &path, e))?
            .attrs;
        if attrs.is_dir() {
            return Err(BackendError::new(
                ErrorKind::NotFound,
                format!("{path} on {} is a directory", self.display),
            ));
        }
        Ok(ObjectMeta {
            handle: handle.clone(),
            size: attrs.size.unwrap_or(0),
            modified: mtime(&attrs),
        })
    }

    async fn list(&self, kind: Kind) -> Result<Vec<ObjectMeta>> {
        let (conn, ch) = self.connection().await?;
        self.list_inner(&conn, &ch, kind).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let (conn, ch) = self.connection().await?;
        let path = self.full(&handle.path());
        ch.raw
            .remove(path.as_str())
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&conn, "removing", &path, e))
    }

    async fn create(&self) -> Result<()> {
        let (conn, ch) = self.connection().await?;
        let root = self.root_dir();
        self.ensure_dir(&conn, &ch, &root).await?;
        for kind in Kind::ALL {
            if kind != Kind::Config {
                self.ensure_dir(&conn, &ch, &self.full(kind.dir())).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(url: &str) -> SftpBackend {
        let o = SftpOptions {
            known_hosts: Some("/nonexistent".into()),
            ..SftpOptions::default()
        };
        SftpBackend::new(url, o).unwrap()
    }

    #[test]
    fn paths_and_display() {
        let b = backend("sftp://u:pw@h:2222/srv/repo/");
        assert_eq!(b.full("config"), "/srv/repo/config");
        assert_eq!(b.root_dir(), "/srv/repo");
        assert_eq!(b.to_string(), "sftp://u:***@h:2222/srv/repo/");
        assert!(!format!("{b:?}").contains("pw"));

        let b = backend("sftp://u@h/~/repo");
        assert_eq!(b.full("keys/a"), "repo/keys/a");
        let b = backend("sftp://u@h");
        assert_eq!(b.full("config"), "config");
        assert_eq!(b.root_dir(), ".");
        let b = backend("sftp://u@h/");
        assert_eq!(b.full("config"), "/config");
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/a/b/c").as_deref(), Some("/a/b"));
        assert_eq!(parent("/a").as_deref(), Some("/"));
        assert_eq!(parent("a/b").as_deref(), Some("a"));
        assert_eq!(parent("a"), None);
    }
}

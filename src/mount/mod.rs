//! `cairn mount`: the repository's snapshots as a read-only FUSE file
//! system. A front end on the snapshot [`Browser`]: it reads trees and
//! files the way the HTTP API does, lazily, each blob from the first
//! replica with a good copy.
//!
//! The layout: `snapshots/<time>/…` (each snapshot's tree, its absolute
//! paths under it), `latest` (a symlink to the newest), and
//! `hosts/<host>/<time>` and `tags/<tag>/<time>` (symlinks into
//! `snapshots/`). The list of snapshots is read again when the layout is
//! looked at and the last listing is more than a few seconds old.
//!
//! - [`layout`]: the virtual directories, from one listing.
//! - [`inodes`]: inode numbers, stable for the session, and what each names.
//! - [`attr`]: file attributes.
//! - [`fs`]: the FUSE callbacks.

pub mod attr;
pub mod fs;
pub mod inodes;
pub mod layout;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ops::browse::Browser;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let other users in (`allow_other`; for a user other than root it
    /// needs `user_allow_other` in /etc/fuse.conf). Permissions are those
    /// of the snapshot's entries either way.
    pub allow_other: bool,
    /// Threads answering the kernel's requests.
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            threads: 4,
        }
    }
}

/// The FUSE device.
pub const DEV_FUSE: &str = "/dev/fuse";

/// Why a mount failed or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Repo(#[from] crate::Error),
    #[error("cannot mount on {}: {source}", .path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An ordinary user cannot open the FUSE device: the mount would fail
    /// with a bare "permission denied" on the mount point.
    #[error(
        "cannot open {DEV_FUSE} as an ordinary user ({source}): on this system only root can \
         mount FUSE file systems. Make it usable by all (`chmod 0666 {DEV_FUSE}` as root; \
         Debian's udev rules do so by default, a container or VM without udev may not), or \
         run `cairn mount` as root"
    )]
    Device {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unmount {}: {source}", .path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the FUSE session on {} ended with an error: {source}", .path.display())]
    Session {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a mount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Cancelled (SIGINT, SIGTERM): cairn unmounted it.
    Cancelled,
    /// Unmounted from outside (`fusermount3 -u`, `umount`).
    Unmounted,
}

/// What a mount served, when it ended.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MountReport {
    pub mountpoint: PathBuf,
    pub ended: Ended,
    /// Read requests answered, and the bytes they returned.
    pub reads: u64,
    pub bytes_read: u64,
    /// Read requests that failed (every replica lacked a good copy).
    pub read_errors: u64,
}

/// A mounted file system, served on fuser's threads until [`Mounted::serve`]
/// ends it.
pub struct Mounted {
    path: PathBuf,
    snapshots: usize,
    unmounter: fuser::SessionUnmounter,
    done: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
    served: Arc<fs::Served>,
}

/// Mount the snapshots `browser` reads on `mountpoint` (an empty directory
/// is usual; whatever it holds is hidden while mounted). The snapshots are
/// listed first, so a repository that cannot be listed fails here.
pub async fn mount(
    browser: Arc<Browser>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<Mounted, MountError> {
    if !crate::sys::is_root() {
        // fuser opens the device itself and falls back to the setuid
        // `fusermount3` only when the mount call is refused, not when the
        // device cannot be opened.
        use rustix::fs::{access, Access};
        if let Err(e) = access(DEV_FUSE, Access::READ_OK | Access::WRITE_OK) {
            if e == rustix::io::Errno::ACCESS || e == rustix::io::Errno::PERM {
                return Err(MountError::Device { source: e.into() });
            }
        }
    }
    let served = Arc::new(fs::Served::default());
    let fs = fs::CairnFs::new(browser, tokio::runtime::Handle::current(), served.clone());
    let snapshots = fs.layout().await?.snapshots.len();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("cairn".into()),
        fuser::MountOption::Subtype("cairn".into()),
        // The kernel checks each entry's mode and owner as backed up.
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(options.threads.max(1));
    let path = mountpoint.to_path_buf();
    let at = path.clone();
    // Mounting waits for the kernel's first request: not on a runtime thread.
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(fs, &at, &config))
        .await
        .map_err(|e| MountError::Mount {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| MountError::Mount {
            path: path.clone(),
            source,
        })?;
    let mut session = session;
    let unmounter = session.unmount_callable();
    let (tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cairn-mount".into())
        .spawn(move || {
            let _ = tx.send(session.run());
        })
        .map_err(|source| MountError::Mount {
            path: path.clone(),
            source,
        })?;
    Ok(Mounted {
        path,
        snapshots,
        unmounter,
        done,
        served,
    })
}

impl Mounted {
    /// How many snapshots were listed at mount.
    pub fn snapshots(&self) -> usize {
        self.snapshots
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve until `cancel` (then unmount) or an unmount from outside.
    /// When the mount point is busy (a shell inside it, a file open), it is
    /// detached at once and the session ends when the last user leaves.
    pub async fn serve(self, cancel: CancellationToken) -> Result<MountReport, MountError> {
        let Mounted {
            path,
            mut unmounter,
            mut done,
            served,
            ..
        } = self;
        let ended = tokio::select! {
            res = &mut done => {
                finished(&path, res)?;
                Ended::Unmounted
            }
            _ = cancel.cancelled() => {
                let res = tokio::task::spawn_blocking(move || unmounter.unmount())
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                if let Err(e) = res {
                    tracing::warn!(
                        "{} is busy ({e}): detached now; cairn exits when the last \
                         file in it is closed",
                        path.display()
                    );
                    detach(&path).map_err(|source| MountError::Unmount {
                        path: path.clone(),
                        source,
                    })?;
                }
                finished(&path, done.await)?;
                Ended::Cancelled
            }
        };
        Ok(MountReport {
            mountpoint: path,
            ended,
            reads: served.reads.load(Ordering::Relaxed),
            bytes_read: served.bytes.load(Ordering::Relaxed),
            read_errors: served.errors.load(Ordering::Relaxed),
        })
    }
}

/// The session thread's end, as the mount's result.
fn finished(
    path: &Path,
    res: Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), MountError> {
    let res = res.unwrap_or_else(|_| Err(std::io::Error::other("the session thread died")));
    res.map_err(|source| MountError::Session {
        path: path.to_path_buf(),
        source,
    })
}

/// A lazy unmount: gone from the namespace now, the session ends when the
/// last open file or working directory in it goes. Through `fusermount3`,
/// which a user other than root may run on their own mount.
fn detach(path: &Path) -> std::io::Result<()> {
    let out = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(path)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

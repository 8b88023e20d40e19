//! Confined file-system access for restore: everything is created and
//! changed relative to a handle on the target directory, and no symlink is
//! ever followed below it — not in a parent directory, not at the entry
//! itself — so a hostile snapshot (or a symlink already in the target)
//! cannot make restore write, chmod or chown anything outside the target.
//!
//! A path is opened with one `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! where the kernel has it, else component by component with
//! `O_NOFOLLOW`; no directory handle is kept between calls, so a huge tree
//! cannot exhaust file descriptors. Metadata is set on an open handle, or
//! with `AT_SYMLINK_NOFOLLOW`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, CWD,
};
use rustix::io::Errno;

use crate::format::tree::{validate_name, Node, NodeKind};

/// The target directory, held open.
pub struct Root {
    fd: OwnedFd,
    /// Whether `openat2` is available (until it says it is not).
    beneath: AtomicBool,
}

fn refused(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "refused path {}: not a plain relative path",
            crate::format::tree::escape_bytes(rel.as_os_str().as_bytes())
        ),
    )
}

/// `rel` split into its components, each checked with [`validate_name`]:
/// paths are built from checked names, this is the last line of defence.
fn components(rel: &Path) -> io::Result<Vec<&[u8]>> {
    let b = rel.as_os_str().as_bytes();
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let comps: Vec<&[u8]> = b.split(|&c| c == b'/').collect();
    if comps.iter().any(|c| validate_name(c).is_err()) {
        return Err(refused(rel));
    }
    Ok(comps)
}

fn not_found(e: Errno) -> bool {
    e == Errno::NOENT
}

impl Root {
    /// Create `target` if needed and open it. The target itself is the
    /// user's choice and may be reached through a symlink; nothing below it
    /// is.
    pub fn open(target: &Path) -> io::Result<Root> {
        std::fs::create_dir_all(target)?;
        let fd = rustix::fs::open(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            beneath: AtomicBool::new(true),
        })
    }

    /// Flush everything written to the target's file system to disk and
    /// wait for it: one journal commit for a whole batch of files, where a
    /// `fsync` per file costs one commit each.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn sync_fs(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.fd)?)
    }

    /// Open `rel` below the root with `flags`, following no symlink.
    pub fn open_at(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let comps = components(rel)?;
        if comps.is_empty() {
            return Ok(rustix::fs::openat(&self.fd, ".", flags, mode)?);
        }
        if self.beneath.load(Relaxed) {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, rel, flags, mode, how) {
                Err(Errno::NOSYS) => self.beneath.store(false, Relaxed),
                r => return Ok(r?),
            }
        }
        let (parent, name) = self.parent(rel)?;
        Ok(rustix::fs::openat(&parent, name, flags, mode)?)
    }

    /// The directory holding `rel`, open, and `rel`'s last component.
    pub fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p Path)> {
        let comps = components(rel)?;
        let Some((last, dirs)) = comps.split_last() else {
            return Err(refused(rel));
        };
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let name = Path::new(std::ffi::OsStr::from_bytes(last));
        if dirs.is_empty() {
            return Ok((
                rustix::fs::openat(&self.fd, ".", dir_flags, Mode::empty())?,
                name,
            ));
        }
        let dir_path = Path::new(std::ffi::OsStr::from_bytes(
            &rel.as_os_str().as_bytes()[..rel.as_os_str().len() - last.len() - 1],
        ));
        if self.beneath.load(Relaxed) {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, dir_path, dir_flags, Mode::empty(), how) {
                Err(Errno::NOSYS) => self.beneath.store(false, Relaxed),
                r => return Ok((r?, name)),
            }
        }
        let mut cur = rustix::fs::openat(&self.fd, ".", dir_flags, Mode::empty())?;
        for d in dirs {
            cur = rustix::fs::openat(&cur, *d, dir_flags, Mode::empty())?;
        }
        Ok((cur, name))
    }

    /// Remove whatever non-directory is at `name` in `dir` (a symlink is
    /// removed, not followed).
    fn clear(dir: &OwnedFd, name: &Path) -> io::Result<()> {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(e) if not_found(e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Make directory `rel`. An existing directory is kept; anything else
    /// there (a symlink above all) is replaced, never followed.
    pub fn mkdir(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Ok(());
                }
                Self::clear(&dir, name)?;
                Ok(rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))?)
            }
            r => Ok(r?),
        }
    }

    /// Make `rel` and every directory above it.
    pub fn mkdir_all(&self, rel: &Path) -> io::Result<()> {
        let mut prefix = PathBuf::new();
        for c in components(rel)? {
            prefix.push(std::ffi::OsStr::from_bytes(c));
            self.mkdir(&prefix)?;
        }
        Ok(())
    }

    /// Create `rel` as a new empty file, readable by the owner only; what
    /// was there (a file, a symlink) is removed first, so an existing file
    /// — perhaps a hard link to one outside — is never written through.
    pub fn create_file(&self, rel: &Path) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        Self::clear(&dir, name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o600))?.into())
    }

    /// Open the regular file `rel` for writing.
    pub fn open_file(&self, rel: &Path, write: bool) -> io::Result<File> {
        let flags = if write {
            OFlags::WRONLY
        } else {
            OFlags::RDONLY
        };
        let fd = self.open_at(rel, flags, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(fd.into())
    }

    /// Create the symlink `rel` pointing at `target` (never followed).
    pub fn symlink(&self, rel: &Path, target: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Self::clear(&dir, name)?;
        Ok(rustix::fs::symlinkat(
            std::ffi::OsStr::from_bytes(target),
            &dir,
            name,
        )?)
    }

    /// Create a FIFO or device node at `rel`.
    pub fn mknod(&self, rel: &Path, kind: FileType, perm: u32, rdev: u64) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Self::clear(&dir, name)?;
        Ok(rustix::fs::mknodat(
            &dir,
            name,
            kind,
            Mode::from_raw_mode(perm),
            rdev,
        )?)
    }

    /// Rename `from` to `to` (both below the root; an existing file at
    /// `to` is replaced atomically).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (fdir, fname) = self.parent(from)?;
        if from.parent() == to.parent() {
            // A staged file next to its final path: one directory to open.
            let tname = match to.file_name() {
                Some(n) if validate_name(n.as_bytes()).is_ok() => n,
                _ => return Err(refused(to)),
            };
            return Ok(rustix::fs::renameat(&fdir, fname, &fdir, tname)?);
        }
        let (tdir, tname) = self.parent(to)?;
        Ok(rustix::fs::renameat(&fdir, fname, &tdir, tname)?)
    }

    /// `lstat` of `rel`; None when nothing is there (or a parent is not a
    /// directory).
    pub fn lstat(&self, rel: &Path) -> io::Result<Option<rustix::fs::Stat>> {
        let (dir, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The target of the symlink `rel`.
    pub fn readlink(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::readlinkat(&dir, name, Vec::new())?.into_bytes())
    }

    /// The names in directory `rel` (`.` and `..` left out).
    pub fn list(&self, rel: &Path) -> io::Result<Vec<Vec<u8>>> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&fd)? {
            let name = e?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Remove `rel` and, for a directory, everything below it; symlinks
    /// are removed, never followed.
    pub fn remove_all(&self, rel: &Path) -> io::Result<()> {
        let Some(st) = self.lstat(rel)? else {
            return Ok(());
        };
        let (dir, name) = self.parent(rel)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Self::clear(&dir, name);
        }
        for child in self.list(rel)? {
            self.remove_all(&rel.join(std::ffi::OsStr::from_bytes(&child)))?;
        }
        match rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR) {
            Err(e) if !not_found(e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Ownership (as root), permission bits `perm` and times of the entry
    /// `rel` of kind `n.kind`, already created.
    pub fn set_meta(&self, rel: &Path, n: &Node, perm: u32) -> io::Result<()> {
        match n.kind {
            NodeKind::Dir => {
                let fd = self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
                set_meta_fd(&fd, n, perm)
            }
            NodeKind::File => set_meta_fd(&self.open_file(rel, false)?, n, perm),
            NodeKind::Symlink => {
                let (dir, name) = self.parent(rel)?;
                if crate::sys::is_root() {
                    rustix::fs::chownat(&dir, name, uid(n), gid(n), AtFlags::SYMLINK_NOFOLLOW)?;
                }
                rustix::fs::utimensat(&dir, name, &times(n), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(())
            }
            _ => {
                // A FIFO or device must not be opened for I/O (a device
                // may act on open): a path handle, checked to be what was
                // created, and its /proc name for the mode.
                let (dir, name) = self.parent(rel)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let st = rustix::fs::fstat(&fd)?;
                let want = FileType::from_raw_mode(n.mode);
                if FileType::from_raw_mode(st.st_mode) != want {
                    return Err(io::Error::other("replaced while being restored"));
                }
                if crate::sys::is_root() {
                    rustix::fs::chownat(&fd, "", uid(n), gid(n), AtFlags::EMPTY_PATH)?;
                }
                let proc = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
                rustix::fs::chmodat(
                    CWD,
                    proc.as_str(),
                    Mode::from_raw_mode(perm),
                    AtFlags::empty(),
                )?;
                rustix::fs::utimensat(&dir, name, &times(n), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(())
            }
        }
    }
}

/// Ownership (as root), then permissions (a chown clears set-id bits),
/// then times, all on the open handle.
pub fn set_meta_fd(fd: &impl AsFd, n: &Node, perm: u32) -> io::Result<()> {
    if crate::sys::is_root() {
        rustix::fs::fchown(fd, uid(n), gid(n))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(perm))?;
    rustix::fs::futimens(fd, &times(n))?;
    Ok(())
}

fn uid(n: &Node) -> Option<Uid> {
    Some(Uid::from_raw(n.uid))
}

fn gid(n: &Node) -> Option<Gid> {
    Some(Gid::from_raw(n.gid))
}

fn times(n: &Node) -> Timestamps {
    let ts = Timespec {
        tv_sec: n.mtime.div_euclid(1_000_000_000),
        tv_nsec: n.mtime.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn nothing_is_reached_through_a_symlink_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = dir.path().join("t");
        let root = Root::open(&target).unwrap();
        symlink(&outside, target.join("link")).unwrap();
        for rel in ["link/f", "link/d/f"] {
            let err = root.create_file(Path::new(rel)).unwrap_err();
            // ELOOP or ENOTDIR (O_DIRECTORY on a symlink), never success.
            let code = err.raw_os_error();
            assert!(
                code == Some(libc::ELOOP) || code == Some(libc::ENOTDIR),
                "{rel}: {err}"
            );
        }
        assert!(root.open_file(Path::new("link"), true).is_err());
        for rel in ["../x", "a/../../x", "/etc/x", "a//b", "./x", ""] {
            assert!(root.create_file(Path::new(rel)).is_err(), "{rel}");
        }
        // A symlink where a directory belongs is replaced, not followed.
        root.mkdir(Path::new("link")).unwrap();
        root.create_file(Path::new("link/f")).unwrap();
        assert!(target.join("link/f").is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // The component walk (no openat2) refuses the same.
        root.beneath.store(false, Relaxed);
        std::fs::remove_dir_all(target.join("link")).unwrap();
        symlink(&outside, target.join("link")).unwrap();
        assert!(root.create_file(Path::new("link/g")).is_err());
        root.mkdir(Path::new("d")).unwrap();
        root.create_file(Path::new("d/g")).unwrap();
        assert!(target.join("d/g").is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn rename_within_a_directory_and_across_refuses_what_create_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let root = Root::open(&target).unwrap();
        root.mkdir_all(Path::new("a/b")).unwrap();
        std::fs::write(target.join("a/b/.stage"), "new").unwrap();
        std::fs::write(target.join("a/b/f"), "old").unwrap();
        root.rename(Path::new("a/b/.stage"), Path::new("a/b/f"))
            .unwrap();
        assert_eq!(std::fs::read(target.join("a/b/f")).unwrap(), b"new");
        assert!(!target.join("a/b/.stage").exists());
        root.rename(Path::new("a/b/f"), Path::new("a/g")).unwrap();
        assert_eq!(std::fs::read(target.join("a/g")).unwrap(), b"new");
        for to in ["a/..", "a/.", "a/", "a/g/..", "../g", "/g"] {
            assert!(
                root.rename(Path::new("a/g"), Path::new(to)).is_err(),
                "{to}"
            );
        }
        assert_eq!(std::fs::read(target.join("a/g")).unwrap(), b"new");
    }
}

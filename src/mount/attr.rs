//! File attributes as the kernel sees them: a tree entry's own (type,
//! mode, owner, size, times), and read-only directories and symlinks for
//! the virtual layout, owned by whoever mounted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::format::tree::{Node, NodeKind};

/// A time in nanoseconds since the epoch (negative before it).
pub fn time_of(nanos: i64) -> SystemTime {
    let d = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

pub fn kind_of(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Chardev => FileType::CharDevice,
        NodeKind::Blockdev => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn base(ino: u64, kind: FileType, perm: u16, size: u64, time: SystemTime) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// A directory of the virtual layout.
pub fn virtual_dir(ino: u64, time: SystemTime) -> FileAttr {
    base(ino, FileType::Directory, 0o555, 0, time)
}

/// A symlink of the virtual layout pointing to `target`.
pub fn virtual_link(ino: u64, target: &[u8], time: SystemTime) -> FileAttr {
    base(ino, FileType::Symlink, 0o777, target.len() as u64, time)
}

/// A tree entry, as it was backed up.
pub fn of_node(ino: u64, node: &Node) -> FileAttr {
    let kind = kind_of(node.kind);
    let size = match node.kind {
        NodeKind::File => node.size,
        NodeKind::Symlink => node.target.as_ref().map_or(0, |t| t.0.len() as u64),
        _ => 0,
    };
    let mut a = base(
        ino,
        kind,
        (node.mode & 0o7777) as u16,
        size,
        time_of(node.mtime),
    );
    a.ctime = time_of(node.ctime);
    a.atime = a.mtime;
    a.uid = node.uid;
    a.gid = node.gid;
    // Device numbers beyond 32 bits cannot be shown; none is better than a
    // wrong one.
    a.rdev = u32::try_from(node.rdev).unwrap_or(0);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_and_after_the_epoch() {
        assert_eq!(
            time_of(1_500_000_000),
            UNIX_EPOCH + Duration::from_millis(1500)
        );
        assert_eq!(time_of(-2_000_000_000), UNIX_EPOCH - Duration::from_secs(2));
        assert_eq!(
            time_of(i64::MIN),
            UNIX_EPOCH - Duration::from_nanos(1 << 63)
        );
    }
}

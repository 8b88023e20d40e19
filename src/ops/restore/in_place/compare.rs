//! What an in-place restore would change: every entry of the plan compared
//! with what is at its path in the directory, and the entries the
//! directory has that the snapshot does not.
//!
//! "Unchanged" means: same type; for a file the same size, modification
//! time (to the nanosecond), permission bits, owner (when running as root)
//! and the same content — the file is cut with the repository's chunker
//! and its chunk ids compared with the snapshot's, so a file whose bytes
//! changed behind unchanged metadata is still rewritten. Directories,
//! symlinks and special files compare their metadata (and a symlink its
//! target, a device its number).

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Stat};
use serde::Serialize;

use super::super::fs::Root;
use super::super::Plan;
use super::ChangeCounts;
use crate::format::chunker::Chunker;
use crate::format::id::Id;
use crate::format::keys::Keyring;
use crate::format::tree::{escape_bytes, Node, NodeKind};

/// What happens to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Not in the directory: created.
    Create,
    /// Different from the snapshot: replaced.
    Update,
    /// Not in the snapshot, removed (`delete`).
    Delete,
    /// Not in the snapshot, left alone (no `delete`).
    Keep,
    /// As in the snapshot: not touched.
    Unchanged,
}

/// One entry of the report: its path below the directory, the kind of
/// entry and what happens to it.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub path: String,
    /// `file`, `dir`, `symlink` or `other` (FIFO, device, socket).
    pub entry: &'static str,
    pub change: ChangeKind,
}

/// How one planned entry compares with the directory.
#[derive(Clone, Copy, Debug)]
pub(super) struct Status {
    pub change: ChangeKind,
    /// A directory is there where the snapshot has something else.
    pub dir_in_the_way: bool,
}

/// The comparison of a plan with the directory, item by item.
pub(super) struct Diff {
    pub dirs: Vec<Status>,
    pub files: Vec<Status>,
    pub others: Vec<Status>,
    /// Entries of the directory the snapshot does not have.
    pub extras: Vec<(PathBuf, &'static str)>,
}

impl Diff {
    /// Every entry, in path order.
    pub fn changes(&self, plan: &Plan, delete: bool) -> Vec<Change> {
        let mut out = Vec::new();
        let show = |p: &Path| escape_bytes(p.as_os_str().as_bytes());
        for ((p, n), s) in plan.dirs.iter().zip(&self.dirs) {
            out.push((p.clone(), entry_of(n.kind), s.change));
        }
        for (f, s) in plan.files.iter().zip(&self.files) {
            out.push((f.path.clone(), "file", s.change));
        }
        for ((p, n), s) in plan.others.iter().zip(&self.others) {
            out.push((p.clone(), entry_of(n.kind), s.change));
        }
        let extra = if delete {
            ChangeKind::Delete
        } else {
            ChangeKind::Keep
        };
        for (p, e) in &self.extras {
            out.push((p.clone(), *e, extra));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter()
            .map(|(p, entry, change)| Change {
                path: show(&p),
                entry,
                change,
            })
            .collect()
    }

    /// How many entries each change is, without listing them.
    pub fn counts(&self, delete: bool) -> ChangeCounts {
        let mut c = ChangeCounts::default();
        let statuses = self.dirs.iter().chain(&self.files).chain(&self.others);
        let extras = std::iter::repeat_n(
            if delete {
                ChangeKind::Delete
            } else {
                ChangeKind::Keep
            },
            self.extras.len(),
        );
        for change in statuses.map(|s| s.change).chain(extras) {
            *match change {
                ChangeKind::Create => &mut c.create,
                ChangeKind::Update => &mut c.update,
                ChangeKind::Delete => &mut c.delete,
                ChangeKind::Keep => &mut c.keep,
                ChangeKind::Unchanged => &mut c.unchanged,
            } += 1;
        }
        c
    }

    /// The first entry in path order that is not as the snapshot has it
    /// (an extra only when it was to be deleted), shown escaped; found
    /// without listing every entry.
    pub fn first_difference(&self, plan: &Plan, delete: bool) -> Option<String> {
        let differs = |s: &Status| s.change != ChangeKind::Unchanged;
        let dirs = plan.dirs.iter().zip(&self.dirs);
        let dirs = dirs.filter(|(_, s)| differs(s)).map(|((p, _), _)| p);
        let files = plan.files.iter().zip(&self.files);
        let files = files.filter(|(_, s)| differs(s)).map(|(f, _)| &f.path);
        let others = plan.others.iter().zip(&self.others);
        let others = others.filter(|(_, s)| differs(s)).map(|((p, _), _)| p);
        let extras = self.extras.iter().filter(|_| delete).map(|(p, _)| p);
        dirs.chain(files)
            .chain(others)
            .chain(extras)
            .min()
            .map(|p| escape_bytes(p.as_os_str().as_bytes()))
    }

    /// Whether the directory is as the snapshot has it (extras count only
    /// when they were to be deleted).
    pub fn is_clean(&self, delete: bool) -> bool {
        let same = |v: &[Status]| v.iter().all(|s| s.change == ChangeKind::Unchanged);
        same(&self.dirs)
            && same(&self.files)
            && same(&self.others)
            && (!delete || self.extras.is_empty())
    }
}

fn entry_of(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        _ => "other",
    }
}

fn entry_of_mode(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        _ => "other",
    }
}

/// What a comparison needs besides the plan.
pub(super) struct Compare<'a> {
    pub root: &'a Root,
    pub chunker: &'a Chunker,
    pub keyring: &'a Keyring,
    /// The permission bits restore gives a node.
    pub perm: &'a (dyn Fn(&Node) -> u32 + Sync),
}

impl Compare<'_> {
    /// Compare `plan` with the directory.
    pub fn diff(&self, plan: &Plan) -> Diff {
        let status = |p: &Path, n: &Node| self.status(p, n);
        let dirs = plan.dirs.iter().map(|(p, n)| status(p, n)).collect();
        let files = plan
            .files
            .iter()
            .map(|f| status(&f.path, &f.node))
            .collect();
        let others = plan.others.iter().map(|(p, n)| status(p, n)).collect();
        let extras = if plan.whole_dir {
            self.extras(plan)
        } else {
            Vec::new()
        };
        Diff {
            dirs,
            files,
            others,
            extras,
        }
    }

    fn status(&self, rel: &Path, n: &Node) -> Status {
        let st = match self.root.lstat(rel) {
            Ok(Some(st)) => st,
            Ok(None) => {
                return Status {
                    change: ChangeKind::Create,
                    dir_in_the_way: false,
                }
            }
            // Unreadable metadata: rewrite it.
            Err(_) => {
                return Status {
                    change: ChangeKind::Update,
                    dir_in_the_way: false,
                }
            }
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        let same = self.same(rel, n, &st);
        Status {
            change: if same {
                ChangeKind::Unchanged
            } else {
                ChangeKind::Update
            },
            dir_in_the_way: is_dir && n.kind != NodeKind::Dir,
        }
    }

    fn same(&self, rel: &Path, n: &Node, st: &Stat) -> bool {
        let ft = FileType::from_raw_mode(st.st_mode);
        let want = match n.kind {
            NodeKind::File => FileType::RegularFile,
            NodeKind::Dir => FileType::Directory,
            NodeKind::Symlink => FileType::Symlink,
            NodeKind::Fifo => FileType::Fifo,
            NodeKind::Chardev => FileType::CharacterDevice,
            NodeKind::Blockdev => FileType::BlockDevice,
            NodeKind::Socket => FileType::Socket,
        };
        let mtime = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64;
        let owner = !crate::sys::is_root() || (st.st_uid == n.uid && st.st_gid == n.gid);
        if ft != want || mtime != n.mtime || !owner {
            return false;
        }
        match n.kind {
            NodeKind::Symlink => {
                let target = n.target.as_ref().map(|t| t.0.as_slice()).unwrap_or(&[]);
                self.root.readlink(rel).is_ok_and(|t| t == target)
            }
            _ if st.st_mode & 0o7777 != (self.perm)(n) => false,
            NodeKind::File => {
                st.st_size as u64 == n.size
                    && self.content_ids(rel).is_ok_and(|ids| ids == n.content)
            }
            NodeKind::Chardev | NodeKind::Blockdev => st.st_rdev == n.rdev,
            _ => true,
        }
    }

    /// The chunk ids of the file at `rel`, as a backup would store them.
    fn content_ids(&self, rel: &Path) -> std::io::Result<Vec<Id>> {
        let mut f = self.root.open_file(rel, false)?;
        let max = self.chunker.params().max_size as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(2 * max);
        let mut ids = Vec::new();
        let mut eof = false;
        loop {
            while !eof && buf.len() < max {
                let n = (&mut f)
                    .take((max - buf.len()) as u64)
                    .read_to_end(&mut buf)?;
                eof = n == 0;
            }
            let mut start = 0;
            while let Some(n) = self.chunker.next_cut(&buf[start..], eof) {
                ids.push(self.keyring.chunk_id(&buf[start..start + n]));
                start += n;
            }
            buf.drain(..start);
            if eof && buf.is_empty() {
                return Ok(ids);
            }
        }
    }

    /// Entries of the directories being restored that the snapshot lacks.
    /// What is below such a directory is not listed: it goes (or stays)
    /// with it.
    fn extras(&self, plan: &Plan) -> Vec<(PathBuf, &'static str)> {
        let mut planned: HashSet<&Path> = HashSet::new();
        planned.extend(plan.dirs.iter().map(|(p, _)| p.as_path()));
        planned.extend(plan.files.iter().map(|f| f.path.as_path()));
        planned.extend(plan.others.iter().map(|(p, _)| p.as_path()));
        let mut out = Vec::new();
        let dirs = std::iter::once(Path::new("")).chain(plan.dirs.iter().map(|(p, _)| p.as_path()));
        for d in dirs {
            // A directory not there yet (or not a directory) has no extras.
            let Ok(names) = self.root.list(d) else {
                continue;
            };
            for name in names {
                let p = d.join(std::ffi::OsStr::from_bytes(&name));
                if planned.contains(p.as_path()) {
                    continue;
                }
                let entry = match self.root.lstat(&p) {
                    Ok(Some(st)) => entry_of_mode(st.st_mode),
                    _ => "other",
                };
                out.push((p, entry));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::FileItem;
    use super::*;

    fn status(change: ChangeKind) -> Status {
        Status {
            change,
            dir_in_the_way: false,
        }
    }

    fn node(kind: NodeKind) -> Node {
        super::super::super::forge::node(b"n", kind)
    }

    /// A plan of two directories, three files and a symlink, and how the
    /// directory compared with it; plus two entries only the directory has.
    fn fixture() -> (Plan, Diff) {
        let plan = Plan {
            dirs: vec![
                ("d".into(), node(NodeKind::Dir)),
                ("d/e".into(), node(NodeKind::Dir)),
            ],
            files: ["d/z", "d/b", "a"]
                .into_iter()
                .map(|p| FileItem {
                    path: p.into(),
                    node: node(NodeKind::File),
                    stage: None,
                })
                .collect(),
            others: vec![("d/l".into(), node(NodeKind::Symlink))],
            errors: Vec::new(),
            findings: Vec::new(),
            whole_dir: true,
        };
        let diff = Diff {
            dirs: vec![status(ChangeKind::Unchanged), status(ChangeKind::Create)],
            files: vec![
                status(ChangeKind::Update),
                status(ChangeKind::Update),
                status(ChangeKind::Unchanged),
            ],
            others: vec![status(ChangeKind::Unchanged)],
            extras: vec![("0-extra".into(), "file"), ("d/x".into(), "dir")],
        };
        (plan, diff)
    }

    #[test]
    fn counts_without_a_list_match_the_list() {
        let (plan, diff) = fixture();
        for delete in [false, true] {
            let c = diff.counts(delete);
            let listed = diff.changes(&plan, delete);
            let n = |k: ChangeKind| listed.iter().filter(|c| c.change == k).count() as u64;
            assert_eq!(c.create, n(ChangeKind::Create));
            assert_eq!(c.update, n(ChangeKind::Update));
            assert_eq!(c.delete, n(ChangeKind::Delete));
            assert_eq!(c.keep, n(ChangeKind::Keep));
            assert_eq!(c.unchanged, n(ChangeKind::Unchanged));
            assert_eq!((c.create, c.update, c.unchanged), (1, 2, 3));
            assert_eq!((c.delete, c.keep), if delete { (2, 0) } else { (0, 2) });
        }
    }

    #[test]
    fn the_first_difference_is_the_first_in_path_order_a_list_would_give() {
        let (plan, diff) = fixture();
        let first = |delete| {
            diff.changes(&plan, delete)
                .into_iter()
                .find(|c| {
                    matches!(
                        c.change,
                        ChangeKind::Create | ChangeKind::Update | ChangeKind::Delete
                    )
                })
                .map(|c| c.path)
        };
        // Kept extras are no difference; deleted ones are.
        assert_eq!(diff.first_difference(&plan, false).as_deref(), Some("d/b"));
        assert_eq!(diff.first_difference(&plan, false), first(false));
        assert_eq!(
            diff.first_difference(&plan, true).as_deref(),
            Some("0-extra")
        );
        assert_eq!(diff.first_difference(&plan, true), first(true));
        let clean = Diff {
            dirs: vec![status(ChangeKind::Unchanged); 2],
            files: vec![status(ChangeKind::Unchanged); 3],
            others: vec![status(ChangeKind::Unchanged)],
            extras: Vec::new(),
        };
        assert_eq!(clean.first_difference(&plan, true), None);
    }
}

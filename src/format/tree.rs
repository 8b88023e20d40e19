//! Directory metadata: a tree is the sorted list of a directory's entries.
//!
//! A tree is serialized as JSON, then stored like file content: chunked,
//! identified by keyed hash and deduplicated, so an unchanged directory
//! costs nothing in a later snapshot. A directory node points at the blob
//! ids of its tree (`subtree`), a file node at its content chunks.
//! Names and link targets are bytes (Unix file names need not be UTF-8): they
//! are written as JSON strings when they are UTF-8 and as `{"hex": …}`
//! otherwise.
//!
//! A tree is written by whoever holds the key, which may be a compromised
//! client: a name is one path component, so [`validate_name`] refuses what
//! could climb out of a directory or alias another entry, and
//! [`Tree::take_refused`] separates such entries so the rest of the tree
//! stays usable.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::format::id::{hex_decode, hex_encode, Id};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
    Socket,
}

/// Bytes that serialize as a string when they can.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RawName(pub Vec<u8>);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawRepr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for RawName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => RawRepr::Text(t.to_string()),
            Err(_) => RawRepr::Hex {
                hex: hex_encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawRepr::deserialize(d)? {
            RawRepr::Text(t) => Ok(RawName(t.into_bytes())),
            RawRepr::Hex { hex } => hex_decode(&hex)
                .map(RawName)
                .ok_or_else(|| serde::de::Error::custom("bad hex name")),
        }
    }
}

impl RawName {
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// The name for display: see [`escape_bytes`].
    pub fn escaped(&self) -> String {
        escape_bytes(&self.0)
    }
}

/// Bytes as printable text, reversibly: control characters, `\\` and bytes
/// that are not UTF-8 are escaped (`\n`, `\u{1b}`, `\xff`), as Rust's
/// `escape_debug` does, so a name cannot move the cursor or forge a line.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

/// Why a tree entry's name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name `.` or `..`")]
    Dot,
    #[error("name contains `/`")]
    Slash,
    #[error("name contains a NUL byte")]
    Nul,
    #[error("name appears twice in its directory")]
    Duplicate,
}

/// Whether `name` is one path component naming an entry in its directory:
/// not empty, not `.` or `..`, without `/` or NUL.
pub fn validate_name(name: &[u8]) -> Result<(), NameError> {
    match name {
        [] => Err(NameError::Empty),
        b"." | b".." => Err(NameError::Dot),
        _ if name.contains(&b'/') => Err(NameError::Slash),
        _ if name.contains(&0) => Err(NameError::Nul),
        _ => Ok(()),
    }
}

/// An entry taken out of a tree, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub name: RawName,
    pub kind: NodeKind,
    pub reason: NameError,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One directory entry and its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: RawName,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits and file type, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub ctime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RawName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtree: Vec<Id>,
}

impl Node {
    /// Whether a file can be taken over from the parent snapshot unread:
    /// same type, size, mtime, ctime and inode.
    pub fn unchanged_since(&self, parent: &Node) -> bool {
        self.kind == NodeKind::File
            && parent.kind == NodeKind::File
            && self.size == parent.size
            && self.mtime == parent.mtime
            && self.ctime == parent.ctime
            && self.inode == parent.inode
    }
}

/// A directory's entries, sorted by name bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("trees serialize")
    }

    pub fn from_bytes(data: &[u8]) -> Result<Tree, serde_json::Error> {
        serde_json::from_slice(data)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Remove and return the entries whose name is invalid, and every
    /// entry after the first of a name that appears more than once (a
    /// symlink then a file of one name must not make the file land where
    /// the link points). The remaining entries keep their order.
    pub fn take_refused(&mut self) -> Vec<Refused> {
        let mut refused = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.nodes.retain(|n| {
            let bad = validate_name(&n.name.0)
                .err()
                .or_else(|| (!seen.insert(n.name.0.clone())).then_some(NameError::Duplicate));
            match bad {
                Some(reason) => {
                    refused.push(Refused {
                        name: n.name.clone(),
                        kind: n.kind,
                        reason,
                    });
                    false
                }
                None => true,
            }
        });
        refused
    }

    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: RawName(name.to_vec()),
            kind: NodeKind::File,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            user: None,
            size: 3,
            mtime: 4,
            ctime: 5,
            inode: 6,
            device: 7,
            links: 1,
            rdev: 0,
            target: None,
            content: vec![Id([1; 32])],
            subtree: vec![],
        }
    }

    #[test]
    fn names_that_leave_their_directory_are_refused() {
        for (name, want) in [
            (&b""[..], NameError::Empty),
            (b".", NameError::Dot),
            (b"..", NameError::Dot),
            (b"a/../../x", NameError::Slash),
            (b"/etc/cron.d/x", NameError::Slash),
            (b"a\0b", NameError::Nul),
        ] {
            assert_eq!(validate_name(name), Err(want), "{name:?}");
        }
        for ok in [&b"..."[..], b".a", b"a..", b"\xff\n", b" "] {
            assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn take_refused_keeps_the_good_entries_and_the_first_of_a_duplicate() {
        let mut link = node(b"d");
        link.kind = NodeKind::Symlink;
        let mut t = Tree {
            nodes: vec![
                node(b".."),
                node(b"a"),
                link,
                node(b"d"),
                node(b"x/y"),
                node(b"z"),
            ],
        };
        let refused = t.take_refused();
        let names: Vec<&[u8]> = t.nodes.iter().map(|n| n.name.0.as_slice()).collect();
        assert_eq!(names, [&b"a"[..], b"d", b"z"]);
        assert_eq!(t.nodes[1].kind, NodeKind::Symlink);
        let got: Vec<(&[u8], NameError)> = refused
            .iter()
            .map(|r| (r.name.0.as_slice(), r.reason))
            .collect();
        assert_eq!(
            got,
            [
                (&b".."[..], NameError::Dot),
                (b"d", NameError::Duplicate),
                (b"x/y", NameError::Slash)
            ]
        );
    }

    #[test]
    fn escaping_is_printable_and_keeps_ordinary_names() {
        assert_eq!(escape_bytes("é b.txt".as_bytes()), "é b.txt");
        assert_eq!(escape_bytes(b"a\nb\x1b[2J\\"), "a\\nb\\u{1b}[2J\\\\");
        assert_eq!(escape_bytes(b"\xffz"), "\\xffz");
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let mut t = Tree {
            nodes: vec![node(b"\xff\xfebad"), node("é".as_bytes()), node(b"a")],
        };
        t.sort();
        let back = Tree::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(back, t);
        assert!(back.find(b"\xff\xfebad").is_some());
        assert!(back.find(b"zz").is_none());
    }
}

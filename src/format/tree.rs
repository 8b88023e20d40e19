//! Directory metadata: a tree is the sorted list of a directory's entries.
//!
//! A tree is serialized as JSON, then stored like file content: chunked,
//! identified by keyed hash and deduplicated, so an unchanged directory
//! costs nothing in a later snapshot. A directory node points at the blob
//! ids of its tree (`subtree`), a file node at its content chunks.
//! Names and link targets are bytes (Unix file names need not be UTF-8): they
//! are written as JSON strings when they are UTF-8 and as `{"hex": …}`
//! otherwise.

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

//! A cache of decoded trees, keyed by the blob ids a tree is stored as and
//! bounded twice: by trees, and by their entries, since one directory of
//! many files is one large tree (a few hundred bytes an entry; 4096
//! directories of 100 files held 120 MiB when only trees were counted).
//! Used by the tree walker (restore, ls, diff) and the snapshot browser
//! (API, web, mount).

use std::collections::HashMap;

use crate::format::id::Id;

/// Entries of the cached trees, at most.
pub const CACHE_NODES: usize = 64 * 1024;

/// Decoded trees, at most `max_trees` of them and [`CACHE_NODES`] entries
/// in all; when either is reached the cache starts over (the trees a walk
/// needs again are its parents', which it holds itself).
pub struct TreeCache<V> {
    trees: HashMap<Vec<Id>, (V, usize)>,
    nodes: usize,
    max_trees: usize,
}

impl<V: Clone> TreeCache<V> {
    pub fn new(max_trees: usize) -> Self {
        TreeCache {
            trees: HashMap::new(),
            nodes: 0,
            max_trees,
        }
    }

    pub fn get(&self, ids: &[Id]) -> Option<V> {
        self.trees.get(ids).map(|(v, _)| v.clone())
    }

    /// Keep `tree`, which has `nodes` entries; one larger than the whole
    /// bound is not kept.
    pub fn insert(&mut self, ids: &[Id], tree: V, nodes: usize) {
        if nodes > CACHE_NODES {
            return;
        }
        if self.trees.len() >= self.max_trees || self.nodes + nodes > CACHE_NODES {
            self.trees.clear();
            self.nodes = 0;
        }
        if let Some((_, old)) = self.trees.insert(ids.to_vec(), (tree, nodes)) {
            self.nodes -= old;
        }
        self.nodes += nodes;
    }

    /// Trees held.
    pub fn len(&self) -> usize {
        self.trees.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }

    /// Entries of the trees held.
    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<Id> {
        vec![Id([n; 32])]
    }

    #[test]
    fn bounded_by_trees_and_by_entries() {
        let mut c = TreeCache::new(3);
        for n in 0..3 {
            c.insert(&ids(n), n, 10);
        }
        assert_eq!((c.len(), c.nodes()), (3, 30));
        assert_eq!(c.get(&ids(1)), Some(1));
        // A fourth tree: start over.
        c.insert(&ids(3), 3, 10);
        assert_eq!((c.len(), c.nodes()), (1, 10));
        assert_eq!(c.get(&ids(0)), None);
        // Entries: a large tree makes room for itself.
        c.insert(&ids(4), 4, CACHE_NODES - 5);
        assert_eq!((c.len(), c.nodes()), (1, CACHE_NODES - 5));
        // Larger than the bound: not kept, nothing dropped.
        c.insert(&ids(5), 5, CACHE_NODES + 1);
        assert_eq!(c.get(&ids(5)), None);
        assert_eq!(c.get(&ids(4)), Some(4));
        // The same tree again is counted once.
        c.insert(&ids(4), 4, CACHE_NODES - 5);
        assert_eq!(c.nodes(), CACHE_NODES - 5);
    }
}

//! A set of replicas, by their position in the repository's replica list.
//!
//! Every pack in the master index carries one, so it must stay small and
//! `Copy`: it is a 64-bit set, and a repository is refused at open when it
//! is given more than [`ReplicaSet::MAX`] replicas (see
//! [`ReplicaSet::check_count`]) instead of silently overflowing.

use std::fmt;

/// Positions `0..ReplicaSet::MAX` of replicas.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ReplicaSet(u64);

impl ReplicaSet {
    /// The most replicas one repository can be opened on.
    pub const MAX: usize = 64;

    pub const EMPTY: ReplicaSet = ReplicaSet(0);

    /// Refuse a replica count this type cannot represent.
    pub fn check_count(n: usize) -> Result<(), String> {
        if n > Self::MAX {
            Err(format!(
                "{n} replicas given; cairn supports at most {} in one repository",
                Self::MAX
            ))
        } else {
            Ok(())
        }
    }

    /// Replicas `0..n`.
    pub fn all(n: usize) -> ReplicaSet {
        assert!(n <= Self::MAX, "replica count checked at open");
        if n == Self::MAX {
            ReplicaSet(u64::MAX)
        } else {
            ReplicaSet((1u64 << n) - 1)
        }
    }

    /// The set whose bit `i` is bit `i` of `bits`.
    pub fn from_bits(bits: u64) -> ReplicaSet {
        ReplicaSet(bits)
    }

    pub fn single(i: usize) -> ReplicaSet {
        ReplicaSet::EMPTY.with(i)
    }

    fn bit(i: usize) -> u64 {
        assert!(i < Self::MAX, "replica position checked at open");
        1u64 << i
    }

    pub fn contains(self, i: usize) -> bool {
        i < Self::MAX && self.0 & (1u64 << i) != 0
    }

    pub fn insert(&mut self, i: usize) {
        self.0 |= Self::bit(i);
    }

    pub fn remove(&mut self, i: usize) {
        self.0 &= !Self::bit(i);
    }

    #[must_use]
    pub fn with(mut self, i: usize) -> ReplicaSet {
        self.insert(i);
        self
    }

    #[must_use]
    pub fn without(mut self, i: usize) -> ReplicaSet {
        self.remove(i);
        self
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether every replica of `other` is in `self`.
    pub fn is_superset(self, other: ReplicaSet) -> bool {
        self.0 & other.0 == other.0
    }

    #[must_use]
    pub fn intersection(self, other: ReplicaSet) -> ReplicaSet {
        ReplicaSet(self.0 & other.0)
    }

    #[must_use]
    pub fn union(self, other: ReplicaSet) -> ReplicaSet {
        ReplicaSet(self.0 | other.0)
    }

    #[must_use]
    pub fn difference(self, other: ReplicaSet) -> ReplicaSet {
        ReplicaSet(self.0 & !other.0)
    }

    /// Positions in ascending order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }
}

impl FromIterator<usize> for ReplicaSet {
    fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
        iter.into_iter().fold(ReplicaSet::EMPTY, ReplicaSet::with)
    }
}

impl fmt::Debug for ReplicaSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_edges() {
        assert_eq!(ReplicaSet::all(0), ReplicaSet::EMPTY);
        assert_eq!(ReplicaSet::all(64).len(), 64);
        assert!(ReplicaSet::all(64).contains(63));
        assert!(!ReplicaSet::all(64).contains(64));
        assert!(ReplicaSet::check_count(64).is_ok());
        let e = ReplicaSet::check_count(65).unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(a in proptest::collection::btree_set(0usize..64, 0..20),
                              b in proptest::collection::btree_set(0usize..64, 0..20)) {
            let sa: ReplicaSet = a.iter().copied().collect();
            let sb: ReplicaSet = b.iter().copied().collect();
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), a.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.len(), a.len());
            prop_assert_eq!(sa.union(sb).iter().collect::<Vec<_>>(),
                a.union(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.intersection(sb).iter().collect::<Vec<_>>(),
                a.intersection(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.difference(sb).iter().collect::<Vec<_>>(),
                a.difference(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.is_superset(sb), a.is_superset(&b));
        }
    }
}

//! A set of peer slots, one bit per slot: what the directory answers for a push and what a
//! core has been told is up. Fixed size (128 bytes for 1,024 nodes), `Copy`, no allocation.
use super::MAX_NODES;

const WORDS: usize = MAX_NODES / 64;
const _: () = assert!(MAX_NODES % 64 == 0, "whole words");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSet([u64; WORDS]);

impl NodeSet {
    pub const EMPTY: NodeSet = NodeSet([0; WORDS]);

    pub fn one(node: u16) -> NodeSet {
        let mut s = NodeSet::EMPTY;
        s.insert(node);
        s
    }

    /// Slots past [`MAX_NODES`] are ignored.
    pub fn insert(&mut self, node: u16) {
        if let Some(w) = self.0.get_mut(node as usize / 64) {
            *w |= 1 << (node % 64);
        }
    }

    pub fn remove(&mut self, node: u16) {
        if let Some(w) = self.0.get_mut(node as usize / 64) {
            *w &= !(1 << (node % 64));
        }
    }

    pub fn contains(&self, node: u16) -> bool {
        self.0
            .get(node as usize / 64)
            .is_some_and(|w| w & (1 << (node % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The slots in both.
    pub fn and(mut self, other: &NodeSet) -> NodeSet {
        for (w, o) in self.0.iter_mut().zip(&other.0) {
            *w &= o;
        }
        self
    }

    /// The slots in either.
    pub fn or(mut self, other: &NodeSet) -> NodeSet {
        for (w, o) in self.0.iter_mut().zip(&other.0) {
            *w |= o;
        }
        self
    }

    /// The slots in ascending order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            words: &self.0,
            at: 0,
            word: self.0[0],
        }
    }
}

/// The slots of a [`NodeSet`], ascending: one word at a time, zero words skipped.
pub struct Iter<'a> {
    words: &'a [u64; WORDS],
    /// Index of `word` in `words`.
    at: usize,
    /// What is left of the current word.
    word: u64,
}

impl Iterator for Iter<'_> {
    type Item = u16;

    #[inline]
    fn next(&mut self) -> Option<u16> {
        while self.word == 0 {
            self.at += 1;
            self.word = *self.words.get(self.at)?;
        }
        let bit = self.word.trailing_zeros();
        self.word &= self.word - 1;
        Some((self.at * 64) as u16 + bit as u16)
    }
}

impl FromIterator<u16> for NodeSet {
    fn from_iter<T: IntoIterator<Item = u16>>(iter: T) -> NodeSet {
        let mut s = NodeSet::EMPTY;
        for n in iter {
            s.insert(n);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_slot_up_to_the_limit() {
        let nodes = [0u16, 1, 63, 64, 500, (MAX_NODES - 1) as u16];
        let s: NodeSet = nodes.iter().copied().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), nodes);
        assert_eq!(s.len(), nodes.len());
        assert!(s.contains(500) && !s.contains(499));
        let mut t = s;
        t.insert(MAX_NODES as u16); // ignored, not a panic
        assert_eq!(t, s);
        t.remove(64);
        assert_eq!(t.and(&NodeSet::one(64)), NodeSet::EMPTY);
        assert_eq!(s.and(&NodeSet::one(64)), NodeSet::one(64));
        assert!(NodeSet::EMPTY.is_empty() && !s.is_empty());
    }
}

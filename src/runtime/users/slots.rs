//! The sockets (slots) of one user on one core, in the order they opened: up to
//! [`INLINE`] in the user's entry of the index itself (no allocation: most users have one
//! socket on a core, some two or three), more in a list of the index's [`Spill`], which the
//! entry names by number.
use std::ops::Deref;

/// Slots held in the entry itself.
pub const INLINE: usize = 3;
/// After the last slot of an inline list.
const EMPTY: u32 = u32::MAX;
/// First word of a spilled list; the second is its number in the spill.
const SPILLED: u32 = u32::MAX - 1;
/// Highest slot a list holds (the two above are its markers; a core's slab is far smaller).
pub const MAX_SLOT: u32 = u32::MAX - 2;

/// One user's sockets. Inline: the slots, then `EMPTY` to the end. Spilled:
/// `[SPILLED, n, EMPTY]`, the slots are `Spill::lists[n]` (more than [`INLINE`] of them).
/// 12 bytes, so that an entry of the index (a 24-byte `UserId`, the context, this) is 40.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SlotList([u32; INLINE]);

/// The lists of the users with more than [`INLINE`] sockets, and the numbers of the free
/// ones (kept empty: no allocation) for the next user that spills.
#[derive(Default)]
pub struct Spill {
    lists: Vec<Vec<u32>>,
    free: Vec<u32>,
    /// The buffer a spilled list is copied into when it is lent out, kept for the next.
    scratch: Vec<u32>,
}

impl SlotList {
    /// A list of one socket.
    pub fn one(slot: u32) -> SlotList {
        assert!(slot <= MAX_SLOT, "slot {slot} is a list marker");
        SlotList([slot, EMPTY, EMPTY])
    }

    fn spilled(&self) -> Option<usize> {
        (self.0[0] == SPILLED).then_some(self.0[1] as usize)
    }

    fn inline(&self) -> &[u32] {
        let len = self.0.iter().position(|&s| s == EMPTY).unwrap_or(INLINE);
        &self.0[..len]
    }

    pub fn is_empty(&self) -> bool {
        self.0[0] == EMPTY
    }

    /// Does the list live in the spill?
    #[cfg(test)]
    pub fn is_spilled(&self) -> bool {
        self.spilled().is_some()
    }

    pub fn as_slice<'a>(&'a self, spill: &'a Spill) -> &'a [u32] {
        match self.spilled() {
            Some(n) => &spill.lists[n],
            None => self.inline(),
        }
    }

    /// Add a socket at the end (a full inline list moves to the spill).
    pub fn push(&mut self, slot: u32, spill: &mut Spill) {
        assert!(slot <= MAX_SLOT, "slot {slot} is a list marker");
        if let Some(n) = self.spilled() {
            spill.lists[n].push(slot);
            return;
        }
        let len = self.inline().len();
        if len < INLINE {
            self.0[len] = slot;
            return;
        }
        let mut list = Vec::with_capacity(2 * INLINE + 2);
        list.extend_from_slice(&self.0);
        list.push(slot);
        *self = SlotList([SPILLED, spill.put(list), EMPTY]);
    }

    /// Remove a socket (the others keep their order); a spilled list that fits inline again
    /// comes back. Is the list empty now?
    pub fn remove(&mut self, slot: u32, spill: &mut Spill) -> bool {
        match self.spilled() {
            Some(n) => {
                let list = &mut spill.lists[n];
                list.retain(|&s| s != slot);
                if list.len() <= INLINE {
                    let mut inline = [EMPTY; INLINE];
                    inline[..list.len()].copy_from_slice(list);
                    spill.free(n);
                    *self = SlotList(inline);
                }
            }
            None => {
                let len = self.inline().len();
                if let Some(at) = self.0[..len].iter().position(|&s| s == slot) {
                    self.0.copy_within(at + 1..len, at);
                    self.0[len - 1] = EMPTY;
                }
            }
        }
        self.is_empty()
    }

    /// A copy of the list that does not borrow the index (delivery walks it while it writes
    /// to the sockets): inline, the 12 bytes; spilled, copied into the spill's scratch
    /// buffer, which [`Spill::put_back`] takes back. Whatever the index does meanwhile (a
    /// socket that closes during the walk) happens to the index's own list.
    pub fn lend(&self, spill: &mut Spill) -> Lent {
        match self.spilled() {
            None => Lent::Inline(*self),
            Some(n) => {
                let mut copy = std::mem::take(&mut spill.scratch);
                copy.clear();
                copy.extend_from_slice(&spill.lists[n]);
                Lent::Copied(copy)
            }
        }
    }
}

/// A user's sockets lent out by [`SlotList::lend`]: a slice of slots.
pub enum Lent {
    Inline(SlotList),
    Copied(Vec<u32>),
}

impl Deref for Lent {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Lent::Inline(l) => l.inline(),
            Lent::Copied(v) => v,
        }
    }
}

impl Spill {
    fn put(&mut self, list: Vec<u32>) -> u32 {
        match self.free.pop() {
            Some(n) => {
                self.lists[n as usize] = list;
                n
            }
            None => {
                self.lists.push(list);
                u32::try_from(self.lists.len() - 1).expect("fewer spilled lists than slots")
            }
        }
    }

    fn free(&mut self, n: usize) {
        self.lists[n] = Vec::new();
        self.free.push(n as u32);
    }

    /// A lent list is given back (its buffer is kept for the next).
    pub fn put_back(&mut self, lent: Lent) {
        if let Lent::Copied(v) = lent {
            if v.capacity() > self.scratch.capacity() {
                self.scratch = v;
            }
        }
    }

    /// Lists in the spill (free ones too) and the users' lists among them.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.lists.len(), self.lists.len() - self.free.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(slots: &[u32], spill: &mut Spill) -> SlotList {
        let mut l = SlotList::one(slots[0]);
        for &s in &slots[1..] {
            l.push(s, spill);
        }
        l
    }

    #[test]
    fn twelve_bytes_and_up_to_three_inline() {
        assert_eq!(std::mem::size_of::<SlotList>(), 12);
        let mut spill = Spill::default();
        let l = list(&[7, 8, 9], &mut spill);
        assert!(!l.is_spilled());
        assert_eq!(l.as_slice(&spill), &[7, 8, 9]);
        assert_eq!(spill.counts(), (0, 0), "nothing allocated");
    }

    #[test]
    fn a_full_list_spills_and_comes_back_inline() {
        let mut spill = Spill::default();
        let mut l = list(&[1, 2, 3, 4, 5], &mut spill);
        assert!(l.is_spilled());
        assert_eq!(l.as_slice(&spill), &[1, 2, 3, 4, 5]);
        assert_eq!(spill.counts(), (1, 1));
        assert!(!l.remove(1, &mut spill));
        assert!(l.is_spilled(), "4 do not fit inline");
        assert!(!l.remove(4, &mut spill));
        assert!(!l.is_spilled());
        assert_eq!(l.as_slice(&spill), &[2, 3, 5]);
        assert_eq!(spill.counts(), (1, 0), "its spill list is free (and empty)");
        assert_eq!(spill.lists[0].capacity(), 0);
        // The next user that spills takes the free list.
        let other = list(&[10, 11, 12, 13], &mut spill);
        assert_eq!(spill.counts(), (1, 1));
        assert_eq!(other.as_slice(&spill), &[10, 11, 12, 13]);
        assert_eq!(l.as_slice(&spill), &[2, 3, 5]);
    }

    #[test]
    fn removing_from_the_middle_keeps_the_order() {
        let mut spill = Spill::default();
        let mut l = list(&[1, 2, 3], &mut spill);
        assert!(!l.remove(2, &mut spill));
        assert_eq!(l.as_slice(&spill), &[1, 3]);
        assert!(!l.remove(99, &mut spill), "not there: unchanged");
        assert_eq!(l.as_slice(&spill), &[1, 3]);
        l.push(4, &mut spill);
        assert_eq!(l.as_slice(&spill), &[1, 3, 4]);
        assert!(!l.remove(4, &mut spill));
        assert!(!l.remove(1, &mut spill));
        assert_eq!(l.as_slice(&spill), &[3]);
        assert!(l.remove(3, &mut spill), "empty");

        let mut big = list(&[1, 2, 3, 4, 5, 6], &mut spill);
        assert!(!big.remove(3, &mut spill));
        assert_eq!(big.as_slice(&spill), &[1, 2, 4, 5, 6]);
    }

    #[test]
    fn a_lent_list_is_a_copy_and_its_buffer_is_kept() {
        let mut spill = Spill::default();
        let mut small = list(&[1, 2], &mut spill);
        let lent = small.lend(&mut spill);
        small.remove(1, &mut spill);
        assert_eq!(*lent, [1, 2]);
        spill.put_back(lent);
        assert_eq!(small.as_slice(&spill), &[2]);

        let mut big = list(&[1, 2, 3, 4, 5], &mut spill);
        let lent = big.lend(&mut spill);
        assert_eq!(*lent, [1, 2, 3, 4, 5]);
        big.push(6, &mut spill);
        big.remove(1, &mut spill);
        assert_eq!(*lent, [1, 2, 3, 4, 5]);
        let buffer = lent.as_ptr();
        spill.put_back(lent);
        assert_eq!(big.as_slice(&spill), &[2, 3, 4, 5, 6]);
        let again = big.lend(&mut spill);
        assert_eq!(*again, [2, 3, 4, 5, 6]);
        assert_eq!(again.as_ptr(), buffer, "the scratch buffer is reused");
        // Lent twice at once: the second copy gets a buffer of its own.
        let twice = big.lend(&mut spill);
        assert_eq!(*twice, [2, 3, 4, 5, 6]);
        spill.put_back(twice);
        spill.put_back(again);
    }

    #[test]
    #[should_panic(expected = "list marker")]
    fn a_marker_is_no_slot() {
        SlotList::one(u32::MAX);
    }
}

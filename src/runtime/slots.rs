//! The connection slots of one core: a slab of [`Conn`] indexed by the connection's direct
//! descriptor slot, with generations (so a completion or timer of a previous occupant is
//! recognised and dropped), the count of slots in use, the admission limit, and the virtual
//! slots of long-polling sessions above the descriptor table.
//!
//! Call order for a connection: [`Slots::take`] (fresh generation) ... [`Slots::release`]
//! once its descriptor is closed. A polling session: [`Slots::take_virtual`] ...
//! [`Slots::release_virtual`]. Nothing here submits I/O.
use super::conn::{Conn, ConnState};
use super::token;
use std::ops::{Index, IndexMut};

pub struct Slots {
    conns: Vec<Conn>,
    /// Descriptor slots in use (any state but Free); virtual slots are not counted.
    in_use: usize,
    /// Size of the ring's descriptor table: virtual slots are numbered from here up.
    table_slots: u32,
    /// Above this many slots in use, new connections are answered 503 (the rest of the
    /// table is the reserve that carries those answers).
    admission_limit: usize,
    virtual_next: u32,
    virtual_free: Vec<u32>,
}

impl Slots {
    pub fn new(table_slots: u32, reserve_slots: u32) -> Slots {
        Slots {
            // Reserved once for the whole table (address space only: a slot's memory is
            // touched when it is first used), so the slab never grows by copying.
            conns: Vec::with_capacity(table_slots as usize),
            in_use: 0,
            table_slots,
            admission_limit: (table_slots as usize).saturating_sub(reserve_slots as usize),
            virtual_next: 0,
            virtual_free: Vec::new(),
        }
    }

    /// Slots that may hold a connection (descriptor and virtual ones).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn get(&self, slot: usize) -> Option<&Conn> {
        self.conns.get(slot)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot)
    }

    /// Is (slot, gen) the current, live occupant? (A completion or timer of a connection
    /// that is gone names an old generation or a free slot.)
    pub fn is_live(&self, slot: u32, gen: u32) -> bool {
        self.conns
            .get(slot as usize)
            .is_some_and(|c| c.gen == gen && !c.is_free())
    }

    /// Descriptor slots in use.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Size of the ring's descriptor table.
    pub fn table_slots(&self) -> usize {
        self.table_slots as usize
    }

    /// Free descriptor slots in the ring's table.
    pub fn free_in_table(&self) -> usize {
        (self.table_slots as usize).saturating_sub(self.in_use)
    }

    /// More slots in use than the admission limit.
    pub fn over_admission_limit(&self) -> bool {
        self.in_use > self.admission_limit
    }

    pub fn admission_limit(&self) -> usize {
        self.admission_limit
    }

    /// Take descriptor slot `slot` for a new connection: fresh generation, state `state`,
    /// flags and counters reset, last receive at tick `now`.
    pub fn take(&mut self, slot: u32, state: ConnState, now: u64) {
        let i = slot as usize;
        if i >= self.conns.len() {
            // Within the reserved table no reallocation; only slots up to the highest in use
            // are touched (RSS).
            self.conns.resize_with(i + 1, Conn::free);
        }
        let c = &mut self.conns[i];
        debug_assert!(c.is_free());
        c.gen = token::next_gen(c.gen);
        c.flags = 0;
        c.inflight = 0;
        c.sent = 0;
        c.tls = None;
        c.last_rx = now as u32;
        c.state = state;
        self.in_use += 1;
    }

    /// The descriptor of `slot` is closed: the slot is free, its buffers dropped.
    pub fn release(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.state = ConnState::Free;
        c.flags = 0;
        c.sending = Vec::new();
        c.out = Vec::new();
        c.tls = None;
        self.in_use -= 1;
    }

    /// A slot for a polling session, above the descriptor table (never a kernel slot), with
    /// a fresh generation. Its state is set by the caller.
    pub fn take_virtual(&mut self) -> u32 {
        let v = self.virtual_free.pop().unwrap_or_else(|| {
            let v = self.table_slots + self.virtual_next;
            self.virtual_next += 1;
            v
        });
        if v as usize >= self.conns.len() {
            self.conns.resize_with(v as usize + 1, Conn::free);
        }
        let c = &mut self.conns[v as usize];
        c.gen = token::next_gen(c.gen);
        c.flags = 0;
        c.inflight = 0;
        v
    }

    /// A polling session is gone: its virtual slot is free for the next one.
    pub fn release_virtual(&mut self, v: u32) {
        let c = &mut self.conns[v as usize];
        c.state = ConnState::Free;
        c.flags = 0;
        self.virtual_free.push(v);
    }
}

impl Index<usize> for Slots {
    type Output = Conn;
    fn index(&self, slot: usize) -> &Conn {
        &self.conns[slot]
    }
}

impl IndexMut<usize> for Slots {
    fn index_mut(&mut self, slot: usize) -> &mut Conn {
        &mut self.conns[slot]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responding() -> ConnState {
        ConnState::Responding
    }

    #[test]
    fn a_slot_taken_again_has_a_new_generation_and_old_tokens_are_stale() {
        let mut s = Slots::new(8, 2);
        s.take(3, responding(), 0);
        let first = s[3].gen;
        assert!(s.is_live(3, first));
        assert_eq!(s.in_use(), 1);
        s.release(3);
        assert!(!s.is_live(3, first), "a free slot is never live");
        assert_eq!(s.in_use(), 0);
        s.take(3, responding(), 5);
        assert_ne!(s[3].gen, first);
        assert!(
            !s.is_live(3, first),
            "a completion of the previous occupant is stale"
        );
        assert!(s.is_live(3, s[3].gen));
        assert_eq!(s[3].last_rx, 5);
        assert!(!s.is_live(7, 0), "beyond the slab");
    }

    #[test]
    fn release_drops_the_buffers_and_the_state() {
        let mut s = Slots::new(4, 0);
        s.take(0, responding(), 0);
        s[0].out.extend_from_slice(b"queued");
        s[0].sending.extend_from_slice(b"in flight");
        s[0].flags = super::super::conn::flag::LINGER;
        s.release(0);
        assert!(s[0].is_free());
        assert_eq!(s[0].out.capacity(), 0);
        assert_eq!(s[0].sending.capacity(), 0);
        assert_eq!(s[0].flags, 0);
    }

    #[test]
    fn admission_limit_keeps_the_reserve() {
        let mut s = Slots::new(4, 1);
        assert_eq!(s.admission_limit(), 3);
        for slot in 0..3 {
            s.take(slot, responding(), 0);
            assert!(!s.over_admission_limit());
        }
        s.take(3, responding(), 0);
        assert!(s.over_admission_limit(), "the fourth is in the reserve");
        assert_eq!(s.free_in_table(), 0);
    }

    #[test]
    fn virtual_slots_live_above_the_table_and_are_reused() {
        let mut s = Slots::new(16, 0);
        let a = s.take_virtual();
        let b = s.take_virtual();
        assert_eq!((a, b), (16, 17));
        assert_eq!(s.in_use(), 0, "virtual slots hold no descriptor");
        s[a as usize].state = responding();
        let gen_a = s[a as usize].gen;
        s.release_virtual(a);
        assert!(s[a as usize].is_free());
        let c = s.take_virtual();
        assert_eq!(c, a, "a freed virtual slot is taken first");
        assert_ne!(s[c as usize].gen, gen_a);
        assert_eq!(s.take_virtual(), 18);
    }
}

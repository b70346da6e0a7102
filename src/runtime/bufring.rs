//! A provided buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a receive buffer only
//! when data arrives, so an idle connection pins no read buffer.
//!
//! Only a window of the buffers is handed to the kernel at a time, refilled from a stack of
//! the free ones, most recently used on top: the kernel takes buffers in the order they were
//! given, so handing it all of them would cycle through every buffer (and touch the first page
//! of each: 4 MiB a ring with the defaults) even on an idle core. With the window, a quiet
//! core keeps reusing the same few buffers, warm in the cache. A turn in which an open
//! socket's receive found the window empty (`ENOBUFS`) doubles it (up to every buffer), and a
//! window that has not run dry for [`RELAX_AFTER_TICKS`] ticks is halved again (see
//! `BufWindow`). A request's receive that finds none does not widen it: the request waits a
//! turn (`Shard::rearm_starved`), so a burst of connections does not leave every buffer touched.
//!
//! This file and `sys.rs` hold the data plane's unsafe code.
use io_uring::types::BufRingEntry;
use io_uring::Submitter;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    bufs: *mut u8,
    bufs_bytes: usize,
    entries: u16,
    buf_size: u32,
    tail: u16,
    window: BufWindow,
}

/// The smallest window: enough for a turn of a few dozen receives on a quiet core.
pub const MIN_WINDOW: u16 = 64;
/// Ticks (100 ms) without a receive that found the window empty before it is halved.
pub const RELAX_AFTER_TICKS: u32 = 100;

/// Which buffers the kernel holds and which wait on our side (sans-IO: no pointers, tested
/// alone). `given` counts the buffers handed to the kernel and not yet given back to us
/// through `recycle`: a buffer the kernel filled counts as given until its completion's
/// handler recycles it, within the same loop turn, so `given` may exceed what the kernel still
/// has by that turn's receives (a burst larger than the window gets `ENOBUFS`, which grows it).
#[derive(Debug)]
pub struct BufWindow {
    /// The buffers on our side, the most recently used last.
    free: Vec<u16>,
    given: u16,
    size: u16,
    max: u16,
    /// Ticks since the window last ran dry.
    quiet_ticks: u32,
}

impl BufWindow {
    /// `entries` buffers, all on our side; [`BufWindow::next_to_give`] hands over the first
    /// `min(MIN_WINDOW, entries)` (buffer 0 first).
    pub fn new(entries: u16) -> BufWindow {
        BufWindow {
            // The stack's top is its end: the lowest ids are used first.
            free: (0..entries).rev().collect(),
            given: 0,
            size: MIN_WINDOW.min(entries),
            max: entries,
            quiet_ticks: 0,
        }
    }

    /// The next buffer to hand the kernel while the window is short of buffers (the most
    /// recently used first).
    pub fn next_to_give(&mut self) -> Option<u16> {
        if self.given >= self.size {
            return None;
        }
        let bid = self.free.pop()?;
        self.given += 1;
        Some(bid)
    }

    /// Buffer `bid` is back from the kernel: `true` if it goes straight back (the window is
    /// short of it), else it waits on the stack.
    pub fn recycled(&mut self, bid: u16) -> bool {
        self.given -= 1;
        if self.given < self.size {
            self.given += 1;
            true
        } else {
            self.free.push(bid);
            false
        }
    }

    /// Receives found no buffer this turn: double the window (then [`BufWindow::next_to_give`]
    /// says what to hand over now).
    pub fn ran_dry(&mut self) {
        self.quiet_ticks = 0;
        self.size = self.size.saturating_mul(2).min(self.max);
    }

    /// One tick passed: after [`RELAX_AFTER_TICKS`] quiet ones the window is halved (the
    /// kernel keeps what it holds; the next recycles wait on the stack until it is back
    /// within the window).
    pub fn tick(&mut self) {
        self.quiet_ticks += 1;
        if self.quiet_ticks >= RELAX_AFTER_TICKS {
            self.quiet_ticks = 0;
            self.size = (self.size / 2).max(MIN_WINDOW.min(self.max));
        }
    }

    pub fn size(&self) -> u16 {
        self.size
    }
}

fn mmap_anon(len: usize) -> io::Result<*mut u8> {
    // SAFETY: anonymous private mapping with no address hint; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as *mut u8)
}

impl BufRing {
    /// Map `entries` buffers of `buf_size` bytes and register them as group `bgid`.
    /// Buffer memory is mapped lazily by the kernel: untouched buffers cost no RSS.
    pub fn new(
        submitter: &Submitter<'_>,
        entries: u16,
        buf_size: u32,
        bgid: u16,
    ) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two());
        let window = BufWindow::new(entries);
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let bufs_bytes = entries as usize * buf_size as usize;
        let ring = mmap_anon(ring_bytes)? as *mut BufRingEntry;
        let bufs = match mmap_anon(bufs_bytes) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `ring` was mapped above with exactly this length.
                unsafe { libc::munmap(ring as *mut _, ring_bytes) };
                return Err(e);
            }
        };
        let mut br = BufRing {
            ring,
            ring_bytes,
            bufs,
            bufs_bytes,
            entries,
            buf_size,
            tail: 0,
            window,
        };
        // SAFETY: the ring memory is page aligned, sized for `entries` entries, and stays mapped
        // until Drop, which runs after the io_uring that uses it is dropped (field order in Shard).
        unsafe { submitter.register_buf_ring_with_flags(ring as u64, entries, bgid, 0)? };
        br.give();
        Ok(br)
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: idx < entries, inside the mapped ring; only this thread writes entries, and the
        // kernel reads an entry only after the tail covering it is published.
        let entry = unsafe { &mut *self.ring.add(idx) };
        // SAFETY: bid < entries so the buffer lies inside the mapping.
        entry.set_addr(unsafe { self.bufs.add(bid as usize * self.buf_size as usize) } as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field of a live ring; the
        // kernel reads it with acquire semantics, we write it with release.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which the kernel just filled and handed to us.
    pub fn get(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < self.entries && len <= self.buf_size as usize);
        // SAFETY: in bounds (checked above); the kernel does not touch a buffer between
        // completing it to us and our `recycle`, and `&mut self` keeps this the only view.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bufs.add(bid as usize * self.buf_size as usize),
                len,
            )
        }
    }

    /// Buffer `bid` is ours again: handed straight back to the kernel if the window is short
    /// of it, else kept on the free stack.
    pub fn recycle(&mut self, bid: u16) {
        if self.window.recycled(bid) {
            self.push(bid);
            self.publish();
        }
    }

    /// Receives found no buffer this turn: widen the window and hand the kernel what it now
    /// lets it have.
    pub fn ran_dry(&mut self) {
        self.window.ran_dry();
        self.give();
    }

    /// Hand the kernel what the window is short of, if anything.
    fn give(&mut self) {
        let mut any = false;
        while let Some(bid) = self.window.next_to_give() {
            self.push(bid);
            any = true;
        }
        if any {
            self.publish();
        }
    }

    /// One tick passed (the window narrows after a quiet while).
    pub fn tick(&mut self) {
        self.window.tick();
    }

    pub fn window(&self) -> u16 {
        self.window.size()
    }

    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both regions were mapped in `new` with these lengths; the ring using them is
        // gone (declared before this field in Shard, so dropped first).
        unsafe {
            libc::munmap(self.bufs as *mut _, self.bufs_bytes);
            libc::munmap(self.ring as *mut _, self.ring_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffers the window hands over now.
    fn give(w: &mut BufWindow) -> Vec<u16> {
        std::iter::from_fn(|| w.next_to_give()).collect()
    }

    /// Buffers handed over when the window ran dry.
    fn widen(w: &mut BufWindow) -> Vec<u16> {
        w.ran_dry();
        give(w)
    }

    /// A window of `entries` and the buffers it hands over first.
    fn window(entries: u16) -> (BufWindow, Vec<u16>) {
        let mut w = BufWindow::new(entries);
        let first = give(&mut w);
        (w, first)
    }

    #[test]
    fn a_quiet_core_reuses_the_same_few_buffers() {
        let (mut w, first) = window(1024);
        assert_eq!(first, (0..64).collect::<Vec<_>>());
        // Receive after receive, each buffer back in the same turn: it goes straight back,
        // and no buffer beyond the first window is ever handed over.
        for i in 0..10_000u32 {
            assert!(w.recycled((i % 64) as u16));
        }
        assert_eq!(w.size(), 64);
        assert_eq!(w.free.len(), 1024 - 64);
    }

    #[test]
    fn running_dry_doubles_the_window_with_the_most_recently_used_first() {
        let (mut w, _) = window(1024);
        // The kernel filled all 64; it runs dry before we recycle them.
        let more = widen(&mut w);
        assert_eq!(w.size(), 128);
        assert_eq!(more, (64..128).collect::<Vec<_>>());
        // All 128 come back: each refills the window (128 given at most).
        for bid in 0..128 {
            assert!(w.recycled(bid));
        }
        assert_eq!(widen(&mut w).len(), 128);
        assert_eq!(w.size(), 256);
        // Up to every buffer, never more.
        for _ in 0..10 {
            widen(&mut w);
        }
        assert_eq!(w.size(), 1024);
        assert_eq!(w.given, 1024);
        assert!(w.free.is_empty());
    }

    #[test]
    fn a_window_quiet_for_a_while_narrows_and_keeps_its_hottest_buffers_out() {
        let (mut w, _) = window(1024);
        widen(&mut w);
        assert_eq!(w.size(), 128);
        for _ in 0..RELAX_AFTER_TICKS - 1 {
            w.tick();
        }
        assert_eq!(w.size(), 128);
        w.tick();
        assert_eq!(w.size(), 64);
        // The kernel still holds 128: the next 64 recycles wait on the stack, then each one
        // goes straight back again.
        for bid in 0..64 {
            assert!(!w.recycled(bid));
        }
        assert_eq!(w.free.last(), Some(&63));
        assert!(w.recycled(64));
        // Running dry hands over the most recently recycled first.
        assert_eq!(widen(&mut w)[0], 63);
        // Never below the smallest window.
        for _ in 0..10 * RELAX_AFTER_TICKS {
            w.tick();
        }
        assert_eq!(w.size(), MIN_WINDOW);
    }

    #[test]
    fn a_ring_smaller_than_the_window_hands_over_every_buffer() {
        let (mut w, first) = window(16);
        assert_eq!(first.len(), 16);
        assert!(widen(&mut w).is_empty());
        assert_eq!(w.size(), 16);
        for _ in 0..RELAX_AFTER_TICKS {
            w.tick();
        }
        assert_eq!(w.size(), 16);
        assert!(w.recycled(3));
    }
}

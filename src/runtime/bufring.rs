//! A provided buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a receive buffer only
//! when data arrives, so an idle connection pins no read buffer.
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
        };
        // SAFETY: the ring memory is page aligned, sized for `entries` entries, and stays mapped
        // until Drop, which runs after the io_uring that uses it is dropped (field order in Shard).
        unsafe { submitter.register_buf_ring_with_flags(ring as u64, entries, bgid, 0)? };
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
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

    /// Give buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
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

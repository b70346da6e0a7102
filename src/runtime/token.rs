//! `user_data` encoding of io_uring requests: what a completion is about.
//!
//! Layout: `op` in the top 8 bits; for connection operations a 24-bit generation and the 32-bit
//! connection slot (= its direct-descriptor index). A completion whose generation differs from
//! the slot's current one belongs to an earlier connection and is ignored.
//! `HandoffIn` carries a pointer (x86_64/aarch64 user pointers fit in 56 bits).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept into the fixed-file table.
    Accept = 1,
    /// Plain-fd accept used only while the table is full, to answer 503.
    AcceptOverflow,
    /// Single-shot receive of the HTTP upgrade request.
    RecvHandshake,
    /// Multishot receive of WebSocket frames.
    Recv,
    Send,
    /// Close of our direct descriptor (the connection's last operation).
    Close,
    /// Cancellation of a connection's pending operations.
    Cancel,
    /// shutdown(SHUT_WR) after our close frame or refusal. Counted as in flight like every
    /// operation on a slot: io_uring runs it from a worker thread and resolves the fixed slot
    /// only then, so the slot must not be released (and reused) before it completes.
    Shutdown,
    /// The periodic timer tick.
    Tick,
    /// Our MSG_RING that moves a connection to another core completed.
    HandoffSent,
    /// A connection moved here by another core (payload: pointer to the handoff record).
    HandoffIn,
    /// The eventfd that the control plane writes to wake this core.
    Wake,
    /// Write of a refusal on a plain fd (overflow path); slot field = the fd.
    OverflowSend,
    /// Close of a plain fd (overflow path).
    OverflowClose,
    /// Cancellation of the listener's accept (not about a connection).
    CancelAccept,
    /// A refused connection's descriptor installed in the process's table, to read its
    /// peer address for the refusal's log line (counted in flight like any operation).
    PeerFd,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Accept,
            2 => AcceptOverflow,
            3 => RecvHandshake,
            4 => Recv,
            5 => Send,
            6 => Close,
            7 => Cancel,
            8 => Shutdown,
            9 => Tick,
            10 => HandoffSent,
            11 => HandoffIn,
            12 => Wake,
            13 => OverflowSend,
            14 => OverflowClose,
            15 => CancelAccept,
            16 => PeerFd,
            _ => return None,
        })
    }
}

const GEN_MASK: u32 = 0x00FF_FFFF;
const PTR_MASK: u64 = (1 << 56) - 1;

/// Token of an operation on connection `slot` of generation `gen`.
pub fn conn(op: Op, slot: u32, gen: u32) -> u64 {
    (op as u64) << 56 | ((gen & GEN_MASK) as u64) << 32 | slot as u64
}

/// Token of an operation that is not about a connection.
pub fn plain(op: Op) -> u64 {
    (op as u64) << 56
}

/// Token carrying a pointer (handoff records).
pub fn pointer(op: Op, ptr: usize) -> u64 {
    debug_assert_eq!(ptr as u64 & !PTR_MASK, 0);
    (op as u64) << 56 | (ptr as u64 & PTR_MASK)
}

/// The decoded parts of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub slot: u32,
    pub gen: u32,
    pub ptr: usize,
}

pub fn decode(ud: u64) -> Option<Token> {
    let op = Op::from_u8((ud >> 56) as u8)?;
    Some(Token {
        op,
        slot: ud as u32,
        gen: ((ud >> 32) as u32) & GEN_MASK,
        ptr: (ud & PTR_MASK) as usize,
    })
}

/// Next generation for a reused slot (wraps within 24 bits).
pub fn next_gen(gen: u32) -> u32 {
    (gen + 1) & GEN_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = decode(conn(Op::Send, 19_999, 0xABCDEF)).unwrap();
        assert_eq!((t.op, t.slot, t.gen), (Op::Send, 19_999, 0xABCDEF));
        let b = Box::new(5u64);
        let p = Box::into_raw(b) as usize;
        let t = decode(pointer(Op::HandoffIn, p)).unwrap();
        assert_eq!(t.ptr, p);
        // SAFETY: p came from Box::into_raw just above and is reclaimed once.
        drop(unsafe { Box::from_raw(t.ptr as *mut u64) });
        assert_eq!(next_gen(GEN_MASK), 0);
        assert!(decode(0).is_none());
    }
}

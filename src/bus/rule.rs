//! The rule that proves a resume complete (pure; the proof is in `history`'s module docs).

/// One held message as the completeness rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub offset: u64,
    /// Its `Ringwire-Prev` header; `None` when absent or unreadable (not ours).
    pub prev: Option<u64>,
}

/// The completeness rule of the module docs, for a resume from `from` (an offset of the
/// current epoch, at most the stream's last): `held` are the user's messages after `from`
/// in order, `truncated` says more were held than returned, `user_last` is the user's newest
/// held message (looked at only when `held` is empty) and `first_seq` the stream's first
/// sequence, read after the messages.
pub fn is_complete(
    from: u64,
    held: &[Link],
    truncated: bool,
    user_last: Option<u64>,
    first_seq: u64,
) -> bool {
    if truncated {
        return false;
    }
    let Some(first) = held.first() else {
        return match user_last {
            Some(last) => last <= from,
            None => from.saturating_add(1) >= first_seq,
        };
    };
    let start = match first.prev {
        None => false,
        Some(0) => from.saturating_add(1) >= first_seq.min(first.offset),
        Some(prev) => prev <= from,
    };
    start && held.windows(2).all(|w| w[1].prev == Some(w[0].offset))
}

//! What a session asks its driver to do, in order.
use super::recovery::{Claim, ParkNamespace};
use crate::protocol::close::CloseReason;
use std::borrow::Cow;
use std::collections::VecDeque;

/// One thing for the driver to carry out. `T` is the driver's handle of a transport (a
/// WebSocket, or an HTTP connection carrying a polling request).
#[derive(Debug, PartialEq, Eq)]
pub enum Action<T> {
    /// One Engine.IO packet as a text frame on WebSocket `to` (within the socket's outbound
    /// limit, like any frame).
    Send { to: T, packet: Cow<'static, str> },
    /// Packets as text frames on WebSocket `to`, in order (the polling queue, flushed when the
    /// upgrade finishes).
    SendAll { to: T, packets: Vec<Box<str>> },
    /// Close WebSocket `to`: the `last` text frames (not subject to the outbound limit: a few
    /// bytes that must not turn the close into a slow-consumer one), then the close frame.
    Close {
        to: T,
        last: Vec<Box<str>>,
        why: CloseReason,
    },
    /// Answer polling GET `request` with this payload (JSONP-wrapped if it asked so).
    Answer { request: T, packets: Vec<Box<str>> },
    /// Keep polling GET `request` unanswered until `until` (ms), then call
    /// [`Session::release_held`](super::Session::release_held); if its connection goes away
    /// first, call [`Session::held_closed`](super::Session::held_closed).
    Hold { request: T, until: u64 },
    /// Packets wait for a held GET: call [`Session::flush`](super::Session::flush) once the
    /// input of this turn is handled (pushes of one turn go out in one answer).
    FlushLater,
    /// A client event for the listeners: its data (the JSON array, attachments filled in).
    Event { data: String },
    /// A CONNECT to `nsp` on a session with recovery: find out what `claim` restores (no
    /// claim: a fresh private session) and answer with
    /// [`Session::resumed`](super::Session::resumed) before anything else reaches the
    /// session (that is the seam between the missed events and live pushes).
    Resume { nsp: Box<str>, claim: Option<Claim> },
    /// The session ended abnormally (its client may come back for it): park these
    /// namespaces, with the socket's user and attributes, until the history ttl.
    Park(Vec<ParkNamespace>),
    /// The session's next deadline (ms): call
    /// [`Session::handle_timeout`](super::Session::handle_timeout) then. Replaces the one
    /// before.
    Schedule { at: u64 },
    /// Count this.
    Count(Stat),
    /// The session is no socket of the service any more (not counted, not pushed to): its
    /// login ended and it only hands its client its last packets.
    Retire,
    /// The session is over: drop it. Nothing follows.
    Free,
}

/// Counters a session moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// A packet for a polling client dropped: its queue was full.
    DroppedPacket,
    /// A polling session finished its upgrade to WebSocket.
    Upgrade,
    /// A malformed packet (the session is closed).
    ProtocolError,
    /// A server ping (Engine.IO v4 polling).
    PingSent,
    /// A polling client gone silent (ping interval plus ping timeout).
    ClosedIdle,
}

/// Inline room for the actions of one call: a push, a ping or a poll needs one to three.
const INLINE: usize = 6;

/// The actions of one or more session calls, in order. The first few are kept inline, so
/// that the common calls (a push, a pong, a held GET) allocate nothing here; the driver makes
/// one on its stack, passes it to the session and drains it with [`Actions::pop`].
pub struct Actions<T> {
    inline: [Option<Action<T>>; INLINE],
    /// Inline slots written, and read.
    written: usize,
    read: usize,
    spill: VecDeque<Action<T>>,
}

impl<T> Default for Actions<T> {
    fn default() -> Self {
        Actions {
            inline: Default::default(),
            written: 0,
            read: 0,
            spill: VecDeque::new(),
        }
    }
}

impl<T> Actions<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn push(&mut self, a: Action<T>) {
        if self.written < INLINE && self.spill.is_empty() {
            self.inline[self.written] = Some(a);
            self.written += 1;
        } else {
            self.spill.push_back(a);
        }
    }

    /// The next action, in the order they were made.
    pub fn pop(&mut self) -> Option<Action<T>> {
        if self.read < self.written {
            let a = self.inline[self.read].take();
            self.read += 1;
            if self.read == self.written && self.spill.is_empty() {
                (self.read, self.written) = (0, 0);
            }
            return a;
        }
        let a = self.spill.pop_front();
        if self.spill.is_empty() {
            (self.read, self.written) = (0, 0);
        }
        a
    }

    pub fn is_empty(&self) -> bool {
        self.read == self.written && self.spill.is_empty()
    }
}

impl<T> Iterator for Actions<T> {
    type Item = Action<T>;
    fn next(&mut self) -> Option<Action<T>> {
        self.pop()
    }
}

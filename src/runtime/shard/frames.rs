//! Bytes from an open connection: receives, TLS, WebSocket frames and what they ask for.
use super::{Shard, SCRATCH_KEEP};
use crate::config::EndpointKind;
use crate::protocol::{Event, MessageKind};
use crate::runtime::conn::{flag, ConnState};
use crate::runtime::stats::ShardStats;
use io_uring::cqueue;

impl Shard {
    /// Receive frames (multishot) on an open socket, or the peer's EOF while an answer is
    /// written.
    pub(in crate::runtime) fn arm_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.has(flag::CLOSE_SUBMITTED)
            || !matches!(c.state, ConnState::Open { .. } | ConnState::Responding)
            || c.has(flag::KEEP_ALIVE)
        {
            return;
        }
        self.ring.recv_frames(c, slot);
    }

    /// A receive found every provided buffer taken: re-armed at the end of the loop turn,
    /// once this turn's buffers are recycled, so a burst cannot spin on ENOBUFS. An open
    /// socket's widens the window of buffers (once a turn); a request's waits.
    pub(in crate::runtime) fn starve(&mut self, slot: u32, handshake: bool) {
        ShardStats::inc(&self.shared.stats[self.id].recv_no_buffers);
        self.frames_starved |= !handshake;
        let gen = self.conns[slot as usize].gen;
        self.outbox.starve(slot, gen, handshake);
    }

    pub(in crate::runtime) fn rearm_starved(&mut self) {
        if std::mem::take(&mut self.frames_starved) {
            self.ring.buffers_ran_dry();
        }
        // Half the window: leave room for sockets whose multishot receive is still armed.
        let budget = self
            .outbox
            .starved()
            .min(self.ring.buffers_window() as usize / 2);
        for _ in 0..budget {
            let Some((slot, gen, handshake)) = self.outbox.next_starved() else {
                break;
            };
            let c = &self.conns[slot as usize];
            if c.gen != gen || c.has(flag::CLOSE_SUBMITTED) {
                continue;
            }
            match (&c.state, handshake) {
                (ConnState::Handshake { .. } | ConnState::PollWait { .. }, true) => {
                    self.arm_recv_handshake(slot)
                }
                (ConnState::Open { .. } | ConnState::Responding, false) => self.arm_recv(slot),
                _ => {}
            }
        }
    }

    /// Decrypt a received buffer (recycled here) into a per-core plaintext buffer; handshake
    /// bytes rustls wants to answer are flushed at the end of the turn. `None`: the connection
    /// is closing (bad TLS, or the peer said close_notify).
    pub(in crate::runtime) fn decrypt(
        &mut self,
        slot: u32,
        bid: u16,
        len: usize,
    ) -> Option<Vec<u8>> {
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let c = &mut self.conns[slot as usize];
        let tls = c.tls.as_deref_mut()?;
        let result = crate::runtime::tls::receive(tls, self.ring.buffer(bid, len), &mut plain);
        let wants_write = tls.wants_write();
        self.ring.recycle(bid);
        match result {
            Ok(()) => {
                if wants_write {
                    self.mark_dirty(slot);
                }
                Some(plain)
            }
            Err(e) => {
                if let crate::runtime::tls::TlsInputError::Protocol(e) = &e {
                    tracing::debug!(core = self.id, slot, "TLS: {e}");
                    ShardStats::inc(&self.stats().tls_errors);
                }
                self.give_back_plain(plain);
                self.begin_close(slot);
                None
            }
        }
    }

    pub(in crate::runtime) fn give_back_plain(&mut self, mut p: Vec<u8>) {
        if p.capacity() > SCRATCH_KEEP {
            p = Vec::new();
        }
        self.tls_plain = p;
    }

    pub(in crate::runtime) fn on_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            let c = &mut self.conns[slot as usize];
            c.inflight -= 1;
            c.flags &= !flag::RECV_ARMED;
        }
        if res > 0 {
            let Some(bid) = cqueue::buffer_select(flags) else {
                return;
            };
            ShardStats::add(&self.shared.stats[self.id].received_bytes, res as u64);
            self.conns[slot as usize].last_rx = self.timers.now() as u32;
            let c = &self.conns[slot as usize];
            if c.tls.is_some() {
                // TLS: decrypted into a per-core buffer, then the same frame path.
                if let Some(mut p) = self.decrypt(slot, bid, res as usize) {
                    let c = &self.conns[slot as usize];
                    if !p.is_empty()
                        && matches!(c.state, ConnState::Open { .. })
                        && !c.has(flag::LINGER)
                        && !c.has(flag::CLOSE_AFTER_FLUSH)
                    {
                        self.on_frames(slot, &mut p);
                    }
                    self.give_back_plain(p);
                    if !more {
                        self.arm_recv(slot);
                    }
                }
                return;
            }
            if matches!(c.state, ConnState::Open { .. })
                && !c.has(flag::LINGER)
                && !c.has(flag::CLOSE_AFTER_FLUSH)
            {
                // Copy-free path: frames are decoded and unmasked in the provided buffer; the
                // buffer is temporarily detached from `self.ring` by pointer to satisfy borrows.
                let data: *mut [u8] = self.ring.buffer(bid, res as usize);
                // SAFETY: the buffer is ours until `recycle(bid)` below and nothing else touches
                // the buffer ring's memory for this bid in between.
                self.on_frames(slot, unsafe { &mut *data });
            }
            self.ring.recycle(bid);
            if !more {
                self.arm_recv(slot);
            }
        } else if res == -libc::ENOBUFS {
            self.starve(slot, false);
        } else {
            // EOF or error: the peer is gone (or finished its side of the close).
            self.begin_close(slot);
        }
    }

    /// Feed received bytes to the connection's protocol state machine and act on its events,
    /// in one pass: an echo is encoded straight from the received bytes, a Socket.IO packet or
    /// a text for the listeners is copied out for its handler (which needs the whole shard),
    /// and the frames the connection owes (Pong, close echo, the close of a protocol error)
    /// follow their event, ahead of what comes after.
    pub(in crate::runtime) fn on_frames(&mut self, slot: u32, data: &mut [u8]) {
        let c = &self.conns[slot as usize];
        let queued_before = c.queued_bytes();
        let ConnState::Open { endpoint, .. } = &c.state else {
            return;
        };
        let endpoint_index = *endpoint as usize;
        let kind = self.endpoint_kinds[endpoint_index];
        // Received text goes to the listeners through the endpoint's transcoder (the socket is
        // still registered even when closing: its close notification comes after).
        let listened = kind != EndpointKind::Socketio
            && !self.shared.listeners.is_empty()
            && self.shared.transcoders[endpoint_index].is_some();
        if kind == EndpointKind::Echo {
            // One reservation for the whole read: the echoes are no longer than the frames
            // they answer (a server frame's header is shorter by the mask).
            let c = &mut self.conns[slot as usize];
            self.outbox.pool.prepare(&mut c.out, data.len());
        }
        let mut closing = false;
        let mut messages = 0u64;
        let mut echoed = 0u64;
        let mut pos = 0usize;
        loop {
            let c = &mut self.conns[slot as usize];
            let ConnState::Open { ws, .. } = &mut c.state else {
                break;
            };
            let mut rx = ws.read(&mut data[pos..], &mut self.zlib);
            // A payload copied to `scratch` for a handler: whether it is binary.
            let mut handoff = None;
            while let Some(next) = rx.next_event_with_sender() {
                match next {
                    Ok((Event::Message(k, payload), mut tx)) => {
                        if kind != EndpointKind::Socketio {
                            messages += 1;
                        }
                        if kind == EndpointKind::Echo {
                            tx.encode_message(&mut c.out, k, payload);
                            echoed += 1;
                        }
                        if kind == EndpointKind::Socketio || (listened && k == MessageKind::Text) {
                            self.scratch.clear();
                            self.scratch.extend_from_slice(payload);
                            handoff = Some(k == MessageKind::Binary);
                        }
                    }
                    Ok((Event::Close { code, .. }, _)) => {
                        self.shared.stats[self.id].closed(true, code);
                        closing = true;
                    }
                    // A Ping's Pong is owed (written below); a Pong needs nothing.
                    Ok(_) => {}
                    Err(err) => {
                        ShardStats::inc(&self.shared.stats[self.id].protocol_errors);
                        self.shared.stats[self.id].closed(false, Some(err.close_code()));
                        tracing::debug!(core = self.id, slot, "protocol error: {err:?} ({err})");
                        closing = true;
                    }
                }
                // What the connection owes goes right after its event: the replies to the
                // messages before an error stay ahead of the close frame.
                rx.poll_transmit(&mut c.out);
                if handoff.is_some() {
                    break;
                }
            }
            pos += rx.consumed();
            drop(rx);
            let Some(binary) = handoff else {
                break;
            };
            self.hand_over_received(slot, kind, endpoint_index, binary);
            // The handler may have closed the socket: nothing more is read then.
            let c = &self.conns[slot as usize];
            if c.has(flag::CLOSE_AFTER_FLUSH) || !matches!(c.state, ConnState::Open { .. }) {
                break;
            }
        }
        let stats = &self.shared.stats[self.id];
        ShardStats::add(&stats.messages_in, messages);
        ShardStats::add(&stats.messages_out, echoed);
        let c = &mut self.conns[slot as usize];
        if c.out.is_empty() && c.out.capacity() > 0 {
            // Nothing to write (a message still arriving): a waiting socket holds no buffer.
            self.outbox.pool.give(std::mem::take(&mut c.out));
        }
        if closing {
            self.close_after_flush(slot);
        } else if c.has(flag::CLOSE_AFTER_FLUSH) || !matches!(c.state, ConnState::Open { .. }) {
            // A Socket.IO handler closed it.
        } else if c.over_outbound_limit(queued_before, self.limits.max_outbound_bytes) {
            self.close_slow_consumer(slot);
        } else {
            self.mark_dirty(slot);
        }
    }

    /// A received message copied to `scratch` goes to its handler: Socket.IO frames are
    /// Engine.IO packets; text on other endpoints goes to the listeners through the
    /// endpoint's transcoder.
    fn hand_over_received(&mut self, slot: u32, kind: EndpointKind, endpoint: usize, binary: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        if kind == EndpointKind::Socketio {
            self.sio_ws_frame(slot, binary, &scratch);
        } else if let Some(transcoder) = self.shared.transcoders[endpoint].as_ref() {
            // Validated UTF-8 by the protocol core.
            let text = std::str::from_utf8(&scratch).unwrap_or("");
            if let Some(text) = transcoder.inbound(text) {
                self.notify(slot, |l, info| l.on_message(info, &text));
            }
        }
        scratch.clear();
        scratch.shrink_to(SCRATCH_KEEP);
        self.scratch = scratch;
    }
}

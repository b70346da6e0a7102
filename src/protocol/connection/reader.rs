//! The reader a connection lends for one received chunk: it hands out events one at a time
//! (payloads borrowed from the chunk, the reassembly buffer or the inflater's output) and
//! what the connection owes in reply.
use super::*;

/// Where the payload of the next event lies.
#[derive(Debug, Clone, Copy)]
pub(super) enum Src {
    /// `data[start..end]` of the current read.
    Data(usize, usize),
    /// The message region of the connection's buffer.
    Buf,
    /// `ctrl[start..end]` of the reader (a control frame that spanned reads).
    Ctrl(usize, usize),
}

impl Src {
    /// The same place without its first `n` bytes (a close payload's code).
    pub(super) fn skip(self, n: usize) -> Src {
        match self {
            Src::Data(s, e) => Src::Data((s + n).min(e), e),
            Src::Ctrl(s, e) => Src::Ctrl((s + n).min(e), e),
            Src::Buf => Src::Buf,
        }
    }
}

/// The next event, as positions (the borrow is made by the reader).
#[derive(Debug, Clone, Copy)]
pub(super) enum Found {
    Message(MessageKind, Src),
    Ping(Src),
    Pong(Src),
    /// The code and where the reason is.
    Close(Option<u16>, Src),
}

/// Hands out the events of one chunk of received bytes; made by [`WsConnection::read`].
/// Dropping it early is fine: the connection keeps its state, and a new reader on the
/// unconsumed rest of the chunk carries on.
pub struct Reader<'a> {
    pub(super) conn: &'a mut WsConnection,
    pub(super) data: &'a mut [u8],
    /// Bytes of `data` consumed.
    pub(super) pos: usize,
    pub(super) zlib: &'a mut SharedDeflate,
    /// The last event lent the buffered message: free it before reading on.
    pub(super) lent: bool,
    /// A control payload that spanned reads, copied out of the connection's buffer.
    pub(super) ctrl: [u8; MAX_CONTROL_PAYLOAD],
}

/// Encodes messages on the connection while an event of its [`Reader`] is borrowed.
pub struct Sender<'a> {
    pub(super) deflate: Option<&'a mut DeflateState>,
    pub(super) zlib: &'a mut SharedDeflate,
}

impl Sender<'_> {
    /// [`WsConnection::encode_message`], for the connection being read.
    pub fn encode_message(&mut self, out: &mut Vec<u8>, kind: MessageKind, payload: &[u8]) {
        encode_message_with(self.deflate.as_deref_mut(), self.zlib, out, kind, payload);
    }
}

/// The bytes at `src`.
#[inline]
pub(super) fn payload<'s>(src: Src, data: &'s [u8], message: &'s [u8], ctrl: &'s [u8]) -> &'s [u8] {
    let bytes = match src {
        Src::Data(s, e) => data.get(s..e),
        Src::Buf => Some(message),
        Src::Ctrl(s, e) => ctrl.get(s..e),
    };
    bytes.unwrap_or_default()
}

impl<'a> Reader<'a> {
    /// The next message or control frame of the chunk, in order; `None` once the chunk is
    /// consumed (a partial frame is kept for the next read) or the connection is closing.
    /// `Some(Err(_))` once, for input that breaks the protocol (the close frame for it is
    /// queued; see [`WsConnection`] for the call order).
    #[inline]
    pub fn next_event(&mut self) -> Option<Result<Event<'_>, ProtocolError>> {
        self.next_event_with_sender()
            .map(|r| r.map(|(event, _)| event))
    }

    /// [`next_event`](Self::next_event), with a [`Sender`] to answer on the connection
    /// while the event's payload is borrowed (an echo).
    #[inline]
    pub fn next_event_with_sender(
        &mut self,
    ) -> Option<Result<(Event<'_>, Sender<'_>), ProtocolError>> {
        if self.lent {
            self.lent = false;
            self.conn.release_delivered();
        }
        let found = match self.step() {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(err) => {
                self.conn.fail(err);
                return Some(Err(err));
            }
        };
        self.lent = matches!(found, Found::Message(_, Src::Buf));
        let Reader {
            conn,
            data,
            zlib,
            ctrl,
            ..
        } = self;
        let WsConnection {
            buf, deflate, owed, ..
        } = &mut **conn;
        let message = buf
            .get(..buf.len() - usize::from(*owed))
            .unwrap_or_default();
        let (data, ctrl) = (&**data, &ctrl[..]);
        let bytes = |src: Src| payload(src, data, message, ctrl);
        let event = match found {
            Found::Message(kind, src) => Event::Message(kind, bytes(src)),
            Found::Ping(src) => Event::Ping(bytes(src)),
            Found::Pong(src) => Event::Pong(bytes(src)),
            Found::Close(code, src) => Event::Close {
                code,
                // Validated when the frame was read.
                reason: std::str::from_utf8(bytes(src)).unwrap_or_default(),
            },
        };
        let sender = Sender {
            deflate: deflate.as_deref_mut(),
            zlib,
        };
        Some(Ok((event, sender)))
    }

    /// Finds the next event in `data[pos..]`, advancing `pos`.
    #[inline]
    fn step(&mut self) -> Result<Option<Found>, ProtocolError> {
        loop {
            let Reader {
                conn: ws,
                data,
                pos,
                ..
            } = self;
            match ws.stage {
                Stage::Closed => return Ok(None),
                Stage::Header => {
                    if *pos >= data.len() {
                        return Ok(None);
                    }
                    let h = if ws.hdr_len == 0 {
                        match parse_header(&data[*pos..])? {
                            Some(h) => {
                                *pos += h.header_len;
                                h
                            }
                            None => {
                                // parse_header needs at most 14 bytes.
                                let rest = &data[*pos..];
                                let n = rest.len().min(MAX_HEADER_LEN);
                                ws.hdr[..n].copy_from_slice(&rest[..n]);
                                ws.hdr_len = n as u8;
                                *pos += n;
                                return Ok(None);
                            }
                        }
                    } else {
                        let have = usize::from(ws.hdr_len);
                        let take = (MAX_HEADER_LEN - have).min(data.len() - *pos);
                        ws.hdr[have..have + take].copy_from_slice(&data[*pos..*pos + take]);
                        match parse_header(&ws.hdr[..have + take])? {
                            Some(h) => {
                                *pos += h.header_len.saturating_sub(have);
                                ws.hdr_len = 0;
                                h
                            }
                            None => {
                                ws.hdr_len = (have + take) as u8;
                                *pos += take;
                                continue;
                            }
                        }
                    };
                    ws.begin_frame(&h)?;
                    // Fast path: the whole payload is here and needs no buffering.
                    if h.payload_len <= (data.len() - *pos) as u64 {
                        let start = *pos;
                        let end = start + h.payload_len as usize;
                        match ws.stage {
                            Stage::Control { op, .. } => {
                                let p = &mut data[start..end];
                                apply_mask(p, ws.mask, 0);
                                *pos = end;
                                ws.stage = Stage::Header;
                                return ws.control(op, p, Src::Data(start, end)).map(Some);
                            }
                            Stage::Data { fin: true }
                                if h.opcode != OpCode::Continuation && !ws.compressed =>
                            {
                                let p = &mut data[start..end];
                                apply_mask(p, ws.mask, 0);
                                *pos = end;
                                ws.stage = Stage::Header;
                                let kind = ws.msg.take().unwrap_or(MessageKind::Binary);
                                if kind == MessageKind::Text && !crate::protocol::utf8::is_utf8(p) {
                                    return Err(ProtocolError::InvalidUtf8);
                                }
                                return Ok(Some(Found::Message(kind, Src::Data(start, end))));
                            }
                            _ => {}
                        }
                    }
                }
                _ => match self.step_payload()? {
                    Some(found) => return Ok(Some(found)),
                    None if self.conn.stage == Stage::Header => {}
                    None => return Ok(None),
                },
            }
        }
    }

    /// In the payload of a frame that did not arrive whole: buffers (or inflates) what is
    /// there. An event when the frame completes a message or is a control frame; `None`
    /// when the data is consumed or the frame ended without an event (back to `Header`).
    #[inline(never)]
    fn step_payload(&mut self) -> Result<Option<Found>, ProtocolError> {
        let Reader {
            conn: ws,
            data,
            pos,
            zlib,
            ctrl,
            ..
        } = self;
        match ws.stage {
            Stage::Data { fin } => {
                let n = ws.remaining.min((data.len() - *pos) as u64) as usize;
                if n == 0 && ws.remaining > 0 {
                    return Ok(None);
                }
                let chunk = &mut data[*pos..*pos + n];
                *pos += n;
                ws.unmask(chunk);
                ws.with_owed_lifted(|c| c.data_chunk(chunk, zlib))?;
                if ws.remaining == 0 {
                    ws.stage = Stage::Header;
                    if fin {
                        let kind = ws.with_owed_lifted(|c| c.finish_message(zlib))?;
                        return Ok(Some(Found::Message(kind, Src::Buf)));
                    }
                }
            }
            Stage::Control { op, len } => {
                let n = ws.remaining.min((data.len() - *pos) as u64) as usize;
                if n == 0 && ws.remaining > 0 {
                    return Ok(None);
                }
                // The whole rest of the control payload (≤ 125 bytes).
                let rest = ws.remaining as usize;
                let chunk = &mut data[*pos..*pos + n];
                *pos += n;
                ws.unmask(chunk);
                ws.with_owed_lifted(|c| {
                    c.buf.reserve_exact(rest);
                    c.buf.extend_from_slice(chunk);
                });
                if ws.remaining == 0 {
                    ws.stage = Stage::Header;
                    // Move the payload out of the buffer, into the reader.
                    let end = ws.buf.len() - usize::from(ws.owed);
                    let start = end.saturating_sub(usize::from(len));
                    let n = end - start;
                    ctrl[..n].copy_from_slice(&ws.buf[start..end]);
                    ws.buf.drain(start..end);
                    return ws.control(op, &ctrl[..n], Src::Ctrl(0, n)).map(Some);
                }
            }
            Stage::Header | Stage::Closed => {}
        }
        Ok(None)
    }

    /// Appends the frames the connection owes (see [`WsConnection::poll_transmit`]).
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        self.conn.poll_transmit(out)
    }

    /// Bytes of the chunk consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// True once a Close was received or the input was rejected.
    pub fn is_closing(&self) -> bool {
        self.conn.is_closing()
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // A message delivered from the buffer is not kept until the next read.
        if self.lent {
            self.conn.release_delivered();
        }
    }
}

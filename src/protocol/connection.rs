//! The per-connection WebSocket state machine (after the upgrade).
//!
//! [`WsConnection::receive`] takes the bytes just read from the socket,
//! unmasks them in place and reports complete messages and control frames
//! through a callback, in order. [`WsConnection::encode_message`] and the
//! `encode_*` helpers append server frames to an output buffer.
//!
//! Zero copy where possible: an unfragmented, uncompressed data frame (or a
//! control frame) that lies entirely inside one `receive` call is delivered
//! as a slice of the caller's buffer. Only a message that spans calls, is
//! fragmented, or is compressed is accumulated in an internal `Vec` that
//! exists only while needed (buffers above [`RETAIN_CAPACITY`] are freed
//! after the message). A partial frame header (≤ 14 bytes) is kept inline.
//!
//! Memory bounds: a frame longer than `max_frame_bytes` or a message
//! (after inflation) longer than `max_message_bytes` fails the connection
//! with 1009 before its payload is buffered; the message buffer never
//! exceeds `max_message_bytes + 125` bytes of capacity (+1 while inflating).
//!
//! Outgoing compression: messages of at least
//! [`DEFAULT_MIN_COMPRESS_BYTES`](super::deflate::DEFAULT_MIN_COMPRESS_BYTES) (64) bytes are compressed when
//! permessage-deflate was negotiated; change it per connection with
//! [`WsConnection::set_min_compress_bytes`] (e.g. from
//! `DeflateConfig::min_compress_bytes`).
//!
//! (De)compressors: [`WsConnection::receive`] and
//! [`WsConnection::encode_message`] take the caller's [`SharedDeflate`]
//! (one per core). Under `server_no_context_takeover` messages are
//! compressed with its compressor; under `client_no_context_takeover` an
//! inflater is borrowed from it for one received message. Only with
//! context takeover does a connection own zlib state between messages.

use super::deflate::{DeflateParams, DeflateState, SharedDeflate};
use super::error::ProtocolError;
use super::frame::{
    self, header_len_for, parse_header, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};
use super::mask::{apply_mask, rotate_mask};
use super::utf8::Utf8Validator;

/// Message buffers with at most this capacity are kept between messages;
/// bigger ones are freed.
pub const RETAIN_CAPACITY: usize = 1024;

/// Per-connection size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Largest accepted frame payload (default 1 MiB).
    pub max_frame_bytes: u64,
    /// Largest accepted message, after decompression (default 1 MiB).
    pub max_message_bytes: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
        }
    }
}

/// Kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

/// What [`WsConnection::receive`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message; `Text` payloads are valid UTF-8.
    Message(MessageKind, &'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer's Close (code validated, reason valid UTF-8). No further
    /// events follow.
    Close {
        code: Option<u16>,
        reason: &'a str,
    },
}

/// Where the parser is in the frame stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for (the rest of) a frame header.
    Header,
    /// Inside the payload of a data frame.
    Data { fin: bool },
    /// Inside the payload of a control frame of `len` bytes, buffered at
    /// the end of `buf`.
    Control { op: OpCode, len: u8 },
    /// Close received or protocol error: input is ignored.
    Closed,
}

/// One WebSocket connection's receive state (and deflate context).
pub struct WsConnection {
    /// Message (and straddling control frame) accumulation buffer.
    buf: Vec<u8>,
    deflate: Option<Box<DeflateState>>,
    limits: WsLimits,
    /// Payload bytes left in the current frame.
    remaining: u64,
    /// Partial frame header carried over between calls.
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: u8,
    /// Masking key, rotated so that `mask[0]` applies to the next byte.
    mask: [u8; 4],
    utf8: Utf8Validator,
    stage: Stage,
    /// Data message in progress (set by its first frame).
    msg: Option<MessageKind>,
    /// The message in progress is compressed (RSV1 on its first frame).
    compressed: bool,
}

fn valid_close_code(code: u16) -> bool {
    // RFC 6455 7.4 + IANA registry (1012-1014 are registered).
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Validates a Close payload.
fn parse_close(p: &[u8]) -> Result<(Option<u16>, &str), ProtocolError> {
    match p {
        [] => Ok((None, "")),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Reports one complete control frame; returns true for Close.
fn deliver_control(
    op: OpCode,
    p: &[u8],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<bool, ProtocolError> {
    match op {
        OpCode::Ping => on_event(Event::Ping(p)),
        OpCode::Pong => on_event(Event::Pong(p)),
        _ => {
            let (code, reason) = parse_close(p)?;
            on_event(Event::Close { code, reason });
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes room for `additional` more bytes, growing geometrically but
/// never past `cap` (unless `len + additional` itself is larger).
fn reserve_bounded(buf: &mut Vec<u8>, additional: usize, cap: usize) {
    if buf.capacity() - buf.len() >= additional {
        return;
    }
    let needed = buf.len() + additional;
    let target = needed
        .max(buf.capacity().saturating_mul(2).min(cap))
        .max(256.min(cap));
    buf.reserve_exact(target - buf.len());
}

impl WsConnection {
    /// A connection after a successful upgrade; `deflate` = the negotiated
    /// permessage-deflate params, if any.
    pub fn new(limits: WsLimits, deflate: Option<DeflateParams>) -> Self {
        WsConnection {
            buf: Vec::new(),
            deflate: deflate.map(|p| Box::new(DeflateState::new(p))),
            limits,
            remaining: 0,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            mask: [0; 4],
            utf8: Utf8Validator::new(),
            stage: Stage::Header,
            msg: None,
            compressed: false,
        }
    }

    /// Outgoing messages shorter than this are not compressed (default
    /// [`DEFAULT_MIN_COMPRESS_BYTES`](super::deflate::DEFAULT_MIN_COMPRESS_BYTES)). No effect without deflate.
    pub fn set_min_compress_bytes(&mut self, n: usize) {
        if let Some(d) = self.deflate.as_mut() {
            d.min_compress_bytes = n;
        }
    }

    /// The negotiated permessage-deflate params, if any.
    pub fn deflate_params(&self) -> Option<DeflateParams> {
        self.deflate.as_ref().map(|d| d.params)
    }

    /// True when this connection owns an inflater or a compressor between
    /// messages (only with context takeover, or mid-message).
    pub fn holds_zlib_state(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.holds_zlib_state())
    }

    /// True once a Close was received or the input was rejected.
    pub fn is_closing(&self) -> bool {
        self.stage == Stage::Closed
    }

    /// Feeds received bytes (unmasked in place) and reports every complete
    /// message / control frame to `on_event`, in order. After a Close event
    /// or an error, further input is ignored (`Ok(())`). On error the
    /// caller should send `encode_close(err.close_code(), err.reason())`
    /// and close the socket.
    pub fn receive(
        &mut self,
        data: &mut [u8],
        zlib: &mut SharedDeflate,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let r = self.receive_inner(data, zlib, on_event);
        if r.is_err() {
            self.shut();
        }
        r
    }

    /// Enters the terminal state and frees receive-side memory.
    fn shut(&mut self) {
        self.stage = Stage::Closed;
        self.buf = Vec::new();
        self.msg = None;
        if let Some(d) = self.deflate.as_mut() {
            d.abort_inflate();
        }
    }

    fn receive_inner(
        &mut self,
        data: &mut [u8],
        zlib: &mut SharedDeflate,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let mut pos = 0usize;
        loop {
            match self.stage {
                Stage::Closed => return Ok(()),
                Stage::Header => {
                    if pos >= data.len() {
                        return Ok(());
                    }
                    let h = if self.hdr_len == 0 {
                        match parse_header(&data[pos..])? {
                            Some(h) => {
                                pos += h.header_len;
                                h
                            }
                            None => {
                                // parse_header needs at most 14 bytes.
                                let rest = &data[pos..];
                                let n = rest.len().min(MAX_HEADER_LEN);
                                self.hdr[..n].copy_from_slice(&rest[..n]);
                                self.hdr_len = n as u8;
                                return Ok(());
                            }
                        }
                    } else {
                        let have = usize::from(self.hdr_len);
                        let take = (MAX_HEADER_LEN - have).min(data.len() - pos);
                        self.hdr[have..have + take].copy_from_slice(&data[pos..pos + take]);
                        match parse_header(&self.hdr[..have + take])? {
                            Some(h) => {
                                pos += h.header_len.saturating_sub(have);
                                self.hdr_len = 0;
                                h
                            }
                            None => {
                                self.hdr_len = (have + take) as u8;
                                pos += take;
                                continue;
                            }
                        }
                    };
                    self.begin_frame(&h)?;
                    // Fast path: the whole payload is here and needs no buffering.
                    if h.payload_len <= (data.len() - pos) as u64 {
                        let end = pos + h.payload_len as usize;
                        match self.stage {
                            Stage::Control { op, .. } => {
                                let p = &mut data[pos..end];
                                apply_mask(p, self.mask, 0);
                                pos = end;
                                self.stage = Stage::Header;
                                if deliver_control(op, p, on_event)? {
                                    self.shut();
                                }
                            }
                            Stage::Data { fin: true }
                                if h.opcode != OpCode::Continuation && !self.compressed =>
                            {
                                let p = &mut data[pos..end];
                                apply_mask(p, self.mask, 0);
                                pos = end;
                                self.stage = Stage::Header;
                                let kind = self.msg.take().unwrap_or(MessageKind::Binary);
                                if kind == MessageKind::Text && std::str::from_utf8(p).is_err() {
                                    return Err(ProtocolError::InvalidUtf8);
                                }
                                on_event(Event::Message(kind, p));
                            }
                            _ => {}
                        }
                    }
                }
                Stage::Data { fin } => {
                    let n = self.remaining.min((data.len() - pos) as u64) as usize;
                    if n == 0 && self.remaining > 0 {
                        return Ok(());
                    }
                    let chunk = &mut data[pos..pos + n];
                    pos += n;
                    self.unmask(chunk);
                    self.data_chunk(chunk, zlib)?;
                    if self.remaining == 0 {
                        self.stage = Stage::Header;
                        if fin {
                            self.finish_message(zlib, on_event)?;
                        }
                    }
                }
                Stage::Control { op, len } => {
                    let n = self.remaining.min((data.len() - pos) as u64) as usize;
                    if n == 0 && self.remaining > 0 {
                        return Ok(());
                    }
                    // The whole rest of the control payload (≤ 125 bytes).
                    self.buf.reserve_exact(self.remaining as usize);
                    let chunk = &mut data[pos..pos + n];
                    pos += n;
                    self.unmask(chunk);
                    self.buf.extend_from_slice(chunk);
                    if self.remaining == 0 {
                        self.stage = Stage::Header;
                        let start = self.buf.len() - usize::from(len);
                        let closed = deliver_control(op, &self.buf[start..], on_event)?;
                        self.buf.truncate(start);
                        if closed {
                            self.shut();
                        } else if self.msg.is_none() {
                            self.release_buf();
                        }
                    }
                }
            }
        }
    }

    /// Validates a new frame header against the connection state and
    /// enters its payload stage.
    fn begin_frame(&mut self, h: &FrameHeader) -> Result<(), ProtocolError> {
        let mask = h.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        if h.opcode.is_control() {
            if h.rsv1 {
                return Err(ProtocolError::ReservedBits);
            }
            // parse_header guarantees len <= 125.
            self.stage = Stage::Control {
                op: h.opcode,
                len: h.payload_len.min(MAX_CONTROL_PAYLOAD as u64) as u8,
            };
        } else {
            if h.payload_len > self.limits.max_frame_bytes {
                return Err(ProtocolError::FrameTooBig);
            }
            match h.opcode {
                OpCode::Continuation => {
                    if self.msg.is_none() {
                        return Err(ProtocolError::UnexpectedContinuation);
                    }
                    if h.rsv1 {
                        return Err(ProtocolError::ReservedBits);
                    }
                }
                _ => {
                    if self.msg.is_some() {
                        return Err(ProtocolError::ExpectedContinuation);
                    }
                    if h.rsv1 && self.deflate.is_none() {
                        return Err(ProtocolError::ReservedBits);
                    }
                    self.msg = Some(if h.opcode == OpCode::Text {
                        MessageKind::Text
                    } else {
                        MessageKind::Binary
                    });
                    self.compressed = h.rsv1;
                }
            }
            if !self.compressed
                && (self.buf.len() as u64).saturating_add(h.payload_len)
                    > self.limits.max_message_bytes as u64
            {
                return Err(ProtocolError::MessageTooBig);
            }
            self.stage = Stage::Data { fin: h.fin };
        }
        self.mask = mask;
        self.remaining = h.payload_len;
        Ok(())
    }

    /// Unmasks the next `chunk.len()` payload bytes of the current frame.
    fn unmask(&mut self, chunk: &mut [u8]) {
        apply_mask(chunk, self.mask, 0);
        self.mask = rotate_mask(self.mask, chunk.len());
        self.remaining -= chunk.len() as u64;
    }

    /// Appends (or inflates) a piece of the current data message.
    fn data_chunk(&mut self, chunk: &[u8], zlib: &mut SharedDeflate) -> Result<(), ProtocolError> {
        let text = self.msg == Some(MessageKind::Text);
        if self.compressed {
            if chunk.is_empty() {
                return Ok(());
            }
            let before = self.buf.len();
            let d = self.deflate.as_mut().ok_or(ProtocolError::ReservedBits)?;
            d.inflate(zlib, chunk, &mut self.buf, self.limits.max_message_bytes)?;
            if text {
                self.utf8
                    .feed(&self.buf[before..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        } else {
            if text {
                self.utf8
                    .feed(chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            // begin_frame checked the message limit for the whole frame.
            reserve_bounded(&mut self.buf, chunk.len(), self.limits.max_message_bytes);
            self.buf.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// The final frame of a buffered message is complete: deliver it.
    fn finish_message(
        &mut self,
        zlib: &mut SharedDeflate,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let kind = self.msg.take().unwrap_or(MessageKind::Binary);
        if self.compressed {
            self.compressed = false;
            let before = self.buf.len();
            let d = self.deflate.as_mut().ok_or(ProtocolError::ReservedBits)?;
            d.finish_inflate(zlib, &mut self.buf, self.limits.max_message_bytes)?;
            if kind == MessageKind::Text {
                self.utf8
                    .feed(&self.buf[before..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        if kind == MessageKind::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        on_event(Event::Message(kind, &self.buf));
        self.release_buf();
        Ok(())
    }

    /// Empties the buffer; frees it if it grew beyond [`RETAIN_CAPACITY`].
    fn release_buf(&mut self) {
        if self.buf.capacity() > RETAIN_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Appends one complete data message (single frame, unmasked). When
    /// permessage-deflate was negotiated and `payload.len() >=
    /// min_compress_bytes`, the payload is compressed (RSV1 set), with
    /// `zlib`'s compressor under `server_no_context_takeover`.
    pub fn encode_message(
        &mut self,
        zlib: &mut SharedDeflate,
        out: &mut Vec<u8>,
        kind: MessageKind,
        payload: &[u8],
    ) {
        let op = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        if let Some(d) = self.deflate.as_mut() {
            if payload.len() >= d.min_compress_bytes {
                let start = out.len();
                // Guess the header size from the input length; fix up below.
                let guess = header_len_for(payload.len() as u64);
                out.extend_from_slice(&[0u8; 10][..guess]);
                if d.compress(zlib, payload, out).is_ok() {
                    let clen = out.len() - start - guess;
                    let mut h = [0u8; 10];
                    let hl = frame::write_header(&mut h, true, true, op, clen as u64);
                    if hl < guess {
                        out.copy_within(start + guess.., start + hl);
                        out.truncate(start + hl + clen);
                    } else if hl > guess {
                        out.resize(out.len() + (hl - guess), 0);
                        out.copy_within(start + guess..start + guess + clen, start + hl);
                    }
                    out[start..start + hl].copy_from_slice(&h[..hl]);
                    return;
                }
                // Compressor failure (never expected): it was reset, which
                // keeps the peer in sync; send this one uncompressed.
                out.truncate(start);
            }
        }
        frame::encode_frame(out, true, false, op, payload);
    }

    /// Appends a control frame (Ping/Pong); the payload is truncated to
    /// 125 bytes.
    pub fn encode_control(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
        let p = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        frame::encode_frame(out, true, false, opcode, p);
    }

    /// Appends a Close frame; `reason` is truncated to 123 bytes at a char
    /// boundary. Code 1005 ("no status") sends an empty Close payload.
    pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
        if code == 1005 {
            frame::encode_frame(out, true, false, OpCode::Close, &[]);
            return;
        }
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut p = [0u8; MAX_CONTROL_PAYLOAD];
        p[..2].copy_from_slice(&code.to_be_bytes());
        p[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        frame::encode_frame(out, true, false, OpCode::Close, &p[..2 + end]);
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;

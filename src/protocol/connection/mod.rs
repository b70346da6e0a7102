//! The per-connection WebSocket state machine (after the upgrade).
//!
//! [`WsConnection::read`] takes the bytes just read from the socket and returns a
//! [`Reader`] that unmasks them in place and hands out complete messages and control frames
//! one at a time ([`Reader::next_event`]), in order. The connection queues the frames the
//! protocol obliges it to send (a Pong for each Ping, the echo of a Close, the close of a
//! protocol error); the caller drains them with [`Reader::poll_transmit`] or
//! [`WsConnection::poll_transmit`]. [`WsConnection::encode_message`] and the `encode_*`
//! helpers append the application's frames to an output buffer. The call order is on
//! [`WsConnection`].
//!
//! Zero copy where possible: an unfragmented, uncompressed data frame (or a
//! control frame) that lies entirely inside one read is delivered
//! as a slice of the caller's buffer. Only a message that spans reads, is
//! fragmented, or is compressed is accumulated in an internal `Vec` that
//! exists only while needed (buffers above [`RETAIN_CAPACITY`] are freed
//! after the message). A partial frame header (≤ 14 bytes) is kept inline; a control
//! frame that spans reads is delivered from the reader's own 125 bytes.
//!
//! Memory bounds: a frame longer than `max_frame_bytes` or a message
//! (after inflation) longer than `max_message_bytes` fails the connection
//! with 1009 before its payload is buffered; the message buffer never
//! exceeds `max_message_bytes + 125` bytes of capacity (+1 while inflating, + 127 for a
//! Pong the caller has not drained yet).
//!
//! Outgoing compression: messages of at least
//! [`DEFAULT_MIN_COMPRESS_BYTES`](super::deflate::DEFAULT_MIN_COMPRESS_BYTES) (64) bytes are compressed when
//! permessage-deflate was negotiated; change it per connection with
//! [`WsConnection::set_min_compress_bytes`] (e.g. from
//! `DeflateConfig::min_compress_bytes`).
//!
//! (De)compressors: [`WsConnection::read`] and
//! [`WsConnection::encode_message`] take the caller's [`SharedDeflate`]
//! (one per core). Under `server_no_context_takeover` messages are
//! compressed with its compressor; under `client_no_context_takeover` an
//! inflater is borrowed from it for one received message. Only with
//! context takeover does a connection own zlib state between messages.

use super::close::CloseReason;
use super::deflate::{DeflateParams, DeflateState, SharedDeflate};
use super::error::ProtocolError;
use super::frame::{
    self, header_len_for, parse_header, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};
use super::mask::{apply_mask, rotate_mask};
use super::utf8::Utf8Validator;

mod reader;
mod shared_frame;
use reader::{Found, Src};
pub use reader::{Reader, Sender};
pub use shared_frame::FrameOnce;

/// Message buffers with at most this capacity are kept between messages;
/// bigger ones are freed.
pub const RETAIN_CAPACITY: usize = 1024;

/// The largest encoded Pong (2-byte header, 125-byte payload).
const MAX_PONG_FRAME: usize = 2 + MAX_CONTROL_PAYLOAD;

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

/// What [`Reader::next_event`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message; `Text` payloads are valid UTF-8.
    Message(MessageKind, &'a [u8]),
    /// A Ping; its Pong is queued.
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer's Close (code validated, reason valid UTF-8); its echo is queued. No
    /// further events follow.
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
    /// the end of the message region of `buf`.
    Control { op: OpCode, len: u8 },
    /// Close received or protocol error: input is ignored.
    Closed,
}

/// One WebSocket connection's receive state (and deflate context), polled for events in
/// the manner of quinn's `Connection`: bytes in, events out, and the frames the protocol
/// obliges it to send queued inside until the caller takes them.
///
/// # Call order
///
/// 1. For each chunk of bytes received from the socket, `let mut rx = ws.read(bytes, zlib)`
///    (the bytes are unmasked in place).
/// 2. `rx.next_event()` until it returns `None` (all of the chunk is consumed, or the
///    connection is closing). Each event's payload borrows the chunk, the connection's
///    reassembly buffer or the reader, so it lives until the next call on `rx`. To answer
///    a message while its payload is borrowed (an echo), use
///    [`Reader::next_event_with_sender`] and [`Sender::encode_message`]; the reader can
///    also be dropped early and a new one made on the rest of the chunk
///    (`&mut bytes[rx.consumed()..]`).
/// 3. After each event (or at the latest once the events end), `rx.poll_transmit(out)`, or
///    `ws.poll_transmit(out)` once the reader is gone, appends the frames the connection
///    owes, in order: the Pong of a Ping, then, once closing, the Close frame (the echo of
///    the peer's Close with its code, or 1000 when it sent none; after a protocol error,
///    the close of `CloseReason::from(err)`). Draining after every event keeps the replies
///    in event order with what the caller writes in between (an echo), so the replies to
///    messages before an error stay ahead of its close frame. An undrained Pong gives way
///    to the Pong of a later Ping (RFC 6455 5.5.3).
/// 4. `Some(Err(err))` means the input broke the protocol: no more events follow, the
///    close frame for the error is queued; write it, then close the socket. After a
///    `Close` event likewise: nothing more is read.
/// 5. [`encode_message`](Self::encode_message) (and the `encode_*` helpers) between reads,
///    for frames the application sends.
pub struct WsConnection {
    /// Message (and straddling control frame) accumulation buffer, followed by the last
    /// `owed` bytes: the encoded frames the connection owes the peer (a Pong; once
    /// closing, the Close frame after it).
    buf: Vec<u8>,
    deflate: Option<Box<DeflateState>>,
    /// `WsLimits` in 32 bits each (an idle connection's state is kept small; a limit above
    /// 4 GiB - 1 acts as 4 GiB - 1, and the server's config allows none).
    max_frame: u32,
    max_message: u32,
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
    /// Bytes at the end of `buf` that are owed frames (at most a Pong and a Close: 254).
    owed: u16,
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
            max_frame: u32::try_from(limits.max_frame_bytes).unwrap_or(u32::MAX),
            max_message: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
            remaining: 0,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            mask: [0; 4],
            utf8: Utf8Validator::new(),
            stage: Stage::Header,
            msg: None,
            compressed: false,
            owed: 0,
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

    /// How this connection frames an outgoing message of `len` bytes, when another
    /// connection can frame it byte for byte alike: `Some(0)` uncompressed, `Some(bits)`
    /// compressed by the per-core compressor of that window (no context takeover); `None`
    /// when it compresses with a context of its own.
    pub fn framing_class(&self, len: usize) -> Option<u8> {
        match self.deflate.as_deref() {
            None => Some(0),
            Some(d) if len < d.min_compress_bytes => Some(0),
            Some(d) if d.params.server_no_context_takeover => {
                Some(d.params.server_max_window_bits.clamp(9, 15))
            }
            Some(_) => None,
        }
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

    /// Reads a chunk of received bytes (unmasked in place): the events come from the
    /// returned [`Reader`]. See the call order on [`WsConnection`].
    pub fn read<'a>(&'a mut self, data: &'a mut [u8], zlib: &'a mut SharedDeflate) -> Reader<'a> {
        Reader {
            conn: self,
            data,
            pos: 0,
            zlib,
            lent: false,
            ctrl: [0; MAX_CONTROL_PAYLOAD],
        }
    }

    /// True when frames are owed (a Pong, a Close) that [`poll_transmit`](Self::poll_transmit)
    /// would write.
    pub fn has_pending_transmit(&self) -> bool {
        self.owed > 0
    }

    /// Appends the frames the connection owes the peer, in order (a Pong, then the Close
    /// frame once closing), and forgets them; false when there were none.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        let owed = usize::from(self.owed);
        if owed == 0 {
            return false;
        }
        let at = self.buf.len() - owed;
        out.extend_from_slice(&self.buf[at..]);
        self.buf.truncate(at);
        self.owed = 0;
        if at == 0 && self.msg.is_none() && !matches!(self.stage, Stage::Control { .. }) {
            // The buffer held only owed frames (a Pong, the close): free it.
            self.buf = Vec::new();
        }
        true
    }

    /// The input broke the protocol: close for it.
    fn fail(&mut self, err: ProtocolError) {
        self.shut();
        let why = CloseReason::from(err);
        self.owe_close(why.code(), why.reason());
    }

    /// Enters the terminal state and frees receive-side memory (an owed Pong stays).
    fn shut(&mut self) {
        self.stage = Stage::Closed;
        self.msg = None;
        if let Some(d) = self.deflate.as_mut() {
            d.abort_inflate();
        }
        let owed = usize::from(self.owed);
        let mut kept = Vec::new();
        if owed > 0 {
            // Room for the close frame that follows.
            kept.reserve_exact(owed + MAX_PONG_FRAME);
            kept.extend_from_slice(&self.buf[self.buf.len() - owed..]);
        }
        self.buf = kept;
    }

    /// Queues a Pong for `payload`; an undrained earlier Pong gives way (RFC 6455 5.5.3:
    /// only the most recent Ping needs an answer).
    fn owe_pong(&mut self, payload: &[u8]) {
        let at = self.buf.len() - usize::from(self.owed);
        self.buf.truncate(at);
        Self::encode_control(&mut self.buf, OpCode::Pong, payload);
        self.owed = (self.buf.len() - at) as u16;
    }

    /// Queues the Close frame (after [`shut`](Self::shut): `buf` holds only owed frames).
    fn owe_close(&mut self, code: u16, reason: &str) {
        Self::encode_close(&mut self.buf, code, reason);
        self.owed = self.buf.len() as u16;
    }

    /// Runs `f` with the owed Pong taken off the end of `buf` (so that the message region
    /// can grow), then puts it back.
    #[inline]
    fn with_owed_lifted<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let owed = usize::from(self.owed);
        if owed == 0 {
            return f(self);
        }
        // While the connection is open only a Pong is owed.
        let mut saved = [0u8; MAX_PONG_FRAME];
        let owed = owed.min(MAX_PONG_FRAME);
        let at = self.buf.len() - owed;
        saved[..owed].copy_from_slice(&self.buf[at..]);
        self.buf.truncate(at);
        self.owed = 0;
        let r = f(self);
        self.buf.extend_from_slice(&saved[..owed]);
        self.owed = owed as u16;
        r
    }

    /// Frees the message region of `buf` once its message was handed out (no message in
    /// progress, no control frame being buffered).
    #[cold]
    fn release_delivered(&mut self) {
        let owed = usize::from(self.owed);
        if self.msg.is_some()
            || matches!(self.stage, Stage::Control { .. })
            || self.buf.len() <= owed
        {
            return;
        }
        if owed == 0 {
            self.release_buf();
        } else {
            let at = self.buf.len() - owed;
            self.buf.drain(..at);
            if self.buf.capacity() > RETAIN_CAPACITY {
                self.buf.shrink_to(MAX_PONG_FRAME);
            }
        }
    }

    /// A complete control frame: queues what it obliges (a Pong, the close echo).
    fn control(&mut self, op: OpCode, p: &[u8], src: Src) -> Result<Found, ProtocolError> {
        match op {
            OpCode::Ping => {
                self.owe_pong(p);
                Ok(Found::Ping(src))
            }
            OpCode::Pong => Ok(Found::Pong(src)),
            _ => {
                let (code, _) = parse_close(p)?;
                self.shut();
                // The echo carries the peer's code, or a plain normal close when it sent none.
                let (echo, reason) = match code {
                    Some(code) => (code, ""),
                    None => (CloseReason::Normal.code(), CloseReason::Normal.reason()),
                };
                self.owe_close(echo, reason);
                let reason_at = src.skip(if code.is_some() { 2 } else { 0 });
                Ok(Found::Close(code, reason_at))
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
            if h.payload_len > self.max_frame as u64 {
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
            let buffered = self.buf.len() - usize::from(self.owed);
            if !self.compressed
                && (buffered as u64).saturating_add(h.payload_len) > self.max_message as u64
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

    /// Appends (or inflates) a piece of the current data message (nothing owed in `buf`).
    fn data_chunk(&mut self, chunk: &[u8], zlib: &mut SharedDeflate) -> Result<(), ProtocolError> {
        let text = self.msg == Some(MessageKind::Text);
        if self.compressed {
            if chunk.is_empty() {
                return Ok(());
            }
            let before = self.buf.len();
            let d = self.deflate.as_mut().ok_or(ProtocolError::ReservedBits)?;
            d.inflate(zlib, chunk, &mut self.buf, self.max_message as usize)?;
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
            reserve_bounded(&mut self.buf, chunk.len(), self.max_message as usize);
            self.buf.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// The final frame of a buffered message is complete (nothing owed in `buf`): finish
    /// inflating and validating it; the message is `buf`.
    fn finish_message(&mut self, zlib: &mut SharedDeflate) -> Result<MessageKind, ProtocolError> {
        let kind = self.msg.take().unwrap_or(MessageKind::Binary);
        if self.compressed {
            self.compressed = false;
            let before = self.buf.len();
            let d = self.deflate.as_mut().ok_or(ProtocolError::ReservedBits)?;
            d.finish_inflate(zlib, &mut self.buf, self.max_message as usize)?;
            if kind == MessageKind::Text {
                self.utf8
                    .feed(&self.buf[before..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        if kind == MessageKind::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(kind)
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
        encode_message_with(self.deflate.as_deref_mut(), zlib, out, kind, payload);
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

/// [`WsConnection::encode_message`] on the connection's deflate state.
fn encode_message_with(
    deflate: Option<&mut DeflateState>,
    zlib: &mut SharedDeflate,
    out: &mut Vec<u8>,
    kind: MessageKind,
    payload: &[u8],
) {
    let op = match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    };
    if let Some(d) = deflate {
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

#[cfg(test)]
mod tests;

//! RFC 7692 permessage-deflate: offer negotiation and the bounded streaming
//! (de)compressor used by [`super::WsConnection`].
//!
//! Choices:
//! - Inflate always uses a 15-bit window: a larger window decodes any
//!   stream produced with a smaller one, so `client_max_window_bits` never
//!   needs to be enforced on our side (we never ask for it).
//! - zlib (and zlib-rs) refuse raw deflate with an 8-bit window. A
//!   compressor with a 9-bit window never emits distances > 256 − 6 (max
//!   distance is window − 262), so when `server_max_window_bits=8` is
//!   agreed we answer 8 and compress with 9.
//! - Inflate output is bounded: each call stops with
//!   [`ProtocolError::MessageTooBig`] as soon as the message would exceed
//!   the limit; the output buffer never grows past `limit + 1` bytes, so a
//!   decompression bomb costs at most one message limit of memory.
//! - Memory of an idle connection. A zlib compressor with a 15-bit window
//!   holds about 320 KB, an inflater about 22 KB: kept per socket, one
//!   compressed push would pin about 320 KB to every browser tab for its
//!   whole life. So by default ([`DeflateConfig::context_takeover`] =
//!   false) the server answers every offer with `server_no_context_takeover;
//!   client_no_context_takeover` (RFC 7692 7.1.1.1 and 7.1.1.2 let a server
//!   add both even when the client did not offer them; the client MUST then
//!   reset its compressor per message) and compresses with one compressor
//!   per core and window size, reset after every message, lent to the
//!   connection through [`SharedDeflate`] (owned by the caller: this module
//!   stays sans-IO). A connection that agreed to `client_no_context_takeover`
//!   borrows an inflater from the same [`SharedDeflate`] for the duration of
//!   one received compressed message and gives it back at its end; while
//!   idle it holds no (de)compressor at all.
//! - Per-socket context takeover (`context_takeover = true`) keeps the
//!   RFC defaults: a connection whose client did not offer the
//!   `*_no_context_takeover` params owns its compressor (allocated on its
//!   first compressed push) and its inflater (on its first compressed
//!   message) until it closes. Better ratio on streams of similar
//!   messages, at about 320 KB (compressor, window 15; ~200 KB at 9) plus
//!   ~22 KB (inflater) per socket (measured by `benches/deflate.rs`).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;

/// The 4 bytes a sync flush ends with; stripped on send, re-appended on
/// receive (RFC 7692 7.2.1 / 7.2.2).
pub const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// zlib level used for outgoing messages: a push server is CPU bound long
/// before it is bandwidth bound, and JSON-like payloads compress well at
/// low levels.
pub const COMPRESSION_LEVEL: u32 = 3;

/// Default for [`DeflateConfig::min_compress_bytes`].
pub const DEFAULT_MIN_COMPRESS_BYTES: usize = 64;

/// Server-side permessage-deflate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Negotiate permessage-deflate at all.
    pub enabled: bool,
    /// Messages shorter than this are sent uncompressed.
    pub min_compress_bytes: usize,
    /// Largest LZ77 window we compress with (8..=15).
    pub server_max_window_bits: u8,
    /// Accept offers that carry `server_no_context_takeover` (only
    /// consulted with `context_takeover`).
    pub allow_no_context_takeover: bool,
    /// Keep each socket's LZ77 windows across messages when the client
    /// allows it (RFC default). False (default): always answer
    /// `server_no_context_takeover; client_no_context_takeover` and use
    /// the per-core [`SharedDeflate`]; an idle socket holds no zlib state.
    pub context_takeover: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: true,
            min_compress_bytes: DEFAULT_MIN_COMPRESS_BYTES,
            server_max_window_bits: 15,
            allow_no_context_takeover: true,
            context_takeover: false,
        }
    }
}

/// The agreed parameters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// Reset our compressor after every message: the connection compresses
    /// with the per-core [`SharedDeflate`] and owns no compressor.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message: the
    /// connection borrows an inflater from [`SharedDeflate`] for one
    /// message at a time and owns none while idle.
    pub client_no_context_takeover: bool,
    /// Window we promised not to exceed when compressing (8..=15).
    pub server_max_window_bits: u8,
    /// Window the client compresses with (informational; we inflate with 15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// Parsed parameters of one offer.
#[derive(Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_bits(v: &str) -> Option<u8> {
    // 1*DIGIT, value 8..=15, no leading zero.
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// Parses the `;`-separated params of one `permessage-deflate` offer;
/// `None` if any param is unknown, repeated or has a bad value.
fn parse_offer<'a>(mut params: impl Iterator<Item = &'a str>) -> Option<Offer> {
    let mut o = Offer::default();
    params.try_for_each(|p| {
        let p = p.trim();
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (p, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !o.server_no_context_takeover => {
                o.server_no_context_takeover = true
            }
            ("client_no_context_takeover", None) if !o.client_no_context_takeover => {
                o.client_no_context_takeover = true
            }
            ("server_max_window_bits", Some(v)) if o.server_max_window_bits.is_none() => {
                o.server_max_window_bits = Some(parse_bits(v)?)
            }
            ("client_max_window_bits", v) if o.client_max_window_bits.is_none() => {
                o.client_max_window_bits = Some(match v {
                    Some(v) => Some(parse_bits(v)?),
                    None => None,
                })
            }
            _ => return None,
        }
        Some(())
    })?;
    Some(o)
}

/// Picks the first acceptable `permessage-deflate` offer from a
/// `Sec-WebSocket-Extensions` value and returns the agreed params and the
/// exact response header value. Bad offers are declined, never an error.
pub fn negotiate(offer_header: &str, cfg: &DeflateConfig) -> Option<(DeflateParams, String)> {
    if !cfg.enabled {
        return None;
    }
    let server_cap = cfg.server_max_window_bits.clamp(8, 15);
    for ext in offer_header.split(',') {
        let mut parts = ext.split(';');
        let name = parts.next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            continue;
        }
        let Some(offer) = parse_offer(parts) else {
            continue;
        };
        let shared = !cfg.context_takeover;
        if offer.server_no_context_takeover && !cfg.allow_no_context_takeover && !shared {
            continue;
        }
        let mut params = DeflateParams {
            server_no_context_takeover: offer.server_no_context_takeover || shared,
            client_no_context_takeover: offer.client_no_context_takeover || shared,
            server_max_window_bits: server_cap,
            client_max_window_bits: 15,
        };
        let mut resp = String::from("permessage-deflate");
        // RFC 7692 7.1.1.1: a server MAY include server_no_context_takeover
        // even if the offer did not; 7.1.1.2: a server MAY include
        // client_no_context_takeover in a response (offered or not), and the
        // client then MUST NOT take over its context.
        if params.server_no_context_takeover {
            resp.push_str("; server_no_context_takeover");
        }
        if params.client_no_context_takeover {
            resp.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = offer.server_max_window_bits {
            // We may compress with a smaller window than asked for, but must
            // answer this parameter (RFC 7692 7.1.2.1).
            params.server_max_window_bits = bits.min(server_cap);
            resp.push_str("; server_max_window_bits=");
            resp.push_str(&params.server_max_window_bits.to_string());
        }
        if let Some(Some(bits)) = offer.client_max_window_bits {
            // Informational; we inflate with 15 bits and do not answer it.
            params.client_max_window_bits = bits;
        }
        return Some((params, resp));
    }
    None
}

/// Window sizes a compressor is built with (9..=15; 8 is compressed with 9).
const WINDOWS: usize = 7;

/// Messages up to this size are remembered with their compressed form by [`SharedDeflate`].
const MEMO_MAX_BYTES: usize = 16 * 1024;

fn new_compressor(bits: u8) -> Compress {
    Compress::new_with_window_bits(
        Compression::new(COMPRESSION_LEVEL),
        false,
        bits.clamp(9, 15),
    )
}

fn new_inflater() -> Decompress {
    Decompress::new_with_window_bits(false, 15)
}

/// The (de)compression state one core lends to its connections: one
/// compressor per window size in use (for connections that agreed to
/// `server_no_context_takeover`; reset after every message) and one spare
/// inflater (borrowed by a connection that agreed to
/// `client_no_context_takeover` while it receives one compressed message).
/// It also remembers the last message (up to 16 KiB) it compressed and the
/// result: without context takeover the output depends only on the message
/// and the window, so a push fanned out to a user's sockets on this core is
/// compressed once.
/// Created empty; every part is allocated on first use and kept. The
/// runtime owns one per core and passes it to
/// [`WsConnection::receive`](super::WsConnection::receive) and
/// [`WsConnection::encode_message`](super::WsConnection::encode_message).
pub struct SharedDeflate {
    compressors: [Option<Compress>; WINDOWS],
    spare_inflater: Option<Decompress>,
    /// Window of the remembered message; 0: none.
    memo_bits: u8,
    memo_in: Vec<u8>,
    memo_out: Vec<u8>,
}

impl Default for SharedDeflate {
    fn default() -> Self {
        SharedDeflate::new()
    }
}

impl SharedDeflate {
    /// Nothing is allocated until the first compressed message.
    pub fn new() -> Self {
        SharedDeflate {
            compressors: std::array::from_fn(|_| None),
            spare_inflater: None,
            memo_bits: 0,
            memo_in: Vec::new(),
            memo_out: Vec::new(),
        }
    }

    /// Compresses a whole message without context takeover (see
    /// [`compress_message`]), or copies the remembered output when it is the
    /// message compressed last with the same window.
    fn compress(&mut self, bits: u8, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let bits = bits.clamp(9, 15);
        if self.memo_bits == bits && self.memo_in == input {
            out.extend_from_slice(&self.memo_out);
            return Ok(());
        }
        let start = out.len();
        self.memo_bits = 0;
        compress_message(self.compressor(bits), input, out, true)?;
        if input.len() <= MEMO_MAX_BYTES {
            self.memo_in.clear();
            self.memo_in.extend_from_slice(input);
            self.memo_out.clear();
            self.memo_out.extend_from_slice(&out[start..]);
            self.memo_bits = bits;
        }
        Ok(())
    }

    fn compressor(&mut self, bits: u8) -> &mut Compress {
        let bits = bits.clamp(9, 15);
        self.compressors[usize::from(bits - 9)].get_or_insert_with(|| new_compressor(bits))
    }

    /// A reset inflater: the spare one, or a new one when it is lent out
    /// (a message of another connection still in progress).
    fn take_inflater(&mut self) -> Decompress {
        self.spare_inflater.take().unwrap_or_else(new_inflater)
    }

    /// Takes back an inflater at the end of a message (kept as the spare,
    /// or dropped when there already is one).
    fn give_back_inflater(&mut self, mut d: Decompress) {
        if self.spare_inflater.is_none() {
            d.reset(false);
            self.spare_inflater = Some(d);
        }
    }
}

/// Compresses a whole message with a sync flush, appending the deflate data
/// without the trailing `00 00 FF FF` to `out`; resets `c` afterwards when
/// `reset` (no context takeover). On failure `out` is restored and `c`
/// reset (so the stream stays in sync with the peer, which never saw the
/// failed message).
fn compress_message(
    c: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    reset: bool,
) -> Result<(), ProtocolError> {
    let start = out.len();
    let result: Result<(), ProtocolError> = (|| loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(input.len() / 2 + 128);
        }
        let in_before = c.total_in();
        c.compress_vec(input, out, FlushCompress::Sync)
            .map_err(|_| ProtocolError::Internal)?;
        let consumed = (c.total_in() - in_before) as usize;
        input = input.get(consumed..).unwrap_or(&[]);
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
    })();
    match result {
        Ok(()) if out[start..].ends_with(&SYNC_TRAILER) => {
            out.truncate(out.len() - SYNC_TRAILER.len());
            if reset {
                c.reset();
            }
            Ok(())
        }
        _ => {
            out.truncate(start);
            c.reset();
            Err(ProtocolError::Internal)
        }
    }
}

/// Per-connection deflate state (boxed inside the connection). With both
/// `*_no_context_takeover` params agreed it owns no zlib state while idle.
pub(crate) struct DeflateState {
    pub(crate) params: DeflateParams,
    pub(crate) min_compress_bytes: usize,
    /// Own inflater: kept across messages with client context takeover;
    /// otherwise borrowed from [`SharedDeflate`] for one message.
    inflater: Option<Decompress>,
    /// Own compressor (server context takeover only).
    deflater: Option<Compress>,
}

impl DeflateState {
    pub(crate) fn new(params: DeflateParams) -> Self {
        DeflateState {
            params,
            min_compress_bytes: DEFAULT_MIN_COMPRESS_BYTES,
            inflater: None,
            deflater: None,
        }
    }

    /// True when this connection holds an inflater or a compressor.
    pub(crate) fn holds_zlib_state(&self) -> bool {
        self.inflater.is_some() || self.deflater.is_some()
    }

    /// Inflates `input` (a piece of one compressed message), appending to
    /// `out`. Fails with `MessageTooBig` once `out.len()` would exceed
    /// `max_len`; `out` never grows past `max_len + 1`.
    pub(crate) fn inflate(
        &mut self,
        shared: &mut SharedDeflate,
        mut input: &[u8],
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        let d = self.inflater.get_or_insert_with(|| shared.take_inflater());
        loop {
            if out.len() > max_len {
                return Err(ProtocolError::MessageTooBig);
            }
            if out.len() == out.capacity() {
                // Geometric growth, capped at one byte over the limit (that
                // byte only serves to detect the overflow).
                let target = (out.capacity().saturating_mul(2))
                    .max(input.len().saturating_mul(2))
                    .max(1024)
                    .min(max_len.saturating_add(1));
                let additional = target.saturating_sub(out.len()).max(1);
                out.try_reserve_exact(additional)
                    .map_err(|_| ProtocolError::MessageTooBig)?;
            }
            let in_before = d.total_in();
            let out_before = out.len();
            let status = d
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            let consumed = (d.total_in() - in_before) as usize;
            input = input.get(consumed..).unwrap_or(&[]);
            let produced = out.len() - out_before;
            if out.len() > max_len {
                return Err(ProtocolError::MessageTooBig);
            }
            if status == Status::StreamEnd {
                // A BFINAL block ended the deflate stream; anything after it
                // (normally just the sync trailer) starts a fresh stream.
                d.reset(false);
                if input.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let out_full = out.len() == out.capacity();
            if input.is_empty() && !out_full {
                return Ok(());
            }
            if consumed == 0 && produced == 0 && !out_full {
                // No progress possible (BufError with input left): corrupt.
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
    }

    /// End of a received compressed message: feeds the sync trailer; with
    /// `client_no_context_takeover` the inflater goes back to `shared`.
    pub(crate) fn finish_inflate(
        &mut self,
        shared: &mut SharedDeflate,
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        self.inflate(shared, &SYNC_TRAILER, out, max_len)?;
        if self.params.client_no_context_takeover {
            if let Some(d) = self.inflater.take() {
                shared.give_back_inflater(d);
            }
        }
        Ok(())
    }

    /// Forgets any half-inflated message (after an error).
    pub(crate) fn abort_inflate(&mut self) {
        self.inflater = None;
    }

    /// Compresses a whole message with a sync flush, appending the deflate
    /// data without the trailing `00 00 FF FF` to `out`: with the shared
    /// per-core compressor under `server_no_context_takeover`, else with
    /// this connection's own. On failure `out` is restored and the
    /// compressor reset.
    pub(crate) fn compress(
        &mut self,
        shared: &mut SharedDeflate,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let bits = self.params.server_max_window_bits;
        if self.params.server_no_context_takeover {
            shared.compress(bits, input, out)
        } else {
            let c = self.deflater.get_or_insert_with(|| new_compressor(bits));
            compress_message(c, input, out, false)
        }
    }
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;

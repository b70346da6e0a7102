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
mod tests {
    use super::*;

    /// Per-socket context takeover: the RFC's defaults, answered as offered.
    fn cfg() -> DeflateConfig {
        DeflateConfig {
            context_takeover: true,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn default_is_shared_no_context_takeover() {
        let shared = DeflateConfig::default();
        assert!(!shared.context_takeover);
        // Chromium's offer: both no_context_takeover params are added.
        let (p, r) = negotiate("permessage-deflate; client_max_window_bits", &shared).unwrap();
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(p.server_max_window_bits, 15);
        // Firefox / websockets: the same, plus what must be answered.
        let (_, r) = negotiate(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
            &shared,
        )
        .unwrap();
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        // allow_no_context_takeover = false cannot refuse what we ask for ourselves.
        let strict = DeflateConfig {
            allow_no_context_takeover: false,
            ..shared
        };
        assert!(negotiate("permessage-deflate; server_no_context_takeover", &strict).is_some());
        // Bad offers are still declined.
        assert!(negotiate("permessage-deflate; server_max_window_bits=16", &shared).is_none());
    }

    /// Three connections share one SharedDeflate, interleaving messages: each
    /// client decodes every message with a fresh inflater (no context), and
    /// idle connections hold no zlib state.
    #[test]
    fn shared_compressor_and_inflater_are_lent_per_message() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let mut shared = SharedDeflate::new();
        let mut conns: Vec<DeflateState> = (0..3).map(|_| DeflateState::new(params)).collect();
        let msg =
            br#"{"type":"notification","user":42,"body":"hello hello hello hello"}"#.repeat(20);
        for round in 0..3 {
            for (i, st) in conns.iter_mut().enumerate() {
                let m = &msg[round + i..];
                let mut wire = Vec::new();
                st.compress(&mut shared, m, &mut wire).unwrap();
                assert!(wire.len() < m.len() / 4);
                // A fresh client inflater decodes it: no reference to older messages.
                let mut out = Vec::new();
                let mut client = DeflateState::new(DeflateParams::default());
                client
                    .inflate(&mut SharedDeflate::new(), &wire, &mut out, 1 << 20)
                    .unwrap();
                client
                    .finish_inflate(&mut SharedDeflate::new(), &mut out, 1 << 20)
                    .unwrap();
                assert_eq!(out, m);
                // And the server side inflates it with a borrowed inflater.
                let mut out = Vec::new();
                st.inflate(&mut shared, &wire[..wire.len() / 2], &mut out, 1 << 20)
                    .unwrap();
                assert!(st.holds_zlib_state(), "inflater held mid-message");
                st.inflate(&mut shared, &wire[wire.len() / 2..], &mut out, 1 << 20)
                    .unwrap();
                st.finish_inflate(&mut shared, &mut out, 1 << 20).unwrap();
                assert_eq!(out, m);
                assert!(!st.holds_zlib_state(), "idle connection holds zlib state");
            }
        }
        assert!(shared.spare_inflater.is_some());
        assert_eq!(shared.compressors.iter().filter(|c| c.is_some()).count(), 1);
        // A message in progress on one connection while another one receives:
        // the second borrows a new inflater; both are decoded.
        let mut wire = Vec::new();
        conns[0].compress(&mut shared, &msg, &mut wire).unwrap();
        let (mut out0, mut out1) = (Vec::new(), Vec::new());
        conns[0]
            .inflate(&mut shared, &wire[..10], &mut out0, 1 << 20)
            .unwrap();
        conns[1]
            .inflate(&mut shared, &wire, &mut out1, 1 << 20)
            .unwrap();
        conns[1]
            .finish_inflate(&mut shared, &mut out1, 1 << 20)
            .unwrap();
        conns[0]
            .inflate(&mut shared, &wire[10..], &mut out0, 1 << 20)
            .unwrap();
        conns[0]
            .finish_inflate(&mut shared, &mut out0, 1 << 20)
            .unwrap();
        assert_eq!(out0, msg);
        assert_eq!(out1, msg);
        assert!(conns.iter().all(|c| !c.holds_zlib_state()));
    }

    /// A push fanned out to several sockets is compressed once; a different
    /// message or window is compressed anew; big messages are not remembered.
    #[test]
    fn shared_compressor_remembers_the_last_message() {
        let no_ctx = |bits| DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: bits,
            ..DeflateParams::default()
        };
        let mut shared = SharedDeflate::new();
        let msg = br#"{"event":"push","body":"hello hello hello hello hello"}"#.repeat(10);
        let other = br#"{"event":"push","body":"goodbye goodbye goodbye"}"#.repeat(10);
        let decode = |wire: &[u8]| {
            let mut out = Vec::new();
            let mut rx = DeflateState::new(DeflateParams::default());
            rx.inflate(&mut SharedDeflate::new(), wire, &mut out, 1 << 20)
                .unwrap();
            rx.finish_inflate(&mut SharedDeflate::new(), &mut out, 1 << 20)
                .unwrap();
            out
        };
        let mut wires = Vec::new();
        for (m, bits) in [
            (&msg, 15),
            (&msg, 15),
            (&other, 15),
            (&msg, 15),
            (&msg, 10),
            (&msg, 10),
        ] {
            let mut st = DeflateState::new(no_ctx(bits));
            let mut wire = vec![0xAA]; // appended after what is already queued
            st.compress(&mut shared, m, &mut wire).unwrap();
            assert_eq!(wire[0], 0xAA);
            assert_eq!(&decode(&wire[1..]), m);
            wires.push(wire);
        }
        assert_eq!(wires[0], wires[1]);
        assert_eq!(wires[0], wires[3]);
        assert_eq!(wires[4], wires[5]);
        assert_ne!(wires[0], wires[2]);
        assert_eq!(shared.memo_bits, 10);
        let big: Vec<u8> = (0..MEMO_MAX_BYTES as u32 + 1)
            .map(|i| (i % 7) as u8)
            .collect();
        let mut wire = Vec::new();
        DeflateState::new(no_ctx(15))
            .compress(&mut shared, &big, &mut wire)
            .unwrap();
        assert_eq!(decode(&wire), big);
        assert_eq!(shared.memo_bits, 0);
    }

    /// With context takeover the connection owns its (de)compressor across
    /// messages, and a later message may refer to an earlier one.
    #[test]
    fn context_takeover_keeps_per_connection_state() {
        let mut shared = SharedDeflate::new();
        let mut tx = DeflateState::new(DeflateParams::default());
        let mut rx = DeflateState::new(DeflateParams::default());
        let msg = b"a message that repeats itself across messages, 0123456789".repeat(4);
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let mut wire = Vec::new();
            tx.compress(&mut shared, &msg, &mut wire).unwrap();
            sizes.push(wire.len());
            let mut out = Vec::new();
            rx.inflate(&mut shared, &wire, &mut out, 1 << 20).unwrap();
            rx.finish_inflate(&mut shared, &mut out, 1 << 20).unwrap();
            assert_eq!(out, msg);
            assert!(tx.holds_zlib_state() && rx.holds_zlib_state());
        }
        assert!(sizes[1] < sizes[0] / 2, "{sizes:?}");
        assert!(shared.compressors.iter().all(|c| c.is_none()));
    }

    #[test]
    fn negotiate_basic() {
        let (p, r) = negotiate("permessage-deflate; client_max_window_bits", &cfg()).unwrap();
        assert_eq!(r, "permessage-deflate");
        assert_eq!(p, DeflateParams::default());

        let (p, r) = negotiate(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
            &cfg(),
        )
        .unwrap();
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(p.server_max_window_bits, 10);
    }

    #[test]
    fn negotiate_falls_back_to_next_offer() {
        let h = "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, \
                 permessage-deflate; foo, permessage-deflate; client_no_context_takeover; client_no_context_takeover, \
                 permessage-deflate; server_max_window_bits=\"8\"";
        let (p, r) = negotiate(h, &cfg()).unwrap();
        assert_eq!(r, "permessage-deflate; server_max_window_bits=8");
        assert_eq!(p.server_max_window_bits, 8);
        assert!(negotiate("permessage-deflate; server_max_window_bits", &cfg()).is_none());
        assert!(negotiate("permessage-deflate; server_max_window_bits=08", &cfg()).is_none());
        assert!(negotiate("permessage-deflate; client_max_window_bits=7", &cfg()).is_none());
        assert!(negotiate("permessage-deflate; server_no_context_takeover=1", &cfg()).is_none());
        assert!(negotiate("deflate-stream", &cfg()).is_none());
        assert!(negotiate("", &cfg()).is_none());
    }

    #[test]
    fn negotiate_respects_config() {
        let off = DeflateConfig {
            enabled: false,
            ..cfg()
        };
        assert!(negotiate("permessage-deflate", &off).is_none());
        let strict = DeflateConfig {
            allow_no_context_takeover: false,
            ..cfg()
        };
        assert!(negotiate("permessage-deflate; server_no_context_takeover", &strict).is_none());
        let (_, r) = negotiate(
            "permessage-deflate; server_no_context_takeover, permessage-deflate",
            &strict,
        )
        .unwrap();
        assert_eq!(r, "permessage-deflate");
        let small = DeflateConfig {
            server_max_window_bits: 11,
            ..cfg()
        };
        let (p, r) = negotiate("permessage-deflate; server_max_window_bits=13", &small).unwrap();
        assert_eq!(p.server_max_window_bits, 11);
        assert_eq!(r, "permessage-deflate; server_max_window_bits=11");
        let (p, r) = negotiate("permessage-deflate", &small).unwrap();
        assert_eq!(p.server_max_window_bits, 11);
        assert_eq!(r, "permessage-deflate");
    }

    fn inflate_all(data: &[u8], max: usize) -> Result<Vec<u8>, ProtocolError> {
        let mut st = DeflateState::new(DeflateParams::default());
        let mut out = Vec::new();
        st.inflate(&mut SharedDeflate::new(), data, &mut out, max)?;
        st.finish_inflate(&mut SharedDeflate::new(), &mut out, max)?;
        Ok(out)
    }

    #[test]
    fn compress_round_trip_all_window_sizes() {
        let text: Vec<u8> = (0..20_000u32)
            .map(|i| b"abcdefghij"[(i % 7 + i / 300 % 3) as usize])
            .collect();
        for bits in 8..=15u8 {
            for no_ctx in [false, true] {
                let params = DeflateParams {
                    server_no_context_takeover: no_ctx,
                    server_max_window_bits: bits,
                    ..DeflateParams::default()
                };
                let mut tx = DeflateState::new(params);
                let mut rx = DeflateState::new(DeflateParams::default());
                for round in 0..3 {
                    let msg = &text[round * 1000..];
                    let mut wire = Vec::new();
                    tx.compress(&mut SharedDeflate::new(), msg, &mut wire)
                        .unwrap();
                    assert!(wire.len() < msg.len() / 4, "bits {bits}");
                    let mut out = Vec::new();
                    rx.inflate(&mut SharedDeflate::new(), &wire, &mut out, 1 << 20)
                        .unwrap();
                    rx.finish_inflate(&mut SharedDeflate::new(), &mut out, 1 << 20)
                        .unwrap();
                    assert_eq!(out, msg);
                }
            }
        }
    }

    #[test]
    fn window_9_never_exceeds_256_distance() {
        // Inflating with an 8-bit-window inflater (via raw zlib semantics is
        // not possible), so check the property the other way round: data
        // compressed with a 9-bit window decodes with a fresh 15-bit window
        // even when fed across message boundaries; distances are checked by
        // zlib-rs when inflating with window 9 (its minimum).
        let mut tx = DeflateState::new(DeflateParams {
            server_max_window_bits: 8,
            ..DeflateParams::default()
        });
        let msg: Vec<u8> = (0..5000u32)
            .map(|i| (i % 251) as u8 ^ (i / 700) as u8)
            .collect();
        let mut wire = Vec::new();
        tx.compress(&mut SharedDeflate::new(), &msg, &mut wire)
            .unwrap();
        wire.extend_from_slice(&SYNC_TRAILER);
        let mut d = Decompress::new_with_window_bits(false, 9);
        let mut out = Vec::with_capacity(10_000);
        d.decompress_vec(&wire, &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, msg);
    }

    #[test]
    fn decompression_bomb_is_bounded() {
        // 16 MiB of zeros compresses to ~16 KiB.
        let zeros = vec![0u8; 16 << 20];
        let mut tx = DeflateState::new(DeflateParams::default());
        let mut wire = Vec::new();
        tx.compress(&mut SharedDeflate::new(), &zeros, &mut wire)
            .unwrap();
        assert!(wire.len() < 64 << 10);
        let max = 1 << 20;
        let mut st = DeflateState::new(DeflateParams::default());
        let mut out = Vec::new();
        assert_eq!(
            st.inflate(&mut SharedDeflate::new(), &wire, &mut out, max),
            Err(ProtocolError::MessageTooBig)
        );
        assert!(out.capacity() <= max + 1, "capacity {}", out.capacity());
        // Exactly at the limit is fine.
        let mut tx = DeflateState::new(DeflateParams::default());
        let mut wire = Vec::new();
        tx.compress(&mut SharedDeflate::new(), &zeros[..max], &mut wire)
            .unwrap();
        assert_eq!(inflate_all(&wire, max).unwrap().len(), max);
        assert_eq!(
            inflate_all(&wire, max - 1),
            Err(ProtocolError::MessageTooBig)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(
            inflate_all(&[0xFF, 0xFF, 0xFF, 0xFF], 1000),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    #[test]
    fn bfinal_then_trailer() {
        // A message ending with a final block, then our appended trailer.
        let mut c = Compress::new_with_window_bits(Compression::default(), false, 15);
        let mut wire = Vec::with_capacity(100);
        c.compress_vec(b"hello", &mut wire, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate_all(&wire, 100).unwrap(), b"hello");
    }
}

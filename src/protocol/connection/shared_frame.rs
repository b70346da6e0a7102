//! A message framed once for many connections (a push to all of a user's sockets, a batch
//! of pushes of one text): every connection that frames it alike (uncompressed, or
//! compressed by the per-core compressor with the same window) gets the same bytes.
use super::{encode_message_with, MessageKind, WsConnection};
use crate::protocol::deflate::SharedDeflate;

/// Frames above this size are not kept between batches.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The frames of the message named by the last key, one per framing class (uncompressed,
/// or compressed with one window size of the shared compressor).
#[derive(Default)]
pub struct FrameOnce {
    /// The caller's name for the payload: equal keys mean equal bytes.
    key: Option<u64>,
    kind: Option<MessageKind>,
    /// (framing class, frame): at most one per class seen for this key.
    frames: Vec<(u8, Vec<u8>)>,
}

impl FrameOnce {
    /// Appends `payload` framed as `ws` frames it (see [`WsConnection::encode_message`]).
    /// `key` names the payload: the caller gives the same key only for the same bytes
    /// and kind. A connection that compresses with a context of its own is framed apart.
    pub fn encode(
        &mut self,
        key: u64,
        ws: &mut WsConnection,
        zlib: &mut SharedDeflate,
        out: &mut Vec<u8>,
        kind: MessageKind,
        payload: &[u8],
    ) {
        let Some(class) = ws.framing_class(payload.len()) else {
            ws.encode_message(zlib, out, kind, payload);
            return;
        };
        if self.key != Some(key) || self.kind != Some(kind) {
            self.forget();
            self.key = Some(key);
            self.kind = Some(kind);
        }
        let i = match self.frames.iter().position(|(c, _)| *c == class) {
            Some(i) => i,
            None => {
                self.frames.push((class, Vec::new()));
                self.frames.len() - 1
            }
        };
        let frame = &mut self.frames[i].1;
        if frame.is_empty() {
            encode_message_with(ws.deflate.as_deref_mut(), zlib, frame, kind, payload);
        }
        out.extend_from_slice(frame);
    }

    /// Forget the message (the end of a batch): large frames are freed, the others kept
    /// empty for the next one.
    pub fn forget(&mut self) {
        self.key = None;
        self.kind = None;
        for (_, f) in &mut self.frames {
            f.clear();
        }
        self.frames.retain(|(_, f)| f.capacity() <= KEEP_CAPACITY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::DeflateParams;
    use crate::protocol::WsLimits;

    fn params(no_context_takeover: bool, bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: no_context_takeover,
            server_max_window_bits: bits,
            ..DeflateParams::default()
        }
    }

    #[test]
    fn every_connection_gets_what_it_would_have_framed_itself() {
        let mut zlib = SharedDeflate::new();
        let mut once = FrameOnce::default();
        let limits = WsLimits::default();
        let kinds = [
            None,
            Some(params(true, 15)),
            None,
            Some(params(true, 10)),
            Some(params(false, 15)),
            Some(params(true, 15)),
        ];
        let make = || -> Vec<WsConnection> {
            kinds
                .iter()
                .map(|p| WsConnection::new(limits, *p))
                .collect()
        };
        let (mut conns, mut reference) = (make(), make());
        let long = "a push long enough to be compressed, a push long enough to be compressed";
        let texts = [(1, long), (1, long), (2, "short"), (3, long), (3, long)];
        for (key, text) in texts {
            for (ws, r) in conns.iter_mut().zip(reference.iter_mut()) {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                once.encode(
                    key,
                    ws,
                    &mut zlib,
                    &mut got,
                    MessageKind::Text,
                    text.as_bytes(),
                );
                r.encode_message(&mut zlib, &mut want, MessageKind::Text, text.as_bytes());
                assert_eq!(got, want, "key {key}");
            }
        }
        // Classes seen: uncompressed, 15 and 10 bits (context takeover is framed apart).
        assert_eq!(once.frames.len(), 3);
        let mut out = Vec::new();
        once.encode(
            3,
            &mut conns[0],
            &mut zlib,
            &mut out,
            MessageKind::Binary,
            b"x",
        );
        assert_eq!(out, [0x82, 1, b'x'], "another kind is framed anew");
    }
}

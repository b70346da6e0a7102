//! RFC 6455 frame headers: parse (client → server) and encode
//! (server → client, never masked).
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use super::error::ProtocolError;

/// Longest possible frame header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;
/// Longest control-frame payload.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (reserved opcodes are rejected by [`OpCode::from_u8`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    /// Decodes the low 4 bits of the first header byte.
    pub fn from_u8(v: u8) -> Result<OpCode, ProtocolError> {
        match v {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            _ => Err(ProtocolError::ReservedOpcode),
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes of header (2..=14) preceding the payload.
    pub header_len: usize,
}

/// Parses a frame header at the start of `buf`.
///
/// `Ok(None)`: not enough bytes yet (never more than
/// [`MAX_HEADER_LEN`] are needed). Rejects RSV2/RSV3, reserved opcodes,
/// fragmented or over-long control frames and 64-bit lengths with the MSB
/// set. Non-minimal length encodings are accepted (RFC 6455 allows them to
/// be read). RSV1 and masking are reported, not judged: that depends on
/// the connection (extensions, role).
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & 0x30 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let opcode = OpCode::from_u8(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let ext_len = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext_len + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match ext_len {
        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(ProtocolError::InvalidLength);
            }
            len
        }
        _ => u64::from(len7),
    };
    let mask = if masked {
        let m = 2 + ext_len;
        Some([buf[m], buf[m + 1], buf[m + 2], buf[m + 3]])
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// Header length (unmasked, server side) for a payload of `len` bytes.
pub fn header_len_for(len: u64) -> usize {
    if len < 126 {
        2
    } else if len <= u64::from(u16::MAX) {
        4
    } else {
        10
    }
}

/// Writes an unmasked (server → client) header into `out`, minimal length
/// encoding; returns its length (2, 4 or 10).
pub fn write_header(out: &mut [u8; 10], fin: bool, rsv1: bool, opcode: OpCode, len: u64) -> usize {
    out[0] = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.as_u8();
    match header_len_for(len) {
        2 => {
            out[1] = len as u8;
            2
        }
        4 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&len.to_be_bytes());
            10
        }
    }
}

/// Appends a complete unmasked frame (header + payload) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) {
    let mut h = [0u8; 10];
    let n = write_header(&mut h, fin, rsv1, opcode, payload.len() as u64);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::{coding::OpCode as TOp, Frame};

    #[test]
    fn opcode_round_trip() {
        for v in 0u8..16 {
            match OpCode::from_u8(v) {
                Ok(op) => assert_eq!(op.as_u8(), v),
                Err(e) => {
                    assert_eq!(e, ProtocolError::ReservedOpcode);
                    assert!(matches!(v, 3..=7 | 0xB..=0xF));
                }
            }
        }
    }

    #[test]
    fn encode_matches_tungstenite() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for (op, top) in [
                (
                    OpCode::Text,
                    TOp::Data(tungstenite::protocol::frame::coding::Data::Text),
                ),
                (
                    OpCode::Binary,
                    TOp::Data(tungstenite::protocol::frame::coding::Data::Binary),
                ),
                (
                    OpCode::Continuation,
                    TOp::Data(tungstenite::protocol::frame::coding::Data::Continue),
                ),
            ] {
                for fin in [true, false] {
                    let mut ours = Vec::new();
                    encode_frame(&mut ours, fin, false, op, &payload);
                    let theirs = Frame::message(payload.clone(), top, fin);
                    let mut tbuf = Vec::new();
                    theirs.format(&mut tbuf).unwrap();
                    assert_eq!(ours, tbuf, "len {len} op {op:?} fin {fin}");
                }
            }
        }
    }

    #[test]
    fn parse_tungstenite_masked_frames() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let mut f = Frame::message(
                payload.clone(),
                TOp::Data(tungstenite::protocol::frame::coding::Data::Binary),
                true,
            );
            f.header_mut().mask = Some([0xA1, 0x5B, 0x07, 0xE9]);
            let mask = f.header().mask.unwrap();
            let mut buf = Vec::new();
            f.format(&mut buf).unwrap();
            let h = parse_header(&buf).unwrap().unwrap();
            assert_eq!(h.opcode, OpCode::Binary);
            assert!(h.fin && !h.rsv1);
            assert_eq!(h.mask, Some(mask));
            assert_eq!(h.payload_len, len as u64);
            assert_eq!(h.header_len + len, buf.len());
            // Every strict prefix of the header is "incomplete".
            for cut in 0..h.header_len {
                assert_eq!(parse_header(&buf[..cut]).unwrap(), None);
            }
            let mut body = buf[h.header_len..].to_vec();
            crate::protocol::mask::apply_mask(&mut body, mask, 0);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn header_validation() {
        // rsv2 / rsv3
        assert_eq!(
            parse_header(&[0xA1, 0x80]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header(&[0x91, 0x80]),
            Err(ProtocolError::ReservedBits)
        );
        // reserved opcodes
        assert_eq!(
            parse_header(&[0x83, 0x80]),
            Err(ProtocolError::ReservedOpcode)
        );
        assert_eq!(
            parse_header(&[0x8B, 0x80]),
            Err(ProtocolError::ReservedOpcode)
        );
        // fragmented ping
        assert_eq!(
            parse_header(&[0x09, 0x80]),
            Err(ProtocolError::FragmentedControl)
        );
        // ping of 126
        assert_eq!(
            parse_header(&[0x89, 0xFE]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        // 64-bit MSB
        let mut b = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(parse_header(&b), Err(ProtocolError::InvalidLength));
        // non-minimal encoding accepted
        b[2] = 0;
        b[9] = 5;
        let h = parse_header(&b).unwrap().unwrap();
        assert_eq!(h.payload_len, 5);
        assert_eq!(h.header_len, 14);
        // rsv1 reported
        let h = parse_header(&[0xC1, 0x00]).unwrap().unwrap();
        assert!(h.rsv1 && h.mask.is_none());
    }

    #[test]
    fn write_header_lengths() {
        let mut h = [0u8; 10];
        assert_eq!(write_header(&mut h, true, true, OpCode::Text, 125), 2);
        assert_eq!(&h[..2], &[0xC1, 125]);
        assert_eq!(write_header(&mut h, false, false, OpCode::Binary, 126), 4);
        assert_eq!(&h[..4], &[0x02, 126, 0, 126]);
        assert_eq!(write_header(&mut h, true, false, OpCode::Ping, 1 << 16), 10);
        assert_eq!(&h[..10], &[0x89, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}

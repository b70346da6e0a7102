//! RFC 6455 frames as a client sees them, sans-IO: client frames are built masked, server
//! frames are parsed from the bytes received so far. The client ([`crate::client::ws`])
//! keeps no buffer while a connection is idle, so this is all the state a frame needs.

/// A message or control frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// A close frame (its status code, if any).
    Close(Option<u16>),
}

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame's header: (fin, opcode, payload length, header length), or None when `buf`
/// does not hold the whole header yet. A masked server frame or set reserved bits are a
/// protocol error.
fn header(buf: &[u8]) -> Result<Option<(bool, u8, usize, usize)>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 || b1 & 0x80 != 0 {
        return Err("protocol_error");
    }
    let (len, at) = match b1 & 0x7F {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
        n => (n as u64, 2),
    };
    let len = usize::try_from(len).map_err(|_| "capacity_error")?;
    Ok(Some((b0 & 0x80 != 0, b0 & 0x0F, len, at)))
}

/// Reassembles messages from frames; holds only a fragmented message in progress.
#[derive(Default)]
pub struct Parser {
    /// Opcode and payload of a fragmented message so far.
    partial: Option<(u8, Vec<u8>)>,
}

impl Parser {
    /// Parses the next frame at the start of `buf`. Returns how many bytes it took and the
    /// message it completed (None for a fragment, or when `buf` holds no whole frame yet:
    /// then the bytes taken are 0). `max` bounds a message; errors are failure kinds.
    pub fn next(
        &mut self,
        buf: &[u8],
        max: usize,
    ) -> Result<(usize, Option<Incoming>), &'static str> {
        let Some((fin, op, len, at)) = header(buf)? else {
            return Ok((0, None));
        };
        if len > max {
            return Err("capacity_error");
        }
        if buf.len() - at < len {
            return Ok((0, None));
        }
        let payload = &buf[at..at + len];
        let used = at + len;
        let msg = match op {
            OP_CLOSE | OP_PING | OP_PONG if !fin || len > 125 => return Err("protocol_error"),
            OP_CLOSE if len == 1 => return Err("protocol_error"),
            OP_CLOSE => {
                Incoming::Close((len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])))
            }
            OP_PING => Incoming::Ping(payload.to_vec()),
            OP_PONG => Incoming::Pong,
            OP_TEXT | OP_BINARY if self.partial.is_some() => return Err("protocol_error"),
            OP_TEXT | OP_BINARY if !fin => {
                self.partial = Some((op, payload.to_vec()));
                return Ok((used, None));
            }
            OP_TEXT | OP_BINARY => whole(op, payload.to_vec())?,
            OP_CONT => {
                let Some((_, data)) = self.partial.as_mut() else {
                    return Err("protocol_error");
                };
                if data.len() + len > max {
                    return Err("capacity_error");
                }
                data.extend_from_slice(payload);
                if !fin {
                    return Ok((used, None));
                }
                let (op, data) = self.partial.take().unwrap();
                whole(op, data)?
            }
            _ => return Err("protocol_error"),
        };
        Ok((used, Some(msg)))
    }
}

fn whole(op: u8, data: Vec<u8>) -> Result<Incoming, &'static str> {
    if op == OP_TEXT {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| "utf8_error")
    } else {
        Ok(Incoming::Binary(data))
    }
}

/// Appends one masked client frame (FIN set) with `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.reserve(payload.len() + 14);
    out.push(0x80 | op);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn server(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(u8::from(fin) << 7) | op];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n if n <= 0xFFFF => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_messages_fragments_and_partial_input() {
        let mut p = Parser::default();
        let big = "x".repeat(70_000);
        let mut buf = server(true, OP_TEXT, b"hi");
        buf.extend(server(false, OP_TEXT, b"ab"));
        buf.extend(server(true, OP_PING, b"p"));
        buf.extend(server(true, OP_CONT, b"cd"));
        buf.extend(server(true, OP_TEXT, big.as_bytes()));
        buf.extend(server(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let mut got = Vec::new();
        let mut at = 0;
        // Fed one byte more at a time: nothing is taken before a frame is whole.
        let mut end = 0;
        while at < buf.len() {
            end = (end + 1).min(buf.len());
            let (used, msg) = p.next(&buf[at..end], 1 << 20).unwrap();
            at += used;
            got.extend(msg);
        }
        assert_eq!(
            got,
            [
                Incoming::Text("hi".into()),
                Incoming::Ping(b"p".to_vec()),
                Incoming::Text("abcd".into()),
                Incoming::Text(big),
                Incoming::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn refuses_bad_frames() {
        let mut p = Parser::default();
        let masked = [0x81, 0x81, 0, 0, 0, 0, b'a'];
        assert_eq!(p.next(&masked, 100), Err("protocol_error"));
        assert_eq!(
            p.next(&server(true, OP_CONT, b"x"), 100),
            Err("protocol_error")
        );
        assert_eq!(
            p.next(&server(true, OP_TEXT, &[0xff]), 100),
            Err("utf8_error")
        );
        assert_eq!(
            p.next(&server(true, OP_TEXT, &[b'a'; 200]), 100),
            Err("capacity_error")
        );
        assert_eq!(
            p.next(&server(false, OP_PING, b""), 100),
            Err("protocol_error")
        );
    }

    #[test]
    fn encodes_masked_frames() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536] {
            let payload = vec![b'z'; len];
            let mut out = Vec::new();
            encode(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            // Unmask as a server would, and parse the result as a server frame.
            let at = out.len() - len - 4;
            let mask: [u8; 4] = out[at..at + 4].try_into().unwrap();
            let data: Vec<u8> = out[at + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i & 3])
                .collect();
            assert_eq!(data, payload);
            let mut head = out[..at].to_vec();
            head[1] &= 0x7F;
            head.extend(data);
            let (used, msg) = Parser::default().next(&head, 1 << 20).unwrap();
            assert_eq!(used, head.len());
            assert_eq!(msg, Some(Incoming::Text("z".repeat(len))));
        }
    }
}

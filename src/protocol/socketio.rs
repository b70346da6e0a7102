//! Socket.IO packets (protocol v4 of socket.io 2.x and v5 of socket.io 3.x/4.x), sans-IO.
//!
//! A packet is the data of an Engine.IO message:
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, e.g. `42["news",{"n":1}]`,
//! `2/chat,7["hello"]`, `51-["file",{"_placeholder":true,"num":0}]` (followed by one binary
//! message). Types: 0 connect, 1 disconnect, 2 event, 3 ack, 4 connect error, 5 binary event,
//! 6 binary ack.
use base64::Engine as _;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl SioType {
    fn from_digit(b: u8) -> Option<SioType> {
        Some(match b {
            b'0' => SioType::Connect,
            b'1' => SioType::Disconnect,
            b'2' => SioType::Event,
            b'3' => SioType::Ack,
            b'4' => SioType::ConnectError,
            b'5' => SioType::BinaryEvent,
            b'6' => SioType::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            SioType::Connect => '0',
            SioType::Disconnect => '1',
            SioType::Event => '2',
            SioType::Ack => '3',
            SioType::ConnectError => '4',
            SioType::BinaryEvent => '5',
            SioType::BinaryAck => '6',
        }
    }
}

/// A parsed packet; slices borrow the received text.
#[derive(Debug, PartialEq, Eq)]
pub struct SioPacket<'a> {
    pub kind: SioType,
    /// Binary attachments that follow (binary event/ack only).
    pub attachments: usize,
    /// `/` for the default namespace; a named one without its query (`/chat?x=1` -> `/chat`).
    pub nsp: &'a str,
    pub id: Option<u64>,
    /// The JSON data (possibly empty).
    pub data: &'a str,
}

/// Most attachments a binary packet may announce.
pub const MAX_ATTACHMENTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SioError;

impl std::fmt::Display for SioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed Socket.IO packet")
    }
}

pub fn parse(text: &str) -> Result<SioPacket<'_>, SioError> {
    let b = text.as_bytes();
    let kind = SioType::from_digit(*b.first().ok_or(SioError)?).ok_or(SioError)?;
    let mut i = 1;
    let mut attachments = 0;
    if matches!(kind, SioType::BinaryEvent | SioType::BinaryAck) {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 3 || b.get(i) != Some(&b'-') {
            return Err(SioError);
        }
        attachments = text[start..i].parse().map_err(|_| SioError)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(SioError);
        }
        i += 1;
    }
    let mut nsp = "/";
    if b.get(i) == Some(&b'/') {
        let end = memchr::memchr(b',', &b[i..]).map_or(b.len(), |e| i + e);
        nsp = &text[i..end];
        if let Some(q) = nsp.find('?') {
            nsp = &nsp[..q];
        }
        i = (end + 1).min(b.len());
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let id = if i > start {
        if i - start > 15 {
            return Err(SioError);
        }
        Some(text[start..i].parse().map_err(|_| SioError)?)
    } else {
        None
    };
    Ok(SioPacket {
        kind,
        attachments,
        nsp,
        id,
        data: &text[i..],
    })
}

/// Append an Engine.IO message packet (`4`) carrying this Socket.IO packet.
pub fn encode(out: &mut String, kind: SioType, nsp: &str, id: Option<u64>, data: &str) {
    out.push('4');
    out.push(kind.digit());
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
    out.push_str(data);
}

/// Is `text` a JSON array whose first element is a string (`["event", ...]`)? A cheap check of
/// the shape (not a full JSON validation): pushes that fail it are not sent to Socket.IO
/// clients, whose parser would drop the whole connection on garbage.
pub fn looks_like_event(text: &str) -> bool {
    let t = text.trim();
    t.starts_with('[') && t.ends_with(']') && t[1..].trim_start().starts_with('"')
}

/// Replace the `{"_placeholder":true,"num":N}` objects of a binary event by
/// `{"_binary":"<base64>"}` with attachment N, so that listeners get one JSON text.
pub fn fill_placeholders(data: &str, attachments: &[Vec<u8>]) -> String {
    let mut out = String::with_capacity(data.len());
    let mut rest = data;
    const TAG: &str = "{\"_placeholder\":true,\"num\":";
    while let Some(at) = rest.find(TAG) {
        out.push_str(&rest[..at]);
        let after = &rest[at + TAG.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let num: Option<usize> = after[..digits].parse().ok();
        match (num, after[digits..].starts_with('}')) {
            (Some(n), true) if n < attachments.len() => {
                out.push_str("{\"_binary\":\"");
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(&attachments[n]));
                out.push_str("\"}");
                rest = &after[digits + 1..];
            }
            _ => {
                out.push_str(TAG);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_packets() {
        let p = parse("2[\"news\",{\"n\":1}]").unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (SioType::Event, "/", None, "[\"news\",{\"n\":1}]")
        );
        let p = parse("2/chat,17[\"a\"]").unwrap();
        assert_eq!((p.nsp, p.id, p.data), ("/chat", Some(17), "[\"a\"]"));
        let p = parse("0/admin?token=1,").unwrap();
        assert_eq!((p.kind, p.nsp, p.data), (SioType::Connect, "/admin", ""));
        let p = parse("0{\"token\":\"x\"}").unwrap();
        assert_eq!((p.nsp, p.data), ("/", "{\"token\":\"x\"}"));
        let p = parse("0/chat").unwrap();
        assert_eq!(p.nsp, "/chat");
        let p = parse("51-/x,3[\"f\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.nsp, p.id),
            (SioType::BinaryEvent, 1, "/x", Some(3))
        );
        for bad in ["", "9", "5[]", "5x-[]", "599-[]", "21234567890123456[]"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_packets() {
        let mut s = String::new();
        encode(&mut s, SioType::Event, "/", None, "[\"a\"]");
        assert_eq!(s, "42[\"a\"]");
        s.clear();
        encode(&mut s, SioType::Ack, "/chat", Some(5), "[]");
        assert_eq!(s, "43/chat,5[]");
        s.clear();
        encode(&mut s, SioType::Connect, "/", None, "");
        assert_eq!(s, "40");
    }

    #[test]
    fn event_shape() {
        assert!(looks_like_event("[\"news\",{\"n\":1}]"));
        assert!(looks_like_event(" [ \"x\" ] "));
        assert!(!looks_like_event("hello"));
        assert!(!looks_like_event("[1,2]"));
        assert!(!looks_like_event("{\"a\":1}"));
    }

    #[test]
    fn placeholders_become_base64() {
        let data = "[\"f\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":7}]";
        assert_eq!(
            fill_placeholders(data, &[vec![1, 2, 3]]),
            "[\"f\",{\"_binary\":\"AQID\"},{\"_placeholder\":true,\"num\":7}]"
        );
    }
}

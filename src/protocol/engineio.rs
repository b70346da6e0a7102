//! Engine.IO v3 and v4 packets and HTTP long-polling payloads, sans-IO.
//!
//! An Engine.IO packet is a type digit followed by its data: `0` open, `1` close, `2` ping,
//! `3` pong, `4` message, `5` upgrade, `6` noop. Over a WebSocket each frame is one packet
//! (binary frames carry binary messages: raw in v4, behind a type byte in v3). Over
//! long-polling several packets travel in one payload:
//! - v4: packets joined by the record separator `\x1e`; binary packets are `b<base64>`.
//! - v3: each packet prefixed with its length in UTF-16 code units and `:`
//!   (`6:4hello`); binary packets are `b4<base64>`; clients with XHR2 may also POST the binary
//!   payload format (`<0|1><length digits as bytes>\xff<packet>` per packet).
//! - JSONP (v3): the payload is wrapped as `___eio[<j>]("<payload as a JSON string>");` and
//!   POSTed back form-encoded as `d=<payload>`.
//!
//! Only what the server sends is encoded: text packets (pushes are text).
use base64::Engine as _;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioVersion {
    V3,
    V4,
}

impl EioVersion {
    /// From the `EIO` query parameter.
    pub fn from_param(v: &str) -> Option<EioVersion> {
        match v {
            "3" => Some(EioVersion::V3),
            "4" => Some(EioVersion::V4),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open,
    Close,
    Ping,
    Pong,
    Message,
    Upgrade,
    Noop,
}

impl PacketType {
    pub fn from_digit(b: u8) -> Option<PacketType> {
        Some(match b {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }

    pub fn digit(self) -> char {
        match self {
            PacketType::Open => '0',
            PacketType::Close => '1',
            PacketType::Ping => '2',
            PacketType::Pong => '3',
            PacketType::Message => '4',
            PacketType::Upgrade => '5',
            PacketType::Noop => '6',
        }
    }
}

/// One packet received from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A text packet: its type and data (without the type digit).
    Text(PacketType, &'a str),
    /// A binary message.
    Binary(Vec<u8>),
}

/// A malformed packet or payload (answered 400 on polling, closed 1002 on a WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioError {
    BadPacket,
    BadPayload,
}

impl std::fmt::Display for EioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EioError::BadPacket => "malformed Engine.IO packet",
            EioError::BadPayload => "malformed Engine.IO payload",
        })
    }
}

/// Decode one text packet (a WebSocket text frame, or one packet of a payload).
pub fn decode_text(text: &str) -> Result<Packet<'_>, EioError> {
    let first = *text.as_bytes().first().ok_or(EioError::BadPacket)?;
    if first == b'b' {
        return decode_base64(&text[1..]);
    }
    let kind = PacketType::from_digit(first).ok_or(EioError::BadPacket)?;
    Ok(Packet::Text(kind, &text[1..]))
}

/// `b<base64>` (v4) or `b4<base64>` (v3), after the `b`.
fn decode_base64(rest: &str) -> Result<Packet<'static>, EioError> {
    let data = rest.strip_prefix('4').unwrap_or(rest);
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map(Packet::Binary)
        .map_err(|_| EioError::BadPacket)
}

/// Decode a WebSocket binary frame: the message as-is in v4, behind a type byte in v3.
pub fn decode_binary_frame(version: EioVersion, data: &[u8]) -> Result<Vec<u8>, EioError> {
    match version {
        EioVersion::V4 => Ok(data.to_vec()),
        EioVersion::V3 => match data.split_first() {
            Some((4, rest)) => Ok(rest.to_vec()),
            _ => Err(EioError::BadPacket),
        },
    }
}

/// How a polling POST body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `text/plain` payload of the version's text format.
    Text,
    /// v3 binary payload (`application/octet-stream`).
    Binary,
    /// JSONP form post: `d=<urlencoded payload>`.
    Form,
}

/// Decode a polling POST body, calling `f` for each packet in order.
pub fn decode_payload<'a>(
    version: EioVersion,
    format: BodyFormat,
    body: &'a [u8],
    f: &mut dyn FnMut(Packet<'_>),
) -> Result<(), EioError> {
    match format {
        BodyFormat::Binary => decode_v3_binary(body, f),
        BodyFormat::Form => {
            let d = form_field(body, b"d").ok_or(EioError::BadPayload)?;
            // Old clients escape newlines in the form field as "\\n".
            let d = d.replace("\\\n", "\n");
            decode_text_payload(version, &d, f)
        }
        BodyFormat::Text => {
            let text = std::str::from_utf8(body).map_err(|_| EioError::BadPayload)?;
            decode_text_payload(version, text, f)
        }
    }
}

fn decode_text_payload(
    version: EioVersion,
    text: &str,
    f: &mut dyn FnMut(Packet<'_>),
) -> Result<(), EioError> {
    match version {
        EioVersion::V4 => {
            for part in text.split('\x1e') {
                f(decode_text(part).map_err(|_| EioError::BadPayload)?);
            }
            Ok(())
        }
        EioVersion::V3 => {
            let mut rest = text;
            if rest.is_empty() {
                return Err(EioError::BadPayload);
            }
            while !rest.is_empty() {
                let colon = rest.find(':').ok_or(EioError::BadPayload)?;
                let units: usize = rest[..colon].parse().map_err(|_| EioError::BadPayload)?;
                let body = &rest[colon + 1..];
                let end = utf16_prefix(body, units).ok_or(EioError::BadPayload)?;
                if end == 0 {
                    return Err(EioError::BadPayload);
                }
                f(decode_text(&body[..end]).map_err(|_| EioError::BadPayload)?);
                rest = &body[end..];
            }
            Ok(())
        }
    }
}

/// The byte length of the prefix of `s` that is `units` UTF-16 code units long.
fn utf16_prefix(s: &str, units: usize) -> Option<usize> {
    let mut n = 0;
    for (i, c) in s.char_indices() {
        if n == units {
            return Some(i);
        }
        n += c.len_utf16();
        if n > units {
            return None;
        }
    }
    (n == units).then_some(s.len())
}

/// Length of `s` in UTF-16 code units (the v3 payload length unit).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

fn decode_v3_binary(mut body: &[u8], f: &mut dyn FnMut(Packet<'_>)) -> Result<(), EioError> {
    if body.is_empty() {
        return Err(EioError::BadPayload);
    }
    while !body.is_empty() {
        let is_binary = match body[0] {
            0 => false,
            1 => true,
            _ => return Err(EioError::BadPayload),
        };
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let d = *body.get(i).ok_or(EioError::BadPayload)?;
            i += 1;
            if d == 0xff {
                break;
            }
            if d > 9 || i > 12 {
                return Err(EioError::BadPayload);
            }
            len = len * 10 + d as usize;
        }
        let data = body.get(i..i + len).ok_or(EioError::BadPayload)?;
        if is_binary {
            match data.split_first() {
                Some((4, rest)) => f(Packet::Binary(rest.to_vec())),
                _ => return Err(EioError::BadPayload),
            }
        } else {
            let text = std::str::from_utf8(data).map_err(|_| EioError::BadPayload)?;
            f(decode_text(text).map_err(|_| EioError::BadPayload)?);
        }
        body = &body[i + len..];
    }
    Ok(())
}

/// The value of `name` in a form-urlencoded body, decoded.
fn form_field(body: &[u8], name: &[u8]) -> Option<String> {
    for pair in body.split(|&b| b == b'&') {
        let (k, v) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        if k == name {
            return percent_decode(v);
        }
    }
    None
}

fn percent_decode(v: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = v.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Append a polling payload of text packets (each with its type digit) to `out`.
pub fn encode_payload<'p>(
    version: EioVersion,
    packets: impl IntoIterator<Item = &'p str>,
    out: &mut String,
) {
    let mut first = true;
    for p in packets {
        match version {
            EioVersion::V4 => {
                if !first {
                    out.push('\x1e');
                }
            }
            EioVersion::V3 => {
                let _ = write!(out, "{}:", utf16_len(p));
            }
        }
        out.push_str(p);
        first = false;
    }
}

/// Wrap a payload for JSONP: `___eio[<index>]("<payload>");`.
pub fn wrap_jsonp(index: u32, payload: &str, out: &mut String) {
    let _ = write!(out, "___eio[{index}](");
    json_string(payload, out);
    out.push_str(");");
}

/// Append `s` as a JSON string literal (also safe inside a `<script>`: U+2028/9 escaped).
pub fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 || c == '<' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The open packet (`0{...}`) announcing a session.
pub fn open_packet(
    version: EioVersion,
    sid: &str,
    upgrades: bool,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> String {
    let upgrades = if upgrades { "[\"websocket\"]" } else { "[]" };
    match version {
        EioVersion::V4 => format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{ping_interval_ms},\"pingTimeout\":{ping_timeout_ms},\"maxPayload\":{max_payload}}}"
        ),
        EioVersion::V3 => format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{ping_interval_ms},\"pingTimeout\":{ping_timeout_ms}}}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(v: EioVersion, fmt: BodyFormat, body: &[u8]) -> Result<Vec<String>, EioError> {
        let mut got = Vec::new();
        decode_payload(v, fmt, body, &mut |p| {
            got.push(match p {
                Packet::Text(t, d) => format!("{}{d}", t.digit()),
                Packet::Binary(b) => format!("bin:{b:?}"),
            })
        })?;
        Ok(got)
    }

    #[test]
    fn v4_payloads_split_on_record_separator() {
        let got = decode_all(EioVersion::V4, BodyFormat::Text, b"42[\"a\"]\x1e3\x1ebAQID").unwrap();
        assert_eq!(got, ["42[\"a\"]", "3", "bin:[1, 2, 3]"]);
        assert!(decode_all(EioVersion::V4, BodyFormat::Text, b"9x").is_err());
        assert!(decode_all(EioVersion::V4, BodyFormat::Text, b"").is_err());
    }

    #[test]
    fn v3_payloads_count_utf16_units() {
        // "é" is one unit, "😀" two.
        let body = "1:24:4é😀";
        let got = decode_all(EioVersion::V3, BodyFormat::Text, body.as_bytes()).unwrap();
        assert_eq!(got, ["2", "4é😀"]);
        let got = decode_all(EioVersion::V3, BodyFormat::Text, b"6:b4AQI=").unwrap();
        assert_eq!(got, ["bin:[1, 2]"]);
        for bad in [&b"5:2"[..], b"x:2", b"1:", b"0:", b"2:2", b"3:4\xe9"] {
            assert!(
                decode_all(EioVersion::V3, BodyFormat::Text, bad).is_err(),
                "{bad:?}"
            );
        }
        let mut out = String::new();
        encode_payload(EioVersion::V3, ["0{}", "4é😀", "40"], &mut out);
        assert_eq!(out, "3:0{}4:4é😀2:40");
        let mut out = String::new();
        encode_payload(EioVersion::V4, ["2", "42[1]"], &mut out);
        assert_eq!(out, "2\x1e42[1]");
    }

    #[test]
    fn v3_binary_payload() {
        let mut body = vec![0, 1, 0xff, b'2'];
        body.extend_from_slice(&[1, 4, 0xff, 4, 9, 8, 7]);
        body.extend_from_slice(&[0, 9, 0xff]);
        body.extend_from_slice(b"42[\"x\",1]");
        let got = decode_all(EioVersion::V3, BodyFormat::Binary, &body).unwrap();
        assert_eq!(got, ["2", "bin:[9, 8, 7]", "42[\"x\",1]"]);
        assert!(decode_all(EioVersion::V3, BodyFormat::Binary, &[0, 5, 0xff, b'2']).is_err());
        assert!(decode_all(EioVersion::V3, BodyFormat::Binary, &[2, 1, 0xff, b'2']).is_err());
    }

    #[test]
    fn jsonp_form_and_wrap() {
        let got = decode_all(EioVersion::V3, BodyFormat::Form, b"d=9%3A42%5B%22a+b%22%5D").unwrap();
        assert_eq!(got, ["42[\"a b\"]"]);
        assert!(decode_all(EioVersion::V3, BodyFormat::Form, b"x=1").is_err());
        let mut out = String::new();
        wrap_jsonp(2, "4:42\"\u{2028}", &mut out);
        assert_eq!(out, "___eio[2](\"4:42\\\"\\u2028\");");
    }

    #[test]
    fn websocket_frames() {
        assert_eq!(
            decode_text("2probe").unwrap(),
            Packet::Text(PacketType::Ping, "probe")
        );
        assert_eq!(
            decode_text("5").unwrap(),
            Packet::Text(PacketType::Upgrade, "")
        );
        assert!(decode_text("").is_err());
        assert!(decode_text("7").is_err());
        assert_eq!(decode_binary_frame(EioVersion::V3, &[4, 1]).unwrap(), [1]);
        assert!(decode_binary_frame(EioVersion::V3, &[1]).is_err());
        assert_eq!(decode_binary_frame(EioVersion::V4, &[1]).unwrap(), [1]);
    }

    #[test]
    fn open_packets() {
        assert_eq!(
            open_packet(EioVersion::V4, "abc", true, 25000, 20000, 1000000),
            "0{\"sid\":\"abc\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}"
        );
        assert_eq!(
            open_packet(EioVersion::V3, "abc", false, 25000, 5000, 1),
            "0{\"sid\":\"abc\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":5000}"
        );
    }
}

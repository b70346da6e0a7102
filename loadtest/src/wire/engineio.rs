//! Engine.IO (v3 and v4) and Socket.IO packets: the open packet, push events, and
//! long-polling payloads.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::wire::messages::PUSH_EVENT;

/// What the open packet announces.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    pub sid: String,
    pub ping_interval: u64,
    pub ping_timeout: u64,
}

/// Parses the open packet `0{...}`.
pub fn parse_open(packet: &str) -> Result<OpenInfo, String> {
    let json = packet.strip_prefix('0').ok_or("sio_no_open")?;
    serde_json::from_str(json).map_err(|_| "sio_bad_open".to_string())
}

/// The message of a push-scenario event (`["lt","<message>"]`, the data of a `42`
/// packet); `None` for any other event.
pub fn unwrap_push(event: &str) -> Option<String> {
    let (name, message): (String, String) = serde_json::from_str(event).ok()?;
    (name == PUSH_EVENT).then_some(message)
}

/// Encodes packets as a long-polling payload: EIO 4 joins them with the record separator,
/// EIO 3 prefixes each with its length in UTF-16 code units and `:`.
pub fn encode_payload(eio: u8, packets: &[&str]) -> String {
    if eio >= 4 {
        return packets.join("\x1e");
    }
    let mut out = String::new();
    for p in packets {
        let _ = write!(out, "{}:{p}", p.encode_utf16().count());
    }
    out
}

/// Decodes a long-polling payload (text packets) into its packets.
pub fn decode_payload(eio: u8, body: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "bad_payload".to_string())?;
    if eio >= 4 {
        return Ok(text.split('\x1e').map(str::to_string).collect());
    }
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (len, after) = rest.split_once(':').ok_or("bad_payload")?;
        let want: usize = len.parse().map_err(|_| "bad_payload".to_string())?;
        let (mut units, mut end) = (0usize, 0usize);
        for (i, ch) in after.char_indices() {
            if units >= want {
                break;
            }
            units += ch.len_utf16();
            end = i + ch.len_utf8();
        }
        if units != want {
            return Err("bad_payload".to_string());
        }
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_roundtrip() {
        let packets = ["40", "42[\"lt\",\"é😀\"]", "2", ""];
        for eio in [3, 4] {
            let enc = encode_payload(eio, &packets);
            assert_eq!(decode_payload(eio, enc.as_bytes()).unwrap(), packets);
        }
        assert_eq!(encode_payload(4, &["40", "2"]), "40\x1e2");
        // EIO 3 lengths are in UTF-16 code units.
        assert_eq!(encode_payload(3, &["4😀"]), "3:4😀");
        assert_eq!(
            decode_payload(3, "2:404:2abc".as_bytes()).unwrap(),
            ["40", "2abc"]
        );
        assert!(decode_payload(3, b"5:40").is_err());
        assert!(decode_payload(3, b"x:40").is_err());
        assert_eq!(decode_payload(4, b"6").unwrap(), ["6"]);
    }

    #[test]
    fn open_and_events() {
        let o = parse_open(
            r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        assert_eq!(
            (o.sid.as_str(), o.ping_interval, o.ping_timeout),
            ("abc", 25000, 20000)
        );
        assert!(parse_open("40").is_err());
        assert_eq!(
            unwrap_push(r#"["lt","{\"seq\":1,\"ts\":2}"]"#).as_deref(),
            Some(r#"{"seq":1,"ts":2}"#)
        );
        assert_eq!(unwrap_push(r#"["other","x"]"#), None);
        assert_eq!(unwrap_push(r#"["lt",1]"#), None);
    }
}

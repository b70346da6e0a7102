//! How positions travel on a raw endpoint with history on.
//!
//! Each push is one text message:
//! `{"type":"push","epoch":"<16 hex>","offset":<n>,"data":"<the pushed text>"}`.
//! Once per connection, after the replayed messages and before any live one:
//! `{"type":"recovery","resumed":<bool>,"recovered":<bool>,"epoch":"<16 hex>","offset":<n>,"replayed":<n>}`
//! (`offset`: the position the client now has; `recovered`: it asked to resume and nothing
//! it missed was lost). A client resumes with `?epoch=<16 hex>&since=<offset>` on the
//! upgrade.
use super::Position;
use crate::service::refusal::Refusal;
use std::io::Write;

/// The resume position of an upgrade's query, if any. Refused if `epoch` / `since` are
/// malformed or only one of them is there.
pub fn parse_resume(query: &str) -> Result<Option<Position>, Refusal> {
    let param = |name| crate::protocol::handshake::query_param(query, name);
    match (param("epoch"), param("since")) {
        (None, None) => Ok(None),
        (Some(epoch), Some(since)) => {
            if epoch.len() != 16 {
                return Err(Refusal::BadResume);
            }
            let epoch = u64::from_str_radix(epoch, 16).map_err(|_| Refusal::BadResume)?;
            let offset = since.parse::<u64>().map_err(|_| Refusal::BadResume)?;
            Ok(Some(Position { epoch, offset }))
        }
        _ => Err(Refusal::BadResume),
    }
}

/// The epoch as it is written on the wire (16 lowercase hex digits).
pub fn epoch_hex(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// Write the envelope of one push into `out` (cleared first). A push the store could not
/// record (`None`: the nats store was unreachable) has no position.
pub fn push(out: &mut Vec<u8>, at: Option<Position>, text: &str) {
    out.clear();
    out.extend_from_slice(b"{\"type\":\"push\",");
    if let Some(at) = at {
        let _ = write!(
            out,
            "\"epoch\":\"{:016x}\",\"offset\":{},",
            at.epoch, at.offset
        );
    }
    out.extend_from_slice(b"\"data\":");
    let _ = serde_json::to_writer(&mut *out, text);
    out.push(b'}');
}

/// What a connection is told once, after its replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub resumed: bool,
    pub recovered: bool,
    pub at: Position,
    pub replayed: usize,
}

/// Write the recovery marker into `out` (cleared first).
pub fn marker(out: &mut Vec<u8>, m: Marker) {
    out.clear();
    let _ = write!(
        out,
        "{{\"type\":\"recovery\",\"resumed\":{},\"recovered\":{},\"epoch\":\"{:016x}\",\"offset\":{},\"replayed\":{}}}",
        m.resumed, m.recovered, m.at.epoch, m.at.offset, m.replayed
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_parameters_both_or_neither() {
        assert_eq!(parse_resume("session=x"), Ok(None));
        assert_eq!(
            parse_resume("session=x&epoch=00000000000000ff&since=42"),
            Ok(Some(Position {
                epoch: 255,
                offset: 42
            }))
        );
        for bad in [
            "epoch=00000000000000ff",
            "since=1",
            "epoch=ff&since=1",
            "epoch=00000000000000fg&since=1",
            "epoch=00000000000000ff&since=-1",
            "epoch=00000000000000ff&since=",
        ] {
            assert!(parse_resume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn envelopes_are_json_with_the_text_escaped() {
        let mut out = Vec::new();
        let at = Position {
            epoch: 0xab,
            offset: 7,
        };
        push(&mut out, None, "x");
        assert_eq!(out, br#"{"type":"push","data":"x"}"#);
        push(&mut out, Some(at), "say \"hi\"\n");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "push");
        assert_eq!(v["epoch"], "00000000000000ab");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["data"], "say \"hi\"\n");
        marker(
            &mut out,
            Marker {
                resumed: true,
                recovered: false,
                at,
                replayed: 3,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "recovery");
        assert_eq!(
            (v["resumed"].as_bool(), v["recovered"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(
            (v["offset"].as_u64(), v["replayed"].as_u64()),
            (Some(7), Some(3))
        );
    }
}

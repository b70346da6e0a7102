//! What a ringwire raw endpoint with `history = true` sends: every push wrapped in an
//! envelope with its position, and once per connection a recovery marker.
//!
//! - `{"type":"push","epoch":"<16 hex>","offset":N,"data":"<the pushed text>"}`
//! - `{"type":"recovery","resumed":B,"recovered":B,"epoch":"<hex>","offset":N,"replayed":N}`,
//!   after the replayed (missed) pushes and before any live one.
//!
//! A client resumes by upgrading with `epoch=<epoch>&since=<offset>` in the query.

use serde::Deserialize;

/// A position in a user's push history: offsets strictly increase within an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// One pushed message with its position.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushEnvelope {
    pub epoch: String,
    pub offset: u64,
    /// The pushed text as it was given to the push API.
    pub data: String,
}

/// The recovery marker: what the server made of the connection's resume request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecoveryMarker {
    /// The client asked to resume (sent `epoch` and `since`).
    pub resumed: bool,
    /// Resumed, and every push since the client's position was replayed.
    pub recovered: bool,
    /// The position the client has now.
    pub epoch: String,
    pub offset: u64,
    /// Pushes replayed before this marker.
    pub replayed: u64,
}

/// A text frame of a history endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Envelope {
    Push(PushEnvelope),
    Recovery(RecoveryMarker),
}

impl Envelope {
    /// Parses a text frame; `None` if it is not an envelope.
    pub fn parse(text: &str) -> Option<Envelope> {
        if !text.starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

/// An epoch as the server writes it: 16 lowercase hex digits.
pub fn is_valid_epoch(epoch: &str) -> bool {
    epoch.len() == 16
        && epoch
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_parse() {
        let push = r#"{"type":"push","epoch":"00000000000000ab","offset":7,"data":"{\"seq\":1}"}"#;
        assert_eq!(
            Envelope::parse(push),
            Some(Envelope::Push(PushEnvelope {
                epoch: "00000000000000ab".into(),
                offset: 7,
                data: "{\"seq\":1}".into(),
            }))
        );
        let marker = r#"{"type":"recovery","resumed":true,"recovered":false,
            "epoch":"00000000000000ab","offset":9,"replayed":2}"#;
        assert_eq!(
            Envelope::parse(marker),
            Some(Envelope::Recovery(RecoveryMarker {
                resumed: true,
                recovered: false,
                epoch: "00000000000000ab".into(),
                offset: 9,
                replayed: 2,
            }))
        );
        assert_eq!(Envelope::parse(r#"{"seq":1,"ts":2}"#), None);
        assert_eq!(Envelope::parse(r#"{"type":"other"}"#), None);
        assert_eq!(Envelope::parse("hello"), None);
        assert!(is_valid_epoch("0123456789abcdef"));
        assert!(!is_valid_epoch("0123456789ABCDEF"));
        assert!(!is_valid_epoch("abc"));
    }
}

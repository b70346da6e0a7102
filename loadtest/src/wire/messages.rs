//! The scenario messages: echo payloads (`e:<conn>:<seq>:<t_us>:xx..`), echo-check
//! payloads (`chk:<conn>:<t_us>`) and pushed messages
//! (`{"seq":S,"ts":T[,"user":U,"user_seq":N]}`).

use serde::Deserialize;

/// The Socket.IO event name of the push scenario's messages (`["lt","<message>"]`).
pub const PUSH_EVENT: &str = "lt";

/// Builds an echo-scenario payload: `e:<id>:<seq>:<t_us>:` padded with 'x' to `bytes`.
pub fn echo_payload(id: u64, seq: u64, t_us: u64, bytes: usize) -> String {
    let mut s = format!("e:{id}:{seq}:{t_us}:");
    if s.len() < bytes {
        s.extend(std::iter::repeat_n('x', bytes - s.len()));
    }
    s
}

/// Parses an echo payload; returns (id, seq, t_us) if it is well formed for `bytes`.
pub fn parse_echo_payload(s: &str, bytes: usize) -> Option<(u64, u64, u64)> {
    let rest = s.strip_prefix("e:")?;
    let mut it = rest.splitn(4, ':');
    let id = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    let pad = it.next()?;
    let header_len = s.len() - pad.len();
    let want_len = bytes.max(header_len);
    (s.len() == want_len && pad.bytes().all(|b| b == b'x')).then_some((id, seq, t))
}

/// The echo-check payload of connection `id`.
pub fn check_payload(id: u64, t_us: u64) -> String {
    format!("chk:{id}:{t_us}")
}

/// The message carried by every push (JSON, embedded as a string in the push):
/// `{"seq":S,"ts":<unix ns taken right before the HTTP request was sent>}`; with
/// `--recover` also `"user":U,"user_seq":N` (N counts the pushes to user U from 0);
/// optionally a `"pad"` field.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct PushMessage {
    pub seq: u64,
    pub ts: u64,
    #[serde(default)]
    pub user: Option<u64>,
    #[serde(default)]
    pub user_seq: Option<u64>,
}

/// Parses a pushed message; `None` if it is not one of ours.
pub fn parse_push_message(text: &str) -> Option<PushMessage> {
    if !text.starts_with("{\"seq\":") {
        return None;
    }
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        for bytes in [0, 8, 32, 100, 4096] {
            let s = echo_payload(7, 3, 123_456, bytes);
            assert!(s.len() >= bytes);
            assert_eq!(parse_echo_payload(&s, bytes), Some((7, 3, 123_456)));
            let mut bad = s.clone();
            bad.push('x');
            assert_eq!(parse_echo_payload(&bad, bytes), None);
        }
        assert_eq!(parse_echo_payload("e:1:2:3:xxy", 11), None);
        assert_eq!(parse_echo_payload("hello", 5), None);
    }
}

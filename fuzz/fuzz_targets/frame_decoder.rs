//! WsConnection::read on arbitrary bytes, split at a fuzzer-chosen
//! point, with and without permessage-deflate. Checks: no panic, events
//! are well-formed (text is UTF-8, within limits), the owed frames are
//! drained, and the split does not change the outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringwire::protocol::close::CloseReason;
use ringwire::protocol::deflate::{DeflateParams, SharedDeflate};
use ringwire::protocol::{Event, MessageKind, ProtocolError, WsConnection, WsLimits};

const LIMITS: WsLimits = WsLimits {
    max_frame_bytes: 4096,
    max_message_bytes: 8192,
};

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Msg(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn run(
    input: &[u8],
    cuts: &[usize],
    deflate: Option<DeflateParams>,
) -> (Vec<Ev>, Option<ProtocolError>, Vec<u8>) {
    let mut conn = WsConnection::new(LIMITS, deflate);
    let mut zlib = SharedDeflate::new();
    let mut evs = Vec::new();
    let mut err = None;
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        let c = c.clamp(last, input.len());
        let mut piece = input[last..c].to_vec();
        last = c;
        let mut rx = conn.read(&mut piece, &mut zlib);
        while let Some(next) = rx.next_event() {
            match next {
                Ok(e) => evs.push(match e {
                    Event::Message(k, p) => {
                        assert!(p.len() <= LIMITS.max_message_bytes);
                        if k == MessageKind::Text {
                            assert!(std::str::from_utf8(p).is_ok());
                        }
                        Ev::Msg(k, p.to_vec())
                    }
                    Event::Ping(p) => {
                        assert!(p.len() <= 125);
                        Ev::Ping(p.to_vec())
                    }
                    Event::Pong(p) => {
                        assert!(p.len() <= 125);
                        Ev::Pong(p.to_vec())
                    }
                    Event::Close { code, reason } => Ev::Close(code, reason.to_string()),
                }),
                Err(e) => {
                    assert!(err.is_none(), "one error only");
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                    err = Some(e);
                }
            }
            // The owed frames, drained after each event as the runtime does.
            rx.poll_transmit(&mut out);
        }
        drop(rx);
        assert!(!conn.has_pending_transmit());
        if err.is_some() {
            assert!(conn.is_closing());
            break;
        }
    }
    // The close frame is the last thing owed: the echo (the client's code, or 1000), or the
    // close of the error.
    let mut close = Vec::new();
    if let Some(e) = err {
        let why = CloseReason::from(e);
        WsConnection::encode_close(&mut close, why.code(), why.reason());
    } else if let Some(Ev::Close(code, _)) = evs.last() {
        WsConnection::encode_close(&mut close, code.unwrap_or(1000), "");
    }
    if !close.is_empty() {
        assert!(conn.is_closing());
        assert!(out.ends_with(&close));
    }
    (evs, err, out)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let input = &data[2..];
    let split = split % (input.len() + 1);
    for deflate in [
        None,
        Some(DeflateParams::default()),
        Some(DeflateParams {
            client_no_context_takeover: true,
            server_no_context_takeover: true,
            ..DeflateParams::default()
        }),
    ] {
        let whole = run(input, &[], deflate);
        let split_run = run(input, &[split], deflate);
        // Same events; both fail or neither (which check trips first may
        // differ, e.g. UTF-8 vs size while inflating in different pieces).
        assert_eq!(whole.0, split_run.0, "split at {split}");
        assert_eq!(whole.1.is_some(), split_run.1.is_some(), "split at {split}");
        if deflate.is_none() {
            assert_eq!(whole.1, split_run.1, "split at {split}");
            // And the same frames owed (Pongs, the close echo, the close of the error).
            assert_eq!(whole.2, split_run.2, "split at {split}");
        }
        // And a reply is always encodable.
        let mut out = Vec::new();
        let mut conn = WsConnection::new(LIMITS, deflate);
        if let Some(Ev::Msg(k, p)) = whole.0.first() {
            conn.encode_message(&mut SharedDeflate::new(), &mut out, *k, p);
        }
        if let Some(e) = whole.1 {
            WsConnection::encode_close(&mut out, e.close_code(), e.reason());
        }
    }
});

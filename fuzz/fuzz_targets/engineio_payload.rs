//! Engine.IO payloads (every version and body format) and the Socket.IO packets inside them,
//! on arbitrary bytes: must never panic; text packets re-encoded as a payload decode back to
//! the same packets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringwire::protocol::engineio::{
    decode_payload, encode_payload, BodyFormat, EioVersion, Packet,
};
use ringwire::protocol::socketio;

fuzz_target!(|data: &[u8]| {
    for version in [EioVersion::V3, EioVersion::V4] {
        for format in [BodyFormat::Text, BodyFormat::Binary, BodyFormat::Form] {
            let mut texts = Vec::new();
            let _ = decode_payload(version, format, data, &mut |p| {
                if let Packet::Text(t, d) = p {
                    if let Ok(sio) = socketio::parse(d) {
                        assert!(sio.attachments <= socketio::MAX_ATTACHMENTS);
                        let _ = socketio::fill_placeholders(sio.data, &[vec![1, 2, 3]]);
                    }
                    texts.push(format!("{}{d}", t.digit()));
                }
            });
            // Round trip (v4 separates packets with \x1e, so packets must not contain it).
            if texts.is_empty() || texts.iter().any(|t| t.contains('\x1e')) {
                continue;
            }
            let mut payload = String::new();
            encode_payload(version, texts.iter().map(String::as_str), &mut payload);
            let mut again = Vec::new();
            decode_payload(version, BodyFormat::Text, payload.as_bytes(), &mut |p| {
                if let Packet::Text(t, d) = p {
                    again.push(format!("{}{d}", t.digit()));
                }
            })
            .expect("re-encoded payload decodes");
            // Text packets starting with 'b' were decoded as binary and are not in `texts`.
            assert_eq!(texts, again);
        }
    }
});

//! HTTP upgrade request parsing, validation and deflate negotiation on
//! arbitrary bytes: must never panic, and everything it returns must be
//! consistent with the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringwire::protocol::deflate::{negotiate, DeflateConfig};
use ringwire::protocol::handshake::{
    body_length, cookie, cookies, is_upgrade_request, parse_request, query_param, validate_upgrade,
    write_error_response, write_switching_protocols_with_protocol, HandshakeLimits,
};

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits {
        max_header_bytes: 4096,
        max_headers: 32,
    };
    let mut out = Vec::new();
    match parse_request(data, &limits) {
        Ok(Some(req)) => {
            assert!(req.head_len <= data.len() && req.head_len <= limits.max_header_bytes);
            let _ = is_upgrade_request(&req);
            let _ = query_param(req.query, "token");
            let _ = cookie(&req, "session");
            assert_eq!(cookies(&req, "session").next(), cookie(&req, "session"));
            match body_length(&req) {
                // A length is only ever what every Content-Length value said.
                Ok(n) => assert!(
                    n == 0 && req.headers.get("content-length").is_none()
                        || req.headers.get("content-length").is_some()
                ),
                Err(e) => {
                    assert!(e.is_handshake() && e.http_status() == 400);
                    write_error_response(&mut out, &e);
                    out.clear();
                }
            }
            match validate_upgrade(&req) {
                Ok(up) => {
                    assert_eq!(up.key.len(), 24);
                    let ext = up.deflate_offer.and_then(|offer| {
                        let cfgs = [
                            DeflateConfig::default(),
                            DeflateConfig {
                                server_max_window_bits: 8,
                                allow_no_context_takeover: false,
                                ..DeflateConfig::default()
                            },
                        ];
                        let mut last = None;
                        for cfg in cfgs {
                            if let Some((p, resp)) = negotiate(offer, &cfg) {
                                assert!((8..=15).contains(&p.server_max_window_bits));
                                assert!(
                                    p.server_max_window_bits <= cfg.server_max_window_bits.max(8)
                                );
                                assert!(resp.starts_with("permessage-deflate"));
                                last = Some(resp);
                            }
                        }
                        last
                    });
                    write_switching_protocols_with_protocol(
                        &mut out,
                        up.key,
                        ext.as_deref(),
                        up.protocols,
                    );
                    assert!(out.ends_with(b"\r\n\r\n"));
                }
                Err(e) => {
                    assert!(e.is_handshake());
                    write_error_response(&mut out, &e);
                }
            }
        }
        Ok(None) => assert!(data.len() <= limits.max_header_bytes),
        Err(e) => {
            assert!(e.is_handshake());
            write_error_response(&mut out, &e);
        }
    }
    // The extension negotiator on its own, on any UTF-8 prefix.
    let s = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or(""),
    };
    let _ = negotiate(s, &DeflateConfig::default());
});

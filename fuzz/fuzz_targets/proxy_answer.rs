//! An `auth = "proxy"` application's answer (status and body, arbitrary bytes): must never
//! panic; a refusal's reason is one printable line within its bound (it goes into an HTTP
//! answer), an admitted identity keeps the attribute bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringwire::service::proxy_auth::{
    parse_answer, ProxyAnswer, MAX_ATTRS, MAX_ATTR_KEY, MAX_ATTR_VALUE, MAX_REASON_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else {
        return;
    };
    let status = [200, 204, 401, 403, 500, 302][s as usize % 6];
    match parse_answer(status, body) {
        ProxyAnswer::Admit(id) => {
            assert!((200..300).contains(&status));
            assert!(id.attrs.len() <= MAX_ATTRS);
            for (k, v) in &id.attrs {
                assert!(k.len() <= MAX_ATTR_KEY && v.len() <= MAX_ATTR_VALUE);
            }
        }
        ProxyAnswer::Refuse { status: st, reason } => {
            assert!(st == 401 || st == 403);
            assert!(!reason.is_empty() && reason.len() <= MAX_REASON_BYTES);
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
        }
        ProxyAnswer::Unavailable { busy, .. } => assert!(!busy),
    }
});

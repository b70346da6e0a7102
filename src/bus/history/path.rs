//! The path filter of a recorded push, kept in the header `Ringwire-Path` of its message
//! (absent: every path, the common `*`), so that a resume replays a socket only what live
//! delivery would have sent it. A filter is any text up to 1 KiB: bytes that a header value
//! cannot carry as they are (controls, spaces, non-ASCII) and `%` are written as `%XX`.
use crate::service::path_filter::PathFilter;

/// The header naming the push's path filter.
pub const PATH_HEADER: &str = "Ringwire-Path";

/// The header value of `filter`: printable ASCII as it is, other bytes and `%` as `%XX`.
pub fn encode(filter: &PathFilter) -> String {
    let mut out = String::with_capacity(filter.as_str().len());
    for &b in filter.as_str().as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The filter of a header value written by [`encode`] (a `%` not followed by two hex digits
/// is taken as it is).
pub fn decode(value: &str) -> PathFilter {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathFilter::new(&String::from_utf8_lossy(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_filter_survives_the_header() {
        for p in [
            "/a/*",
            "/socket.io/?x",
            "a b",
            "100%",
            "/é\r\nX: y",
            "%zz",
            "",
        ] {
            let f = PathFilter::new(p);
            let v = encode(&f);
            assert!(v.bytes().all(|b| b.is_ascii_graphic()), "{v:?}");
            assert_eq!(decode(&v), f, "{p:?} as {v:?}");
        }
        assert_eq!(encode(&PathFilter::new("/b*")), "/b*");
        assert_eq!(decode("%zz%4"), PathFilter::new("%zz%4"));
    }
}

//! Failure kinds: every failed attempt or dropped connection is counted under a short,
//! stable name (`refused`, `timeout`, `http_503`, ...) in the report.

use std::io;

/// A failed connection attempt: its kind, and the server's `Retry-After` (seconds) if it
/// refused with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub kind: String,
    pub retry_after: Option<u64>,
}

impl From<String> for ConnectError {
    fn from(kind: String) -> Self {
        ConnectError {
            kind,
            retry_after: None,
        }
    }
}

impl From<&str> for ConnectError {
    fn from(kind: &str) -> Self {
        kind.to_string().into()
    }
}

/// A `Retry-After` value in seconds (the HTTP-date form is not used for this).
pub fn parse_retry_after(v: &str) -> Option<u64> {
    v.trim().parse().ok()
}

/// Classifies an I/O error into a short, stable kind name for the report.
pub fn classify_io(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => return "refused",
        Some(libc::ECONNRESET) | Some(libc::EPIPE) | Some(libc::ECONNABORTED) => return "reset",
        Some(libc::ETIMEDOUT) => return "timeout",
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => return "addr_unavailable",
        Some(libc::EMFILE) | Some(libc::ENFILE) => return "fd_limit",
        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => return "unreachable",
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => return "no_memory",
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => "reset",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof => "eof",
        _ => "io_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(classify_io(&e), "refused");
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(classify_io(&e), "addr_unavailable");
    }
}

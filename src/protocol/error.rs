//! The one error type of the protocol core.
//!
//! [`ProtocolError`] covers both the HTTP upgrade (handshake) and the
//! WebSocket framing layer. Each variant knows how to answer the peer:
//! [`ProtocolError::http_status`] (plus [`ProtocolError::extra_headers`]) for
//! a handshake refusal, [`ProtocolError::close_code`] for a Close frame, and
//! [`ProtocolError::reason`] for a short human text (HTTP body or close
//! reason; always ≤ 123 bytes so it fits a Close frame).

use std::fmt;

/// Everything that can go wrong while parsing network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    // ---- handshake (HTTP/1.1 upgrade) ----
    /// The request head is not valid HTTP/1.x.
    MalformedRequest,
    /// The request head exceeds `HandshakeLimits::max_header_bytes`.
    HeadersTooLarge,
    /// More header lines than `HandshakeLimits::max_headers`.
    TooManyHeaders,
    /// An upgrade must be a `GET`.
    MethodNotAllowed,
    /// An upgrade must be HTTP/1.1.
    UnsupportedHttpVersion,
    /// No `Host` header (or more than one).
    MissingHost,
    /// `Upgrade: websocket` or `Connection: upgrade` missing.
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` missing or not `13`.
    UnsupportedWebSocketVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes.
    InvalidKey,
    /// The upgrade request carries a body (`Content-Length` > 0 or
    /// `Transfer-Encoding`).
    UnexpectedBody,
    /// A `Content-Length` that is not 1*DIGIT (a sign, spaces inside, a list of
    /// different values, too many digits), or several that differ (RFC 9112 6.3):
    /// answered 400 and the connection closed, as nginx and hyper do, so that no proxy
    /// in front can read the body's end elsewhere (request smuggling).
    InvalidContentLength,
    /// A request with `Transfer-Encoding` (chunked bodies are not accepted; with a
    /// `Content-Length` too it is a smuggling attempt, RFC 9112 6.1).
    TransferEncodingNotAccepted,

    // ---- framing (RFC 6455 / RFC 7692) ----
    /// A client frame was not masked.
    UnmaskedFrame,
    /// RSV2/RSV3 set, or RSV1 set where not allowed.
    ReservedBits,
    /// Opcode 3-7 or 0xB-0xF.
    ReservedOpcode,
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame payload longer than 125 bytes.
    ControlFrameTooLong,
    /// A 64-bit payload length with the most significant bit set.
    InvalidLength,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new Text/Binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A Close frame with a 1-byte payload.
    InvalidClosePayload,
    /// A Close frame with a code that must not be sent (RFC 6455 7.4).
    InvalidCloseCode,
    /// A Text message or a close reason that is not UTF-8.
    InvalidUtf8,
    /// A frame longer than `WsLimits::max_frame_bytes`.
    FrameTooBig,
    /// A message (after decompression) longer than
    /// `WsLimits::max_message_bytes`.
    MessageTooBig,
    /// permessage-deflate payload that does not inflate.
    InvalidCompressedData,
    /// Data the application cannot accept (not produced by the protocol
    /// core itself; available for the application layer).
    UnsupportedData,
    /// A server-side failure (e.g. the compressor failed).
    Internal,
}

impl ProtocolError {
    /// The RFC 6455 close code to send when failing the connection.
    pub fn close_code(&self) -> u16 {
        use ProtocolError::*;
        match self {
            InvalidUtf8 | InvalidCompressedData => 1007,
            FrameTooBig | MessageTooBig => 1009,
            UnsupportedData => 1003,
            Internal => 1011,
            _ => 1002,
        }
    }

    /// True for errors raised while parsing/validating the HTTP upgrade.
    pub fn is_handshake(&self) -> bool {
        use ProtocolError::*;
        matches!(
            self,
            MalformedRequest
                | HeadersTooLarge
                | TooManyHeaders
                | MethodNotAllowed
                | UnsupportedHttpVersion
                | MissingHost
                | NotAnUpgrade
                | UnsupportedWebSocketVersion
                | InvalidKey
                | UnexpectedBody
                | InvalidContentLength
                | TransferEncodingNotAccepted
        )
    }

    /// The HTTP status to answer a refused upgrade with.
    pub fn http_status(&self) -> u16 {
        use ProtocolError::*;
        match self {
            HeadersTooLarge | TooManyHeaders => 431,
            MethodNotAllowed => 405,
            UnsupportedHttpVersion => 505,
            NotAnUpgrade | UnsupportedWebSocketVersion => 426,
            Internal => 500,
            _ => 400,
        }
    }

    /// Headers that must accompany [`Self::http_status`]: `Allow: GET` for
    /// 405, `Upgrade: websocket` + `Sec-WebSocket-Version: 13` for 426.
    pub fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            ProtocolError::MethodNotAllowed => &[("Allow", "GET")],
            ProtocolError::NotAnUpgrade | ProtocolError::UnsupportedWebSocketVersion => {
                &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
            }
            _ => &[],
        }
    }

    /// A one-line human reason (≤ 123 bytes, ASCII).
    pub fn reason(&self) -> &'static str {
        use ProtocolError::*;
        match self {
            MalformedRequest => "malformed HTTP request",
            HeadersTooLarge => "request headers too large",
            TooManyHeaders => "too many request headers",
            MethodNotAllowed => "method not allowed, WebSocket upgrade requires GET",
            UnsupportedHttpVersion => "WebSocket upgrade requires HTTP/1.1",
            MissingHost => "missing or repeated Host header",
            NotAnUpgrade => "expected a WebSocket upgrade request",
            UnsupportedWebSocketVersion => "unsupported Sec-WebSocket-Version, expected 13",
            InvalidKey => "missing or invalid Sec-WebSocket-Key",
            UnexpectedBody => "upgrade request must not have a body",
            InvalidContentLength => "invalid or conflicting Content-Length",
            TransferEncodingNotAccepted => "Transfer-Encoding is not accepted, send Content-Length",
            UnmaskedFrame => "client frame not masked",
            ReservedBits => "reserved bits set",
            ReservedOpcode => "reserved opcode",
            FragmentedControl => "fragmented control frame",
            ControlFrameTooLong => "control frame payload too long",
            InvalidLength => "invalid payload length",
            UnexpectedContinuation => "continuation frame without a message in progress",
            ExpectedContinuation => "new data frame inside a fragmented message",
            InvalidClosePayload => "close payload of 1 byte",
            InvalidCloseCode => "invalid close code",
            InvalidUtf8 => "invalid UTF-8 in text",
            FrameTooBig => "frame too big",
            MessageTooBig => "message too big",
            InvalidCompressedData => "invalid compressed data",
            UnsupportedData => "unsupported data",
            Internal => "internal error",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtocolError::MessageTooBig.close_code(), 1009);
        assert_eq!(ProtocolError::FrameTooBig.close_code(), 1009);
        assert_eq!(ProtocolError::UnmaskedFrame.close_code(), 1002);
        assert_eq!(ProtocolError::UnsupportedData.close_code(), 1003);
        assert_eq!(ProtocolError::Internal.close_code(), 1011);
        assert_eq!(ProtocolError::HeadersTooLarge.http_status(), 431);
        assert_eq!(
            ProtocolError::UnsupportedWebSocketVersion.http_status(),
            426
        );
        assert_eq!(ProtocolError::MethodNotAllowed.http_status(), 405);
        assert_eq!(ProtocolError::InvalidKey.http_status(), 400);
        assert!(ProtocolError::UnsupportedWebSocketVersion
            .extra_headers()
            .contains(&("Sec-WebSocket-Version", "13")));
        assert!(ProtocolError::InvalidKey.is_handshake());
        assert!(!ProtocolError::InvalidUtf8.is_handshake());
        assert_eq!(
            ProtocolError::InvalidUtf8.to_string(),
            "invalid UTF-8 in text"
        );
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        use ProtocolError::*;
        for e in [
            MalformedRequest,
            UnsupportedWebSocketVersion,
            ExpectedContinuation,
            UnexpectedContinuation,
            MethodNotAllowed,
            InvalidContentLength,
            TransferEncodingNotAccepted,
        ] {
            assert!(e.reason().len() <= 123 && e.reason().is_ascii());
        }
    }
}

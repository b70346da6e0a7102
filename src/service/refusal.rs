//! Why an upgrade (or plain HTTP request) is refused: one enum, each variant mapped to its HTTP
//! status, one-line reason and metric label — as protocol errors map to close codes.
use crate::protocol::ProtocolError;
use crate::service::jwt::JwtError;
use crate::service::session::SessionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or not an upgrade (status from the protocol core).
    Protocol(ProtocolError),
    NotFound,
    MissingSession,
    Session(SessionError),
    Origin,
    Disabled,
    UserLimit,
    /// Over `limits.upgrade_rate_per_sec`; the `Retry-After` to send, in seconds.
    RateLimit {
        retry_after_secs: u32,
    },
    ServerFull,
    ShuttingDown,
    HandshakeTimeout,
    NotImplemented,
    /// Engine.IO request errors, answered as engine.io does (400 + JSON code).
    EioTransportUnknown,
    EioSessionUnknown,
    EioBadRequest,
    EioVersionUnsupported,
    EioBadHandshakeMethod,
    /// A long-polling body over `socketio.max_http_body_bytes`.
    PayloadTooLarge,
    MethodNotAllowed,
    /// `epoch` / `since` of a resume are malformed (or only one of them was given).
    BadResume,
    /// An `auth = "jwt"` endpoint's token is missing or does not verify.
    Jwt(JwtError),
    /// An `auth = "proxy"` endpoint's application refused (401 or 403; the answer carries
    /// the application's reason, not [`Refusal::reason`]).
    ProxyUnauthorized,
    ProxyForbidden,
    /// The application did not answer usably (timeout, connection, 5xx, a bad answer).
    ProxyUnavailable {
        retry_after_secs: u32,
    },
    /// `[proxy] max_in_flight` calls were under way.
    ProxyBusy {
        retry_after_secs: u32,
    },
}

/// Metric labels, in the order of `Refusal::index`.
pub const LABELS: [&str; 41] = [
    "bad_request",
    "not_upgrade",
    "headers_too_large",
    "not_found",
    "missing_session",
    "unknown_session",
    "session_expired",
    "session_revoked",
    "wrong_secret",
    "origin",
    "disabled",
    "user_limit",
    "rate_limit",
    "server_full",
    "shutting_down",
    "handshake_timeout",
    "not_implemented",
    "eio_transport_unknown",
    "eio_session_unknown",
    "eio_bad_request",
    "eio_version_unsupported",
    "payload_too_large",
    "method_not_allowed",
    "eio_bad_handshake_method",
    "bad_resume",
    "jwt_missing",
    "jwt_malformed",
    "jwt_bad_signature",
    "jwt_algorithm",
    "jwt_expired",
    "jwt_not_yet_valid",
    "jwt_issuer",
    "jwt_audience",
    "jwt_missing_claim",
    "jwt_bad_user",
    "jwt_bad_context",
    "jwt_unknown_key",
    "proxy_unauthorized",
    "proxy_forbidden",
    "proxy_unavailable",
    "proxy_busy",
];

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Protocol(e) => e.http_status(),
            Refusal::NotFound => 404,
            Refusal::MissingSession
            | Refusal::Session(_)
            | Refusal::Jwt(_)
            | Refusal::ProxyUnauthorized => 401,
            Refusal::Origin | Refusal::Disabled | Refusal::ProxyForbidden => 403,
            // Node-wide admission (rate, capacity, drain): 503 with Retry-After, so that a
            // reconnect storm backs off; a user over their own limit is a 429.
            Refusal::UserLimit => 429,
            Refusal::RateLimit { .. }
            | Refusal::ServerFull
            | Refusal::ShuttingDown
            | Refusal::ProxyUnavailable { .. }
            | Refusal::ProxyBusy { .. } => 503,
            Refusal::HandshakeTimeout => 408,
            Refusal::NotImplemented => 501,
            Refusal::EioTransportUnknown
            | Refusal::EioSessionUnknown
            | Refusal::EioBadRequest
            | Refusal::EioVersionUnsupported
            | Refusal::EioBadHandshakeMethod => 400,
            Refusal::PayloadTooLarge => 413,
            Refusal::MethodNotAllowed => 405,
            Refusal::BadResume => 400,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Protocol(e) => e.reason(),
            Refusal::NotFound => "no WebSocket endpoint at this path",
            Refusal::MissingSession => "missing session parameter",
            Refusal::Session(e) => e.reason(),
            Refusal::Origin => "origin not allowed",
            Refusal::Disabled => "websockets are disabled for this user",
            Refusal::UserLimit => "too many sockets for this user",
            Refusal::RateLimit { .. } => "too many upgrades, retry later",
            Refusal::ServerFull => "server full",
            Refusal::ShuttingDown => "server shutting down",
            Refusal::HandshakeTimeout => "handshake timeout",
            Refusal::NotImplemented => "endpoint kind not available in this build",
            Refusal::EioTransportUnknown => "{\"code\":0,\"message\":\"Transport unknown\"}",
            Refusal::EioSessionUnknown => "{\"code\":1,\"message\":\"Session ID unknown\"}",
            Refusal::EioBadRequest => "{\"code\":3,\"message\":\"Bad request\"}",
            Refusal::EioVersionUnsupported => {
                "{\"code\":5,\"message\":\"Unsupported protocol version\"}"
            }
            Refusal::EioBadHandshakeMethod => "{\"code\":2,\"message\":\"Bad handshake method\"}",
            Refusal::PayloadTooLarge => "request body too large",
            Refusal::MethodNotAllowed => "method not allowed",
            Refusal::BadResume => {
                "bad resume position: give both epoch (16 hex digits) and since (an offset)"
            }
            Refusal::Jwt(e) => e.reason(),
            Refusal::ProxyUnauthorized | Refusal::ProxyForbidden => "refused by the application",
            Refusal::ProxyUnavailable { .. } => "the application did not answer, retry later",
            Refusal::ProxyBusy { .. } => "too many logins under way, retry later",
        }
    }

    /// Headers of the response other than `Retry-After`.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Refusal::Protocol(e) => e.extra_headers(),
            _ => &[],
        }
    }

    /// The `Retry-After` of a node-wide admission refusal, in seconds.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            Refusal::RateLimit { retry_after_secs }
            | Refusal::ProxyUnavailable { retry_after_secs }
            | Refusal::ProxyBusy { retry_after_secs } => Some(*retry_after_secs),
            Refusal::ServerFull | Refusal::ShuttingDown => Some(5),
            _ => None,
        }
    }

    /// Index into [`LABELS`] (per-core counters by reason).
    pub fn index(&self) -> usize {
        match self {
            Refusal::Protocol(e) => match e.http_status() {
                426 => 1,
                431 => 2,
                _ => 0,
            },
            Refusal::NotFound => 3,
            Refusal::MissingSession => 4,
            Refusal::Session(SessionError::Malformed | SessionError::BadSignature) => 5,
            Refusal::Session(SessionError::Expired) => 6,
            Refusal::Session(SessionError::Revoked) => 7,
            Refusal::Session(SessionError::WrongSecret) => 8,
            Refusal::Origin => 9,
            Refusal::Disabled => 10,
            Refusal::UserLimit => 11,
            Refusal::RateLimit { .. } => 12,
            Refusal::ServerFull => 13,
            Refusal::ShuttingDown => 14,
            Refusal::HandshakeTimeout => 15,
            Refusal::NotImplemented => 16,
            Refusal::EioTransportUnknown => 17,
            Refusal::EioSessionUnknown => 18,
            Refusal::EioBadRequest => 19,
            Refusal::EioVersionUnsupported => 20,
            Refusal::PayloadTooLarge => 21,
            Refusal::MethodNotAllowed => 22,
            Refusal::EioBadHandshakeMethod => 23,
            Refusal::BadResume => 24,
            Refusal::Jwt(e) => match e {
                JwtError::Missing => 25,
                JwtError::Malformed => 26,
                JwtError::BadSignature => 27,
                JwtError::Algorithm => 28,
                JwtError::Expired => 29,
                JwtError::NotYetValid => 30,
                JwtError::Issuer => 31,
                JwtError::Audience => 32,
                JwtError::MissingExp | JwtError::MissingUser | JwtError::MissingContext => 33,
                JwtError::BadUser => 34,
                JwtError::BadContext => 35,
                JwtError::UnknownKey => 36,
            },
            Refusal::ProxyUnauthorized => 37,
            Refusal::ProxyForbidden => 38,
            Refusal::ProxyUnavailable { .. } => 39,
            Refusal::ProxyBusy { .. } => 40,
        }
    }
}

//! Why the server closes a WebSocket: the one place a close code and its reason are chosen.
//!
//! Every close the server starts names a [`CloseReason`]; its [`code`](CloseReason::code) and
//! [`reason`](CloseReason::reason) go into the close frame, and clients branch on the code
//! (4001 and 4002 tell a raw client its session ended, so that it does not reconnect).
use super::error::ProtocolError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: the conversation ended (a Socket.IO client's own close packet).
    Normal,
    /// 1001: the node is draining; the client should reconnect, elsewhere.
    ShuttingDown,
    /// 1001: nothing from the client for `limits.idle_timeout_secs`.
    IdleTimeout,
    /// The client broke RFC 6455 / RFC 7692 (1002, 1007, 1009, ...: the error's own code).
    Protocol(ProtocolError),
    /// 1002: a Socket.IO packet that does not parse.
    MalformedSocketIo,
    /// 1013: the socket's outbound queue went over `limits.max_outbound_bytes`.
    SlowConsumer,
    /// 4001: the session was terminated (`DELETE /v1/sessions/{id}`, on any node).
    SessionTerminated,
    /// 4002: the session expired.
    SessionExpired,
}

impl CloseReason {
    /// The close code sent.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::ShuttingDown | CloseReason::IdleTimeout => 1001,
            CloseReason::Protocol(e) => e.close_code(),
            CloseReason::MalformedSocketIo => 1002,
            CloseReason::SlowConsumer => 1013,
            CloseReason::SessionTerminated => 4001,
            CloseReason::SessionExpired => 4002,
        }
    }

    /// The close reason sent (ASCII, at most 123 bytes so that it fits a close frame).
    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::Normal => "",
            CloseReason::ShuttingDown => "server shutting down",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::Protocol(e) => e.reason(),
            CloseReason::MalformedSocketIo => "malformed Socket.IO packet",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::SessionTerminated => "session terminated",
            CloseReason::SessionExpired => "session expired",
        }
    }
}

impl From<ProtocolError> for CloseReason {
    fn from(e: ProtocolError) -> Self {
        CloseReason::Protocol(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons() {
        use CloseReason::*;
        let all = [
            (Normal, 1000),
            (ShuttingDown, 1001),
            (IdleTimeout, 1001),
            (Protocol(ProtocolError::InvalidUtf8), 1007),
            (ProtocolError::MessageTooBig.into(), 1009),
            (MalformedSocketIo, 1002),
            (SlowConsumer, 1013),
            (SessionTerminated, 4001),
            (SessionExpired, 4002),
        ];
        for (r, code) in all {
            assert_eq!(r.code(), code, "{r:?}");
            assert!(r.reason().len() <= 123 && r.reason().is_ascii(), "{r:?}");
        }
    }
}

//! Hooks for embedding applications: listeners (connect, close, text message) and transcoders
//! (per-endpoint inbound/outbound rewriting; the Socket.IO codec is one).
//!
//! Both run on the data-plane core that owns the socket, inside its event loop: they must be
//! quick and must not block (hand work to another thread through a bounded queue, as the
//! webhook listener does).
use crate::service::session::SocketAuth;

/// What a listener sees of a socket.
pub struct SocketInfo<'a> {
    /// The core that owns the socket.
    pub core: usize,
    /// Unique on this node while the socket is open.
    pub socket: u64,
    /// The endpoint's configured path prefix.
    pub endpoint: &'a str,
    pub path: &'a str,
    /// Raw URL query of the upgrade request.
    pub query: &'a str,
    /// The session (None on `auth = "none"` endpoints).
    pub auth: Option<&'a SocketAuth>,
    /// The socket's attribute store.
    pub attrs: &'a [(Box<str>, Box<str>)],
}

pub trait Listener: Send + Sync + 'static {
    fn on_connect(&self, _socket: &SocketInfo<'_>) {}
    fn on_close(&self, _socket: &SocketInfo<'_>) {}
    fn on_message(&self, _socket: &SocketInfo<'_>, _text: &str) {}
}

/// Rewrites messages of one endpoint kind. `outbound` turns a pushed text into the text frame
/// payload sent to the socket (None = do not deliver to this socket); `inbound` turns a
/// received text into what listeners see (None = protocol-internal, not for listeners).
///
/// `outbound` must depend on its text only: a push is framed once for all the sockets of one
/// endpoint on a core, from what `outbound` gave for the first of them.
pub trait Transcoder: Send + Sync + 'static {
    fn outbound<'a>(&self, text: &'a str) -> Option<std::borrow::Cow<'a, str>>;
    fn inbound<'a>(&self, text: &'a str) -> Option<std::borrow::Cow<'a, str>>;
}

/// The `raw` endpoint: text as pushed, text as received.
pub struct RawTranscoder;

impl Transcoder for RawTranscoder {
    fn outbound<'a>(&self, text: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        Some(std::borrow::Cow::Borrowed(text))
    }
    fn inbound<'a>(&self, text: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        Some(std::borrow::Cow::Borrowed(text))
    }
}

/// The `socketio` endpoint's codec for pushed and received events. A pushed text must be a
/// JSON array `["event", args...]` (other texts are not delivered: a Socket.IO client would
/// drop the connection on them); the engine frames it as an event packet of the socket's
/// namespace. Received events reach listeners as that same JSON array text.
pub struct SocketIoTranscoder;

impl Transcoder for SocketIoTranscoder {
    fn outbound<'a>(&self, text: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        crate::protocol::socketio::looks_like_event(text)
            .then_some(std::borrow::Cow::Borrowed(text))
    }
    fn inbound<'a>(&self, text: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        Some(std::borrow::Cow::Borrowed(text))
    }
}

//! What the upgrade decision hands the engine: the plan to open a WebSocket, or to serve an
//! Engine.IO long-polling request, on the core that owns the user (moved there with the
//! connection when another core accepted it).
use crate::protocol::deflate::DeflateParams;
use crate::protocol::engineio::EioVersion;
use crate::service::refusal::Refusal;
use crate::service::session::SocketAuth;

/// Everything a core needs to open a WebSocket whose upgrade was accepted (possibly by another
/// core): moved by pointer through MSG_RING.
pub struct UpgradePlan {
    pub endpoint: u8,
    /// Key that picks the owning core; `None` = stay on the accepting core.
    pub shard_key: Option<u64>,
    /// `Sec-WebSocket-Key` of the request.
    pub ws_key: String,
    /// Negotiated permessage-deflate and the exact response header value.
    pub deflate: Option<(DeflateParams, String)>,
    /// Bytes the client sent after the request head (early frames).
    pub leftover: Vec<u8>,
    /// The verified session (`None` on `auth = "none"` endpoints).
    pub auth: Option<SocketAuth>,
    pub path: Box<str>,
    pub query: Box<str>,
    /// The `Sec-WebSocket-Protocol` the 101 names (`ringwire.jwt` when a jwt client offered it).
    pub protocol: Option<&'static str>,
    /// Engine.IO parameters of a `socketio` endpoint's upgrade.
    pub sio: Option<SioUpgrade>,
    /// A raw endpoint with history: the position the client resumes from (`epoch`, `since`).
    pub resume: Option<crate::service::history::Position>,
    /// The socket's first attributes (an `auth = "proxy"` application's answer gives them).
    pub attrs: Vec<(Box<str>, Box<str>)>,
}

/// The Engine.IO side of a WebSocket upgrade on a `socketio` endpoint.
pub struct SioUpgrade {
    pub eio: EioVersion,
    /// Set when upgrading an existing long-polling session (`sid` query parameter).
    pub sid: Option<Box<str>>,
}

/// How a long-polling request body is encoded (see `protocol::engineio`).
pub use crate::protocol::engineio::BodyFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMethod {
    Get,
    Post,
}

/// A complete, authenticated Engine.IO long-polling request, handled by the core owning its
/// user (moved there like an upgrade).
pub struct PollPlan {
    pub endpoint: u8,
    pub shard_key: u64,
    pub auth: SocketAuth,
    pub eio: EioVersion,
    pub method: PollMethod,
    pub sid: Option<Box<str>>,
    /// JSONP callback index (`j` parameter).
    pub jsonp: Option<u32>,
    pub body: Vec<u8>,
    pub format: BodyFormat,
    /// `Access-Control-Allow-Origin` value for an allowed cross-origin request.
    pub cors_origin: Option<Box<str>>,
    /// The client allows keep-alive and sent nothing after this request.
    pub keep_alive: bool,
    pub path: Box<str>,
    pub query: Box<str>,
    /// The session ended (terminated or expired, or its token expired) after this `sid` was
    /// given out: the request
    /// is served only by a session that waits to hand over its last packets (the Socket.IO
    /// disconnect), else refused with this error.
    pub ended: Option<Refusal>,
    /// A new session's first attributes (an `auth = "proxy"` application's answer).
    pub attrs: Vec<(Box<str>, Box<str>)>,
}

/// A request of an `auth = "proxy"` endpoint, decided but for who the client is: its plan
/// waits (with the connection parked on its core) while the application is asked.
pub struct ProxyPending {
    pub request: crate::service::proxy_auth::ProxyRequest,
    pub plan: PendingPlan,
}

/// The plan of a parked request; its `auth` and `shard_key` are filled from the answer.
pub enum PendingPlan {
    Upgrade(Box<UpgradePlan>),
    Poll(Box<PollPlan>),
}

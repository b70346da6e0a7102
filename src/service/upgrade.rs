//! The decision on a complete HTTP request head: open a WebSocket, or answer with a status.
//! Pure over the request bytes and the configuration (no I/O), so it is tested directly.
use super::plan::{
    BodyFormat, PendingPlan, PollMethod, PollPlan, ProxyPending, SioUpgrade, UpgradePlan,
};
use super::refusal::Refusal;
use crate::config::{Config, EndpointAuth, EndpointKind};
use crate::protocol::deflate::{self, DeflateConfig};
use crate::protocol::engineio::EioVersion;
use crate::protocol::handshake::{self, HandshakeLimits, Request};
use crate::protocol::ProtocolError;
use crate::service::cascade::Cascade;
use crate::service::jwt::{self, JwtError, JwtVerifier};
use crate::service::placement::{hash_key, user_key};
use crate::service::proxy_auth::{self, ProxyRequest};
use crate::service::session::{SessionError, SessionId, SessionKey, SocketAuth};
use std::collections::HashMap;

pub enum Decision {
    /// The request head is not complete yet.
    NeedMore,
    /// A valid upgrade; bytes after the head are in `leftover`.
    Upgrade(Box<UpgradePlan>),
    /// A complete Engine.IO long-polling request (head and body).
    Poll(Box<PollPlan>),
    /// A CORS preflight from an allowed origin: answer 204 with the CORS headers.
    Preflight(Box<str>),
    /// Answer with the refusal's status and one-line reason, then close.
    Refuse(Refusal),
    /// An `auth = "proxy"` endpoint's request: ask the application who the client is.
    Proxy(Box<ProxyPending>),
}

/// Engine.IO query parameters of a request to a `socketio` endpoint.
struct SioRequest<'a> {
    eio: EioVersion,
    polling: bool,
    sid: Option<&'a str>,
    jsonp: Option<u32>,
}

/// What the accepting core knows when it checks a session.
pub struct SessionCheck<'a> {
    pub key: &'a SessionKey,
    /// Unix seconds.
    pub now: u64,
    pub revoked: &'a HashMap<SessionId, u64>,
    /// `[jwt] jwks_url`: the key set the core was last given (None: none fetched yet).
    pub jwks: Option<&'a crate::service::jwks::JwkKeys>,
}

/// Engine-side view of the configuration used at upgrade time (replaced whole on reload).
pub struct UpgradePolicy {
    pub config: Config,
    pub handshake: HandshakeLimits,
    pub deflate: DeflateConfig,
    pub cascade: Cascade,
    /// Largest request the handshake buffer may hold: head plus a long-polling body.
    pub max_request_bytes: usize,
    /// `[tls]`: the listener's certificate, read when this policy was built.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `[jwt]`: the keys and claim rules of `auth = "jwt"` endpoints (key file read here).
    pub jwt: Option<JwtVerifier>,
}

impl UpgradePolicy {
    pub fn new(config: Config) -> Result<UpgradePolicy, String> {
        let handshake = HandshakeLimits {
            max_header_bytes: config.limits.max_header_bytes,
            max_headers: config.limits.max_headers,
        };
        let deflate = DeflateConfig {
            enabled: config.compression.enabled,
            min_compress_bytes: config.compression.min_bytes,
            server_max_window_bits: config.compression.server_max_window_bits,
            allow_no_context_takeover: true,
            context_takeover: config.compression.context_takeover,
        };
        let cascade = Cascade::compile(&config.websockets)?;
        let max_request_bytes = config.limits.max_header_bytes
            + if config
                .endpoints
                .iter()
                .any(|e| e.kind == EndpointKind::Socketio)
            {
                config.socketio.max_http_body_bytes
            } else {
                0
            };
        let tls = match &config.tls {
            Some(t) => Some(crate::config::pem::tls_server_config(t)?),
            None => None,
        };
        let jwt = match &config.jwt {
            Some(j) => Some(JwtVerifier::new(j)?),
            None if config.endpoints.iter().any(|e| e.auth == EndpointAuth::Jwt) => {
                return Err("an endpoint has auth = \"jwt\" but [jwt] is absent".into())
            }
            None => None,
        };
        Ok(UpgradePolicy {
            config,
            handshake,
            deflate,
            cascade,
            max_request_bytes,
            tls,
            jwt,
        })
    }

    /// Decide on the bytes received so far. Checks in the order of the product brief:
    /// well-formed upgrade, Origin, session (known, live, unrevoked), secret cookie, cascade.
    /// (Admission limits are the shard's: they need its counters.)
    pub fn decide(&self, buf: &[u8], sessions: &SessionCheck<'_>) -> Decision {
        let req = match handshake::parse_request(buf, &self.handshake) {
            Ok(Some(req)) => req,
            Ok(None) => return Decision::NeedMore,
            Err(e) => return Decision::Refuse(Refusal::Protocol(e)),
        };
        let Some((endpoint, ep)) = self.config.endpoint_for(req.path) else {
            return Decision::Refuse(Refusal::NotFound);
        };
        let sio = if ep.kind == EndpointKind::Socketio {
            match sio_request(&req) {
                Ok(r) => Some(r),
                Err(r) => return Decision::Refuse(r),
            }
        } else {
            None
        };
        if let Some(sio) = sio.as_ref().filter(|s| s.polling) {
            return self.decide_poll(buf, &req, (endpoint, ep.auth), sio, sessions);
        }
        let upgrade = match handshake::validate_upgrade(&req) {
            Ok(u) => u,
            Err(e) => return Decision::Refuse(Refusal::Protocol(e)),
        };
        if !self.origin_allowed(upgrade.origin, &req) {
            return Decision::Refuse(Refusal::Origin);
        }
        let auth = match self.authenticate(&req, ep.auth, sessions) {
            Ok(a) => a,
            Err(r) => return Decision::Refuse(r),
        };
        let protocol = (ep.auth == EndpointAuth::Jwt && jwt::offers_protocol(upgrade.protocols))
            .then_some(jwt::JWT_PROTOCOL);
        // A raw endpoint with history: the client may resume from a position.
        let resume = if ep.kind == EndpointKind::Raw && self.config.endpoint_history(endpoint) {
            match crate::service::history::envelope::parse_resume(req.query) {
                Ok(r) => r,
                Err(r) => return Decision::Refuse(r),
            }
        } else {
            None
        };
        let deflate = match upgrade.deflate_offer {
            Some(offer) if self.deflate.enabled => deflate::negotiate(offer, &self.deflate),
            _ => None,
        };
        // A user's sockets live on the core owning (context, user). Echo sockets have no user:
        // an optional `key` parameter places them (tests, load); otherwise they stay put.
        let shard_key = match &auth {
            Some(a) => Some(user_key(a.context, &a.user)),
            None => handshake::query_param(req.query, "key").map(hash_key),
        };
        let plan = Box::new(UpgradePlan {
            endpoint: endpoint as u8,
            shard_key,
            ws_key: upgrade.key.to_string(),
            deflate,
            leftover: buf[req.head_len..].to_vec(),
            auth,
            path: req.path.into(),
            query: self.kept_query(&req, ep.auth),
            protocol,
            sio: sio.map(|s| SioUpgrade {
                eio: s.eio,
                sid: s.sid.map(Into::into),
            }),
            resume,
            attrs: Vec::new(),
            accepted_ns: 0,
        });
        match ep.auth {
            EndpointAuth::Proxy => self.pending(&req, PendingPlan::Upgrade(plan)),
            _ => Decision::Upgrade(plan),
        }
    }

    /// Park a request of an `auth = "proxy"` endpoint: what to ask the application.
    fn pending(&self, req: &Request<'_>, plan: PendingPlan) -> Decision {
        let endpoint = match &plan {
            PendingPlan::Upgrade(p) => p.endpoint,
            PendingPlan::Poll(p) => p.endpoint,
        };
        let forward = self
            .config
            .proxy
            .as_ref()
            .map_or(&[][..], |p| &p.forward_headers);
        let request = ProxyRequest::of(req, endpoint, forward);
        Decision::Proxy(Box::new(ProxyPending { request, plan }))
    }

    /// The session of a request (query `session` + secret cookie), checked in the brief's
    /// order, then the cascade. `None` on `auth = "none"` endpoints.
    fn authenticate(
        &self,
        req: &Request<'_>,
        auth: EndpointAuth,
        sessions: &SessionCheck<'_>,
    ) -> Result<Option<SocketAuth>, Refusal> {
        let auth = match auth {
            // `proxy`: the application says who it is, after this decision.
            EndpointAuth::None | EndpointAuth::Proxy => return Ok(None),
            EndpointAuth::Jwt => {
                let v = self.jwt.as_ref().ok_or(Refusal::Jwt(JwtError::Missing))?;
                let found =
                    jwt::find_token(req, &v.query_param).ok_or(Refusal::Jwt(JwtError::Missing))?;
                v.verify(found.token, sessions.now, sessions.jwks)
                    .map_err(Refusal::Jwt)?
            }
            EndpointAuth::Session => {
                let id =
                    handshake::query_param(req.query, "session").ok_or(Refusal::MissingSession)?;
                let secrets = handshake::cookies(req, &self.config.security.cookie_name);
                let (id, s) = sessions
                    .key
                    .verify(id, secrets, sessions.now, |id| {
                        sessions.revoked.contains_key(id)
                    })
                    .map_err(Refusal::Session)?;
                SocketAuth {
                    session: id,
                    context: s.context,
                    user: s.user,
                    expires_at: s.expires_at,
                }
            }
        };
        if !self.cascade.enabled(auth.context, &auth.user) {
            return Err(Refusal::Disabled);
        }
        Ok(Some(auth))
    }

    /// The query a socket keeps: as sent, less a token given in it (a credential).
    fn kept_query(&self, req: &Request<'_>, auth: EndpointAuth) -> Box<str> {
        match (&self.jwt, auth) {
            (Some(v), EndpointAuth::Jwt) => match jwt::find_token(req, &v.query_param) {
                Some(f) if f.in_query => jwt::strip_param(req.query, &v.query_param).into(),
                _ => req.query.into(),
            },
            _ => req.query.into(),
        }
    }

    /// An Engine.IO long-polling request: CORS, session, then a complete body.
    fn decide_poll(
        &self,
        buf: &[u8],
        req: &Request<'_>,
        (endpoint, ep_auth): (usize, EndpointAuth),
        sio: &SioRequest<'_>,
        sessions: &SessionCheck<'_>,
    ) -> Decision {
        let origin = req.headers.get_str("origin");
        if origin.is_some() && !self.origin_allowed(origin, req) {
            return Decision::Refuse(Refusal::Origin);
        }
        let method = match req.method {
            "GET" => PollMethod::Get,
            "POST" => PollMethod::Post,
            "OPTIONS" => {
                return match origin {
                    Some(o) => Decision::Preflight(o.into()),
                    None => Decision::Refuse(Refusal::MethodNotAllowed),
                }
            }
            _ => return Decision::Refuse(Refusal::MethodNotAllowed),
        };
        if req
            .headers
            .get_str("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        {
            return Decision::Refuse(Refusal::EioBadRequest);
        }
        let (auth, ended) = match self.authenticate(req, ep_auth, sessions) {
            Ok(Some(a)) => (a, None),
            Ok(None) if ep_auth == EndpointAuth::Proxy => (proxy_auth::unknown_yet(), None),
            Ok(None) => return Decision::Refuse(Refusal::MissingSession),
            // A request of a session (sid) whose login (or token) just ended: its owner core
            // may still hold the session's last packets (the Socket.IO disconnect) for it.
            Err(
                e @ (Refusal::Session(SessionError::Revoked | SessionError::Expired)
                | Refusal::Jwt(JwtError::Expired)),
            ) if sio.sid.is_some() => match self.authenticate_ended(req, ep_auth, sessions) {
                Some(a) => (a, Some(e)),
                None => return Decision::Refuse(e),
            },
            Err(r) => return Decision::Refuse(r),
        };
        // One framing rule for every request (RFC 9112 6.3): a bad or conflicting length is
        // refused before anything is read as a body, and the refusal closes the connection.
        let body_len = match handshake::body_length(req) {
            Ok(n) => n,
            Err(e) => return Decision::Refuse(Refusal::Protocol(e)),
        };
        let body_len = match method {
            // A GET has no body; one that announces a body is refused, never skipped (its
            // bytes would be read as the next request on a keep-alive connection).
            PollMethod::Get if body_len != 0 => {
                return Decision::Refuse(Refusal::Protocol(ProtocolError::UnexpectedBody))
            }
            PollMethod::Get => 0,
            PollMethod::Post => {
                if req.headers.get("content-length").is_none() {
                    return Decision::Refuse(Refusal::EioBadRequest);
                }
                match usize::try_from(body_len) {
                    Ok(len) if len <= self.config.socketio.max_http_body_bytes => len,
                    _ => return Decision::Refuse(Refusal::PayloadTooLarge),
                }
            }
        };
        let end = req.head_len + body_len;
        if buf.len() < end {
            return Decision::NeedMore;
        }
        let format = if sio.jsonp.is_some() && method == PollMethod::Post {
            BodyFormat::Form
        } else if req
            .headers
            .get_str("content-type")
            .is_some_and(|t| t.starts_with("application/octet-stream"))
        {
            BodyFormat::Binary
        } else {
            BodyFormat::Text
        };
        let connection = req.headers.get_str("connection").unwrap_or("");
        let keep_alive = buf.len() == end
            && if req.version >= 1 {
                !connection.eq_ignore_ascii_case("close")
            } else {
                connection.eq_ignore_ascii_case("keep-alive")
            };
        let plan = Box::new(PollPlan {
            endpoint: endpoint as u8,
            shard_key: user_key(auth.context, &auth.user),
            auth,
            eio: sio.eio,
            method,
            sid: sio.sid.map(Into::into),
            jsonp: sio.jsonp,
            body: buf[req.head_len..end].to_vec(),
            format,
            cors_origin: origin.map(Into::into),
            keep_alive,
            path: req.path.into(),
            query: self.kept_query(req, ep_auth),
            ended,
            attrs: Vec::new(),
        });
        match ep_auth {
            EndpointAuth::Proxy => self.pending(req, PendingPlan::Poll(plan)),
            _ => Decision::Poll(plan),
        }
    }

    /// A revoked or expired session's request, still signed and with its secret (or an
    /// expired token's, valid but for its time).
    fn authenticate_ended(
        &self,
        req: &Request<'_>,
        auth: EndpointAuth,
        sessions: &SessionCheck<'_>,
    ) -> Option<SocketAuth> {
        if auth == EndpointAuth::Jwt {
            let v = self.jwt.as_ref()?;
            let found = jwt::find_token(req, &v.query_param)?;
            return v.verify_ended(found.token, sessions.jwks).ok();
        }
        let id = handshake::query_param(req.query, "session")?;
        let secret = handshake::cookie(req, &self.config.security.cookie_name);
        let (id, s) = sessions.key.verify(id, secret, 0, |_| false).ok()?;
        Some(SocketAuth {
            session: id,
            context: s.context,
            user: s.user,
            expires_at: s.expires_at,
        })
    }

    /// Cross-site upgrades are refused: an `Origin` must be in the allow-list (or `"*"`), or,
    /// with an empty list, name the same host the request was sent to. Requests without an
    /// `Origin` (non-browser clients) pass.
    pub fn origin_allowed(&self, origin: Option<&str>, req: &Request<'_>) -> bool {
        let Some(origin) = origin else { return true };
        let allowed = &self.config.security.allowed_origins;
        if allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        if !allowed.is_empty() {
            return false;
        }
        let host = req.headers.get_str("host").unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
    }
}

/// The Engine.IO parameters of a request (`EIO`, `transport`, `sid`, `j`).
fn sio_request<'a>(req: &Request<'a>) -> Result<SioRequest<'a>, Refusal> {
    let q = req.query;
    let eio = handshake::query_param(q, "EIO")
        .and_then(EioVersion::from_param)
        .ok_or(Refusal::EioVersionUnsupported)?;
    let polling = match handshake::query_param(q, "transport") {
        Some("polling") => true,
        Some("websocket") => false,
        _ => return Err(Refusal::EioTransportUnknown),
    };
    let sid = handshake::query_param(q, "sid").filter(|s| !s.is_empty());
    let jsonp = match handshake::query_param(q, "j") {
        Some(j) => Some(j.parse().map_err(|_| Refusal::EioBadRequest)?),
        None => None,
    };
    Ok(SioRequest {
        eio,
        polling,
        sid,
        jsonp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::session::SessionError;

    struct Fixture {
        key: SessionKey,
        revoked: HashMap<SessionId, u64>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                key: SessionKey::random(),
                revoked: HashMap::new(),
            }
        }
        fn decide(&self, p: &UpgradePolicy, buf: &[u8]) -> Decision {
            p.decide(
                buf,
                &SessionCheck {
                    key: &self.key,
                    now: 1_000,
                    revoked: &self.revoked,
                    jwks: None,
                },
            )
        }
        fn status(&self, p: &UpgradePolicy, buf: &[u8]) -> u16 {
            match self.decide(p, buf) {
                Decision::Refuse(r) => r.status(),
                Decision::Upgrade(_) => 101,
                Decision::Poll(_) => 200,
                Decision::Preflight(_) => 204,
                Decision::Proxy(_) => 1,
                Decision::NeedMore => 0,
            }
        }
    }

    fn policy(toml: &str) -> UpgradePolicy {
        UpgradePolicy::new(Config::from_toml(toml).unwrap()).unwrap()
    }

    const ECHO: &str = "[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\nauth = \"none\"\n[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n";

    fn req(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn echo_upgrade_keeps_leftover_and_key() {
        let f = Fixture::new();
        let p = policy(ECHO);
        let mut r = req("/echo?key=abc", "");
        r.extend_from_slice(b"\x81\x80");
        match f.decide(&p, &r) {
            Decision::Upgrade(plan) => {
                assert_eq!(plan.leftover, b"\x81\x80");
                assert_eq!(plan.shard_key, Some(hash_key("abc")));
                assert_eq!(plan.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
                assert!(plan.auth.is_none());
                assert_eq!(&*plan.path, "/echo");
                assert_eq!(&*plan.query, "key=abc");
            }
            _ => panic!("expected upgrade"),
        }
        assert_eq!(f.status(&p, &r[..20]), 0);
    }

    #[test]
    fn refusals() {
        let f = Fixture::new();
        let p = policy(ECHO);
        assert_eq!(f.status(&p, &req("/nope", "")), 404);
        assert_eq!(f.status(&p, &req("/ws", "")), 401);
        assert_eq!(f.status(&p, &req("/ws?session=x", "")), 401);
        assert_eq!(
            f.status(&p, &req("/echo", "Origin: https://evil.example\r\n")),
            403
        );
        assert_eq!(
            f.status(&p, &req("/echo", "Origin: https://example.org\r\n")),
            101
        );
        assert_eq!(f.status(&p, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"), 426);
        assert_eq!(f.status(&p, b"BLAH\r\n\r\n"), 400);
    }

    #[test]
    fn session_upgrades_in_the_briefs_order() {
        let mut f = Fixture::new();
        let p = policy(&format!(
            "[websockets]\ncontexts = {{ \"9\" = false }}\n{ECHO}"
        ));
        let (id, secret) = f.key.mint(1, &42.into(), 2_000);
        let ok = req(
            &format!("/ws?session={}", id.v1_text()),
            &format!("Cookie: a=b; ringwire-secret={secret}\r\n"),
        );
        match f.decide(&p, &ok) {
            Decision::Upgrade(plan) => {
                let a = plan.auth.unwrap();
                assert_eq!((a.context, a.user.clone(), a.session), (1, 42.into(), id));
                assert_eq!(plan.shard_key, Some(user_key(1, &42.into())));
            }
            _ => panic!("expected upgrade"),
        }
        let wrong = req(
            &format!("/ws?session={}", id.v1_text()),
            "Cookie: ringwire-secret=nope\r\n",
        );
        assert!(matches!(
            f.decide(&p, &wrong),
            Decision::Refuse(Refusal::Session(SessionError::WrongSecret))
        ));
        // Origin is checked before the session.
        let evil = req(
            &format!("/ws?session={}", id.v1_text()),
            "Origin: https://evil.example\r\n",
        );
        assert!(matches!(
            f.decide(&p, &evil),
            Decision::Refuse(Refusal::Origin)
        ));
        f.revoked.insert(id, 2_000);
        assert!(matches!(
            f.decide(&p, &ok),
            Decision::Refuse(Refusal::Session(SessionError::Revoked))
        ));
        let (id9, secret9) = f.key.mint(9, &1.into(), 2_000);
        let disabled = req(
            &format!("/ws?session={}", id9.v1_text()),
            &format!("Cookie: ringwire-secret={secret9}\r\n"),
        );
        assert!(matches!(
            f.decide(&p, &disabled),
            Decision::Refuse(Refusal::Disabled)
        ));
    }

    #[test]
    fn socketio_requests() {
        let f = Fixture::new();
        let p = policy("[socketio]\nmax_http_body_bytes = 2000\n[[endpoints]]\npath = \"/socket.io/\"\nkind = \"socketio\"\n");
        let (id, secret) = f.key.mint(1, &42.into(), 2_000);
        let cookie = format!("Cookie: ringwire-secret={secret}\r\n");
        let get = |q: &str, extra: &str| {
            format!(
                "GET /socket.io/?{q}&session={} HTTP/1.1\r\nHost: h\r\n{cookie}{extra}\r\n",
                id.v1_text()
            )
            .into_bytes()
        };
        match f.decide(&p, &get("EIO=4&transport=polling", "")) {
            Decision::Poll(plan) => {
                assert_eq!(plan.method, PollMethod::Get);
                assert!(plan.keep_alive && plan.sid.is_none() && plan.body.is_empty());
                assert_eq!(plan.shard_key, user_key(1, &42.into()));
            }
            _ => panic!("expected a polling request"),
        }
        assert_eq!(f.status(&p, &get("EIO=5&transport=polling", "")), 400);
        assert_eq!(f.status(&p, &get("transport=polling", "")), 400);
        assert_eq!(f.status(&p, &get("EIO=3&transport=flash", "")), 400);
        assert_eq!(f.status(&p, &get("EIO=3&transport=polling&j=x", "")), 400);
        // No cookie: refused like an upgrade.
        let bare = format!(
            "GET /socket.io/?EIO=4&transport=polling&session={} HTTP/1.1\r\nHost: h\r\n\r\n",
            id.v1_text()
        );
        assert_eq!(f.status(&p, bare.as_bytes()), 401);
        assert_eq!(
            f.status(
                &p,
                &get(
                    "EIO=4&transport=polling",
                    "Origin: https://evil.example\r\n"
                )
            ),
            403
        );
        let post = |body: &str, len: usize| {
            format!(
                "POST /socket.io/?EIO=4&transport=polling&sid=abc&session={} HTTP/1.1\r\nHost: h\r\n{cookie}Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
                id.v1_text()
            )
            .into_bytes()
        };
        assert_eq!(f.status(&p, &post("4", 3)), 0, "body incomplete");
        match f.decide(&p, &post("4ab", 3)) {
            Decision::Poll(plan) => {
                assert_eq!(plan.body, b"4ab");
                assert_eq!(plan.sid.as_deref(), Some("abc"));
                assert!(!plan.keep_alive);
            }
            _ => panic!("expected a polling POST"),
        }
        assert_eq!(f.status(&p, &post("", 2001)), 413);
        let ws = get(
            "EIO=4&transport=websocket&sid=abc",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        );
        match f.decide(&p, &ws) {
            Decision::Upgrade(plan) => {
                let sio = plan.sio.unwrap();
                assert_eq!((sio.eio, sio.sid.as_deref()), (EioVersion::V4, Some("abc")));
            }
            _ => panic!("expected an upgrade"),
        }
        let preflight = b"OPTIONS /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\nOrigin: http://h\r\n\r\n";
        assert_eq!(f.status(&p, preflight), 204);
    }

    #[test]
    fn polling_requests_of_an_ended_session() {
        // A request with a sid whose session was revoked or expired goes to the owner core
        // (which may hold the session's last packets), marked; anything else is refused.
        let mut f = Fixture::new();
        let p = policy("[[endpoints]]\npath = \"/socket.io/\"\nkind = \"socketio\"\n");
        let (revoked, secret) = f.key.mint(1, &42.into(), 2_000);
        f.revoked.insert(revoked, 2_000);
        let (expired, expired_secret) = f.key.mint(1, &42.into(), 900);
        let get = |q: &str, id: SessionId, secret: &str| {
            format!(
                "GET /socket.io/?EIO=4&transport=polling{q}&session={} HTTP/1.1\r\nHost: h\r\nCookie: ringwire-secret={secret}\r\n\r\n",
                id.v1_text()
            )
            .into_bytes()
        };
        for (id, secret, err) in [
            (revoked, &secret, SessionError::Revoked),
            (expired, &expired_secret, SessionError::Expired),
        ] {
            match f.decide(&p, &get("&sid=abc", id, secret)) {
                Decision::Poll(plan) => {
                    assert_eq!(plan.ended, Some(Refusal::Session(err)));
                    assert_eq!(plan.auth.session, id);
                    assert_eq!(plan.shard_key, user_key(1, &42.into()));
                }
                _ => panic!("expected a polling request of an ended session"),
            }
            assert!(matches!(
                f.decide(&p, &get("", id, secret)),
                Decision::Refuse(Refusal::Session(e)) if e == err
            ));
            assert!(matches!(
                f.decide(&p, &get("&sid=abc", id, "wrong")),
                Decision::Refuse(Refusal::Session(e)) if e == err
            ));
        }
    }
}

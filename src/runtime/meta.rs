//! What a registered socket knows besides its protocol state ([`SocketMeta`]), laid out for
//! memory: an idle authenticated socket's metadata is one 128-byte allocation (its session,
//! its path shared with every socket of the same path, a pointer to its Engine.IO state and
//! one to the rarely used rest). See the README's "Memory per connection".
//!
//! Two things are not stored twice: the path (interned per core, [`Paths`]) and the session
//! id of a `?session=<id>` query parameter (it is the socket's `auth.session`, so the kept
//! query leaves it out and [`SocketMeta::query`] puts it back where it was).
use super::conn::{Sio, SocketAuth};
use crate::service::history::Position;
use std::borrow::Cow;
use std::sync::Arc;

/// `session_at` when no session parameter was taken out of the query.
const NO_SESSION: u16 = u16::MAX;
/// Paths a core keeps shared (the first ones it sees; others get an allocation of their own).
const MAX_INTERNED: usize = 16;

/// What a registered socket knows (boxed: sockets of `auth = "none"` endpoints have none).
pub struct SocketMeta {
    pub auth: Option<SocketAuth>,
    /// The path of its upgrade request (shared: see [`Paths`]).
    pub path: Arc<str>,
    /// Engine.IO / Socket.IO state (`socketio` endpoints only).
    pub sio: Option<Box<Sio>>,
    /// Query, attributes and history position: absent while all are empty.
    more: Option<Box<More>>,
    /// Index among the query's `&`-separated parameters of the `session=<auth.session>`
    /// parameter left out of the kept query ([`NO_SESSION`]: none).
    session_at: u16,
}

/// The part of a socket's metadata most idle sockets do not have.
#[derive(Default)]
struct More {
    /// The URL query of its upgrade request (raw), less its session parameter.
    query: Box<str>,
    /// A small per-socket attribute store (listeners and transcoders use it).
    attrs: Vec<(Box<str>, Box<str>)>,
    /// History endpoints with the nats store: the position up to which it was sent
    /// everything of its user (`shard::order`); `None` until its store answered.
    delivered: Option<Position>,
}

impl SocketMeta {
    pub fn new(
        auth: Option<SocketAuth>,
        path: Arc<str>,
        query: &str,
        attrs: Vec<(Box<str>, Box<str>)>,
        sio: Option<Box<Sio>>,
    ) -> SocketMeta {
        let (query, session_at) = match auth.as_ref().and_then(|a| strip_session(query, a)) {
            Some((rest, at)) => (Cow::Owned(rest), at),
            None => (Cow::Borrowed(query), NO_SESSION),
        };
        let more = (!query.is_empty() || !attrs.is_empty()).then(|| {
            Box::new(More {
                query: query.into(),
                attrs,
                delivered: None,
            })
        });
        SocketMeta {
            auth,
            path,
            sio,
            more,
            session_at,
        }
    }

    /// The URL query of its upgrade request, as sent (less a JWT given in it).
    pub fn query(&self) -> Cow<'_, str> {
        let kept = self.more.as_ref().map_or("", |m| &m.query);
        match (self.session_at, &self.auth) {
            (NO_SESSION, _) | (_, None) => Cow::Borrowed(kept),
            (at, Some(auth)) => Cow::Owned(restore_session(kept, at, auth)),
        }
    }

    /// The socket's attribute store.
    pub fn attrs(&self) -> &[(Box<str>, Box<str>)] {
        self.more.as_ref().map_or(&[], |m| &m.attrs)
    }

    /// The attribute store to change.
    pub fn attrs_mut(&mut self) -> &mut Vec<(Box<str>, Box<str>)> {
        &mut self.more.get_or_insert_with(Default::default).attrs
    }

    /// See [`More::delivered`].
    pub fn delivered(&self) -> Option<Position> {
        self.more.as_ref().and_then(|m| m.delivered)
    }

    pub fn set_delivered(&mut self, at: Option<Position>) {
        match (&mut self.more, at) {
            (None, None) => {}
            (more, at) => more.get_or_insert_with(Default::default).delivered = at,
        }
    }
}

/// The session id as the query carries it.
fn session_text(auth: &SocketAuth) -> String {
    auth.session.to_text(&auth.user)
}

/// The query without its first `session=<auth.session>` parameter, and that parameter's
/// index; `None` if it has none (or one that is not the socket's session, as sent), or if
/// taking it out could not be undone exactly.
fn strip_session(query: &str, auth: &SocketAuth) -> Option<(String, u16)> {
    let id = session_text(auth);
    let at = query.split('&').position(|kv| {
        kv.strip_prefix("session=")
            .is_some_and(|v| !id.is_empty() && v == id.as_str())
    })?;
    let at = u16::try_from(at).ok().filter(|&a| a != NO_SESSION)?;
    let rest: Vec<&str> = query
        .split('&')
        .enumerate()
        .filter(|&(i, _)| i != at as usize)
        .map(|(_, kv)| kv)
        .collect();
    // `&session=..` alone would leave one empty parameter, which reads back as none.
    if rest.len() == 1 && rest[0].is_empty() {
        return None;
    }
    Some((rest.join("&"), at))
}

/// [`strip_session`] undone.
fn restore_session(kept: &str, at: u16, auth: &SocketAuth) -> String {
    let param = format!("session={}", session_text(auth));
    let mut params: Vec<&str> = if kept.is_empty() {
        Vec::new()
    } else {
        kept.split('&').collect()
    };
    params.insert((at as usize).min(params.len()), &param);
    params.join("&")
}

/// The paths of one core's sockets, shared: most sockets of an endpoint have the same path
/// (`/ws`), which is kept once. At most [`MAX_INTERNED`] paths are kept (the first seen);
/// any other is allocated per socket, so the table stays small whatever clients send.
#[derive(Default)]
pub struct Paths {
    known: Vec<Arc<str>>,
}

impl Paths {
    pub fn intern(&mut self, path: &str) -> Arc<str> {
        if let Some(p) = self.known.iter().find(|p| ***p == *path) {
            return p.clone();
        }
        let p: Arc<str> = path.into();
        if self.known.len() < MAX_INTERNED {
            self.known.push(p.clone());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::session::SessionKey;
    use crate::service::user_id::UserId;

    fn auth_of(user: UserId) -> (SocketAuth, String) {
        let key = SessionKey::new([7; 32]);
        let (session, _secret) = key.mint(3, &user, 4_000_000_000);
        let text = session.to_text(&user);
        let auth = SocketAuth {
            session,
            context: 3,
            user,
            expires_at: 4_000_000_000,
        };
        (auth, text)
    }

    fn auth() -> (SocketAuth, String) {
        auth_of(42.into())
    }

    #[test]
    fn the_query_reads_back_as_sent_with_its_session_not_stored_twice() {
        let string_user = UserId::parse("alice@example.com").unwrap();
        for (a, id) in [auth(), auth_of(string_user)] {
            query_reads_back(&a, &id);
        }
        let m = SocketMeta::new(None, "/echo".into(), "k=v", vec![], None);
        assert_eq!(m.query(), "k=v", "no session: the query as it is");
    }

    fn query_reads_back(a: &SocketAuth, id: &str) {
        let other = "AAAA";
        for q in [
            format!("session={id}"),
            format!("session={id}&x=1"),
            format!("x=1&session={id}"),
            format!("x=1&&session={id}&y=&z"),
            format!("EIO=4&transport=websocket&session={id}"),
            format!("session={other}&session={id}"),
            format!("session={id}&session={id}"),
            format!("&session={id}"),
            format!("session={id}&"),
            "x=1".to_string(),
            String::new(),
            format!("session={id}x"),
        ] {
            let m = SocketMeta::new(Some(a.clone()), "/ws".into(), &q, Vec::new(), None);
            assert_eq!(m.query(), q, "query {q:?}");
        }
        let with_query =
            |q: String| SocketMeta::new(Some(a.clone()), "/ws".into(), &q, vec![], None);
        let m = with_query(format!("session={id}"));
        assert!(m.more.is_none(), "nothing but the session: no allocation");
        assert_eq!(m.session_at, 0);
        let m = with_query(format!("k=v&session={id}"));
        assert_eq!(m.more.as_ref().map(|m| &*m.query), Some("k=v"));
    }

    #[test]
    fn attributes_and_positions_take_room_only_once_set() {
        let mut m = SocketMeta::new(None, "/ws".into(), "", Vec::new(), None);
        assert!(m.attrs().is_empty() && m.delivered().is_none());
        m.set_delivered(None);
        assert!(m.more.is_none());
        m.attrs_mut().push(("k".into(), "v".into()));
        let at = Position {
            epoch: 1,
            offset: 2,
        };
        m.set_delivered(Some(at));
        assert_eq!((m.attrs().len(), m.delivered()), (1, Some(at)));
    }

    #[test]
    fn a_path_is_shared_and_the_table_is_bounded() {
        let mut p = Paths::default();
        let a = p.intern("/ws");
        let b = p.intern("/ws");
        assert!(Arc::ptr_eq(&a, &b));
        for i in 0..100 {
            p.intern(&format!("/ws/{i}"));
        }
        assert_eq!(p.known.len(), MAX_INTERNED);
        let c = p.intern("/ws/99");
        assert_eq!(&*c, "/ws/99");
    }

    /// The memory budget of an idle authenticated socket (README, "Memory per connection"):
    /// a bound that fails when a change grows these structures.
    #[test]
    fn per_connection_structures_stay_within_their_budget() {
        use std::mem::size_of;
        let (meta, conn) = (
            size_of::<SocketMeta>(),
            size_of::<super::super::conn::Conn>(),
        );
        assert!(
            meta <= 120,
            "SocketMeta is {meta} B (a 128 B malloc chunk holds 120)"
        );
        assert!(conn <= 176, "Conn (one slab slot) is {conn} B");
        let ws = size_of::<crate::protocol::WsConnection>();
        assert!(ws <= 80, "WsConnection is {ws} B");
        let entry = size_of::<super::super::timer::Entry>();
        assert!(entry <= 12, "a timer entry is {entry} B");
    }
}

//! Socket.IO connection state recovery (socket.io 4.6+ `connectionStateRecovery`), sans-IO:
//! private session ids, the offset appended to every pushed event, what a CONNECT claims,
//! and the records of namespaces whose connection ended abnormally (parked until they are
//! restored, or their time is up).
//!
//! The wire, as socket.io-client 4.6+ speaks it (nothing else is needed on the client):
//! - a namespace's CONNECT is answered `{"sid":"<socket id>","pid":"<private session id>"}`;
//! - every pushed event carries its offset as its last argument:
//!   `42["news",{"n":1},"<epoch>-<offset>"]` (the client keeps the last string argument of
//!   each event as `_lastOffset`);
//! - on reconnection the client merges `{"pid":..,"offset":..}` into its CONNECT's auth
//!   payload; the answer carries the SAME pid when the session was restored (the client
//!   then sets `socket.recovered = true`), and the missed events follow it, before any live
//!   one. A new pid means nothing was restored and nothing is replayed.
use crate::service::history::Position;
use crate::service::user_id::UserId;
use std::collections::{HashMap, VecDeque};

/// A private session id: one namespace's session on one connection, so that a reconnecting
/// client can claim it back. It carries the epoch of the history store it was made with (a
/// pid of an earlier start is known stale without a lookup) and 64 random bits that name
/// its parked record. It is never trusted beyond that: a restore also needs the session
/// cookie of the user it was made for and that user's parked record of the same namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid {
    pub epoch: u64,
    pub tag: u64,
}

impl Pid {
    /// 22 URL-safe base64 characters (16 bytes: epoch, then tag, little-endian).
    pub fn encode(self) -> String {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.epoch.to_le_bytes());
        raw[8..].copy_from_slice(&self.tag.to_le_bytes());
        super::encode_id(raw)
    }

    pub fn decode(s: &str) -> Option<Pid> {
        let raw = super::decode_id(s)?;
        let (epoch, tag) = raw.split_at(8);
        Some(Pid {
            epoch: u64::from_le_bytes(epoch.try_into().ok()?),
            tag: u64::from_le_bytes(tag.try_into().ok()?),
        })
    }
}

/// The offset argument of a pushed event: `<epoch, 16 hex digits>-<offset>` (the epoch
/// makes an offset of an earlier start recognisable as such).
pub fn offset_string(at: Position) -> String {
    format!("{:016x}-{}", at.epoch, at.offset)
}

pub fn parse_offset(s: &str) -> Option<Position> {
    let (epoch, offset) = s.split_once('-')?;
    if epoch.len() != 16 || offset.is_empty() || offset.len() > 20 {
        return None;
    }
    if !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Position {
        epoch: u64::from_str_radix(epoch, 16).ok()?,
        offset: offset.parse().ok()?,
    })
}

/// Engine.IO v3 (socket.io-client 2.x) has no recovery protocol; its clients opt in with
/// query parameters of their connection: `recover=1` (pushed events carry their offset as
/// last argument and a `ringwire:recovery` event says where the client starts) and, on a
/// reconnection, `offset=<the last event's offset>` (resume after it). `None`: no opt-in;
/// `Some(None)`: a fresh start; `Some(Some(p))`: resume after `p` (an offset not in form
/// resumes from nowhere, epoch 0: told not recovered).
pub fn v3_resume(query: &str) -> Option<Option<Position>> {
    let param = |name| crate::protocol::handshake::query_param(query, name);
    match (param("recover"), param("offset")) {
        (_, Some(o)) if !o.is_empty() => Some(Some(parse_offset(o).unwrap_or(Position {
            epoch: 0,
            offset: 0,
        }))),
        (Some("1"), _) => Some(None),
        _ => None,
    }
}

/// What a CONNECT's auth payload claims: the session to restore and how far its client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The private session id, if it is one in form (a malformed one fails the restore).
    pub pid: Option<Pid>,
    /// The offset of the last event the client handled; None if it sent none (it had no
    /// event yet on that namespace).
    pub offset: Option<Position>,
    /// An offset was sent but is not one of ours: the restore fails.
    pub bad_offset: bool,
}

#[derive(serde::Deserialize)]
struct Auth<'a> {
    #[serde(borrow, default)]
    pid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    offset: Option<std::borrow::Cow<'a, str>>,
}

impl Claim {
    /// The claim in a CONNECT's data (its JSON auth object), if it names a pid (a string
    /// `pid`, as socket.io-client sends it once it was given one). Anything else (no data,
    /// not an object, no pid, a pid or offset of another type) is a fresh connect.
    pub fn parse(data: &str) -> Option<Claim> {
        let data = data.trim();
        if !data.starts_with('{') {
            return None;
        }
        let auth: Auth<'_> = serde_json::from_str(data).ok()?;
        let pid = auth.pid?;
        let offset = auth.offset.as_deref().map(parse_offset);
        Some(Claim {
            pid: Pid::decode(&pid),
            offset: offset.flatten(),
            bad_offset: matches!(offset, Some(None)),
        })
    }
}

/// Where a restored namespace resumes: after the client's offset, but never before the
/// start of the session it restores (an offset of an earlier session or start, kept by the
/// client because no event came since, says nothing about this one).
pub fn resume_from(offset: Option<Position>, start: Position) -> Position {
    match offset {
        Some(o) if o.epoch == start.epoch && o.offset > start.offset => o,
        _ => start,
    }
}

/// One namespace of a session that ended abnormally, as the session knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkNamespace {
    pub pid: Pid,
    pub nsp: Box<str>,
    /// The socket id its CONNECT answer gave.
    pub sid: Box<str>,
    /// Where its session started (its first CONNECT): it has every push after that it
    /// was sent.
    pub start: Position,
    /// Pushes went to this namespace (the default one, or the first joined).
    pub pushes: bool,
}

/// A parked namespace with what the engine adds: the user and the socket's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub context: u32,
    pub user: UserId,
    pub ns: ParkNamespace,
    pub attrs: Vec<(Box<str>, Box<str>)>,
}

/// A parked record as the nats store keeps it (JSON), so that another node can restore it.
#[derive(serde::Serialize, serde::Deserialize)]
struct ParkedRecord<'a> {
    context: u32,
    user: UserId,
    #[serde(borrow)]
    nsp: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sid: std::borrow::Cow<'a, str>,
    epoch: u64,
    start: u64,
    pushes: bool,
    #[serde(borrow)]
    attrs: Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
}

impl Parked {
    /// The record as the nats store keeps it (the pid is its key there).
    pub fn encode(&self) -> Vec<u8> {
        let r = ParkedRecord {
            context: self.context,
            user: self.user.clone(),
            nsp: (&*self.ns.nsp).into(),
            sid: (&*self.ns.sid).into(),
            epoch: self.ns.start.epoch,
            start: self.ns.start.offset,
            pushes: self.ns.pushes,
            attrs: self
                .attrs
                .iter()
                .map(|(k, v)| ((&**k).into(), (&**v).into()))
                .collect(),
        };
        serde_json::to_vec(&r).unwrap_or_default()
    }

    /// The record of `pid` from its [`Parked::encode`]d form (None: not one).
    pub fn decode(pid: Pid, bytes: &[u8]) -> Option<Parked> {
        let r: ParkedRecord<'_> = serde_json::from_slice(bytes).ok()?;
        Some(Parked {
            context: r.context,
            user: r.user,
            ns: ParkNamespace {
                pid,
                nsp: r.nsp.into(),
                sid: r.sid.into(),
                start: Position {
                    epoch: r.epoch,
                    offset: r.start,
                },
                pushes: r.pushes,
            },
            attrs: r
                .attrs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        })
    }

    /// Is this the record of (context, user)'s namespace `nsp`? (A pid alone proves
    /// nothing.)
    pub fn belongs_to(&self, context: u32, user: &UserId, nsp: &str) -> bool {
        self.context == context && self.user == *user && *self.ns.nsp == *nsp
    }
}

/// Bytes counted per parked record on top of its strings: the map entry with the hash
/// table's slack, the slot in the expiry order, the allocations of its strings. Measured at
/// 382 B resident at worst, just past a growth of the table (`examples/parked_memory.rs
/// 230000 0`; 257 B just before one); counted above that so that the bound holds; plus
/// 24 B since the record names its user with a `UserId` (24 B, was 4; a string user's heap
/// bytes, if any, are counted apart).
pub const PARKED_OVERHEAD: usize = 424;
/// Bytes counted per attribute on top of its key and value (its slot, two allocations):
/// measured at about 73 B (`examples/parked_memory.rs 120000 4`).
pub const ATTRIBUTE_OVERHEAD: usize = 80;

fn cost(p: &Parked) -> usize {
    PARKED_OVERHEAD
        + p.user.heap_bytes()
        + p.ns.nsp.len()
        + p.ns.sid.len()
        + p.attrs
            .iter()
            .map(|(k, v)| k.len() + v.len() + ATTRIBUTE_OVERHEAD)
            .sum::<usize>()
}

/// The parked records of one core, by pid: bounded in time (`ttl_ms`, the history ttl) and
/// in bytes (`max_bytes`, counted with [`PARKED_OVERHEAD`]; the oldest are dropped first).
/// A record leaves when it is restored, when a restore of it fails, or when its time is up.
pub struct ParkedSessions {
    ttl_ms: u64,
    max_bytes: usize,
    records: HashMap<Pid, (Parked, u64)>,
    /// Pids in the order they were parked, with when (stale entries skipped when reached).
    order: VecDeque<(Pid, u64)>,
    bytes: usize,
    dropped: u64,
}

impl ParkedSessions {
    pub fn new(ttl_ms: u64, max_bytes: usize) -> ParkedSessions {
        ParkedSessions {
            ttl_ms,
            max_bytes,
            records: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn contains(&self, pid: Pid) -> bool {
        self.records.contains_key(&pid)
    }

    /// Bytes counted for the records held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records dropped to stay within `max_bytes`.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Park `p` at `now_ms` (replacing a record of the same pid).
    pub fn park(&mut self, p: Parked, now_ms: u64) {
        let pid = p.ns.pid;
        if cost(&p) > self.max_bytes {
            self.dropped += 1;
            return;
        }
        self.bytes += cost(&p);
        if let Some((old, _)) = self.records.insert(pid, (p, now_ms)) {
            self.bytes -= cost(&old);
        }
        self.order.push_back((pid, now_ms));
        while self.bytes > self.max_bytes {
            match self.pop_oldest() {
                None => break,
                Some(dropped) => self.dropped += u64::from(dropped),
            }
        }
    }

    /// Take the record of `pid` if it is the user's, of namespace `nsp`, and not expired at
    /// `now_ms`. A record of another user or namespace stays (a pid is no proof of anything
    /// on its own).
    pub fn take(
        &mut self,
        pid: Pid,
        context: u32,
        user: &UserId,
        nsp: &str,
        now_ms: u64,
    ) -> Option<Parked> {
        self.expire(now_ms);
        let (p, _) = self.records.get(&pid)?;
        if !p.belongs_to(context, user, nsp) {
            return None;
        }
        let (p, _) = self.records.remove(&pid)?;
        self.bytes -= cost(&p);
        Some(p)
    }

    /// Drop the records parked `ttl_ms` or longer before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(_, at)) = self.order.front() {
            if now_ms.saturating_sub(at) < self.ttl_ms {
                break;
            }
            self.pop_oldest();
        }
        if self.order.len() > 2 * self.records.len() + 64 {
            let records = &self.records;
            self.order
                .retain(|(pid, at)| records.get(pid).is_some_and(|(_, t)| t == at));
        }
    }

    /// Take the oldest entry out of the order, and its record if it is still that one
    /// (whether one was dropped). None if nothing is left.
    fn pop_oldest(&mut self) -> Option<bool> {
        let (pid, at) = self.order.pop_front()?;
        if self.records.get(&pid).is_none_or(|(_, t)| *t != at) {
            return Some(false);
        }
        let (p, _) = self.records.remove(&pid)?;
        self.bytes -= cost(&p);
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: u64, offset: u64) -> Position {
        Position { epoch, offset }
    }

    fn parked(tag: u64, user: u32, nsp: &str, attrs: &[(&str, &str)]) -> Parked {
        Parked {
            context: 1,
            user: user.into(),
            ns: ParkNamespace {
                pid: Pid { epoch: 9, tag },
                nsp: nsp.into(),
                sid: "sid".into(),
                start: pos(9, 3),
                pushes: true,
            },
            attrs: attrs.iter().map(|&(k, v)| (k.into(), v.into())).collect(),
        }
    }

    #[test]
    fn v3_clients_opt_in_with_query_parameters() {
        assert_eq!(v3_resume("session=x"), None);
        assert_eq!(v3_resume("recover=0"), None);
        assert_eq!(v3_resume("recover=1&EIO=3"), Some(None));
        let o = "EIO=3&recover=1&offset=000000000000000a-42";
        assert_eq!(v3_resume(o), Some(Some(pos(10, 42))));
        assert_eq!(v3_resume("offset=junk"), Some(Some(pos(0, 0))));
        assert_eq!(v3_resume("recover=1&offset="), Some(None));
    }

    #[test]
    fn parked_records_round_trip_for_the_nats_store() {
        let p = parked(5, 7, "/chat", &[("tab", "a\"b"), ("k", "é")]);
        let back = Parked::decode(p.ns.pid, &p.encode()).expect("decodes");
        assert_eq!(back, p);
        assert!(back.belongs_to(1, &7.into(), "/chat"));
        assert!(!back.belongs_to(1, &8.into(), "/chat") && !back.belongs_to(1, &7.into(), "/"));
        assert!(Parked::decode(p.ns.pid, b"{\"context\":1}").is_none());
        assert!(Parked::decode(p.ns.pid, b"junk").is_none());
        // A string user's record keeps its user; a record of before string ids decodes.
        let mut s = p.clone();
        s.user = UserId::parse("alice@example.com").unwrap();
        let text = s.encode();
        assert!(String::from_utf8_lossy(&text).contains("\"user\":\"alice@example.com\""));
        let back = Parked::decode(p.ns.pid, &text).expect("decodes");
        assert!(back.belongs_to(1, &s.user, "/chat") && !back.belongs_to(1, &7.into(), "/chat"));
        let old = String::from_utf8(p.encode()).unwrap();
        assert!(old.contains("\"user\":7"), "{old}");
    }

    #[test]
    fn pids_and_offsets_round_trip_and_junk_is_refused() {
        let pid = Pid {
            epoch: 0x9c1e_40f2_a7b3_d5e1,
            tag: u64::MAX,
        };
        let s = pid.encode();
        assert_eq!(s.len(), 22);
        assert_eq!(Pid::decode(&s), Some(pid));
        for bad in [
            "",
            "abc",
            "!!!!!!!!!!!!!!!!!!!!!!",
            &s[1..],
            &format!("{s}A"),
        ] {
            assert_eq!(Pid::decode(bad), None, "{bad}");
        }
        let at = pos(0xab, 42);
        assert_eq!(offset_string(at), "00000000000000ab-42");
        assert_eq!(parse_offset("00000000000000ab-42"), Some(at));
        for bad in [
            "",
            "42",
            "ab-42",
            "00000000000000ab-",
            "00000000000000ab--1",
            "00000000000000ab-+1",
            "0000000000000zab-1",
            "00000000000000ab-99999999999999999999999",
        ] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_claim_is_a_string_pid_with_an_optional_offset() {
        let pid = Pid { epoch: 1, tag: 2 };
        let p = pid.encode();
        let c = Claim::parse(&format!(
            "{{\"token\":\"x\",\"pid\":\"{p}\",\"offset\":\"0000000000000001-7\"}}"
        ));
        assert_eq!(
            c,
            Some(Claim {
                pid: Some(pid),
                offset: Some(pos(1, 7)),
                bad_offset: false
            })
        );
        // No offset yet (no event came on that namespace).
        let c = Claim::parse(&format!("{{\"pid\":\"{p}\"}}")).unwrap();
        assert_eq!((c.pid, c.offset, c.bad_offset), (Some(pid), None, false));
        // Junk in the claim: the restore fails, the connect does not.
        let c = Claim::parse("{\"pid\":\"nope\",\"offset\":\"x\"}").unwrap();
        assert_eq!((c.pid, c.offset, c.bad_offset), (None, None, true));
        // Not a claim: a fresh connect.
        for fresh in [
            "",
            "{}",
            "[1]",
            "{\"token\":1}",
            "{\"pid\":5}",
            "{\"pid\":",
            "nul",
        ] {
            assert_eq!(Claim::parse(fresh), None, "{fresh}");
        }
        assert_eq!(
            Claim::parse(&format!("{{\"pid\":\"{p}\",\"offset\":7}}")),
            None,
            "an offset of another type is no socket.io client's"
        );
    }

    #[test]
    fn a_resume_never_starts_before_the_session_it_restores() {
        let start = pos(5, 100);
        assert_eq!(resume_from(Some(pos(5, 120)), start), pos(5, 120));
        assert_eq!(resume_from(None, start), start, "no event yet");
        assert_eq!(resume_from(Some(pos(5, 90)), start), start, "older session");
        assert_eq!(
            resume_from(Some(pos(4, 500)), start),
            start,
            "earlier start"
        );
    }

    #[test]
    fn parked_records_are_taken_once_by_their_user_and_namespace() {
        let mut p = ParkedSessions::new(1_000, 1 << 20);
        p.park(parked(1, 7, "/", &[("room", "blue")]), 0);
        let pid = Pid { epoch: 9, tag: 1 };
        assert_eq!(p.take(pid, 1, &8.into(), "/", 10), None, "another user");
        assert_eq!(
            p.take(pid, 1, &7.into(), "/chat", 10),
            None,
            "another namespace"
        );
        assert_eq!(
            p.take(Pid { epoch: 9, tag: 2 }, 1, &7.into(), "/", 10),
            None
        );
        let got = p.take(pid, 1, &7.into(), "/", 10).expect("its user");
        assert_eq!(&*got.attrs[0].1, "blue");
        assert_eq!(p.take(pid, 1, &7.into(), "/", 10), None, "once");
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn parked_records_expire_on_the_ttl() {
        let mut p = ParkedSessions::new(1_000, 1 << 20);
        p.park(parked(1, 7, "/", &[]), 0);
        p.park(parked(2, 7, "/", &[]), 500);
        p.expire(999);
        assert_eq!(p.len(), 2);
        p.expire(1_000);
        assert_eq!(p.len(), 1);
        assert!(p
            .take(Pid { epoch: 9, tag: 2 }, 1, &7.into(), "/", 1_499)
            .is_some());
        p.park(parked(3, 7, "/", &[]), 2_000);
        assert_eq!(
            p.take(Pid { epoch: 9, tag: 3 }, 1, &7.into(), "/", 3_000),
            None,
            "expired"
        );
        assert_eq!((p.len(), p.bytes()), (0, 0));
    }

    #[test]
    fn parked_records_are_bounded_in_bytes_oldest_dropped_first() {
        let one = cost(&parked(0, 7, "/", &[("k", "v")]));
        let mut p = ParkedSessions::new(60_000, 3 * one);
        for tag in 0..5 {
            p.park(parked(tag, 7, "/", &[("k", "v")]), tag);
            assert!(p.bytes() <= 3 * one);
        }
        assert_eq!((p.len(), p.dropped()), (3, 2));
        assert_eq!(
            p.take(Pid { epoch: 9, tag: 1 }, 1, &7.into(), "/", 10),
            None
        );
        assert!(p
            .take(Pid { epoch: 9, tag: 4 }, 1, &7.into(), "/", 10)
            .is_some());
        // Parking the same pid again replaces its record.
        p.park(parked(2, 7, "/", &[("k", "v")]), 20);
        assert_eq!((p.len(), p.bytes()), (2, 2 * one));
        // Many replacements leave stale order entries; they are compacted.
        for t in 0..1_000 {
            p.park(parked(2, 7, "/", &[("k", "v")]), 30 + t);
            p.expire(30 + t);
        }
        assert!(p.order.len() <= 2 * p.len() + 65);
        // A record larger than the whole bound is not kept.
        let big = "x".repeat(4 * one);
        p.park(parked(9, 7, "/", &[("k", &big)]), 2_000);
        assert_eq!(
            p.take(Pid { epoch: 9, tag: 9 }, 1, &7.into(), "/", 2_000),
            None
        );
        assert!(p.bytes() <= 3 * one);
    }
}

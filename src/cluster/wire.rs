//! The link protocol, sans-IO: frames to bytes and bytes to frames, no runtime, no clock.
//!
//! Each direction of a link is one QUIC unidirectional stream carrying frames:
//! `u32 length (of what follows) | u8 type | body`, integers big-endian, strings as
//! `u16 length | UTF-8` (filters, paths, node ids) or `u32 length | UTF-8` (push texts), a
//! user as `user` = `u8 0 | u32` (a numeric user) or `u8 1 | u8 length | UTF-8` (a string
//! user of 1-128 bytes, [`UserId`]; a string that is a number's canonical decimal is refused:
//! it is sent as the number).
//!
//! | type | frame | body |
//! | --- | --- | --- |
//! | 1 | Hello | u8 version, str16 node id, u64 instance (random per process run) |
//! | 2 | Presence | u32 n, n × (u32 context, user, u16 k, k × (str16 path, u32 sockets)) |
//! | 3 | Push | u32 n, n × (u32 context, user, str16 filter, str32 text) |
//! | 4 | Revoke | session id (41 bytes, compact), u32 context, user, u64 expires_at |
//! | 5 | Leaving | (empty): the sender drains; route nothing more to it |
//! | 6 | LeaveAck | (empty): the sender's cores stopped routing to the receiver |
//! | 7 | Ack | u64: pushes received from the receiver's current run ([`super::ledger`]) |
//! | 8 | Missed | u8 everyone (0/1), u32 n, n × (u32 context, user): the receiver's sockets of these users (or of everyone) may have missed pushes of the sender ([`super::missed`]) |
//!
//! A presence entry is absolute (the sender's whole count for that user, per socket path; no
//! path = no sockets left), so entries are idempotent and a re-sync is just all of them.
use crate::service::history::Position;
use crate::service::session::{Revocation, SessionId};
use crate::service::user_id::UserId;
use std::sync::Arc;

/// 5: users are tagged (a number or a string, see the module docs); 4 had `u32` users.
pub const VERSION: u8 = 5;
/// Largest frame accepted (a batch of pushes is cut into frames below this).
pub const MAX_FRAME: usize = 16 << 20;
/// A sender starts a new frame once one holds this many bytes.
pub const SOFT_FRAME: usize = 1 << 20;
/// Users per `Missed` frame (at most 8.4 MiB with 128-byte users, below [`MAX_FRAME`]).
pub const MISSED_PER_FRAME: usize = 65_536;
const SESSION_ID_LEN: usize = std::mem::size_of::<SessionId>();

/// One user's sockets on the sending node, per socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub context: u32,
    pub user: UserId,
    pub paths: Vec<(Box<str>, u32)>,
}

/// A push for a user on the receiving node (the receiver applies the filter).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemotePush {
    pub context: u32,
    pub user: UserId,
    pub filter: Box<str>,
    pub text: Arc<str>,
    /// Its position in a history shared by the nodes (`nats` store). Pushes with positions
    /// are never equal to one another, so they are never merged.
    pub at: Option<Position>,
    /// With `at`: the offset of the user's message before it in the history (see
    /// `PushJob::prev`).
    pub prev: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u8,
        node: String,
        instance: u64,
    },
    Presence(Vec<UserPresence>),
    Push(Vec<RemotePush>),
    Revoke(Revocation),
    /// The sender drains: it is not to be routed to any more (answered with `LeaveAck`).
    Leaving,
    /// Every core of the sender stopped routing to the receiver.
    LeaveAck,
    /// Pushes the sender received from the receiver's current run.
    Ack(u64),
    /// The receiver's sockets of these users (`all`: of every user) may have missed pushes
    /// the sender made while the link was failing or down.
    Missed {
        all: bool,
        users: Vec<(u32, UserId)>,
    },
}

/// Why a peer's bytes cannot be decoded: the link is closed with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    FrameTooLarge,
    UnknownType(u8),
    Truncated,
    TrailingBytes,
    BadUtf8,
    /// A push's position tag is neither 0 (none) nor 1.
    BadPositionTag(u8),
    /// A flag that is neither 0 nor 1.
    BadFlag(u8),
    /// A user that is not one: an unknown tag, or a string that is not a user id.
    BadUser,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::FrameTooLarge => write!(f, "frame larger than {MAX_FRAME} bytes"),
            WireError::UnknownType(t) => write!(f, "unknown frame type {t}"),
            WireError::BadPositionTag(t) => write!(f, "bad push position tag {t}"),
            WireError::BadFlag(t) => write!(f, "bad flag {t}"),
            WireError::Truncated => f.write_str("frame body shorter than its fields"),
            WireError::TrailingBytes => f.write_str("bytes after a frame's last field"),
            WireError::BadUtf8 => f.write_str("string not UTF-8"),
            WireError::BadUser => f.write_str("bad user id"),
        }
    }
}

// ----- encoding -----

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Callers bound these (filters 1 KiB, paths and ids short); cut at a char boundary if not.
    let (s, _) = crate::protocol::utf8::truncate_utf8(s, u16::MAX as usize);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_str32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Append one frame: reserve the length, write type and body, patch the length.
fn frame(out: &mut Vec<u8>, ty: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(ty);
    body(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn encode_hello(out: &mut Vec<u8>, node: &str, instance: u64) {
    frame(out, 1, |o| {
        o.push(VERSION);
        put_str16(o, node);
        o.extend_from_slice(&instance.to_be_bytes());
    });
}

/// Pushes received so far from the receiver's current run.
pub fn encode_ack(out: &mut Vec<u8>, received: u64) {
    frame(out, 7, |o| o.extend_from_slice(&received.to_be_bytes()));
}

pub fn encode_revoke(out: &mut Vec<u8>, r: &Revocation) {
    frame(out, 4, |o| {
        o.extend_from_slice(&r.id.0);
        o.extend_from_slice(&r.context.to_be_bytes());
        r.user.encode(o);
        o.extend_from_slice(&r.expires_at.to_be_bytes());
    });
}

/// Users whose sockets may have missed pushes (see [`Frame::Missed`]), in frames of at most
/// [`MISSED_PER_FRAME`] users; `all`: one frame that says everyone.
pub fn encode_missed(out: &mut Vec<u8>, all: bool, users: &[(u32, UserId)]) {
    let users = if all { &[][..] } else { users };
    let mut chunks = users.chunks(MISSED_PER_FRAME);
    let mut chunk = chunks.next();
    while all || chunk.is_some() {
        let list = chunk.unwrap_or_default();
        frame(out, 8, |o| {
            o.push(u8::from(all));
            o.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for (c, u) in list {
                o.extend_from_slice(&c.to_be_bytes());
                u.encode(o);
            }
        });
        if all {
            return;
        }
        chunk = chunks.next();
    }
}

/// The sender drains (see [`Frame::Leaving`]).
pub fn encode_leaving(out: &mut Vec<u8>) {
    frame(out, 5, |_| {});
}

/// Its cores stopped routing to the node that is leaving (see [`Frame::LeaveAck`]).
pub fn encode_leave_ack(out: &mut Vec<u8>) {
    frame(out, 6, |_| {});
}

/// Append entries as frames of at most about [`SOFT_FRAME`] bytes each.
fn encode_list<T>(out: &mut Vec<u8>, ty: u8, items: &[T], put: impl Fn(&mut Vec<u8>, &T)) {
    let mut rest = items;
    while !rest.is_empty() {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(ty);
        let count_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut n = 0usize;
        for item in rest {
            put(out, item);
            n += 1;
            if out.len() - start >= SOFT_FRAME {
                break;
            }
        }
        rest = &rest[n..];
        out[count_at..count_at + 4].copy_from_slice(&(n as u32).to_be_bytes());
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

pub fn encode_presence(out: &mut Vec<u8>, entries: &[UserPresence]) {
    encode_list(out, 2, entries, |o, e| {
        o.extend_from_slice(&e.context.to_be_bytes());
        e.user.encode(o);
        let k = e.paths.len().min(u16::MAX as usize);
        o.extend_from_slice(&(k as u16).to_be_bytes());
        for (path, n) in &e.paths[..k] {
            put_str16(o, path);
            o.extend_from_slice(&n.to_be_bytes());
        }
    });
}

/// Pushes over [`MAX_FRAME`] on their own cannot be sent; the admin API caps texts at 1 MiB.
pub fn encode_pushes(out: &mut Vec<u8>, pushes: &[RemotePush]) {
    encode_list(out, 3, pushes, |o, p| {
        o.extend_from_slice(&p.context.to_be_bytes());
        p.user.encode(o);
        put_str16(o, &p.filter);
        put_str32(o, &p.text);
        match (p.at, p.prev) {
            (None, _) => o.push(0),
            (Some(at), prev) => {
                o.push(if prev.is_some() { 2 } else { 1 });
                o.extend_from_slice(&at.epoch.to_be_bytes());
                o.extend_from_slice(&at.offset.to_be_bytes());
                if let Some(prev) = prev {
                    o.extend_from_slice(&prev.to_be_bytes());
                }
            }
        }
    });
}

/// Bytes a push takes on the wire (for queue accounting).
pub fn push_wire_len(p: &RemotePush) -> usize {
    let position = match (p.at, p.prev) {
        (None, _) => 1,
        (Some(_), None) => 17,
        (Some(_), Some(_)) => 25,
    };
    4 + p.user.encoded_len() + 2 + p.filter.len() + 4 + p.text.len() + position
}

// ----- decoding -----

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn str_of(&mut self, n: usize) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::BadUtf8)
    }
    /// A user (see the module docs).
    fn user(&mut self) -> Result<UserId, WireError> {
        match self.u8()? {
            0 => Ok(UserId::from(self.u32()?)),
            1 => {
                let n = self.u8()? as usize;
                let u = UserId::from_bytes(self.take(n)?).map_err(|_| WireError::BadUser)?;
                // The number's canonical decimal travels as the number: one form per user.
                if u.as_num().is_some() {
                    return Err(WireError::BadUser);
                }
                Ok(u)
            }
            _ => Err(WireError::BadUser),
        }
    }
    fn str16(&mut self) -> Result<&'a str, WireError> {
        let n = self.u16()? as usize;
        self.str_of(n)
    }
    fn str32(&mut self) -> Result<&'a str, WireError> {
        let n = self.u32()? as usize;
        self.str_of(n)
    }
    /// A count of items each at least `min` bytes long: bounded by what is left, so a forged
    /// count cannot make us reserve memory.
    fn count(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.b.len() {
            return Err(WireError::Truncated);
        }
        Ok(n)
    }
    /// `n` items read by `item`, each at least `min` bytes (the reservation is bounded by what
    /// is left).
    fn list<T>(
        &mut self,
        n: usize,
        min: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let mut v = Vec::with_capacity(n.min(self.b.len() / min));
        for _ in 0..n {
            v.push(item(self)?);
        }
        Ok(v)
    }
}

/// Decode one frame body (after the length).
pub fn decode_frame(body: &[u8]) -> Result<Frame, WireError> {
    let mut r = Reader { b: body };
    let frame = match r.u8()? {
        1 => Frame::Hello {
            version: r.u8()?,
            node: r.str16()?.to_string(),
            instance: r.u64()?,
        },
        2 => {
            let n = r.count(9)?;
            Frame::Presence(r.list(n, 9, |r| {
                Ok(UserPresence {
                    context: r.u32()?,
                    user: r.user()?,
                    paths: {
                        let k = r.u16()? as usize;
                        r.list(k, 6, |r| Ok((r.str16()?.into(), r.u32()?)))?
                    },
                })
            })?)
        }
        3 => {
            let n = r.count(14)?;
            Frame::Push(r.list(n, 14, |r| {
                let (context, user) = (r.u32()?, r.user()?);
                let filter = r.str16()?.into();
                let text = Arc::from(r.str32()?);
                let tag = r.u8()?;
                let at = match tag {
                    0 => None,
                    1 | 2 => Some(Position {
                        epoch: r.u64()?,
                        offset: r.u64()?,
                    }),
                    t => return Err(WireError::BadPositionTag(t)),
                };
                let prev = if tag == 2 { Some(r.u64()?) } else { None };
                Ok(RemotePush {
                    context,
                    user,
                    filter,
                    text,
                    at,
                    prev,
                })
            })?)
        }
        4 => {
            let mut id = [0u8; SESSION_ID_LEN];
            id.copy_from_slice(r.take(SESSION_ID_LEN)?);
            Frame::Revoke(Revocation {
                id: SessionId(id),
                context: r.u32()?,
                user: r.user()?,
                expires_at: r.u64()?,
            })
        }
        5 => Frame::Leaving,
        6 => Frame::LeaveAck,
        7 => Frame::Ack(r.u64()?),
        8 => {
            let all = match r.u8()? {
                0 => false,
                1 => true,
                t => return Err(WireError::BadFlag(t)),
            };
            let n = r.count(7)?;
            Frame::Missed {
                all,
                users: r.list(n, 7, |r| Ok((r.u32()?, r.user()?)))?,
            }
        }
        t => return Err(WireError::UnknownType(t)),
    };
    if !r.b.is_empty() {
        return Err(WireError::TrailingBytes);
    }
    Ok(frame)
}

/// The peer's node id and run from its first frame, a hello of this [`VERSION`]; else why
/// the link is refused.
pub fn accept_hello(first: Result<Frame, WireError>) -> Result<(String, u64), String> {
    match first {
        Ok(Frame::Hello {
            version,
            node,
            instance,
        }) if version == VERSION => Ok((node, instance)),
        Ok(Frame::Hello { version, .. }) => Err(format!("link protocol version {version}")),
        Ok(_) => Err("first frame is not a hello".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Reassembles frames from a byte stream read in arbitrary pieces.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed (compacted lazily).
    pos: usize,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::FrameTooLarge);
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let frame = decode_frame(&avail[4..4 + len]);
        self.pos += 4 + len;
        if self.pos > (1 << 20) && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        frame.map(Some)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;

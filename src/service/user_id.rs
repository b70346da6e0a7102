//! A user id: a `u32` or a string of 1-128 bytes of UTF-8 with no control characters.
//!
//! The canonical form: a string that is the canonical decimal of a `u32` ("42": no sign, no
//! leading zero, at most 4294967295) IS that number, so "42" and 42 are the same user
//! everywhere (equality, hash, placement, sessions, history subjects). Strings of up to
//! [`INLINE_MAX`] bytes are stored inline (no allocation); longer ones in an `Arc<str>`, so a
//! clone (one user's sockets, queued pushes, directory entries) shares them. A `UserId` is
//! 24 bytes; a numeric one is hashed, compared and placed as the `u32` it is.
//!
//! In JSON a user is a non-negative integer up to 4294967295 or a string as above (answers
//! give a number for a numeric id, a string otherwise); in a path or query string it is its
//! text (percent-decoded by the caller).
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Longest user id string, in bytes.
pub const MAX_LEN: usize = 128;
/// Longest string stored inline (no heap allocation).
pub const INLINE_MAX: usize = 22;

/// A user id (see the module docs). Construct it with `From<u32>`, [`UserId::parse`] or
/// serde; every constructor gives the canonical form.
#[derive(Clone)]
pub struct UserId(Repr);

#[derive(Clone)]
enum Repr {
    Num(u32),
    Inline { len: u8, buf: [u8; INLINE_MAX] },
    Heap(Arc<str>),
}

/// Why a value is not a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserIdError {
    /// An empty string.
    Empty,
    /// A string of this many bytes (more than [`MAX_LEN`]).
    TooLong(usize),
    /// A string with a control character (U+0000-U+001F, U+007F-U+009F).
    ControlCharacter,
    /// Not a string nor an integer 0..=4294967295 (negative, fractional, too large, an
    /// object, an array, a boolean, null).
    NotStringOrInteger,
}

impl fmt::Display for UserIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserIdError::Empty => f.write_str("user id is empty"),
            UserIdError::TooLong(n) => {
                write!(
                    f,
                    "user id is {n} bytes long, at most {MAX_LEN} are allowed"
                )
            }
            UserIdError::ControlCharacter => f.write_str("user id contains a control character"),
            UserIdError::NotStringOrInteger => f.write_str(
                "user id must be a string (1-128 bytes) or an integer from 0 to 4294967295",
            ),
        }
    }
}

impl std::error::Error for UserIdError {}

impl From<u32> for UserId {
    fn from(n: u32) -> UserId {
        UserId(Repr::Num(n))
    }
}

/// The number `s` is the canonical decimal of, if any.
fn canonical_u32(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    s.parse().ok()
}

impl UserId {
    /// A user id from its text: the canonical decimal of a `u32` is that number, any other
    /// string of 1-128 bytes without control characters is a string id.
    pub fn parse(s: &str) -> Result<UserId, UserIdError> {
        if let Some(n) = canonical_u32(s) {
            return Ok(UserId(Repr::Num(n)));
        }
        if s.is_empty() {
            return Err(UserIdError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(UserIdError::TooLong(s.len()));
        }
        if s.chars().any(char::is_control) {
            return Err(UserIdError::ControlCharacter);
        }
        if s.len() <= INLINE_MAX {
            let mut buf = [0u8; INLINE_MAX];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            return Ok(UserId(Repr::Inline {
                len: s.len() as u8,
                buf,
            }));
        }
        Ok(UserId(Repr::Heap(Arc::from(s))))
    }

    /// A user id from its bytes (the cluster wire, a session): UTF-8 text as
    /// [`UserId::parse`] takes it.
    pub fn from_bytes(b: &[u8]) -> Result<UserId, UserIdError> {
        match std::str::from_utf8(b) {
            Ok(s) => UserId::parse(s),
            Err(_) => Err(UserIdError::NotStringOrInteger),
        }
    }

    /// A user id from a JSON value: a non-negative integer up to `u32::MAX` or a string.
    pub fn from_json(v: &serde_json::Value) -> Result<UserId, UserIdError> {
        match v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(UserId::from)
                .ok_or(UserIdError::NotStringOrInteger),
            serde_json::Value::String(s) => UserId::parse(s),
            _ => Err(UserIdError::NotStringOrInteger),
        }
    }

    /// The number, for a numeric id.
    pub fn as_num(&self) -> Option<u32> {
        match self.0 {
            Repr::Num(n) => Some(n),
            _ => None,
        }
    }

    /// The string, for a string id (`None` for a numeric one).
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Repr::Num(_) => None,
            Repr::Inline { len, buf } => std::str::from_utf8(&buf[..*len as usize]).ok(),
            Repr::Heap(s) => Some(s),
        }
    }

    /// The string's bytes (empty for a numeric id).
    fn str_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Num(_) => &[],
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// Is the string stored on the heap (longer than [`INLINE_MAX`] bytes)?
    pub fn is_heap(&self) -> bool {
        matches!(self.0, Repr::Heap(_))
    }

    /// Heap bytes this id holds on its own (shared by its clones): for the memory bounds
    /// that count what they keep.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Heap(s) => s.len() + 16,
            _ => 0,
        }
    }

    /// Its text: the decimal of a number, or the string.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self.as_str() {
            Some(s) => s.into(),
            None => self.as_num().unwrap_or_default().to_string().into(),
        }
    }

    /// Feed the id to a stable byte hash (placement: every node must agree): a number as
    /// its four big-endian bytes, a string as a marker byte (0xff, never in UTF-8) and its
    /// bytes.
    pub fn stable_bytes(&self, mut sink: impl FnMut(&[u8])) {
        match self.0 {
            Repr::Num(n) => sink(&n.to_be_bytes()),
            _ => {
                sink(&[0xff]);
                sink(self.str_bytes());
            }
        }
    }

    /// Append its wire form: tag 0 and a big-endian `u32`, or tag 1, a length byte and the
    /// string's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self.0 {
            Repr::Num(n) => {
                out.push(0);
                out.extend_from_slice(&n.to_be_bytes());
            }
            _ => {
                let b = self.str_bytes();
                out.push(1);
                out.push(b.len() as u8);
                out.extend_from_slice(b);
            }
        }
    }

    /// Bytes of its wire form ([`UserId::encode`]).
    pub fn encoded_len(&self) -> usize {
        match self.0 {
            Repr::Num(_) => 5,
            _ => 2 + self.str_bytes().len(),
        }
    }
}

impl PartialEq for UserId {
    fn eq(&self, other: &UserId) -> bool {
        match (&self.0, &other.0) {
            (Repr::Num(a), Repr::Num(b)) => a == b,
            (Repr::Num(_), _) | (_, Repr::Num(_)) => false,
            _ => self.str_bytes() == other.str_bytes(),
        }
    }
}

impl Eq for UserId {}

impl Hash for UserId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            Repr::Num(n) => state.write_u32(n),
            _ => {
                state.write_u8(0xff);
                state.write(self.str_bytes());
            }
        }
    }
}

impl Ord for UserId {
    /// Numbers first (by value), then strings (by bytes).
    fn cmp(&self, other: &UserId) -> std::cmp::Ordering {
        match (self.as_num(), other.as_num()) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => self.str_bytes().cmp(other.str_bytes()),
        }
    }
}

impl PartialOrd for UserId {
    fn partial_cmp(&self, other: &UserId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Default for UserId {
    fn default() -> UserId {
        UserId(Repr::Num(0))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Num(n) => write!(f, "{n}"),
            _ => f.write_str(self.as_str().unwrap_or_default()),
        }
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Num(n) => write!(f, "{n}"),
            _ => write!(f, "{:?}", self.as_str().unwrap_or_default()),
        }
    }
}

impl std::str::FromStr for UserId {
    type Err = UserIdError;
    fn from_str(s: &str) -> Result<UserId, UserIdError> {
        UserId::parse(s)
    }
}

impl serde::Serialize for UserId {
    /// A number for a numeric id, a string otherwise.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Repr::Num(n) => s.serialize_u32(n),
            _ => s.serialize_str(self.as_str().unwrap_or_default()),
        }
    }
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = UserId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a user id: a string (1-128 bytes) or an integer from 0 to 4294967295")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UserId, E> {
        u32::try_from(v)
            .map(UserId::from)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<UserId, E> {
        u32::try_from(v)
            .map(UserId::from)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UserId, E> {
        UserId::parse(v).map_err(E::custom)
    }
}

impl<'de> serde::Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UserId, D::Error> {
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
#[path = "user_id_tests.rs"]
mod tests;

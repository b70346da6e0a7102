//! Pushes as JSON: the bodies of `POST /v1/push` and `POST /v1/push/batch`, their limits and
//! their answers. The admin API and the NATS ingress both take pushes through here, so that
//! they accept the same JSON, refuse it with the same messages and answer the same counts.
use super::{PushCounts, PushJob};
use crate::service::history::Position;
use crate::service::path_filter::PathFilter;
use crate::service::user_id::UserId;
use serde::Deserialize;
use std::sync::Arc;

/// Longest path filter accepted (globs are matched per socket).
pub const MAX_FILTER_LEN: usize = 1024;
/// Largest push message (a push is copied into every matching socket's queue).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Most pushes in one batch.
pub const MAX_BATCH: usize = 10_000;

/// Why a body was refused. Either way the text is the whole message an API answers
/// (`{"error": text}`), the same for every caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not the JSON a push takes: not JSON, a field missing, unknown or of the wrong type.
    Json(String),
    /// Well-formed, but a value is out of bounds (a path filter or message too long, too many
    /// pushes in a batch) or disagrees with where the push came from.
    Invalid(String),
}

impl Refused {
    pub fn message(&self) -> &str {
        match self {
            Refused::Json(m) | Refused::Invalid(m) => m,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    /// Required in `POST /v1/push`; a NATS subject that names the user may leave both out.
    #[serde(default)]
    context: Option<u32>,
    /// A number (0..=4294967295) or a string of 1-128 bytes ([`UserId`]).
    #[serde(default)]
    user: Option<UserId>,
    #[serde(default)]
    path: Option<String>,
    /// A string is sent as it is; any other JSON value (object, array, number, boolean,
    /// null) as its compact JSON text, so that JSON payloads need no second encoding.
    #[serde(deserialize_with = "text_or_json")]
    message: String,
    /// Remote coalescing (cluster); local delivery is immediate either way.
    #[serde(default = "yes")]
    coalesce: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBatch {
    pushes: Vec<PushRequest>,
}

/// A JSON string's content, or any other JSON value's text as it was written, less the
/// whitespace between tokens (`null` included: an absent `message` is the error, a null one
/// is the JSON value null). Keys keep their order and numbers their spelling.
fn text_or_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = <Box<serde_json::value::RawValue>>::deserialize(d)?;
    let text = raw.get();
    if text.starts_with('"') {
        return serde_json::from_str(text).map_err(serde::de::Error::custom);
    }
    Ok(compact(text))
}

/// Valid JSON `text` without the whitespace outside its strings.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            in_string = ch == '"';
            out.push(ch);
        }
    }
    out
}

fn yes() -> bool {
    true
}

/// The same limit and message for every path filter the API takes (push, batch, sockets).
pub fn check_filter(path: &str) -> Result<(), String> {
    if path.len() > MAX_FILTER_LEN {
        return Err(format!("path filter longer than {MAX_FILTER_LEN} bytes"));
    }
    Ok(())
}

impl PushRequest {
    /// `context` and `user` are given, or a [`Refused::Json`] names the first missing one.
    fn require_ids(self, what: &str) -> Result<Self, Refused> {
        for (name, missing) in [
            ("context", self.context.is_none()),
            ("user", self.user.is_none()),
        ] {
            if missing {
                return Err(Refused::Json(format!("{what}: missing field `{name}`")));
            }
        }
        Ok(self)
    }

    fn into_job(self) -> Result<PushJob, String> {
        let path = self.path.unwrap_or_else(|| "*".into());
        check_filter(&path)?;
        if self.message.len() > MAX_MESSAGE_LEN {
            return Err(format!("message longer than {MAX_MESSAGE_LEN} bytes"));
        }
        Ok(PushJob {
            context: self.context.unwrap_or_default(),
            user: self.user.unwrap_or_default(),
            filter: PathFilter::new(&path),
            text: Arc::from(self.message),
            coalesce: self.coalesce,
            at: None,
            prev: None,
        })
    }
}

/// The body of `POST /v1/push`: `{"context","user","path"?,"message","coalesce"?}`.
pub fn parse_push(body: &[u8]) -> Result<PushJob, Refused> {
    let req = serde_json::from_slice::<PushRequest>(body)
        .map_err(|e| Refused::Json(format!("invalid push: {e}")))?
        .require_ids("invalid push")?;
    req.into_job()
        .map_err(|e| Refused::Invalid(format!("invalid push: {e}")))
}

/// A push for `(context, user)` named elsewhere (a NATS subject): the body of
/// `POST /v1/push` in which `context` and `user` may be left out; when given they must be
/// these.
pub fn parse_push_for(body: &[u8], context: u32, user: &UserId) -> Result<PushJob, Refused> {
    let mut req = serde_json::from_slice::<PushRequest>(body)
        .map_err(|e| Refused::Json(format!("invalid push: {e}")))?;
    let disagrees = |name: &str, got: &dyn std::fmt::Display, want: &dyn std::fmt::Display| {
        Refused::Invalid(format!(
            "invalid push: {name} {got} in the body disagrees with {name} {want} of the subject"
        ))
    };
    match req.context {
        Some(got) if got != context => return Err(disagrees("context", &got, &context)),
        _ => req.context = Some(context),
    }
    match &req.user {
        Some(got) if got != user => return Err(disagrees("user", got, user)),
        _ => req.user = Some(user.clone()),
    }
    req.into_job()
        .map_err(|e| Refused::Invalid(format!("invalid push: {e}")))
}

/// The body of `POST /v1/push/batch`: `{"pushes":[push, ...]}`, at most [`MAX_BATCH`].
pub fn parse_batch(body: &[u8]) -> Result<Vec<PushJob>, Refused> {
    let batch: PushBatch =
        serde_json::from_slice(body).map_err(|e| Refused::Json(format!("invalid batch: {e}")))?;
    if batch.pushes.len() > MAX_BATCH {
        return Err(Refused::Invalid(format!(
            "at most {MAX_BATCH} pushes per batch"
        )));
    }
    batch
        .pushes
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.require_ids(&format!("invalid batch: pushes[{i}]"))?
                .into_job()
                .map_err(|e| Refused::Invalid(format!("pushes[{i}]: {e}")))
        })
        .collect()
}

/// The answer to one push: `{"sockets","remote_nodes"}`, and `"position"` with history.
pub fn push_answer(c: &PushCounts) -> serde_json::Value {
    let mut answer = serde_json::json!({ "sockets": c.sockets, "remote_nodes": c.remote_nodes });
    if let Some(&p) = c.positions.first() {
        answer["position"] = position_json(p);
    }
    answer
}

/// The answer to a batch of `n` pushes: `{"pushes","sockets","remote_nodes"}`, and
/// `"positions"` (in the order of the pushes) with history.
pub fn batch_answer(n: usize, c: &PushCounts) -> serde_json::Value {
    let mut answer = serde_json::json!({
        "pushes": n,
        "sockets": c.sockets,
        "remote_nodes": c.remote_nodes,
    });
    if !c.positions.is_empty() {
        answer["positions"] = c.positions.iter().copied().map(position_json).collect();
    }
    answer
}

/// A push's position as the API answers it (the epoch as on the wire: 16 hex digits);
/// `null` when the history store could not record it.
fn position_json(p: Option<Position>) -> serde_json::Value {
    match p {
        Some(p) => serde_json::json!({
            "epoch": crate::service::history::envelope::epoch_hex(p.epoch),
            "offset": p.offset,
        }),
        None => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_names_the_user_unless_the_body_disagrees() {
        let u42 = UserId::from(42);
        let j = parse_push_for(br#"{"message":"hi"}"#, 3, &u42).unwrap();
        assert_eq!((j.context, j.user, &*j.text), (3, 42.into(), "hi"));
        let j = parse_push_for(br#"{"context":3,"user":42,"message":[1]}"#, 3, &u42).unwrap();
        assert_eq!(&*j.text, "[1]");
        let e = parse_push_for(br#"{"user":41,"message":"x"}"#, 3, &u42).unwrap_err();
        assert!(matches!(&e, Refused::Invalid(m) if m.contains("user 41 in the body disagrees")));
        // "42" is the user 42; a string user is named as the subject names it.
        assert!(parse_push_for(br#"{"user":"42","message":"x"}"#, 3, &u42).is_ok());
        let alice = UserId::parse("alice").unwrap();
        let j = parse_push_for(br#"{"user":"alice","message":"x"}"#, 3, &alice).unwrap();
        assert_eq!(j.user, alice);
        let e = parse_push_for(br#"{"user":"bob","message":"x"}"#, 3, &alice).unwrap_err();
        assert!(
            matches!(&e, Refused::Invalid(m) if m.contains("user bob in the body disagrees with user alice"))
        );
        let e = parse_push_for(br#"{"user":-1,"message":"x"}"#, 3, &u42).unwrap_err();
        assert!(
            matches!(&e, Refused::Json(m) if m.contains("user id")),
            "{e:?}"
        );
        assert!(matches!(
            parse_push_for(b"[1]", 3, &u42),
            Err(Refused::Json(_))
        ));
        assert!(matches!(
            parse_push_for(br#"{"message":"x","extra":1}"#, 3, &u42),
            Err(Refused::Json(_))
        ));
    }

    #[test]
    fn refusals_keep_the_api_messages() {
        let e = parse_push(br#"{"context":1,"message":"x"}"#).unwrap_err();
        assert!(
            e.message()
                .starts_with("invalid push: missing field `user`"),
            "{e:?}"
        );
        let long = format!(
            r#"{{"context":1,"user":1,"path":"{}","message":"x"}}"#,
            "a".repeat(MAX_FILTER_LEN + 1)
        );
        let e = parse_push(long.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            Refused::Invalid("invalid push: path filter longer than 1024 bytes".into())
        );
        let e = parse_batch(br#"{"pushes":[{"context":1,"user":1}]}"#).unwrap_err();
        assert!(
            e.message()
                .starts_with("invalid batch: missing field `message`"),
            "{e:?}"
        );
        let e = parse_batch(br#"{"pushes":[{"context":1,"message":"x"}]}"#).unwrap_err();
        assert_eq!(
            e,
            Refused::Json("invalid batch: pushes[0]: missing field `user`".into())
        );
        let v = br#"{"pushes":[{"context":1,"user":1,"message":null},{"context":1,"user":1,"message":{"z": [1, 2.50, true], "a" : "\" x\\" ,"e":1e3}}]}"#;
        let texts: Vec<_> = parse_batch(v)
            .unwrap()
            .into_iter()
            .map(|j| j.text)
            .collect();
        assert_eq!(&*texts[0], "null");
        assert_eq!(
            &*texts[1], r#"{"z":[1,2.50,true],"a":"\" x\\","e":1e3}"#,
            "order and spelling kept"
        );
        let e = parse_push(br#"{"context":1,"user":"","message":"x"}"#).unwrap_err();
        assert!(e.message().contains("user id is empty"), "{e:?}");
        let e = parse_push(br#"{"context":1,"user":{},"message":"x"}"#).unwrap_err();
        assert!(e.message().contains("expected a user id"), "{e:?}");
        let j = parse_push(
            br#"{"context":1,"user":"6f1c1d2e-8d3b-4b0c-9a59-2b8f7d1e0a44","message":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            j.user.as_str(),
            Some("6f1c1d2e-8d3b-4b0c-9a59-2b8f7d1e0a44")
        );
        let two = br#"{"pushes":[{"context":1,"user":1,"message":"a"},{"context":1,"user":1,"path":"*","message":"b"}]}"#;
        assert_eq!(parse_batch(two).unwrap().len(), 2);
    }
}

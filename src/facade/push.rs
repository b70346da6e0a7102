//! Pushes as JSON: the bodies of `POST /v1/push` and `POST /v1/push/batch`, their limits and
//! their answers. The admin API and the NATS ingress both take pushes through here, so that
//! they accept the same JSON, refuse it with the same messages and answer the same counts.
use super::{PushCounts, PushJob};
use crate::service::history::Position;
use crate::service::path_filter::PathFilter;
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
    context: u32,
    user: u32,
    #[serde(default)]
    path: Option<String>,
    /// A string is sent as it is; any other JSON value (object, array, number...) as its
    /// JSON text, so that JSON payloads need no second encoding.
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

/// A JSON string's content, or any other JSON value's compact JSON text.
fn text_or_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Null => Err(serde::de::Error::custom(
            "message is null: give a string or any other JSON value",
        )),
        other => Ok(other.to_string()),
    }
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
    fn into_job(self) -> Result<PushJob, String> {
        let path = self.path.unwrap_or_else(|| "*".into());
        check_filter(&path)?;
        if self.message.len() > MAX_MESSAGE_LEN {
            return Err(format!("message longer than {MAX_MESSAGE_LEN} bytes"));
        }
        Ok(PushJob {
            context: self.context,
            user: self.user,
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
        .map_err(|e| Refused::Json(format!("invalid push: {e}")))?;
    req.into_job()
        .map_err(|e| Refused::Invalid(format!("invalid push: {e}")))
}

/// A push for `(context, user)` named elsewhere (a NATS subject): the body of
/// `POST /v1/push` in which `context` and `user` may be left out; when given they must be
/// these.
pub fn parse_push_for(body: &[u8], context: u32, user: u32) -> Result<PushJob, Refused> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| Refused::Json(format!("invalid push: {e}")))?;
    for (name, want) in [("context", context), ("user", user)] {
        match fields.get(name).map(serde_json::Value::as_u64) {
            None => {
                fields.insert(name.into(), want.into());
            }
            Some(Some(got)) if got != u64::from(want) => {
                return Err(Refused::Invalid(format!(
                    "invalid push: {name} {got} in the body disagrees with {name} {want} of the subject"
                )));
            }
            // Equal, or not a number: the type check below says what is wrong.
            Some(_) => {}
        }
    }
    let req = serde_json::from_value::<PushRequest>(fields.into())
        .map_err(|e| Refused::Json(format!("invalid push: {e}")))?;
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
            p.into_job()
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
        let j = parse_push_for(br#"{"message":"hi"}"#, 3, 42).unwrap();
        assert_eq!((j.context, j.user, &*j.text), (3, 42, "hi"));
        let j = parse_push_for(br#"{"context":3,"user":42,"message":[1]}"#, 3, 42).unwrap();
        assert_eq!(&*j.text, "[1]");
        let e = parse_push_for(br#"{"user":41,"message":"x"}"#, 3, 42).unwrap_err();
        assert!(matches!(&e, Refused::Invalid(m) if m.contains("user 41 in the body disagrees")));
        let e = parse_push_for(br#"{"user":"42","message":"x"}"#, 3, 42).unwrap_err();
        assert!(
            matches!(&e, Refused::Json(m) if m.contains("invalid type")),
            "{e:?}"
        );
        assert!(matches!(
            parse_push_for(b"[1]", 3, 42),
            Err(Refused::Json(_))
        ));
        assert!(matches!(
            parse_push_for(br#"{"message":"x","extra":1}"#, 3, 42),
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
        let e = parse_batch(br#"{"pushes":[{"context":1,"user":1,"message":null}]}"#).unwrap_err();
        assert!(
            e.message().starts_with("invalid batch: message is null"),
            "{e:?}"
        );
        let two = br#"{"pushes":[{"context":1,"user":1,"message":"a"},{"context":1,"user":1,"path":"*","message":"b"}]}"#;
        assert_eq!(parse_batch(two).unwrap().len(), 2);
    }
}

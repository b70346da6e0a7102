//! The request bodies of the push driver, with a placeholder for the send timestamp that
//! is stamped right before the request leaves.

use crate::admin::push::PushConfig;

/// Width of the placeholder for the send timestamp (unix ns has 19 digits until 2286).
const TS_DIGITS: usize = 19;

/// One push of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedPush {
    pub user: u64,
    /// The push number (fanout: the event number).
    pub seq: u64,
    /// The number of this push among the pushes to `user`, from 0.
    pub user_seq: u64,
}

/// One request: its pushes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    pub pushes: Vec<PlannedPush>,
}

/// A request body with the byte offsets of the timestamp placeholders.
pub struct Body {
    pub bytes: Vec<u8>,
    ts_at: Vec<usize>,
}

/// Builds the JSON body of a job. Single pushes (`batch == false`) are the
/// object of POST /v1/push; otherwise `{"pushes":[...]}`.
pub fn build_body(job: &Job, cfg: &PushConfig, path_json: &str, batch: bool) -> Body {
    let n = job.pushes.len();
    let mut b = Vec::with_capacity(n * (140 + cfg.message_bytes) + 16);
    let mut ts_at = Vec::with_capacity(n);
    if batch {
        b.extend_from_slice(b"{\"pushes\":[");
    }
    for (i, push) in job.pushes.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        let head = format!(
            "{{\"context\":{},\"user\":{},\"path\":{path_json},\"message\":",
            cfg.context,
            crate::admin::user_json(cfg.user_prefix.as_deref(), push.user)
        );
        b.extend_from_slice(head.as_bytes());
        let field = message_field(push, cfg);
        // Digits are never escaped: the placeholder is the first '0' after the "ts" key
        // (which follows "seq" and its digits).
        let key = field.find("seq").expect("seq key");
        let key = key + field[key..].find("ts").expect("ts key");
        let at = key + field[key..].find('0').expect("ts placeholder");
        ts_at.push(b.len() + at);
        b.extend_from_slice(field.as_bytes());
        b.extend_from_slice(b",\"coalesce\":");
        b.extend_from_slice(if cfg.coalesce { b"true" } else { b"false" });
        b.push(b'}');
    }
    if batch {
        b.extend_from_slice(b"]}");
    }
    Body { bytes: b, ts_at }
}

/// The pushed message as a JSON string: `{"seq":S,"ts":T[,"user":U,"user_seq":N]
/// [,"pad":"xx.."]}` with T a placeholder, optionally wrapped as a Socket.IO event.
fn message_field(push: &PlannedPush, cfg: &PushConfig) -> String {
    let mut msg = format!("{{\"seq\":{},\"ts\":{}", push.seq, "0".repeat(TS_DIGITS));
    if cfg.user_seq {
        msg.push_str(&format!(
            ",\"user\":{},\"user_seq\":{}",
            push.user, push.user_seq
        ));
    }
    let msg_len = msg.len() + 1;
    let pad_overhead = ",\"pad\":\"\"".len();
    if cfg.message_bytes > msg_len + pad_overhead {
        msg.push_str(",\"pad\":\"");
        msg.extend(std::iter::repeat_n(
            'x',
            cfg.message_bytes - msg_len - pad_overhead,
        ));
        msg.push('"');
    }
    msg.push('}');
    if let Some(event) = &cfg.event {
        msg = serde_json::to_string(&(event, &msg)).expect("serializable");
    }
    serde_json::to_string(&msg).expect("serializable")
}

/// Writes the send timestamp into every placeholder of `body`.
pub fn stamp(body: &mut Body, unix_ns: u64) {
    let ts = format!("{unix_ns:0width$}", width = TS_DIGITS);
    let ts = &ts.as_bytes()[ts.len() - TS_DIGITS..];
    for &at in &body.ts_at {
        body.bytes[at..at + TS_DIGITS].copy_from_slice(ts);
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;

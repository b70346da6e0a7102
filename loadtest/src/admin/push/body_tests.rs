use std::time::Duration;

use serde::Deserialize;

use super::*;
use crate::cli::PushMode;
use crate::wire::messages::{parse_push_message, PushMessage, PUSH_EVENT};

fn cfg(message_bytes: usize) -> PushConfig {
    PushConfig {
        mode: PushMode::RoundRobin,
        rate: 10.0,
        duration: Duration::from_secs(1),
        batch_size: 100,
        users: 3,
        user_prefix: None,
        context: 7,
        path: "/ws".into(),
        coalesce: false,
        concurrency: 1,
        message_bytes,
        event: None,
        expect_per_push: None,
        user_seq: false,
    }
}

/// Pushes to `users`, push numbers from `seq0`, per-user numbers `user_seq`.
fn job(users: &[u64], seq0: u64, user_seq: u64) -> Job {
    Job {
        pushes: users
            .iter()
            .enumerate()
            .map(|(i, &user)| PlannedPush {
                user,
                seq: seq0 + i as u64,
                user_seq,
            })
            .collect(),
    }
}

#[derive(Deserialize)]
struct Push {
    context: u64,
    user: u64,
    path: String,
    message: String,
    coalesce: bool,
}
#[derive(Deserialize)]
struct Batch {
    pushes: Vec<Push>,
}

#[test]
fn bodies_are_valid_json_with_stamped_messages() {
    for bytes in [0, 32, 64, 1000] {
        let c = cfg(bytes);
        let mut body = build_body(&job(&[1, 2, 3], 10, 0), &c, "\"/ws\"", true);
        stamp(&mut body, 1_700_000_000_123_456_789);
        let batch: Batch = serde_json::from_slice(&body.bytes).unwrap();
        assert_eq!(batch.pushes.len(), 3);
        for (i, p) in batch.pushes.iter().enumerate() {
            assert_eq!(
                (p.context, p.user, p.path.as_str()),
                (7, i as u64 + 1, "/ws")
            );
            assert!(!p.coalesce);
            let m = parse_push_message(&p.message).unwrap();
            assert_eq!(m.seq, 10 + i as u64);
            assert_eq!(m.ts, 1_700_000_000_123_456_789);
            assert_eq!(m.user, None);
            assert!(p.message.len() >= bytes);
            assert!(p.message.len() <= bytes.max(60));
        }
    }
    let mut body = build_body(&job(&[5], 4, 0), &cfg(0), "\"/a\\\"b\"", false);
    stamp(&mut body, 1_000_000_000_000_000_042);
    let p: Push = serde_json::from_slice(&body.bytes).unwrap();
    assert_eq!(p.path, "/a\"b");
    assert_eq!(
        parse_push_message(&p.message),
        Some(PushMessage {
            seq: 4,
            ts: 1_000_000_000_000_000_042,
            ..PushMessage::default()
        })
    );
    assert_eq!(parse_push_message("hello"), None);
}

#[test]
fn messages_carry_the_user_and_its_sequence_number() {
    for bytes in [0, 200] {
        let mut c = cfg(bytes);
        c.user_seq = true;
        let mut body = build_body(&job(&[8, 9], 1000, 42), &c, "\"/ws\"", true);
        stamp(&mut body, 1_700_000_000_000_000_001);
        let batch: Batch = serde_json::from_slice(&body.bytes).unwrap();
        for (i, p) in batch.pushes.iter().enumerate() {
            let m = parse_push_message(&p.message).unwrap();
            assert_eq!(
                m,
                PushMessage {
                    seq: 1000 + i as u64,
                    ts: 1_700_000_000_000_000_001,
                    user: Some(8 + i as u64),
                    user_seq: Some(42),
                }
            );
            assert!(p.message.len() >= bytes);
        }
    }
}

#[test]
fn socketio_pushes_are_events_with_the_message_as_a_string() {
    for bytes in [0, 100] {
        let mut c = cfg(bytes);
        c.event = Some(PUSH_EVENT.to_string());
        c.path = "/socket.io/*".into();
        let mut body = build_body(&job(&[1, 2], 3, 0), &c, "\"/socket.io/*\"", true);
        stamp(&mut body, 1_700_000_000_123_456_789);
        let batch: Batch = serde_json::from_slice(&body.bytes).unwrap();
        for (i, p) in batch.pushes.iter().enumerate() {
            assert_eq!(p.path, "/socket.io/*");
            let (event, message): (String, String) = serde_json::from_str(&p.message).unwrap();
            assert_eq!(event, "lt");
            let m = parse_push_message(&message).unwrap();
            assert_eq!((m.seq, m.ts), (3 + i as u64, 1_700_000_000_123_456_789));
            assert!(message.len() >= bytes);
            // What a client receives, as the server frames it.
            let packet = format!("42{}", p.message);
            assert_eq!(
                crate::wire::engineio::unwrap_push(packet.strip_prefix("42").unwrap()).as_deref(),
                Some(message.as_str())
            );
        }
    }
}

#[test]
fn a_user_prefix_names_the_users_with_strings() {
    let mut c = cfg(0);
    c.user_prefix = Some("u-\"".into());
    let body = build_body(&job(&[2], 0, 0), &c, "\"/ws\"", false);
    let v: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
    assert_eq!(v["user"], "u-\"2");
    assert_eq!(crate::admin::user_json(None, 5), "5");
}

//! `--recover` on the raw client: the resume parameters of an upgrade, and the history
//! envelopes fed to the connection's [`StreamTracker`](crate::recovery::StreamTracker)
//! (kept in its [`Slot`], so that it outlives the connection).

use tokio::time::Instant;

use crate::cli::url_with_param;
use crate::client::control::Slot;
use crate::client::shared::Shared;
use crate::stats;
use crate::wire::history::{Envelope, Position};
use crate::wire::messages::parse_push_message;

/// `url` with `epoch` and `since` when resuming from `position`.
pub fn resume_url(url: &str, position: Option<&Position>) -> String {
    match position {
        Some(p) => {
            let url = url_with_param(url, "epoch", &p.epoch);
            url_with_param(&url, "since", &p.offset.to_string())
        }
        None => url.to_string(),
    }
}

/// The position the slot's connection resumes from, if it tracks one.
pub fn resume_position(slot: &Slot) -> Option<Position> {
    slot.stream()
        .and_then(|stream| stream.resume_position().cloned())
}

/// The slot's connection was established (resuming if it had a position).
pub fn connected(slot: &Slot) {
    if let Some(mut stream) = slot.stream() {
        stream.connected();
    }
}

/// Feeds a text frame to the slot's tracker; false if the slot tracks nothing or the text
/// is not an envelope. Pushes of ours count as received, with their latency.
pub fn on_text(slot: &Slot, shared: &Shared, text: &str) -> bool {
    let Some(mut stream) = slot.stream() else {
        return false;
    };
    match Envelope::parse(text) {
        Some(Envelope::Push(push)) => {
            let message = parse_push_message(&push.data);
            if let Some(m) = &message {
                shared.push_arrived(m);
            }
            let position = Position {
                epoch: push.epoch,
                offset: push.offset,
            };
            stream.push(position, message.and_then(|m| Some((m.user?, m.user_seq?))));
            true
        }
        Some(Envelope::Recovery(marker)) => {
            if let Some(outage) = stream.marker(&marker, Instant::now()) {
                let us = outage.as_micros() as u64;
                stats::record(&mut shared.recover_latency.lock().unwrap(), us);
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    #[test]
    fn envelopes_reach_the_tracker() {
        let slot = Slot::tracking(4);
        let shared = Shared::new();
        assert_eq!(
            resume_url("ws://h/ws?session=s", None),
            "ws://h/ws?session=s"
        );
        connected(&slot);
        let marker = r#"{"type":"recovery","resumed":false,"recovered":false,
            "epoch":"00000000000000aa","offset":3,"replayed":0}"#;
        assert!(on_text(&slot, &shared, marker));
        let ts = crate::sysinfo::unix_now_ns();
        let data = format!(r#"{{"seq":9,"ts":{ts},"user":4,"user_seq":0}}"#);
        let push =
            serde_json::json!({"type":"push","epoch":"00000000000000aa","offset":5,"data":data});
        assert!(on_text(&slot, &shared, &push.to_string()));
        assert!(!on_text(&slot, &shared, "hello"));
        assert!(!on_text(&Slot::default(), &shared, marker));
        assert_eq!(shared.push_received.load(Relaxed), 1);
        let position = resume_position(&slot);
        assert_eq!(
            resume_url("ws://h/ws?session=s", position.as_ref()),
            "ws://h/ws?session=s&epoch=00000000000000aa&since=5"
        );
        let c = slot.stream().unwrap().counts(None);
        assert_eq!((c.markers, c.foreign, c.protocol_errors), (1, 0, 0));
    }
}

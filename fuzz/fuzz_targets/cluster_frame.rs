//! The cluster link's frame decoder on arbitrary bytes, read in two arbitrary pieces: must
//! never panic; every decoded frame re-encodes to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringwire::cluster::wire::{self, Decoder, Frame};

fn encode(f: &Frame, out: &mut Vec<u8>) {
    match f {
        Frame::Hello { node, instance, .. } => wire::encode_hello(out, node, *instance),
        Frame::Presence(v) => wire::encode_presence(out, v),
        Frame::Push(v) => wire::encode_pushes(out, v),
        Frame::Revoke(r) => wire::encode_revoke(out, r),
        Frame::Leaving => wire::encode_leaving(out),
        Frame::LeaveAck => wire::encode_leave_ack(out),
        Frame::Ack(n) => wire::encode_ack(out, *n),
        Frame::Missed { all, users } => wire::encode_missed(out, *all, users),
    }
}

fn decode_all(bytes: &[u8], split: usize) -> Vec<Frame> {
    let mut d = Decoder::default();
    let mut frames = Vec::new();
    let split = split.min(bytes.len());
    for piece in [&bytes[..split], &bytes[split..]] {
        d.feed(piece);
        while let Ok(Some(f)) = d.next_frame() {
            frames.push(f);
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize * 7;
    for f in decode_all(data, split) {
        if let Frame::Hello { version, .. } = &f {
            if *version != wire::VERSION {
                continue; // re-encoding writes the current version
            }
        }
        let mut out = Vec::new();
        encode(&f, &mut out);
        let back = decode_all(&out, out.len() / 2);
        // Large lists may be cut into several frames; their entries must be the same. An empty
        // list is a valid frame to receive, but the encoder writes nothing for it.
        let flat = |fs: Vec<Frame>| -> Vec<Frame> {
            let mut acc: Vec<Frame> = Vec::new();
            for f in fs {
                // "Everyone" makes the users moot: the encoder writes none.
                let f = match f {
                    Frame::Missed { all: true, .. } => Frame::Missed {
                        all: true,
                        users: Vec::new(),
                    },
                    f => f,
                };
                if matches!(&f, Frame::Presence(v) if v.is_empty())
                    || matches!(&f, Frame::Push(v) if v.is_empty())
                    || matches!(&f, Frame::Missed { all: false, users } if users.is_empty())
                {
                    continue;
                }
                match (acc.last_mut(), f) {
                    (Some(Frame::Presence(a)), Frame::Presence(b)) => a.extend(b),
                    (Some(Frame::Push(a)), Frame::Push(b)) => a.extend(b),
                    (
                        Some(Frame::Missed { all: false, users: a }),
                        Frame::Missed { all: false, users: b },
                    ) => a.extend(b),
                    (_, f) => acc.push(f),
                }
            }
            acc
        };
        assert_eq!(flat(back), flat(vec![f]));
    }
});

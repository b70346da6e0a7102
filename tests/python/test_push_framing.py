"""A push framed once per core: every socket still gets its own correct frame.

Contract under test (`[compression] enabled, context_takeover = true`, so each socket gets
what it offered): one user holds sockets without compression, with
`server_no_context_takeover` at two window sizes, and with context takeover. A batch of
pushes (the same text several times, other texts in between, a text under the compression
threshold) reaches every socket in order; each compressed frame has RSV1 and decodes with
the socket's own inflater (kept across messages, as a browser does), the others are plain
text frames. The core frames a push once for the sockets that frame it alike; this checks
that no socket receives another socket's frame.
"""

from __future__ import annotations

import zlib

from helpers import Admin, OP_TEXT, RawClient, push_servers  # noqa: F401

OFFERS = [
    None,
    "permessage-deflate; server_no_context_takeover",
    "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
    "permessage-deflate",
    None,
    "permessage-deflate; server_no_context_takeover",
    "permessage-deflate",
]


def long_text(i: int) -> str:
    return '{"type":"notification","n":%d,"body":"%s"}' % (i, "lunch tomorrow? " * 20)


def test_one_batch_to_sockets_of_every_framing(push_servers):
    server = push_servers.start(compression={"enabled": True, "context_takeover": True},
                                limits={"max_sockets_per_user": 16})
    admin = Admin(server)
    session = admin.mint(user=7, context=1)
    sockets = []
    for offer in OFFERS:
        c = RawClient(server.port)
        extra = f"Cookie: {session['cookie']}\r\n"
        if offer:
            extra += f"Sec-WebSocket-Extensions: {offer}\r\n"
        resp = c.handshake(f"/ws?session={session['session']}", extra_headers=extra)
        answer = resp.headers.get("sec-websocket-extensions", "")
        assert bool(answer) == bool(offer), f"offer {offer!r} answered {answer!r}"
        sockets.append((c, bool(offer)))
    texts = [long_text(1), long_text(1), "short", long_text(2), long_text(1), long_text(1)]
    r = admin.push_batch([{"context": 1, "user": 7, "message": t} for t in texts])
    assert r.status == 202 and r.json["sockets"] == len(texts) * len(OFFERS), r
    # And the same text once more in a push of its own.
    assert admin.push_ok(context=1, user=7, message=long_text(1)) == len(OFFERS)
    texts.append(long_text(1))
    for i, (c, deflate) in enumerate(sockets):
        inflater = zlib.decompressobj(wbits=-15)
        for k, want in enumerate(texts):
            fin, rsv, op, payload = c.read_frame()
            assert fin and op == OP_TEXT, (i, k, fin, op)
            if deflate and len(want) >= 64:
                assert rsv == 4, f"socket {i} ({OFFERS[i]}), push {k}: not compressed"
                got = inflater.decompress(payload + b"\x00\x00\xff\xff").decode()
            else:
                assert rsv == 0, f"socket {i} ({OFFERS[i]}), push {k}: rsv {rsv}"
                got = payload.decode()
            assert got == want, f"socket {i} ({OFFERS[i]}), push {k}: {got[:60]!r}"
    for c, _ in sockets:
        c.close()

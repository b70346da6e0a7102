"""permessage-deflate memory: an idle compressing socket costs about what a plain one does.

Contract under test (default `[compression] context_takeover = false`):
  a browser-like offer `permessage-deflate; client_max_window_bits` (Chromium's) is answered
  `permessage-deflate; server_no_context_takeover; client_no_context_takeover` (RFC 7692
  7.1.1.1 / 7.1.1.2 let a server add both); pushes are compressed (RSV1) with one compressor per
  core, each message decodable on its own; and a socket that received a compressed push holds
  no zlib state afterwards, so 300 such sockets grow server RSS by a few KB each, not ~320 KB
  (the per-socket compressor of the old default).
With `context_takeover = true` the RFC defaults come back: the offer is answered as made and
each socket keeps its own compressor (its cost is printed, not asserted).
"""

from __future__ import annotations

import json
import zlib

from helpers import Admin, OP_TEXT, RawClient, push_servers  # noqa: F401

N = 300
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
SHARED_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
# Growth per socket from "connected, deflate negotiated" to "one compressed push received and
# idle". Today: well under 4 KB (the shared per-core compressors amortised over 300 sockets).
# The old per-socket compressor: about 320 KB (200 KB at window 9).
BOUND_PER_SOCKET = 24 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def push_payload(user: int) -> str:
    """About 2 KB of JSON, different per user (like a real notification feed)."""
    items = [{"id": user * 100 + i, "kind": ["message", "like", "follow", "mention"][i % 4],
              "from": f"user-{(user * 7 + i * 13) % 997}", "text": f"event {i} for user {user}: "
              + "the quick brown fox jumps over the lazy dog"[: 20 + (i * 3) % 23],
              "ts": 1_790_000_000 + i * 37} for i in range(16)]
    text = json.dumps({"type": "feed", "user": user, "items": items}, separators=(",", ":"))
    assert 1800 <= len(text) <= 2400, len(text)
    return text


def open_sockets(server, admin: Admin, n: int, offer: str, first: int = 1) -> list[tuple[int, RawClient, str]]:
    """n raw sockets of users first..first+n-1 -> [(user, client, Sec-WebSocket-Extensions answered)]."""
    out = []
    for user in range(first, first + n):
        s = admin.mint(user=user, context=1)
        c = RawClient(server.port)
        resp = c.handshake(f"/ws?session={s['session']}",
                           extra_headers=f"Cookie: {s['cookie']}\r\nSec-WebSocket-Extensions: {offer}\r\n")
        out.append((user, c, resp.headers.get("sec-websocket-extensions", "")))
    return out


def push_and_decode(admin: Admin, sockets, inflaters=None) -> list[int]:
    """One push per socket; each arrives compressed and decodes (with a fresh inflater unless
    `inflaters` gives the socket's own, kept across messages). -> compressed sizes."""
    sizes = []
    for user, _c, _ in sockets:
        assert admin.push_ok(context=1, user=user, message=push_payload(user)) == 1
    for i, (user, c, _) in enumerate(sockets):
        fin, rsv, op, payload = c.read_frame()
        assert fin and op == OP_TEXT, (fin, op)
        assert rsv == 4, f"socket of user {user}: push not compressed (rsv={rsv})"
        d = inflaters[i] if inflaters is not None else zlib.decompressobj(wbits=-15)
        text = d.decompress(payload + b"\x00\x00\xff\xff").decode()
        assert text == push_payload(user), f"socket of user {user}: decoded {text[:80]!r}..."
        sizes.append(len(payload))
    return sizes


def settle_rss(pid: int) -> int:
    import time

    time.sleep(0.5)
    return rss_bytes(pid)


def test_idle_compressing_sockets_hold_no_zlib_state(push_servers):
    server = push_servers.start(limits={"max_sockets_per_user": 4})
    admin = Admin(server)
    pid = server.proc.pid
    # Warm up the code paths (allocator arenas, the per-core compressors) outside the measure.
    warm = open_sockets(server, admin, 4, CHROMIUM_OFFER, first=100_000)
    push_and_decode(admin, warm)
    rss_start = settle_rss(pid)
    sockets = open_sockets(server, admin, N, CHROMIUM_OFFER)
    rss_connected = settle_rss(pid)
    # Two rounds of pushes, decoded as a browser does (one inflater per socket, kept: valid
    # whether or not the server takes over its context).
    inflaters = [zlib.decompressobj(wbits=-15) for _ in sockets]
    push_and_decode(admin, sockets, inflaters)
    push_and_decode(admin, sockets, inflaters)
    rss_pushed = settle_rss(pid)
    per_conn = (rss_connected - rss_start) / N
    per_push = (rss_pushed - rss_connected) / N
    print(f"{N} sockets offering {CHROMIUM_OFFER!r}: RSS {rss_start >> 10} KiB -> connected "
          f"{rss_connected >> 10} KiB ({per_conn / 1024:.1f} KiB/socket) -> after 2 compressed 2 KB "
          f"pushes each, idle {rss_pushed >> 10} KiB (+{per_push / 1024:.1f} KiB/socket)")
    assert per_push < BOUND_PER_SOCKET, (
        f"an idle compressing socket holds {per_push / 1024:.0f} KiB after one compressed push "
        f"(bound {BOUND_PER_SOCKET // 1024} KiB): per-socket zlib state kept while idle")
    answers = {ext for _, _, ext in sockets}
    assert answers == {SHARED_ANSWER}, f"negotiated: {answers}"
    # No context takeover: every push decodes on its own, with a fresh inflater.
    push_and_decode(admin, sockets)
    for _, c, _ in sockets + warm:
        c.close()


def test_context_takeover_opt_in_keeps_rfc_defaults(push_servers):
    server = push_servers.start(compression={"enabled": True, "context_takeover": True})
    admin = Admin(server)
    pid = server.proc.pid
    n = 40
    sockets = open_sockets(server, admin, n, CHROMIUM_OFFER)
    assert {ext for _, _, ext in sockets} == {"permessage-deflate"}
    rss0 = settle_rss(pid)
    inflaters = [zlib.decompressobj(wbits=-15) for _ in sockets]
    first = push_and_decode(admin, sockets, inflaters)
    # Context takeover: the second, identical push refers back to the first (much smaller).
    second = push_and_decode(admin, sockets, inflaters)
    assert all(b < a / 4 for a, b in zip(first, second)), (first[:5], second[:5])
    rss1 = settle_rss(pid)
    print(f"context_takeover = true: +{(rss1 - rss0) / n / 1024:.0f} KiB per socket after pushes")
    # An offer with the no_context_takeover params is still answered with them.
    (_, c, ext), = open_sockets(server, admin, 1, "permessage-deflate; server_no_context_takeover; "
                                "client_no_context_takeover", first=1000)
    assert ext == SHARED_ANSWER
    for _, c2, _ in sockets:
        c2.close()
    c.close()

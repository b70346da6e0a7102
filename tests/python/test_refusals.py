"""Refusals a developer can see: each refusal is one log line on stderr (reason, status, path,
Origin, peer address), at most 20 lines per core and second with a "suppressed N" summary
for the rest; and a refusal of a request whose Origin is allowed carries the CORS headers,
so that a page (socket.io-client over polling) sees the real status instead of a CORS error.
"""

from __future__ import annotations

import http.client
import re
import socket
import time

from helpers import HOST, Admin, RawClient, wait_until

APP = "http://app.test:3000"
EVIL = "https://evil.example"
ENDPOINTS = [{"path": "/socket.io/", "kind": "socketio"}, {"path": "/ws", "kind": "raw"}]
LINES_PER_SEC = 20  # per core (runtime::refusal_log::LINES_PER_SEC)


def start(start_server):
    return start_server(endpoints=ENDPOINTS, security={"allowed_origins": [APP]})


def get(server, target: str, headers: dict) -> tuple[int, dict, bytes, int]:
    """One request on its own connection: status, headers (lower-case), body, local port."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        conn.connect()
        local_port = conn.sock.getsockname()[1]
        conn.request("GET", target, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), local_port
    finally:
        conn.close()


def upgrade(server, path: str, extra: str):
    """A WebSocket upgrade request on a raw socket: the response, and the client's port."""
    with RawClient(server.port) as c:
        port = c.sock.getsockname()[1]
        c.send((f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        return c.read_http_response(), port


def refusal_lines(server) -> list[str]:
    return [l for l in server.stderr_lines if "refused:" in l]


def line_for(server, peer_port: int) -> str:
    """The one refusal line naming this client's address, once it is written."""
    needle = f"peer={HOST}:{peer_port}"

    def found():
        hits = [l for l in refusal_lines(server) if l.endswith(needle) or f"{needle} " in l]
        return hits if hits else None

    hits = wait_until(found, timeout=10, what=f"a refusal line with {needle}")
    assert len(hits) == 1, hits
    return hits[0]


def test_each_refusal_is_logged_with_its_fields_and_cors_for_allowed_origins(start_server):
    server = start(start_server)
    admin = Admin(server)
    poll = "/socket.io/?EIO=4&transport=polling"

    # An origin that is not allowed: 403, with CORS headers so that the page sees the 403.
    status, headers, body, port = get(server, poll, {"Origin": EVIL})
    assert status == 403 and b"origin not allowed" in body, (status, body)
    assert headers.get("access-control-allow-origin") == EVIL, headers
    line = line_for(server, port)
    for field in ('status=403', 'reason="origin"', 'path="/socket.io/"', f'origin="{EVIL}"'):
        assert field in line, line

    # An unknown session from an allowed origin: 401 with the CORS headers.
    status, headers, body, port = get(server, poll + "&session=nosuchsession",
                                      {"Origin": APP, "Cookie": "ringwire-secret=x"})
    assert status == 401, (status, body)
    assert headers.get("access-control-allow-origin") == APP, headers
    assert headers.get("access-control-allow-credentials") == "true", headers
    assert headers.get("vary") == "Origin", headers
    line = line_for(server, port)
    for field in ('status=401', 'reason="unknown_session"', 'path="/socket.io/"', f'origin="{APP}"'):
        assert field in line, line

    # No endpoint at the path.
    status, headers, _, port = get(server, "/nope?x=1", {"Origin": APP})
    assert status == 404 and headers.get("access-control-allow-origin") == APP, headers
    line = line_for(server, port)
    assert 'status=404' in line and 'reason="not_found"' in line and 'path="/nope"' in line, line

    # A refusal on the core that owns the session (after the handoff): an unknown sid.
    s = admin.mint(user=7)
    status, headers, body, port = get(
        server, poll + f"&sid=AAAAAAAAAAAAAAAAAAAA&session={s['session']}",
        {"Origin": APP, "Cookie": s["cookie"]})
    assert status == 400 and b"Session ID unknown" in body, (status, body)
    assert headers.get("access-control-allow-origin") == APP, headers
    line = line_for(server, port)
    assert 'reason="eio_session_unknown"' in line and 'path="/socket.io/"' in line, line

    # A WebSocket upgrade from a disallowed origin, and one with no session.
    r, port = upgrade(server, "/ws", f"Origin: {EVIL}\r\n")
    assert r.status == 403, r
    line = line_for(server, port)
    assert 'reason="origin"' in line and 'path="/ws"' in line and f'origin="{EVIL}"' in line, line
    r, port = upgrade(server, "/ws", "")
    assert r.status == 401, r
    line = line_for(server, port)
    assert 'reason="missing_session"' in line and 'origin=""' in line, line
    # Client bytes are logged escaped: a quote in the path cannot forge a field.
    status, _, _, port = get(server, '/a"b', {})
    assert status == 404
    assert 'path="/a\\"b"' in line_for(server, port)


def test_a_flood_of_refusals_is_rate_limited_and_summed_up(start_server):
    server = start(start_server)
    flood = 300
    started = time.monotonic()
    for i in range(flood):
        s = socket.create_connection((HOST, server.port), timeout=10)
        s.sendall(f"GET /flood{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 404"), i
        s.close()
    elapsed = time.monotonic() - started

    def flood_lines():
        return [l for l in refusal_lines(server) if 'path="/flood' in l]

    def suppressed():
        return sum(int(m.group(1)) for l in server.stderr_lines
                   if (m := re.search(r"suppressed (\d+) refusals", l)))

    # Every refusal is either a line or counted in a summary (written once its second is over).
    wait_until(lambda: len(flood_lines()) + suppressed() == flood, timeout=15,
               what=f"lines + suppressed = {flood}: {len(flood_lines())} + {suppressed()}")
    lines = len(flood_lines())
    windows = int(elapsed) + 2  # the seconds the flood touched, per core
    assert lines <= 2 * LINES_PER_SEC * windows, (lines, elapsed)
    if elapsed < 5:  # 300 refusals in well under 15 s (20 lines a second on 2 cores)
        assert lines < flood and suppressed() > 0, (lines, suppressed(), elapsed)
    # The counters still count every refusal.
    metrics = server.metrics()
    total = sum(v for k, v in metrics.items()
                if k.startswith("ringwire_upgrades_refused_by_reason_total") and 'not_found' in k)
    assert total >= flood, total


def test_an_admission_refusal_of_an_allowed_origin_carries_cors_and_retry_after(start_server):
    """A polling handshake over the upgrade rate: 503 with Retry-After, and the CORS headers
    (socket.io-client sees the 503, and may back off), logged at warn."""
    server = start_server(endpoints=ENDPOINTS, security={"allowed_origins": [APP]},
                          limits={"upgrade_rate_per_sec": 2})
    s = Admin(server).mint(user=9)
    target = f"/socket.io/?EIO=4&transport=polling&session={s['session']}"
    seen = []
    for _ in range(40):  # 1 handshake a second per core: most of these are refused
        status, headers, _, port = get(server, target, {"Origin": APP, "Cookie": s["cookie"]})
        seen.append(status)
        if status == 503:
            break
    assert status == 503, seen
    assert headers.get("retry-after", "").isdigit(), headers
    assert headers.get("access-control-allow-origin") == APP, headers
    assert headers.get("access-control-allow-credentials") == "true", headers
    line = line_for(server, port)
    assert " WARN " in line and 'reason="rate_limit"' in line and 'status=503' in line, line
    assert f'origin="{APP}"' in line and 'path="/socket.io/"' in line, line


def test_a_handshake_timeout_names_the_path_that_came(start_server):
    """A client that sends part of a request and stalls: 408, logged with the path it sent."""
    server = start_server(endpoints=ENDPOINTS, limits={"handshake_timeout_ms": 300})
    with socket.create_connection((HOST, server.port), timeout=10) as s:
        port = s.getsockname()[1]
        s.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert s.recv(64).startswith(b"HTTP/1.1 408"), "handshake timeout answer"
    line = line_for(server, port)
    assert 'status=408' in line and 'reason="handshake_timeout"' in line, line
    assert 'path="/socket.io/"' in line, line

"""HTTP request framing and request-head deadlines on the public listener, and the secret cookie.

Contract under test:
  * Every request ringwire parses (upgrades, Engine.IO polling GET/POST, follow-up requests on a
    keep-alive polling connection) is framed as RFC 9112 6.3 says and as nginx and hyper enforce
    it: two Content-Length headers that differ, a Content-Length list with different values, any
    non-digit in it (a sign, a hex digit), a Transfer-Encoding (with or without Content-Length),
    or a GET that announces a body: 400 and the connection closed. Identical repeated values are
    one length (RFC 9110 8.6). Behind a proxy that reuses one upstream connection for many users,
    reading the framing differently from the proxy would smuggle a request.
  * The first byte of a follow-up request on a keep-alive polling connection starts the same
    header deadline a new connection gets (limits.handshake_timeout_ms), not the keep-alive idle
    window (ping interval + ping timeout).
  * A browser may send several cookies of the secret's name (RFC 6265 5.4: a stale one for a
    longer Path first): the upgrade and polling requests pass when any of them matches.
"""
from __future__ import annotations

import socket
import time

import pytest

from helpers import HOST, Admin, RawClient, push_servers  # noqa: F401  (fixture)
from test_socketio import Eio, Http, push, start

SIO_QUERY = "/socket.io/?EIO=4&transport=polling"


def raw_request(head_lines: list[str], body: bytes = b"") -> bytes:
    return ("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + body


def read_refusal_and_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; fails if it does not close in time."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"connection still open {timeout}s after a refused request; got {got[:300]!r}"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        except socket.timeout:
            continue
        if not chunk:
            return got
        got += chunk


def status_of(resp: bytes) -> int:
    assert resp.startswith(b"HTTP/1.1 "), f"not an HTTP response: {resp[:200]!r}"
    return int(resp[9:12])


def polling_post(e: Eio, cl_headers: list[str], body: bytes) -> list[str]:
    """The lines of a POST to e's Engine.IO session with the given framing headers."""
    lines = [f"POST {e.target()} HTTP/1.1", f"Host: {HOST}:{e.server.port}",
             f"Cookie: {e.session['cookie']}", "Content-Type: text/plain;charset=UTF-8"]
    return lines + cl_headers


SMUGGLING = {
    "two differing Content-Length headers": ["Content-Length: 1", "Content-Length: 40"],
    "a Content-Length list of different values": ["Content-Length: 1, 40"],
    "a signed Content-Length": ["Content-Length: +1"],
    "a hexadecimal Content-Length": ["Content-Length: 0x1"],
    "an empty Content-Length": ["Content-Length: "],
    "Transfer-Encoding with Content-Length": ["Transfer-Encoding: chunked", "Content-Length: 2"],
    "Transfer-Encoding alone": ["Transfer-Encoding: chunked"],
    "a Content-Length past u64": ["Content-Length: 99999999999999999999999"],
}


@pytest.mark.parametrize("case", list(SMUGGLING))
def test_polling_post_with_ambiguous_length_is_400_and_closed(push_servers, case):
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=42)
    e = Eio(server, s, 4)
    e.connect()
    # 40 bytes whose first byte is a whole v4 payload (a ping): a server that took the first
    # length answers 200 and reads the other 39 bytes as the next request.
    body = b"2" + b"x" * 39
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(raw_request(polling_post(e, SMUGGLING[case], body), body))
        resp = read_refusal_and_eof(sock)
    assert resp, f"{case}: closed without an answer"
    assert status_of(resp) == 400, f"{case}: expected 400, got {resp[:300]!r}"
    assert b"connection: close" in resp.lower(), f"{case}: refusal must close: {resp[:300]!r}"
    # The Engine.IO session is untouched by the refused request.
    push(admin, 42)
    packets = e.collect(lambda ps: any(p.startswith("42") for p in ps))
    assert packets and packets[-1].startswith("42"), packets


def test_identical_repeated_content_length_is_one_length(push_servers):
    server = start(push_servers)
    admin = Admin(server)
    e = Eio(server, admin.mint(user=42), 4)
    e.connect()
    http = Http(server.port)
    http.send_request("POST", e.target(), b"2", headers={**e.headers(), "Content-Length": "1, 1"})
    resp = http.read_response()
    assert resp.status == 200 and resp.body == b"ok", resp


def test_keep_alive_follow_up_with_conflicting_lengths_is_400_and_closed(push_servers):
    """The same rule on the second request of a keep-alive connection: the first is answered
    and kept alive, the smuggling one is refused and the connection closed."""
    server = start(push_servers)
    admin = Admin(server)
    e = Eio(server, admin.mint(user=42), 4)
    e.connect()
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        ok = raw_request(polling_post(e, ["Content-Length: 1"], b"2"), b"2")
        sock.sendall(ok)
        sock.settimeout(5)
        first = b""
        while b"\r\n\r\nok" not in first:
            chunk = sock.recv(65536)
            assert chunk, f"keep-alive POST: connection closed; got {first!r}"
            first += chunk
        assert status_of(first) == 200 and b"connection: close" not in first.lower(), first
        body = b"2" + b"x" * 39
        sock.sendall(raw_request(polling_post(e, ["Content-Length: 1", "Content-Length: 40"], body), body))
        resp = read_refusal_and_eof(sock)
    assert status_of(resp) == 400, resp[:300]


def test_polling_get_announcing_a_body_is_400_and_closed(push_servers):
    """A GET's announced body is never skipped nor read as the next request."""
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=42)
    e = Eio(server, s, 4)
    e.connect()
    smuggled = f"GET {e.target()} HTTP/1.1\r\nHost: x\r\nCookie: {s['cookie']}\r\n\r\n".encode()
    lines = [f"GET {e.target()} HTTP/1.1", f"Host: {HOST}:{server.port}", f"Cookie: {s['cookie']}",
             f"Content-Length: {len(smuggled)}"]
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(raw_request(lines, smuggled))
        resp = read_refusal_and_eof(sock)
    assert status_of(resp) == 400, resp[:300]
    assert resp.count(b"HTTP/1.1 ") == 1, f"the body was answered as a request: {resp!r}"


@pytest.mark.parametrize("cl", ["+0", "0, 5", "-0"])
def test_upgrade_with_odd_content_length_is_400(push_servers, cl):
    server = start(push_servers)
    s = Admin(server).mint(user=42)
    lines = [f"GET /ws?session={s['session']} HTTP/1.1", f"Host: {HOST}:{server.port}",
             "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", f"Cookie: {s['cookie']}", f"Content-Length: {cl}"]
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(raw_request(lines))
        resp = read_refusal_and_eof(sock)
    assert status_of(resp) == 400, resp[:300]


def test_keep_alive_follow_up_request_gets_the_handshake_deadline(push_servers):
    """One byte every 100 ms of a follow-up request: cut after handshake_timeout_ms (1 s here),
    not after the ping interval plus ping timeout (25 s + 20 s by default)."""
    server = start(push_servers, limits={"handshake_timeout_ms": 1000})
    admin = Admin(server)
    e = Eio(server, admin.mint(user=42), 4)
    e.connect()
    http = Http(server.port)
    resp = http.request("POST", e.target(), b"2", headers=e.headers())
    assert resp.status == 200 and not http.peer_said_close, resp
    follow_up = f"GET {e.target()} HTTP/1.1\r\nHost: {HOST}\r\nCookie: {e.session['cookie']}\r\n\r\n".encode()
    # Idle first, well past the handshake timeout: an idle keep-alive connection is not cut by it.
    time.sleep(1.5)
    start_t = time.monotonic()
    closed_at = None
    got = b""
    http.sock.settimeout(0.1)
    for byte in follow_up[:-1]:
        try:
            http.sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic() - start_t
            break
        try:
            chunk = http.sock.recv(4096)
            if not chunk:
                closed_at = time.monotonic() - start_t
                break
            got += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed_at = time.monotonic() - start_t
            break
        if time.monotonic() - start_t > 8:
            break
    http.close()
    assert closed_at is not None, f"follow-up request dribbled for 8 s was not cut (got {got!r})"
    assert 0.8 <= closed_at <= 3.0, f"cut after {closed_at:.2f}s, expected about 1 s"
    if got:
        assert got.startswith(b"HTTP/1.1 408"), got


def test_idle_keep_alive_connection_outlives_the_handshake_deadline(push_servers):
    """Between requests, the keep-alive connection is idle, not slow: it is still usable after
    longer than handshake_timeout_ms."""
    server = start(push_servers, limits={"handshake_timeout_ms": 500})
    admin = Admin(server)
    e = Eio(server, admin.mint(user=42), 4)
    e.connect()
    http = Http(server.port)
    assert http.request("POST", e.target(), b"2", headers=e.headers()).status == 200
    time.sleep(1.5)
    assert http.request("POST", e.target(), b"2", headers=e.headers()).status == 200
    assert http.reconnects == 0


def stale_then_valid(s: dict, stale: str = "ringwire-secret=AAAAstaleAAAA") -> str:
    return f"{stale}; other=1; {s['cookie']}"


def test_any_same_named_cookie_may_carry_the_secret_upgrade(push_servers):
    server = start(push_servers)
    s = Admin(server).mint(user=42)
    for cookie in (stale_then_valid(s), f"{s['cookie']}; ringwire-secret=stale"):
        with RawClient(server.port) as c:
            resp = c.handshake(f"/ws?session={s['session']}", f"Cookie: {cookie}\r\n")
            assert resp.status == 101, f"Cookie: {cookie}: {resp}"
    # Two Cookie header lines (HTTP/2-to-1 gateways may split them) work the same.
    with RawClient(server.port) as c:
        resp = c.handshake(f"/ws?session={s['session']}",
                           f"Cookie: ringwire-secret=stale\r\nCookie: {s['cookie']}\r\n")
        assert resp.status == 101, resp
    # No matching one still refuses.
    with RawClient(server.port) as c:
        c.send((f"GET /ws?session={s['session']} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nCookie: ringwire-secret=stale; ringwire-secret=older\r\n\r\n").encode())
        resp = c.read_http_response()
        assert resp.status == 401, resp


def test_any_same_named_cookie_may_carry_the_secret_polling(push_servers):
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=42)
    e = Eio(server, s, 4)
    e.session = {**s, "cookie": stale_then_valid(s)}
    e.connect()
    push(admin, 42)
    assert any(p.startswith("42") for p in e.collect(lambda ps: any(p.startswith("42") for p in ps)))

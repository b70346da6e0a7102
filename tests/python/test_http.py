"""The HTTP side of the upgrade: bad requests get plain statuses (never 101), slow ones time out."""

from __future__ import annotations

import base64
import socket
import time

import pytest

from helpers import HOST, RawClient

KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade(path="/", version="13", key=KEY, extra="", method="GET", proto="HTTP/1.1",
            upgrade_hdr="websocket", connection="Upgrade") -> bytes:
    lines = [f"{method} {path} {proto}", f"Host: {HOST}"]
    if upgrade_hdr is not None:
        lines.append(f"Upgrade: {upgrade_hdr}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def request(port: int, data: bytes):
    with RawClient(port) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            pytest.fail(f"server reset the connection while the request was being sent: {e!r}")
        try:
            return c.read_http_response()
        except ConnectionResetError as e:
            pytest.fail(f"connection reset before a response could be read: {e!r}")


def assert_status(resp, status: int) -> None:
    assert resp.status != 101, f"bad upgrade was accepted: {resp!r}"
    assert resp.status == status, f"expected {status}, got {resp.status_line!r}: {resp!r}"
    assert resp.status_line.startswith("HTTP/1.1 "), resp.status_line
    body = resp.body.decode("utf-8", "replace")
    assert body.strip(), f"{status} response without a body: {resp!r}"
    assert len(body.strip().splitlines()) == 1, f"body should be one line: {body!r}"


BAD_REQUESTS_400 = {
    "garbage_request_line": b"HELLO\r\n\r\n",
    "binary_junk": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    "missing_key": upgrade(key=None),
    "key_not_16_bytes": upgrade(key=base64.b64encode(b"short").decode()),
    "key_not_base64": upgrade(key="!!!!not base64 at all!!"),
}

# Not an upgrade at all (plain GET, other protocol): 400, or 426 Upgrade Required.
NOT_WEBSOCKET = {
    "missing_upgrade_header": upgrade(upgrade_hdr=None),
    "upgrade_not_websocket": upgrade(upgrade_hdr="h2c"),
    "connection_without_upgrade_token": upgrade(connection="keep-alive"),
}


@pytest.mark.parametrize("data", BAD_REQUESTS_400.values(), ids=BAD_REQUESTS_400.keys())
def test_malformed_upgrade_400(server, data):
    assert_status(request(server.port, data), 400)


@pytest.mark.parametrize("data", NOT_WEBSOCKET.values(), ids=NOT_WEBSOCKET.keys())
def test_not_an_upgrade_400_or_426(server, data):
    resp = request(server.port, data)
    assert resp.status in (400, 426), resp
    assert_status(resp, resp.status)


def test_http_1_0_upgrade_rejected(server):
    """RFC 6455 4.1: the upgrade needs HTTP/1.1 or later. 400, or 505 Version Not Supported."""
    resp = request(server.port, upgrade(proto="HTTP/1.0"))
    assert resp.status in (400, 505), resp
    assert_status(resp, resp.status)


def test_post_upgrade_rejected(server):
    resp = request(server.port, upgrade(method="POST"))
    assert resp.status in (400, 405), resp
    assert_status(resp, resp.status)


@pytest.mark.parametrize("version", ["8", "12", "14", "abc"])
def test_wrong_websocket_version_426(server, version):
    resp = request(server.port, upgrade(version=version))
    assert_status(resp, 426)
    # RFC 6455 4.2.2: the response names the supported version.
    assert resp.headers.get("sec-websocket-version") == "13", resp


def test_missing_websocket_version(server):
    resp = request(server.port, upgrade(version=None))
    assert resp.status in (400, 426), resp
    assert_status(resp, resp.status)


def test_unknown_path_404(start_server):
    server = start_server(endpoints=[{"path": "/echo", "kind": "echo", "auth": "none"}])
    for path in ["/", "/other", "/echox", "/nope/echo"]:
        assert_status(request(server.port, upgrade(path=path)), 404)
    # Prefix match still works on the same server.
    with RawClient(server.port) as c:
        c.handshake("/echo")
    with RawClient(server.port) as c:
        c.handshake("/echo/sub?x=1")


def test_headers_too_large_431_one_huge_header(server):
    # Default max_header_bytes is 8 KiB; send 16 KiB.
    assert_status(request(server.port, upgrade(extra="X-Big: " + "a" * 16_000 + "\r\n")), 431)


def test_headers_too_large_431_many_headers(server):
    extra = "".join(f"X-H{i}: v\r\n" for i in range(200))  # > 64 headers, < 8 KiB
    assert_status(request(server.port, upgrade(extra=extra)), 431)


def test_headers_just_under_limit_accepted(server):
    # Request head well inside 8 KiB and 64 headers: upgrade succeeds.
    extra = "".join(f"X-H{i}: {'v' * 50}\r\n" for i in range(40))
    with RawClient(server.port) as c:
        c.send(upgrade(extra=extra))
        resp = c.read_http_response()
        assert resp.status == 101, resp


def test_pipelined_frame_after_upgrade(server):
    """Bytes of the first frame arriving in the same segment as the request are not lost."""
    from helpers import OP_TEXT, encode_frame

    with RawClient(server.port) as c:
        c.send(upgrade() + encode_frame(OP_TEXT, b"early"))
        resp = c.read_http_response()
        assert resp.status == 101, resp
        assert c.read_message() == (OP_TEXT, b"early")


def _slowloris(port: int, interval: float, budget: float):
    """Dribble a valid upgrade request byte by byte. Returns (elapsed_at_close, bytes_received)."""
    data = upgrade()
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.monotonic()
    received = b""
    try:
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start, received
            sock.settimeout(interval)
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    return time.monotonic() - start, received
                received += chunk
            except socket.timeout:
                pass
            except ConnectionResetError:
                return time.monotonic() - start, received
            if time.monotonic() - start > budget:
                return None, received
        # Whole request sent (the server was too slow to close): see what it answers.
        sock.settimeout(5)
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return None, received
    finally:
        sock.close()


def test_slowloris_closed_after_handshake_timeout(start_server):
    server = start_server(limits={"handshake_timeout_ms": 1000})
    # ~170 bytes at 0.1 s each = 17 s to finish: far slower than the 1 s timeout.
    elapsed, received = _slowloris(server.port, interval=0.1, budget=10)
    assert not received.startswith(b"HTTP/1.1 101"), f"slow request was upgraded: {received!r}"
    assert elapsed is not None, f"connection still open 10 s into a 1 s handshake timeout (got {received!r})"
    assert 0.8 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s, expected about 1 s"
    # Any response sent before closing must be an HTTP error, not a WebSocket upgrade.
    if received:
        assert received.startswith(b"HTTP/1.1 4"), received


def test_silent_connection_closed_after_handshake_timeout(start_server):
    server = start_server(limits={"handshake_timeout_ms": 1000})
    with RawClient(server.port) as c:
        start = time.monotonic()
        closed = c.wait_eof(6)
        elapsed = time.monotonic() - start
    assert closed, "a connection that sent nothing was not closed"
    assert 0.8 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s, expected about 1 s"


def test_server_still_serves_after_bad_requests(server):
    for data in (list(BAD_REQUESTS_400.values()) + list(NOT_WEBSOCKET.values())) * 3:
        with RawClient(server.port) as c:
            c.send(data)
            try:
                c.read_http_response()
            except (EOFError, ConnectionResetError):
                pass
    with RawClient(server.port) as c:
        c.handshake()

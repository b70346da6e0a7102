"""TLS on the public listener (`[tls] cert`, `key`): wss:// upgrades and https:// Engine.IO
long-polling through rustls, with certificates from `ringwire cluster certs --out DIR 127.0.0.1
localhost` (an IP SAN for 127.0.0.1, a DNS SAN for localhost, both signed by DIR/ca.pem).

Contract under test:
  - with [tls] the public listener speaks TLS only: a client trusting the CA upgrades with a
    session (cookie + ?session=), receives admin pushes, echoes 1 MiB messages both ways with
    permessage-deflate negotiated, closes with 4001 on a revoked session; TLS 1.2 and 1.3 both
    work; ALPN: a client offering h2,http/1.1 (or just http/1.1) gets http/1.1;
  - sockets of many users (spread over the cores, so the TLS state moves with the handoff)
    each get their own push;
  - a client that does not trust the CA fails the handshake; a plain ws:// client, plain HTTP,
    garbage and half handshakes on the TLS port get no answer in plain text and are closed;
    the server keeps serving everyone else;
  - Engine.IO over https:// polling (handshake `0{"sid"}`, connect, a push on the held GET;
    one keep-alive TLS connection carrying several users' requests) and over wss:// websocket;
  - wss:// through an HTTP CONNECT forward proxy (Debian's tinyproxy): websockets' proxy=
    support and a hand-made CONNECT + TLS;
  - certificate reload (POST /v1/config/reload and SIGHUP): new connections get the new
    certificate (verified against the new CA, refused against the old), open sockets stay
    open and keep working both ways; broken files (garbage cert, garbage key, missing key, a
    key not matching the cert) answer 400 and the previous certificate stays in use;
  - the admin listener stays plain HTTP (every admin call here is plain http.client);
  - `serve --check` and `serve` refuse a missing or non-PEM cert or key, naming the file.

Every wait is bounded; servers and tinyproxy are always stopped. The tinyproxy tests skip only
when /usr/bin/tinyproxy is missing (tests/run.sh installs it as root).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import signal
import socket
import ssl
import string
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from helpers import (BINARY, HOST, OP_BINARY, OP_TEXT, Admin, RawClient, accept_key, cluster_certs,
                     expect_closed_with, free_port, json_has, make_config, push_servers,  # noqa: F401 (fixture)
                     recv_text, render_config, run, wait_stats_sockets, wait_until)
from test_socketio import Eio, Http, same_event

TINYPROXY = Path("/usr/bin/tinyproxy")
ENDPOINTS = [
    {"path": "/ws", "kind": "raw"},
    {"path": "/echo", "kind": "echo", "auth": "none"},
    {"path": "/socket.io/", "kind": "socketio"},
]
SIO_FILTER = "/socket.io/*"
MIB = 1024 * 1024


# =========================================================================== certificates, clients


@pytest.fixture
def certs(tmp_path) -> Path:
    """`cluster certs` for 127.0.0.1 (IP SAN) and localhost (DNS SAN) under one CA."""
    return cluster_certs(tmp_path, "certs", "127.0.0.1", "localhost")


def tls_section(certdir: Path, name: str = "127.0.0.1") -> dict:
    return {"cert": str(certdir / f"{name}.pem"), "key": str(certdir / f"{name}.key")}


def start_tls(push_servers, certdir_or_section, **overrides):
    """A ringwire with [tls] (a cert dir -> its 127.0.0.1 pair, or a {cert, key} dict), the
    raw /ws, an echo /echo (no auth) and /socket.io/ endpoints, compression on."""
    tls = certdir_or_section if isinstance(certdir_or_section, dict) else tls_section(certdir_or_section)
    overrides.setdefault("endpoints", ENDPOINTS)
    overrides.setdefault("socketio", {"polling_timeout_ms": 3000})
    return push_servers.start(tls=tls, **overrides)


def client_ctx(ca: Path | None, *, alpn: list[str] | None = None, version: ssl.TLSVersion | None = None,
               verify: bool = True) -> ssl.SSLContext:
    """A client context trusting only `ca` (None: the system store); version pins min = max."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca is None:
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.create_default_context(cafile=str(ca))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def tls_socket(port: int, ctx: ssl.SSLContext, server_hostname: str = HOST, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def served_cert(port: int) -> bytes:
    """The DER leaf certificate the server presents now (no verification)."""
    with tls_socket(port, client_ctx(None, verify=False)) as s:
        return s.getpeercert(binary_form=True)


def pem_der(path: Path) -> bytes:
    """DER of the first certificate in a PEM file."""
    text = path.read_text()
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[start:end])


def handshake_fails(port: int, ctx: ssl.SSLContext, server_hostname: str = HOST) -> str | None:
    """None if a TLS handshake with ctx succeeds, else the verification error's text."""
    try:
        with tls_socket(port, ctx, server_hostname):
            return None
    except ssl.SSLCertVerificationError as e:
        return f"{e.verify_message or e}"


class TlsRawClient(RawClient):
    """helpers.RawClient (hand-built HTTP and frames) over a TLS socket, or over `sock` (a
    socket already tunnelled through a proxy)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, timeout: float = 10.0, *, sock: socket.socket | None = None,
                 server_hostname: str = HOST):
        raw = sock or socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.buf = b""

    def upgrade(self, target: str, cookie: str | None = None) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"Cookie: {cookie}\r\n" if cookie else ""
        self.send((f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        resp = self.read_http_response()
        assert resp.status == 101, f"upgrade {target} over TLS: expected 101, got {resp!r}"
        assert resp.headers.get("sec-websocket-accept") == accept_key(key), resp

    def recv_text(self, timeout: float = 5.0) -> str:
        self.sock.settimeout(timeout)
        op, data = self.read_message()
        assert op == OP_TEXT, f"expected a text message, got opcode {op} {data[:100]!r}"
        return data.decode()


class TlsHttp(Http):
    """test_socketio's keep-alive HTTP/1.1 client over TLS (https:// polling)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, timeout: float = 5.0):
        self.ctx = ctx
        super().__init__(port, timeout)

    def _connect(self) -> None:
        self.sock = tls_socket(self.port, self.ctx, timeout=self.timeout)
        self.buf = b""
        self.peer_said_close = False

    def readable(self, wait: float) -> bool:
        if self.buf or self.sock.pending():
            return True
        return super().readable(wait)


def wss_url(server, path: str = "/ws", session: dict | None = None, query: dict | None = None) -> str:
    q = dict(query or {})
    if session is not None:
        q["session"] = session["session"]
    return f"wss://{HOST}:{server.port}{path}" + ("?" + urllib.parse.urlencode(q) if q else "")


async def wss_connect(server, ctx: ssl.SSLContext, path: str = "/ws", session: dict | None = None, *,
                      proxy: str | None = None, query: dict | None = None, timeout: float = 5.0,
                      url: str | None = None):
    """The real `websockets` asyncio client over TLS (proxy=None: direct, not from the env)."""
    from websockets.asyncio.client import connect

    headers = {"Cookie": session["cookie"]} if session is not None else {}
    return await connect(url or wss_url(server, path, session, query), ssl=ctx, proxy=proxy,
                         additional_headers=headers, open_timeout=timeout, close_timeout=2,
                         ping_interval=None, max_size=None)


def compressible_text(n: int, seed: int = 7) -> str:
    """n characters of random words: deflate shrinks it, but not to nothing."""
    rnd = random.Random(seed)
    words = ["".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(2, 9))) for _ in range(500)]
    out, size = [], 0
    while size < n:
        w = rnd.choice(words) + " "
        out.append(w)
        size += len(w)
    return "".join(out)[:n]


# =========================================================================== 1. wss, push, echo, ALPN


def test_wss_session_push_and_large_echo(push_servers, certs):
    server = start_tls(push_servers, certs)
    admin = Admin(server)
    s = admin.mint(user=42)
    ctx = client_ctx(certs / "ca.pem")

    async def go():
        ws = await wss_connect(server, ctx, "/ws", s)
        try:
            await asyncio.to_thread(wait_stats_sockets, admin, 1)
            assert admin.push_ok(context=1, user=42, path="/ws", message="hello over tls") == 1
            assert await recv_text(ws) == "hello over tls"
            # A push bigger than a TLS record (16 KiB) and than one read buffer.
            big = compressible_text(300 * 1024, seed=1)
            assert admin.push_ok(context=1, user=42, path="/ws", message=big) == 1
            try:
                got = await recv_text(ws, timeout=10)
            except TimeoutError:
                raise AssertionError("a 300 KiB push over TLS did not arrive within 10 s") from None
            assert got == big, f"300 KiB push over TLS differs (got {len(got)} chars)"
        finally:
            await ws.close()

        echo = await wss_connect(server, ctx, "/echo")
        try:
            ext = echo.response.headers.get("Sec-WebSocket-Extensions", "")
            assert "permessage-deflate" in ext, \
                f"compression is enabled: permessage-deflate should be negotiated over TLS, got {ext!r}"
            text = compressible_text(MIB, seed=2)
            await echo.send(text)
            got = await asyncio.wait_for(echo.recv(), 20)
            assert got == text, f"1 MiB text echo over TLS differs (got {len(got)} chars)"
            blob = os.urandom(MIB)  # incompressible
            await echo.send(blob)
            got = await asyncio.wait_for(echo.recv(), 20)
            assert got == blob, f"1 MiB binary echo over TLS differs (got {len(got)} bytes)"
            for i in range(50):  # many small frames in few TLS records
                await echo.send(f"small {i}")
            for i in range(50):
                assert await recv_text(echo) == f"small {i}"
        finally:
            await echo.close()

    run(go(), timeout=60)
    assert server.alive()


def test_more_than_64k_queued_in_one_turn(push_servers, certs):
    """What one loop turn queues for a socket may exceed 64 KiB (rustls' default buffer limit):
    one 200 KiB push, then a batch of 12 x 10 KiB pushes to one user, all arrive intact and in
    order (compression off: the bytes on the wire are as large as the messages)."""
    server = start_tls(push_servers, certs, compression={"enabled": False})
    admin = Admin(server)
    s = admin.mint(user=43)
    c = TlsRawClient(server.port, client_ctx(certs / "ca.pem"))
    try:
        c.upgrade("/ws?session=" + urllib.parse.quote(s["session"], safe=""), cookie=s["cookie"])
        wait_stats_sockets(admin, 1)
        big = compressible_text(200 * 1024, seed=4)
        assert admin.push_ok(context=1, user=43, path="/ws", message=big) == 1
        got = c.recv_text(timeout=5)
        assert got == big, f"200 KiB push over TLS: got {len(got)} chars"
        msgs = [f"{i:02d}" + compressible_text(10 * 1024, seed=10 + i) for i in range(12)]
        r = admin.push_batch([{"context": 1, "user": 43, "path": "/ws", "message": m} for m in msgs])
        assert r.status == 202, r
        for i, m in enumerate(msgs):
            got = c.recv_text(timeout=5)
            assert got == m, f"batch push {i} over TLS: got {got[:20]!r}... ({len(got)} chars)"
    except (TimeoutError, socket.timeout) as e:
        raise AssertionError(f"TLS output stopped after {len(c.buf)} buffered bytes: {e}") from None
    finally:
        c.close()


@pytest.mark.parametrize("offer, want", [(["h2", "http/1.1"], "http/1.1"), (["http/1.1"], "http/1.1"),
                                         (None, None)])
def test_alpn(push_servers, certs, offer, want):
    """A client offering http/1.1 (after h2 or alone) gets http/1.1; one offering no ALPN
    gets none; an upgrade and an echo work on that same connection."""
    server = start_tls(push_servers, certs)
    c = TlsRawClient(server.port, client_ctx(certs / "ca.pem", alpn=offer))
    try:
        assert c.sock.selected_alpn_protocol() == want, \
            f"ALPN offered {offer}: selected {c.sock.selected_alpn_protocol()!r}, expected {want!r}"
        c.upgrade("/echo")
        c.send_frame(OP_TEXT, b"alpn ok")
        assert c.recv_text() == "alpn ok"
    finally:
        c.close()


@pytest.mark.parametrize("version, name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls_versions(push_servers, certs, version, name):
    """TLS 1.2 and 1.3 both negotiate; an upgrade with a session, a push and an echo work."""
    server = start_tls(push_servers, certs)
    admin = Admin(server)
    s = admin.mint(user=7)
    ctx = client_ctx(certs / "ca.pem", version=version)
    c = TlsRawClient(server.port, ctx)
    e = TlsRawClient(server.port, ctx)
    try:
        assert c.sock.version() == name, f"negotiated {c.sock.version()}, expected {name}"
        c.upgrade("/ws?session=" + urllib.parse.quote(s["session"], safe=""), cookie=s["cookie"])
        wait_stats_sockets(admin, 1)
        assert admin.push_ok(context=1, user=7, path="/ws", message=f"over {name}") == 1
        assert c.recv_text() == f"over {name}"
        e.upgrade("/echo")
        payload = os.urandom(50_000)
        e.send_frame(OP_BINARY, payload)
        e.sock.settimeout(10)
        op, data = e.read_message()
        assert (op, data) == (OP_BINARY, payload), f"echo over {name}: opcode {op}, {len(data)} bytes"
    finally:
        c.close()
        e.close()


def test_wss_revoke_closes_4001_and_many_users(push_servers, certs):
    """Close codes travel over TLS; 40 users' sockets (spread over both cores, so the TLS
    state moved with the handoff) each get exactly their own push."""
    server = start_tls(push_servers, certs)
    admin = Admin(server)
    ctx = client_ctx(certs / "ca.pem")
    users = list(range(100, 140))
    sessions = {u: admin.mint(user=u) for u in users}

    async def go():
        conns = await asyncio.gather(*(wss_connect(server, ctx, "/ws", sessions[u]) for u in users))
        socks = dict(zip(users, conns))
        try:
            await asyncio.to_thread(wait_stats_sockets, admin, len(users))
            for u in users:
                assert admin.push_ok(context=1, user=u, path="/ws", message=f"for {u}") == 1
            got = await asyncio.gather(*(recv_text(socks[u]) for u in users))
            assert got == [f"for {u}" for u in users]
            r = admin.revoke(sessions[users[0]]["session"])
            assert r.status == 204, r
            await expect_closed_with(socks[users[0]], 4001, "session terminated")
            # The others are untouched.
            assert admin.push_ok(context=1, user=users[1], path="/ws", message="still here") == 1
            assert await recv_text(socks[users[1]]) == "still here"
        finally:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    run(go(), timeout=60)
    assert server.alive()


def test_sigterm_drain_closes_wss_1001(push_servers, certs):
    """The graceful drain over TLS: open wss sockets get close 1001, the process exits 0."""
    server = start_tls(push_servers, certs)
    admin = Admin(server)
    s = admin.mint(user=61)
    ctx = client_ctx(certs / "ca.pem")

    async def go():
        ws = await wss_connect(server, ctx, "/ws", s)
        echo = await wss_connect(server, ctx, "/echo")
        await asyncio.to_thread(wait_stats_sockets, admin, 2)
        server.proc.send_signal(signal.SIGTERM)
        await expect_closed_with(ws, 1001)
        await expect_closed_with(echo, 1001)

    run(go(), timeout=30)
    assert server.proc.wait(10) == 0, server.stderr_text()
    server.stop()  # joins the stderr reader
    push_servers.servers.remove(server)  # it exited on purpose: not a crash for the fixture


# =========================================================================== 2. refused clients


def test_untrusted_and_plaintext_clients_fail_server_keeps_serving(push_servers, certs, tmp_path):
    server = start_tls(push_servers, certs)
    admin = Admin(server)
    s = admin.mint(user=5)
    good = client_ctx(certs / "ca.pem")
    other_ca = cluster_certs(tmp_path, "other", "127.0.0.1") / "ca.pem"

    async def go():
        ws = await wss_connect(server, good, "/ws", s)
        try:
            # The system store does not know the test CA; another CA's client does not either.
            for what, ctx in (("system trust store", client_ctx(None)), ("another CA", client_ctx(other_ca))):
                with pytest.raises(ssl.SSLCertVerificationError):
                    w = await wss_connect(server, ctx, "/ws", s)
                    await w.close()
                    raise AssertionError(f"a client trusting {what} completed the handshake")
            # A certificate for 127.0.0.1 (IP SAN only) does not pass for another name.
            assert await asyncio.to_thread(handshake_fails, server.port, good, "localhost"), \
                "the 127.0.0.1 certificate was accepted for localhost"

            # A plain ws:// client on the TLS port: no 101, the connection ends.
            from websockets.asyncio.client import connect
            t0 = time.monotonic()
            with pytest.raises(Exception) as info:
                w = await connect(f"ws://{HOST}:{server.port}/echo", open_timeout=8, proxy=None)
                await w.close()
            assert not isinstance(info.value, AssertionError), info.value
            assert time.monotonic() - t0 < 8, "a plain ws:// client waited for the whole open_timeout"

            await asyncio.to_thread(plaintext_and_garbage, server.port)

            # The open socket still works, and so does a new trusted connection.
            assert admin.push_ok(context=1, user=5, path="/ws", message="after the failures") == 1
            assert await recv_text(ws) == "after the failures"
            w2 = await wss_connect(server, good, "/echo")
            await w2.send("still serving")
            assert await recv_text(w2) == "still serving"
            await w2.close()
        finally:
            await ws.close()

    run(go(), timeout=60)
    assert server.alive(), server.stderr_text()


def _read_until_eof(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or `timeout` passes (False)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    got = b""
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return got, True
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return got, True
    except socket.timeout:
        return got, False
    return got, False


def plaintext_and_garbage(port: int) -> None:
    """Plain HTTP, random bytes, a truncated ClientHello, connect-and-close: each connection is
    closed (within the 5 s handshake timeout plus a margin) without a plain-text answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    plain_upgrade = (f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    plain_get = f"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    # The first bytes of a real ClientHello, cut in the middle.
    hello = _client_hello_bytes()
    cases = {
        "plain upgrade": plain_upgrade,
        "plain polling GET": plain_get,
        "random bytes": os.urandom(3000),
        "truncated ClientHello": hello[: len(hello) // 2],
    }
    for what, data in cases.items():
        with socket.create_connection((HOST, port), timeout=5) as sk:
            sk.sendall(data)
            got, closed = _read_until_eof(sk, 8.0)
            assert closed, f"{what}: the TLS port kept the connection open for 8 s (got {got[:80]!r})"
            assert not got.startswith(b"HTTP/"), f"{what}: answered in plain text on the TLS port: {got[:200]!r}"
    for _ in range(5):  # connect and go away, before and in the middle of a handshake
        socket.create_connection((HOST, port), timeout=5).close()
        with socket.create_connection((HOST, port), timeout=5) as sk:
            sk.sendall(hello)
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST


def _client_hello_bytes() -> bytes:
    """A real ClientHello, taken from an ssl.MemoryBIO handshake that never gets an answer."""
    ctx = client_ctx(None, verify=False)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# =========================================================================== 3. Engine.IO over https


def test_engineio_polling_over_https(push_servers, certs):
    server = start_tls(push_servers, certs)
    admin = Admin(server)
    ctx = client_ctx(certs / "ca.pem")
    s = admin.mint(user=77)
    http = TlsHttp(server.port, ctx)
    try:
        # The minimal handshake, by hand (another user): 0{"sid":...} as the first packet.
        s76 = admin.mint(user=76)
        resp = http.request("GET", "/socket.io/?" + urllib.parse.urlencode(
            {"EIO": "4", "transport": "polling", "session": s76["session"]}),
            headers={"Cookie": s76["cookie"], "Accept": "*/*"})
        assert resp.status == 200, f"https polling handshake: {resp!r}"
        assert resp.body.startswith(b'0{"sid":'), f"open packet expected: {resp!r}"

        # The test_socketio client on a keep-alive TLS connection: connect, a push on the held GET.
        eio = Eio(server, s, 4, http=http)
        eio.connect()
        wait_until(lambda: admin.sockets(1, 77, SIO_FILTER).get("count") == 1, what="the polling session")
        assert admin.push_ok(context=1, user=77, path=SIO_FILTER, message='["news",{"tls":true}]') == 1
        got = eio.collect(lambda ps: any(p.startswith("42") for p in ps))
        assert [p for p in got if p.startswith("42")] == ['42["news",{"tls":true}]'], got
        assert http.reconnects == 0, "the TLS keep-alive connection was closed between requests"

        # One keep-alive TLS connection carrying requests of several users (whose sessions live
        # on different cores: the connection, TLS state included, moves to each owner in turn).
        shared = TlsHttp(server.port, ctx)
        try:
            users = list(range(200, 208))
            eios = {u: Eio(server, admin.mint(user=u), 4, http=shared) for u in users}
            for u in users:
                eios[u].connect()
            for u in users:
                assert admin.push_ok(context=1, user=u, path=SIO_FILTER, message=f'["news",{u}]') == 1
            for u in users:
                got = eios[u].collect(lambda ps: any(p.startswith("42") for p in ps))
                assert any(same_event(p, f'["news",{u}]') for p in got), f"user {u}: {got!r}"
            assert shared.reconnects == 0, "the shared TLS keep-alive connection was closed"
        finally:
            shared.close()
    finally:
        http.close()
    assert server.alive()


def test_socketio_websocket_over_wss(push_servers, certs):
    server = start_tls(push_servers, certs)
    admin = Admin(server)
    s = admin.mint(user=78)

    async def go():
        ws = await wss_connect(server, client_ctx(certs / "ca.pem"), "/socket.io/", s,
                               query={"EIO": "4", "transport": "websocket"})
        try:
            opened = await recv_text(ws)
            assert opened.startswith('0{"sid":'), opened
            await ws.send("40")
            connected = await recv_text(ws)
            assert connected.startswith("40"), connected
            assert admin.push_ok(context=1, user=78, path=SIO_FILTER, message='["news","wss"]') == 1
            while True:
                m = await recv_text(ws)
                if m != "2":  # a server ping may come first
                    break
            assert m == '42["news","wss"]', m
        finally:
            await ws.close()

    run(go(), timeout=30)


# =========================================================================== 4. through tinyproxy


class TinyProxy:
    """Debian's tinyproxy in the foreground (-d) with a config in tmp: CONNECT allowed only to
    `connect_port`, from and on 127.0.0.1. Its log (stderr) goes to a file."""

    def __init__(self, tmp_path: Path, connect_port: int):
        self.dir = tmp_path / f"tinyproxy-{connect_port}"
        self.dir.mkdir()
        self.port = free_port()
        self.log = self.dir / "tinyproxy.log"
        conf = self.dir / "tinyproxy.conf"
        conf.write_text("\n".join([
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            "Allow 127.0.0.1",
            f"ConnectPort {connect_port}",
            f'PidFile "{self.dir / "tinyproxy.pid"}"',
            "LogLevel Info",
            "MaxClients 50",
            "",
        ]))
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([str(TINYPROXY), "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"tinyproxy exited with {self.proc.returncode}: {self.log_text()}")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"tinyproxy not listening within 10 s: {self.log_text()}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def connects(self, port: int) -> int:
        return self.log_text().count(f"CONNECT {HOST}:{port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


@pytest.fixture
def tinyproxy(tmp_path):
    """Factory: tinyproxy(connect_port) -> TinyProxy; all stopped at teardown."""
    if not TINYPROXY.exists():
        pytest.skip(f"{TINYPROXY} not found (tests/run.sh installs Debian's tinyproxy as root)")
    started: list[TinyProxy] = []

    def start(connect_port: int) -> TinyProxy:
        p = TinyProxy(tmp_path, connect_port)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def connect_tunnel(proxy: TinyProxy, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP socket tunnelled to 127.0.0.1:port by the proxy (CONNECT, 200)."""
    sk = socket.create_connection((HOST, proxy.port), timeout=timeout)
    sk.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    head = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in head:
        if time.monotonic() > deadline:
            sk.close()
            raise AssertionError(f"no CONNECT answer from tinyproxy: {head!r}")
        chunk = sk.recv(1)  # byte by byte: nothing after the head may be swallowed
        if not chunk:
            sk.close()
            raise AssertionError(f"tinyproxy closed the CONNECT: {head!r}\n{proxy.log_text()}")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 200" not in status:
        sk.close()
        raise AssertionError(f"CONNECT refused: {head!r}")
    return sk


def test_wss_through_tinyproxy(push_servers, certs, tinyproxy):
    server = start_tls(push_servers, certs)
    proxy = tinyproxy(server.port)
    admin = Admin(server)
    s = admin.mint(user=9)
    ctx = client_ctx(certs / "ca.pem")

    # By hand: CONNECT, then TLS (verified against the test CA) inside the tunnel.
    c = TlsRawClient(server.port, ctx, sock=connect_tunnel(proxy, server.port))
    try:
        assert c.sock.selected_alpn_protocol() is None  # nothing offered here
        c.upgrade("/ws?session=" + urllib.parse.quote(s["session"], safe=""), cookie=s["cookie"])
        wait_stats_sockets(admin, 1)
        assert admin.push_ok(context=1, user=9, path="/ws", message="through the tunnel") == 1
        assert c.recv_text() == "through the tunnel"
    finally:
        c.close()
    assert proxy.connects(server.port) == 1, proxy.log_text()
    wait_stats_sockets(admin, 0)

    # websockets' own HTTP proxy support.
    async def go():
        ws = await wss_connect(server, ctx, "/ws", s, proxy=proxy.url)
        echo = await wss_connect(server, ctx, "/echo", proxy=proxy.url)
        try:
            await asyncio.to_thread(wait_stats_sockets, admin, 2)
            assert admin.push_ok(context=1, user=9, path="/ws", message="via websockets proxy=") == 1
            assert await recv_text(ws) == "via websockets proxy="
            text = compressible_text(48 * 1024, seed=3)
            await echo.send(text)
            assert await asyncio.wait_for(echo.recv(), 10) == text
        finally:
            await ws.close()
            await echo.close()

    run(go(), timeout=30)
    assert proxy.connects(server.port) == 3, proxy.log_text()

    # tinyproxy only allows CONNECT to ringwire's port: the admin port is refused.
    with pytest.raises(AssertionError, match="CONNECT refused"):
        connect_tunnel(proxy, server.admin_port).close()
    assert server.alive()


# =========================================================================== 5. certificate reload


def test_certificate_reload(push_servers, tmp_path):
    a = cluster_certs(tmp_path, "a", "127.0.0.1", "localhost")
    b = cluster_certs(tmp_path, "b", "127.0.0.1")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "cert.pem", live / "key.pem"

    def install(src: Path, name: str) -> None:
        shutil.copyfile(src / f"{name}.pem", cert)
        shutil.copyfile(src / f"{name}.key", key)

    install(a, "127.0.0.1")
    server = start_tls(push_servers, {"cert": str(cert), "key": str(key)})
    admin = Admin(server)
    s = admin.mint(user=11)
    ca_a, ca_b = client_ctx(a / "ca.pem"), client_ctx(b / "ca.pem")
    assert served_cert(server.port) == pem_der(a / "127.0.0.1.pem")

    async def go():
        ws = await wss_connect(server, ca_a, "/ws", s)
        echo = await wss_connect(server, ca_a, "/echo")
        n = 0

        async def old_sockets_work(what: str):
            nonlocal n
            n += 1
            msg = f"push {n} {what}"
            assert admin.push_ok(context=1, user=11, path="/ws", message=msg) == 1, what
            assert await recv_text(ws) == msg, what
            big = compressible_text(64 * 1024, seed=n)
            await echo.send(big)
            assert await asyncio.wait_for(echo.recv(), 10) == big, what

        try:
            await asyncio.to_thread(wait_stats_sockets, admin, 2)
            await old_sockets_work("before any reload")

            # New files from another CA, POST /v1/config/reload.
            install(b, "127.0.0.1")
            r = await asyncio.to_thread(admin.reload)
            assert json_has(r, 200, {"reloaded": True}), f"reload with new certificate files: {r!r}"
            assert await asyncio.to_thread(served_cert, server.port) == pem_der(b / "127.0.0.1.pem"), \
                "new connections should get the new certificate after the reload"
            assert await asyncio.to_thread(handshake_fails, server.port, ca_b) is None
            assert await asyncio.to_thread(handshake_fails, server.port, ca_a), \
                "a client trusting only the old CA must fail against the new certificate"
            w = await wss_connect(server, ca_b, "/ws", s)
            await asyncio.to_thread(wait_stats_sockets, admin, 3)
            assert admin.push_ok(context=1, user=11, path="/ws", message="both") == 2
            assert await recv_text(w) == "both" and await recv_text(ws) == "both"
            await w.close()
            await asyncio.to_thread(wait_stats_sockets, admin, 2)
            await old_sockets_work("after the reload to CA b")

            # Broken files: 400, and the certificate of CA b stays in use.
            good_cert, good_key = cert.read_bytes(), key.read_bytes()
            broken = {
                "garbage cert": lambda: cert.write_bytes(b"this is not PEM\n"),
                "garbage key": lambda: key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"),
                "empty cert": lambda: cert.write_bytes(b""),
                "missing key": lambda: key.unlink(),
                "key in place of the cert": lambda: cert.write_bytes(good_key),
            }
            for what, breakit in broken.items():
                breakit()
                r = await asyncio.to_thread(admin.reload)
                assert r.status == 400, f"reload with a {what}: expected 400, got {r!r}"
                cert.write_bytes(good_cert)
                key.write_bytes(good_key)
                assert await asyncio.to_thread(served_cert, server.port) == pem_der(b / "127.0.0.1.pem"), \
                    f"after the refused reload ({what}) the previous certificate must stay in use"
                assert await asyncio.to_thread(handshake_fails, server.port, ca_b) is None, what
            await old_sockets_work("after refused reloads")

            # SIGHUP, and another name: localhost's certificate (a DNS SAN) of CA a.
            install(a, "localhost")
            server.proc.send_signal(signal.SIGHUP)
            want = pem_der(a / "localhost.pem")
            await asyncio.to_thread(wait_until, lambda: served_cert(server.port) == want, 5.0, 0.1,
                                    "the localhost certificate after SIGHUP")
            assert await asyncio.to_thread(handshake_fails, server.port, ca_a, "localhost") is None
            assert await asyncio.to_thread(handshake_fails, server.port, ca_a), \
                "the localhost certificate must not pass for 127.0.0.1"
            assert await asyncio.to_thread(handshake_fails, server.port, ca_b, "localhost"), \
                "CA b must not verify CA a's certificate"
            await old_sockets_work("after the SIGHUP reload")
            stats = await asyncio.to_thread(admin.stats)
            assert stats.get("sockets") == 2, stats
        finally:
            await ws.close()
            await echo.close()

    run(go(), timeout=90)
    assert server.alive(), server.stderr_text()


def test_reload_refuses_key_not_matching_cert(push_servers, tmp_path):
    """A cert and key that are each valid PEM but do not belong together are broken files too:
    400, the previous certificate stays (else every new handshake would fail)."""
    a = cluster_certs(tmp_path, "a", "127.0.0.1")
    b = cluster_certs(tmp_path, "b", "127.0.0.1")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copyfile(a / "127.0.0.1.pem", cert)
    shutil.copyfile(a / "127.0.0.1.key", key)
    server = start_tls(push_servers, {"cert": str(cert), "key": str(key)})
    admin = Admin(server)
    shutil.copyfile(b / "127.0.0.1.pem", cert)  # the key stays a's
    r = admin.reload()
    shutil.copyfile(a / "127.0.0.1.pem", cert)
    assert r.status == 400, f"reload with a key that does not match the certificate: expected 400, got {r!r}"
    assert served_cert(server.port) == pem_der(a / "127.0.0.1.pem")
    assert handshake_fails(server.port, client_ctx(a / "ca.pem")) is None


# =========================================================================== 6. serve --check, serve


def _bad_tls_files(certs: Path, tmp_path: Path) -> dict[str, tuple[dict, Path]]:
    """{what: ([tls] section, the file the message must name)}."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    garbage_key = tmp_path / "garbage.key"
    garbage_key.write_text("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n")
    missing = tmp_path / "no-such-dir" / "missing.pem"
    good = tls_section(certs)
    return {
        "missing cert": ({"cert": str(missing), "key": good["key"]}, missing),
        "garbage cert": ({"cert": str(garbage), "key": good["key"]}, garbage),
        "key file as cert": ({"cert": good["key"], "key": good["key"]}, Path(good["key"])),
        "missing key": ({"cert": good["cert"], "key": str(missing)}, missing),
        "garbage key": ({"cert": good["cert"], "key": str(garbage_key)}, garbage_key),
        "cert file as key": ({"cert": good["cert"], "key": good["cert"]}, Path(good["cert"])),
    }


def _write_cfg(tmp_path: Path, name: str, tls: dict) -> Path:
    cfg = make_config(free_port(), free_port(), tls=tls, endpoints=ENDPOINTS)
    path = tmp_path / f"{name.replace(' ', '-')}.toml"
    path.write_text(render_config(cfg))
    return path


def test_check_tls_files(certs, tmp_path):
    ok = subprocess.run([str(BINARY), "serve", "--config", str(_write_cfg(tmp_path, "good", tls_section(certs))),
                         "--check"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, f"--check of a good [tls] config: {ok.returncode} {ok.stdout}{ok.stderr}"
    for what, (tls, named) in _bad_tls_files(certs, tmp_path).items():
        r = subprocess.run([str(BINARY), "serve", "--config", str(_write_cfg(tmp_path, what, tls)), "--check"],
                           capture_output=True, text=True, timeout=30)
        out = r.stdout + r.stderr
        assert r.returncode != 0, f"--check with a {what}: expected a failure, got 0: {out}"
        assert str(named) in out, f"--check with a {what}: the message should name {named}: {out!r}"


def test_serve_refuses_bad_tls_files(certs, tmp_path):
    for what, (tls, named) in _bad_tls_files(certs, tmp_path).items():
        port = free_port()
        path = _write_cfg(tmp_path, "serve-" + what, tls)
        text = path.read_text()
        path.write_text(text.replace(text.split('listen = "', 1)[1].split('"', 1)[0], f"{HOST}:{port}", 1))
        try:
            r = subprocess.run([str(BINARY), "serve", "--config", str(path)], capture_output=True, text=True,
                               timeout=20, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve with a {what} did not exit within 20 s") from None
        out = r.stdout + r.stderr
        assert r.returncode != 0, f"serve with a {what}: expected a failure, got 0: {out}"
        assert "ringwire ready" not in out, f"serve with a {what} became ready: {out}"
        assert str(named) in out, f"serve with a {what}: the message should name {named}: {out!r}"

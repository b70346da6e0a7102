"""Admin API hardening: the bearer token cannot be empty or short (config check, start, reload,
SIGHUP), a request without Authorization never matches, Bearer parsing follows RFC 9110; the
admin listener closes idle and half-sent connections after its timeouts and caps its
connections without locking out /healthz, pushes or a reload; path filters are capped at
1 KiB on every route.
"""

from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from helpers import (BINARY, HOST, SESSION_KEY_A, Admin, PushServers, Server, free_port,
                     make_config, parse_metrics, push_servers,  # noqa: F401  (fixture)
                     render_config, session_config, wait_until)

TOKEN = "3f9c2a7be41d08c6a5f0e27b9d13c4e8"  # 32 characters
SESSION = {"user": 42, "context": 1, "ttl_secs": 3600}
HALF_HEAD = b"POST /v1/push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _check(tmp_path, cfg: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"check-{time.monotonic_ns()}.toml"
    path.write_text(render_config(cfg))
    return subprocess.run([str(BINARY), "serve", "--config", str(path), "--check"],
                          capture_output=True, text=True, timeout=20)


# ============================================================ defect 1: empty or short token


def test_check_refuses_empty_and_short_admin_token(tmp_path):
    for listen in ("127.0.0.1", "0.0.0.0"):
        cfg = make_config(free_port(), free_port())
        cfg["admin"] = {"listen": f"{listen}:{free_port()}", "token": ""}
        r = _check(tmp_path, cfg)
        out = r.stdout + r.stderr
        assert r.returncode != 0, f"--check accepted admin.token = \"\" (listen {listen}): {out}"
        assert "admin.token" in out and "empty" in out and "16" in out, out
        for short in ("t", "t0ps3cret", "0123456789abcde"):
            cfg["admin"]["token"] = short
            r = _check(tmp_path, cfg)
            out = r.stdout + r.stderr
            if listen == "127.0.0.1":
                # A token is optional on loopback: a short one is accepted, with a warning.
                assert r.returncode == 0, f"--check refused a short token on loopback: {out}"
                assert "warning" in out and "at least 16" in out, out
                continue
            assert r.returncode != 0, f"--check accepted a {len(short)}-byte admin.token: {out}"
            assert "admin.token" in out and "at least 16" in out, out
        cfg["admin"]["token"] = "with a space in it"
        r = _check(tmp_path, cfg)
        assert r.returncode != 0 and "visible ASCII" in r.stdout + r.stderr, r
        cfg["admin"]["token"] = TOKEN
        r = _check(tmp_path, cfg)
        assert r.returncode == 0, f"--check refused a 32-byte token: {r.stdout}{r.stderr}"


def test_server_with_empty_token_does_not_start(tmp_path):
    port, admin_port = free_port(), free_port()
    cfg = make_config(port, admin_port)
    cfg["admin"]["token"] = ""
    path = tmp_path / "empty-token.toml"
    path.write_text(render_config(cfg))
    proc = subprocess.Popen([str(BINARY), "serve", "--config", str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Still running: show what the open API does with a request without Authorization.
            status = None
            try:
                req = urllib.request.Request(f"http://{HOST}:{admin_port}/v1/sessions", method="POST",
                                             data=b'{"user":42,"context":1,"ttl_secs":3600}',
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    status = r.status
            except Exception as e:  # noqa: BLE001
                status = repr(e)
            raise AssertionError(f"ringwire started with admin.token = \"\"; POST /v1/sessions "
                                 f"without Authorization answered {status}")
        assert proc.returncode != 0
        assert b"admin.token" in err and b"empty" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_missing_or_malformed_authorization_is_401(push_servers):
    server = push_servers.start(admin={"token": TOKEN})
    anon = Admin(server)
    routes = [
        ("POST", "/v1/sessions", SESSION),
        ("GET", "/metrics", None),
        ("GET", "/v1/stats", None),
        ("GET", "/v1/sockets?context=1&user=42", None),
        ("POST", "/v1/push", {"context": 1, "user": 42, "message": "x"}),
        ("POST", "/v1/config/reload", None),
    ]
    for method, path, body in routes:
        r = anon.request(method, path, body)
        assert r.status == 401, f"{method} {path} without Authorization: expected 401, got {r!r}"
    for hdr in ("", "Bearer", "Bearer ", "Bearer  ", "bearer", "Basic " + TOKEN, TOKEN,
                "Bearer" + TOKEN, "Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x", "Token " + TOKEN):
        r = anon.request("POST", "/v1/sessions", SESSION, headers={"Authorization": hdr})
        assert r.status == 401, f"Authorization: {hdr!r}: expected 401, got {r!r}"
    # RFC 9110: the scheme is case-insensitive, one or more spaces before the token.
    for hdr in ("Bearer " + TOKEN, "bearer " + TOKEN, "BEARER " + TOKEN, "Bearer   " + TOKEN,
                "Bearer " + TOKEN + " "):
        r = anon.request("POST", "/v1/sessions", SESSION, headers={"Authorization": hdr})
        assert r.status == 201, f"Authorization: {hdr!r}: expected 201, got {r!r}"
    # Health checks and the dashboard page stay open.
    for path in ("/healthz", "/readyz", "/"):
        assert anon.request("GET", path).status == 200, path


def test_reload_refuses_empty_or_malformed_token(push_servers):
    server = push_servers.start(admin={"token": TOKEN})
    admin, anon = Admin(server, token=TOKEN), Admin(server)
    for bad in ("", " ", "with space in the token"):
        PushServers.rewrite(server, admin={"token": bad})
        r = admin.reload()
        assert r.status == 400, f"reload with admin.token = {bad!r}: expected 400, got {r!r}"
        assert "admin.token" in r.body.decode(), r
        r = anon.request("POST", "/v1/sessions", SESSION)
        assert r.status == 401, f"after the refused reload ({bad!r}), no Authorization: {r!r}"
        assert admin.request("POST", "/v1/sessions", SESSION).status == 201
    # SIGHUP: refused the same way (logged), the running token stays in force.
    PushServers.rewrite(server, admin={"token": ""})
    n = len(server.stderr_lines)
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any("reload failed" in l for l in server.stderr_lines[n:]), timeout=5,
               what="the failed SIGHUP reload logged")
    assert any("admin.token" in l for l in server.stderr_lines[n:]), server.stderr_lines[n:]
    assert anon.request("POST", "/v1/sessions", SESSION).status == 401
    assert admin.request("POST", "/v1/sessions", SESSION).status == 201
    # A good new token is applied by a reload.
    new = "b" + TOKEN[1:]
    PushServers.rewrite(server, admin={"token": new})
    assert admin.reload().status == 200
    assert Admin(server, token=new).request("POST", "/v1/sessions", SESSION).status == 201
    assert admin.request("POST", "/v1/sessions", SESSION).status == 401


def test_reload_cannot_drop_the_token_of_a_public_listener(tmp_path, request):
    """admin.listen needs a restart, so the running listener stays on 0.0.0.0: a file that
    moves it to loopback and removes the token must not open the running one."""
    port, admin_port = free_port(), free_port()
    cfg = session_config(port, admin_port)
    cfg["admin"] = {"listen": f"0.0.0.0:{admin_port}", "token": TOKEN}
    path = tmp_path / "public-admin.toml"
    path.write_text(render_config(cfg))
    server = Server(path, port, admin_port)
    request.node._ringwire_servers = [server]
    try:
        server.wait_ready()
        admin, anon = Admin(server, token=TOKEN), Admin(server)
        cfg["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
        path.write_text(render_config(cfg))
        r = admin.reload()
        assert r.status == 400, f"reload dropping the token of a 0.0.0.0 listener: {r!r}"
        assert "token" in r.body.decode(), r
        r = anon.request("POST", "/v1/sessions", SESSION)
        assert r.status == 401, f"after the reload, no Authorization: {r!r}"
    finally:
        server.stop()


# ================================================================= small: path filter limit


def test_path_filter_limit_is_the_same_on_sockets_and_push(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    ok, long = "/ws/" + "a" * 1020, "/ws/" + "a" * 1021
    assert len(ok) == 1024 and len(long) == 1025
    q = "/v1/sockets?context=1&user=42&path="
    r = admin.request("GET", q + ok)
    assert r.status == 200, r
    r = admin.request("GET", q + long)
    assert r.status == 400, f"GET /v1/sockets with a 1025-byte filter: expected 400, got {r!r}"
    assert "path filter longer than 1024 bytes" in r.body.decode(), r
    r = admin.push(context=1, user=42, path=long, message="x")
    assert r.status == 400 and "path filter longer than 1024 bytes" in r.body.decode(), r


# ======================================================= defect 2: admin listener bounds


def _connect_many(port: int, n: int, half_every: int = 2) -> list[socket.socket]:
    """n connections; every `half_every`-th sends a half request head, the others nothing.
    Stops early if a connect times out (a starved listener no longer accepts): the caller's
    checks then fail with the symptom."""
    socks = []
    for i in range(n):
        try:
            s = socket.create_connection((HOST, port), timeout=2)
        except TimeoutError:
            break
        socks.append(s)
        if i % half_every == 0:
            try:
                s.sendall(HALF_HEAD)
            except OSError:
                pass  # already replaced by a newer connection (at the cap)
    return socks


def _closed_by_server(socks: list[socket.socket], timeout: float) -> dict[socket.socket, float]:
    """Wait until the server closes each socket (EOF or reset): {socket: seconds from now}."""
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed: dict[socket.socket, float] = {}
    try:
        while len(closed) < len(socks):
            left = t0 + timeout - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.2)):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                except BlockingIOError:
                    continue
                if not data:  # a 408/503 body would be data first, then EOF
                    closed[s] = time.monotonic() - t0
                    sel.unregister(s)
    finally:
        sel.close()
    return closed


def _timed_get(port: int, path: str = "/healthz", token: str | None = None) -> tuple[int, float]:
    t0 = time.monotonic()
    req = urllib.request.Request(f"http://{HOST}:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()
        return r.status, time.monotonic() - t0


def test_default_header_timeout_closes_silent_and_half_sent_connections(server):
    """No admin keys in the config: the default header_read_timeout_ms (5 s) applies."""
    socks = _connect_many(server.admin_port, 200)
    try:
        status, took = _timed_get(server.admin_port)
        assert status == 200 and took < 1.0, f"/healthz with 200 stalled connections: {took:.2f}s"
        closed = _closed_by_server(socks, timeout=9.0)
        assert len(closed) == len(socks), (
            f"{len(socks) - len(closed)} of {len(socks)} silent or half-sent admin connections "
            f"still open after 9 s (header_read_timeout_ms default 5000)")
        first = min(closed.values())
        assert first >= 3.5, f"closed after {first:.2f}s, before the 5 s header timeout"
        status, took = _timed_get(server.admin_port)
        assert status == 200 and took < 1.0
    finally:
        for s in socks:
            s.close()


def test_connection_cap_and_timeouts_keep_health_push_and_reload_working(push_servers):
    server = push_servers.start(sessions={"key": SESSION_KEY_A}, admin={
        "token": TOKEN, "header_read_timeout_ms": 1500, "idle_timeout_ms": 2500,
        "request_timeout_ms": 2000, "max_connections": 64})
    admin = Admin(server, token=TOKEN)
    t0 = time.monotonic()
    socks = _connect_many(server.admin_port, 1000)
    try:
        # At the cap, full of idle and half-sent connections: health, pushes and a reload
        # still answer at once (each newcomer replaces the longest-waiting idle connection).
        for _ in range(3):
            status, took = _timed_get(server.admin_port)
            assert status == 200 and took < 1.0, f"/healthz at the cap: {took:.2f}s"
        r = admin.push(context=1, user=42, message="at the cap")
        assert r.status == 202, r
        r = admin.reload()
        assert r.status == 200 and r.json["reloaded"] is True, f"reload at the cap: {r!r}"
        m = parse_metrics(_metrics(server))
        assert m["ringwire_admin_connections"] <= 64, m["ringwire_admin_connections"]
        assert m['ringwire_admin_connections_closed_total{reason="evicted"}'] >= 900, m
        # Every flood connection is closed by the server: the oldest replaced at once, the
        # last ones by the header timeout (1.5 s).
        closed = _closed_by_server(socks, timeout=6.0)
        assert len(closed) == len(socks), (
            f"{len(socks) - len(closed)} of 1000 idle/half-sent connections still open "
            f"{time.monotonic() - t0:.1f}s after they were opened")
    finally:
        for s in socks:
            s.close()
    m = parse_metrics(_metrics(server))
    assert m['ringwire_admin_connections_closed_total{reason="header_timeout"}'] >= 1, m


# Runs the server under a low descriptor limit (the engine's rings use direct descriptors; the
# ordinary table holds the admin connections, the listeners and the files a reload reads).
NOFILE_PREFIX = [sys.executable, "-c",
                 "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600)); "
                 "os.execv(sys.argv[1], sys.argv[1:])"]


def test_flood_near_the_descriptor_limit_does_not_starve_admin(tmp_path, request):
    """Default [admin] keys, RLIMIT_NOFILE 600, 1,000 idle and half-sent connections: the cap
    (256) keeps descriptors free, so health checks, pushes and a reload still work."""
    port, admin_port = free_port(), free_port()
    path = tmp_path / "nofile.toml"
    path.write_text(render_config(session_config(port, admin_port)))
    server = Server(path, port, admin_port, prefix=NOFILE_PREFIX)
    request.node._ringwire_servers = [server]
    socks: list[socket.socket] = []
    try:
        server.wait_ready()
        socks = _connect_many(admin_port, 1000)
        admin = Admin(server, timeout=3)
        for what, call, want in (
            ("GET /healthz", lambda: admin.request("GET", "/healthz"), 200),
            ("POST /v1/push", lambda: admin.push(context=1, user=42, message="x"), 202),
            ("POST /v1/config/reload", admin.reload, 200),
        ):
            t0 = time.monotonic()
            try:
                r = call()
                got = f"{r.status} {r.body[:200]!r}"
                ok = r.status == want
            except OSError as e:
                got, ok = repr(e), False
            took = time.monotonic() - t0
            assert ok and took < 1.0, (f"{what} with {len(socks)} stalled admin connections at "
                                       f"RLIMIT_NOFILE 600: {got} after {took:.2f}s")
        m = admin.metrics()
        assert m["ringwire_admin_connections"] <= 256, m["ringwire_admin_connections"]
    finally:
        for s in socks:
            s.close()
        server.stop()


def test_idle_keepalive_and_half_sent_heads_closed_after_configured_timeouts(push_servers):
    server = push_servers.start(admin={"header_read_timeout_ms": 1000, "idle_timeout_ms": 2000})
    # A keep-alive connection that completed a request, then sends nothing.
    idle = socket.create_connection((HOST, server.admin_port), timeout=5)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"ok\n" not in head:
        chunk = idle.recv(4096)
        assert chunk, f"closed before the response: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    # A connection that sent half a head, and one that sent nothing.
    half = socket.create_connection((HOST, server.admin_port), timeout=5)
    half.sendall(HALF_HEAD)
    silent = socket.create_connection((HOST, server.admin_port), timeout=5)
    # A keep-alive connection that starts a second head after 0.5 s and never finishes it:
    # the header timeout counts from that first byte, not the idle timeout.
    second = socket.create_connection((HOST, server.admin_port), timeout=5)
    second.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    second.recv(4096)
    time.sleep(0.5)
    second.sendall(b"GET /healthz HTTP/1.1\r\n")
    closed = _closed_by_server([idle, half, silent, second], timeout=5.0)
    try:
        assert set(closed) == {idle, half, silent, second}, closed
        # (times measured from after the 0.5 s pause)
        assert 0.2 <= closed[half] <= 1.5, f"half-sent head closed after {closed[half]:.2f}s (timeout 1 s)"
        assert 0.2 <= closed[silent] <= 1.5, f"silent connection closed after {closed[silent]:.2f}s"
        assert 0.6 <= closed[second] <= 1.5, f"second half head closed after {closed[second]:.2f}s"
        assert 1.2 <= closed[idle] <= 2.6, f"idle keep-alive closed after {closed[idle]:.2f}s (timeout 2 s)"
    finally:
        for s in (idle, half, silent, second):
            s.close()
    m = parse_metrics(_metrics(server))
    assert m['ringwire_admin_connections_closed_total{reason="idle_timeout"}'] >= 1, m
    assert m['ringwire_admin_connections_closed_total{reason="header_timeout"}'] >= 3, m


def test_check_rejects_bad_admin_listener_keys(tmp_path):
    for key, value in (("header_read_timeout_ms", 0), ("idle_timeout_ms", 0),
                       ("request_timeout_ms", 0), ("max_connections", 0), ("max_idle", 5)):
        cfg = make_config(free_port(), free_port())
        cfg["admin"][key] = value
        r = _check(tmp_path, cfg)
        assert r.returncode != 0, f"--check accepted admin.{key} = {value}"
        assert key in r.stdout + r.stderr, r.stderr


def _metrics(server) -> str:
    req = urllib.request.Request(f"http://{HOST}:{server.admin_port}/metrics")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def _request_on(sock: socket.socket, raw: bytes) -> bytes:
    """Send a request on an open keep-alive connection; read one response (Content-Length)."""
    sock.settimeout(5)
    sock.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in a response body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_cap_keeps_the_applications_authorized_connection(push_servers):
    """At the cap, never-served connections go first, then ones that made no authorized
    request (even if they asked /healthz); the application's pooled connection, which
    carries the token, stays."""
    server = push_servers.start(admin={"token": TOKEN, "max_connections": 8,
                                       "header_read_timeout_ms": 10000, "idle_timeout_ms": 10000})
    stats = f"GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    app = socket.create_connection((HOST, server.admin_port), timeout=5)
    assert _request_on(app, stats).startswith(b"HTTP/1.1 200")
    probers = []
    try:
        for _ in range(20):
            s = socket.create_connection((HOST, server.admin_port), timeout=5)
            probers.append(s)
            assert _request_on(s, health).startswith(b"HTTP/1.1 200")
        silent = _connect_many(server.admin_port, 30, half_every=10**9)
        probers += silent
        # 8 slots. The /healthz connections replace each other (oldest first), the app's
        # stays; the first silent one replaces the oldest /healthz one, the next silent ones
        # (never served) replace each other: the app, the 6 newest /healthz connections and
        # the last silent one are left.
        closed = _closed_by_server(probers, timeout=3.0)
        assert len(closed) == 14 + 29, f"{len(closed)} closed"
        assert all(s in closed for s in probers[:14] + silent[:-1]), "wrong connections replaced"
        assert _request_on(app, stats).startswith(b"HTTP/1.1 200"), "the app's connection was evicted"
    finally:
        for s in probers + [app]:
            s.close()


def test_all_busy_answers_503_then_request_timeout_frees_the_slots(push_servers):
    server = push_servers.start(admin={"max_connections": 2, "request_timeout_ms": 1500})
    trickle = (b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n{")
    busy = []
    for _ in range(2):
        s = socket.create_connection((HOST, server.admin_port), timeout=5)
        s.sendall(trickle)
        busy.append(s)
    time.sleep(0.3)
    try:
        # Both slots are handling a request (a body that never completes): a newcomer is
        # answered 503 and closed at once, nothing is evicted.
        t0 = time.monotonic()
        with socket.create_connection((HOST, server.admin_port), timeout=5) as third:
            data = b""
            while chunk := third.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 503") and b"admin connection limit" in data, data
        assert time.monotonic() - t0 < 1.0
        # The trickled bodies hit request_timeout_ms (1.5 s): closed, the slots are free.
        closed = _closed_by_server(busy, timeout=4.0)
        assert len(closed) == 2, closed
        assert all(0.6 <= t <= 2.5 for t in closed.values()), closed
        status, took = _timed_get(server.admin_port)
        assert status == 200 and took < 1.0
    finally:
        for s in busy:
            s.close()
    m = Admin(server).metrics()
    assert m['ringwire_admin_connections_closed_total{reason="request_timeout"}'] == 2, m
    assert m['ringwire_admin_connections_closed_total{reason="refused_busy"}'] >= 1, m

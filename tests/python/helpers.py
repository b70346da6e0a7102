"""Helpers shared by the Python end-to-end tests: server process, config, raw sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("RINGWIRE_BIN", ROOT / "target" / "release" / "ringwire"))
READY_MARKER = "ringwire ready"
READY_TIMEOUT = 20.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOST = "127.0.0.1"

# Opcodes
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inline table, keys always quoted: contexts = { "3" = true }
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def render_config(cfg: dict) -> str:
    """Render {section: {key: value}} plus `endpoints` (a list of tables) as TOML."""
    out = []
    for section, table in cfg.items():
        if section == "endpoints":
            continue
        out.append(f"[{section}]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
        out.append("")
    for ep in cfg.get("endpoints", []):
        out.append("[[endpoints]]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in ep.items())
        out.append("")
    return "\n".join(out)


def make_config(port: int, admin_port: int, **overrides) -> dict:
    """Echo endpoint at "/" with no auth; `overrides` = {section: {key: value}} or endpoints=[...]."""
    cfg = {
        # Tests stop servers with sockets still open: no drain window unless a test sets one.
        "server": {"listen": f"{HOST}:{port}", "cores": 2, "drain_secs": 0},
        "limits": {
            "max_frame_bytes": 16 * 1024 * 1024,
            "max_message_bytes": 16 * 1024 * 1024,
            "handshake_timeout_ms": 5000,
        },
        "compression": {"enabled": True},
        "admin": {"listen": f"{HOST}:{admin_port}"},
        "endpoints": [{"path": "/", "kind": "echo", "auth": "none"}],
    }
    for section, value in overrides.items():
        if section == "endpoints":
            cfg["endpoints"] = value
        else:
            cfg.setdefault(section, {}).update(value)
    return cfg


class Server:
    """A running ringwire process. Its stderr is collected in `stderr_lines`."""

    def __init__(self, config_path: Path, port: int, admin_port: int | None = None, *,
                 host: str = HOST, prefix: list[str] | tuple[str, ...] = ()):
        """host: where its listeners are (the admin client follows it); prefix: a command the
        binary runs under, e.g. ["ip", "netns", "exec", NAME] (it must exec, keeping the pid)."""
        self.config_path = config_path
        self.port = port
        self.admin_port = admin_port
        self.host = host
        self.stderr_lines: list[str] = []
        self.ready_line: str | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [*prefix, str(BINARY), "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr_lines.append(line)
            if READY_MARKER in line and not self._ready.is_set():
                self.ready_line = line
                self._ready.set()
        self._ready.set()  # EOF: wake the waiter, which then sees the exit

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not self._ready.wait(timeout):
            raise RuntimeError(f"ringwire did not log {READY_MARKER!r} within {timeout:.0f}s")
        if self.ready_line is None:
            self.proc.wait(5)
            raise RuntimeError(f"ringwire exited with code {self.proc.returncode} before ready")

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    def cores_from_ready_line(self) -> int | None:
        m = re.search(r"with (\d+) cores?", self.ready_line or "")
        return int(m.group(1)) if m else None

    def metrics(self) -> dict[str, float]:
        """The admin /metrics page as {'name{labels}': value}."""
        import urllib.request

        with urllib.request.urlopen(f"http://{HOST}:{self.admin_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return parse_metrics(text)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines)


def run(coro, timeout: float = 30.0):
    """Run a coroutine to completion with an overall timeout."""

    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


# --------------------------------------------------------------------------- raw sockets


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                 mask: bool = True, length_override: int | None = None) -> bytes:
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length_override is None else length_override
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


class RawResponse:
    def __init__(self, raw: bytes):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0] if lines else ""
        parts = self.status_line.split(" ", 2)
        self.status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def __repr__(self) -> str:
        return f"RawResponse({self.raw[:300]!r})"


class RawClient:
    """A blocking TCP client speaking hand-built HTTP and WebSocket frames."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_http_response(self) -> RawResponse:
        """Read a response head (+ body per Content-Length, or until EOF if none and short)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                if self.buf:
                    return RawResponse(self.buf)
                raise EOFError("connection closed without an HTTP response")
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        resp = RawResponse(head + b"\r\n\r\n")
        self.buf = rest
        if resp.status == 101:
            resp.body = b""
            return resp
        length = resp.headers.get("content-length")
        if length is not None and length.isdigit():
            resp.body = self.read_exact(int(length))
        else:
            # No Content-Length on an error response: read until the server closes.
            try:
                while self._fill():
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def handshake(self, path: str = "/", extra_headers: str = "") -> RawResponse:
        key = base64.b64encode(os.urandom(16)).decode()
        self.send(
            (f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n").encode()
        )
        resp = self.read_http_response()
        assert resp.status == 101, f"upgrade failed: {resp!r}"
        assert resp.headers.get("sec-websocket-accept") == accept_key(key), resp
        return resp

    def send_frame(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.send(encode_frame(opcode, payload, **kw))

    def read_frame(self) -> tuple[bool, int, int, bytes]:
        """-> (fin, rsv, opcode, payload). Asserts the server did not mask."""
        b0, b1 = self.read_exact(2)
        fin, rsv, opcode = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.read_exact(8))
        return fin, rsv, opcode, self.read_exact(n)

    def read_message(self) -> tuple[int, bytes]:
        """Read one data message (reassembling fragments), skipping server pings."""
        opcode, parts = None, []
        while True:
            fin, _rsv, op, payload = self.read_frame()
            if op in (OP_PING, OP_PONG):
                continue
            if op == OP_CLOSE:
                raise AssertionError(f"got close {close_code(payload)} while reading a message")
            if opcode is None:
                opcode = op
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    def read_close(self) -> tuple[int | None, bytes]:
        """Read frames until a close frame; return (code, reason). Data frames are skipped."""
        while True:
            _fin, _rsv, op, payload = self.read_frame()
            if op == OP_CLOSE:
                return close_code(payload), payload[2:]

    def wait_eof(self, timeout: float = 5.0) -> bool:
        """True if the server closes the TCP connection (EOF or RST) within `timeout`."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False


def close_code(payload: bytes) -> int | None:
    if len(payload) < 2:
        return None
    return struct.unpack("!H", payload[:2])[0]


# --------------------------------------------------------------------------- sessions, push, admin API
# Used by test_sessions.py, test_push.py and test_reload.py: configs with nested tables
# ([websockets] cascade), an admin API client, and WebSocket helpers on the real
# `websockets` client.

import json as _json
import urllib.parse as _urlparse

import pytest as _pytest

RAW_ENDPOINTS = [{"path": "/ws", "kind": "raw"}]
SESSION_KEY_A = "a1" * 32
SESSION_KEY_B = "b2" * 32
REFUSAL_REASONS = (
    "missing_session", "unknown_session", "session_expired", "session_revoked", "wrong_secret",
    "origin", "disabled", "user_limit", "rate_limit", "server_full", "bad_request", "not_found",
)
BY_REASON = "ringwire_upgrades_refused_by_reason_total"
BY_STATUS = "ringwire_upgrades_refused_total"


# Older names kept for the session/push/reload suites: render_config handles inline tables.
toml_value_ext = _toml_value
render_config_ext = render_config


def session_config(port: int, admin_port: int, **overrides) -> dict:
    """make_config with one session-authenticated raw endpoint at /ws (unless endpoints= given)."""
    overrides.setdefault("endpoints", RAW_ENDPOINTS)
    return make_config(port, admin_port, **overrides)


class PushServers:
    """Starts ringwire processes with session_config(); rewrites their config for reloads."""

    def __init__(self, tmp_path: Path, servers: list):
        self.tmp_path = tmp_path
        self.servers = servers

    def start(self, **overrides) -> Server:
        port, admin_port = free_port(), free_port()
        while admin_port == port:
            admin_port = free_port()
        path = self.tmp_path / f"ringwire-push-{len(self.servers)}.toml"
        path.write_text(render_config_ext(session_config(port, admin_port, **overrides)))
        server = Server(path, port, admin_port)
        self.servers.append(server)
        server.wait_ready()
        return server

    @staticmethod
    def rewrite(server: Server, **overrides) -> None:
        """Replace the server's config file (same ports) with session_config(**overrides)."""
        text = render_config_ext(session_config(server.port, server.admin_port, **overrides))
        server.config_path.write_text(text)


@_pytest.fixture
def push_servers(request, tmp_path):
    """Factory fixture: push_servers.start(**overrides) -> Server (raw /ws endpoint, sessions).

    Servers are stopped at teardown; one that exited during the test fails it. Their stderr
    is attached to failure reports by conftest's hook.
    """
    if not BINARY.is_file():
        _pytest.fail(f"{BINARY} not found: build with `cargo build --release` first")
    servers: list[Server] = []
    request.node._ringwire_servers = servers
    yield PushServers(tmp_path, servers)
    crashed = [s for s in servers if not s.alive()]
    for s in servers:
        s.stop()
    if crashed:
        _pytest.fail(
            "ringwire exited during the test: "
            + ", ".join(f"port {s.port} exit code {s.proc.returncode}" for s in crashed)
            + "\n--- stderr ---\n" + "\n".join(s.stderr_text() for s in crashed)
        )


class AdminResponse:
    def __init__(self, status: int, body: bytes, headers: dict):
        self.status = status
        self.body = body
        self.headers = headers
        try:
            self.json = _json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"AdminResponse({self.status}, {self.body[:300]!r})"


class Admin:
    """Plain-HTTP client of a server's admin API (http.client, 127.0.0.1, bounded)."""

    def __init__(self, server: Server, token: str | None = None, timeout: float = 5.0):
        self.server = server
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None,
                token: str | None | bool = True, headers: dict | None = None) -> AdminResponse:
        """token=True: use self.token; None/False: no Authorization; a string: that token."""
        import http.client

        hdrs = dict(headers or {})
        tok = self.token if token is True else (token or None)
        if tok is not None:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = raw
        if body is not None:
            data = _json.dumps(body).encode()
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(getattr(self.server, "host", HOST), self.server.admin_port,
                                          timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return AdminResponse(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
        finally:
            conn.close()

    # -- sessions
    def mint(self, user: int, context: int = 1, ttl_secs: int = 3600) -> dict:
        r = self.request("POST", "/v1/sessions", {"user": user, "context": context, "ttl_secs": ttl_secs})
        assert r.status == 201, f"POST /v1/sessions user={user} context={context}: expected 201, got {r!r}"
        s = r.json
        assert isinstance(s, dict) and {"session", "secret", "cookie", "expires_at"} <= s.keys(), r
        return s

    def revoke(self, session_id: str) -> AdminResponse:
        return self.request("DELETE", f"/v1/sessions/{_urlparse.quote(session_id, safe='')}")

    # -- push
    def push(self, **body) -> AdminResponse:
        return self.request("POST", "/v1/push", body)

    def push_ok(self, **body) -> int:
        r = self.push(**body)
        assert r.status == 202 and isinstance(r.json, dict) and "sockets" in r.json, \
            f"POST /v1/push {body}: expected 202 {{\"sockets\":N}}, got {r!r}"
        return r.json["sockets"]

    def push_batch(self, pushes: list[dict]) -> AdminResponse:
        return self.request("POST", "/v1/push/batch", {"pushes": pushes})

    # -- queries
    def sockets(self, context: int, user: int, path: str | None = None) -> dict:
        q = {"context": context, "user": user}
        if path is not None:
            q["path"] = path
        r = self.request("GET", "/v1/sockets?" + _urlparse.urlencode(q))
        assert r.status == 200 and isinstance(r.json, dict), f"GET /v1/sockets {q}: {r!r}"
        return r.json

    def stats(self) -> dict:
        r = self.request("GET", "/v1/stats")
        assert r.status == 200 and isinstance(r.json, dict), f"GET /v1/stats: {r!r}"
        return r.json

    def reload(self) -> AdminResponse:
        return self.request("POST", "/v1/config/reload")

    def metrics(self) -> dict[str, float]:
        r = self.request("GET", "/metrics")
        assert r.status == 200, f"GET /metrics: {r!r}"
        return parse_metrics(r.body.decode())


def metric_sum(metrics: dict[str, float], name: str, **labels) -> float:
    """Sum of every series of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def refusal_counts(admin: Admin) -> dict:
    """{reason: count} for every documented reason, plus {'status:NNN': count}."""
    m = admin.metrics()
    out = {r: metric_sum(m, BY_REASON, reason=r) for r in REFUSAL_REASONS}
    out["_all_reasons"] = metric_sum(m, BY_REASON)
    for status in (400, 401, 403, 404, 429, 503):
        out[f"status:{status}"] = metric_sum(m, BY_STATUS, status=str(status))
    return out


def wait_until(pred, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    """Poll pred() until truthy; returns its last value (asserts on timeout)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    last = pred()
    assert last, f"timed out after {timeout}s waiting for {what} (last value {last!r})"
    return last


def wait_stats_sockets(admin: Admin, expected: int, timeout: float = 5.0) -> dict:
    """Wait until /v1/stats says `expected` sockets (closes are asynchronous); returns the stats."""
    seen = {}

    def ok():
        seen["s"] = admin.stats()
        return seen["s"].get("sockets") == expected

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ok():
        time.sleep(0.05)
    assert seen["s"].get("sockets") == expected, \
        f"/v1/stats sockets: expected {expected}, got {seen['s'].get('sockets')} ({seen['s']})"
    return seen["s"]


async def await_stats_sockets(admin: Admin, expected: int, timeout: float = 5.0) -> dict:
    """wait_stats_sockets for coroutines (does not block the event loop)."""
    deadline = time.monotonic() + timeout
    while True:
        s = await asyncio.to_thread(admin.stats)
        if s.get("sockets") == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert s.get("sockets") == expected, f"/v1/stats sockets: expected {expected}, got {s.get('sockets')} ({s})"
    return s


def ws_url(server: Server, session_id: str | None, path: str = "/ws") -> str:
    url = f"ws://{HOST}:{server.port}{path}"
    if session_id is not None:
        url += "?session=" + _urlparse.quote(session_id, safe="")
    return url


async def ws_connect(server: Server, session: dict | None, path: str = "/ws", *,
                     cookie: str | None | bool = True, origin: str | None = None,
                     session_id: str | None | bool = True, timeout: float = 5.0, logger=None):
    """Open a WebSocket with the real `websockets` client.

    session: a minted session dict; cookie=True sends session["cookie"], a string sends that
    Cookie header, None/False sends none; session_id=True uses session["session"], a string
    uses that, None/False omits the ?session= parameter.
    """
    from websockets.exceptions import InvalidStatus

    try:
        return await _ws_open(server, session, path, cookie=cookie, origin=origin,
                              session_id=session_id, timeout=timeout, logger=logger)
    except InvalidStatus as e:
        body = (e.response.body or b"").decode("utf-8", "replace").strip()
        raise AssertionError(f"upgrade {path} refused: HTTP {e.response.status_code} {body!r} "
                             f"(expected 101)") from e


async def _ws_open(server: Server, session: dict | None, path: str, *, cookie, origin, session_id, timeout,
                   logger=None):
    from websockets.asyncio.client import connect

    sid = session["session"] if session_id is True else (session_id or None)
    headers = {}
    ck = session["cookie"] if cookie is True else (cookie or None)
    if ck is not None:
        headers["Cookie"] = ck
    extra = {"logger": logger} if logger is not None else {}
    return await connect(ws_url(server, sid, path), additional_headers=headers, origin=origin,
                         open_timeout=timeout, close_timeout=2, ping_interval=None, max_size=None,
                         **extra)


async def upgrade_status(server: Server, session: dict | None, path: str = "/ws", **kw) -> tuple[int, str]:
    """(status, body) of an upgrade attempt: 101 (the socket is closed again) or the refusal."""
    from websockets.exceptions import InvalidStatus

    kw.setdefault("cookie", True)
    kw.setdefault("origin", None)
    kw.setdefault("session_id", True)
    kw.setdefault("timeout", 5.0)
    try:
        ws = await _ws_open(server, session, path, **kw)
    except InvalidStatus as e:
        body = e.response.body or b""
        return e.response.status_code, body.decode("utf-8", "replace").strip()
    await ws.close()
    return 101, ""


async def recv_text(ws, timeout: float = 5.0) -> str:
    msg = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(msg, str), f"expected a text message, got {type(msg).__name__} {msg[:100]!r}"
    return msg


async def expect_silence(ws, secs: float = 0.3) -> None:
    """Nothing arrives on `ws` for `secs` (recv cancellation is safe in websockets' asyncio API)."""
    try:
        msg = await asyncio.wait_for(ws.recv(), secs)
    except (asyncio.TimeoutError, TimeoutError):
        return
    raise AssertionError(f"unexpected message {msg!r}")


async def expect_closed_with(ws, code: int, reason: str | None = None, timeout: float = 5.0) -> list:
    """Wait for the server to close `ws` with `code` (and `reason`); returns messages seen before."""
    from websockets.exceptions import ConnectionClosed

    seen = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen.append(await ws.recv())
    except ConnectionClosed as e:
        got = e.rcvd.code if e.rcvd is not None else None
        got_reason = e.rcvd.reason if e.rcvd is not None else None
        assert got == code, f"expected close {code} {reason!r}, got {got} {got_reason!r} (messages before: {seen!r})"
        if reason is not None:
            assert got_reason == reason, f"close {code}: expected reason {reason!r}, got {got_reason!r}"
        return seen
    except TimeoutError:
        raise AssertionError(f"not closed within {timeout}s (expected close {code}); messages: {seen!r}")


async def upgrade_refusal(opening) -> tuple[int, str, dict]:
    """Await `opening` (a websockets client connect): a refused upgrade gives (status, body
    text, lower-cased headers); an accepted one is closed and gives (101, "", {})."""
    from websockets.exceptions import InvalidStatus

    try:
        ws = await opening
    except InvalidStatus as e:
        r = e.response
        return r.status_code, (r.body or b"").decode().strip(), {k.lower(): v for k, v in r.headers.raw_items()}
    await ws.close()
    return 101, "", {}


def malformed_upgrade_status(server: Server, path: str, cookie: str | None) -> tuple[int, bytes]:
    """An upgrade request with an invalid Sec-WebSocket-Key, sent with http.client."""
    import http.client

    conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
    try:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "not-a-valid-key"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def json_has(r: AdminResponse, status: int, fields: dict) -> bool:
    """True if the response has `status` and a JSON object with (at least) these fields.

    Additional fields are allowed: the contract lists what a client can rely on.
    """
    return (r.status == status and isinstance(r.json, dict)
            and all(k in r.json and r.json[k] == v and type(r.json[k]) is type(v) for k, v in fields.items()))


async def expect_status(want: int, server: Server, session: dict | None, path: str = "/ws", **kw) -> str:
    """Assert an upgrade attempt gets `want` (101 or a refusal status); returns the body."""
    status, body = await upgrade_status(server, session, path, **kw)
    assert status == want, f"upgrade {path}: expected {want}, got {status} {body!r}"
    return body


class FrameLog:
    """The frames a `websockets` client receives, from its debug log ("< %s", frame).

    ws = await ws_connect(server, s, logger=(log := FrameLog()).logger); ...; log.data_frames()
    """

    _n = 0

    def __init__(self):
        import logging

        FrameLog._n += 1
        self.frames: list = []
        self.logger = logging.getLogger(f"ringwire.tests.frames.{FrameLog._n}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        log = self

        class _H(logging.Handler):
            def emit(self, record):
                if record.msg == "< %s" and record.args:
                    log.frames.append(record.args[0])

        self.logger.addHandler(_H())

    def data_frames(self) -> list[tuple[str, bool, int]]:
        """[(opcode name, fin, payload length)] of received data frames (TEXT, BINARY, CONT)."""
        return [(f.opcode.name, f.fin, len(f.data)) for f in self.frames
                if f.opcode.name in ("TEXT", "BINARY", "CONT")]

    def clear(self) -> None:
        self.frames.clear()


# --------------------------------------------------------------------------- cluster
# Used by test_cluster.py, test_cluster_push.py and test_cluster_partition.py: development
# certificates, node configs (every node shares one sessions.key), a Cluster of ringwire
# processes on 127.0.0.x (or in network namespaces), and a `websockets` sync client that
# timestamps what it receives in a background thread.

CLUSTER_SESSION_KEY = "c3" * 32
CLUSTER_ENDPOINTS = [{"path": "/ws", "kind": "raw"}, {"path": "/other", "kind": "raw"}]


def cluster_certs(tmp_path: Path, name: str, *nodes: str) -> Path:
    """`ringwire cluster certs --out tmp_path/name nodes...` -> that directory."""
    out = tmp_path / name
    r = subprocess.run([str(BINARY), "cluster", "certs", "--out", str(out), *nodes],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for f in ["ca.pem", "ca.key", *[f"{n}.{x}" for n in nodes for x in ("pem", "key")]]:
        assert (out / f).stat().st_size > 0, f
    return out


def _merge_config(cfg: dict, extra: dict | None) -> dict:
    for section, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **value}
        else:
            cfg[section] = value
    return cfg


def cluster_node_config(tmp_path: Path, node: str, ip: str, quic_port: int, peers, certdir: Path,
                        port: int, admin_port: int, *, cluster_ip: str | None = None,
                        extra: dict | None = None) -> Path:
    """Write the config of one node: public and admin listeners on `ip`, QUIC on
    `cluster_ip or ip`, peers = [(id, "addr:port")], the shared CLUSTER_SESSION_KEY, the raw
    endpoints /ws and /other; `extra` = {section: {key: value}} merged in (endpoints= replaces)."""
    cfg = {
        "server": {"listen": f"{ip}:{port}", "cores": 1, "drain_secs": 0},
        "admin": {"listen": f"{ip}:{admin_port}"},
        "sessions": {"key": CLUSTER_SESSION_KEY},
        "cluster": {
            "node_id": node,
            "listen": f"{cluster_ip or ip}:{quic_port}",
            "peers": [{"id": pid, "addr": addr} for pid, addr in peers],
            "ca": str(certdir / "ca.pem"),
            "cert": str(certdir / f"{node}.pem"),
            "key": str(certdir / f"{node}.key"),
        },
        "endpoints": CLUSTER_ENDPOINTS,
    }
    path = tmp_path / f"{node}.toml"
    path.write_text(render_config(_merge_config(cfg, extra)))
    return path


def cluster_links(ip: str, admin_port: int, token: str | None = None) -> dict:
    """{peer: "up"|"down"} from a node's /v1/stats."""
    import json
    import urllib.request

    req = urllib.request.Request(f"http://{ip}:{admin_port}/v1/stats")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return {l["node"]: l["state"] for l in json.load(r)["cluster"]["links"]}


def wait_cluster_links(ip: str, admin_port: int, want: dict, timeout: float, token: str | None = None) -> float:
    """Poll until the node's links are exactly `want`; returns time.monotonic() then."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = cluster_links(ip, admin_port, token)
        if got == want:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"links of {ip}: wanted {want}, got {got}")


class Cluster:
    """Nodes `names` on 127.0.0.1, .2, ... (or `ips`), each with its own config file.

    certdirs: {node: dir} or {"*": dir}; cluster_ips: where QUIC listens (default ips);
    prefixes: {node: [command...]} the binary runs under (network namespaces); extra: config
    merged into every node, per_node: {node: extra} on top; token: admin.token of every node;
    servers: a list every started Server is appended to (for stderr in failure reports).
    """

    def __init__(self, tmp_path: Path, names, certdirs=None, *, ips=None, cluster_ips=None,
                 prefixes=None, extra=None, per_node=None, token=None, servers=None):
        self.tmp_path = tmp_path
        self.names = list(names)
        self.ips = ips or {n: f"127.0.0.{i + 1}" for i, n in enumerate(self.names)}
        self.cluster_ips = cluster_ips or self.ips
        self.quic = {n: free_port() for n in self.names}
        self.ports = {n: (free_port(), free_port()) for n in self.names}
        self.certdirs = certdirs
        self.prefixes = prefixes or {}
        self.extra = extra or {}
        self.per_node = per_node or {}
        self.token = token
        self.paths = {}
        self.servers: dict[str, Server] = {}
        self.all_servers = servers if servers is not None else []
        self.killed: set = set()
        for n in self.names:
            self.write_config(n)

    def write_config(self, n: str, extra: dict | None = None) -> Path:
        """(Re)write node n's config: the cluster's extra, per_node[n], then `extra`."""
        peers = [(p, f"{self.cluster_ips[p]}:{self.quic[p]}") for p in self.names if p != n]
        certdir = (self.certdirs or {}).get(n) or self.certdirs["*"]
        port, admin = self.ports[n]
        merged = _merge_config({}, self.extra)
        merged = _merge_config(merged, self.per_node.get(n))
        merged = _merge_config(merged, extra)
        if self.token:
            merged = _merge_config(merged, {"admin": {"token": self.token}})
        self.paths[n] = cluster_node_config(self.tmp_path, n, self.ips[n], self.quic[n], peers, certdir,
                                            port, admin, cluster_ip=self.cluster_ips[n], extra=merged)
        return self.paths[n]

    def start(self, n: str) -> Server:
        port, admin = self.ports[n]
        s = Server(self.paths[n], port, admin, host=self.ips[n], prefix=self.prefixes.get(n, ()))
        self.all_servers.append(s)
        self.servers[n] = s
        self.killed.discard(n)
        s.wait_ready()
        return s

    def start_all(self, timeout: float = 10) -> None:
        for n in self.names:
            self.start(n)
        self.wait_all_up(timeout)

    def admin(self, n: str) -> Admin:
        return Admin(self.servers[n], token=self.token)

    def links(self, n: str) -> dict:
        return cluster_links(self.ips[n], self.ports[n][1], self.token)

    def wait(self, n: str, want: dict, timeout: float = 8) -> float:
        return wait_cluster_links(self.ips[n], self.ports[n][1], want, timeout, self.token)

    def wait_all_up(self, timeout: float = 10) -> None:
        for n in self.names:
            self.wait(n, {p: "up" for p in self.names if p != n}, timeout)

    def kill(self, n: str) -> None:
        """SIGKILL, no goodbye on the links."""
        s = self.servers[n]
        self.killed.add(n)
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(timeout=5)
        s._reader.join(5)

    def crashed(self) -> list[Server]:
        return [s for n, s in self.servers.items() if n not in self.killed and not s.alive()]

    def stop_all(self) -> None:
        for s in self.servers.values():
            s.stop()

    def public_url(self, n: str, path: str = "/ws", session: dict | None = None) -> str:
        url = f"ws://{self.ips[n]}:{self.ports[n][0]}{path}"
        if session is not None:
            url += "?session=" + _urlparse.quote(session["session"], safe="")
        return url


class WsClient:
    """A `websockets.sync` client whose messages a thread collects as (time.monotonic(), text)
    as they arrive, so arrival times do not depend on when the test looks."""

    def __init__(self, ws, name: str = ""):
        self.ws = ws
        self.name = name
        self.messages: list[tuple[float, str | bytes]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.error: BaseException | None = None
        self.closed = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                m = self.ws.recv()
                with self._cond:
                    self.messages.append((time.monotonic(), m))
                    self._cond.notify_all()
        except ConnectionClosed as e:
            self.close_code = e.rcvd.code if e.rcvd is not None else None
            self.close_reason = e.rcvd.reason if e.rcvd is not None else None
        except BaseException as e:  # noqa: BLE001 - reported by the waits
            self.error = e
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def texts(self) -> list:
        with self._cond:
            return [m for _, m in self.messages]

    def wait_for(self, n: int, timeout: float) -> list[tuple[float, str | bytes]]:
        """Wait until at least n messages arrived (or timeout / close); returns them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n and not self.closed.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.messages)

    def expect(self, texts: list, timeout: float = 3.0, what: str = "") -> list[tuple[float, str]]:
        """Exactly `texts` (any order) arrive within `timeout`; returns [(t, text)]."""
        got = self.wait_for(len(texts), timeout)
        assert sorted(m for _, m in got) == sorted(texts), \
            f"{self.name}{' ' + what if what else ''}: expected {texts!r}, got {[m for _, m in got]!r} " \
            f"within {timeout}s (closed: {self.close_code})"
        return got

    def wait_closed(self, timeout: float = 5.0) -> int | None:
        assert self.closed.wait(timeout), f"{self.name}: not closed within {timeout}s"
        return self.close_code

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        self._thread.join(3)


def ws_sync_connect(url: str, session: dict | None, *, timeout: float = 5.0):
    """A `websockets.sync.client` connection with the session cookie (raises InvalidStatus)."""
    from websockets.sync.client import connect

    headers = {"Cookie": session["cookie"]} if session is not None else {}
    # legacy=True: a plain connection object (closed by its owner), not a context manager.
    return connect(url, additional_headers=headers, open_timeout=timeout, close_timeout=2,
                   ping_interval=None, max_size=None, legacy=True)


def ws_sync_status(url: str, session: dict | None, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of an upgrade attempt with the sync client: 101 (closed again) or the refusal."""
    from websockets.exceptions import InvalidStatus

    try:
        ws = ws_sync_connect(url, session, timeout=timeout)
    except InvalidStatus as e:
        return e.response.status_code, (e.response.body or b"").decode("utf-8", "replace").strip()
    ws.close()
    return 101, ""


class ClusterFactory:
    """What the `cluster_factory` fixture yields: make(names, **Cluster kwargs) -> Cluster
    (certificates made for `names`), client(cluster, node, session, path) -> WsClient."""

    def __init__(self, tmp_path: Path, servers: list):
        self.tmp_path = tmp_path
        self.servers = servers
        self.clusters: list[Cluster] = []
        self.clients: list[WsClient] = []
        self._crashed: list[Server] | None = None

    def make(self, names, **kw) -> Cluster:
        if "certdirs" not in kw:
            kw["certdirs"] = {"*": cluster_certs(self.tmp_path, f"certs{len(self.clusters)}", *names)}
        c = Cluster(self.tmp_path, names, servers=self.servers, **kw)
        self.clusters.append(c)
        return c

    def client(self, cluster: Cluster, node: str, session: dict, path: str = "/ws", name: str | None = None,
               timeout: float = 5.0) -> WsClient:
        from websockets.exceptions import InvalidStatus

        url = cluster.public_url(node, path, session)
        try:
            ws = ws_sync_connect(url, session, timeout=timeout)
        except InvalidStatus as e:
            body = (e.response.body or b"").decode("utf-8", "replace").strip()
            raise AssertionError(f"upgrade {url} refused: HTTP {e.response.status_code} {body!r}") from e
        c = WsClient(ws, name or f"client on {node}{path}")
        self.clients.append(c)
        return c

    def teardown(self) -> list[Server]:
        """Close the clients, stop every node; returns the nodes that had exited by themselves.
        Idempotent: a fixture that must stop the nodes early (namespaces) may call it first."""
        if self._crashed is not None:
            return self._crashed
        for c in self.clients:
            c.close()
        self._crashed = [s for c in self.clusters for s in c.crashed()]
        for c in self.clusters:
            c.stop_all()
        return self._crashed


@_pytest.fixture
def cluster_factory(request, tmp_path):
    """Factory fixture (see ClusterFactory). Every node is stopped at teardown; a node that
    exited during the test (other than by Cluster.kill) fails it; stderr goes into reports."""
    if not BINARY.is_file():
        _pytest.fail(f"{BINARY} not found: build with `cargo build --release` first")
    servers: list[Server] = []
    request.node._ringwire_servers = servers
    f = ClusterFactory(tmp_path, servers)
    try:
        yield f
    finally:
        crashed = f.teardown()
    if crashed:
        _pytest.fail("ringwire exited during the test: "
                     + ", ".join(f"{s.host}:{s.port} exit code {s.proc.returncode}" for s in crashed)
                     + "\n--- stderr ---\n" + "\n".join(s.stderr_text() for s in crashed))


def wait_sockets(admin: Admin, context: int, user: int, want_count: int, path: str | None = None,
                 timeout: float = 5.0, what: str = "") -> dict:
    """Poll GET /v1/sockets until its cluster-wide count is want_count; returns the answer."""
    seen = {}

    def ok():
        seen["r"] = admin.sockets(context, user, path)
        return seen["r"].get("count") == want_count

    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"GET /v1/sockets context={context} user={user} path={path} on "
                                 f"{admin.server.host}{' (' + what + ')' if what else ''}: count never "
                                 f"{want_count} within {timeout}s, last {seen['r']}")
        time.sleep(0.05)
    return seen["r"]


def remote_counters(admin: Admin) -> dict:
    """/v1/stats cluster.remote: {"queued","merged","sent","dropped","received"}."""
    st = admin.stats()
    assert isinstance(st.get("cluster"), dict) and isinstance(st["cluster"].get("remote"), dict), \
        f"/v1/stats has no cluster.remote: {st.get('cluster')}"
    return st["cluster"]["remote"]


def counter_delta(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


# ----- push history (raw endpoints with history = true)

async def history_connect(host: str, port: int, session: dict, position=None, path: str = "/ws"):
    """Open a raw history socket with the real `websockets` client; position=(epoch, offset)
    resumes from there (?epoch=..&since=..)."""
    from websockets.asyncio.client import connect

    q = {"session": session["session"]}
    if position is not None:
        q["epoch"], q["since"] = position[0], str(position[1])
    url = f"ws://{host}:{port}{path}?" + _urlparse.urlencode(q)
    return await connect(url, additional_headers={"Cookie": session["cookie"]}, open_timeout=5,
                         close_timeout=2, ping_interval=None, max_size=None)


async def recv_json(ws, timeout: float = 5.0) -> dict:
    msg = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(msg, str), msg
    return _json.loads(msg)


async def until_marker(ws, timeout: float = 10.0):
    """-> (the pushes before the recovery marker, the marker)."""
    pushes = []
    while True:
        m = await recv_json(ws, timeout)
        if m["type"] == "recovery":
            return pushes, m
        assert m["type"] == "push", m
        pushes.append(m)

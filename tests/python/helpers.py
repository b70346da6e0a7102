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
    raise TypeError(f"cannot write {v!r} as TOML")


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
        "server": {"listen": f"{HOST}:{port}", "cores": 2},
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

    def __init__(self, config_path: Path, port: int, admin_port: int | None = None):
        self.config_path = config_path
        self.port = port
        self.admin_port = admin_port
        self.host = HOST
        self.stderr_lines: list[str] = []
        self.ready_line: str | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(config_path)],
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
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

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

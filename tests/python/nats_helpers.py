"""A real nats-server for the tests (Debian's, on a free port, its store in tmp_path) and a
tiny client of the NATS text protocol (CONNECT, PUB, SUB, MSG, PING/PONG), so that the tests
publish and subscribe without another Python package."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from helpers import free_port

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer:
    """nats-server -js on `host` (127.0.0.1 unless given; "0.0.0.0" for nodes in network
    namespaces):`port` (a free one unless given); `max_payload` in bytes (nats-server's default
    is 1 MiB) goes into a config file. Started at once unless start=False."""

    def __init__(self, tmp_path, *, port: int | None = None, max_payload: int | None = None, start: bool = True,
                 host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port()
        self.monitor = free_port()
        self.dir = tmp_path / f"nats-{self.port}"
        self.max_payload = max_payload
        self.proc = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.dir.mkdir(exist_ok=True)
        args = [NATS, "-a", self.host, "-p", str(self.port), "-m", str(self.monitor), "-js", "-sd", str(self.dir)]
        if self.max_payload is not None:
            conf = self.dir / "nats.conf"
            conf.write_text(f"max_payload: {self.max_payload}\n")
            args += ["-c", str(conf)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.04)
        raise AssertionError("nats-server did not listen within 10 s")

    def subscriptions(self, name: str) -> list[list[str]]:
        """The subjects each client connection called `name` subscribes to (monitoring port)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/connz?subs=1", timeout=5) as r:
            conns = json.load(r).get("connections") or []
        return [sorted(c.get("subscriptions_list") or []) for c in conns if c.get("name") == name]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def nats(tmp_path):
    if not os.path.exists(NATS):
        pytest.fail("nats-server is not installed (tests/run.sh installs Debian's nats-server)")
    n = NatsServer(tmp_path)
    yield n
    n.kill()


class NatsClient:
    """A blocking NATS client: publish, request (a reply through an inbox), flush."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.sid = 0
        info = self._line()
        assert info.startswith(b"INFO "), info
        self.info = json.loads(info[5:])
        self._send(b'CONNECT {"verbose":false,"pedantic":false,"name":"ringwire-test"}\r\n')
        self.flush()

    def close(self) -> None:
        self.sock.close()

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _next(self):
        """The next MSG as (sid, payload), or 'PONG'; answers the server's PINGs."""
        while True:
            line = self._line()
            if line == b"PING":
                self._send(b"PONG\r\n")
            elif line == b"PONG":
                return "PONG"
            elif line.startswith(b"-ERR"):
                raise AssertionError(f"nats-server: {line.decode()}")
            elif line.startswith(b"MSG "):
                parts = line.split()
                return int(parts[2]), self._exact(int(parts[-1]))
            # +OK, INFO: nothing to do

    def flush(self) -> None:
        """PING and wait for the PONG: everything sent before has reached nats-server."""
        self._send(b"PING\r\n")
        while self._next() != "PONG":
            pass

    def publish(self, subject: str, payload: bytes | str | dict, reply: str | None = None) -> None:
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        head = f"PUB {subject} {reply + ' ' if reply else ''}{len(data)}\r\n".encode()
        self._send(head + data + b"\r\n")

    def subscribe(self, subject: str) -> int:
        self.sid += 1
        self._send(f"SUB {subject} {self.sid}\r\n".encode())
        return self.sid

    def request(self, subject: str, payload, timeout: float = 5.0):
        """Publish with a reply subject; the reply's JSON."""
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        sid = self.subscribe(inbox)
        self.publish(subject, payload, reply=inbox)
        self.sock.settimeout(timeout)
        while True:
            got = self._next()
            if got != "PONG" and got[0] == sid:
                self._send(f"UNSUB {sid}\r\n".encode())
                return json.loads(got[1])

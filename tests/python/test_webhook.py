"""The optional webhook: socket events POSTed as JSON batches to an HTTP receiver.

Contract under test ([webhook] in the config):
  POST <url> {"node": "...", "events": [{"type": "connect"|"message"|"close", "ts", "socket",
  "endpoint", "path", "context", "user", "session", "text"?, "truncated"?}, ...]}
  at most batch_max events per POST, Authorization: Bearer <token> when configured;
  failed POSTs (5xx, refused connection) are retried max_retries times with backoff, then the
  batch is dropped; a full queue drops events; both counted in /metrics as
  ringwire_webhook_events_dropped_total{reason="retries"|"queue_full"};
  delivered events in ringwire_webhook_events_sent_total. Sockets never wait for the receiver.

Every test runs a real HTTP receiver (http.server in a thread on a free 127.0.0.1 port) and a
real ringwire with a session-authenticated raw endpoint at /ws.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import (BINARY, HOST, Admin, Server, free_port, metric_sum, push_servers,  # noqa: F401
                     recv_text, render_config_ext, run, session_config, wait_until, ws_connect)

SENT = "ringwire_webhook_events_sent_total"
DROPPED = "ringwire_webhook_events_dropped_total"
POST_ERRORS = "ringwire_webhook_post_errors_total"


class Receiver:
    """A webhook receiver: records every POST (headers, parsed JSON).

    fail_first: answer the first N POSTs with `fail_status`.
    stall: when set, POSTs block until release() (bounded by `stall_limit` seconds).
    """

    def __init__(self, fail_first: int = 0, fail_status: int = 500, stall: bool = False,
                 stall_limit: float = 20.0):
        self.posts: list[tuple[dict, object]] = []  # delivered (answered 200)
        self.attempts: list[bytes] = []  # every POST body, failed ones included
        self.lock = threading.Lock()
        self.fail_remaining = fail_first
        self.fail_status = fail_status
        self.released = threading.Event()
        if not stall:
            self.released.set()
        self.stall_limit = stall_limit
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.attempts.append(body)
                    fail = receiver.fail_remaining > 0
                    if fail:
                        receiver.fail_remaining -= 1
                if fail:
                    self._answer(receiver.fail_status, b"try again\n")
                    return
                receiver.released.wait(receiver.stall_limit)
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                with receiver.lock:
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, doc))
                self._answer(200, b"ok\n")

            def _answer(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}/events"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        with self.lock:
            return [e for _, doc in self.posts for e in doc["events"]]

    def batches(self) -> list[list[dict]]:
        with self.lock:
            return [doc["events"] for _, doc in self.posts]

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver_factory():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def webhook_server(push_servers, url: str, **webhook):
    cfg = {"url": url, "flush_ms": 100, "timeout_ms": 2000}
    cfg.update(webhook)
    return push_servers.start(server={"cores": 2}, webhook=cfg)


def of_session(events: list[dict], session: dict) -> list[dict]:
    return [e for e in events if e.get("session") == session["session"]]


def wm(server, name: str, **labels) -> float:
    return metric_sum(server.metrics(), name, **labels)


def test_connect_message_close_arrive_batched(push_servers, receiver_factory):
    rx = receiver_factory()
    server = webhook_server(push_servers, rx.url, batch_max=4, flush_ms=300, token="hook-secret",
                            max_text_bytes=1024)
    admin = Admin(server)
    s = admin.mint(user=42, context=7)
    other = admin.mint(user=43, context=7)
    texts = [f"msg-{i}" for i in range(9)] + ["wörld ✓", "x" * 1023 + "é" + "tail"]

    async def go():
        ws = await ws_connect(server, s, path="/ws/room")
        ws2 = await ws_connect(server, other)
        for t in texts:
            await ws.send(t)
        await ws2.send("from 43")
        # A push still reaches the socket while events flow.
        assert admin.push_ok(context=7, user=42, message="pushed") == 1
        assert await recv_text(ws) == "pushed"
        await ws.close()
        await ws2.close()

    started = time.time() * 1000
    run(go(), timeout=30)
    wait_until(lambda: [e for e in of_session(rx.events(), s) if e["type"] == "close"], timeout=10,
               what="the close event of user 42")
    ended = time.time() * 1000

    mine = of_session(rx.events(), s)
    assert [e["type"] for e in mine] == ["connect"] + ["message"] * len(texts) + ["close"], mine
    for e in mine:
        assert e["context"] == 7 and e["user"] == 42, e
        assert e["path"] == "/ws/room" and e["endpoint"] == "/ws", e
        assert isinstance(e["socket"], str) and e["socket"].isdigit(), e
        assert started - 1000 <= e["ts"] <= ended + 1000, (e, started, ended)
    assert len({e["socket"] for e in mine}) == 1, "one socket, one id"
    assert [e["text"] for e in mine[1:-1]][:-1] == texts[:-1]
    assert all(e["truncated"] is False for e in mine[1:-2])
    # Cut at max_text_bytes = 1024 on a character boundary ("é" is 2 bytes at 1023..1025).
    assert mine[-2]["text"] == "x" * 1023 and mine[-2]["truncated"] is True
    assert "text" not in mine[0] and "text" not in mine[-1]

    theirs = of_session(rx.events(), other)
    assert [e["type"] for e in theirs] == ["connect", "message", "close"], theirs
    assert theirs[1]["text"] == "from 43" and theirs[1]["user"] == 43

    batches = rx.batches()
    assert all(1 <= len(b) <= 4 for b in batches), [len(b) for b in batches]
    assert any(len(b) == 4 for b in batches), f"no full batch: {[len(b) for b in batches]}"
    assert len(batches) < len(rx.events()), "events must be batched"
    with rx.lock:
        for headers, doc in rx.posts:
            assert headers.get("authorization") == "Bearer hook-secret", headers
            assert headers.get("content-type") == "application/json", headers
            assert doc["node"] == "local", doc
    wait_until(lambda: wm(server, SENT) == len(rx.events()), timeout=5, what="sent counter")
    assert wm(server, DROPPED) == 0


def test_event_selection(push_servers, receiver_factory):
    rx = receiver_factory()
    server = webhook_server(push_servers, rx.url, events=["message"])
    admin = Admin(server)
    s = admin.mint(user=5, context=1)

    async def go():
        ws = await ws_connect(server, s)
        await ws.send("only this")
        await ws.close()

    run(go(), timeout=15)
    wait_until(lambda: of_session(rx.events(), s), timeout=10, what="the message event")
    time.sleep(0.5)  # connect/close would have been flushed by now
    assert [e["type"] for e in of_session(rx.events(), s)] == ["message"]


def test_server_errors_are_retried_then_delivered(push_servers, receiver_factory):
    rx = receiver_factory(fail_first=2, fail_status=500)
    server = webhook_server(push_servers, rx.url, max_retries=3, retry_backoff_ms=100)
    admin = Admin(server)
    s = admin.mint(user=8, context=2)

    async def go():
        ws = await ws_connect(server, s)
        await ws.send("retry me")
        await asyncio.to_thread(
            wait_until, lambda: [e for e in of_session(rx.events(), s) if e["type"] == "message"],
            timeout=10, what="the message delivered after two 500s")
        await ws.close()

    run(go(), timeout=20)
    with rx.lock:
        assert len(rx.attempts) >= 3
        first_three = rx.attempts[:3]
    assert first_three[0] == first_three[1] == first_three[2], "the same batch is retried"
    delivered = of_session(rx.events(), s)
    assert [e["text"] for e in delivered if e["type"] == "message"] == ["retry me"], "delivered exactly once"
    # The receiver records a batch just before ringwire reads its 200 and counts it.
    wait_until(lambda: wm(server, SENT) == len(rx.events()), timeout=5, what="sent counter")
    m = server.metrics()
    assert metric_sum(m, POST_ERRORS) == 2, m
    assert metric_sum(m, DROPPED) == 0, m


def test_dead_receiver_drops_after_retries_sockets_keep_working(push_servers):
    # A port held bound but not listening for the whole test: connections to it are refused,
    # and no other server of the suite can take it meanwhile (a free port that one did take
    # answered 404, counted as "rejected" instead of the drop after retries).
    dead = socket.socket()
    dead.bind((HOST, 0))
    try:
        _dead_receiver(push_servers, f"http://{HOST}:{dead.getsockname()[1]}/events")
    finally:
        dead.close()


def _dead_receiver(push_servers, dead_url):
    server = webhook_server(push_servers, dead_url, max_retries=2, retry_backoff_ms=50, timeout_ms=1000)
    admin = Admin(server)
    s = admin.mint(user=9, context=3)

    async def go():
        ws = await ws_connect(server, s)
        for i in range(5):
            await ws.send(f"lost {i}")
        for i in range(3):
            assert admin.push_ok(context=3, user=9, message=f"push {i}") == 1
            assert await recv_text(ws) == f"push {i}"
        # Wait for the drop without blocking the event loop.
        deadline = time.monotonic() + 15
        while await asyncio.to_thread(wm, server, DROPPED, reason="retries") < 1:
            assert time.monotonic() < deadline, f"no drop counted: {server.metrics()}"
            await asyncio.sleep(0.1)
        # Still fully working: pushes, new sockets, admin.
        assert admin.push_ok(context=3, user=9, message="after drops") == 1
        assert await recv_text(ws) == "after drops"
        ws2 = await ws_connect(server, admin.mint(user=10, context=3))
        assert admin.push_ok(context=3, user=10, message="new socket") == 1
        assert await recv_text(ws2) == "new socket"
        await ws.close()
        await ws2.close()

    run(go(), timeout=40)
    m = server.metrics()
    assert metric_sum(m, DROPPED, reason="retries") >= 1, m
    # Every failed batch was attempted 1 + max_retries times.
    assert metric_sum(m, POST_ERRORS) >= 3, m
    assert metric_sum(m, SENT) == 0, m


def test_small_queue_and_stalled_receiver_drop_not_block(push_servers, receiver_factory):
    rx = receiver_factory(stall=True)
    server = webhook_server(push_servers, rx.url, queue_capacity=4, batch_max=2, flush_ms=50,
                            timeout_ms=15000)
    admin = Admin(server)
    s = admin.mint(user=11, context=4)
    n_messages = 300

    async def go():
        ws = await ws_connect(server, s)
        for i in range(n_messages):
            await ws.send(f"m{i}")
        # The receiver holds its first POST: the queue (4) fills and the rest is dropped, while
        # pushes and the admin API stay prompt.
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(wm, server, DROPPED, reason="queue_full") < n_messages - 20:
            assert time.monotonic() < deadline, f"drops not counted: {server.metrics()}"
            await asyncio.sleep(0.05)
        for i in range(5):
            t0 = time.monotonic()
            assert admin.push_ok(context=4, user=11, message=f"p{i}") == 1
            assert await recv_text(ws, timeout=2) == f"p{i}"
            assert time.monotonic() - t0 < 1.0, "push slowed down by the stalled webhook"
        ws2 = await ws_connect(server, admin.mint(user=12, context=4), timeout=2)
        await ws2.close()
        # Queued plus in flight stay within queue_capacity + batch_max.
        queued = await asyncio.to_thread(wm, server, "ringwire_webhook_queue_events")
        assert queued <= 4, queued
        rx.release()
        generated = 1 + n_messages + 2  # connect, messages, connect + close of the second socket

        def accounted():
            m = server.metrics()
            return metric_sum(m, SENT) + metric_sum(m, DROPPED) == generated and \
                metric_sum(m, "ringwire_webhook_queue_events") == 0

        await asyncio.to_thread(wait_until, accounted, timeout=10,
                                what=f"every one of {generated} events sent or counted as dropped")
        await ws.close()

    run(go(), timeout=50)
    m = server.metrics()
    assert metric_sum(m, SENT) == len(rx.events()), m
    assert metric_sum(m, DROPPED, reason="queue_full") >= n_messages - 20, m
    assert metric_sum(m, DROPPED, reason="retries") == 0, m


def test_close_events_flushed_at_shutdown(tmp_path, receiver_factory):
    """SIGTERM: the sockets' close events are still sent (one last drain, no tick wait)."""
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} not found: build with `cargo build --release` first")
    rx = receiver_factory()
    port, admin_port = free_port(), free_port()
    path = tmp_path / "shutdown.toml"
    # flush_ms = 10 s: only the shutdown drain can deliver within the test's bounds.
    path.write_text(render_config_ext(session_config(
        port, admin_port, server={"cores": 2}, webhook={"url": rx.url, "flush_ms": 10000})))
    server = Server(path, port, admin_port)
    try:
        server.wait_ready()
        admin = Admin(server)
        s = admin.mint(user=21, context=6)

        async def go():
            ws = await ws_connect(server, s)
            await ws.send("before shutdown")
            await asyncio.sleep(0.2)
            # SIGTERM while this loop runs, so the client answers the server's 1001 close.
            t0 = time.monotonic()
            assert await asyncio.to_thread(server.stop) == 0
            await ws.wait_closed()
            return time.monotonic() - t0

        took = run(go(), timeout=30)
    finally:
        server.stop()
    types = [e["type"] for e in of_session(rx.events(), s)]
    assert types == ["connect", "message", "close"], (types, server.stderr_text())
    assert took < 5, f"shutdown took {took:.1f}s"


@pytest.mark.parametrize("webhook,needle", [
    ({"url": "https://hooks.example.com/x"}, "TLS webhooks are not supported yet"),
    ({"url": "http://127.0.0.1:9/x", "events": ["connect", "bogus"]}, "bogus"),
    ({"url": "http://127.0.0.1:9/x", "batch_max": 0}, "batch_max"),
    ({"events": ["connect"]}, "webhook.url"),
])
def test_check_rejects_bad_webhook_config(tmp_path, webhook, needle):
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} not found: build with `cargo build --release` first")
    path = tmp_path / "bad.toml"
    path.write_text(render_config_ext(session_config(free_port(), free_port(), webhook=webhook)))
    r = subprocess.run([str(BINARY), "serve", "--config", str(path), "--check"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"accepted: {webhook}\n{out}"
    assert needle in out, f"message does not mention {needle!r}: {out!r}"

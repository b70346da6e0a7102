"""`auth = "proxy"` endpoints: the application admits each client (a connect proxy).

Contract under test (docs/proxy-auth.md, tuning/ringwire.example.toml [proxy]):
  an upgrade (or Engine.IO polling request) of an `auth = "proxy"` endpoint makes ringwire
  GET [proxy] url with the request's Cookie, Authorization and Origin, X-Forwarded-Uri (path
  and query), X-Forwarded-Host and X-Forwarded-Method; a 2xx JSON {"user", "context",
  "expires_at"?, "attributes"?} admits the client as that user (it gets the user's pushes),
  401/403 refuse with that status and the application's reason, a timeout, a 5xx or a
  connection failure answer 503 with Retry-After, and so does a request over max_in_flight
  calls under way. Admitting answers are cached per credentials for cache_ttl_ms. The call is
  made off the cores: a stalled application does not slow the sockets already open. The
  socket closes with 4002 at expires_at, and with 4001 when its session (the webhook's
  `session`) is deleted through the admin API.

The application is a small http.server in this process that can admit, refuse, stall, fail
and count its calls.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time

from helpers import (HOST, Admin, await_stats_sockets, expect_closed_with, free_port, metric_sum,
                     push_servers,  # noqa: F401  (fixture)
                     recv_text, run, upgrade_refusal, wait_until)

BY_REASON = "ringwire_upgrades_refused_by_reason_total"
PROXY_ENDPOINTS = [
    {"path": "/ws", "kind": "raw", "auth": "proxy"},
    {"path": "/socket.io/", "kind": "socketio", "auth": "proxy"},
]
SESSION_KEY = "ab" * 32


class App:
    """The application: GET /auth answers by the request's cookie `sid`.

    `users`: sid -> (status, body dict) ; unknown sids get 401. `stall` (an Event that is
    clear) holds every answer until set (at most 30 s). `calls` counts requests; `seen` keeps
    their headers.
    """

    def __init__(self):
        self.users: dict[str, tuple[int, dict]] = {}
        self.calls = 0
        self.seen: list[dict] = []
        self.stall = threading.Event()
        self.stall.set()
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                with outer.lock:
                    outer.calls += 1
                    outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                outer.stall.wait(30)
                cookie = self.headers.get("Cookie") or ""
                sid = dict(p.strip().split("=", 1) for p in cookie.split(";") if "=" in p).get("sid")
                status, doc = outer.users.get(sid, (401, {"reason": "not logged in"}))
                body = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # ringwire gave up waiting (timeout_ms) and closed

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}/auth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stall.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def start(push_servers, url: str, extra: dict | None = None, **proxy):
    cfg = {"url": url, "timeout_ms": 1500, **proxy}
    return push_servers.start(proxy=cfg, endpoints=PROXY_ENDPOINTS, sessions={"key": SESSION_KEY},
                              **(extra or {}))


async def connect(server, sid: str | None, query: str = "", origin: str | None = None, timeout: float = 5):
    from websockets.asyncio.client import connect as ws_connect

    headers = {"Cookie": f"theme=dark; sid={sid}"} if sid else {}
    url = f"ws://{HOST}:{server.port}/ws" + (f"?{query}" if query else "")
    return await ws_connect(url, additional_headers=headers, origin=origin, open_timeout=timeout,
                            close_timeout=2, ping_interval=None)


async def refused(server, sid: str | None, **kw) -> tuple[int, str, dict]:
    return await upgrade_refusal(connect(server, sid, **kw))


def test_admitted_client_gets_its_users_pushes_and_the_request_is_forwarded(push_servers):
    app = App()
    app.users["alice"] = (200, {"user": 42, "context": 3, "attributes": {"plan": "pro"}})
    app.users["bob"] = (200, {"user": "43", "context": "3"})
    server = start(push_servers, app.url)
    admin = Admin(server)
    try:
        async def go():
            a = await connect(server, "alice", query="room=1", origin=f"http://{HOST}:{server.port}")
            b = await connect(server, "bob")
            await await_stats_sockets(admin, 2)
            assert admin.push_ok(context=3, user=42, message="for alice") == 1
            assert await recv_text(a) == "for alice"
            assert admin.push_ok(context=3, user=43, message="for bob") == 1
            assert await recv_text(b) == "for bob"
            assert admin.sockets(context=3, user=42)["count"] == 1
            await a.close()
            await b.close()

        run(go())
        first = app.seen[0]
        assert first["cookie"] == "theme=dark; sid=alice", first
        assert first["origin"] == f"http://{HOST}:{server.port}", first
        assert first["x-forwarded-uri"] == "/ws?room=1", first
        assert first["x-forwarded-host"] == f"{HOST}:{server.port}", first
        assert first["x-forwarded-method"] == "GET", first
        assert "sec-websocket-key" not in first, "only the named headers are forwarded"
        m = admin.metrics()
        assert metric_sum(m, "ringwire_proxy_auth_calls_total", outcome="admitted") == 2
    finally:
        app.close()


def test_refusals_carry_the_applications_status_and_reason(push_servers):
    app = App()
    app.users["banned"] = (403, {"reason": "account suspended"})
    app.users["text"] = (401, {})
    server = start(push_servers, app.url)
    admin = Admin(server)
    try:
        async def go():
            assert (await refused(server, "banned"))[:2] == (403, "account suspended")
            assert (await refused(server, "stranger"))[:2] == (401, "not logged in")
            assert (await refused(server, None))[:2] == (401, "not logged in")
            # A 401 without a reason gets ringwire's.
            assert (await refused(server, "text"))[:2] == (401, "refused by the application")

        run(go())
        m = admin.metrics()
        assert metric_sum(m, BY_REASON, reason="proxy_forbidden") == 1
        assert metric_sum(m, BY_REASON, reason="proxy_unauthorized") == 3
        assert app.calls == 4, "refusals are not cached"
    finally:
        app.close()


def test_admitting_answers_are_cached_per_credentials(push_servers):
    app = App()
    app.users["alice"] = (200, {"user": 42, "context": 1})
    app.users["carol"] = (200, {"user": 44, "context": 1})
    server = start(push_servers, app.url, cache_ttl_ms=60_000)
    admin = Admin(server)
    try:
        async def go():
            # Concurrent first upgrades share one call; later ones come from the cache.
            first = await asyncio.gather(*(connect(server, "alice") for _ in range(4)))
            more = [await connect(server, "alice", query=f"n={i}") for i in range(4)]
            assert app.calls == 1, app.calls
            carol = await connect(server, "carol")
            assert app.calls == 2, "other credentials are asked for"
            await await_stats_sockets(admin, 9)
            assert admin.push_ok(context=1, user=42, message="x") == 8
            for ws in first + more:
                assert await recv_text(ws) == "x"
                await ws.close()
            await carol.close()

        run(go())
        m = admin.metrics()
        served = {by: metric_sum(m, "ringwire_proxy_auth_requests_total", by=by)
                  for by in ("call", "cache", "joined")}
        assert served["call"] == 2 and served["cache"] + served["joined"] == 7, served
    finally:
        app.close()


def test_application_down_or_failing_answers_503_with_retry_after(push_servers):
    app = App()
    app.users["boom"] = (500, {"error": "db down"})
    app.users["junk"] = (200, {"name": "no user field"})
    down = f"http://{HOST}:{free_port()}/auth"  # nothing listens there
    server = start(push_servers, down, retry_after_secs=7)
    failing = start(push_servers, app.url)
    try:
        async def go():
            t0 = time.monotonic()
            status, body, headers = await refused(server, "alice")
            assert (status, headers.get("retry-after")) == (503, "7"), (status, body, headers)
            assert body == "the application did not answer, retry later"
            assert time.monotonic() - t0 < 1.5, "a refused connection fails at once"
            for sid in ("boom", "junk"):
                status, _, headers = await refused(failing, sid)
                assert status == 503 and headers.get("retry-after") == "5", (sid, status, headers)

        run(go())
        assert metric_sum(Admin(server).metrics(), BY_REASON, reason="proxy_unavailable") == 1
        assert metric_sum(Admin(failing).metrics(), "ringwire_proxy_auth_calls_total", outcome="failed") == 2
    finally:
        app.close()


def test_stalled_application_503_while_open_sockets_keep_their_pace(push_servers):
    """While the application stalls, upgrades wait off the cores (503 at timeout_ms, or at
    once over max_in_flight) and pushes to an open socket keep a low latency."""
    app = App()
    app.users["alice"] = (200, {"user": 42, "context": 1})
    for i in range(40):
        app.users[f"slow{i}"] = (200, {"user": 100 + i, "context": 1})
    server = start(push_servers, app.url, timeout_ms=2500, max_in_flight=16)
    admin = Admin(server)
    latencies: list[float] = []
    baseline: list[float] = []
    try:
        async def stalled(i: int):
            t0 = time.monotonic()
            status, body, headers = await refused(server, f"slow{i}", timeout=10)
            return status, headers.get("retry-after"), time.monotonic() - t0

        async def go():
            ws = await connect(server, "alice")
            await await_stats_sockets(admin, 1)
            loop = asyncio.get_running_loop()

            async def pushes(into: list):
                for i in range(200):
                    t0 = time.perf_counter()
                    n = await loop.run_in_executor(None, lambda: admin.push_ok(context=1, user=42, message=f"m{i}"))
                    assert n == 1
                    assert await recv_text(ws) == f"m{i}"
                    into.append(time.perf_counter() - t0)

            await pushes(baseline)
            app.stall.clear()
            tasks = [asyncio.create_task(stalled(i)) for i in range(24)]
            # Wait until the calls are parked at the application (16 in flight).
            for _ in range(200):
                if app.calls >= 17:
                    break
                await asyncio.sleep(0.01)
            assert app.calls == 17, app.calls
            await pushes(latencies)
            assert app.calls == 17 and not app.stall.is_set(), "the pushes ran while the calls hung"
            results = await asyncio.gather(*tasks)
            app.stall.set()
            timed_out = [r for r in results if r[2] >= 2.0]
            busy = [r for r in results if r[2] < 2.0]
            assert all(r[:2] == (503, "5") for r in results), results
            assert len(timed_out) == 16 and len(busy) == 8, results
            await ws.close()

        run(go(), timeout=60)
        for name, xs in (("before the stall", baseline), ("while the application stalls", latencies)):
            xs.sort()
            p50, p99 = xs[len(xs) // 2], xs[int(len(xs) * 0.99) - 1]
            print(f"push latency {name}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms "
                  f"(max {xs[-1] * 1000:.2f} ms, n={len(xs)})")
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert p99 < 0.05, f"p99 {p99 * 1000:.1f} ms while the application stalls"
        m = admin.metrics()
        assert metric_sum(m, BY_REASON, reason="proxy_unavailable") == 16
        assert metric_sum(m, BY_REASON, reason="proxy_busy") == 8
    finally:
        app.close()


def test_expiry_closes_4002_and_delete_closes_4001(push_servers):
    from test_webhook import Receiver

    rx = Receiver()
    app = App()
    exp = int(time.time()) + 3
    app.users["short"] = (200, {"user": 7, "context": 1, "expires_at": exp})
    app.users["long"] = (200, {"user": 8, "context": 1})
    server = start(push_servers, app.url, extra={"webhook": {"url": rx.url, "flush_ms": 50}})
    admin = Admin(server)
    try:
        async def go():
            short = await connect(server, "short")
            long = await connect(server, "long")
            await await_stats_sockets(admin, 2)
            # The webhook names each socket's session: the application deletes it.
            connects = lambda: [e for e in rx.events() if e["type"] == "connect" and e["user"] == 8]  # noqa: E731
            await asyncio.to_thread(wait_until, connects, 5, 0.05, "the webhook's connect event")
            session = connects()[0]["session"]
            assert admin.revoke(session).status == 204
            await expect_closed_with(long, 4001, "session terminated")
            # Those credentials are refused from then on (the cached answer too).
            assert (await refused(server, "long"))[:2] == (401, "session terminated")
            await expect_closed_with(short, 4002, "session expired", timeout=exp - time.time() + 4)
            assert time.time() >= exp - 0.5
            assert (await refused(server, "short"))[:2] == (401, "session expired")

        run(go(), timeout=30)
    finally:
        app.close()
        rx.close()


def test_socketio_polling_then_websocket_with_the_applications_answer(push_servers):
    from test_socketio import NEWS, Eio, count, push, same_event, ws_open, ws_recv, ws_send

    app = App()
    app.users["alice"] = (200, {"user": 42, "context": 1})
    server = start(push_servers, app.url)
    admin = Admin(server)
    try:
        e = Eio(server, {"session": None, "cookie": "sid=alice"})
        e.connect()
        assert count(admin, 42) == 1
        push(admin, 42)
        assert e.collect(lambda ps: any(same_event(p, NEWS) for p in ps))
        # The websocket upgrade of that sid, with the same cookie.
        ws = ws_open(server, e)
        ws_send(ws, "2probe")
        assert ws_recv(ws) == "3probe"
        ws_send(ws, "5")
        push(admin, 42)
        assert ws_recv(ws) == "42" + NEWS
        assert app.calls == 1, "later requests of the session came from the cache"
        # A refused handshake is answered with the application's status and reason.
        stranger = Eio(server, {"session": None, "cookie": "sid=nobody"})
        r = stranger.get_resp()
        assert (r.status, r.body.strip()) == (401, b"not logged in"), r
    finally:
        app.close()


def test_socketio_polling_session_ends_at_expires_at(push_servers):
    # A polling-only client: the held GET gets the DISCONNECT at expires_at, and the next GET
    # (its answer, cached or not, past its expiry) still gets the close packet.
    from test_socketio import Eio, wait_count

    app = App()
    exp = int(time.time()) + 2
    app.users["alice"] = (200, {"user": 8, "context": 1, "expires_at": exp})
    server = start(push_servers, app.url)
    admin = Admin(server)
    try:
        e = Eio(server, {"session": None, "cookie": "sid=alice"})
        e.connect()
        e.send_get()
        assert e.read_get(timeout=exp - time.time() + 3) == ["41"]
        assert time.time() >= exp - 0.5, "ended before expires_at"
        assert "1" in e.get(timeout=2)
        wait_count(admin, 8, 0)
        r = e.get_resp()
        assert r.status == 401 and r.body.strip() == b"session expired", r
    finally:
        app.close()


def test_upgrade_rate_is_taken_before_the_application_is_asked(push_servers):
    app = App()
    for i in range(12):
        app.users[f"u{i}"] = (200, {"user": 200 + i, "context": 1})
    server = start(push_servers, app.url, extra={"limits": {"upgrade_rate_per_sec": 2}})
    try:
        async def go():
            return [await refused(server, f"u{i}") for i in range(12)]

        results = run(go())
        limited = [r for r in results if r[0] == 503]
        assert limited and all(r[1] == "too many upgrades, retry later" for r in limited), results
        admitted = [r for r in results if r[0] == 101]
        assert len(admitted) + len(limited) == 12, results
        assert app.calls == len(admitted), (app.calls, len(admitted))
    finally:
        app.close()

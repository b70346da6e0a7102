"""Sessions, session-authenticated upgrades, their refusals, and admin API authentication.

Contract under test (admin API + upgrade):
  POST /v1/sessions {"user","context","ttl_secs"} -> 201 {"session","secret","cookie","expires_at"}
  DELETE /v1/sessions/{id} -> 204, the session's sockets close with 4001 "session terminated"
  expiry closes the session's sockets with 4002 "session expired" (within ~1 s of expires_at)
  GET /ws?session=<id> + Cookie: ringwire-secret=<secret> -> 101; refusals are plain HTTP:
  401 session problems, 403 origin / disabled, 429 limits, 400 malformed, each counted once in
  ringwire_upgrades_refused_by_reason_total{reason=...} and ringwire_upgrades_refused_total{status=...}.

Every server runs on its own free 127.0.0.1 ports (push_servers fixture, helpers.py).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import time

import pytest

from helpers import (BINARY, BY_REASON, REFUSAL_REASONS, SESSION_KEY_A, SESSION_KEY_B, Admin, FrameLog,
                     await_stats_sockets, expect_closed_with, expect_silence, expect_status,
                     free_port, json_has, make_config, malformed_upgrade_status,
                     push_servers,  # noqa: F401  (fixture)
                     recv_text, refusal_counts, render_config_ext, run, upgrade_status, ws_connect)

# ====================================================================== 1. sessions & upgrade


def test_mint_session_shape(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    before = time.time()
    s = admin.mint(user=42, context=1, ttl_secs=3600)
    assert isinstance(s["session"], str) and s["session"], s
    assert isinstance(s["secret"], str) and s["secret"], s
    assert s["cookie"] == f"ringwire-secret={s['secret']}", s
    assert isinstance(s["expires_at"], int), s
    assert before + 3600 - 2 <= s["expires_at"] <= time.time() + 3600 + 2, s
    # Two mints for the same user are two different sessions.
    s2 = admin.mint(user=42, context=1, ttl_secs=3600)
    assert s2["session"] != s["session"] and s2["secret"] != s["secret"]


def test_cookie_name_is_configurable(push_servers):
    server = push_servers.start(security={"cookie_name": "rw"})
    admin = Admin(server)
    s = admin.mint(user=1)
    assert s["cookie"] == f"rw={s['secret']}", s

    async def go():
        await expect_status(101, server, s)
        await expect_status(401, server, s, cookie=f"ringwire-secret={s['secret']}")
        await expect_status(101, server, s, cookie=f"other=1; rw={s['secret']}; x=y")

    run(go())


def test_push_reaches_socket_as_one_text_frame(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=42, context=1)

    async def go():
        log = FrameLog()
        ws = await ws_connect(server, s, logger=log.logger)
        try:
            n = admin.push_ok(context=1, user=42, path="/ws", message="hello", coalesce=True)
            assert n == 1, f"push reported {n} sockets, expected 1"
            assert await recv_text(ws) == "hello"
            assert log.data_frames() == [("TEXT", True, 5)], f"frames received: {log.data_frames()}"
            # Default path filter is "*"; a JSON-looking and a non-ASCII payload arrive verbatim.
            assert admin.push_ok(context=1, user=42, message='{"a":[1,2]}') == 1
            assert await recv_text(ws) == '{"a":[1,2]}'
            assert admin.push_ok(context=1, user=42, path="*", message="κόσμε ✓") == 1
            assert await recv_text(ws) == "κόσμε ✓"
            await expect_silence(ws, 0.3)
            frames = log.data_frames()
            assert [(op, fin) for op, fin, _ in frames] == [("TEXT", True)] * 3, \
                f"each push must be one final TEXT frame; frames received: {frames}"
        finally:
            await ws.close()

    run(go())


def test_push_with_non_matching_path_filter_reaches_nothing(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=42, context=1)

    async def go():
        ws = await ws_connect(server, s)
        try:
            for path in ("/socket.io/*", "/w", "/ws/*", "/other"):
                r = admin.push(context=1, user=42, path=path, message=f"not for {path}")
                assert json_has(r, 202, {"sockets": 0}), f"path={path!r}: {r!r}"
            await expect_silence(ws, 0.3)
            # Globs that do match /ws.
            for path in ("/w*", "*ws", "/?s", "*"):
                assert admin.push_ok(context=1, user=42, path=path, message=path) == 1, path
                assert await recv_text(ws) == path
        finally:
            await ws.close()

    run(go())


def test_path_filter_over_sub_paths(push_servers):
    """Socket paths are request paths without the query: /ws and /ws/room1 under the /ws endpoint."""
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=42, context=1)

    async def go():
        root = await ws_connect(server, s, "/ws")
        room = await ws_connect(server, s, "/ws/room1")
        await await_stats_sockets(admin, 2)
        _sockets_ok(admin, 1, 42, 2)
        _sockets_ok(admin, 1, 42, 1, path="/ws")
        _sockets_ok(admin, 1, 42, 1, path="/ws/*")
        _sockets_ok(admin, 1, 42, 1, path="/ws/room1")
        _sockets_ok(admin, 1, 42, 0, path="/ws/room2")
        assert admin.push_ok(context=1, user=42, path="/ws/*", message="room") == 1
        assert await recv_text(room) == "room"
        assert admin.push_ok(context=1, user=42, path="/ws", message="root") == 1
        assert await recv_text(root) == "root"
        assert admin.push_ok(context=1, user=42, path="/ws*", message="both") == 2
        assert await recv_text(root) == "both"
        assert await recv_text(room) == "both"
        await expect_silence(root, 0.3)
        await expect_silence(room, 0.01)
        await root.close()
        await room.close()

    run(go())


def test_session_param_among_other_query_params(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=3, context=1)

    async def go():
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{server.port}/ws?v=2&session={s['session']}&transport=websocket"
        async with connect(url, additional_headers={"Cookie": s["cookie"]}, open_timeout=5) as ws:
            assert admin.push_ok(context=1, user=3, path="/ws", message="q") == 1
            assert await recv_text(ws) == "q"

    run(go())


def test_push_to_other_user_or_context_reaches_nothing(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=42, context=1)

    async def go():
        ws = await ws_connect(server, s)
        try:
            assert admin.push_ok(context=1, user=43, message="user 43") == 0
            assert admin.push_ok(context=2, user=42, message="context 2") == 0
            await expect_silence(ws, 0.3)
        finally:
            await ws.close()

    run(go())


def _sockets_ok(admin: Admin, context: int, user: int, count: int, path: str | None = None) -> dict:
    got = admin.sockets(context, user, path)
    assert got.get("exists") is (count > 0), f"context={context} user={user} path={path}: {got}"
    assert got.get("count") == count, f"context={context} user={user} path={path}: {got}"
    nodes = got.get("nodes")
    assert isinstance(nodes, list), got
    assert sum(n.get("count", 0) for n in nodes) == count, f"nodes must add up to count: {got}"
    if count:
        assert len(nodes) == 1 and isinstance(nodes[0].get("node"), str) and nodes[0]["node"], got
    return got


def test_sockets_query_counts(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    a = admin.mint(user=42, context=1)
    b = admin.mint(user=42, context=1)     # second session of the same user
    other = admin.mint(user=7, context=1)

    async def go():
        _sockets_ok(admin, 1, 42, 0)
        ws1 = await ws_connect(server, a)
        await await_stats_sockets(admin, 1)
        _sockets_ok(admin, 1, 42, 1)
        ws2 = await ws_connect(server, a)
        ws3 = await ws_connect(server, b)
        await await_stats_sockets(admin, 3)
        _sockets_ok(admin, 1, 42, 3)
        _sockets_ok(admin, 1, 42, 3, path="/ws")
        _sockets_ok(admin, 1, 42, 3, path="*")
        _sockets_ok(admin, 1, 42, 0, path="/socket.io/*")
        # Other users and the same user id in another context are unaffected.
        _sockets_ok(admin, 1, 7, 0)
        _sockets_ok(admin, 2, 42, 0)
        wo = await ws_connect(server, other)
        await await_stats_sockets(admin, 4)
        _sockets_ok(admin, 1, 7, 1)
        _sockets_ok(admin, 1, 42, 3)
        # A push to the user reaches all three sockets of both sessions, not the other user.
        assert admin.push_ok(context=1, user=42, message="to 42") == 3
        for ws in (ws1, ws2, ws3):
            assert await recv_text(ws) == "to 42"
        await expect_silence(wo, 0.3)
        # Closing sockets brings the count down.
        await ws1.close()
        await ws3.close()
        await await_stats_sockets(admin, 2)
        _sockets_ok(admin, 1, 42, 1)
        await ws2.close()
        await await_stats_sockets(admin, 1)
        _sockets_ok(admin, 1, 42, 0)
        _sockets_ok(admin, 1, 7, 1)
        await wo.close()
        await await_stats_sockets(admin, 0)
        assert admin.push_ok(context=1, user=42, message="gone") == 0
        assert admin.push_ok(context=1, user=7, message="gone") == 0

    run(go())


def test_delete_session_closes_its_sockets_4001_only(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    a = admin.mint(user=42, context=1)
    b = admin.mint(user=42, context=1)
    other = admin.mint(user=7, context=1)

    async def go():
        a1 = await ws_connect(server, a)
        a2 = await ws_connect(server, a)
        b1 = await ws_connect(server, b)
        o1 = await ws_connect(server, other)
        await await_stats_sockets(admin, 4)
        r = admin.revoke(a["session"])
        assert r.status == 204, f"DELETE /v1/sessions/<id>: expected 204, got {r!r}"
        for ws in (a1, a2):
            await expect_closed_with(ws, 4001, "session terminated")
        await await_stats_sockets(admin, 2)
        _sockets_ok(admin, 1, 42, 1)
        # The same user's other session and another user keep their sockets.
        assert admin.push_ok(context=1, user=42, message="still here") == 1
        assert await recv_text(b1) == "still here"
        assert admin.push_ok(context=1, user=7, message="me too") == 1
        assert await recv_text(o1) == "me too"
        # The revoked session cannot upgrade again (whichever core accepts); the other one can.
        for _ in range(6):
            status, body = await upgrade_status(server, a)
            assert status == 401, f"upgrade with a revoked session: expected 401, got {status} {body!r}"
        await expect_status(101, server, b)
        await b1.close()
        await o1.close()

    run(go())


def test_delete_unknown_session_404(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    for bad in ("not-a-session", "x" * 10, "AAAA"):
        r = admin.revoke(bad)
        assert r.status == 404, f"DELETE /v1/sessions/{bad}: expected 404, got {r!r}"


def test_delete_session_twice_is_harmless(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=1)
    assert admin.revoke(s["session"]).status == 204
    r = admin.revoke(s["session"])
    assert r.status in (204, 404), f"second DELETE: {r!r}"
    assert server.alive()


def test_expiry_closes_4002_then_upgrade_401(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=42, context=1, ttl_secs=2)
    keep = admin.mint(user=42, context=1, ttl_secs=3600)

    async def go():
        ws = await ws_connect(server, s)
        other = await ws_connect(server, keep)
        wait = s["expires_at"] - time.time() + 4
        await expect_closed_with(ws, 4002, "session expired", timeout=max(wait, 1))
        closed_at = time.time()
        assert closed_at >= s["expires_at"] - 0.5, \
            f"closed {s['expires_at'] - closed_at:.2f}s before expires_at {s['expires_at']}"
        assert closed_at <= s["expires_at"] + 1.5, \
            f"closed {closed_at - s['expires_at']:.2f}s after expires_at (contract: within ~1 s)"
        status, body = await upgrade_status(server, s)
        assert status == 401, f"upgrade with an expired session: expected 401, got {status} {body!r}"
        # The user's other (unexpired) session is untouched.
        assert admin.push_ok(context=1, user=42, message="alive") == 1
        assert await recv_text(other) == "alive"
        await other.close()
        await await_stats_sockets(admin, 0)

    run(go(), timeout=20)


def test_expiry_on_every_core(push_servers):
    """Short sessions of 8 users (spread over both cores) all end with 4002; long ones stay."""
    server = push_servers.start(server={"cores": 2})
    admin = Admin(server)

    async def go():
        short = [admin.mint(user=u, context=1, ttl_secs=2) for u in range(8)]
        long = [admin.mint(user=u, context=1, ttl_secs=3600) for u in range(8)]
        ws_short = [await ws_connect(server, s) for s in short]
        ws_long = [await ws_connect(server, s) for s in long]
        stats = await await_stats_sockets(admin, 16)
        assert all(c.get("sockets", 0) > 0 for c in stats["cores"]), f"all on one core: {stats['cores']}"
        deadline = max(s["expires_at"] for s in short) - time.time() + 4
        await asyncio.gather(*(expect_closed_with(ws, 4002, "session expired", timeout=max(deadline, 1))
                               for ws in ws_short))
        await await_stats_sockets(admin, 8)
        for u, ws in enumerate(ws_long):
            assert admin.push_ok(context=1, user=u, message=f"u{u}") == 1
            assert await recv_text(ws) == f"u{u}"
        await asyncio.gather(*(ws.close() for ws in ws_long))

    run(go(), timeout=20)


# ====================================================================== admin API: bad requests


@pytest.mark.parametrize("body", [
    b"{not json",
    b"",
    b"[]",
    b'{"context":1,"ttl_secs":60}',
    b'{"user":1,"ttl_secs":60}',
    b'{"user":1,"context":1}',
    b'{"user":1,"context":1,"ttl_secs":0}',
    b'{"user":1,"context":1,"ttl_secs":2592001}',
    b'{"user":1,"context":1,"ttl_secs":-5}',
    b'{"user":"","context":1,"ttl_secs":60}',
    b'{"user":-1,"context":1,"ttl_secs":60}',
], ids=["bad_json", "empty", "array", "no_user", "no_context", "no_ttl", "ttl_0", "ttl_over_max",
        "ttl_negative", "user_empty_string", "user_negative"])
def test_mint_session_bad_request_400(push_servers, body):
    server = push_servers.start()
    r = Admin(server).request("POST", "/v1/sessions", raw=body)
    assert r.status == 400, f"POST /v1/sessions {body!r}: expected 400, got {r!r}"
    assert isinstance(r.json, dict) and isinstance(r.json.get("error"), str) and r.json["error"], r


def test_mint_session_ttl_bounds_follow_config(push_servers):
    server = push_servers.start(sessions={"max_ttl_secs": 100})
    admin = Admin(server)
    assert admin.request("POST", "/v1/sessions", {"user": 1, "context": 1, "ttl_secs": 100}).status == 201
    r = admin.request("POST", "/v1/sessions", {"user": 1, "context": 1, "ttl_secs": 101})
    assert r.status == 400, f"ttl_secs 101 > max_ttl_secs 100: expected 400, got {r!r}"
    assert admin.request("POST", "/v1/sessions", {"user": 1, "context": 1, "ttl_secs": 1}).status == 201


# ====================================================================== 2. refusals


def _tamper(session_id: str) -> str:
    """Change one base64url character in the middle of a valid id (same length, same alphabet)."""
    i = len(session_id) // 2
    c = session_id[i]
    repl = "A" if c != "A" else "B"
    return session_id[:i] + repl + session_id[i + 1:]


def _random_id_like(session_id: str) -> str:
    return base64.urlsafe_b64encode(os.urandom(len(session_id))).decode().rstrip("=")[: len(session_id)]


async def _refused(server, admin: Admin, want: int, reason: str, connected: int, attempt) -> None:
    """Run `attempt()` (-> (status, body)), check the status, the metrics and that nothing leaked."""
    before = refusal_counts(admin)
    status, body = await attempt()
    assert status == want, f"expected {want} ({reason}), got {status} {body!r}"
    if status != 101:
        assert body and "\n" not in body.strip(), f"refusal body must be one line, got {body!r}"
    await await_stats_sockets(admin, connected)
    after = refusal_counts(admin)
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert after[reason] - before[reason] == 1, \
        f"{BY_REASON}{{reason=\"{reason}\"}} must grow by exactly 1; changes: {delta}"
    assert after["_all_reasons"] - before["_all_reasons"] == 1, f"exactly one refusal counted; changes: {delta}"
    assert after[f"status:{want}"] - before[f"status:{want}"] == 1, \
        f"ringwire_upgrades_refused_total{{status=\"{want}\"}} must grow by 1; changes: {delta}"
    m = admin.metrics()
    hs = sum(v for k, v in m.items() if k.startswith("ringwire_handshakes_in_progress"))
    assert hs == 0, f"handshakes still in progress after a refusal: {hs}"


def test_metrics_expose_every_refusal_reason(push_servers):
    server = push_servers.start()
    m = Admin(server).metrics()
    missing = [r for r in REFUSAL_REASONS if f'{BY_REASON}{{reason="{r}"}}' not in m]
    assert not missing, f"reasons without a series in /metrics: {missing}"


def test_refusals_session_problems_401(push_servers):
    """No session param, unknown (random / tampered), wrong secret, missing cookie, expired, revoked."""
    server = push_servers.start()
    admin = Admin(server)
    good = admin.mint(user=1, context=1)
    victim = admin.mint(user=2, context=1)
    short = admin.mint(user=3, context=1, ttl_secs=1)

    async def go():
        keep = await ws_connect(server, good)       # one real socket: stats must stay at 1
        await await_stats_sockets(admin, 1)

        await _refused(server, admin, 401, "missing_session", 1,
                       lambda: upgrade_status(server, good, session_id=None))
        await _refused(server, admin, 401, "unknown_session", 1,
                       lambda: upgrade_status(server, good, session_id="nonsense"))
        await _refused(server, admin, 401, "unknown_session", 1,
                       lambda: upgrade_status(server, good, session_id=_random_id_like(good["session"])))
        await _refused(server, admin, 401, "unknown_session", 1,
                       lambda: upgrade_status(server, good, session_id=_tamper(good["session"])))
        await _refused(server, admin, 401, "wrong_secret", 1,
                       lambda: upgrade_status(server, good, cookie=f"ringwire-secret={victim['secret']}"))
        await _refused(server, admin, 401, "wrong_secret", 1,
                       lambda: upgrade_status(server, good, cookie="ringwire-secret="))
        await _refused(server, admin, 401, "wrong_secret", 1,
                       lambda: upgrade_status(server, good, cookie=None))
        await _refused(server, admin, 401, "wrong_secret", 1,
                       lambda: upgrade_status(server, good, cookie=f"other-cookie={good['secret']}"))
        # Revoked.
        assert admin.revoke(victim["session"]).status == 204
        await _refused(server, admin, 401, "session_revoked", 1, lambda: upgrade_status(server, victim))
        # Expired.
        await asyncio.sleep(max(0.0, short["expires_at"] - time.time() + 1.1))
        await _refused(server, admin, 401, "session_expired", 1, lambda: upgrade_status(server, short))

        # After all that, the legitimate socket still works and a legitimate upgrade succeeds.
        assert admin.push_ok(context=1, user=1, message="ok") == 1
        assert await recv_text(keep) == "ok"
        await expect_status(101, server, good)
        await keep.close()
        await await_stats_sockets(admin, 0)

    run(go(), timeout=40)


def test_refusal_malformed_upgrade_400(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=1)

    async def attempt():
        status, body = await asyncio.to_thread(malformed_upgrade_status, server, f"/ws?session={s['session']}", s["cookie"])
        return status, body.decode("utf-8", "replace").strip()

    run(_refused(server, admin, 400, "bad_request", 0, attempt))


def test_refusal_unknown_path_404(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    s = admin.mint(user=1)
    run(_refused(server, admin, 404, "not_found", 0, lambda: upgrade_status(server, s, path="/nope")))


def test_refusal_bad_origin_403(push_servers):
    server = push_servers.start(security={"allowed_origins": ["https://app.example"]})
    admin = Admin(server)
    s = admin.mint(user=1)

    async def go():
        await _refused(server, admin, 403, "origin", 0,
                       lambda: upgrade_status(server, s, origin="https://evil.example"))
        await _refused(server, admin, 403, "origin", 0,
                       lambda: upgrade_status(server, s, origin="https://app.example.evil.example"))
        ws = await ws_connect(server, s, origin="https://app.example")
        await await_stats_sockets(admin, 1)
        assert admin.push_ok(context=1, user=1, message="from app") == 1
        assert await recv_text(ws) == "from app"
        await ws.close()

    run(go())


CASCADE = {
    "enabled": True,
    "context_sets": [{"name": "beta", "contexts": [2, 3], "enabled": False}],
    "contexts": {"3": True, "4": False},
    "users": {"1:42": False, "4:7": True, "2:9": True},
}


@pytest.mark.parametrize("context,user,expected", [
    (1, 1, 101),    # server default
    (1, 42, 403),   # user level disables
    (2, 1, 403),    # context set disables
    (2, 9, 101),    # user override enables inside a disabled context set
    (3, 1, 101),    # context beats its context set
    (4, 1, 403),    # context level disables
    (4, 7, 101),    # user override enables inside a disabled context
], ids=["server", "user_off", "set_off", "user_on_in_set", "context_on_over_set", "context_off",
        "user_on_in_context"])
def test_cascade(push_servers, context, user, expected):
    server = push_servers.start(websockets=CASCADE)
    admin = Admin(server)
    s = admin.mint(user=user, context=context)

    async def go():
        if expected == 403:
            await _refused(server, admin, 403, "disabled", 0, lambda: upgrade_status(server, s))
        else:
            ws = await ws_connect(server, s)
            assert admin.push_ok(context=context, user=user, message="on") == 1
            assert await recv_text(ws) == "on"
            await ws.close()

    run(go())


def test_cascade_server_disabled(push_servers):
    server = push_servers.start(websockets={"enabled": False, "contexts": {"5": True}})
    admin = Admin(server)

    async def go():
        await _refused(server, admin, 403, "disabled", 0, lambda: upgrade_status(server, admin.mint(user=1, context=1)))
        await expect_status(101, server, admin.mint(user=1, context=5))

    run(go())


def test_refusal_per_user_limit_429(push_servers):
    server = push_servers.start(limits={"max_sockets_per_user": 2})
    admin = Admin(server)
    a = admin.mint(user=42, context=1)
    b = admin.mint(user=42, context=1)
    other = admin.mint(user=43, context=1)
    other_ctx = admin.mint(user=42, context=2)

    async def go():
        w1 = await ws_connect(server, a)
        w2 = await ws_connect(server, a)
        await await_stats_sockets(admin, 2)
        await _refused(server, admin, 429, "user_limit", 2, lambda: upgrade_status(server, a))
        # The limit is per user, not per session.
        await _refused(server, admin, 429, "user_limit", 2, lambda: upgrade_status(server, b))
        # Another user, and the same user id in another context, are not limited by it.
        wo = await ws_connect(server, other)
        wc = await ws_connect(server, other_ctx)
        await await_stats_sockets(admin, 4)
        # Closing one socket frees a slot (nothing leaked by the refusals).
        await w1.close()
        await await_stats_sockets(admin, 3)
        w3 = await ws_connect(server, b)
        await await_stats_sockets(admin, 4)
        assert admin.push_ok(context=1, user=42, message="two") == 2
        assert await recv_text(w2) == "two"
        assert await recv_text(w3) == "two"
        for w in (w2, w3, wo, wc):
            await w.close()
        await await_stats_sockets(admin, 0)

    run(go())


def test_refusal_upgrade_rate_503_retry_after(push_servers):
    # One core: the rate is split between cores (a bucket of 1 each with 2 cores), and which
    # core accepts a connection is the kernel's reuseport hash, so with 2 cores the first
    # upgrades could all land on one core (seen once in a loaded run: [101, 503 x 7]).
    server = push_servers.start(server={"cores": 1}, limits={"upgrade_rate_per_sec": 2})
    admin = Admin(server)
    s = admin.mint(user=1)

    async def go():
        before = refusal_counts(admin)
        results = [await upgrade_status(server, s) for _ in range(8)]
        statuses = [r[0] for r in results]
        assert set(statuses) <= {101, 503}, results
        refused = statuses.count(503)
        assert 1 <= refused, f"8 upgrades in a burst with upgrade_rate_per_sec = 2: {statuses}"
        assert statuses.count(101) >= 2, f"the first upgrades fit in the rate: {statuses}"
        after = refusal_counts(admin)
        assert after["rate_limit"] - before["rate_limit"] == refused, (before, after)
        assert after["status:503"] - before["status:503"] == refused, (before, after)
        await await_stats_sockets(admin, 0)

    run(go())


def test_refusal_server_full_503(push_servers):
    # One core: max_connections is split between cores (per-core admission), see the report.
    server = push_servers.start(server={"cores": 1}, limits={"max_connections": 2})
    admin = Admin(server)
    s = admin.mint(user=1)

    async def go():
        w1 = await ws_connect(server, s)
        w2 = await ws_connect(server, s)
        await await_stats_sockets(admin, 2)
        await _refused(server, admin, 503, "server_full", 2, lambda: upgrade_status(server, s))
        await w1.close()
        await await_stats_sockets(admin, 1)
        w3 = await ws_connect(server, s)
        assert admin.push_ok(context=1, user=1, message="fits") == 2
        assert await recv_text(w2) == "fits"
        assert await recv_text(w3) == "fits"
        await w2.close()
        await w3.close()

    run(go())


def test_session_from_server_with_other_key_refused(push_servers):
    a = push_servers.start(sessions={"key": SESSION_KEY_A})
    b = push_servers.start(sessions={"key": SESSION_KEY_B})
    s = Admin(a).mint(user=1)
    run(_refused(b, Admin(b), 401, "unknown_session", 0, lambda: upgrade_status(b, s)))


def test_session_from_server_with_random_key_refused(push_servers):
    a = push_servers.start()
    b = push_servers.start()
    s = Admin(a).mint(user=1)
    run(_refused(b, Admin(b), 401, "unknown_session", 0, lambda: upgrade_status(b, s)))


def test_session_accepted_by_server_with_same_key(push_servers):
    a = push_servers.start(sessions={"key": SESSION_KEY_A})
    b = push_servers.start(sessions={"key": SESSION_KEY_A})
    s = Admin(a).mint(user=42, context=1)
    admin_b = Admin(b)

    async def go():
        ws = await ws_connect(b, s)
        await await_stats_sockets(admin_b, 1)
        _sockets_ok(admin_b, 1, 42, 1)
        assert admin_b.push_ok(context=1, user=42, message="via b") == 1
        assert await recv_text(ws) == "via b"
        # Server A has no socket for it.
        assert Admin(a).push_ok(context=1, user=42, message="via a") == 0
        await expect_silence(ws, 0.3)
        await ws.close()

    run(go())


# ====================================================================== 5. admin auth


def test_admin_token_required(push_servers):
    server = push_servers.start(admin={"token": "t0ps3cret-t0ps3cret"})
    anon = Admin(server)
    wrong = Admin(server, token="wrong")
    right = Admin(server, token="t0ps3cret-t0ps3cret")
    body = {"user": 42, "context": 1, "ttl_secs": 3600}
    for who, client in (("no token", anon), ("wrong token", wrong)):
        r = client.request("POST", "/v1/sessions", body)
        assert r.status == 401, f"POST /v1/sessions with {who}: expected 401, got {r!r}"
    r = right.request("POST", "/v1/sessions", body)
    assert r.status == 201, f"POST /v1/sessions with the right token: expected 201, got {r!r}"
    sid = r.json["session"]
    # Almost-right tokens.
    for hdr in ("Bearer t0ps3cret-t0ps3cre", "Bearer t0ps3cret-t0ps3cretX", "t0ps3cret-t0ps3cret",
                "Basic t0ps3cret-t0ps3cret", "Bearer", "Bearer "):
        r = anon.request("POST", "/v1/sessions", body, headers={"Authorization": hdr})
        assert r.status == 401, f"Authorization: {hdr!r}: expected 401, got {r!r}"
    # Every /v1/* route and /metrics.
    routes = [
        ("GET", "/metrics", None),
        ("GET", "/v1/stats", None),
        ("GET", "/v1/sockets?context=1&user=42", None),
        ("POST", "/v1/push", {"context": 1, "user": 42, "message": "x"}),
        ("POST", "/v1/push/batch", {"pushes": [{"context": 1, "user": 42, "message": "x"}]}),
        ("POST", "/v1/config/reload", None),
        ("DELETE", f"/v1/sessions/{sid}", None),
    ]
    for method, path, b in routes:
        for who, client in (("no token", anon), ("wrong token", wrong)):
            r = client.request(method, path, b)
            assert r.status == 401, f"{method} {path} with {who}: expected 401, got {r!r}"
    for method, path, b in routes:
        r = right.request(method, path, b)
        assert r.status in (200, 202, 204), f"{method} {path} with the right token: {r!r}"


def _check(tmp_path, cfg: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"check-{time.monotonic_ns()}.toml"
    path.write_text(render_config_ext(cfg))
    return subprocess.run([str(BINARY), "serve", "--config", str(path), "--check"],
                          capture_output=True, text=True, timeout=20)


def test_check_refuses_public_admin_without_token(tmp_path):
    port = free_port()
    cfg = make_config(port, free_port(), endpoints=[{"path": "/ws", "kind": "raw"}])
    cfg["admin"] = {"listen": f"0.0.0.0:{free_port()}"}
    r = _check(tmp_path, cfg)
    assert r.returncode != 0, f"--check accepted admin.listen 0.0.0.0 without a token: {r.stdout}{r.stderr}"
    assert "token" in (r.stdout + r.stderr), r.stderr
    cfg["admin"]["token"] = "t" * 16  # the shortest accepted (tests/python/test_admin_hardening.py)
    r = _check(tmp_path, cfg)
    assert r.returncode == 0, f"--check refused admin.listen 0.0.0.0 with a token: {r.stdout}{r.stderr}"


def test_check_accepts_sessions_and_websockets_sections(tmp_path):
    cfg = make_config(free_port(), free_port(), endpoints=[{"path": "/ws", "kind": "raw"}],
                      sessions={"key": SESSION_KEY_A, "max_ttl_secs": 2592000},
                      websockets=CASCADE,
                      security={"allowed_origins": ["https://app.example"], "cookie_name": "ringwire-secret"})
    cfg["limits"].update({"max_sockets_per_user": 64, "upgrade_rate_per_sec": 0})
    r = _check(tmp_path, cfg)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}"


@pytest.mark.parametrize("section,table", [
    ("sessions", {"key": "abc"}),                 # not 64 hex chars
    ("sessions", {"key": "zz" * 32}),
    ("sessions", {"bogus": 1}),
    ("websockets", {"users": {"x": True}}),       # not context:user
    ("websockets", {"contexts": {"abc": True}}),  # not a context id
    ("websockets", {"bogus": True}),
], ids=["short_key", "non_hex_key", "sessions_unknown", "bad_user_key", "bad_context_key",
        "websockets_unknown"])
def test_check_rejects_bad_sessions_websockets(tmp_path, section, table):
    cfg = make_config(free_port(), free_port(), endpoints=[{"path": "/ws", "kind": "raw"}])
    cfg[section] = table
    r = _check(tmp_path, cfg)
    assert r.returncode != 0, f"--check accepted [{section}] {table}: {r.stdout}"

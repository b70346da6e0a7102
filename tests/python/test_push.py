"""Push service: many users over both cores, single and batch pushes, exact delivery.

Contract under test:
  POST /v1/push {"context","user","path","message"} -> 202 {"sockets":N}
  POST /v1/push/batch {"pushes":[...]} -> 202 {"pushes":P,"sockets":N}
  on a raw endpoint each pushed message arrives as one text frame with exactly that text;
  GET /v1/stats -> {"sockets":N,"cores":[{"core":0,"sockets":..},...],"endpoints":{"/ws":N}}
"""

from __future__ import annotations

import asyncio
import random

from helpers import (Admin, FrameLog, json_has, metric_sum, await_stats_sockets, expect_silence, push_servers,  # noqa: F401
                     recv_text, run, ws_connect)

N_USERS = 40


def _users():
    """40 (context, user) pairs: the same 20 user ids in contexts 1 and 2 (they must not mix),
    each with 1-3 sockets, spread over one or two sessions."""
    rng = random.Random(20261121)
    out = []
    for i in range(N_USERS):
        context, user = 1 + i % 2, 100 + i // 2
        out.append((context, user, rng.randint(1, 3)))
    return out


async def _open_all(server, admin):
    """-> {(context, user): [ws, ...]}"""
    sockets = {}
    for context, user, n in _users():
        s1 = admin.mint(user=user, context=context)
        s2 = admin.mint(user=user, context=context)
        sessions = [s1 if k % 2 == 0 else s2 for k in range(n)]
        sockets[(context, user)] = list(await asyncio.gather(*(ws_connect(server, s) for s in sessions)))
    return sockets


async def _expect_exactly(sockets, expected: dict, ordered: bool):
    """Every socket of (context, user) receives exactly expected[(context, user)], nothing else."""

    async def one(key, idx, ws):
        want = expected.get(key, [])
        got = []
        try:
            for _ in want:
                got.append(await recv_text(ws, timeout=10))
        except (asyncio.TimeoutError, TimeoutError):
            raise AssertionError(f"socket {idx} of context={key[0]} user={key[1]}: got {got}, expected {want}")
        if ordered:
            assert got == want, f"socket {idx} of {key}: got {got}, expected {want}"
        else:
            assert sorted(got) == sorted(want), f"socket {idx} of {key}: got {got}, expected {want}"
        await expect_silence(ws, 0.3)

    await asyncio.gather(*(one(key, i, ws) for key, wss in sockets.items() for i, ws in enumerate(wss)))


def test_many_users_over_two_cores_exact_delivery(push_servers):
    server = push_servers.start(server={"cores": 2})
    admin = Admin(server)

    async def go():
        sockets = await _open_all(server, admin)
        total = sum(len(v) for v in sockets.values())
        stats = await await_stats_sockets(admin, total)
        cores = stats.get("cores")
        assert isinstance(cores, list) and len(cores) == 2, stats
        per_core = [c.get("sockets") for c in cores]
        assert sum(per_core) == total, f"per-core sockets {per_core} must add up to {total}"
        assert all(n > 0 for n in per_core), f"{total} sockets of {N_USERS} users all on one core: {per_core}"

        # Round 1: one /v1/push per user, each with its own message.
        expected = {}
        for (context, user), wss in sockets.items():
            msg = f"single:{context}:{user}"
            n = admin.push_ok(context=context, user=user, path="/ws", message=msg)
            assert n == len(wss), f"push to context={context} user={user}: sockets {n}, expected {len(wss)}"
            expected[(context, user)] = [msg]
        await _expect_exactly(sockets, expected, ordered=True)

        # Round 2: one batch with a message per user plus pushes that reach nobody.
        pushes, expected = [], {}
        for (context, user), wss in sockets.items():
            msg = f"batch:{context}:{user}"
            pushes.append({"context": context, "user": user, "path": "/ws", "message": msg})
            expected[(context, user)] = [msg]
        pushes.append({"context": 1, "user": 100, "path": "/socket.io/*", "message": "nobody (path)"})
        pushes.append({"context": 3, "user": 100, "message": "nobody (context)"})
        pushes.append({"context": 1, "user": 99999, "message": "nobody (user)"})
        r = admin.push_batch(pushes)
        assert r.status == 202, f"POST /v1/push/batch: expected 202, got {r!r}"
        assert json_has(r, 202, {"pushes": len(pushes), "sockets": total}), \
            f"batch answer {r.json}, expected pushes={len(pushes)} sockets={total}"
        await _expect_exactly(sockets, expected, ordered=True)

        # Round 3: batch with several messages for some users (random order of users).
        rng = random.Random(7)
        pushes, expected, queued = [], {}, 0
        keys = list(sockets)
        for k in range(120):
            context, user = rng.choice(keys)
            msg = f"multi:{k}:{context}:{user}"
            pushes.append({"context": context, "user": user, "message": msg})
            expected.setdefault((context, user), []).append(msg)
            queued += len(sockets[(context, user)])
        r = admin.push_batch(pushes)
        assert json_has(r, 202, {"pushes": 120, "sockets": queued}), \
            f"batch of 120: expected 202 pushes=120 sockets={queued}, got {r!r}"
        await _expect_exactly(sockets, expected, ordered=False)

        # Per-user socket counts agree.
        for (context, user), wss in sockets.items():
            got = admin.sockets(context, user)
            assert got.get("exists") is True and got.get("count") == len(wss), f"{(context, user)}: {got}"

        await asyncio.gather(*(ws.close() for wss in sockets.values() for ws in wss))
        await await_stats_sockets(admin, 0)

    run(go(), timeout=90)


def test_push_to_user_on_both_cores_reaches_all(push_servers):
    """One user with many sockets: the sockets of one user are all reached whatever core owns them."""
    server = push_servers.start(server={"cores": 2})
    admin = Admin(server)

    async def go():
        sessions = [admin.mint(user=5, context=9) for _ in range(4)]
        wss = list(await asyncio.gather(*(ws_connect(server, sessions[i % 4]) for i in range(12))))
        await await_stats_sockets(admin, 12)
        for k in range(5):
            assert admin.push_ok(context=9, user=5, message=f"m{k}") == 12
        for ws in wss:
            assert [await recv_text(ws) for _ in range(5)] == [f"m{k}" for k in range(5)]
            await expect_silence(ws, 0.05)
        await asyncio.gather(*(ws.close() for ws in wss))

    run(go())


def test_large_push_message_arrives_intact(push_servers):
    server = push_servers.start()
    admin = Admin(server)

    async def go():
        log = FrameLog()
        ws = await ws_connect(server, admin.mint(user=1), logger=log.logger)
        for size in (125, 126, 65535, 65536, 1 << 20):
            msg = ("0123456789abcdef" * (size // 16 + 1))[:size]
            log.clear()
            assert admin.push_ok(context=1, user=1, message=msg) == 1
            got = await recv_text(ws, timeout=10)
            assert got == msg, f"size {size}: got {len(got)} chars"
            frames = [(op, fin) for op, fin, _ in log.data_frames()]
            assert frames == [("TEXT", True)], f"size {size}: expected one final TEXT frame, got {frames}"
        await ws.close()

    run(go())


def test_batch_answer_counts(push_servers):
    server = push_servers.start()
    admin = Admin(server)

    async def go():
        a = await ws_connect(server, admin.mint(user=1))
        b = await ws_connect(server, admin.mint(user=2))
        r = admin.push_batch([
            {"context": 1, "user": 1, "message": "a"},
            {"context": 1, "user": 2, "path": "/ws", "message": "b"},
            {"context": 1, "user": 2, "path": "/socket.io/*", "message": "none"},
        ])
        assert json_has(r, 202, {"pushes": 3, "sockets": 2}), r
        assert await recv_text(a) == "a"
        assert await recv_text(b) == "b"
        await expect_silence(a, 0.3)
        await expect_silence(b, 0.01)
        await a.close()
        await b.close()

    run(go())


def test_stats_per_core_and_endpoints(push_servers):
    """GET /v1/stats: {"sockets":N,"cores":[{"core":i,"sockets":..},..],"endpoints":{"/ws":N}}."""
    server = push_servers.start(server={"cores": 2})
    admin = Admin(server)

    async def go():
        wss = [await ws_connect(server, admin.mint(user=u)) for u in range(10)]
        stats = await await_stats_sockets(admin, 10)
        cores = stats.get("cores")
        assert isinstance(cores, list) and [c.get("core") for c in cores] == [0, 1], stats
        assert sum(c.get("sockets", 0) for c in cores) == 10, stats
        assert isinstance(stats.get("endpoints"), dict), f"/v1/stats has no \"endpoints\" object: {stats}"
        assert stats["endpoints"].get("/ws") == 10, f"endpoints: {stats['endpoints']}"
        m = admin.metrics()
        per_core = [metric_sum(m, "ringwire_sockets", core=str(i)) for i in range(2)]
        assert per_core == [c["sockets"] for c in cores], f"ringwire_sockets{{core=..}} {per_core} vs stats {cores}"
        await asyncio.gather(*(ws.close() for ws in wss))
        stats = await await_stats_sockets(admin, 0)
        assert stats["endpoints"].get("/ws") == 0, f"endpoints after closing all: {stats['endpoints']}"

    run(go())


def test_message_may_be_any_json_value(push_servers):
    """`message` is a string (sent as it is) or any other JSON value (sent as its JSON text),
    in single and batch pushes (null too: the JSON text `null`); a missing message is a 400."""
    import json

    server = push_servers.start()
    admin = Admin(server)

    async def go():
        ws = await ws_connect(server, admin.mint(user=5))
        values = [{"type": "mail", "id": 7, "tags": ["a", "é"], "b": {"z": 1, "a": 2}}, [1, 2.5, None], 42, True, None, "plain text"]
        for v in values:
            assert admin.push_ok(context=1, user=5, message=v) == 1
            got = await recv_text(ws, timeout=10)
            if isinstance(v, str):
                assert got == v
            else:
                # The text as sent less the whitespace between tokens: key order (not sorted
                # here), number spelling and escapes are kept.
                assert got == json.dumps(v, separators=(",", ":")), got
        r = admin.request("POST", "/v1/push/batch", {"pushes": [
            {"context": 1, "user": 5, "message": {"n": 1}}, {"context": 1, "user": 5, "message": "two"}]})
        assert r.status == 202, r
        assert json.loads(await recv_text(ws, timeout=10)) == {"n": 1}
        assert await recv_text(ws, timeout=10) == "two"
        r = admin.request("POST", "/v1/push", {"context": 1, "user": 5})
        assert r.status == 400 and b"missing field `message`" in r.body, r
        await expect_silence(ws, 0.3)
        await ws.close()

    run(go())

"""Push history and recovery on a raw endpoint (memory store), with the real `websockets` client.

Contract under test (README "Recovery"):
  [history] enabled, size, ttl_secs, max_bytes_per_core; [[endpoints]] history = true
  each push arrives as {"type":"push","epoch":"<16 hex>","offset":N,"data":"<text>"};
  once per connection, after the replay and before live pushes:
    {"type":"recovery","resumed":B,"recovered":B,"epoch":..,"offset":N,"replayed":K}
  resume with ?epoch=<16 hex>&since=<offset>; malformed -> 400 "bad resume position ..."
  POST /v1/push answers {"position":{"epoch","offset"}}
  /metrics: ringwire_history_resumes_total{outcome=...}, ringwire_history_appended_total, ...
"""

from __future__ import annotations

import asyncio
import threading
import time

from helpers import (HOST, SESSION_KEY_A, Admin, expect_silence, history_connect, metric_sum, push_servers,  # noqa: F401
                     recv_json, run, until_marker)

HISTORY_ENDPOINTS = [{"path": "/ws", "kind": "raw", "history": True}, {"path": "/plain", "kind": "raw"}]


def start(push_servers, **history):
    cfg = {"size": 100, "ttl_secs": 300}
    cfg.update(history)
    return push_servers.start(endpoints=HISTORY_ENDPOINTS, history=cfg, sessions={"key": SESSION_KEY_A})


async def connect(server, session, position=None, path="/ws"):
    """Open a socket; with position=(epoch, offset) it resumes from there."""
    return await history_connect(HOST, server.port, session, position, path)


def push(admin, user, message, context=1):
    r = admin.push(context=context, user=user, message=message)
    assert r.status == 202 and "position" in r.json, r
    return r.json


def test_a_client_that_lost_its_connection_gets_the_50_missed_pushes_in_order_then_live(push_servers):
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=7)

    async def go():
        ws = await connect(server, s)
        replayed, marker = await until_marker(ws)
        assert replayed == [] and marker["resumed"] is False and marker["recovered"] is False, marker
        assert len(marker["epoch"]) == 16
        answer = push(admin, 7, "live-0")
        m = await recv_json(ws)
        assert m == {"type": "push", "epoch": marker["epoch"], "offset": answer["position"]["offset"],
                     "data": "live-0"}, (m, answer)
        assert answer["position"]["epoch"] == marker["epoch"] and answer["sockets"] == 1
        assert m["offset"] > marker["offset"]
        last = (m["epoch"], m["offset"])
        ws.transport.abort()  # a TCP reset: no close handshake
        await asyncio.sleep(0.2)
        sent = []
        for i in range(50):
            a = push(admin, 7, f"away-{i}")
            push(admin, 8, f"other-user-{i}")  # interleaved offsets of another user
            sent.append((a["position"]["offset"], f"away-{i}"))
        assert [o for o, _ in sent] == sorted(o for o, _ in sent)
        ws2 = await connect(server, s, last)
        replayed, marker = await until_marker(ws2)
        assert [(p["offset"], p["data"]) for p in replayed] == sent
        assert marker == {"type": "recovery", "resumed": True, "recovered": True, "epoch": last[0],
                          "offset": sent[-1][0], "replayed": 50}, marker
        push(admin, 7, "after")
        m = await recv_json(ws2)
        assert m["data"] == "after" and m["offset"] > sent[-1][0]
        await expect_silence(ws2, 0.3)
        # A resume from the last position: nothing more, recovered.
        await ws2.close()
        ws3 = await connect(server, s, (m["epoch"], m["offset"]))
        replayed, marker = await until_marker(ws3)
        assert replayed == [] and marker["recovered"] is True and marker["offset"] == m["offset"]
        await ws3.close()

    run(go(), timeout=60)
    metrics = admin.metrics()
    assert metric_sum(metrics, "ringwire_history_resumes_total", outcome="recovered") == 2
    assert metric_sum(metrics, "ringwire_history_replayed_total") == 50
    assert metric_sum(metrics, "ringwire_history_appended_total") == 102


def test_a_resume_replays_only_the_pushes_whose_path_filter_matches_the_socket(push_servers):
    """Pushes with a path filter while the client is away: the replay on /ws/a has exactly what
    live delivery would have given a socket on /ws/a; the marker is still at the last push."""
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=21)

    def push_to(message, path=None):
        body = {"context": 1, "user": 21, "message": message}
        if path is not None:
            body["path"] = path
        r = admin.push(**body)
        assert r.status == 202 and "position" in r.json, r
        return r.json["position"]["offset"]

    async def go():
        ws = await connect(server, s, path="/ws/a")
        _, marker = await until_marker(ws)
        start_at = (marker["epoch"], marker["offset"])
        ws.transport.abort()
        await asyncio.sleep(0.2)
        sent = [(push_to("to a", "/ws/a*"), "to a"), (push_to("to b", "/ws/b*"), "to b"),
                (push_to("to all"), "to all"), (push_to("to /ws/a exactly", "/ws/a"), "to /ws/a exactly"),
                (push_to("to plain", "/plain*"), "to plain"), (push_to("to b again", "/ws/b"), "to b again")]
        last = sent[-1][0]
        ws = await connect(server, s, start_at, path="/ws/a")
        replayed, marker = await until_marker(ws)
        assert [(p["offset"], p["data"]) for p in replayed] == [sent[0], sent[2], sent[3]], replayed
        assert marker == {"type": "recovery", "resumed": True, "recovered": True, "epoch": start_at[0],
                          "offset": last, "replayed": 3}, marker
        push_to("live to b", "/ws/b*")
        push_to("live to a", "/ws/a*")
        m = await recv_json(ws)
        assert m["data"] == "live to a", m
        await ws.close()
        # Another path, the same position: its own share.
        ws = await connect(server, s, start_at, path="/ws/b")
        replayed, marker = await until_marker(ws)
        assert [p["data"] for p in replayed] == ["to b", "to all", "to b again", "live to b"], replayed
        assert marker["recovered"] is True and marker["replayed"] == 4, marker
        await ws.close()

    run(go(), timeout=30)
    assert metric_sum(admin.metrics(), "ringwire_history_replayed_total") == 7


def test_pushes_racing_reconnects_arrive_exactly_once_in_order(push_servers):
    """A pusher thread posts numbered pushes without pause while the client reconnects ten
    times with its position: every number arrives once, in order, over the connections."""
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=11)
    stop = threading.Event()
    sent = []

    def pusher():
        a = Admin(server)
        i = 0
        while not stop.is_set():
            push(a, 11, str(i))
            sent.append(i)
            i += 1

    async def go():
        got = []
        ws = await connect(server, s)
        _, marker = await until_marker(ws)
        pos = (marker["epoch"], marker["offset"])
        t = threading.Thread(target=pusher, daemon=True)
        t.start()
        for _ in range(10):
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                try:
                    m = await recv_json(ws, 0.05)
                except (asyncio.TimeoutError, TimeoutError):
                    continue
                assert m["type"] == "push", m
                got.append(int(m["data"]))
                pos = (m["epoch"], m["offset"])
            ws.transport.abort()
            ws = await connect(server, s, pos)
            replayed, marker = await until_marker(ws)
            assert marker["recovered"] is True, marker
            got.extend(int(p["data"]) for p in replayed)
            if replayed:
                pos = (marker["epoch"], replayed[-1]["offset"])
        stop.set()
        t.join(10)
        while len(got) < len(sent):
            m = await recv_json(ws, 5)
            got.append(int(m["data"]))
        assert got == list(range(len(sent))), f"missing/duplicated/out of order: {len(got)} of {len(sent)}"
        assert len(sent) > 50, "the pusher barely ran"
        await ws.close()

    run(go(), timeout=90)


def test_history_overflow_and_ttl_say_not_recovered_but_an_idle_client_recovers(push_servers):
    server = start(push_servers, size=5, ttl_secs=2)
    admin = Admin(server)
    s = admin.mint(user=3)
    quiet = admin.mint(user=4)

    async def go():
        ws = await connect(server, s)
        _, start_marker = await until_marker(ws)
        wq = await connect(server, quiet)
        _, quiet_marker = await until_marker(wq)
        await ws.close()
        await wq.close()
        pos = (start_marker["epoch"], start_marker["offset"])
        offsets = [push(admin, 3, f"m{i}")["position"]["offset"] for i in range(10)]
        ws = await connect(server, s, pos)
        replayed, marker = await until_marker(ws)
        assert [p["data"] for p in replayed] == [f"m{i}" for i in range(5, 10)], "the 5 held are given"
        assert marker["resumed"] is True and marker["recovered"] is False, marker
        assert marker["offset"] == offsets[-1]
        await ws.close()
        # Everything expires after 2 s: a resume from before the expired pushes is not recovered.
        await asyncio.sleep(3.2)
        ws = await connect(server, s, (pos[0], offsets[6]))
        replayed, marker = await until_marker(ws)
        assert replayed == [] and marker["recovered"] is False, marker
        await ws.close()
        # ... but from the last one it is: nothing was lost.
        ws = await connect(server, s, (pos[0], offsets[-1]))
        replayed, marker = await until_marker(ws)
        assert replayed == [] and marker["recovered"] is True, marker
        await ws.close()
        # The quiet user had nothing pushed: idle beyond the ttl, still recovered.
        wq = await connect(server, quiet, (quiet_marker["epoch"], quiet_marker["offset"]))
        replayed, marker = await until_marker(wq)
        assert replayed == [] and marker["recovered"] is True, marker
        await wq.close()

    run(go(), timeout=60)
    m = admin.metrics()
    assert metric_sum(m, "ringwire_history_resumes_total", outcome="dropped") == 2
    assert metric_sum(m, "ringwire_history_expired_total") == 10, "5 by size, 5 by ttl"


def test_a_restarted_node_says_its_history_is_gone_and_replays_nothing(push_servers):
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=5)

    async def before():
        ws = await connect(server, s)
        _, marker = await until_marker(ws)
        await ws.close()
        return marker

    marker = run(before())
    push(admin, 5, "lost with the restart")
    assert server.stop() == 0
    push_servers.servers.remove(server)  # stopped on purpose, not a crash
    again = push_servers.start(endpoints=HISTORY_ENDPOINTS, history={"size": 100},
                               sessions={"key": SESSION_KEY_A})
    admin2 = Admin(again)
    after = push(admin2, 5, "after the restart")

    async def resume():
        ws = await connect(again, s, (marker["epoch"], marker["offset"]))
        replayed, m = await until_marker(ws)
        await ws.close()
        return replayed, m

    replayed, m = run(resume())
    assert replayed == [], "positions of another epoch are never replayed"
    assert m["resumed"] is True and m["recovered"] is False and m["epoch"] != marker["epoch"], m
    assert m["epoch"] == after["position"]["epoch"]
    assert metric_sum(admin2.metrics(), "ringwire_history_resumes_total", outcome="epoch_changed") == 1


def test_malformed_resume_parameters_are_refused_with_400(push_servers):
    from websockets.exceptions import InvalidStatus

    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=9)

    async def status(position):
        try:
            ws = await connect(server, s, position)
        except InvalidStatus as e:
            return e.response.status_code, (e.response.body or b"").decode()
        await ws.close()
        return 101, ""

    for bad in [("zz", 1), ("00000000000000ff", "x"), ("00000000000000ff", -1)]:
        code, body = run(status(bad))
        assert code == 400 and "bad resume position" in body, (bad, code, body)
    assert run(status(("00000000000000ff", 0)))[0] == 101, "a well-formed unknown position is answered"


def test_an_endpoint_without_history_gets_plain_text_and_ignores_positions(push_servers):
    server = start(push_servers)
    admin = Admin(server)
    s = admin.mint(user=12)

    async def go():
        ws = await connect(server, s, ("zz", "bad"), path="/plain")
        answer = push(admin, 12, "plain text")
        assert answer["sockets"] == 1
        assert await asyncio.wait_for(ws.recv(), 5) == "plain text"
        await expect_silence(ws, 0.3)
        await ws.close()

    run(go())


def test_history_off_by_default_answers_no_position(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    r = admin.push(context=1, user=1, message="x")
    assert r.status == 202 and "position" not in r.json, r
    assert metric_sum(admin.metrics(), "ringwire_history_appended_total") == 0


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def _grow(server, admin, users: int, rounds: int) -> int:
    """Push users x rounds pushes of 200 B in batches; the server's resident growth."""
    before = _rss(server.proc.pid)
    text = "x" * 200
    for _ in range(rounds):
        for first in range(0, users, 2_000):
            batch = [{"context": 1, "user": u, "message": text} for u in range(first, first + 2_000)]
            r = admin.push_batch(batch)
            assert r.status == 202, r
    return _rss(server.proc.pid) - before


def test_the_memory_store_stays_within_its_bytes_per_core(push_servers):
    """20,000 users x 20 pushes of 200 B (about 120 MiB if nothing were dropped) into a store
    of 8 MiB on one core: the oldest are evicted and counted, and the resident memory grows
    by at most the bound beyond what the same pushes cost a server without history (request
    buffers, allocator); a resume that needed an evicted push is told so."""
    bound = 8 << 20
    users, rounds = 20_000, 20
    plain = push_servers.start(endpoints=[{"path": "/ws", "kind": "raw"}], server={"cores": 1})
    baseline = _grow(plain, Admin(plain), users, rounds)
    server = push_servers.start(endpoints=HISTORY_ENDPOINTS, server={"cores": 1},
                                history={"size": 20, "ttl_secs": 3600, "max_bytes_per_core": bound},
                                sessions={"key": SESSION_KEY_A})
    admin = Admin(server)
    first = push(admin, 0, "first")["position"]
    grown = _grow(server, admin, users, rounds)
    m = admin.metrics()
    held = metric_sum(m, "ringwire_history_bytes")
    assert held <= bound, held
    assert metric_sum(m, "ringwire_history_evicted_total") > 0
    assert metric_sum(m, "ringwire_history_appended_total") == users * rounds + 1
    # Idle records (users whose pushes were all evicted; at most 160 B each with 24-byte user
    # ids, IDLE_OVERHEAD in src/service/history/memory.rs; bounded by count in
    # history.max_idle_users_per_core, not by max_bytes_per_core) come on top.
    assert grown - baseline < bound * 1.25 + users * 160, \
        f"RSS grew by {grown} bytes with history ({baseline} without) and a {bound}-byte bound"
    s = admin.mint(user=0)

    async def resume():
        ws = await connect(server, s, (first["epoch"], first["offset"]))
        replayed, marker = await until_marker(ws)
        await ws.close()
        return replayed, marker

    replayed, marker = run(resume())
    assert marker["recovered"] is False, "user 0's oldest pushes were evicted"


def test_a_batch_answers_each_push_its_position_in_request_order(push_servers):
    """Users spread over both cores: positions[i] is the position pushes[i] arrives with."""
    server = start(push_servers)
    admin = Admin(server)
    users = list(range(20, 30))
    sessions = {u: admin.mint(user=u) for u in users}

    async def go():
        sockets = {}
        for u in users:
            sockets[u] = await connect(server, sessions[u])
            await until_marker(sockets[u])
        pushes = [{"context": 1, "user": u, "message": f"{u}:{k}"} for k in range(3) for u in users]
        r = admin.push_batch(pushes)
        assert r.status == 202 and len(r.json["positions"]) == len(pushes), r
        for p, pos in zip(pushes, r.json["positions"]):
            m = await recv_json(sockets[p["user"]])
            assert m["data"] == p["message"], (m, p)
            assert (m["epoch"], m["offset"]) == (pos["epoch"], pos["offset"]), (m, pos)
        for ws in sockets.values():
            await ws.close()

    run(go(), timeout=60)
    epochs = {p["epoch"] for p in admin.push_batch([{"context": 1, "user": u, "message": "x"}
                                                    for u in users]).json["positions"]}
    assert len(epochs) == 2, "one memory store (and epoch) per core; the users span both cores"

"""History in NATS JetStream (`[history] store = "nats"`): two ringwire nodes and a real
nats-server (Debian's, started here on a free port with its store in tmp_path).

Contract under test (README "Recovery"):
  a push gets its position from the shared stream, whichever node it was made on; a client
  that reconnects to ANOTHER node resumes there; nats-server down: live pushes still flow
  (position null), resumes are told recovered: false, nothing hangs; nats-server back:
  history works again; a drained node's clients reconnect to the other node and end with
  every push exactly once, in order.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest

from helpers import (Admin, cluster_factory, history_connect, metric_sum, recv_json, run,  # noqa: F401
                     until_marker)
from nats_helpers import nats  # noqa: F401 (fixture)

HISTORY = [{"path": "/ws", "kind": "raw", "history": True}, {"path": "/other", "kind": "raw"}]


def two_nodes(cluster_factory, nats, **extra):
    c = cluster_factory.make(["a", "b"], extra={
        "endpoints": HISTORY,
        "history": {"store": "nats", "size": 100, "ttl_secs": 300},
        "nats": {"url": nats.url},
        **extra,
    })
    c.start_all()
    return c


async def connect(c, node, session, position=None):
    return await history_connect(c.ips[node], c.ports[node][0], session, position)


def test_a_client_resumes_on_the_other_node(cluster_factory, nats):
    c = two_nodes(cluster_factory, nats)
    a, b = c.admin("a"), c.admin("b")
    s = a.mint(user=42)

    async def go():
        ws = await connect(c, "a", s)
        _, marker = await until_marker(ws)
        assert marker["resumed"] is False and len(marker["epoch"]) == 16
        r = a.push(context=1, user=42, message="on a")
        assert r.status == 202 and r.json["position"]["epoch"] == marker["epoch"], r
        m = await recv_json(ws)
        assert m["data"] == "on a" and m["offset"] == r.json["position"]["offset"]
        ws.transport.abort()
        await asyncio.sleep(0.3)
        sent = []
        for i in range(30):  # made through either node while the client is away
            r = (a if i % 2 else b).push(context=1, user=42, message=f"away {i}")
            assert r.status == 202 and r.json["position"] is not None, r
            sent.append((r.json["position"]["offset"], f"away {i}"))
        ws = await connect(c, "b", s, (m["epoch"], m["offset"]))
        replayed, marker = await until_marker(ws)
        assert [(p["offset"], p["data"]) for p in replayed] == sent
        assert marker["resumed"] is True and marker["recovered"] is True and marker["replayed"] == 30, marker
        r = a.push(context=1, user=42, message="live through a")
        assert r.json["remote_nodes"] == 1, r
        m = await recv_json(ws)
        assert m["data"] == "live through a" and m["offset"] == r.json["position"]["offset"], m
        await ws.close()

    run(go(), timeout=60)


def test_a_resume_on_the_other_node_replays_only_what_matches_the_socket_path(cluster_factory, nats):
    c = two_nodes(cluster_factory, nats)
    a, b = c.admin("a"), c.admin("b")
    s = a.mint(user=43)

    async def go():
        ws = await history_connect(c.ips["a"], c.ports["a"][0], s, None, "/ws/a")
        _, marker = await until_marker(ws)
        start_at = (marker["epoch"], marker["offset"])
        ws.transport.abort()
        await asyncio.sleep(0.3)
        sent = []
        for i, (admin, path) in enumerate([(a, "/ws/a*"), (b, "/ws/b*"), (b, None), (a, "/ws/b")]):
            body = {"context": 1, "user": 43, "message": f"m{i}"}
            if path is not None:
                body["path"] = path
            r = admin.push(**body)
            assert r.status == 202 and r.json["position"] is not None, r
            sent.append((r.json["position"]["offset"], f"m{i}"))
        ws = await history_connect(c.ips["b"], c.ports["b"][0], s, start_at, "/ws/a")
        replayed, marker = await until_marker(ws)
        assert [(p["offset"], p["data"]) for p in replayed] == [sent[0], sent[2]], replayed
        assert marker["recovered"] is True and marker["replayed"] == 2, marker
        assert marker["offset"] == sent[-1][0], marker
        await ws.close()

    run(go(), timeout=60)


def test_pushes_filtered_away_from_a_socket_leave_no_gap_to_fill(cluster_factory, nats):
    """Pushes of the user that are not for this socket's path are passed over in history
    order: the next push for it is sent at once, not taken for a gap (no store read)."""
    c = two_nodes(cluster_factory, nats)
    a = c.admin("a")
    s = a.mint(user=44)

    async def go():
        ws = await history_connect(c.ips["a"], c.ports["a"][0], s, None, "/ws/a")
        await until_marker(ws)
        mine = []
        for i in range(20):
            path = "/ws/a" if i % 2 == 0 else "/ws/b"
            r = a.push(context=1, user=44, message=f"m{i}", path=path)
            assert r.status == 202 and r.json["position"] is not None, r
            if path == "/ws/a":
                mine.append((r.json["position"]["offset"], f"m{i}"))
        got = [await recv_json(ws) for _ in mine]
        assert [(m["offset"], m["data"]) for m in got] == mine, got
        await ws.close()

    run(go(), timeout=60)
    gaps = metric_sum(a.metrics(), "ringwire_history_gaps_total")
    assert gaps == 0, gaps


def test_nats_down_pushes_still_flow_resumes_say_so_and_history_comes_back(cluster_factory, nats):
    c = two_nodes(cluster_factory, nats)
    a = c.admin("a")
    s = a.mint(user=7)
    away = a.mint(user=8)  # offline through the outage

    async def go():
        w8 = await connect(c, "b", away)
        _, m8 = await until_marker(w8)
        await w8.close()
        ws = await connect(c, "a", s)
        _, marker = await until_marker(ws)
        before = (marker["epoch"], marker["offset"])
        nats.kill()
        r = a.push(context=1, user=8, message="lost in the outage")
        assert r.status == 202 and r.json["position"] is None and r.json["sockets"] == 0, r
        t0 = time.monotonic()
        r = a.push(context=1, user=7, message="while nats is down")
        assert r.status == 202 and r.json["position"] is None and r.json["sockets"] == 1, r
        assert time.monotonic() - t0 < 5, "a push must not hang on a dead store"
        m = await recv_json(ws)
        assert m == {"type": "push", "data": "while nats is down"}, m
        await ws.close()
        t0 = time.monotonic()
        ws = await connect(c, "a", s, before)
        replayed, marker = await until_marker(ws, timeout=10)
        assert replayed == [] and marker["resumed"] is True and marker["recovered"] is False, marker
        assert time.monotonic() - t0 < 5
        await ws.close()
        nats.start()
        deadline = time.monotonic() + 15
        while True:
            r = a.push(context=1, user=7, message="nats is back")
            if r.json.get("position") is not None:
                break
            assert time.monotonic() < deadline, f"history did not come back: {r!r}"
            await asyncio.sleep(0.5)
        ws = await connect(c, "b", s, (r.json["position"]["epoch"], r.json["position"]["offset"] - 1))
        replayed, marker = await until_marker(ws)
        assert [p["data"] for p in replayed][-1:] == ["nats is back"], replayed
        await ws.close()
        # User 8 missed a push the store never recorded: its resume, on either node, must
        # say so, not look complete.
        assert a.push(context=1, user=8, message="after the outage").json["position"] is not None
        for node in ("b", "a"):
            w8 = await connect(c, node, away, (m8["epoch"], m8["offset"]))
            replayed, marker = await until_marker(w8)
            assert [p["data"] for p in replayed] == ["after the outage"], replayed
            assert marker["resumed"] is True and marker["recovered"] is False, (node, marker)
            await w8.close()

    run(go(), timeout=90)
    m = a.metrics()
    assert metric_sum(m, "ringwire_history_resumes_total", outcome="unavailable") >= 1, m
    assert metric_sum(m, "ringwire_history_store_requests_total", event="append_failed") >= 1, m
    assert metric_sum(m, "ringwire_history_store_requests_total", event="append_ok") >= 1, m


def test_a_drained_node_s_clients_end_with_every_push_exactly_once(cluster_factory, nats):
    """100 users on node a, pushes at about 2,000/s through node b (20/s per user); a is
    drained (SIGTERM): its clients reconnect to b with their positions and end with every
    push once, in order."""
    c = two_nodes(cluster_factory, nats, server={"drain_secs": 1, "cores": 1})
    a, b = c.admin("a"), c.admin("b")
    users = list(range(100, 200))
    sessions = {u: b.mint(user=u) for u in users}
    sent = {u: [] for u in users}
    stop = threading.Event()

    def pusher():
        i = 0
        while not stop.is_set():
            batch = [{"context": 1, "user": u, "message": str(i)} for u in users]
            r = b.push_batch(batch)
            assert r.status == 202, r
            for u in users:
                sent[u].append(i)
            i += 1
            time.sleep(0.04)

    async def client(u, got):
        ws = await connect(c, "a", sessions[u])
        _, marker = await until_marker(ws)
        pos = (marker["epoch"], marker["offset"])
        node = "a"
        while True:
            try:
                m = await recv_json(ws, timeout=3)
            except Exception:  # closed by the drain (1001), or quiet after the pusher stopped
                if stop.is_set() and node == "b":
                    return
                node = "b"
                ws = await connect(c, "b", sessions[u], pos)
                replayed, marker = await until_marker(ws)
                assert marker["recovered"] is True, marker
                got.extend(int(p["data"]) for p in replayed)
                pos = (marker["epoch"], marker["offset"])
                continue
            if m["type"] == "push":
                got.append(int(m["data"]))
                pos = (m["epoch"], m["offset"])

    async def go():
        got = {u: [] for u in users}
        tasks = [asyncio.create_task(client(u, got[u])) for u in users]
        await asyncio.sleep(0.5)
        t = threading.Thread(target=pusher, daemon=True)
        t.start()
        await asyncio.sleep(1.0)
        c.killed.add("a")  # stopped on purpose
        c.servers["a"].proc.terminate()  # SIGTERM: drain over 1 s
        await asyncio.sleep(2.5)
        stop.set()
        t.join(10)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return got

    got = run(go(), timeout=90)
    for u in users:
        assert got[u] == sent[u], f"user {u}: {len(got[u])} received of {len(sent[u])} sent"
    total = sum(len(v) for v in sent.values())
    assert total > 5000, f"{total} pushes in 3.5 s: the pusher did not reach about 2,000/s"


NODE_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "node"
SIO_HISTORY = HISTORY + [{"path": "/socket.io/", "kind": "socketio", "history": True}]


@pytest.mark.parametrize("transports,v2", [(["websocket"], False), (["polling"], False), (["websocket"], True)])
def test_a_socketio_client_recovers_its_session_on_the_other_node(cluster_factory, nats, transports, v2):
    """socket.io-client 4.8, unmodified: its node's transport is lost and its next connection
    goes to the other node, pushes flowing at ~100/s through both nodes all along. It comes
    back with socket.recovered, the same socket id and pid, and every push exactly once, in
    order (those made while away, those racing the restore, the live ones). v2: socket.io-client
    2.x (Engine.IO v3) opted in with ?recover=1, resuming with ?offset=: its ringwire:recovery
    event says recovered, and it gets the same pushes."""
    import json
    import os

    # remote.mode = "wait": the other node's pushes arrive late, so that gaps are filled.
    c = two_nodes(cluster_factory, nats, endpoints=SIO_HISTORY, remote={"mode": "wait"})
    a, b = c.admin("a"), c.admin("b")
    s = a.mint(user=77)
    cfg = {
        "a": {"url": f"http://{c.ips['a']}:{c.ports['a'][0]}", "admin": f"http://{c.ips['a']}:{c.ports['a'][1]}"},
        "b": {"url": f"http://{c.ips['b']}:{c.ports['b'][0]}", "admin": f"http://{c.ips['b']}:{c.ports['b'][1]}"},
        "session": s["session"], "cookie": s["cookie"], "context": 1, "user": 77, "transports": transports, "v2": v2,
    }
    p = subprocess.run(["node", str(NODE_DIR / "sio_failover.mjs"), json.dumps(cfg)], cwd=NODE_DIR,
                       capture_output=True, text=True, timeout=60, env={**os.environ})
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    got = r["got"]
    assert r["ok"], r
    assert not r["pushErrors"], r["pushErrors"]
    assert got["connects"] == [False, True], f"socket.recovered at each connect: {got['connects']}, errors {got['errors']}"
    assert got["pids"][0] == got["pids"][1] and got["ids"][0] == got["ids"][1], got  # (v2: none)
    assert r["pushed"] > 50, r["pushed"]
    assert got["news"] == list(range(r["pushed"])), f"every push once, in order: {got['news']}"
    # Each event carries its position in the shared stream, as the push API answered it.
    assert [int(o.split("-")[1]) for o in got["offsets"]] == r["positions"]
    recovered = metric_sum(b.metrics(), "ringwire_history_resumes_total", outcome="recovered")
    assert recovered == 1, recovered
    # Pushes made on the other node came late (its coalescing wait): the gaps they left were
    # filled from the store, in order, and their late copies were not sent again.
    gaps = sum(metric_sum(n.metrics(), "ringwire_history_gaps_total") for n in (a, b))
    assert gaps >= 1, gaps

"""The cluster data plane: the presence directory, remote pushes over the QUIC links and the
coalescing queues, on 2 and 3 nodes listening on 127.0.0.1, .2 and .3.

Contract under test:
  every node sets the same [sessions] key; a session minted on any node works on every node;
  POST /v1/push {"context","user","path","message","coalesce"} -> 202 {"sockets": local sockets,
    "remote_nodes": other nodes the push was queued for}; a node gets a push only if the
    pusher's presence directory says it holds matching sockets of that user;
  GET /v1/sockets -> {"exists","count" (cluster-wide),"nodes": [this node first (even at 0),
    then each other node with count > 0]};
  coalesce=true merges equal remote copies (context, user, path filter, text):
    remote.mode = "edges" (default): a copy with no equal one queued is sent at once and opens
      a window of remote.delay_ms; equal copies in the window leave as one more message at its
      end (checked every 100 ms core tick), which opens the next window; after a window with
      nothing held, the next copy is sent at once again;
    remote.mode = "wait": a remote copy waits up to remote.delay_ms for an equal one and merges
      with it, the wait sliding with each merge but never past remote.max_delay_ms from the
      first; queues checked every remote.timer_ms;
  coalesce=false or delay_ms = 0: sent at once; local sockets always get it at once;
  DELETE /v1/sessions/{id} on any node closes the session's sockets on every node (4001) and
    refuses its upgrades everywhere (401);
  a killed node's presence entries are dropped, messages queued for it dropped and counted; it
    rejoins by itself once restarted;
  /v1/stats cluster.remote {"queued","merged","sent","dropped","received"}, cluster.links
    [{"node","addr","state","connects","bytes_sent","messages_sent","writes"}] and
    ringwire_remote_messages_total{event=...} on /metrics.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from helpers import (BINARY, CLUSTER_SESSION_KEY, cluster_certs, cluster_factory,  # noqa: F401 (fixture)
                     counter_delta, free_port, metric_sum, remote_counters, render_config, wait_sockets,
                     wait_until)

# Small delays keep the suite fast; every timing assertion below is derived from these.
DELAY_MS, MAX_DELAY_MS, TIMER_MS = 600, 1500, 100
REMOTE = {"delay_ms": DELAY_MS, "max_delay_ms": MAX_DELAY_MS, "timer_ms": TIMER_MS}
# The tests of the wait-first behaviour set it; the others run the default mode (edges).
WAIT = {"mode": "wait"}
# The core tick that checks edges-mode windows.
TICK = 0.1
DELAY, MAX_DELAY, TIMER = DELAY_MS / 1000, MAX_DELAY_MS / 1000, TIMER_MS / 1000
# Link latency plus scheduling slack on a loaded test host.
LATE = 0.35
# "At once" (coalesce=false, delay_ms = 0): well under DELAY, so a queued copy cannot pass.
AT_ONCE = 0.4
# Clock granularity allowance for lower bounds ("not before delay_ms").
EARLY = 0.03
COUNTERS = ("queued", "merged", "sent", "dropped", "received")

# Each test starts 2 or 3 nodes and waits for their links; none should need 30 s.
pytestmark = pytest.mark.timeout(45)


def push(admin, **body) -> dict:
    r = admin.push(**body)
    assert r.status == 202 and isinstance(r.json, dict) and {"sockets", "remote_nodes"} <= r.json.keys(), \
        f"POST /v1/push {body} on {admin.server.host}: expected 202 {{sockets, remote_nodes}}, got {r!r}"
    return r.json


def nodes_of(answer: dict) -> tuple[dict, list]:
    """(first entry, the other entries sorted by node) of a /v1/sockets answer."""
    nodes = answer["nodes"]
    assert isinstance(nodes, list) and nodes, f"/v1/sockets nodes: {answer}"
    return nodes[0], sorted(nodes[1:], key=lambda e: e["node"])


def start(cluster_factory, names, cores=1, remote=None, **kw):
    extra = {"server": {"cores": cores}, "remote": {**REMOTE, **(remote or {})}}
    extra.update(kw.pop("extra", {}))
    c = cluster_factory.make(names, extra=extra, **kw)
    c.start_all()
    return c


# ---------------------------------------------------------------------------------- config


def test_cluster_needs_a_sessions_key(tmp_path):
    d = cluster_certs(tmp_path, "certs", "a", "b")
    cfg = {"server": {"listen": f"127.0.0.1:{free_port()}"}, "admin": {"listen": f"127.0.0.1:{free_port()}"},
           "cluster": {"node_id": "a", "listen": "127.0.0.1:0", "peers": [{"id": "b", "addr": "127.0.0.2:1"}],
                       "ca": str(d / "ca.pem"), "cert": str(d / "a.pem"), "key": str(d / "a.key")}}
    path = tmp_path / "nokey.toml"
    path.write_text(render_config(cfg))
    for args in (["--check"], []):
        r = subprocess.run([str(BINARY), "serve", *args, "--config", str(path)],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and "sessions.key" in r.stderr, \
            f"serve {args} with [cluster] and no sessions.key: rc {r.returncode}, {r.stderr!r}"
    cfg["sessions"] = {"key": CLUSTER_SESSION_KEY}
    path.write_text(render_config(cfg))
    r = subprocess.run([str(BINARY), "serve", "--check", "--config", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------- delivery


def test_push_reaches_a_user_on_another_node(cluster_factory):
    f = cluster_factory
    c = start(f, "ab", cores=2)
    A, B = c.admin("a"), c.admin("b")
    s = A.mint(user=42)  # minted on a, used on b

    cb = f.client(c, "b", s)
    r = wait_sockets(A, 1, 42, 1, what="client on b")
    assert r == {"exists": True, "count": 1, "nodes": [{"node": "a", "count": 0}, {"node": "b", "count": 1}]}, r
    r = wait_sockets(B, 1, 42, 1)
    assert r == {"exists": True, "count": 1, "nodes": [{"node": "b", "count": 1}]}, r

    t0 = time.monotonic()
    r = push(A, context=1, user=42, path="/ws", message="hello b", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (0, 1), r
    (t, _), = cb.expect(["hello b"], timeout=3)
    assert t - t0 < AT_ONCE, f"coalesce=false took {t - t0:.3f}s to reach b"

    # A socket of the same user on a: local delivery plus one remote copy.
    ca = f.client(c, "a", s)
    r = wait_sockets(A, 1, 42, 2)
    assert r["nodes"] == [{"node": "a", "count": 1}, {"node": "b", "count": 1}], r
    wait_sockets(B, 1, 42, 2, what="b learns of the socket on a")
    t0 = time.monotonic()
    r = push(A, context=1, user=42, path="/ws", message="hello both", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (1, 1), r
    (ta, _), = ca.expect(["hello both"], timeout=3)
    (tb, _), = cb.expect(["hello b", "hello both"], timeout=3)[1:]
    assert ta - t0 < AT_ONCE and tb - t0 < AT_ONCE, (ta - t0, tb - t0)

    # The other way round, from b.
    t0 = time.monotonic()
    r = push(B, context=1, user=42, message="from b", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (1, 1), r
    (ta, _), = ca.expect(["hello both", "from b"], timeout=3)[1:]
    assert ta - t0 < AT_ONCE, f"b -> a took {ta - t0:.3f}s"

    # Defaults (no path, no coalesce = coalesce, mode edges): local and remote at once, as the
    # first of its kind.
    t0 = time.monotonic()
    r = push(A, context=1, user=42, message="default")
    assert (r["sockets"], r["remote_nodes"]) == (1, 1), r
    (ta, _), = ca.expect(["hello both", "from b", "default"], timeout=3)[2:]
    assert ta - t0 < AT_ONCE, f"local delivery with coalesce took {ta - t0:.3f}s"
    got = cb.expect(["hello b", "hello both", "from b", "default"], timeout=3)
    tb = got[-1][0]
    assert tb - t0 < AT_ONCE, f"coalesced remote copy (mode edges) arrived after {tb - t0:.3f}s"

    # A batch: one remote copy for user 42, nothing for a user without sockets.
    r = A.push_batch([{"context": 1, "user": 42, "message": "batch", "coalesce": False},
                      {"context": 1, "user": 43, "message": "nobody", "coalesce": False}])
    assert r.status == 202 and isinstance(r.json, dict), r
    assert (r.json.get("pushes"), r.json.get("sockets"), r.json.get("remote_nodes")) == (2, 1, 1), r
    cb.expect(["hello b", "hello both", "from b", "default", "batch"], timeout=3)
    ca.expect(["hello both", "from b", "default", "batch"], timeout=3)
    time.sleep(0.3)
    assert cb.texts() == ["hello b", "hello both", "from b", "default", "batch"], cb.texts()


def test_three_nodes_fan_out_and_cluster_wide_counts(cluster_factory):
    f = cluster_factory
    c = start(f, "abc")
    admins = {n: c.admin(n) for n in "abc"}
    A = admins["a"]
    s = A.mint(user=7)
    clients = {n: f.client(c, n, s) for n in "abc"}

    for n, adm in admins.items():
        r = wait_sockets(adm, 1, 7, 3, what=f"view of {n}")
        first, rest = nodes_of(r)
        assert r["exists"] is True and first == {"node": n, "count": 1}, r
        assert rest == [{"node": o, "count": 1} for o in "abc" if o != n], r

    t0 = time.monotonic()
    r = push(A, context=1, user=7, message="all three", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (1, 2), r
    for n, cl in clients.items():
        (t, _), = cl.expect(["all three"], timeout=3)
        assert t - t0 < AT_ONCE, f"{n}: {t - t0:.3f}s"

    # A user with sockets on c only, seen from a and from b.
    s9 = admins["c"].mint(user=9)
    c9 = f.client(c, "c", s9)
    for n in "ab":
        r = wait_sockets(admins[n], 1, 9, 1)
        assert r["nodes"] == [{"node": n, "count": 0}, {"node": "c", "count": 1}], r
    r = push(admins["b"], context=1, user=9, message="for nine", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (0, 1), r
    c9.expect(["for nine"], timeout=3)

    # Nobody: user 8, and user 7 in another context. Nothing is queued or sent.
    before = {n: remote_counters(adm) for n, adm in admins.items()}
    for ctx, user in ((1, 8), (2, 7)):
        r = A.sockets(ctx, user)
        assert r == {"exists": False, "count": 0, "nodes": [{"node": "a", "count": 0}]}, r
        for coalesce in (False, True):
            r = push(A, context=ctx, user=user, message="nobody", coalesce=coalesce)
            assert (r["sockets"], r["remote_nodes"]) == (0, 0), f"context {ctx} user {user}: {r}"
    time.sleep(DELAY + TIMER + LATE)
    for n, adm in admins.items():
        d = counter_delta(remote_counters(adm), before[n])
        assert all(d[k] == 0 for k in COUNTERS), f"{n}: remote counters moved for pushes to nobody: {d}"
    for n, cl in clients.items():
        assert cl.texts() == ["all three"], f"{n}: {cl.texts()}"


def test_path_filters_across_nodes(cluster_factory):
    f = cluster_factory
    c = start(f, "abc")
    A = c.admin("a")
    s = A.mint(user=11)
    on_b = f.client(c, "b", s, "/ws")
    on_c = f.client(c, "c", s, "/other")

    wait_sockets(A, 1, 11, 2)
    views = {
        "/ws": [{"node": "a", "count": 0}, {"node": "b", "count": 1}],
        "/ws*": [{"node": "a", "count": 0}, {"node": "b", "count": 1}],
        "/other": [{"node": "a", "count": 0}, {"node": "c", "count": 1}],
        "/o*": [{"node": "a", "count": 0}, {"node": "c", "count": 1}],
        "/nothing": [{"node": "a", "count": 0}],
    }
    for path, nodes in views.items():
        r = A.sockets(1, 11, path)
        want = sum(e["count"] for e in nodes)
        assert r == {"exists": want > 0, "count": want, "nodes": nodes}, f"path={path}: {r}"
    r = A.sockets(1, 11, "*")
    first, rest = nodes_of(r)
    assert r["count"] == 2 and first == {"node": "a", "count": 0} and \
        rest == [{"node": "b", "count": 1}, {"node": "c", "count": 1}], r

    def p(path, text, remote):
        body = {"context": 1, "user": 11, "message": text, "coalesce": False}
        if path is not None:
            body["path"] = path
        r = push(A, **body)
        assert (r["sockets"], r["remote_nodes"]) == (0, remote), f"path={path}: {r}"

    p("/other", "other only", 1)
    on_c.expect(["other only"], timeout=3)
    p("/ws*", "ws only", 1)
    on_b.expect(["ws only"], timeout=3)
    p("/nothing", "nobody", 0)
    p(None, "everyone", 2)
    on_b.expect(["ws only", "everyone"], timeout=3)
    on_c.expect(["other only", "everyone"], timeout=3)
    time.sleep(0.5)
    assert on_b.texts() == ["ws only", "everyone"], on_b.texts()
    assert on_c.texts() == ["other only", "everyone"], on_c.texts()


# ---------------------------------------------------------------------------------- coalescing


def test_equal_pushes_merge_into_one_remote_message(cluster_factory):
    f = cluster_factory
    c = start(f, "ab", cores=2, remote=WAIT)
    A, B = c.admin("a"), c.admin("b")
    s = A.mint(user=21)
    cb = f.client(c, "b", s)
    ca = f.client(c, "a", s)
    wait_sockets(A, 1, 21, 2)
    before_a, before_b = remote_counters(A), remote_counters(B)

    n = 5
    t0 = time.monotonic()
    t_last = t0
    for _ in range(n):
        t_last = time.monotonic()
        r = push(A, context=1, user=21, path="/ws", message="same")
        assert (r["sockets"], r["remote_nodes"]) == (1, 1), r
    t_end = time.monotonic()
    assert t_end - t0 < DELAY / 2, f"{n} pushes took {t_end - t0:.3f}s: too slow to test merging"

    # Local: every push, at once.
    got_a = ca.expect(["same"] * n, timeout=AT_ONCE + 0.5)
    assert got_a[-1][0] - t_end < AT_ONCE, "local delivery waited"
    # Remote: once, delay_ms after the last merge (the wait slides), and within max_delay_ms.
    got = cb.wait_for(1, timeout=MAX_DELAY + TIMER + LATE + 0.5)
    assert got, f"b received nothing within {MAX_DELAY + TIMER + LATE + 0.5}s"
    t = got[0][0]
    print(f"pushes from 0 to {t_end - t0:.3f}s, merged copy at {t - t0:.3f}s")
    assert t - t_last >= DELAY - EARLY, \
        f"merged message arrived {t - t_last:.3f}s after the last equal push, before delay_ms={DELAY_MS}"
    assert t - t_end <= DELAY + TIMER + LATE, f"merged message arrived {t - t_end:.3f}s after the last push"
    assert t - t0 <= MAX_DELAY + TIMER + LATE, f"merged message arrived {t - t0:.3f}s after the first push"
    time.sleep(max(0.0, t0 + MAX_DELAY + TIMER + LATE - time.monotonic()) + 0.2)
    assert cb.texts() == ["same"], f"b must receive the {n} equal pushes once, got {cb.texts()}"

    da = counter_delta(remote_counters(A), before_a)
    db = counter_delta(remote_counters(B), before_b)
    assert da["merged"] == n - 1 and da["sent"] == 1 and da["dropped"] == 0, f"a: {da}"
    # "queued = entered a coalescing queue": 1 entry (the merged ones did not make new ones),
    # or n if every push is counted on entry; anything else is wrong.
    assert da["queued"] in (1, n), f"a: {da}"
    assert db["received"] == 1, f"b: {db}"

    # A batch of equal pushes merges the same way.
    t0 = time.monotonic()
    r = A.push_batch([{"context": 1, "user": 21, "path": "/ws", "message": "batched"}] * 3)
    assert r.status == 202 and r.json.get("sockets") == 3 and r.json.get("remote_nodes") == 3, r
    got = cb.wait_for(2, timeout=MAX_DELAY + TIMER + LATE + 0.5)
    assert [m for _, m in got] == ["same", "batched"], got
    assert got[1][0] - t0 >= DELAY - EARLY, f"batched copy after {got[1][0] - t0:.3f}s"
    time.sleep(DELAY + TIMER)
    assert cb.texts() == ["same", "batched"], cb.texts()
    assert counter_delta(remote_counters(A), before_a)["merged"] == n - 1 + 2


def test_different_messages_are_never_merged(cluster_factory):
    f = cluster_factory
    c = start(f, "ab", cores=2, remote=WAIT)
    A, B = c.admin("a"), c.admin("b")
    s22, s23 = A.mint(user=22), A.mint(user=23)
    ws22 = f.client(c, "b", s22, "/ws")
    other22 = f.client(c, "b", s22, "/other")
    ws23 = f.client(c, "b", s23, "/ws")
    wait_sockets(A, 1, 22, 2)
    wait_sockets(A, 1, 23, 1)
    before_a, before_b = remote_counters(A), remote_counters(B)

    pushes = [
        (22, "/ws", "t1"), (22, "/ws", "t2"), (22, "/ws", "t3"),  # different texts
        (22, "/other", "t1"),                                       # same text, other path filter
        (23, "/ws", "t1"),                                          # same text, other user
    ]
    t0 = time.monotonic()
    for user, path, text in pushes:
        r = push(A, context=1, user=user, path=path, message=text)
        assert (r["sockets"], r["remote_nodes"]) == (0, 1), r
    t_end = time.monotonic()
    wait = MAX_DELAY + TIMER + LATE + 0.5
    got = ws22.expect(["t1", "t2", "t3"], timeout=wait) + other22.expect(["t1"], timeout=wait) + \
        ws23.expect(["t1"], timeout=wait)
    for t, m in got:
        assert t - t0 >= DELAY - EARLY, f"{m!r} arrived after {t - t0:.3f}s, before delay_ms"
        assert t - t_end <= DELAY + TIMER + LATE, f"{m!r} arrived {t - t_end:.3f}s after the pushes"
    assert ws22.texts() == ["t1", "t2", "t3"], f"order of one user's messages: {ws22.texts()}"
    time.sleep(0.3)
    da = counter_delta(remote_counters(A), before_a)
    assert da["merged"] == 0 and da["sent"] == len(pushes) and da["dropped"] == 0, f"a: {da}"
    assert counter_delta(remote_counters(B), before_b)["received"] == len(pushes)
    for cl in (ws22, other22, ws23):
        assert len(cl.texts()) == len({*cl.texts()}), f"{cl.name}: duplicates {cl.texts()}"


@pytest.mark.timeout(60)  # slow: waits out a node failure or several max_delay_ms
def test_sliding_wait_is_capped_by_max_delay(cluster_factory):
    f = cluster_factory
    c = start(f, "ab", remote=WAIT)
    A = c.admin("a")
    s = A.mint(user=24)
    cb = f.client(c, "b", s)
    wait_sockets(A, 1, 24, 1)
    before = remote_counters(A)

    every, duration = 0.2, 2.6
    starts, ends = [], []
    t0 = time.monotonic()
    i = 0
    while i * every < duration:
        time.sleep(max(0.0, t0 + i * every - time.monotonic()))
        starts.append(time.monotonic())
        r = push(A, context=1, user=24, message="tick")
        ends.append(time.monotonic())
        assert r["remote_nodes"] == 1, r
        i += 1
    n = len(starts)
    last_end = ends[-1]
    got = cb.wait_for(99, timeout=max(0.0, last_end + MAX_DELAY + TIMER + LATE - time.monotonic()))
    print(f"{n} pushes at {[round(t - t0, 3) for t in starts]}; delivered at {[round(t - t0, 3) for t, _ in got]}")
    assert got, "b received nothing"
    first = got[0][0]
    # Equal pushes every 0.2 s keep sliding a 0.6 s wait: only max_delay_ms ends it.
    assert first - ends[0] <= MAX_DELAY + TIMER + LATE, \
        f"first delivery {first - ends[0]:.3f}s after the first push: max_delay_ms={MAX_DELAY_MS} not enforced"
    gaps = [b - a for a, b in zip(starts, starts[1:]) if b < first]
    if gaps and max(gaps) < DELAY - 0.1:
        assert first - starts[0] >= MAX_DELAY - EARLY, \
            f"first delivery {first - starts[0]:.3f}s after the first push: the wait did not slide " \
            f"(pushes every {every}s, delay_ms={DELAY_MS}, max_delay_ms={MAX_DELAY_MS})"
    # The pushes after the first delivery start a new entry: delivered once the pushes stop.
    assert got[-1][0] > starts[-1], f"no delivery after the last push: {[round(t - t0, 3) for t, _ in got]}"
    assert all(m == "tick" for _, m in got)
    d = counter_delta(remote_counters(A), before)
    assert 2 <= len(got) <= 3, f"{n} equal pushes over {duration}s: {len(got)} deliveries at " \
                               f"{[round(t - t0, 3) for t, _ in got]}"
    assert d["merged"] == n - len(got) and d["sent"] == len(got), f"{n} pushes, {len(got)} delivered: {d}"


def test_coalesce_false_and_zero_delay_send_at_once(cluster_factory):
    f = cluster_factory
    c = start(f, "ab", remote=WAIT)
    A, B = c.admin("a"), c.admin("b")
    s = A.mint(user=25)
    cb = f.client(c, "b", s)
    wait_sockets(A, 1, 25, 1)

    t0 = time.monotonic()
    push(A, context=1, user=25, message="now", coalesce=False)
    (t, _), = cb.expect(["now"], timeout=3)
    assert t - t0 < AT_ONCE, f"coalesce=false: {t - t0:.3f}s"

    t0 = time.monotonic()
    push(A, context=1, user=25, message="later", coalesce=True)
    t = cb.expect(["now", "later"], timeout=3)[1][0]
    assert t - t0 >= DELAY - EARLY, f"coalesce=true with delay_ms={DELAY_MS}: {t - t0:.3f}s"

    # delay_ms = 0 by reload: coalesce=true sends at once too.
    c.write_config("a", {"remote": {"delay_ms": 0}})
    r = A.reload()
    assert r.status == 200 and isinstance(r.json, dict) and r.json.get("reloaded") is True, r
    assert "remote" not in " ".join(r.json.get("restart_required_for") or []), r
    time.sleep(0.2)  # the cores apply it asynchronously
    for text in ("zero 1", "zero 2"):
        t0 = time.monotonic()
        r = push(A, context=1, user=25, message=text, coalesce=True)
        assert r["remote_nodes"] == 1, r
        t = cb.wait_for(len(cb.texts()) + 1, timeout=3)[-1][0]
        assert cb.texts()[-1] == text, cb.texts()
        assert t - t0 < AT_ONCE, f"delay_ms=0 after reload, coalesce=true: {text!r} took {t - t0:.3f}s"

    # And back to 600 ms with SIGHUP.
    c.write_config("a")
    n_lines = len(c.servers["a"].stderr_lines)
    c.servers["a"].proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any("reload" in l for l in c.servers["a"].stderr_lines[n_lines:]), timeout=3,
               what="the SIGHUP reload logged")
    time.sleep(0.2)
    t0 = time.monotonic()
    push(A, context=1, user=25, message="delayed again", coalesce=True)
    t = cb.wait_for(5, timeout=3)[-1][0]
    assert cb.texts()[-1] == "delayed again", cb.texts()
    assert t - t0 >= DELAY - EARLY, f"after SIGHUP back to delay_ms={DELAY_MS}: {t - t0:.3f}s"
    assert c.servers["a"].alive() and c.servers["b"].alive()


def burst(admin, user, text, n, within):
    """n equal pushes (default coalesce) through `admin`, all within `within` seconds; returns
    (time before the first, time after the last)."""
    t0 = time.monotonic()
    for _ in range(n):
        r = push(admin, context=1, user=user, message=text)
        assert r["remote_nodes"] == 1, r
    t_end = time.monotonic()
    assert t_end - t0 < within, f"{n} pushes took {t_end - t0:.3f}s, wanted them within {within}s"
    return t0, t_end


def test_edges_mode_sends_the_first_at_once_and_a_burst_at_most_twice(cluster_factory):
    # The default mode, with the default delays: nothing of "wait" may show.
    f = cluster_factory
    c = start(f, "ab", cores=2, remote={"delay_ms": 1000, "max_delay_ms": 3000, "timer_ms": 500})
    delay, fast = 1.0, 0.3
    A, B = c.admin("a"), c.admin("b")
    s = A.mint(user=26)
    cb = f.client(c, "b", s)
    wait_sockets(A, 1, 26, 1)
    before_a, before_b = remote_counters(A), remote_counters(B)

    # A lone push: at once, not delay_ms later.
    t0 = time.monotonic()
    push(A, context=1, user=26, message="first")
    (t, _), = cb.expect(["first"], timeout=3)
    assert t - t0 < fast, f"first coalesced push reached b after {t - t0:.3f}s (delay_ms=1000, edges)"

    # 5 equal pushes within 200 ms: the first at once, the others merged into one more message
    # when the window (delay_ms from the first) ends.
    t0, t_end = burst(A, 26, "burst", 5, 0.2)
    got = cb.wait_for(2, timeout=delay + TICK + LATE + 0.5)[1:]
    assert got and got[0][1] == "burst", cb.texts()
    assert got[0][0] - t0 < fast, f"the burst's first push reached b after {got[0][0] - t0:.3f}s"
    time.sleep(max(0.0, t0 + delay + TICK + LATE - time.monotonic()) + 0.3)
    got = cb.messages[1:]
    print(f"burst from 0 to {t_end - t0:.3f}s, delivered at {[round(t - t0, 3) for t, _ in got]}")
    assert 1 <= len(got) <= 2 and all(m == "burst" for _, m in got), \
        f"5 equal pushes within 200 ms: wanted 1 or 2 deliveries, got {cb.texts()[1:]}"
    assert len(got) == 2, f"the trailing push never came: {cb.texts()[1:]}"
    t2 = got[1][0]
    assert delay - EARLY <= t2 - t0 <= delay + TICK + LATE, \
        f"trailing push at {t2 - t0:.3f}s, wanted at the window's end ({delay}s + a tick + latency)"
    da = counter_delta(remote_counters(A), before_a)
    assert (da["queued"], da["merged"], da["sent"], da["dropped"]) == (3, 3, 3, 0), f"a: {da}"
    assert counter_delta(remote_counters(B), before_b)["received"] == 3

    # The trailing send opened a window: an equal push in it waits for its end...
    t0 = time.monotonic()
    push(A, context=1, user=26, message="burst")
    got = cb.wait_for(4, timeout=delay + TICK + LATE + 0.5)
    assert len(got) == 4, cb.texts()
    assert got[3][0] - t2 <= delay + TICK + LATE and got[3][0] - t0 >= 0.1, \
        f"push {t0 - t2:.3f}s after the trailing send arrived {got[3][0] - t0:.3f}s later"
    # ...and once a window has passed with nothing held, the next one is a first again.
    time.sleep(delay + TICK + 0.2)
    t0 = time.monotonic()
    push(A, context=1, user=26, message="burst")
    t = cb.wait_for(5, timeout=3)[-1][0]
    assert t - t0 < fast, f"equal push after the window closed arrived after {t - t0:.3f}s"
    time.sleep(0.3)
    assert len(cb.texts()) == 5, cb.texts()


def test_mode_is_reloadable(cluster_factory):
    f = cluster_factory
    c = start(f, "ab")
    A = c.admin("a")
    s = A.mint(user=27)
    cb = f.client(c, "b", s)
    wait_sockets(A, 1, 27, 1)

    def lone(text):
        t0 = time.monotonic()
        push(A, context=1, user=27, message=text)
        return cb.wait_for(len(cb.texts()) + 1, timeout=MAX_DELAY + TIMER + LATE + 1)[-1][0] - t0

    assert lone("edges") < AT_ONCE
    for mode, late in (("wait", True), ("edges", False)):
        c.write_config("a", {"remote": {"mode": mode}})
        r = A.reload()
        assert r.status == 200 and r.json.get("reloaded") is True, r
        assert "remote" not in " ".join(r.json.get("restart_required_for") or []), r
        time.sleep(0.2)  # the cores apply it asynchronously
        took = lone(f"after reload to {mode}")
        if late:
            assert DELAY - EARLY <= took <= DELAY + TIMER + LATE, f"mode wait by reload: {took:.3f}s"
        else:
            assert took < AT_ONCE, f"mode edges by reload: {took:.3f}s"
    assert cb.texts() == ["edges", "after reload to wait", "after reload to edges"], cb.texts()

    # An unknown mode is refused by a reload, and the running mode stays.
    c.write_config("a", {"remote": {"mode": "sometimes"}})
    r = A.reload()
    assert r.status == 400 and b"sometimes" in r.body and b"edges" in r.body, r
    assert lone("still edges") < AT_ONCE


# ---------------------------------------------------------------------------------- sessions


def test_terminate_closes_the_session_on_every_node(cluster_factory):
    f = cluster_factory
    c = start(f, "abc")
    A, B, C = c.admin("a"), c.admin("b"), c.admin("c")
    s1 = A.mint(user=31)
    s2 = B.mint(user=31)  # the same user, another session (minted on b)
    s3 = A.mint(user=32)
    c1 = {n: f.client(c, n, s1) for n in "abc"}
    keep = f.client(c, "c", s2)
    c3 = f.client(c, "b", s3)
    wait_sockets(A, 1, 31, 4)
    wait_sockets(C, 1, 32, 1)

    r = A.revoke(s1["session"])
    assert r.status == 204, f"DELETE /v1/sessions on a: {r!r}"
    for n, cl in c1.items():
        code = cl.wait_closed(5)
        assert code == 4001, f"socket of the terminated session on {n}: close {code} {cl.close_reason!r}"
    assert not keep.closed.is_set(), "another session of the same user was closed"
    for n in "abc":
        status, body = _status(c, n, s1)
        assert status == 401, f"upgrade with the terminated session on {n}: {status} {body!r}"
        status, _ = _status(c, n, s2)
        assert status == 101, f"upgrade with the other session on {n}: {status}"

    wait_sockets(A, 1, 31, 1, what="only the other session's socket on c")
    r = push(A, context=1, user=31, message="still here", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (0, 1), r
    keep.expect(["still here"], timeout=3)

    # Terminated on c, minted on a, open on b.
    r = C.revoke(s3["session"])
    assert r.status == 204, r
    assert c3.wait_closed(5) == 4001, c3.close_code
    assert _status(c, "b", s3)[0] == 401


def _status(c, node, session):
    from helpers import ws_sync_status

    return ws_sync_status(c.public_url(node, "/ws", session), session)


# ---------------------------------------------------------------------------------- faults


@pytest.mark.timeout(60)  # slow: waits out a node failure or several max_delay_ms
def test_killed_node_is_dropped_from_presence_and_rejoins(cluster_factory):
    f = cluster_factory
    c = start(f, "abc")
    A = c.admin("a")
    s41, s42 = A.mint(user=41), A.mint(user=42)
    f.client(c, "b", s41)
    on_c = f.client(c, "c", s42)
    wait_sockets(A, 1, 41, 1)
    wait_sockets(A, 1, 42, 1)
    connects = {l["node"]: l["connects"] for l in A.stats()["cluster"]["links"]}

    c.kill("b")
    t_kill = time.monotonic()
    r = wait_sockets(A, 1, 41, 0, timeout=10, what="b killed")
    assert time.monotonic() - t_kill < 6, f"a dropped b's sockets {time.monotonic() - t_kill:.1f}s after the kill"
    assert r == {"exists": False, "count": 0, "nodes": [{"node": "a", "count": 0}]}, r
    wait_sockets(c.admin("c"), 1, 41, 0, timeout=10, what="c forgets b's sockets")
    for coalesce in (True, False):
        r = push(A, context=1, user=41, message="to the dead", coalesce=coalesce)
        assert (r["sockets"], r["remote_nodes"]) == (0, 0), r
    t0 = time.monotonic()
    r = push(A, context=1, user=42, message="c still works", coalesce=False)
    assert r["remote_nodes"] == 1, r
    (t, _), = on_c.expect(["c still works"], timeout=3)
    assert t - t0 < AT_ONCE

    c.start("b")
    c.wait("a", {"b": "up", "c": "up"}, timeout=10)
    c.wait("b", {"a": "up", "c": "up"}, timeout=10)
    B = c.admin("b")
    # The restarted b learns the presence the others hold (c's socket of user 42).
    r = wait_sockets(B, 1, 42, 1, what="restarted b re-synced")
    assert r["nodes"] == [{"node": "b", "count": 0}, {"node": "c", "count": 1}], r
    back = f.client(c, "b", s41, name="reconnected client on b")
    r = wait_sockets(A, 1, 41, 1, what="reconnected client on b")
    assert r["nodes"] == [{"node": "a", "count": 0}, {"node": "b", "count": 1}], r
    t0 = time.monotonic()
    r = push(A, context=1, user=41, message="welcome back", coalesce=False)
    assert r["remote_nodes"] == 1, r
    (t, _), = back.expect(["welcome back"], timeout=3)
    assert t - t0 < AT_ONCE
    push(A, context=1, user=41, message="coalesced welcome")
    back.expect(["welcome back", "coalesced welcome"], timeout=MAX_DELAY + TIMER + LATE + 0.5)
    links = {l["node"]: l for l in A.stats()["cluster"]["links"]}
    assert links["b"]["connects"] > connects["b"], f"a's link to b: connects {connects} -> {links['b']}"


@pytest.mark.timeout(60)  # slow: waits out a node failure or several max_delay_ms
def test_messages_queued_for_a_dead_node_are_dropped_and_counted(cluster_factory):
    # A long wait so the message is still queued when a notices b is gone (about 3 s).
    f = cluster_factory
    c = start(f, "ab", remote={"mode": "wait", "delay_ms": 8000, "max_delay_ms": 8000, "timer_ms": 100})
    A = c.admin("a")
    s = A.mint(user=51)
    f.client(c, "b", s)
    wait_sockets(A, 1, 51, 1)
    before = remote_counters(A)

    r = push(A, context=1, user=51, message="never delivered")
    assert r["remote_nodes"] == 1, r
    t0 = time.monotonic()
    c.kill("b")
    c.wait("a", {"b": "down"}, timeout=8)
    wait_until(lambda: remote_counters(A)["dropped"] - before["dropped"] >= 1,
               timeout=max(0.5, t0 + 8 + 2 - time.monotonic()), interval=0.1,
               what="the message queued for the dead node dropped and counted")
    d = counter_delta(remote_counters(A), before)
    assert d["dropped"] == 1 and d["sent"] == 0, f"a: {d}"
    wait_sockets(A, 1, 51, 0, timeout=5)
    assert push(A, context=1, user=51, message="x")["remote_nodes"] == 0


@pytest.mark.parametrize("mode", ["wait", "edges"])
def test_full_queue_drops_and_counts(cluster_factory, mode):
    # In edges mode an open window counts toward the bounds like a waiting push.
    f = cluster_factory
    c = start(f, "ab", remote={"mode": mode})
    A, B = c.admin("a"), c.admin("b")
    s = A.mint(user=61)
    cb = f.client(c, "b", s)
    wait_sockets(A, 1, 61, 1)

    # Reloaded: at most 2 messages waiting per core per destination.
    c.write_config("a", {"remote": {"max_queued_messages": 2}})
    r = A.reload()
    assert r.status == 200, r
    time.sleep(0.2)
    before_a, before_b = remote_counters(A), remote_counters(B)
    texts = [f"q{i}" for i in range(5)]
    t0 = time.monotonic()
    for t in texts:
        push(A, context=1, user=61, message=t)
    assert time.monotonic() - t0 < DELAY / 2
    cb.expect(texts[:2], timeout=MAX_DELAY + TIMER + LATE + 0.5)
    time.sleep(DELAY + TIMER + LATE)
    assert cb.texts() == texts[:2], f"with max_queued_messages=2: {cb.texts()}"
    da = counter_delta(remote_counters(A), before_a)
    assert da["dropped"] == 3 and da["sent"] == 2 and da["merged"] == 0, f"a: {da}"
    assert da["queued"] == 2, f"a: {da}"
    assert counter_delta(remote_counters(B), before_b)["received"] == 2
    m = A.metrics()
    assert metric_sum(m, "ringwire_remote_messages_total", event="dropped") == remote_counters(A)["dropped"], m

    # The same by bytes: room for about two 100-byte texts.
    c.write_config("a", {"remote": {"max_queued_bytes": 250}})
    assert A.reload().status == 200
    time.sleep(0.2)
    cb.clear()
    before_a = remote_counters(A)
    big = [f"{i}" + "x" * 99 for i in range(5)]
    for t in big:
        push(A, context=1, user=61, message=t)
    time.sleep(DELAY + TIMER + LATE + 0.3)
    got = cb.texts()
    da = counter_delta(remote_counters(A), before_a)
    assert 1 <= len(got) <= 2 and got == big[:len(got)], f"max_queued_bytes=250, 5 x 100 B: got {len(got)}"
    assert da["dropped"] == 5 - len(got) and da["sent"] == len(got), f"a: {da}"

    # Once the queue has drained, pushes go through again.
    cb.clear()
    push(A, context=1, user=61, message="after")
    cb.expect(["after"], timeout=MAX_DELAY + TIMER + LATE + 0.5)


# ---------------------------------------------------------------------------------- observability


def test_stats_and_metrics_count_remote_messages(cluster_factory):
    f = cluster_factory
    c = start(f, "ab", remote=WAIT)
    A, B = c.admin("a"), c.admin("b")

    st = A.stats()["cluster"]
    assert st.get("node") == "a", st
    assert isinstance(st.get("links"), list) and len(st["links"]) == 1, st
    link = st["links"][0]
    assert link.get("node") == "b" and link.get("state") == "up", link
    assert link.get("addr") == f"{c.cluster_ips['b']}:{c.quic['b']}", link
    for k in ("connects", "bytes_sent", "messages_sent", "writes"):
        assert isinstance(link.get(k), int) and link[k] >= 0, f"links[0].{k}: {link}"
    assert link["connects"] >= 1, link
    assert set(COUNTERS) <= set(st.get("remote", {})), st
    assert all(isinstance(st["remote"][k], int) for k in COUNTERS), st

    s = A.mint(user=71)
    cb = f.client(c, "b", s)
    wait_sockets(A, 1, 71, 1)
    time.sleep(0.2)
    ba, bb = remote_counters(A), remote_counters(B)
    link0 = A.stats()["cluster"]["links"][0]

    push(A, context=1, user=71, message="m" * 200, coalesce=False)
    cb.expect(["m" * 200], timeout=3)
    time.sleep(0.2)
    da, db = counter_delta(remote_counters(A), ba), counter_delta(remote_counters(B), bb)
    assert (da["sent"], da["queued"] in (0, 1), da["merged"], da["dropped"]) == (1, True, 0, 0), f"a: {da}"
    assert db["received"] == 1, f"b: {db}"
    link1 = A.stats()["cluster"]["links"][0]
    assert link1["messages_sent"] > link0["messages_sent"], (link0, link1)
    assert link1["bytes_sent"] >= link0["bytes_sent"] + 200, (link0, link1)
    assert link1["writes"] > link0["writes"], (link0, link1)

    for _ in range(3):
        push(A, context=1, user=71, message="m2")
    cb.expect(["m" * 200, "m2"], timeout=MAX_DELAY + TIMER + LATE + 0.5)
    time.sleep(0.2)
    da = counter_delta(remote_counters(A), ba)
    assert da["sent"] == 2 and da["merged"] == 2, f"a: {da}"
    assert counter_delta(remote_counters(B), bb)["received"] == 2

    # /metrics says the same as /v1/stats.
    for adm in (A, B):
        now = remote_counters(adm)
        m = adm.metrics()
        for k in COUNTERS:
            got = metric_sum(m, "ringwire_remote_messages_total", event=k)
            assert got == now[k], f"{adm.server.host}: ringwire_remote_messages_total{{event={k!r}}} = {got}, " \
                                  f"/v1/stats says {now[k]}"

"""A partition between two nodes, with history on: when the link comes back, the history
sockets on the far node are brought up to date without reconnecting (README "Cluster",
"Recovery").

Each node runs in its own network namespace (the fixture of test_cluster_partition.py); the
cluster link is a veth pair between them that the test cuts for a while. With the `nats`
store, a nats-server in the root namespace, reached by each node through its veth to the root,
holds the history: the clients on b end with every push made on a exactly once and in order,
also the users no push was made for after the heal (only the `Missed` frame a sends when the
link is back tells b about them). With the `memory` store, b never recorded the lost pushes:
the clients that missed some are told `recovered: false`.

Needs root (network namespaces); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from helpers import cluster_factory, metric_sum, wait_sockets  # noqa: F401 (fixture)
from nats_helpers import NATS, NatsServer
from test_cluster_partition import TOKEN, namespaces  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)

HISTORY = [{"path": "/ws", "kind": "raw", "history": True}]


def make(f, ns, extra, per_node=None):
    c = f.make("ab", ips={n: ns.public_ip(n) for n in "ab"}, cluster_ips={n: ns.link_ip(n) for n in "ab"},
               prefixes={n: ns.prefix(n) for n in "ab"}, token=TOKEN, per_node=per_node,
               extra={"server": {"cores": 1}, "remote": {"delay_ms": 0}, "endpoints": HISTORY, **extra})
    c.start("a")
    c.start("b")
    c.wait("a", {"b": "up"}, timeout=10)
    c.wait("b", {"a": "up"}, timeout=10)
    return c


def messages(client) -> list[dict]:
    return [json.loads(m) for m in client.texts()]


def connect_all(f, c, users):
    A = c.admin("a")
    clients = {u: f.client(c, "b", A.mint(user=u), name=f"user {u} on b") for u in users}
    for u, cl in clients.items():
        wait_sockets(A, 1, u, 1, what=f"user {u} on b")
        got = cl.wait_for(1, 10)
        first = json.loads(got[0][1]) if got else None
        assert first and first["type"] == "recovery" and first["resumed"] is False, f"user {u}: {first}"
    return clients


class Pusher:
    """Pushes from a, round robin over the users `active()` names, `rate` a second in batches
    every 10 ms; keeps what each user was sent: [(offset, text)]."""

    def __init__(self, admin, users, rate, active):
        self.admin, self.users, self.rate, self.active = admin, users, rate, active
        self.made: dict[int, list] = {u: [] for u in users}
        self.errors: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        k = 0
        per_batch = max(1, self.rate // 100)
        next_at = time.monotonic()
        while not self.stop.is_set():
            users = self.active()
            batch = []
            for _ in range(per_batch):
                u = users[k % len(users)]
                batch.append({"context": 1, "user": u, "message": f"{u}-{k}", "coalesce": False})
                k += 1
            r = self.admin.push_batch(batch)
            if r.status != 202:
                self.errors.append(r)
            else:
                positions = r.json.get("positions") or [None] * len(batch)
                for p, at in zip(batch, positions):
                    self.made[p["user"]].append((at and at["offset"], p["message"]))
            next_at += 0.01
            time.sleep(max(0.0, next_at - time.monotonic()))

    def finish(self):
        self.stop.set()
        self.thread.join(5)
        assert not self.errors, self.errors[:3]


def test_history_clients_catch_up_from_nats_after_a_partition(cluster_factory, namespaces, tmp_path):
    """A 10 s partition with pushes flowing from a to history clients on b, healed: every client
    ends with every push exactly once and in order, without reconnecting. The quiet users get no
    push after the heal, so only the catch-up brings theirs."""
    if not os.path.exists(NATS):
        pytest.fail("nats-server is not installed (tests/run.sh installs Debian's nats-server)")
    ns, f = namespaces, cluster_factory
    rate = int(os.environ.get("RINGWIRE_CATCHUP_RATE", "1000"))
    nats = NatsServer(tmp_path, host="0.0.0.0")
    try:
        o = ns.octet
        c = make(f, ns, {"history": {"store": "nats", "size": 10000, "ttl_secs": 300}},
                 per_node={n: {"nats": {"url": f"nats://10.{o}.{i}.1:{nats.port}"}} for i, n in ((1, "a"), (2, "b"))})
        A, B = c.admin("a"), c.admin("b")
        steady, quiet = list(range(100, 110)), list(range(110, 120))
        clients = connect_all(f, c, steady + quiet)
        # The quiet users' pushes stop 4 s into the partition (a has seen the link down by
        # then, so theirs are lost both on the failing link and while it is down).
        quiet_until = time.monotonic() + 5.0
        pusher = Pusher(A, steady + quiet, rate,
                        lambda: steady + quiet if time.monotonic() < quiet_until else steady)
        try:
            ns.partition(c, 10.0, before=1.0)
            time.sleep(1.5)
        finally:
            pusher.finish()
        made = pusher.made
        for u in steady + quiet:
            assert all(at is not None for at, _ in made[u]), f"user {u}: a push without a position"
        lost = {link["node"]: link for link in A.stats()["cluster"]["links"]}["b"]["lost"]
        assert lost > 0, "the partition should have cost pushes on the way"
        total = 0
        deadline = time.monotonic() + 15
        for u in steady + quiet:
            cl = clients[u]
            want = made[u]
            total += len(want)
            while True:
                msgs = messages(cl)
                pushes = [m for m in msgs if m["type"] == "push"]
                if len(pushes) >= len(want) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            time.sleep(0.2)
            msgs = messages(cl)
            assert not cl.closed.is_set(), f"user {u}: the client was closed ({cl.close_code})"
            markers = [m for m in msgs if m["type"] == "recovery"]
            assert markers[0] == msgs[0] and len(markers) == 1, f"user {u}: markers {markers}"
            got = [(m["offset"], m["data"]) for m in msgs if m["type"] == "push"]
            offsets = [at for at, _ in got]
            assert offsets == sorted(set(offsets)), f"user {u}: out of order or duplicated"
            missing = [w for w in want if w not in got]
            assert got == want, f"user {u}: got {len(got)} of {len(want)}; missing {missing[:5]}..."

        m = B.metrics()
        catchups = metric_sum(m, "ringwire_history_catchups_total")
        gaps = metric_sum(m, "ringwire_history_gaps_total")
        print(f"{total} pushes at {rate}/s, 10 s partition: a counted {lost} lost on the way; b caught up "
              f"{catchups:.0f} sockets, filled {gaps:.0f} gaps; every client has every push, once, in order")
        assert catchups >= len(quiet), f"b caught up {catchups} sockets"
    finally:
        nats.kill()


def test_history_clients_on_the_memory_store_are_told_what_a_partition_cost(cluster_factory, namespaces):
    """The memory store never recorded what the partition swallowed: after the heal, the clients
    that missed pushes get the recovery marker with recovered: false, without reconnecting; a
    client that missed nothing gets no marker."""
    ns, f = namespaces, cluster_factory
    c = make(f, ns, {"history": {"store": "memory"}})
    A = c.admin("a")
    missing, spared = [200, 201, 202], 203
    clients = connect_all(f, c, missing + [spared])
    assert A.push(context=1, user=spared, message="before the cut", coalesce=False).status == 202
    clients[spared].wait_for(2, 3)
    pusher = Pusher(A, missing, 200, lambda: missing)
    try:
        ns.partition(c, 5.0, before=0.5)
    finally:
        pusher.finish()
    deadline = time.monotonic() + 10
    for u in missing:
        cl = clients[u]
        while True:
            late = [m for m in messages(cl)[1:] if m["type"] == "recovery"]
            if late or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not cl.closed.is_set(), f"user {u}: the client was closed ({cl.close_code})"
        # Once, mostly: what the link lost and what the core did not send are told apart if
        # the core's list reaches a's link thread after the new link settled.
        assert late, f"user {u}: no marker after the heal"
        assert all(m["resumed"] is True and m["recovered"] is False for m in late), late
        pushes = [m for m in messages(cl) if m["type"] == "push"]
        assert len(pushes) < len(pusher.made[u]), f"user {u}: nothing was lost?"
    msgs = messages(clients[spared])
    assert [m["type"] for m in msgs] == ["recovery", "push"], msgs
    lost = {link["node"]: link for link in A.stats()["cluster"]["links"]}["b"]["lost"]
    catchups = metric_sum(c.admin("b").metrics(), "ringwire_history_catchups_total")
    print(f"memory store: a counted {lost} lost; b told {catchups:.0f} sockets recovered: false")
    assert catchups >= len(missing), catchups

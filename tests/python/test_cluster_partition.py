"""A network partition between two nodes, healed: each node runs in its own network namespace
with a veth to the root namespace (the test reaches its public and admin listeners there) and a
direct veth pair between the two namespaces that carries the cluster's QUIC link. Cutting that
pair must bring the link down on both sides and drop the other node's presence entries; healing
it must bring the link back and re-sync presence by itself, without the client reconnecting.

Needs root (network namespaces); skipped otherwise, or when `ip netns add` fails.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time

import pytest

from helpers import cluster_factory, remote_counters, wait_sockets  # noqa: F401 (fixture)

IP = shutil.which("ip") or "/usr/sbin/ip"
# Its coalesced push checks the wait-first timing.
REMOTE = {"mode": "wait", "delay_ms": 600, "max_delay_ms": 1500, "timer_ms": 100}
DELAY, MAX_DELAY, TIMER, LATE, AT_ONCE = 0.6, 1.5, 0.1, 0.35, 0.4
TOKEN = "partition-test-token"

pytestmark = pytest.mark.timeout(90)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([IP, *args], capture_output=True, text=True, timeout=15)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _free_octet() -> int:
    """A second octet o such that nothing on this host uses 10.o.0.0/16."""
    used = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show", "table", "all").stdout
    nets = []
    for word in used.split():
        try:
            nets.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            pass
    for o in [200 + (os.getpid() + k) % 50 for k in range(50)]:
        block = ipaddress.ip_network(f"10.{o}.0.0/16")
        if not any(n.version == 4 and n.overlaps(block) and n.prefixlen > 0 for n in nets):
            return o
    pytest.skip("no free 10.x.0.0/16 block for the test namespaces")


class Namespaces:
    """ns a and b; root <-> a on 10.o.1.0/30, root <-> b on 10.o.2.0/30, a <-> b on 10.o.3.0/30."""

    def __init__(self):
        pid = os.getpid()
        self.ns = {"a": f"rwt-{pid}-a", "b": f"rwt-{pid}-b"}
        self.root_veth = {"a": f"rw{pid}ra", "b": f"rw{pid}rb"}
        self.ns_veth = {"a": f"rw{pid}na", "b": f"rw{pid}nb"}
        self.link_veth = {"a": f"rw{pid}xa", "b": f"rw{pid}xb"}
        self.made: list[str] = []
        self.octet = None

    def setup(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("network namespaces need root")
        self.octet = o = _free_octet()
        for n, name in self.ns.items():
            ip("netns", "del", name, check=False)  # a leftover of a killed run with our pid
            r = ip("netns", "add", name, check=False)
            if r.returncode != 0:
                pytest.skip(f"`ip netns add` failed: {r.stderr.strip()}")
            self.made.append(name)
        for i, n in ((1, "a"), (2, "b")):
            ns, rv, nv = self.ns[n], self.root_veth[n], self.ns_veth[n]
            ip("link", "del", rv, check=False)
            ip("link", "add", rv, "type", "veth", "peer", "name", nv)
            ip("link", "set", nv, "netns", ns)
            ip("addr", "add", f"10.{o}.{i}.1/30", "dev", rv)
            ip("link", "set", rv, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"10.{o}.{i}.2/30", "dev", nv)
            ip("-n", ns, "link", "set", nv, "up")
        xa, xb = self.link_veth["a"], self.link_veth["b"]
        ip("link", "del", xa, check=False)
        ip("link", "add", xa, "type", "veth", "peer", "name", xb)
        ip("link", "set", xa, "netns", self.ns["a"])
        ip("link", "set", xb, "netns", self.ns["b"])
        ip("-n", self.ns["a"], "addr", "add", f"10.{o}.3.1/30", "dev", xa)
        ip("-n", self.ns["b"], "addr", "add", f"10.{o}.3.2/30", "dev", xb)
        ip("-n", self.ns["a"], "link", "set", xa, "up")
        ip("-n", self.ns["b"], "link", "set", xb, "up")

    def public_ip(self, n: str) -> str:
        return f"10.{self.octet}.{1 if n == 'a' else 2}.2"

    def link_ip(self, n: str) -> str:
        return f"10.{self.octet}.3.{1 if n == 'a' else 2}"

    def prefix(self, n: str) -> list[str]:
        return [IP, "netns", "exec", self.ns[n]]

    def cut(self, up: bool) -> None:
        ip("-n", self.ns["a"], "link", "set", self.link_veth["a"], "up" if up else "down")

    def partition(self, c, secs: float, before: float = 0.0) -> None:
        """After `before` s, cut the a <-> b link for `secs` s, heal it and wait until both
        nodes see it up again."""
        time.sleep(before)
        self.cut(up=False)
        time.sleep(secs)
        self.cut(up=True)
        c.wait("a", {"b": "up"}, timeout=20)
        c.wait("b", {"a": "up"}, timeout=20)

    def teardown(self) -> None:
        # Deleting a namespace destroys its veths, and with them their peers in the root.
        for name in self.made:
            ip("netns", "del", name, check=False)
        for rv in self.root_veth.values():
            ip("link", "del", rv, check=False)


@pytest.fixture
def namespaces(cluster_factory):
    # Depends on cluster_factory so that the nodes are stopped before the namespaces go.
    ns = Namespaces()
    try:
        ns.setup()
        yield ns
    finally:
        cluster_factory.teardown()  # records nodes that crashed, then stops them all
        ns.teardown()


def push(admin, **body) -> dict:
    r = admin.push(**body)
    assert r.status == 202 and isinstance(r.json, dict) and {"sockets", "remote_nodes"} <= r.json.keys(), \
        f"POST /v1/push {body}: {r!r}"
    return r.json


def test_partition_heals_by_itself(cluster_factory, namespaces):
    ns, f = namespaces, cluster_factory
    c = f.make("ab", ips={n: ns.public_ip(n) for n in "ab"}, cluster_ips={n: ns.link_ip(n) for n in "ab"},
               prefixes={n: ns.prefix(n) for n in "ab"}, token=TOKEN,
               extra={"server": {"cores": 1}, "remote": REMOTE})
    c.start("a")
    c.start("b")
    c.wait("a", {"b": "up"}, timeout=10)
    c.wait("b", {"a": "up"}, timeout=10)
    A, B = c.admin("a"), c.admin("b")

    s = A.mint(user=81)
    cb = f.client(c, "b", s)  # from the root namespace to b's public address
    r = wait_sockets(A, 1, 81, 1, what="client on b")
    assert r["nodes"] == [{"node": "a", "count": 0}, {"node": "b", "count": 1}], r
    t0 = time.monotonic()
    r = push(A, context=1, user=81, message="before", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (0, 1), r
    (t, _), = cb.expect(["before"], timeout=3)
    assert t - t0 < AT_ONCE, f"{t - t0:.3f}s"

    # Cut the a <-> b veth: both sides notice, a drops b's presence entries.
    ns.cut(up=False)
    t_cut = time.monotonic()
    c.wait("a", {"b": "down"}, timeout=12)
    c.wait("b", {"a": "down"}, timeout=12)
    assert time.monotonic() - t_cut < 10, f"link down seen {time.monotonic() - t_cut:.1f}s after the cut"
    r = wait_sockets(A, 1, 81, 0, timeout=8, what="partitioned from b")
    assert r == {"exists": False, "count": 0, "nodes": [{"node": "a", "count": 0}]}, r
    before = remote_counters(A)
    for coalesce in (False, True):
        r = push(A, context=1, user=81, message="lost in the partition", coalesce=coalesce)
        assert (r["sockets"], r["remote_nodes"]) == (0, 0), r
    # b still serves its own socket.
    assert B.sockets(1, 81)["count"] == 1
    assert push(B, context=1, user=81, message="local on b")["sockets"] == 1
    cb.expect(["before", "local on b"], timeout=3)

    # Heal: the link comes back and presence is re-synced without the client reconnecting.
    ns.cut(up=True)
    t_heal = time.monotonic()
    c.wait("a", {"b": "up"}, timeout=20)
    c.wait("b", {"a": "up"}, timeout=20)
    r = wait_sockets(A, 1, 81, 1, timeout=5, what="partition healed")
    assert r["nodes"] == [{"node": "a", "count": 0}, {"node": "b", "count": 1}], r
    print(f"healed: links up and presence re-synced {time.monotonic() - t_heal:.1f}s after the veth came up")
    assert not cb.closed.is_set(), f"client on b closed ({cb.close_code})"
    t0 = time.monotonic()
    r = push(A, context=1, user=81, message="after", coalesce=False)
    assert (r["sockets"], r["remote_nodes"]) == (0, 1), r
    t = cb.expect(["before", "local on b", "after"], timeout=3)[-1][0]
    assert t - t0 < AT_ONCE, f"{t - t0:.3f}s"
    t0 = time.monotonic()
    push(A, context=1, user=81, message="after, coalesced")
    t = cb.expect(["before", "local on b", "after", "after, coalesced"], timeout=MAX_DELAY + TIMER + LATE + 1)[-1][0]
    assert DELAY - 0.03 <= t - t0 <= DELAY + TIMER + LATE, f"{t - t0:.3f}s"
    time.sleep(0.3)
    assert cb.texts() == ["before", "local on b", "after", "after, coalesced"], cb.texts()
    d = {k: remote_counters(A)[k] - before[k] for k in before}
    assert d["sent"] == 2, f"a: nothing of the partition may have been sent later: {d}"


def test_a_partition_s_losses_are_counted_exactly(cluster_factory, namespaces):
    """Pushes flow from a to clients on b while the a <-> b link is cut for 10 s and healed: every
    push the clients miss is counted in a's ringwire_cluster_lost_total{peer="b"} (written and
    never confirmed, or not written because the link was down), no more and no less."""
    import threading

    ns, f = namespaces, cluster_factory
    rate = int(os.environ.get("RINGWIRE_PARTITION_RATE", "2000"))  # pushes per second
    users = list(range(100, 120))
    c = f.make("ab", ips={n: ns.public_ip(n) for n in "ab"}, cluster_ips={n: ns.link_ip(n) for n in "ab"},
               prefixes={n: ns.prefix(n) for n in "ab"}, token=TOKEN,
               extra={"server": {"cores": 1}, "remote": {"delay_ms": 0}})
    c.start("a")
    c.start("b")
    c.wait("a", {"b": "up"}, timeout=10)
    c.wait("b", {"a": "up"}, timeout=10)
    A = c.admin("a")
    clients = {u: f.client(c, "b", A.mint(user=u), name=f"user {u} on b") for u in users}
    for u in users:
        wait_sockets(A, 1, u, 1, what=f"user {u} on b")

    made: dict[int, list[str]] = {u: [] for u in users}
    stop = threading.Event()
    errors: list = []

    def pusher():
        k = 0
        per_batch = max(1, rate // 100)
        next_at = time.monotonic()
        while not stop.is_set():
            batch = []
            for _ in range(per_batch):
                u = users[k % len(users)]
                batch.append({"context": 1, "user": u, "message": f"{u}-{k}", "coalesce": False})
                k += 1
            # A push counts as made once a accepted it: a batch whose request failed (refused, or
            # no answer in time, so a may or may not have taken it) ends the run as an error
            # rather than as pushes the clients "missed" that a never had.
            try:
                r = A.push_batch(batch)
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(e)
                return
            if r.status != 202:
                errors.append(r)
                return
            for p in batch:
                made[p["user"]].append(p["message"])
            next_at += 0.01
            time.sleep(max(0.0, next_at - time.monotonic()))

    t = threading.Thread(target=pusher, daemon=True)
    t.start()
    try:
        ns.partition(c, 10.0, before=1.0)
        for u in users:
            wait_sockets(A, 1, u, 1, timeout=5, what=f"user {u} on b after the heal")
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(5)
    assert not errors, errors[:3]
    total = sum(len(v) for v in made.values())
    # Everything settles: the link is back, so nothing stays unconfirmed.
    deadline = time.monotonic() + 5
    while True:
        links = {link["node"]: link for link in A.stats()["cluster"]["links"]}
        if links["b"]["unconfirmed"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert links["b"]["unconfirmed"] == 0, links["b"]
    # Confirmed means b took the pushes; its clients may still be reading them. Wait until no
    # client has received anything for a second (at most 15 s).
    received, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 15
    while time.monotonic() < deadline:
        n = sum(len(cl.texts()) for cl in clients.values())
        if n != received:
            received, quiet_since = n, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            break
        time.sleep(0.1)
    missing = 0
    for u, client in clients.items():
        want = made[u]
        texts = client.texts()
        assert len(texts) == len(set(texts)), f"user {u}: duplicates"
        assert set(texts) <= set(want), f"user {u}: unknown pushes"
        # In order: what arrived is a subsequence of what was made.
        order = {m: i for i, m in enumerate(want)}
        assert [order[m] for m in texts] == sorted(order[m] for m in texts), f"user {u}: out of order"
        missing += len(want) - len(texts)
    lost = links["b"]["lost"]
    print(f"{total} pushes at {rate}/s, 10 s partition: clients missed {missing}, a counted {lost} lost "
          f"(metric ringwire_cluster_lost_total{{peer=\"b\"}})")
    assert missing > 0, "the partition should have cost pushes"
    assert lost == missing, f"a counts {lost} lost, the clients missed {missing}"
    metrics = A.request("GET", "/metrics").body.decode()
    assert f'ringwire_cluster_lost_total{{peer="b"}} {lost}' in metrics

"""Cluster membership on NATS (`[cluster] discovery = "nats"`): nodes on 127.0.0.1-.4 with no
peer list, a real nats-server (Debian's) started here.

Contract under test (README "Cluster"):
  every node registers in the members bucket and watches it: nodes find each other, and a
  node started later joins the running cluster with no change or restart of the others; a
  node that drains (SIGTERM) tells its peers first: they confirm that their cores stopped
  routing to it before it closes a socket, its presence is gone from their directories
  within a second, no push is sent to it after that, and it is forgotten once gone; a node
  killed with SIGKILL is dropped by the link's idle timeout (about 3 s) and rejoins by
  itself when restarted; NATS down: the links and pushes go on, /v1/stats says so
  (cluster.discovery.nats), and once NATS is back the members converge again (a new node
  joins).
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from helpers import cluster_factory, parse_metrics  # noqa: F401 (fixture)
from nats_helpers import nats  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(90)

DISCOVERY = {"discovery": "nats", "peers": [], "member_ttl_ms": 3000}


def make(cluster_factory, nats, names, per_node=None):
    return cluster_factory.make(names, extra={
        "cluster": DISCOVERY,
        "nats": {"url": nats.url},
        # Sent at once: the timings below are membership's, not the coalescer's.
        "remote": {"delay_ms": 0},
    }, per_node=per_node)


def links_full(c, n) -> dict:
    return {link["node"]: link for link in c.admin(n).stats()["cluster"]["links"]}


def wait_for(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout}s")


def remote_nodes_of(c, n, user) -> set:
    return {e["node"] for e in c.admin(n).sockets(1, user)["nodes"][1:]}


def log_index(server, needle) -> int | None:
    return next((i for i, line in enumerate(list(server.stderr_lines)) if needle in line), None)


def test_nodes_find_each_other_a_fourth_joins_and_a_drained_one_leaves_first(nats, cluster_factory):
    c = make(cluster_factory, nats, ["a", "b", "c", "d"], per_node={"d": {"server": {"drain_secs": 3}}})
    for n in "abc":
        c.start(n)
    for n in "abc":
        c.wait(n, {p: "up" for p in "abc" if p != n}, 10)
    for n in "abc":
        assert c.admin(n).stats()["cluster"]["discovery"]["nats"] == "connected"

    # d joins the running cluster: nobody else is changed or restarted.
    t0 = time.monotonic()
    c.start("d")
    on_d = cluster_factory.client(c, "d", c.admin("d").mint(40), name="user 40 on d")
    on_a = cluster_factory.client(c, "a", c.admin("a").mint(41), name="user 41 on a")
    i = 0
    while not on_d.texts():
        assert time.monotonic() - t0 < 5, "no cross-node push reached the new node within 5 s of its start"
        c.admin("b").push(context=1, user=40, message=f"first-{i}")
        i += 1
        time.sleep(0.02)
    first = time.monotonic() - t0
    print(f"start of d to its first cross-node push: {first * 1000:.0f} ms")
    for n in "abcd":
        c.wait(n, {p: "up" for p in "abcd" if p != n}, 5)
    members = parse_metrics(c.admin("a").request("GET", "/metrics").body.decode())
    assert members['ringwire_cluster_members{state="up"}'] == 3, members
    assert c.admin("d").push(context=1, user=41, message="from d")
    on_a.expect(["from d"], 3, "push made on the new node")

    # d drains: it announces leaving, its peers confirm, only then are its sockets closed.
    d = c.servers["d"]
    c.killed.add("d")  # it exits by itself: not a crash
    d.proc.send_signal(signal.SIGTERM)
    term = time.monotonic()
    wait_for("d logs that it left the cluster", lambda: log_index(d, "cluster: left") is not None, 3)
    left_line = d.stderr_lines[log_index(d, "cluster: left")]
    assert "every linked peer stopped routing here" in left_line, left_line
    draining = wait_for("d starts closing its sockets", lambda: log_index(d, "draining sockets"), 3)
    assert log_index(d, "cluster: left") < draining, "sockets were closed before the peers confirmed"
    for n in "abc":
        wait_for(f"d's presence gone on {n}", lambda n=n: "d" not in remote_nodes_of(c, n, 40), 1.0)
    gone = time.monotonic() - term
    print(f"SIGTERM of d to its presence gone on a, b and c: {gone * 1000:.0f} ms")
    assert gone < 1.5
    assert not on_d.closed.is_set() or on_d.close_code == 1001
    assert all(links_full(c, n).get("d", {"state": "leaving"})["state"] == "leaving" for n in "abc")
    sent = {n: links_full(c, n).get("d", {}).get("messages_sent") for n in "abc"}
    for n in "abc":
        r = c.admin(n).push(context=1, user=40, message=f"after leave via {n}")
        assert r.status == 202 and r.json["remote_nodes"] == 0, f"{n} still routes to the leaving node: {r!r}"
    time.sleep(0.3)
    for n in "abc":
        now = links_full(c, n).get("d", {}).get("messages_sent")
        assert now in (sent[n], None), f"{n} sent d {now - sent[n]} pushes after d announced leaving"
    assert on_d.wait_closed(6) == 1001
    assert not any(t.startswith("after leave") for t in on_d.texts())
    assert d.proc.wait(10) == 0
    # Gone from the bucket: forgotten by the others.
    for n in "abc":
        c.wait(n, {p: "up" for p in "abc" if p != n}, 5)


def test_a_killed_node_is_dropped_and_rejoins_by_itself(nats, cluster_factory):
    c = make(cluster_factory, nats, ["a", "b", "c"])
    for n in "abc":
        c.start(n)
    for n in "abc":
        c.wait(n, {p: "up" for p in "abc" if p != n}, 10)
    c.kill("c")
    t = time.monotonic()
    for n in "ab":
        wait_for(f"c dropped on {n}", lambda n=n: c.links(n).get("c") != "up", 5)
    dropped = time.monotonic() - t
    print(f"kill -9 of c to dropped on a and b: {dropped * 1000:.0f} ms")
    assert dropped < 6, "the link idle timeout is 3 s (plus up to a keepalive period)"
    c.start("c")
    for n in "abc":
        c.wait(n, {p: "up" for p in "abc" if p != n}, 8)
    on_c = cluster_factory.client(c, "c", c.admin("c").mint(7), name="user 7 on c")
    wait_for("a knows user 7 is on c", lambda: "c" in remote_nodes_of(c, "a", 7), 3)
    c.admin("a").push(context=1, user=7, message="after rejoin")
    on_c.expect(["after rejoin"], 3)


def test_nats_down_links_and_pushes_go_on_and_members_converge_when_it_is_back(nats, cluster_factory):
    c = make(cluster_factory, nats, ["a", "b", "c"])
    for n in "ab":
        c.start(n)
    for n in "ab":
        c.wait(n, {p: "up" for p in "ab" if p != n}, 10)
    on_b = cluster_factory.client(c, "b", c.admin("b").mint(50), name="user 50 on b")
    wait_for("a knows user 50 is on b", lambda: "b" in remote_nodes_of(c, "a", 50), 3)

    made: list[str] = []
    errors: list = []
    stop = threading.Event()

    def pusher():
        k = 0
        while not stop.is_set():
            r = c.admin("a").push(context=1, user=50, message=f"p{k}")
            if r.status != 202 or r.json["remote_nodes"] != 1:
                errors.append(r)
            made.append(f"p{k}")
            k += 1
            time.sleep(0.02)

    t = threading.Thread(target=pusher, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        nats.kill()
        for n in "ab":
            wait_for(f"{n} says nats is down",
                     lambda n=n: c.admin(n).stats()["cluster"]["discovery"]["nats"] == "disconnected", 5)
        time.sleep(3.5)  # longer than member_ttl_ms: nobody may be forgotten meanwhile
        for n in "ab":
            assert c.links(n) == {p: "up" for p in "ab" if p != n}, "a link changed while NATS was down"
            metrics = parse_metrics(c.admin(n).request("GET", "/metrics").body.decode())
            assert metrics.get("ringwire_cluster_discovery_nats_connected") == 0, metrics
        nats.start()
        for n in "ab":
            wait_for(f"{n} reconnects to nats",
                     lambda n=n: c.admin(n).stats()["cluster"]["discovery"]["nats"] == "connected", 10)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(5)
    assert not errors, f"pushes not routed to b while NATS was away: {errors[:3]}"
    on_b.expect(made, 5, "every push made while NATS was down and back")
    # Membership changes resume: a new node joins.
    c.start("c")
    for n in "abc":
        c.wait(n, {p: "up" for p in "abc" if p != n}, 10)

"""Pushes published on NATS (`[nats] ingress = true`): a real nats-server (Debian's), real
ringwire nodes, real WebSocket clients; the tests publish with a raw NATS protocol client.

Contract under test (README "Pushes from NATS"):
  `ringwire.push` carries the body of POST /v1/push, `ringwire.push.batch` that of
  POST /v1/push/batch, `ringwire.push.<context>.<user>` a push whose body may leave out
  context and user (when given they must agree); every node subscribes in the queue group
  `ringwire`, so each message is taken by exactly one node, which delivers it cluster-wide;
  a message with a reply subject is answered with the admin API's JSON (counts or
  {"error"}, the same error text as the admin API's); refused messages are counted in
  ringwire_nats_ingress_rejected_total{reason} and never stop anything; a flood is bounded
  (the client drops past nats.ingress_buffer and counts it) and what was taken is delivered
  in the order published; the server starts and serves with NATS down and takes pushes once
  NATS is up, again after an outage.
"""

from __future__ import annotations

import json
import time

import pytest

from helpers import (Admin, WsClient, cluster_factory, free_port, metric_sum, push_servers,  # noqa: F401 (fixtures)
                     wait_sockets, wait_until, ws_sync_connect, ws_url)
from nats_helpers import NatsClient, NatsServer, nats  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(90)

SUBJECT = "ringwire.push"
CLIENT_NAME = "ringwire-ingress"
SUBSCRIBED = sorted([SUBJECT, SUBJECT + ".>"])


def ingress_config(nats_server, **extra) -> dict:
    return {"nats": {"url": nats_server.url, "ingress": True, **extra}}


def wait_ingress(nats_server, nodes: int = 1, timeout: float = 10.0) -> None:
    """Until `nodes` ingress connections hold both subscriptions on nats-server."""
    wait_until(lambda: nats_server.subscriptions(CLIENT_NAME) == [SUBSCRIBED] * nodes, timeout=timeout,
               what=f"{nodes} ingress subscription(s) on nats-server")


def client_of(server, admin: Admin, user: int, context: int = 1) -> WsClient:
    s = admin.mint(user=user, context=context)
    return WsClient(ws_sync_connect(ws_url(server, s["session"]), s), f"user {user}")


def ingress_metrics(admin: Admin) -> dict:
    m = admin.metrics()
    out = {k: metric_sum(m, f"ringwire_nats_ingress_{k}") for k in
           ("connected", "pushes_total", "dropped_total", "in_flight")}
    out["push"] = metric_sum(m, "ringwire_nats_ingress_messages_total", kind="push")
    out["batch"] = metric_sum(m, "ringwire_nats_ingress_messages_total", kind="batch")
    for reason in ("json", "invalid", "too_large", "subject"):
        out[reason] = metric_sum(m, "ringwire_nats_ingress_rejected_total", reason=reason)
    return out


def test_a_push_published_on_nats_reaches_the_users_sockets_in_order(push_servers, nats):
    server = push_servers.start(**ingress_config(nats))
    admin = Admin(server)
    wait_ingress(nats)
    a, b = client_of(server, admin, 7), client_of(server, admin, 7)
    other = client_of(server, admin, 8)
    wait_sockets(admin, 1, 7, 2)
    pub = NatsClient(nats.port)
    try:
        pub.publish(SUBJECT, {"context": 1, "user": 7, "path": "/ws", "message": "hello"})
        pub.publish(f"{SUBJECT}.1.7", {"message": {"id": 3, "kind": "mail"}})
        pub.publish(f"{SUBJECT}.1.7", {"context": 1, "user": 7, "message": "named twice, agreeing"})
        pub.publish(SUBJECT, {"context": 1, "user": 7, "path": "/socket.io/*", "message": "not this path"})
        for i in range(200):
            pub.publish(f"{SUBJECT}.1.7", {"message": f"n{i}"})
        pub.flush()
        want = ["hello", json.dumps({"id": 3, "kind": "mail"}, separators=(",", ":")), "named twice, agreeing"]
        want += [f"n{i}" for i in range(200)]
        for ws in (a, b):
            got = [m for _, m in ws.wait_for(len(want), 10)]
            assert got == want, f"{ws.name}: first differences {[(x, y) for x, y in zip(got, want) if x != y][:3]}"
        time.sleep(0.3)
        assert len(a.texts()) == len(b.texts()) == len(want), "a push arrived twice or unasked"
        assert other.texts() == [], other.texts()
        m = ingress_metrics(admin)
        assert (m["connected"], m["push"], m["batch"], m["pushes_total"]) == (1, 204, 0, 204), m
        stats = admin.stats()["nats_ingress"]
        assert stats["connected"] is True and stats["pushes"] == 204, stats
    finally:
        pub.close()
        for c in (a, b, other):
            c.close()


def test_a_batch_on_the_batch_subject_and_the_answers_with_a_reply_subject(push_servers, nats):
    server = push_servers.start(**ingress_config(nats))
    admin = Admin(server)
    wait_ingress(nats)
    u1, u1b, u2 = client_of(server, admin, 1), client_of(server, admin, 1), client_of(server, admin, 2)
    wait_sockets(admin, 1, 1, 2)
    wait_sockets(admin, 1, 2, 1)
    pub = NatsClient(nats.port)
    try:
        batch = {"pushes": [
            {"context": 1, "user": 1, "message": "b1"},
            {"context": 1, "user": 2, "path": "/ws", "message": "b2"},
            {"context": 1, "user": 2, "path": "/socket.io/*", "message": "nobody"},
            {"context": 1, "user": 99, "message": "nobody either"},
        ]}
        pub.publish(f"{SUBJECT}.batch", batch)  # fire-and-forget
        u1.expect(["b1"]), u1b.expect(["b1"]), u2.expect(["b2"])
        # The same batch as a request: the admin API's answer.
        assert pub.request(f"{SUBJECT}.batch", batch) == {"pushes": 4, "sockets": 3, "remote_nodes": 0}
        u1.expect(["b1", "b1"]), u2.expect(["b2", "b2"])
        http = admin.push(context=1, user=1, message="via http")
        answer = pub.request(SUBJECT, {"context": 1, "user": 1, "message": "via nats"})
        assert answer == http.json == {"sockets": 2, "remote_nodes": 0}, (answer, http)
        assert pub.request(f"{SUBJECT}.1.2", {"message": "x"}) == {"sockets": 1, "remote_nodes": 0}
        assert pub.request(f"{SUBJECT}.1.5", {"message": "to no one"}) == {"sockets": 0, "remote_nodes": 0}
        u1.expect(["b1", "b1", "via http", "via nats"])
        u2.expect(["b2", "b2", "x"])
        m = ingress_metrics(admin)
        assert (m["push"], m["batch"], m["pushes_total"]) == (3, 2, 11), m
    finally:
        pub.close()
        for c in (u1, u1b, u2):
            c.close()


# (subject, body, reason, text the error must hold); bodies that are bytes are sent as they are.
BAD = [
    (SUBJECT, b"not json", "json", "invalid push: expected"),
    (SUBJECT, b"", "json", "invalid push: EOF"),
    (SUBJECT, {"context": 1, "message": "x"}, "json", "missing field `user`"),
    (SUBJECT, {"context": "1", "user": 7, "message": "x"}, "json", "invalid type"),
    (SUBJECT, {"context": 1, "user": 7, "message": "x", "extra": 1}, "json", "unknown field `extra`"),
    (SUBJECT, {"context": 1, "user": 7}, "json", "missing field `message`"),
    (SUBJECT, {"context": -1, "user": 7, "message": "x"}, "json", "invalid value"),
    (f"{SUBJECT}.batch", {"pushes": {}}, "json", "invalid batch: invalid type"),
    (f"{SUBJECT}.batch", [1], "json", "invalid batch"),
    (f"{SUBJECT}.1.7", b"[]", "json", "invalid push"),
    (f"{SUBJECT}.1.7", {"message": "x", "user": 8}, "invalid", "user 8 in the body disagrees with user 7"),
    (SUBJECT, {"context": 1, "user": 7, "path": "p" * 1025, "message": "x"}, "invalid",
     "invalid push: path filter longer than 1024 bytes"),
    (SUBJECT, {"context": 1, "user": 7, "message": "m" * ((1 << 20) + 1)}, "invalid",
     "invalid push: message longer than 1048576 bytes"),
    (f"{SUBJECT}.batch", {"pushes": [{"context": 1, "user": 7, "message": "x"}] * 10001}, "invalid",
     "at most 10000 pushes per batch"),
    (f"{SUBJECT}.batch", {"pushes": [{"context": 1, "user": 7, "message": "x"},
                                     {"context": 1, "user": 7, "path": "p" * 1025, "message": "x"}]},
     "invalid", "pushes[1]: path filter longer than 1024 bytes"),
    (SUBJECT, b" " * (3 << 20) + b"{}", "too_large", "at most 2097152"),
    (f"{SUBJECT}.x", {"message": "x"}, "subject", "expected ringwire.push"),
    (f"{SUBJECT}.1", {"message": "x"}, "subject", "expected ringwire.push"),
    (f"{SUBJECT}.1.7.9", {"message": "x"}, "subject", "expected ringwire.push"),
    (f"{SUBJECT}.1.4294967296", {"message": "x"}, "subject", "a decimal user, or u and the base64url"),
    (f"{SUBJECT}.1.u", {"message": "x"}, "subject", "a decimal user, or u and the base64url"),
    (f"{SUBJECT}.1.uAA", {"message": "x"}, "subject", "a decimal user, or u and the base64url"),
]


def test_malformed_messages_are_counted_answered_and_change_nothing(push_servers, tmp_path):
    n = NatsServer(tmp_path, max_payload=4 << 20)  # room for the oversized ones
    try:
        server = push_servers.start(**ingress_config(n))
        admin = Admin(server)
        wait_ingress(n)
        ws = client_of(server, admin, 7)
        wait_sockets(admin, 1, 7, 1)
        pub = NatsClient(n.port)
        want = {"json": 0, "invalid": 0, "too_large": 0, "subject": 0}
        for subject, body, reason, text in BAD:
            want[reason] += 2
            pub.publish(subject, body)  # fire-and-forget first, then asked
            answer = pub.request(subject, body)
            assert set(answer) == {"error"} and text in answer["error"], (subject, reason, answer)
            if subject == SUBJECT and reason != "too_large":
                # The admin API refuses the same body with the same text.
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                r = admin.request("POST", "/v1/push", raw=raw)
                assert r.status == 400 and r.json == answer, (subject, r, answer)
        pub.flush()
        wait_until(lambda: all(ingress_metrics(admin)[k] == v for k, v in want.items()), timeout=5,
                   what=f"rejected counts {want}")
        m = ingress_metrics(admin)
        assert (m["push"], m["batch"], m["pushes_total"]) == (0, 0, 0), m
        assert ws.texts() == [], f"a refused message was delivered: {ws.texts()[:3]}"
        # Still taking pushes, and the server still serves.
        assert pub.request(f"{SUBJECT}.1.7", {"message": "still here"}) == {"sockets": 1, "remote_nodes": 0}
        ws.expect(["still here"])
        assert admin.push_ok(context=1, user=7, message="and http") == 1
        ws.expect(["still here", "and http"])
        # Rate-limited log: far fewer lines than refused messages, each naming the subject.
        lines = [line for line in server.stderr_lines if "nats ingress: message refused" in line]
        assert 1 <= len(lines) < len(BAD), lines
        pub.close()
        ws.close()
    finally:
        n.kill()


def test_a_flood_is_bounded_and_what_is_taken_arrives_in_order(push_servers, nats):
    server = push_servers.start(**ingress_config(nats, ingress_buffer=8, ingress_max_in_flight=2),
                                limits={"max_outbound_bytes": 64 << 20})
    admin = Admin(server)
    wait_ingress(nats)
    ws = client_of(server, admin, 3)
    wait_sockets(admin, 1, 3, 1)
    pub = NatsClient(nats.port, timeout=30)
    total = 5000
    blob = b"".join(
        f"PUB {SUBJECT}.1.3 {len(body)}\r\n".encode() + body + b"\r\n"
        for body in (json.dumps({"message": f"f{i:05}"}).encode() for i in range(total)))
    pub._send(blob)
    pub.flush()

    def settled():
        m = ingress_metrics(admin)
        return m["in_flight"] == 0 and m["pushes_total"] + m["dropped_total"] == total and m
    # Every message was either taken or dropped (and counted): none is unaccounted for.
    m = wait_until(settled, timeout=20, what=f"the {total} messages taken or counted as dropped")
    taken = int(m["pushes_total"])
    assert m["dropped_total"] > 0 and taken > 0, f"no drop with an 8-message buffer under {total} messages: {m}"
    got = [t for _, t in ws.wait_for(taken, 20)]
    assert len(got) == taken, f"taken {taken}, delivered {len(got)}"
    assert got == sorted(got), "pushes taken out of order"
    # Still working after the flood.
    assert pub.request(f"{SUBJECT}.1.3", {"message": "after"}) == {"sockets": 1, "remote_nodes": 0}
    assert ws.wait_for(taken + 1, 5)[-1][1] == "after"
    pub.close()
    ws.close()


def test_a_cluster_takes_each_push_once_and_delivers_it_on_the_other_node(cluster_factory, nats):
    c = cluster_factory.make(["a", "b"], extra={**ingress_config(nats), "remote": {"delay_ms": 50, "timer_ms": 20}})
    c.start_all()
    wait_ingress(nats, nodes=2)
    a, b = c.admin("a"), c.admin("b")
    s = a.mint(user=42)
    ws = cluster_factory.client(c, "b", s)
    wait_sockets(a, 1, 42, 1)
    pub = NatsClient(nats.port)
    total = 40
    answers = []
    for i in range(total):
        body = {"context": 1, "user": 42, "message": f"p{i}", "coalesce": i % 2 == 0}
        answers.append(pub.request(SUBJECT, body))
    # Taken on b: reached its socket there; taken on a: queued for b.
    on_b = answers.count({"sockets": 1, "remote_nodes": 0})
    on_a = answers.count({"sockets": 0, "remote_nodes": 1})
    assert on_a + on_b == total, answers
    assert on_a > 0 and on_b > 0, f"one node took all {total} pushes: {on_a} on a, {on_b} on b"
    ma, mb = ingress_metrics(a), ingress_metrics(b)
    assert (ma["pushes_total"], mb["pushes_total"]) == (on_a, on_b), (ma, mb)
    ws.expect([f"p{i}" for i in range(total)], timeout=10, what="every push once")
    # And a batch on either node: each push once.
    pub.publish(f"{SUBJECT}.batch", {"pushes": [{"context": 1, "user": 42, "message": f"q{i}"} for i in range(5)]})
    pub.flush()
    ws.expect([f"p{i}" for i in range(total)] + [f"q{i}" for i in range(5)], timeout=10, what="the batch once")
    time.sleep(0.5)
    assert len(ws.texts()) == total + 5, "a push arrived twice"
    pub.close()


def test_the_server_starts_without_nats_and_takes_pushes_once_it_is_up(push_servers, tmp_path):
    n = NatsServer(tmp_path, port=free_port(), start=False)
    try:
        t0 = time.monotonic()
        server = push_servers.start(**ingress_config(n))
        assert time.monotonic() - t0 < 10
        admin = Admin(server)
        ws = client_of(server, admin, 9)
        wait_sockets(admin, 1, 9, 1)
        assert admin.push_ok(context=1, user=9, message="http while nats is down") == 1
        ws.expect(["http while nats is down"])
        assert ingress_metrics(admin)["connected"] == 0
        time.sleep(2.5)  # several reconnect attempts
        unreachable = [line for line in server.stderr_lines if "NATS is unreachable" in line]
        assert len(unreachable) == 1 and "WARN" in unreachable[0], server.stderr_lines

        n.start()
        wait_ingress(n)
        wait_until(lambda: ingress_metrics(admin)["connected"] == 1, timeout=5, what="connected gauge")
        pub = NatsClient(n.port)
        assert pub.request(f"{SUBJECT}.1.9", {"message": "nats is up"}) == {"sockets": 1, "remote_nodes": 0}
        ws.expect(["http while nats is down", "nats is up"])
        pub.close()

        # An outage: one warning, the server keeps serving; NATS back, pushes again.
        n.kill()
        wait_until(lambda: ingress_metrics(admin)["connected"] == 0, timeout=10, what="disconnected gauge")
        assert admin.push_ok(context=1, user=9, message="http during the outage") == 1
        time.sleep(2.0)
        lost = [line for line in server.stderr_lines if "lost NATS" in line or "NATS is unreachable" in line]
        assert len(lost) == 2, lost
        n.start()
        wait_ingress(n)
        pub = NatsClient(n.port)
        assert pub.request(f"{SUBJECT}.1.9", {"message": "back"}) == {"sockets": 1, "remote_nodes": 0}
        ws.expect(["http while nats is down", "nats is up", "http during the outage", "back"])
        pub.close()
        ws.close()
    finally:
        n.kill()


def test_a_fast_publisher_within_the_defaults_loses_nothing_and_keeps_its_order(push_servers, nats):
    """Bursts of 500 (each flushed) with the default buffer and 64 pushes in flight: every push
    is taken, none dropped, and they reach the sockets of the user in the order published."""
    server = push_servers.start(**ingress_config(nats), limits={"max_outbound_bytes": 64 << 20})
    admin = Admin(server)
    wait_ingress(nats)
    wss = [client_of(server, admin, 3), client_of(server, admin, 3)]
    wait_sockets(admin, 1, 3, 2)
    pub = NatsClient(nats.port, timeout=30)
    total, burst = 20000, 500
    for start in range(0, total, burst):
        pub._send(b"".join(
            f"PUB {SUBJECT}.1.3 {len(body)}\r\n".encode() + body + b"\r\n"
            for body in (json.dumps({"message": f"f{i:05}"}).encode() for i in range(start, start + burst))))
        pub.flush()
    want = [f"f{i:05}" for i in range(total)]
    for ws in wss:
        got = [t for _, t in ws.wait_for(total, 30)]
        assert len(got) == total, f"{ws.name}: {len(got)} of {total}: {ingress_metrics(admin)}"
        assert got == want, f"{ws.name}: out of order at {next(i for i, (x, y) in enumerate(zip(got, want)) if x != y)}"
    m = ingress_metrics(admin)
    assert (m["pushes_total"], m["dropped_total"]) == (total, 0), m
    pub.close()
    for ws in wss:
        ws.close()

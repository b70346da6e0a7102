"""String user ids: a user is a u32 or a string of 1-128 bytes of UTF-8 without control
characters, everywhere a user is named.

Contract under test (README "User ids"):
  POST /v1/sessions, /v1/push, /v1/push/batch take "user" as a JSON integer 0..4294967295 or a
  string; GET /v1/sockets?user= takes its text (percent-encoded); a string that is the canonical
  decimal of a u32 ("42") is that number; anything else is 400 {"error": <why>} that names
  the problem (empty, too long, control character, not a string or integer);
  a string user's session works on every node of a cluster, its pushes reach its sockets on
  every node from either node, it is counted and terminated by its string id;
  the webhook carries the user as a string (a number for numeric users);
  a JWT `sub` string and a connect-proxy answer's string `user` name string users;
  the real socket.io-client connects with a string user's session and gets its pushes;
  history in NATS (`store = "nats"`) resumes a string user's socket on the other node;
  the NATS ingress takes a string user in the body or as `<subject>.<context>.u<base64url>`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.parse
import uuid

import pytest

from helpers import (BINARY, HOST, ROOT, Admin, cluster_factory, history_connect, push_servers,  # noqa: F401
                     recv_json, recv_text, run, until_marker, wait_sockets, wait_until)
from nats_helpers import NatsClient, nats  # noqa: F401 (fixture)
from test_jwt import SECRET_HEX, mint as mint_jwt
from test_proxy_auth import App
from test_nats_ingress import SUBJECT, client_of, ingress_config, wait_ingress
from test_webhook import Receiver

pytestmark = pytest.mark.timeout(60)

UUID = str(uuid.UUID(int=0x6F1C1D2E8D3B4B0C9A592B8F7D1E0A44))
# 128 bytes of UTF-8 (64 two-byte characters): the longest user id.
LONGEST = "é" * 64
ALICE = "alice@example.com"


def sockets_of(admin: Admin, user, context: int = 1) -> int:
    return admin.sockets(context, user)["count"]


def test_string_users_through_a_two_node_cluster(cluster_factory):
    receiver = Receiver()
    try:
        c = cluster_factory.make(["a", "b"], extra={
            "server": {"cores": 2},
            "webhook": {"url": receiver.url, "flush_ms": 100, "timeout_ms": 2000},
        })
        c.start_all()
        a, b = c.admin("a"), c.admin("b")
        users = [ALICE, UUID, LONGEST]
        sessions = {u: a.mint(user=u) for u in users}
        # A numeric user named by its text is that number: a v1 session (55 characters).
        s42 = b.mint(user="42")
        assert len(s42["session"]) == 55 and len(a.mint(user=42)["session"]) == 55, s42
        assert len(sessions[LONGEST]["session"]) == 222, sessions[LONGEST]
        clients = {u: [cluster_factory.client(c, n, sessions[u], name=f"{u[:8]} on {n}") for n in "ab"]
                   for u in users}
        c42 = cluster_factory.client(c, "a", s42, name="42 on a")
        for u in users:
            for admin in (a, b):
                wait_sockets(admin, 1, u, 2, what=f"{u!r} on both nodes")
        wait_sockets(b, 1, 42, 1)
        assert b.sockets(1, "42")["count"] == 1

        # A push from either node reaches the user's sockets on both, and only them.
        for u in users:
            for admin, name in ((a, "a"), (b, "b")):
                r = admin.push(context=1, user=u, message=f"to {u} via {name}")
                assert r.status == 202 and r.json == {"sockets": 1, "remote_nodes": 1}, (u, name, r)
        for u in users:
            for cl in clients[u]:
                cl.expect([f"to {u} via a", f"to {u} via b"], timeout=5)
        r = b.push(context=1, user="42", message="to 42 as a string")
        assert r.json == {"sockets": 0, "remote_nodes": 1}, r
        r = b.push_batch([{"context": 1, "user": 42, "message": "to 42 as a number"},
                          {"context": 1, "user": ALICE, "message": {"json": [1, 2]}}])
        assert r.status == 202 and r.json["pushes"] == 2 and r.json["sockets"] == 1, r
        c42.expect(["to 42 as a string", "to 42 as a number"], timeout=5)
        for cl in clients[ALICE]:
            assert cl.wait_for(3, 5)[-1][1] == '{"json":[1,2]}'
        # Another context is another user.
        assert a.push(context=2, user=ALICE, message="x").json == {"sockets": 0, "remote_nodes": 0}

        # The webhook names string users by their string, numeric ones by their number.
        def connects():
            return [e for e in receiver.events() if e["type"] == "connect"]
        wait_until(lambda: len(connects()) == 7, 5, what="7 connect events")
        by_session = {e["session"]: e for e in connects()}
        for u in users:
            e = by_session[sessions[u]["session"]]
            assert e["user"] == u and e["context"] == 1, e
        assert by_session[s42["session"]]["user"] == 42, by_session[s42["session"]]

        # Terminating a string user's session (on the other node) closes its sockets
        # everywhere with 4001; the other users keep theirs.
        r = b.request("DELETE", "/v1/sessions/" + urllib.parse.quote(sessions[ALICE]["session"], safe=""))
        assert r.status == 204, r
        for cl in clients[ALICE]:
            assert cl.wait_closed(5) == 4001
        for admin in (a, b):
            wait_sockets(admin, 1, ALICE, 0, what="alice terminated")
            assert sockets_of(admin, UUID) == 2 and sockets_of(admin, LONGEST) == 2
        assert not any(cl.closed.is_set() for u in (UUID, LONGEST) for cl in clients[u])
    finally:
        receiver.close()


BAD_USERS = [
    ("x" * 129, "user id is 129 bytes long, at most 128 are allowed"),
    ("é" * 64 + "x", "user id is 129 bytes long"),
    ("", "user id is empty"),
    ("tab\there", "user id contains a control character"),
    ("nul\u0000", "user id contains a control character"),
    (-1, "expected a user id"),
    (1.5, "expected a user id"),
    (4294967296, "expected a user id"),
    ({"id": 1}, "expected a user id"),
    ([1], "expected a user id"),
    (True, "expected a user id"),
    (None, "user"),  # null: no user (push: "missing field `user`")
]


def test_bad_user_ids_are_refused_with_a_clear_message(push_servers):
    server = push_servers.start()
    admin = Admin(server)
    for user, why in BAD_USERS:
        for what, r in [
            ("mint", admin.request("POST", "/v1/sessions", {"user": user, "context": 1, "ttl_secs": 60})),
            ("push", admin.push(context=1, user=user, message="x")),
            ("batch", admin.push_batch([{"context": 1, "user": user, "message": "x"}])),
        ]:
            assert r.status == 400 and why in r.json["error"], (what, user, r)
    for text, why in [("x" * 129, "129 bytes"), ("", "empty"), ("a\u0001", "control character")]:
        r = admin.request("GET", "/v1/sockets?" + urllib.parse.urlencode({"context": 1, "user": text}))
        assert r.status == 400 and why in r.json["error"], (text, r)
    # 128 bytes is fine, and a non-canonical number ("042") is a string user.
    assert admin.push_ok(context=1, user=LONGEST, message="x") == 0
    assert admin.sockets(1, "042")["count"] == 0
    assert server.alive()


def test_jwt_sub_and_proxy_answer_name_string_users(push_servers):
    app = App()
    app.users["s1"] = (200, {"user": "bob@example.com", "context": 3})
    server = push_servers.start(
        jwt={"secret": SECRET_HEX, "leeway_secs": 0},
        proxy={"url": app.url, "timeout_ms": 1500},
        endpoints=[{"path": "/jwt", "kind": "raw", "auth": "jwt"},
                   {"path": "/proxy", "kind": "raw", "auth": "proxy"}],
    )
    admin = Admin(server)
    try:
        async def go():
            from websockets.asyncio.client import connect
            from websockets.exceptions import InvalidStatus

            token = mint_jwt({"sub": UUID, "ctx": 7, "exp": int(time.time()) + 60})
            j = await connect(f"ws://{HOST}:{server.port}/jwt?token={token}", open_timeout=5)
            p = await connect(f"ws://{HOST}:{server.port}/proxy", additional_headers={"Cookie": "sid=s1"},
                              open_timeout=5)
            await asyncio.to_thread(wait_sockets, admin, 7, UUID, 1)
            await asyncio.to_thread(wait_sockets, admin, 3, "bob@example.com", 1)
            assert admin.push_ok(context=7, user=UUID, message="for the token's sub") == 1
            assert await recv_text(j) == "for the token's sub"
            assert admin.push_ok(context=3, user="bob@example.com", message="for the app's user") == 1
            assert await recv_text(p) == "for the app's user"
            # A token whose sub is no user id is refused with the reason.
            bad = mint_jwt({"sub": "x" * 129, "ctx": 7, "exp": int(time.time()) + 60})
            with pytest.raises(InvalidStatus) as e:
                await connect(f"ws://{HOST}:{server.port}/jwt?token={bad}", open_timeout=5)
            assert e.value.response.status_code == 401
            assert b"token user id is not a user id" in e.value.response.body
            await j.close()
            await p.close()

        run(go())
    finally:
        app.close()


SIO_SCRIPT = r"""
import { io } from 'socket.io-client';
const [url, session, cookie] = process.argv.slice(1);
const socket = io(url, { path: '/socket.io/', query: { session }, extraHeaders: { Cookie: cookie },
                         transports: ['polling', 'websocket'], reconnection: false, timeout: 5000 });
const quit = (code) => { socket.close(); process.exit(code); };
setTimeout(() => { console.log('timeout'); quit(2); }, 20000);
socket.on('connect_error', (e) => { console.log('connect_error ' + e.message); quit(3); });
socket.on('connect', () => console.log('connected'));
socket.on('news', (data) => { console.log('news ' + JSON.stringify(data)); quit(0); });
"""


def test_socketio_client_with_a_string_user(push_servers):
    server = push_servers.start(endpoints=[{"path": "/socket.io/", "kind": "socketio"}])
    admin = Admin(server)
    s = admin.mint(user=UUID, context=1)
    proc = subprocess.Popen(
        ["node", "--input-type=module", "-e", SIO_SCRIPT, f"http://{HOST}:{server.port}", s["session"],
         s["cookie"]],
        cwd=ROOT / "tests" / "node", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "connected"
        # Polling first, then the WebSocket upgrade: one socket of the user either way.
        wait_sockets(admin, 1, UUID, 1, path="/socket.io/*")
        time.sleep(0.5)
        assert admin.push_ok(context=1, user=UUID, path="/socket.io/*",
                             message='["news",{"for":"a string user"}]') == 1
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, (out, err)
        assert out.strip().splitlines()[-1] == 'news {"for":"a string user"}', out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


def test_nats_history_resumes_a_string_user_on_the_other_node(cluster_factory, nats):
    c = cluster_factory.make(["a", "b"], extra={
        "endpoints": [{"path": "/ws", "kind": "raw", "history": True}],
        "history": {"store": "nats", "size": 100, "ttl_secs": 300},
        "nats": {"url": nats.url},
    })
    c.start_all()
    a, b = c.admin("a"), c.admin("b")
    s = a.mint(user=ALICE)

    async def go():
        ws = await history_connect(c.ips["a"], c.ports["a"][0], s)
        _, marker = await until_marker(ws)
        assert marker["resumed"] is False, marker
        r = a.push(context=1, user=ALICE, message="first")
        assert r.status == 202 and r.json["position"] is not None, r
        m = await recv_json(ws)
        assert m["data"] == "first"
        ws.transport.abort()
        await asyncio.sleep(0.3)
        sent = []
        for i in range(6):  # through either node while the client is away
            r = (a if i % 2 else b).push(context=1, user=ALICE, message=f"away {i}")
            assert r.status == 202 and r.json["position"] is not None, r
            sent.append((r.json["position"]["offset"], f"away {i}"))
        # Another string user's pushes are not alice's.
        assert b.push(context=1, user="alice", message="not for alice@").status == 202
        ws = await history_connect(c.ips["b"], c.ports["b"][0], s, (m["epoch"], m["offset"]))
        replayed, marker = await until_marker(ws)
        assert [(p["offset"], p["data"]) for p in replayed] == sent
        assert marker["resumed"] is True and marker["recovered"] is True, marker
        await ws.close()

    run(go(), timeout=40)


def test_nats_ingress_names_string_users_in_the_body_and_the_subject(push_servers, nats):
    server = push_servers.start(**ingress_config(nats))
    admin = Admin(server)
    wait_ingress(nats)
    ws = client_of(server, admin, ALICE)
    wait_sockets(admin, 1, ALICE, 1)
    token = "u" + base64.urlsafe_b64encode(ALICE.encode()).rstrip(b"=").decode()
    pub = NatsClient(nats.port)
    try:
        pub.publish(SUBJECT, {"context": 1, "user": ALICE, "message": "in the body"})
        answer = pub.request(f"{SUBJECT}.1.{token}", {"message": "in the subject"})
        assert answer == {"sockets": 1, "remote_nodes": 0}, answer
        # The body may name the user too, and must agree with the subject.
        answer = pub.request(f"{SUBJECT}.1.{token}", {"user": "bob", "message": "x"})
        assert "user bob in the body disagrees with user alice@example.com" in answer["error"], answer
        ws.expect(["in the body", "in the subject"], timeout=5)
    finally:
        pub.close()
        ws.close()


@pytest.mark.parametrize("key, ok", [
    ("1:alice@example.com", True),
    ("1:42", True),
    ("1:", False),
    ("1:" + "x" * 129, False),
    ("1:a\u0001b", False),
])
def test_check_validates_string_users_of_the_websockets_cascade(tmp_path, key, ok):
    cfg = tmp_path / "ringwire.toml"
    cfg.write_text("[websockets]\nusers = { " + json.dumps(key) + " = false }\n")
    r = subprocess.run([str(BINARY), "serve", "--check", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert (r.returncode == 0) == ok, (key, r.returncode, r.stderr)
    if not ok:
        assert "websockets.users" in r.stderr, r.stderr

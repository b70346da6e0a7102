"""`auth = "jwt"` endpoints: upgrades admitted by a JSON Web Token.

Contract under test (README "JSON Web Tokens", tuning/ringwire.example.toml [jwt]):
  GET /ws?token=<jwt>, or Sec-WebSocket-Protocol: ringwire.jwt, <jwt> (answered with
  ringwire.jwt, never the token), or Authorization: Bearer <jwt> -> 101; the socket belongs to
  the token's (ctx, sub) and gets that user's pushes; a bad token -> 401 with a one-line reason,
  counted in ringwire_upgrades_refused_by_reason_total{reason="jwt_..."}; a token whose exp
  passes while connected closes the socket with 4002 "session expired".

Tokens are HS256, minted here with hmac + base64 (no JWT library in the test venv), and
RS256 signed with the test-only key pair of tests/fixtures/jwt by the `openssl` command, its
public key served as a JWK set by a local HTTP server (`[jwt] jwks_url`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import http.server
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from helpers import (BINARY, HOST, Admin, await_stats_sockets, cluster_certs, expect_closed_with, metric_sum,
                     push_servers,  # noqa: F401  (fixture)
                     recv_text, run, upgrade_refusal, wait_until)

from test_socketio import NEWS, Eio, count, push, same_event, wait_count, ws_open, ws_recv, ws_send  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "jwt"

SECRET_HEX = "6a7774" * 10 + "0011"  # 32 bytes
OTHER_HEX = "00" * 32
BY_REASON = "ringwire_upgrades_refused_by_reason_total"
JWT_ENDPOINTS = [
    {"path": "/ws", "kind": "raw", "auth": "jwt"},
    {"path": "/socket.io/", "kind": "socketio", "auth": "jwt"},
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict, secret_hex: str = SECRET_HEX, alg: str = "HS256") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(bytes.fromhex(secret_hex), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def mint_rs256(claims: dict, kid: str | None) -> str:
    """RS256 (PKCS#1 v1.5, SHA-256) with the fixture's private key, signed by openssl."""
    head = {"alg": "RS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(FIXTURES / "rs256-test-private.pem")],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return f"{signing_input}.{b64url(sig)}"


class JwksServer:
    """A local HTTP server answering GET /jwks.json with `body` (or `status` when not 200)."""

    def __init__(self, body: bytes, certdir: Path | None = None):
        self.body, self.status, self.gets = body, 200, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.gets += 1
                body = outer.body if outer.status == 200 else b"down"
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        scheme = "http"
        if certdir is not None:  # https with the 127.0.0.1 certificate of a `cluster certs` CA
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certdir / f"{HOST}.pem", certdir / f"{HOST}.key")
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://{HOST}:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def start(push_servers, **jwt):
    cfg = {"secret": SECRET_HEX, "leeway_secs": 0, **jwt}
    return push_servers.start(jwt=cfg, endpoints=JWT_ENDPOINTS)


async def connect(server, *, query: str | None = None, protocols=None, headers=None):
    from websockets.asyncio.client import connect as ws_connect

    url = f"ws://{HOST}:{server.port}/ws" + (f"?{query}" if query else "")
    return await ws_connect(url, subprotocols=protocols, additional_headers=headers or {},
                            open_timeout=5, close_timeout=2, ping_interval=None)


async def refused(server, **kw) -> tuple[int, str]:
    return (await upgrade_refusal(connect(server, **kw)))[:2]


def test_token_in_query_protocol_and_header_gets_the_users_pushes(push_servers):
    server = start(push_servers)
    admin = Admin(server)
    token = mint({"sub": "42", "ctx": 3, "exp": int(time.time()) + 300})

    async def go():
        by_query = await connect(server, query=f"a=1&token={token}")
        by_protocol = await connect(server, protocols=["ringwire.jwt", token])
        by_header = await connect(server, headers={"Authorization": f"Bearer {token}"})
        # RFC 6455: the server names one offered protocol, the marker, never the token.
        assert by_protocol.subprotocol == "ringwire.jwt", by_protocol.subprotocol
        assert by_protocol.response.headers["Sec-WebSocket-Protocol"] == "ringwire.jwt"
        assert by_query.subprotocol is None
        await await_stats_sockets(admin, 3)
        assert admin.push_ok(context=3, user=42, path="/ws", message="for 42") == 3
        for ws in (by_query, by_protocol, by_header):
            assert await recv_text(ws) == "for 42"
        # Another user's push reaches none of them.
        assert admin.push_ok(context=3, user=43, message="for 43") == 0
        sockets = admin.sockets(context=3, user=42)
        assert sockets["count"] == 3, sockets
        for ws in (by_query, by_protocol, by_header):
            await ws.close()
        await await_stats_sockets(admin, 0)

    run(go())


def test_bad_tokens_are_refused_401_with_reason_and_counted(push_servers):
    server = start(push_servers, issuer="https://idp.example")
    admin = Admin(server)
    now = int(time.time())
    good = {"sub": 7, "ctx": 1, "exp": now + 300, "iss": "https://idp.example"}
    cases = [
        (None, "missing token", "jwt_missing"),
        ("not-a-token", "malformed token", "jwt_malformed"),
        (mint(good, OTHER_HEX), "bad token signature", "jwt_bad_signature"),
        (mint({**good, "exp": now - 10}), "token expired", "jwt_expired"),
        (mint({**good, "nbf": now + 120}), "token not yet valid (nbf)", "jwt_not_yet_valid"),
        (mint({**good, "iss": "https://evil.example"}), "wrong or missing token issuer", "jwt_issuer"),
        (mint({k: v for k, v in good.items() if k != "sub"}), "token has no user claim",
         "jwt_missing_claim"),
        (mint({**good, "sub": "x" * 129}),
         "token user id is not a user id (an integer from 0 to 4294967295, or a string of 1-128 bytes "
         "without control characters)", "jwt_bad_user"),
        (mint(good, alg="HS384"), "token algorithm not allowed", "jwt_algorithm"),
    ]

    async def go():
        for token, reason, _ in cases:
            status, body = await refused(server, query=f"token={token}" if token else None)
            assert (status, body) == (401, reason), (token, status, body)
        status, body = await refused(server, query=f"token={mint(good)}")
        assert status == 101, (status, body)

    run(go())
    m = admin.metrics()
    for _, _, label in cases:
        assert metric_sum(m, BY_REASON, reason=label) >= 1, label
    assert metric_sum(m, BY_REASON, reason="jwt_missing_claim") == 1
    assert metric_sum(m, BY_REASON, reason="jwt_expired") == 1


def test_token_expiring_while_connected_closes_4002(push_servers):
    server = start(push_servers)
    admin = Admin(server)
    exp = int(time.time()) + 2
    short = mint({"sub": 9, "ctx": 1, "exp": exp})
    long = mint({"sub": 9, "ctx": 1, "exp": exp + 300})

    async def go():
        ws = await connect(server, query=f"token={short}")
        other = await connect(server, protocols=["ringwire.jwt", long])
        await expect_closed_with(ws, 4002, "session expired", timeout=exp - time.time() + 4)
        closed_at = time.time()
        assert exp - 0.5 <= closed_at <= exp + 1.5, (exp, closed_at)
        status, body = await refused(server, query=f"token={short}")
        assert (status, body) == (401, "token expired")
        assert admin.push_ok(context=1, user=9, message="still here") == 1
        assert await recv_text(other) == "still here"
        await other.close()
        await await_stats_sockets(admin, 0)

    run(go(), timeout=20)


class JwtEio(Eio):
    """An Engine.IO polling session that carries a token in every request's query."""

    def __init__(self, server, token: str, eio: int = 4):
        super().__init__(server, {"session": None, "cookie": None}, eio)
        self.token = token

    def target(self, **q) -> str:
        return super().target(session=False, token=self.token, **q)


def sio_connected(push_servers, user: int, ttl: int):
    """A server with the jwt endpoints and a connected polling session of `user`, whose
    token expires in `ttl` seconds: -> (server, admin, exp, session)."""
    server = start(push_servers)
    exp = int(time.time()) + ttl
    e = JwtEio(server, mint({"sub": user, "ctx": 1, "exp": exp}))
    e.connect()
    return server, Admin(server), exp, e


def test_socketio_polling_upgrade_and_expiry_with_a_token(push_servers):
    server, admin, exp, e = sio_connected(push_servers, 42, 3)
    assert count(admin, 42) == 1
    push(admin, 42)
    assert e.collect(lambda ps: any(same_event(p, NEWS) for p in ps))
    # Another token of the same user cannot take this sid over (the sid is bound to its token).
    other = JwtEio(server, mint({"sub": 42, "ctx": 1, "exp": exp + 60}))
    other.sid = e.sid
    r = other.get_resp()
    assert r.status == 400 and b"Session ID unknown" in r.body, r
    # The websocket upgrade of that sid, with the same token.
    ws = ws_open(server, e)
    ws_send(ws, "2probe")
    assert ws_recv(ws) == "3probe"
    ws_send(ws, "5")
    push(admin, 42)
    assert ws_recv(ws) == "42" + NEWS
    # At exp the session ends: the Socket.IO DISCONNECT, then the close (as a session's expiry).
    got = []
    deadline = time.monotonic() + (exp - time.time()) + 4
    while "41" not in got:
        assert time.monotonic() < deadline, f"no DISCONNECT at the token's exp; got {got!r}"
        got.append(ws_recv(ws, timeout=deadline - time.monotonic()))
    assert time.time() >= exp - 0.5, "closed before the token's exp"
    wait_count(admin, 42, 0)
    ws.close()


def test_socketio_polling_session_ends_at_the_tokens_exp(push_servers):
    # A polling-only client: the held GET gets the DISCONNECT at exp, and the next GET, with
    # the now expired token, still gets the close packet (as a session's last packets).
    _, admin, exp, e = sio_connected(push_servers, 8, 2)
    e.send_get()
    assert e.read_get(timeout=exp - time.time() + 3) == ["41"]
    assert time.time() >= exp - 0.5, "ended before the token's exp"
    assert "1" in e.get(timeout=2)
    wait_count(admin, 8, 0)
    r = e.get_resp()
    assert r.status == 401 and r.body.strip() == b"token expired", r


def test_socketio_polling_takes_the_token_in_the_query(push_servers):
    import http.client

    server = start(push_servers)
    token = mint({"sub": 5, "ctx": 2, "exp": int(time.time()) + 300})

    def get(query: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
        try:
            conn.request("GET", f"/socket.io/?EIO=4&transport=polling&{query}")
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    status, body = get(f"token={urllib.parse.quote(token)}")
    assert status == 200 and body.startswith(b"0{"), (status, body)
    assert json.loads(body[1:])["sid"]
    status, body = get("token=bad")
    assert (status, body.strip()) == (401, b"malformed token"), (status, body)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to sign RS256")
def test_rs256_keys_from_a_jwks_url_refreshed_in_the_background(push_servers):
    jwks = json.loads((FIXTURES / "rs256-test-jwks.json").read_text())
    idp = JwksServer(json.dumps(jwks).encode())
    try:
        server = push_servers.start(
            jwt={"algorithms": ["RS256"], "jwks_url": idp.url, "jwks_refresh_secs": 1, "leeway_secs": 0},
            endpoints=JWT_ENDPOINTS)
        admin = Admin(server)
        fetched = lambda: metric_sum(admin.metrics(), "ringwire_jwks_keys") == 1  # noqa: E731
        wait_until(fetched, timeout=10, what="the key set fetched")
        exp = int(time.time()) + 300
        current = mint_rs256({"sub": 11, "ctx": 4, "exp": exp}, "rs256-test")
        rotated = mint_rs256({"sub": 11, "ctx": 4, "exp": exp}, "next")

        async def status(token):
            return await refused(server, query=f"token={token}")

        async def go():
            ws = await connect(server, protocols=["ringwire.jwt", current])
            assert admin.push_ok(context=4, user=11, message="via jwks") == 1
            assert await recv_text(ws) == "via jwks"
            await ws.close()
            assert await status(rotated) == (401, "no key for this token (kid)")
            assert await status(mint({"sub": 11, "ctx": 4, "exp": exp}, OTHER_HEX)) == \
                (401, "token algorithm not allowed")
            # The provider publishes the key under its next kid: picked up by the refresh.
            idp.body = json.dumps({"keys": [{**jwks["keys"][0], "kid": "next"}]}).encode()
            deadline = time.monotonic() + 10
            while await status(rotated) != (101, ""):
                assert time.monotonic() < deadline, "the rotated key set was not picked up"
                await asyncio.sleep(0.2)
            # The provider fails: the last good set stays in use.
            idp.status = 503
            errors = lambda: metric_sum(admin.metrics(), "ringwire_jwks_fetches_total", result="error")  # noqa: E731
            wait_until(lambda: errors() >= 1, timeout=10, what="a failed fetch")
            assert await status(rotated) == (101, "")
            assert await status(current) == (401, "no key for this token (kid)")

        run(go(), timeout=60)
        m = admin.metrics()
        assert metric_sum(m, BY_REASON, reason="jwt_unknown_key") >= 2
        assert metric_sum(m, "ringwire_jwks_fetches_total", result="ok") >= 2
        assert metric_sum(m, "ringwire_jwks_last_success_timestamp_seconds") > 0
    finally:
        idp.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to sign RS256")
def test_unknown_kid_fetches_the_set_early(push_servers):
    """A provider that signs with a key as soon as it publishes it: a token with a kid the set
    lacks makes the node fetch again (at most every 10 s), well before jwks_refresh_secs."""
    jwks = json.loads((FIXTURES / "rs256-test-jwks.json").read_text())
    idp = JwksServer(json.dumps(jwks).encode())
    try:
        server = push_servers.start(
            jwt={"algorithms": ["RS256"], "jwks_url": idp.url, "jwks_refresh_secs": 3600},
            endpoints=JWT_ENDPOINTS)
        admin = Admin(server)
        wait_until(lambda: metric_sum(admin.metrics(), "ringwire_jwks_keys") == 1, timeout=10,
                   what="the key set fetched")
        started = time.monotonic()
        assert idp.gets == 1
        idp.body = json.dumps({"keys": [{**jwks["keys"][0], "kid": "next"}]}).encode()
        token = mint_rs256({"sub": 1, "ctx": 1, "exp": int(time.time()) + 300}, "next")

        async def go():
            deadline = time.monotonic() + 20
            while (got := await refused(server, query=f"token={token}")) != (101, ""):
                assert got == (401, "no key for this token (kid)"), got
                assert time.monotonic() < deadline, "the unknown kid did not bring an early fetch"
                await asyncio.sleep(0.5)

        run(go(), timeout=30)
        assert time.monotonic() - started >= 8, "fetched again sooner than the 10 s minimum"
        assert idp.gets == 2, f"{idp.gets} fetches: one at start, one for the unknown kid"
    finally:
        idp.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to sign RS256")
def test_jwks_over_https_with_a_private_ca(push_servers, tmp_path):
    certdir = cluster_certs(tmp_path, "idp", HOST)
    idp = JwksServer((FIXTURES / "rs256-test-jwks.json").read_bytes(), certdir)
    try:
        def start_with(ca):
            jwt = {"algorithms": ["RS256"], "jwks_url": idp.url, "jwks_refresh_secs": 1}
            if ca:
                jwt["jwks_ca_file"] = str(certdir / "ca.pem")
            return push_servers.start(jwt=jwt, endpoints=JWT_ENDPOINTS)

        trusted, untrusted = start_with(True), start_with(False)
        keys = lambda s: metric_sum(Admin(s).metrics(), "ringwire_jwks_keys")  # noqa: E731
        wait_until(lambda: keys(trusted) == 1, timeout=10, what="the key set fetched over https")
        token = mint_rs256({"sub": 3, "ctx": 1, "exp": int(time.time()) + 300}, "rs256-test")
        assert run(refused(trusted, query=f"token={token}")) == (101, "")
        # Without the CA (the system's roots), the provider's certificate is not trusted.
        failed = lambda: metric_sum(Admin(untrusted).metrics(), "ringwire_jwks_fetches_total",  # noqa: E731
                                    result="error")
        wait_until(lambda: failed() >= 1, timeout=10, what="a refused https fetch")
        assert keys(untrusted) == 0
        assert run(refused(untrusted, query=f"token={token}")) == (401, "no key for this token (kid)")
    finally:
        idp.close()


def test_check_reads_the_public_key_file(tmp_path):
    def check(key_file: Path) -> subprocess.CompletedProcess:
        cfg = tmp_path / "ringwire.toml"
        cfg.write_text(f'[jwt]\nalgorithms = ["RS256"]\npublic_key_file = "{key_file}"\n'
                       '[[endpoints]]\npath = "/ws"\nkind = "raw"\nauth = "jwt"\n')
        return subprocess.run([str(BINARY), "serve", "--config", str(cfg), "--check"],
                              capture_output=True, text=True, timeout=20)

    ok = check(FIXTURES / "rs256-test-public.pem")
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello\n")
    r = check(bad)
    assert r.returncode == 2 and "no RSA or EC public key" in r.stderr, (r.returncode, r.stderr)
    r = check(tmp_path / "missing.pem")
    assert r.returncode == 2 and "jwt.public_key_file" in r.stderr, (r.returncode, r.stderr)

"""Config reload: POST /v1/config/reload and SIGHUP re-read the --config file and apply the
websockets cascade and limits without dropping sockets; an invalid file is refused (400 on the
API) and the previous config stays in force.
"""

from __future__ import annotations

import asyncio
import signal
import time

from helpers import (SESSION_KEY_A, Admin, PushServers, await_stats_sockets, expect_status, json_has,
                     push_servers,  # noqa: F401  (fixture)
                     recv_text, refusal_counts, run, upgrade_status, ws_connect)

KEY = {"key": SESSION_KEY_A}


def _write_invalid(server) -> None:
    """A file that would enable context 5 if it were (partially) applied, but is invalid."""
    text = server.config_path.read_text()
    text = text.replace('"5" = false', '"5" = true')
    server.config_path.write_text(text + "\n[websockets_typo]\nbogus = 1\n")


async def _wait_status(server, session, want: int, timeout: float = 3.0) -> int:
    """SIGHUP is asynchronous: poll upgrades until one gets `want` (returns the last status)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _ = await upgrade_status(server, session)
        if status == want or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


def test_reload_api_applies_cascade_keeps_sockets(push_servers):
    server = push_servers.start(sessions=KEY, websockets={"contexts": {"5": True}})
    admin = Admin(server)
    s5 = admin.mint(user=1, context=5)
    s6 = admin.mint(user=1, context=6)

    async def go():
        ws = await ws_connect(server, s5)
        await await_stats_sockets(admin, 1)

        PushServers.rewrite(server, sessions=KEY, websockets={"contexts": {"5": False}})
        r = admin.reload()
        assert json_has(r, 200, {"reloaded": True}), f"POST /v1/config/reload: {r!r}"

        # The existing socket stays and still receives pushes.
        await await_stats_sockets(admin, 1)
        assert admin.push_ok(context=5, user=1, message="after reload") == 1
        assert await recv_text(ws) == "after reload"
        # A new upgrade for context 5 is refused as disabled; context 6 is unaffected.
        before = refusal_counts(admin)
        status, body = await upgrade_status(server, s5)
        assert status == 403, f"context 5 after reload to disabled: expected 403, got {status} {body!r}"
        assert refusal_counts(admin)["disabled"] - before["disabled"] == 1
        await expect_status(101, server, s6)

        # Invalid file: 400 with an error, old (reloaded) config stays in force.
        _write_invalid(server)
        r = admin.reload()
        assert r.status == 400, f"reload of an invalid file: expected 400, got {r!r}"
        assert isinstance(r.json, dict) and isinstance(r.json.get("error"), str) and r.json["error"], r
        status, body = await upgrade_status(server, s5)
        assert status == 403, f"after a refused reload context 5 must stay disabled, got {status} {body!r}"
        assert admin.push_ok(context=5, user=1, message="still") == 1
        assert await recv_text(ws) == "still"

        # A valid file again: context 5 comes back.
        PushServers.rewrite(server, sessions=KEY, websockets={"contexts": {"5": True}})
        r = admin.reload()
        assert json_has(r, 200, {"reloaded": True}), r
        await expect_status(101, server, s5)
        await ws.close()
        await await_stats_sockets(admin, 0)

    run(go())


def test_reload_sighup_applies_cascade_keeps_sockets(push_servers):
    server = push_servers.start(sessions=KEY, websockets={"contexts": {"5": True}})
    admin = Admin(server)
    s5 = admin.mint(user=1, context=5)

    async def go():
        ws = await ws_connect(server, s5)
        await await_stats_sockets(admin, 1)

        PushServers.rewrite(server, sessions=KEY, websockets={"contexts": {"5": False}})
        server.proc.send_signal(signal.SIGHUP)
        status = await _wait_status(server, s5, 403)
        assert status == 403, f"context 5 after SIGHUP reload to disabled: expected 403, got {status}"
        assert server.alive(), "ringwire exited on SIGHUP"
        await await_stats_sockets(admin, 1)
        assert admin.push_ok(context=5, user=1, message="after hup") == 1
        assert await recv_text(ws) == "after hup"

        # Invalid file + SIGHUP: the server keeps running with the previous config.
        _write_invalid(server)
        server.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert server.alive(), f"ringwire exited on SIGHUP with an invalid file (code {server.proc.returncode})"
        status, body = await upgrade_status(server, s5)
        assert status == 403, f"after a refused SIGHUP reload context 5 must stay disabled, got {status} {body!r}"
        assert admin.push_ok(context=5, user=1, message="still") == 1
        assert await recv_text(ws) == "still"

        PushServers.rewrite(server, sessions=KEY, websockets={"contexts": {"5": True}})
        server.proc.send_signal(signal.SIGHUP)
        status = await _wait_status(server, s5, 101)
        assert status == 101, f"context 5 re-enabled by SIGHUP: expected 101, got {status}"
        await ws.close()

    run(go())


def test_reload_applies_user_limit_without_dropping(push_servers):
    server = push_servers.start(sessions=KEY, limits={"max_sockets_per_user": 3})
    admin = Admin(server)
    s = admin.mint(user=42, context=1)

    async def go():
        wss = [await ws_connect(server, s) for _ in range(3)]
        await await_stats_sockets(admin, 3)
        PushServers.rewrite(server, sessions=KEY, limits={"max_sockets_per_user": 1})
        r = admin.reload()
        assert json_has(r, 200, {"reloaded": True}), r
        # Over the new limit, but existing sockets are not dropped.
        await await_stats_sockets(admin, 3)
        assert admin.push_ok(context=1, user=42, message="kept") == 3
        for ws in wss:
            assert await recv_text(ws) == "kept"
        status, body = await upgrade_status(server, s)
        assert status == 429, f"upgrade over the reloaded max_sockets_per_user = 1: expected 429, got {status} {body!r}"
        for ws in wss:
            await ws.close()
        await await_stats_sockets(admin, 0)
        await expect_status(101, server, s)

    run(go())


def test_reload_keeps_sessions_valid(push_servers):
    """Sessions minted before a reload (same [sessions] key) still upgrade after it."""
    server = push_servers.start(sessions=KEY)
    admin = Admin(server)
    s = admin.mint(user=1, context=1)
    PushServers.rewrite(server, sessions=KEY, websockets={"users": {"1:2": False}})
    r = admin.reload()
    assert json_has(r, 200, {"reloaded": True}), r

    async def go():
        await expect_status(101, server, s)
        await expect_status(403, server, admin.mint(user=2, context=1))

    run(go())

"""limits.max_connections counts connections, not the slots they pass through.

An upgraded socket moves to the core owning its user (MSG_RING). The node-wide count must not
see it twice while it moves: with max_connections = N on two cores, N sockets whose users live
on the other core than the one that accepted them are all admitted, and the (N+1)-th is 503.
"""
from __future__ import annotations

import time

from helpers import HOST, Admin, RawClient, push_servers  # noqa: F401  (fixture)

LIMIT = 40


def upgrade_status(port: int, s: dict) -> tuple[int, RawClient]:
    c = RawClient(port)
    c.send((f"GET /ws?session={s['session']} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nCookie: {s['cookie']}\r\n\r\n").encode())
    return c.read_http_response().status, c


def test_max_connections_admits_exactly_the_limit_across_cores(push_servers):
    server = push_servers.start(server={"cores": 2}, limits={"max_connections": LIMIT})
    admin = Admin(server)
    sessions = [admin.mint(user=u) for u in range(1, LIMIT + 2)]
    open_clients = []
    try:
        for i, s in enumerate(sessions[:LIMIT]):
            status, c = upgrade_status(server.port, s)
            open_clients.append(c)
            assert status == 101, f"connection {i + 1} of max_connections = {LIMIT} refused {status}"
        status, c = upgrade_status(server.port, sessions[LIMIT])
        open_clients.append(c)
        assert status == 503, f"connection {LIMIT + 1} over max_connections = {LIMIT}: {status}"
        # Closing one makes room for exactly one again.
        open_clients.pop(0).close()
        for _ in range(50):
            status, c = upgrade_status(server.port, sessions[LIMIT])
            open_clients.append(c)
            if status == 101:
                break
            c.close()
            time.sleep(0.05)
        assert status == 101, "a closed connection did not free its place"
    finally:
        for c in open_clients:
            c.close()

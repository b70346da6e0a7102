"""Echo endpoint with the real `websockets` client (asyncio API)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from websockets.asyncio.client import connect

from helpers import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, close_code, run

SIZES = {"small": 13, "64KiB": 64 * 1024, "1MiB": 1024 * 1024}


def text_of(n: int) -> str:
    # Mixed 1-, 2- and 3-byte UTF-8 sequences, cut to n code points.
    base = "ringwire ünïcödé ✓ "
    return (base * (n // len(base) + 1))[:n]


def plain(url: str, **kw):
    """A client that does not offer permessage-deflate, no keepalive pings, no size cap."""
    kw.setdefault("compression", None)
    return connect(url, max_size=None, ping_interval=None, open_timeout=10, close_timeout=10, **kw)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo(server, kind, size):
    payload = text_of(size) if kind == "text" else os.urandom(size)

    async def go():
        async with plain(server.url) as ws:
            for _ in range(3):
                await ws.send(payload)
                got = await ws.recv()
                assert type(got) is type(payload)
                assert got == payload

    run(go())


def test_echo_many_messages_in_order(server):
    async def go():
        async with plain(server.url) as ws:
            msgs = [f"msg {i} " + "x" * random.randrange(0, 300) for i in range(500)]
            for m in msgs:
                await ws.send(m)
            for m in msgs:
                assert await ws.recv() == m

    run(go())


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_fragmented_message(server, kind):
    if kind == "text":
        # Fragment boundaries inside multi-byte code points must be fine.
        whole = text_of(70_000)
        raw = whole.encode()
        cuts = [0, 1, 5, 6, 17, 1000, 65_000, len(raw)]
        fragments = [raw[a:b] for a, b in zip(cuts, cuts[1:])]
    else:
        whole = os.urandom(70_000)
        cuts = [0, 1, 100, 40_000, len(whole)]
        fragments = [whole[a:b] for a, b in zip(cuts, cuts[1:])]

    async def go():
        async with plain(server.url) as ws:
            if kind == "text":
                # websockets fragments an iterable; send bytes fragments as TEXT via raw below.
                await ws.send([whole[:10], whole[10:20_000], whole[20_000:]])
            else:
                await ws.send(fragments)
            assert await ws.recv() == whole

    run(go())

    # Hand-built fragments (text split inside code points, a ping between fragments).
    with RawClient(server.port) as c:
        c.handshake()
        first = OP_TEXT if kind == "text" else OP_BINARY
        for i, frag in enumerate(fragments):
            c.send_frame(first if i == 0 else OP_CONT, frag, fin=i == len(fragments) - 1)
            if i == 1:
                c.send_frame(OP_PING, b"between fragments")
        fin, _rsv, op, payload = c.read_frame()
        assert (op, payload) == (OP_PONG, b"between fragments"), "ping inside a fragmented message must be answered"
        opcode, data = c.read_message()
        assert opcode == first
        assert data == (raw if kind == "text" else whole)


def test_ping_pong(server):
    async def go():
        async with plain(server.url) as ws:
            for payload in [b"", b"hello", os.urandom(125)]:
                pong = await ws.ping(payload)
                await asyncio.wait_for(pong, 5)
            # Traffic still flows after control frames.
            await ws.send("after ping")
            assert await ws.recv() == "after ping"

    run(go())


def test_ping_payload_echoed_in_pong_raw(server):
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_PING, b"\x00\x01binary ping\xff")
        _fin, _rsv, op, payload = c.read_frame()
        assert op == OP_PONG
        assert payload == b"\x00\x01binary ping\xff"


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_permessage_deflate(server, kind):
    async def go():
        async with connect(server.url, compression="deflate", max_size=None, ping_interval=None,
                           open_timeout=10, close_timeout=10) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert "permessage-deflate" in ext, f"deflate not negotiated: {ext!r}"
            msgs = [
                "a" * 10,
                text_of(200_000),
                '{"event":"tick","n":1}' * 500,
                text_of(1024 * 1024),
            ]
            if kind == "binary":
                msgs = [m.encode() for m in msgs] + [os.urandom(100_000), bytes(1024 * 1024)]
            # Repeat to exercise the sliding window (context takeover) in both directions.
            for _ in range(2):
                for m in msgs:
                    await ws.send(m)
                    assert await ws.recv() == m

    run(go(), timeout=60)


def test_permessage_deflate_not_negotiated_when_disabled(start_server):
    server = start_server(compression={"enabled": False})

    async def go():
        async with connect(server.url, compression="deflate", ping_interval=None, open_timeout=10) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert not ext, f"compression disabled but server answered {ext!r}"
            await ws.send("plain")
            assert await ws.recv() == "plain"

    run(go())


def test_close_handshake(server):
    async def go():
        async with plain(server.url) as ws:
            await ws.send("before close")
            assert await ws.recv() == "before close"
            await ws.close(1000, "bye")
            assert ws.close_code == 1000, f"server answered close with {ws.close_code}"

    run(go())


def test_close_handshake_raw(server):
    """Client close 1000 -> server echoes a 1000 close frame, then closes the TCP connection."""
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"done")
        _fin, _rsv, op, payload = c.read_frame()
        assert op == OP_CLOSE
        assert close_code(payload) == 1000
        assert c.wait_eof(5), "server did not close the TCP connection after the close handshake"


def test_close_without_code(server):
    """An empty close frame is answered by an empty close frame or 1000 (1005 must never be sent)."""
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_CLOSE, b"")
        _fin, _rsv, op, payload = c.read_frame()
        assert op == OP_CLOSE
        assert payload == b"" or close_code(payload) == 1000, payload
        assert c.wait_eof(5)


def test_idle_connection_outlives_handshake_timeout(start_server):
    """The handshake timer must stop once the upgrade completed."""
    server = start_server(limits={"handshake_timeout_ms": 1000})

    async def go():
        async with plain(server.url) as ws:
            await asyncio.sleep(2.0)
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(go())


@pytest.mark.parametrize("keyed", [False, True], ids=["no_key", "shard_key"])
def test_200_concurrent_clients(start_server, keyed):
    """200 sockets open at once, each echoing; they must be spread over both cores.

    shard_key: each client passes ?key=user<i>, which selects the owning core (handoff path).
    """
    server = start_server(server={"cores": 2})
    cores = server.cores_from_ready_line()
    if cores is not None:
        assert cores == 2, server.ready_line
    n_clients, n_msgs = 200, 20

    per_core = {}

    async def client(i: int, barrier: asyncio.Event, opened: list):
        url = server.url + (f"?key=user{i}" if keyed else "")
        async with plain(url) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            opened.append(i)
            if len(opened) == n_clients:
                # All 200 sockets open and upgraded: where do they live?
                metrics = await asyncio.to_thread(server.metrics)
                per_core.update({k: v for k, v in metrics.items() if k.startswith("ringwire_sockets{")})
                barrier.set()
            await barrier.wait()
            for j in range(n_msgs):
                msg = f"client {i} message {j} " + "y" * (i % 50)
                if j % 2:
                    msg = msg.encode()
                await ws.send(msg)
                assert await ws.recv() == msg
            await ws.close(1000)
            assert ws.close_code == 1000
            return i

    async def go():
        barrier, opened = asyncio.Event(), []
        done = await asyncio.gather(*(client(i, barrier, opened) for i in range(n_clients)))
        assert sorted(done) == list(range(n_clients))

    run(go(), timeout=60)
    assert server.alive()
    assert per_core, "admin /metrics has no ringwire_sockets{core=...} gauge"
    assert sum(per_core.values()) >= n_clients, per_core
    assert len(per_core) == 2 and all(v > 0 for v in per_core.values()), (
        f"200 echo sockets should be spread over both cores: {per_core}")


def _deflate_roundtrip(port: int, sizes):
    """Raw client offering permessage-deflate; returns [(size, rsv1_set)] for the echoes."""
    import zlib

    out = []
    with RawClient(port) as c:
        resp = c.handshake(extra_headers="Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert "permessage-deflate" in resp.headers.get("sec-websocket-extensions", ""), resp
        inflater = zlib.decompressobj(wbits=-15)
        for n in sizes:
            msg = (b"compressible push payload " * (n // 26 + 1))[:n]
            co = zlib.compressobj(wbits=-15)
            data = co.compress(msg) + co.flush(zlib.Z_SYNC_FLUSH)
            c.send_frame(OP_TEXT, data[:-4], rsv=0b100)
            fin, rsv, op, payload = c.read_frame()
            assert fin and op == OP_TEXT
            if rsv & 0b100:
                payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
            assert payload == msg
            out.append((n, bool(rsv & 0b100)))
    return out


def test_compression_min_bytes_default(server):
    """Default compression.min_bytes = 64: shorter echoes go uncompressed, longer ones compressed."""
    assert _deflate_roundtrip(server.port, [16, 63, 64, 1000]) == [
        (16, False), (63, False), (64, True), (1000, True)]


def test_compression_min_bytes_config_applies(start_server):
    server = start_server(compression={"enabled": True, "min_bytes": 0})
    assert _deflate_roundtrip(server.port, [16, 1000]) == [(16, True), (1000, True)]
    server = start_server(compression={"enabled": True, "min_bytes": 4096})
    assert _deflate_roundtrip(server.port, [16, 1000, 5000]) == [(16, False), (1000, False), (5000, True)]

"""Protocol errors map to close codes: 1007 invalid UTF-8, 1009 too big, 1002 protocol violation.

Frames are hand-built over a raw socket so the client library cannot refuse to send them.
"""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from helpers import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawClient,
                     run)

SMALL_LIMITS = {"max_frame_bytes": 1024, "max_message_bytes": 2048}


def expect_close(c: RawClient, code: int) -> None:
    got, reason = c.read_close()
    assert got == code, f"expected close {code}, got {got} (reason {reason!r})"
    assert c.wait_eof(5), "server did not close the TCP connection after failing the WebSocket"


# ------------------------------------------------------------------ 1007 invalid UTF-8

INVALID_UTF8 = {
    "lone_continuation": b"\x80",
    "ff_byte": b"hello \xff world",
    "surrogate": b"\xed\xa0\x80",
    "overlong": b"\xc0\xaf",
    "truncated_at_end": b"abc\xe2\x82",
    "above_max_codepoint": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("payload", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
def test_invalid_utf8_text_closes_1007(server, payload):
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_TEXT, payload)
        expect_close(c, 1007)


def test_invalid_utf8_across_fragments_closes_1007(server):
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_TEXT, "κόσ".encode(), fin=False)
        c.send_frame(OP_CONT, b"\xce", fin=False)       # first byte of a 2-byte sequence
        c.send_frame(OP_CONT, b"\xff", fin=True)        # not a continuation byte
        expect_close(c, 1007)


def test_invalid_utf8_close_reason_closes_1007(server):
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"\xff\xfe")
        expect_close(c, 1007)


def test_valid_utf8_edge_cases_echo(server):
    """Boundary code points that are valid must not be rejected."""
    with RawClient(server.port) as c:
        c.handshake()
        for s in ["\u0000", "\u007f", "\u0080", "\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff", "κόσμε"]:
            c.send_frame(OP_TEXT, s.encode())
            assert c.read_message() == (OP_TEXT, s.encode())


# ------------------------------------------------------------------ 1009 too big


def test_frame_over_max_frame_bytes_closes_1009(start_server):
    server = start_server(limits=SMALL_LIMITS)
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_BINARY, b"x" * 1024)  # exactly the frame limit: accepted
        assert c.read_message() == (OP_BINARY, b"x" * 1024)
        c.send_frame(OP_BINARY, b"x" * 1025)
        expect_close(c, 1009)


def test_declared_huge_frame_closes_1009_without_payload(start_server):
    """A header announcing a 1 GiB payload is refused from the header alone."""
    server = start_server(limits=SMALL_LIMITS)
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_BINARY, b"", length_override=1 << 30)  # header + mask, no payload
        expect_close(c, 1009)


def test_fragmented_message_over_max_message_bytes_closes_1009(start_server):
    server = start_server(limits=SMALL_LIMITS)
    with RawClient(server.port) as c:
        c.handshake()
        # 2 x 1024 = 2048: exactly the message limit, accepted.
        c.send_frame(OP_BINARY, b"a" * 1024, fin=False)
        c.send_frame(OP_CONT, b"b" * 1024, fin=True)
        assert c.read_message() == (OP_BINARY, b"a" * 1024 + b"b" * 1024)
        # Each frame within max_frame_bytes, total 3000 > 2048.
        c.send_frame(OP_TEXT, b"a" * 1000, fin=False)
        c.send_frame(OP_CONT, b"b" * 1000, fin=False)
        c.send_frame(OP_CONT, b"c" * 1000, fin=True)
        expect_close(c, 1009)


def test_oversized_message_closes_1009_with_websockets_client(start_server):
    server = start_server(limits=SMALL_LIMITS)

    async def go():
        async with connect(server.url, compression=None, ping_interval=None, open_timeout=10) as ws:
            await ws.send("ok")
            assert await ws.recv() == "ok"
            await ws.send("z" * 4096)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009, f"got {ws.close_code}"

    run(go())


def test_compressed_message_over_limit_after_inflate_closes_1009(start_server):
    """max_message_bytes applies to the decompressed size (deflate bomb)."""
    server = start_server(limits={"max_frame_bytes": 65536, "max_message_bytes": 65536})

    async def go():
        async with connect(server.url, compression="deflate", max_size=None, ping_interval=None,
                           open_timeout=10) as ws:
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await ws.send(bytes(60_000))  # under the limit inflated
            assert await ws.recv() == bytes(60_000)
            await ws.send(bytes(8 * 1024 * 1024))  # ~8 KiB on the wire, 8 MiB inflated
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009, f"got {ws.close_code}"

    run(go())


# ------------------------------------------------------------------ 1002 protocol violations


def test_unmasked_client_frame_closes_1002(server):
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_TEXT, b"not masked", mask=False)
        expect_close(c, 1002)


PROTOCOL_VIOLATIONS = {
    "reserved_bits_without_extension": [dict(opcode=OP_TEXT, payload=b"x", rsv=0b010)],
    "reserved_opcode_3": [dict(opcode=0x3, payload=b"")],
    "reserved_control_opcode_b": [dict(opcode=0xB, payload=b"")],
    "fragmented_ping": [dict(opcode=OP_PING, payload=b"x", fin=False)],
    "ping_over_125_bytes": [dict(opcode=OP_PING, payload=b"p" * 126)],
    "continuation_without_start": [dict(opcode=OP_CONT, payload=b"x")],
    "new_message_inside_fragmented": [dict(opcode=OP_TEXT, payload=b"a", fin=False),
                                      dict(opcode=OP_TEXT, payload=b"b")],
    "close_with_1_byte_payload": [dict(opcode=OP_CLOSE, payload=b"\x03")],
    "close_with_invalid_code_999": [dict(opcode=OP_CLOSE, payload=(999).to_bytes(2, "big"))],
    "close_with_reserved_code_1005": [dict(opcode=OP_CLOSE, payload=(1005).to_bytes(2, "big"))],
}


@pytest.mark.parametrize("frames", PROTOCOL_VIOLATIONS.values(), ids=PROTOCOL_VIOLATIONS.keys())
def test_protocol_violation_closes_1002(server, frames):
    with RawClient(server.port) as c:
        c.handshake()
        for f in frames:
            f = dict(f)
            c.send_frame(f.pop("opcode"), f.pop("payload"), **f)
        expect_close(c, 1002)


def test_server_survives_protocol_errors(server):
    """After many failed connections the server still echoes."""
    for _ in range(20):
        with RawClient(server.port) as c:
            c.handshake()
            c.send_frame(OP_TEXT, b"\xff")
            expect_close(c, 1007)
    with RawClient(server.port) as c:
        c.handshake()
        c.send_frame(OP_TEXT, b"alive")
        assert c.read_message() == (OP_TEXT, b"alive")

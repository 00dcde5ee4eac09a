"""The bulk side channel: one-time token, wrong tokens dropped, unreachable addresses give None."""

from __future__ import annotations

import socket

import trio

from meshagent.net.bulk import TOKEN_BYTES, BulkListener, connect_bulk, ips_of_addrs


def test_ips_of_addrs():
    assert ips_of_addrs(["/ip4/10.0.0.2/tcp/4737", "/ip6/::1/tcp/5", "/ip4/10.0.0.2/tcp/9"]) == ["10.0.0.2", "::1"]


async def test_right_token_gets_the_connection_after_wrong_ones():
    token = b"t" * TOKEN_BYTES
    async with BulkListener(["127.0.0.1"], token) as listener:
        assert len(listener.addrs) == 1
        host, port = listener.addrs[0].split(":")
        got = []

        async def accept():
            stream = await listener.accept()
            got.append(await stream.receive_some(100))
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            intruder = await trio.open_tcp_stream(host, int(port))
            await intruder.send_all(b"x" * TOKEN_BYTES)
            assert await intruder.receive_some(10) == b""  # dropped
            await intruder.aclose()
            stream = await connect_bulk(listener.addrs, token)
            assert stream is not None
            await stream.send_all(b"sealed body")
            await stream.aclose()
        assert got == [b"sealed body"]


async def test_unreachable_side_channel_gives_none():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        assert await connect_bulk([f"127.0.0.1:{port}", "not-an-address", "[::1]:x"], b"t" * TOKEN_BYTES, timeout=1) is None

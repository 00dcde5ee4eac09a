"""The bulk side channel: one-time token, wrong tokens dropped, unreachable addresses give None."""

from __future__ import annotations

import socket

import pytest
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


async def _silent(addr: str, n: int) -> list[trio.SocketStream]:
    host, port = addr.rsplit(":", 1)
    return [await trio.open_tcp_stream(host, int(port)) for _ in range(n)]


async def _closed_by_listener(stream: trio.SocketStream) -> bool:
    try:
        return await stream.receive_some(10) == b""
    except trio.BrokenResourceError:
        return True


async def test_silent_connections_made_first_do_not_hold_up_the_sender():
    """Strangers connect before the sender and send nothing: the sender's connection is still taken at once
    (more of them than the listener lets wait, so some are pushed out as well)."""
    token = b"t" * TOKEN_BYTES
    async with BulkListener(["127.0.0.1"], token) as listener:
        silent = await _silent(listener.addrs[0], 20)
        stream = await connect_bulk(listener.addrs, token)
        assert stream is not None
        await stream.send_all(b"sealed body")
        with trio.fail_after(30):  # a deadlock guard, far above the 5 s one silent connection may take
            conn = await listener.accept()
            assert await conn.receive_some(100) == b"sealed body"
        await conn.aclose()
        await stream.aclose()
    # Leaving the listener closes every connection that was not the sender's.
    for s in silent:
        with trio.fail_after(10):
            assert await _closed_by_listener(s)
        await s.aclose()


async def test_a_connection_without_its_token_in_time_is_closed():
    async with BulkListener(["127.0.0.1"], b"t" * TOKEN_BYTES, token_timeout_s=0.2) as listener:
        (silent,) = await _silent(listener.addrs[0], 1)
        with trio.fail_after(30):
            assert await _closed_by_listener(silent)
        assert listener.dropped == 1
        await silent.aclose()


async def test_pending_connections_are_bounded_oldest_out():
    async with BulkListener(["127.0.0.1"], b"t" * TOKEN_BYTES, token_timeout_s=3600, max_pending=4) as listener:
        silent = await _silent(listener.addrs[0], 10)
        with trio.fail_after(30):  # the six oldest are pushed out long before their hour is up
            for s in silent[:6]:
                assert await _closed_by_listener(s)
        assert listener.dropped == 6
        for s in silent[6:]:
            with trio.move_on_after(0.2):
                await s.receive_some(10)
                raise AssertionError("a connection within the bound was closed")
        for s in silent:
            await s.aclose()


async def test_the_listener_never_cancels_its_callers_work():
    """The listener's background tasks are its own: once the sender's connection is handed over, the code
    inside ``async with`` goes on (reading the body, talking to the peer) without being cancelled."""
    token = b"t" * TOKEN_BYTES
    other_send, other_receive = trio.open_memory_channel[bytes](1)
    got = b""

    async def peer_message_later() -> None:
        await trio.sleep(0.5)
        await other_send.send(b"Body")

    try:
        async with BulkListener(["127.0.0.1"], token) as listener:
            stream = await connect_bulk(listener.addrs, token)
            assert stream is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer_message_later)
                # As the handoff does: it waits for the peer's next message while the sender connects.
                assert await other_receive.receive() == b"Body"
            conn = await listener.accept()
            for i in range(3):
                await stream.send_all(b"chunk%d" % i)
                await trio.sleep(0.05)
                got += await conn.receive_some(100)
            await conn.aclose()
            await stream.aclose()
    except BaseException as exc:  # a Cancelled from the listener's own scope would end up here
        pytest.fail(f"the listener's work reached into its caller: {exc!r}")
    assert got == b"chunk0chunk1chunk2"

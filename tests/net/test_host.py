"""MeshHost over real loopback sockets: forgetting dial failures of a peer that came back."""

from __future__ import annotations

import socket

import pytest
import trio

from meshagent.net.host import open_host
from meshagent.node.identity import load_or_create_identity


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_forget_failures_lets_a_restarted_peer_be_dialled_at_once(tmp_path):
    a_id, b_id = load_or_create_identity(tmp_path / "a"), load_or_create_identity(tmp_path / "b")
    port = _free_port()
    b_addr = f"/ip4/127.0.0.1/tcp/{port}"

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        await stream.close()

    async with open_host(a_id, ["/ip4/127.0.0.1/tcp/0"]) as a:
        assert not await a.dial(b_id.peer_id, [b_addr], timeout=5)  # b is down: py-libp2p caches the failure
        async with open_host(b_id, [b_addr]) as b:
            b.set_handler("/test/1", handler)
            with pytest.raises(Exception):  # streams dial through the swarm: refused from the negative cache
                await a.open_stream(b_id.peer_id, "/test/1")
            a.forget_failures(b_id.peer_id)
            stream = await a.open_stream(b_id.peer_id, "/test/1")
            await stream.close()
            a.forget_failures("not-a-peer-id")  # harmless
            await trio.sleep(0)


async def test_dial_tries_exactly_the_given_addresses(tmp_path):
    """A dial that failed on a wrong address (e.g. a spoofed mDNS announcement) does not block the right one."""
    a_id, b_id = load_or_create_identity(tmp_path / "a"), load_or_create_identity(tmp_path / "b")
    async with open_host(a_id, ["/ip4/127.0.0.1/tcp/0"]) as a, open_host(b_id, ["/ip4/127.0.0.1/tcp/0"]) as b:
        assert not await a.dial(b_id.peer_id, [f"/ip4/127.0.0.1/tcp/{_free_port()}"], timeout=5)
        assert await a.dial(b_id.peer_id, list(b.addrs), timeout=5)

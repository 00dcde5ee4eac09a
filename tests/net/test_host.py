"""MeshHost over real loopback sockets: forgetting dial failures of a peer that came back."""

from __future__ import annotations

import socket

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
    async with open_host(a_id, ["/ip4/127.0.0.1/tcp/0"]) as a:
        assert not await a.dial(b_id.peer_id, [b_addr], timeout=5)  # b is down: py-libp2p caches the failure
        async with open_host(b_id, [b_addr]) as b:
            assert b.addrs
            assert not await a.dial(b_id.peer_id, [b_addr], timeout=5)  # still refused from the negative cache
            a.forget_failures(b_id.peer_id)
            assert await a.dial(b_id.peer_id, [b_addr], timeout=5)
            a.forget_failures("not-a-peer-id")  # harmless
            await trio.sleep(0)

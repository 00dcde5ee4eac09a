"""mDNS spoofing, the dial underneath: an address announced for a known peer id at an attacker's
host cannot hijack that peer.

mDNS is unauthenticated, so anyone on the LAN can announce "peer B is at my
address". Here, on loopback and without mDNS, a well-formed forged TXT record
is parsed and its address dialled *as B* with :meth:`MeshHost.dial` — the
Noise handshake authenticates the remote key against B's peer id, so the dial
to the impostor fails: no connection, no stream. The genuine address still
connects afterwards (py-libp2p's negative dial cache is lifted).

The node's own path — a forged announcement multicast on a LAN, the node's
mDNS browser, its peer table and its dials — is driven in the lab:
``tests/lab/test_lab_mdns_spoofing.py``.
"""

from __future__ import annotations

import trio

from meshagent.net.host import open_host
from meshagent.net.mdns import build_txt, parse_txt
from meshagent.node.identity import load_or_create_identity

PROTOCOL = "/meshagent/test-spoof/1"


async def test_dialling_a_forged_address_as_a_peer_is_refused_by_noise(tmp_path):
    a_id, b_id, c_id = (load_or_create_identity(tmp_path / n) for n in ("a", "b", "c"))
    reached: list[str] = []

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        reached.append(stream.peer)
        await stream.close()

    async with open_host(a_id, ["/ip4/127.0.0.1/tcp/0"]) as a, open_host(b_id, ["/ip4/127.0.0.1/tcp/0"]) as b, \
            open_host(c_id, ["/ip4/127.0.0.1/tcp/0"]) as impostor:
        impostor.set_handler(PROTOCOL, handler)
        b.set_handler(PROTOCOL, handler)
        # The impostor's announcement: B's peer id, the impostor's address (a well-formed TXT record).
        record = build_txt(b_id.peer_id, [f"{impostor.addrs[0]}/p2p/{b_id.peer_id}"])
        claimed, addrs = parse_txt(record)
        assert claimed == b_id.peer_id and addrs[0].startswith(impostor.addrs[0])
        # The node dials the announced address as B: Noise sees the impostor's key, not B's.
        assert not await a.dial(claimed, list(addrs), timeout=5)
        assert not a.is_connected(b_id.peer_id) and reached == []
        # The genuine address still works, and streams reach the real B.
        assert await a.dial(b_id.peer_id, list(b.addrs), timeout=5)
        stream = await a.open_stream(b_id.peer_id, PROTOCOL)
        await stream.close()
        with trio.move_on_after(2):
            while not reached:
                await trio.sleep(0.05)
        assert reached == [a_id.peer_id]
        assert impostor.connected_peers() == [] or a_id.peer_id not in impostor.connected_peers()

"""A hostile libp2p peer talks to a real node process; the node keeps running, its table unchanged."""

import dataclasses
import time

import pytest
import trio

from meshagent.net.host import open_host, split_p2p_addr
from meshagent.node.identity import load_or_create_identity
from meshagent.node.mesh import ADVERT_TOPIC
from meshagent.protocol import codec, exchange, signed
from meshagent.protocol.advert import encode_advert
from meshagent.protocol.exchange import EXCHANGE_PROTOCOL, PeerExchange
from meshagent.node.spawn import NodeProcess, wait_for
from tests.protocol.conftest import make_advert, make_key


@pytest.fixture
def target(tmp_path):
    n = NodeProcess(tmp_path / "target").start()
    yield n
    n.stop()


async def _send(host, peer, payload: bytes, *, raw: bool = False):
    stream = await host.open_stream(peer, EXCHANGE_PROTOCOL)
    try:
        if raw:
            await stream.send(payload)
        else:
            await stream.send_frame(payload)
        with trio.move_on_after(2):
            try:
                await stream.receive_frame(1 << 20)
            except Exception:
                pass
    finally:
        await stream.close()


async def test_hostile_exchange_messages(target, tmp_path):
    me = load_or_create_identity(tmp_path / "attacker")
    victim_key, liar_key = make_key(), make_key()
    now = time.time()
    good = make_advert(victim_key, seq=10, now=now)
    forged = encode_advert(dataclasses.replace(good, name="forged"), liar_key)  # signed by the wrong key
    expired = encode_advert(make_advert(make_key(), now=now - 100), liar_key)
    replayed = encode_advert(dataclasses.replace(good, seq=5, name="replayed"), victim_key)
    async with open_host(me, ["/ip4/127.0.0.1/tcp/0"]) as host:
        peer, addr = split_p2p_addr(target.addrs[0])
        assert await host.dial(peer, [addr])
        # Malformed, oversized and nonsense frames.
        await _send(host, peer, b"\xff\xff\xff\xff" + b"x" * 100, raw=True)  # declares 4 GiB
        await _send(host, peer, b"\x00\x00\x00\x05ab", raw=True)  # truncated
        await _send(host, peer, b"not cbor at all")
        await _send(host, peer, codec.encode({"t": "px", "adverts": [b"junk"] * 3}))
        # The genuine advert, then forged / expired / replayed ones.
        await _send(host, peer, exchange.encode(PeerExchange((encode_advert(good, victim_key),))))
        await _send(host, peer, exchange.encode(PeerExchange((forged, expired, replayed))))
        await host.publish(ADVERT_TOPIC, forged)
        await host.publish(ADVERT_TOPIC, b"\x00garbage")
        await trio.sleep(1.0)

    status = target.call("status")
    peers = await trio.to_thread.run_sync(target.peers)
    assert good.peer_id in peers
    assert peers[good.peer_id]["name"] == "node"  # neither "forged" nor "replayed"
    assert status["adverts_dropped"] >= 3
    assert target.proc.poll() is None

"""Hostile peers against a real ``meshagent join`` process (issue 8).

An attacker — a libp2p host with its own identity — floods calls for bids,
impersonates other peers in auction messages, declares oversized frames on
every protocol, and offers a handoff whose body never comes. Afterwards the
node still runs, answers, and holds no partial agent. (Forged, expired and
replayed adverts: ``tests/node/test_hostile_peers.py``; lying bidders pushed out
by reputation: ``tests/hostile/test_lying_bidders_live.py``.)
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshagent.net.host import open_host, split_p2p_addr
from meshagent.node.results import RESULT_PROTOCOL
from meshagent.node.identity import load_or_create_identity
from meshagent.node.placement import AUCTION_PROTOCOL
from meshagent.node.spawn import NodeProcess
from meshagent.protocol import auction
from meshagent.protocol import handoff as hp
from meshagent.protocol import snapshot as snap
from meshagent.protocol.auction import CallForBids
from meshagent.protocol.exchange import EXCHANGE_PROTOCOL
from meshagent.protocol.handoff import HANDOFF_PROTOCOL, Offer
from meshagent.protocol.signed import peer_id_from_public_key


@pytest.fixture
def target(tmp_path):
    n = NodeProcess(tmp_path / "target").start()
    yield n
    n.stop()


def call_for_bids(home: str, *, now: float) -> CallForBids:
    return CallForBids(auction_id=uuid.uuid4().hex, agent_id="a1", home=home, owner=home, requirement="",
                       context_tokens=100, output_tokens=10, privacy="any", policy="latency", snapshot_bytes=1000,
                       issued_at=now, bid_deadline=now + 5)


async def ask(host, peer, payload: bytes) -> bytes | None:
    """Send one frame on the auction protocol; the answer frame, or None (reset, closed, nothing)."""
    try:
        stream = await host.open_stream(peer, AUCTION_PROTOCOL)
        try:
            await stream.send_frame(payload)
            with trio.move_on_after(3):
                return await stream.receive_frame(auction.MAX_MESSAGE_BYTES)
        finally:
            await stream.close()
    except Exception:  # the node reset the stream: that is the refusal
        return None
    return None


async def test_call_for_bids_flood_is_rate_limited_and_impersonation_refused(target, tmp_path):
    me = load_or_create_identity(tmp_path / "attacker")
    key = me.signing_key
    async with open_host(me, ["/ip4/127.0.0.1/tcp/0"]) as host:
        peer, addr = split_p2p_addr(target.addrs[0])
        assert await host.dial(peer, [addr])
        # Impersonation: a call signed by us that claims another home, and one signed by a stranger's key.
        stranger = Ed25519PrivateKey.generate()
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        stranger_id = peer_id_from_public_key(stranger.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        now = time.time()
        assert await ask(host, peer, auction.encode(call_for_bids(stranger_id, now=now), key)) is None
        assert await ask(host, peer, auction.encode(call_for_bids(stranger_id, now=now), stranger)) is None
        # A genuine call is answered (a bid or a decline, signed by the target).
        reply = await ask(host, peer, auction.encode(call_for_bids(me.peer_id, now=now), key))
        assert reply is not None and auction.decode(reply)[0] == peer
        # Flood: 120 calls at once; the token bucket (20 per second per peer) refuses most.
        answers: list[bytes | None] = []

        async def one() -> None:
            answers.append(await ask(host, peer, auction.encode(call_for_bids(me.peer_id, now=time.time()), key)))

        async with trio.open_nursery() as nursery:
            for _ in range(120):
                nursery.start_soon(one)
        answered = sum(1 for a in answers if a is not None)
        assert 0 < answered <= 40, answered
        await trio.sleep(1.5)  # the bucket refills: calls are answered again
        assert await ask(host, peer, auction.encode(call_for_bids(me.peer_id, now=time.time()), key)) is not None
    stats = await trio.to_thread.run_sync(lambda: target.call("auctions"))
    assert stats["refused_calls"] >= 80
    assert target.proc.poll() is None


async def test_a_flood_of_awards_is_bounded(target, tmp_path):
    """Awards (signed by a real peer, naming the target as winner) for auctions that never
    happened, for ever: the target remembers a bounded number and keeps answering."""
    me = load_or_create_identity(tmp_path / "attacker")
    async with open_host(me, ["/ip4/127.0.0.1/tcp/0"]) as host:
        peer, addr = split_p2p_addr(target.addrs[0])
        assert await host.dial(peer, [addr])
        stream = await host.open_stream(peer, AUCTION_PROTOCOL)
        for i in range(400):
            award = auction.Award(auction_id=f"x{i}", agent_id="a1", winner=peer, expires_at=time.time() + 10 * 365 * 86400)
            await stream.send_frame(auction.encode(award, me.signing_key))
        # A call for bids on the same stream is answered after every award was handled.
        await stream.send_frame(auction.encode(call_for_bids(me.peer_id, now=time.time()), me.signing_key))
        with trio.fail_after(10):
            reply = await stream.receive_frame(auction.MAX_MESSAGE_BYTES)
        assert auction.decode(reply)[0] == peer  # still answering
        await stream.close()
    stats = await trio.to_thread.run_sync(lambda: target.call("auctions"))
    assert stats["awards_pending"] == 200
    assert target.proc.poll() is None


async def test_oversized_frames_on_every_protocol(target, tmp_path):
    me = load_or_create_identity(tmp_path / "attacker")
    async with open_host(me, ["/ip4/127.0.0.1/tcp/0"]) as host:
        peer, addr = split_p2p_addr(target.addrs[0])
        assert await host.dial(peer, [addr])
        for protocol in (AUCTION_PROTOCOL, HANDOFF_PROTOCOL, RESULT_PROTOCOL, EXCHANGE_PROTOCOL):
            stream = await host.open_stream(peer, protocol)
            try:
                await stream.send(b"\xff\xff\xff\xf0" + os.urandom(64 << 10))  # declares ~4 GiB, sends 64 KiB
                with trio.move_on_after(2):
                    try:
                        await stream.receive_frame(1 << 16)
                    except Exception:
                        pass
            except Exception:
                pass  # the node reset the stream as soon as it saw the length
            finally:
                await stream.close()
    status = await trio.to_thread.run_sync(lambda: target.call("status"))
    assert status["peer_id"] == target.peer_id and target.proc.poll() is None


async def test_an_offer_whose_body_never_comes_leaves_no_partial_agent(target, tmp_path):
    me = load_or_create_identity(tmp_path / "attacker")
    victim = load_or_create_identity(target.data_dir)  # the test reads the target's public sealing key
    sealed = snap.seal_snapshot(
        signing_key=me.signing_key, sender_sealing_key=me.sealing_public, recipient=victim.peer_id,
        recipient_key=victim.sealing_public, agent_id="never-sent", generation=1,
        sections=[("meta", b"m"), ("journal", os.urandom(5000))], now=time.time(), ttl_s=60.0,
        data_key=os.urandom(32), chunk_size=snap.MIN_CHUNK,
    )
    async with open_host(me, ["/ip4/127.0.0.1/tcp/0"]) as host:
        peer, addr = split_p2p_addr(target.addrs[0])
        assert await host.dial(peer, [addr])
        stream = await host.open_stream(peer, HANDOFF_PROTOCOL)
        await stream.send_frame(hp.encode(Offer(sealed.header_blob)))
        accept = hp.decode(await stream.receive_frame(1 << 16))
        assert isinstance(accept, hp.Accept)
        # ... and then nothing: the node keeps serving meanwhile.
        status = await trio.to_thread.run_sync(lambda: target.call("status"))
        assert status["peer_id"] == target.peer_id
        await trio.sleep(1.0)
        await stream.reset()  # the attacker goes away without a body
    rows: list[dict] = []
    for _ in range(50):
        rows = (await trio.to_thread.run_sync(lambda: target.call("handoffs")))["handoffs"]
        if rows and rows[0]["state"] == "aborted":
            break
        await trio.sleep(0.2)
    assert [(r["agent"], r["role"], r["state"]) for r in rows] == [("never-sent", "receiver", "aborted")]
    assert not any((target.data_dir / "handoff" / "in").iterdir())  # no partial file
    agents = await trio.to_thread.run_sync(lambda: target.call("agents"))
    assert agents["agents"] == []
    assert target.proc.poll() is None

"""Hostile peers against a real ``meshagent join`` process.

An attacker — a libp2p host with its own identity — floods calls for bids,
impersonates other peers in auction messages, declares ~4 GiB frames on every
protocol the node serves (while the node's peak memory is measured), and offers
a handoff whose body never comes. Afterwards the node still runs, answers, and
holds no partial agent. (Forged, expired and
replayed adverts: ``tests/node/test_hostile_peers.py``; lying bidders pushed out
by reputation: ``tests/hostile/test_lying_bidders_live.py``.)
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Final

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

import meshagent
from meshagent.net.host import GOSSIP_PROTOCOLS, open_host, split_p2p_addr
from meshagent.node.results import RESULT_PROTOCOL
from meshagent.node.identity import load_or_create_identity
from meshagent.node.placement import AUCTION_PROTOCOL
from meshagent.node.spawn import NodeProcess
from meshagent.protocol import auction
from meshagent.protocol import handoff as hp
from meshagent.protocol import snapshot as snap
from meshagent.protocol.auction import CallForBids
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


# --- oversized frames ------------------------------------------------------------------------

HUGE_LENGTH: Final = b"\xf0\xff\xff\xff\x0f"
"""A huge length in both framings a node reads: as meshagent's 4-byte big-endian prefix it declares
4,043,309,055 bytes (the fifth byte is the body's first), as a libp2p varint 2**32 - 16 bytes."""
ATTACK_BYTES: Final = 32 << 20
"""Streamed after the prefix unless the node closes the stream first."""
CLOSED_WITHIN: Final = 4 << 20
"""The node must end the stream before the attacker got this far (yamux's first window is 256 KiB)."""
MAX_GROWTH: Final = 8 << 20
"""The node's peak resident memory may grow by this much during one attack (measured: under 1 MiB)."""
CLOSE_WAIT_S: Final = 10.0
ATTACK_TIMEOUT_S: Final = 60.0
UNFRAMED: Final = {"/ipfs/ping/1.0.0": "libp2p ping echoes fixed 32-byte pings: it reads no length"}
PROTOCOL_ID: Final = re.compile(r'^\w+(?:: Final)?\s*=\s*"(/meshagent/[^"]+)"', re.MULTILINE)


def protocols_in_the_code() -> set[str]:
    """Every ``/meshagent/...`` protocol id the package defines as a constant."""
    package = Path(meshagent.__file__).parent
    return {m for path in package.rglob("*.py") for m in PROTOCOL_ID.findall(path.read_text())}


def node_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes, from ``/proc/PID/status``."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) << 10
    return out


def reset_peak(pid: int) -> None:
    """Start a new VmHWM period (``clear_refs`` 5 resets the peak resident set size)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


async def declare_huge_frame(host, peer, addr: str, protocol: str) -> tuple[int, str | None]:
    """Open ``protocol``, declare a huge frame, then stream random bytes until the node ends the stream.

    Returns the bytes sent after the prefix and how the end was seen (None: the node never ended it).
    """
    try:
        stream = await host.open_stream(peer, protocol)
    except Exception:  # py-libp2p: the previous attack may have taken the connection down with it
        await host.disconnect(peer)
        assert await host.dial(peer, [addr])
        stream = await host.open_stream(peer, protocol)
    sent = 0
    ended: str | None = None

    async def watch(scope: trio.CancelScope) -> None:
        nonlocal ended
        try:
            while await stream.raw.read(1 << 16):
                pass  # a protocol may answer first (identify does), then end the stream
            ended = "closed"
        except Exception as exc:  # py-libp2p's StreamReset / StreamEOF / StreamClosed
            ended = f"read: {type(exc).__name__}"
        scope.cancel()

    piece = os.urandom(64 << 10)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            with trio.move_on_after(ATTACK_TIMEOUT_S):  # a node that stops reading stalls the writes
                try:
                    await stream.send(HUGE_LENGTH)
                    while sent < ATTACK_BYTES and ended is None:
                        await stream.send(piece)
                        sent += len(piece)
                except Exception as exc:  # writing into a stream the node reset
                    ended = ended or f"write: {type(exc).__name__}"
                    nursery.cancel_scope.cancel()
                await trio.sleep(CLOSE_WAIT_S)  # cancelled as soon as the end is seen
            nursery.cancel_scope.cancel()
    finally:
        await stream.reset()
    return sent, ended


@pytest.fixture
def measured_target(tmp_path):
    """A node whose freed buffers go back to the system at once (a fixed mmap threshold), so that
    memory one attack allocated and freed cannot hide what the next one allocates."""
    n = NodeProcess(tmp_path / "target", env={"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}).start()
    yield n
    n.stop()


async def test_huge_declared_lengths_are_refused_on_every_protocol_with_bounded_memory(measured_target, tmp_path):
    """Every protocol the node serves (it lists them itself, and every one the code defines must be
    among them) is sent a length prefix declaring ~4 GiB followed by up to 32 MiB: the node ends the
    stream before 4 MiB arrived and its peak memory grows by less than 8 MiB; then it still serves."""
    me = load_or_create_identity(tmp_path / "attacker")
    pid = measured_target.proc.pid
    async with open_host(me, ["/ip4/127.0.0.1/tcp/0"]) as host:
        peer, addr = split_p2p_addr(measured_target.addrs[0])
        assert await host.dial(peer, [addr])
        served = set(await host._host.send_command(ID.from_base58(peer), "ls"))
        assert protocols_in_the_code() <= served, protocols_in_the_code() - served
        assert set(GOSSIP_PROTOCOLS) <= served
        attacked = sorted(served - UNFRAMED.keys())
        seen: dict[str, tuple[int, str | None, int]] = {}
        idle = node_memory(pid)["VmRSS"]
        for protocol in attacked:
            # Growth is counted from the idle node: what an earlier attack left allocated counts too.
            with trio.move_on_after(5):
                while node_memory(pid)["VmRSS"] > idle + MAX_GROWTH // 2:
                    await trio.sleep(0.1)
            reset_peak(pid)
            sent, ended = await declare_huge_frame(host, peer, addr, protocol)
            seen[protocol] = (sent, ended, node_memory(pid)["VmHWM"] - idle)
        table = "\n".join(f"{p}: sent {s >> 10} KiB, ended {e}, node peak +{g >> 10} KiB" for p, (s, e, g) in seen.items())
        print(table)
        assert all(e is not None for _, e, _ in seen.values()), f"streams the node never ended:\n{table}"
        assert all(s <= CLOSED_WITHIN for s, _, _ in seen.values()), f"ended too late:\n{table}"
        assert all(g <= MAX_GROWTH for _, _, g in seen.values()), f"memory grew:\n{table}"
        # Still serving: a genuine call for bids is answered, signed by the target.
        if not host.is_connected(peer):
            assert await host.dial(peer, [addr])
        reply = await ask(host, peer, auction.encode(call_for_bids(me.peer_id, now=time.time()), me.signing_key))
        assert reply is not None and auction.decode(reply)[0] == peer
    status = await trio.to_thread.run_sync(lambda: measured_target.call("status"))
    assert status["peer_id"] == measured_target.peer_id and measured_target.proc.poll() is None


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

"""Handoff between two in-process nodes over real libp2p hosts and the bulk side channel.

The agent runtime is replaced by ``CustodyDouble`` (a test double, see its module).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio

from meshagent.errors import HandoffError, HandoffRejected, StaleError, WrongRecipient
from meshagent.net.host import MeshHost, open_host
from meshagent.node.handoff import HandoffManager, HandoffPeer
from meshagent.node.identity import Identity, load_or_create_identity
from meshagent.protocol import handoff as hp
from meshagent.protocol import snapshot as snap
from meshagent.protocol.handoff import RejectReason

from tests.node.test_handoff_double import CustodyDouble, fingerprint, make_agent


@dataclass
class Side:
    dir: Path
    identity: Identity
    host: MeshHost
    custody: CustodyDouble
    manager: HandoffManager

    @property
    def peer_id(self):
        return self.identity.peer_id

    def info(self) -> HandoffPeer:
        return HandoffPeer(self.peer_id, self.host.addrs, self.identity.sealing_public, frozenset())


async def _events():
    events = []

    async def emit(event):
        events.append(event)

    return events, emit


@asynccontextmanager
async def two_nodes(tmp_path: Path, *, a_kw=None, b_kw=None):
    book: dict[str, HandoffPeer] = {}
    async with trio.open_nursery() as nursery:
        sides = []
        for name, kw in (("a", a_kw or {}), ("b", b_kw or {})):
            d = tmp_path / name
            identity = load_or_create_identity(d)
            host_cm = open_host(identity, ["/ip4/127.0.0.1/tcp/0"])
            host = await host_cm.__aenter__()
            custody = CustodyDouble(d)
            manager = HandoffManager(data_dir=d, identity=identity, host=host, custody=custody,
                                     peers=lambda p: book.get(p), retry_s=0.2, **kw)
            await nursery.start(manager.run)
            sides.append((Side(d, identity, host, custody, manager), host_cm))
        a, b = sides[0][0], sides[1][0]
        book[a.peer_id], book[b.peer_id] = a.info(), b.info()
        assert await a.host.dial(b.peer_id, b.host.addrs)
        try:
            yield a, b
        finally:
            nursery.cancel_scope.cancel()
            for _, cm in reversed(sides):
                with trio.CancelScope(shield=True):
                    await cm.__aexit__(None, None, None)


def leftovers(side: Side) -> list[str]:
    return sorted(p.name for sub in ("in", "out") for p in (side.dir / "handoff" / sub).iterdir())


async def test_migrate_over_the_bulk_channel(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        agent = make_agent(vfs_bytes=3 << 20)
        a.custody.put(agent)
        events, emit = await _events()
        result = await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert result["resumed"] and result["via"] == "bulk" and result["generation"] == 0
        assert not a.custody.holds("agent-1")
        assert b.custody.state("agent-1") == "running" and b.custody.generation("agent-1") == 0
        assert fingerprint(b.custody.get("agent-1")) == fingerprint(agent)
        assert b.custody.get("agent-1").meta.owner == "alice"
        assert {e["phase"] for e in events} >= {"sealing", "offered", "sending", "resumed"}
        assert leftovers(a) == [] and leftovers(b) == []  # escrow and stored copies are deleted after resume
        assert not a.manager.may_run("agent-1") and b.manager.may_run("agent-1")
        # and back again: the generation grows
        result = await b.manager.migrate({"agent": "agent-1", "to": a.peer_id}, emit)
        assert result["generation"] == 1 and a.custody.state("agent-1") == "running"
        assert a.manager.may_run("agent-1")


async def test_module_is_not_sent_to_a_receiver_that_has_it(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        agent = make_agent()
        a.custody.put(agent)
        b.custody.modules.add(agent.snapshot.module_sha256)
        _, emit = await _events()
        await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        moved = b.custody.get("agent-1")
        assert moved.snapshot.module is None and moved.snapshot.module_sha256 == agent.snapshot.module_sha256


async def test_falls_back_to_the_libp2p_stream_without_a_side_channel(tmp_path):
    async with two_nodes(tmp_path, b_kw={"allow_bulk": False}) as (a, b):
        a.custody.put(make_agent(vfs_bytes=1 << 20))
        _, emit = await _events()
        result = await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert result["via"] == "stream" and b.custody.state("agent-1") == "running"


async def test_expired_offer_is_refused_and_the_agent_stays(tmp_path):
    async with two_nodes(tmp_path, b_kw={"clock": lambda: 4e9}) as (a, b):
        a.custody.put(make_agent())
        _, emit = await _events()
        with pytest.raises(HandoffRejected) as info:
            await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert info.value.reason == RejectReason.EXPIRED
        assert a.custody.state("agent-1") == "running" and not b.custody.holds("agent-1")
        assert leftovers(a) == [] and leftovers(b) == []


async def test_too_large_offer_is_refused_without_reading_the_body(tmp_path):
    async with two_nodes(tmp_path, b_kw={"limits": snap.Limits(max_raw_bytes=64 << 10)}) as (a, b):
        a.custody.put(make_agent(vfs_bytes=1 << 20))
        _, emit = await _events()
        with pytest.raises(HandoffRejected) as info:
            await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert info.value.reason == RejectReason.TOO_LARGE
        assert a.custody.state("agent-1") == "running"
        assert (await b.manager.list_handoffs({}, emit))["handoffs"] == []  # nothing recorded, no body read


async def test_replayed_offer_is_refused_as_stale(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        a.custody.put(make_agent())
        _, emit = await _events()
        # capture gen 0's offer as it goes out
        captured = []
        real = b.manager.offer

        async def spy(peer, blob):
            captured.append(blob)
            return await real(peer, blob)

        b.manager.offer = spy
        await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        await b.custody.release("agent-1")  # even when the agent is gone from B, the old offer is stale
        verdict = await real(a.peer_id, captured[0])
        assert isinstance(verdict, hp.Reject) and verdict.reason == RejectReason.STALE


async def test_offer_from_someone_else_than_the_signer_is_refused(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        agent = make_agent()
        sealed = a.manager._seal(agent, 5, b.peer_id, b.identity.sealing_public, False)
        verdict = await b.manager.offer(b.peer_id, sealed.header_blob)  # relayed by a third party
        assert isinstance(verdict, hp.Reject) and verdict.reason == RejectReason.BAD_SEAL


async def test_sender_that_stops_mid_stream_leaves_no_partial_agent(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        agent = make_agent(vfs_bytes=2 << 20)
        sealed = a.manager._seal(agent, 0, b.peer_id, b.identity.sealing_public, False)
        body = b"".join(sealed.chunks())
        stream = await a.host.open_stream(b.peer_id, hp.HANDOFF_PROTOCOL)
        await stream.send_frame(hp.encode(hp.Offer(sealed.header_blob)))
        accept = hp.decode(await stream.receive_frame(hp.MAX_MESSAGE))
        assert isinstance(accept, hp.Accept)
        await stream.send_frame(hp.encode(hp.Body(hp.Via.STREAM, len(body))))
        await stream.send(body[: len(body) // 2])
        await stream.reset()  # the sender dies
        for _ in range(100):
            rows = (await b.manager.list_handoffs({}, None))["handoffs"]
            if rows and rows[0]["state"] == "aborted":
                break
            await trio.sleep(0.05)
        assert rows[0]["state"] == "aborted"
        assert not b.custody.holds("agent-1") and leftovers(b) == []


async def test_export_to_self_and_import_after_loss(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        agent = make_agent()
        a.custody.put(agent)
        _, emit = await _events()
        out = tmp_path / "backup.msnap"
        result = await a.manager.snapshot_export({"agent": "agent-1", "file": str(out)}, emit)
        assert a.custody.state("agent-1") == "running" and out.exists()
        with pytest.raises(HandoffError):  # still running here: importing would run it twice
            await a.manager.snapshot_import({"file": str(out)}, emit)
        with pytest.raises(WrongRecipient):  # sealed to A: B cannot open it
            await b.manager.snapshot_import({"file": str(out)}, emit)
        await a.custody.release("agent-1")  # the agent is lost
        result = await a.manager.snapshot_import({"file": str(out)}, emit)
        assert result["generation"] == 0 and fingerprint(a.custody.get("agent-1")) == fingerprint(agent)


async def test_export_to_a_peer_moves_the_agent_by_file(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        a.custody.put(make_agent())
        _, emit = await _events()
        out = tmp_path / "for-b.msnap"
        await a.manager.snapshot_export({"agent": "agent-1", "file": str(out), "to": b.peer_id}, emit)
        assert not a.custody.holds("agent-1")
        await b.manager.snapshot_import({"file": str(out)}, emit)
        assert b.custody.state("agent-1") == "running"
        await b.custody.release("agent-1")
        with pytest.raises(StaleError):  # the same file cannot be imported twice
            await b.manager.snapshot_import({"file": str(out)}, emit)


async def test_falls_back_to_the_stream_when_the_side_channel_cannot_connect(tmp_path, monkeypatch):
    from meshagent.net import handoff as wire

    async def unreachable(addrs, token, *, timeout=3.0):
        assert addrs  # the receiver did offer a side channel
        return None

    monkeypatch.setattr(wire, "connect_bulk", unreachable)
    async with two_nodes(tmp_path) as (a, b):
        a.custody.put(make_agent(vfs_bytes=1 << 20))
        _, emit = await _events()
        result = await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert result["via"] == "stream" and result["resumed"] and b.custody.state("agent-1") == "running"


async def test_migrating_an_unknown_agent_changes_nothing(tmp_path):
    from meshagent.errors import AgentNotFound

    async with two_nodes(tmp_path) as (a, b):
        _, emit = await _events()
        with pytest.raises(AgentNotFound):
            await a.manager.migrate({"agent": "ghost", "to": b.peer_id}, emit)
        assert (await a.manager.list_handoffs({}, emit))["handoffs"] == []


async def test_private_agent_does_not_leave_for_an_untrusted_peer(tmp_path):
    from meshagent.errors import PrivacyViolation
    from meshagent.node.snapshots import AgentMeta

    async with two_nodes(tmp_path) as (a, b):
        agent = make_agent()
        a.custody.put(replace(agent, meta=AgentMeta(owner="alice", privacy="private")))
        _, emit = await _events()
        with pytest.raises(PrivacyViolation):
            await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert a.custody.state("agent-1") == "running" and not b.custody.holds("agent-1")
        with pytest.raises(PrivacyViolation):
            await a.manager.snapshot_export({"agent": "agent-1", "file": str(tmp_path / "f"), "to": b.peer_id}, emit)
        assert a.custody.state("agent-1") == "running" and not (tmp_path / "f").exists()
        a.manager._trusted = lambda peer: peer == b.peer_id  # paired: one of the owner's devices
        await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert b.custody.get("agent-1").meta.privacy == "private"


async def test_receiver_keeps_only_sealed_bytes_at_rest_until_resumed(tmp_path):
    async with two_nodes(tmp_path) as (a, b):
        agent = make_agent(vfs_bytes=256 << 10)
        a.custody.put(agent)
        secret = agent.snapshot.vfs.files["big.bin"][1000:1064]
        seen = {}
        real = a.manager._sender_stored

        async def inspect(row):
            stored = list((b.dir / "handoff" / "in").glob("*.sealed"))
            escrow = list((a.dir / "handoff" / "out").glob("*.sealed"))
            seen["stored"] = [p.read_bytes() for p in stored]
            seen["escrow"] = [p.read_bytes() for p in escrow]
            seen["b_opens"] = b.manager._open_file(stored[0], frozenset())
            await real(row)

        a.manager._sender_stored = inspect
        _, emit = await _events()
        await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert len(seen["stored"]) == 1 and len(seen["escrow"]) == 1
        for blob in seen["stored"] + seen["escrow"]:
            assert secret not in blob and b"private notes" not in blob
        assert fingerprint(seen["b_opens"]) == fingerprint(agent)
        copy = tmp_path / "stolen.sealed"
        copy.write_bytes(seen["stored"][0])
        with pytest.raises(WrongRecipient):  # only B opens it as recipient (A holds the escrow key by design)
            a.manager._open_file(copy, frozenset())
        assert leftovers(b) == []


async def test_a_full_receiver_refuses_and_the_agent_stays(tmp_path):
    async with two_nodes(tmp_path, b_kw={"admit": lambda header: RejectReason.FULL}) as (a, b):
        a.custody.put(make_agent())
        _, emit = await _events()
        with pytest.raises(HandoffRejected) as info:
            await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert info.value.reason == "full" and a.custody.state("agent-1") == "running"
        # nothing of a refused offer is kept (the sender uses a new generation for its next try)
        assert b.manager.store.highest("agent-1") == -1


async def test_stored_copy_is_dropped_when_the_sender_aborts_before_commit(tmp_path):
    """Rules S1/S5 + R2 without restarts: the receiver asks, the sender says aborted, the copy goes."""
    async with two_nodes(tmp_path) as (a, b):
        a.custody.put(make_agent())

        async def fail(row):
            raise HandoffError("lost the Stored message")

        a.manager._sender_stored = fail
        _, emit = await _events()
        with pytest.raises(HandoffError):
            await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        for _ in range(200):
            if (await b.manager.list_handoffs({}, emit))["pending"] == 0:
                break
            await trio.sleep(0.05)
        assert (await b.manager.list_handoffs({}, emit))["handoffs"][0]["state"] == "aborted"
        assert a.custody.state("agent-1") == "running" and not b.custody.holds("agent-1")
        assert leftovers(a) == [] and leftovers(b) == []


async def test_commit_lost_in_flight_is_delivered_by_asking(tmp_path):
    """Rule S3/R2: the sender committed but its Commit never arrived; the receiver asks and resumes."""

    async with two_nodes(tmp_path) as (a, b):
        a.custody.put(make_agent())
        real = a.manager._sender_stored

        async def commit_then_vanish(row):
            await real(row)
            raise trio.BrokenResourceError("connection lost after commit")

        a.manager._sender_stored = commit_then_vanish
        _, emit = await _events()
        with pytest.raises(trio.BrokenResourceError):
            await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        for _ in range(200):
            if b.custody.state("agent-1") == "running":
                break
            await trio.sleep(0.05)
        assert b.custody.state("agent-1") == "running" and not a.custody.holds("agent-1")
        assert not a.manager.may_run("agent-1")
        for _ in range(200):  # and the sender's re-sent Commit closes its side
            if (await a.manager.list_handoffs({}, emit))["pending"] == 0:
                break
            await trio.sleep(0.05)
        assert (await a.manager.list_handoffs({}, emit))["handoffs"][0]["state"] == "done"


async def test_sender_that_stops_mid_bulk_transfer_leaves_no_partial_agent(tmp_path):
    from meshagent.net.bulk import connect_bulk

    async with two_nodes(tmp_path) as (a, b):
        sealed = a.manager._seal(make_agent(vfs_bytes=2 << 20), 0, b.peer_id, b.identity.sealing_public, False)
        body = b"".join(sealed.chunks())
        stream = await a.host.open_stream(b.peer_id, hp.HANDOFF_PROTOCOL)
        await stream.send_frame(hp.encode(hp.Offer(sealed.header_blob)))
        accept = hp.decode(await stream.receive_frame(hp.MAX_MESSAGE))
        assert isinstance(accept, hp.Accept) and accept.bulk_addrs
        bulk = await connect_bulk(accept.bulk_addrs, accept.token)
        assert bulk is not None
        await stream.send_frame(hp.encode(hp.Body(hp.Via.BULK, len(body))))
        await bulk.send_all(body[: len(body) // 3])
        await bulk.aclose()  # the sender dies mid-body
        for _ in range(100):
            rows = (await b.manager.list_handoffs({}, None))["handoffs"]
            if rows and rows[0]["state"] == "aborted":
                break
            await trio.sleep(0.05)
        assert rows[0]["state"] == "aborted"
        assert not b.custody.holds("agent-1") and leftovers(b) == []
        await stream.reset()


async def test_recovery_keeps_an_agent_that_came_back_after_a_commit_it_never_heard_resumed(tmp_path):
    """A's handoff of generation 0 to B committed but A never heard "Resumed" (its row stays
    committed); the agent came back to A at generation 1. After a restart A re-sends that old
    commit and must not release the agent it runs now (it did, and the node crashed in a loop)."""
    async with two_nodes(tmp_path) as (a, b):
        a.custody.put(make_agent())
        _, emit = await _events()
        await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        await b.manager.migrate({"agent": "agent-1", "to": a.peer_id}, emit)
        assert a.custody.state("agent-1") == "running" and a.custody.generation("agent-1") == 1
        store = a.manager.store
        await trio.to_thread.run_sync(store.set_state, "sender", "agent-1", 0, "committed")
        a.custody.log.clear()
        restarted = HandoffManager(data_dir=a.dir, identity=a.identity, host=a.host, custody=a.custody,
                                   peers=lambda p: b.info() if p == b.peer_id else None, retry_s=0.2)
        async with trio.open_nursery() as nursery:
            await nursery.start(restarted.run)
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        assert ("release", "agent-1") not in a.custody.log
        assert a.custody.state("agent-1") == "running"

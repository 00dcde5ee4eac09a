"""Handoff sealed with the hybrid ML-KEM768-X25519 suite (``[net] sealing_suite = "hybrid"``) between
two in-process nodes (custody double, as in ``test_handoff.py``): which suite is chosen, and that both
the receiver and the sender's escrow copy open with the key matching the header's suite."""

from __future__ import annotations

import pytest

from meshagent.errors import WrongRecipient
from meshagent.net import handoff as wire
from meshagent.node.handoff import HandoffPeer, _write_container
from meshagent.protocol import handoff as hp
from meshagent.protocol import snapshot as snap

from tests.node.test_handoff import Side, _events, leftovers, two_nodes
from tests.node.test_handoff_double import fingerprint, make_agent

HYBRID = {"sealing_suite": "hybrid"}


@pytest.fixture
def advertise_hybrid(monkeypatch):
    """Both sides' peer-table entries carry their hybrid key (as an advert of a hybrid node does)."""
    monkeypatch.setattr(Side, "info", lambda self: HandoffPeer(
        self.peer_id, self.host.addrs, self.identity.sealing_public, frozenset(), self.identity.hybrid_public))


def file_suite(path) -> str:
    with open(path, "rb") as f:
        return snap.header_suite(wire.read_container_header(f))


async def test_hybrid_migration_both_ways(tmp_path, advertise_hybrid):
    async with two_nodes(tmp_path, a_kw=HYBRID, b_kw=HYBRID) as (a, b):
        agent = make_agent(vfs_bytes=1 << 20)
        a.custody.put(agent)
        _, emit = await _events()
        result = await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert result["suite"] == snap.SUITE_HYBRID and result["resumed"]
        assert fingerprint(b.custody.get("agent-1")) == fingerprint(agent)
        assert leftovers(a) == [] and leftovers(b) == []
        result = await b.manager.migrate({"agent": "agent-1", "to": a.peer_id}, emit)
        assert result["suite"] == snap.SUITE_HYBRID and result["generation"] == 1
        assert a.custody.state("agent-1") == "running"


async def test_hybrid_config_falls_back_to_x25519_for_a_peer_without_a_hybrid_key(tmp_path):
    async with two_nodes(tmp_path, a_kw=HYBRID) as (a, b):  # b's entry carries no hybrid key
        a.custody.put(make_agent())
        _, emit = await _events()
        result = await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert result["suite"] == snap.SUITE_X25519 and b.custody.state("agent-1") == "running"


async def test_default_config_seals_with_x25519_even_to_a_hybrid_peer(tmp_path, advertise_hybrid):
    async with two_nodes(tmp_path, b_kw=HYBRID) as (a, b):
        a.custody.put(make_agent())
        _, emit = await _events()
        result = await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
        assert result["suite"] == snap.SUITE_X25519 and b.custody.state("agent-1") == "running"


async def test_hybrid_sealed_file_opens_with_the_matching_keys_only(tmp_path):
    async with two_nodes(tmp_path, a_kw=HYBRID, b_kw=HYBRID) as (a, b):
        agent = make_agent()
        sealed = a.manager._seal(agent, 0, b.peer_id, b.identity.hybrid_public, False, suite=snap.SUITE_HYBRID)
        assert sealed.header.sender_key == a.identity.hybrid_public  # the escrow copy: a's own hybrid key
        path = tmp_path / "x.sealed"
        _write_container(sealed, path)
        assert file_suite(path) == snap.SUITE_HYBRID
        assert fingerprint(b.manager._open_file(path, frozenset())) == fingerprint(agent)
        assert fingerprint(a.manager._open_file(path, frozenset(), True)) == fingerprint(agent)  # escrow (rule S1)
        with pytest.raises(WrongRecipient):
            a.manager._open_file(path, frozenset())  # not the recipient
        verdict = await b.manager.offer(a.peer_id, sealed.header_blob)
        assert isinstance(verdict, snap.SnapshotHeader) and verdict.suite == snap.SUITE_HYBRID
        other = a.manager._seal(agent, 1, b.peer_id, a.identity.hybrid_public, False, suite=snap.SUITE_HYBRID)
        verdict = await b.manager.offer(a.peer_id, other.header_blob)  # sealed to a's key, not b's
        assert isinstance(verdict, hp.Reject) and verdict.reason == hp.RejectReason.WRONG_RECIPIENT


async def test_hybrid_backup_and_import(tmp_path):
    async with two_nodes(tmp_path, a_kw=HYBRID) as (a, b):
        agent = make_agent()
        a.custody.put(agent)
        _, emit = await _events()
        out = tmp_path / "backup.msnap"
        result = await a.manager.snapshot_export({"agent": "agent-1", "file": str(out)}, emit)
        assert result["suite"] == snap.SUITE_HYBRID and file_suite(out) == snap.SUITE_HYBRID
        with pytest.raises(WrongRecipient):
            await b.manager.snapshot_import({"file": str(out)}, emit)
        await a.custody.release("agent-1")
        await a.manager.snapshot_import({"file": str(out)}, emit)
        assert fingerprint(a.custody.get("agent-1")) == fingerprint(agent)

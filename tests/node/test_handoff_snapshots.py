"""The adapter between a frozen agent and the sections of a sealed snapshot."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest

from meshagent.errors import SealError
from meshagent.node.identity import load_or_create_identity
from meshagent.node.snapshots import AgentMeta, from_sections, seal_agent, to_sections
from meshagent.protocol import snapshot as snap
from meshagent.runtime.snapshot import MemoryImage

from tests.node.test_handoff_double import fingerprint, make_agent


def opened(agent, include_kv, skip=frozenset(), tmp_path=None):
    a, b = load_or_create_identity(tmp_path / "a"), load_or_create_identity(tmp_path / "b")
    sealed = seal_agent(agent, a, recipient=b.peer_id, recipient_key=b.sealing_public, generation=3, now=0.0, ttl_s=60,
                        data_key=os.urandom(32), include_kv=include_kv)
    reader = snap.SnapshotReader(sealing_key=b.sealing_key, me=b.peer_id, now=1.0, mode="open", skip=skip)
    sections: dict[str, bytearray] = {}
    for event in reader.receive_data(b"".join(sealed.container(skip))):
        if isinstance(event, snap.SectionData):
            sections.setdefault(event.section, bytearray()).extend(event.data)
    reader.close()
    return sealed, {k: bytes(v) for k, v in sections.items()}


def test_round_trip_keeps_journal_files_metadata_and_image(tmp_path):
    agent = make_agent()
    from meshagent.runtime.host_state import HostState

    image = MemoryImage.capture(5, b"\x01" * 65536 + bytes(65536), (("g", 7),), HostState())
    agent = replace(agent, snapshot=replace(agent.snapshot, image=image),
                    meta=AgentMeta(owner="alice", privacy="lan", policy="cost-first"))
    sealed, sections = opened(agent, False, tmp_path=tmp_path)
    back = from_sections(sections, sealed.header)
    assert fingerprint(back) == fingerprint(agent)
    assert back.meta == agent.meta and back.snapshot.image.memory() == image.memory()
    assert back.snapshot.module == agent.snapshot.module


def test_kv_blobs_only_for_a_receiver_with_the_same_model(tmp_path):
    agent = replace(make_agent(), kv_model_hash="ab" * 32, kv_blobs=(("s1", b"kv" * 1000),))
    names = [n for n, _ in to_sections(agent, include_kv=False)]
    assert "kv" not in names
    sealed, sections = opened(agent, True, tmp_path=tmp_path)
    back = from_sections(sections, sealed.header)
    assert back.kv_blobs == (("s1", b"kv" * 1000),) and back.kv_model_hash == "ab" * 32
    assert sealed.header.kv_model_hash == "ab" * 32


def test_cached_module_is_left_out_and_resolved_by_hash(tmp_path):
    agent = make_agent()
    sealed, sections = opened(agent, False, skip=frozenset({"module"}), tmp_path=tmp_path)
    back = from_sections(sections, sealed.header)
    assert back.snapshot.module is None
    assert back.snapshot.module_sha256 == hashlib.sha256(agent.snapshot.module).hexdigest()


def test_content_that_contradicts_the_signed_header_is_refused(tmp_path):
    agent = make_agent()
    sealed, sections = opened(agent, False, tmp_path=tmp_path)
    with pytest.raises(SealError):
        from_sections({**sections, "module": b"\x00asm other"}, sealed.header)
    other = make_agent("someone-else")
    _, other_sections = opened(other, False, tmp_path=tmp_path)
    with pytest.raises(SealError):
        from_sections({**sections, "meta": other_sections["meta"]}, sealed.header)
    with pytest.raises(SealError):
        from_sections({k: v for k, v in sections.items() if k != "journal"}, sealed.header)
    with pytest.raises(SealError):
        from_sections({**sections, "vfs": b"\xff\xff"}, sealed.header)

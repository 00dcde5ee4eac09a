"""The handoff shell's pieces that need no peer: body ranges of a sealed file, header reading."""

from __future__ import annotations

import os

import pytest

from meshagent.errors import HandoffError
from meshagent.net.handoff import body_ranges, read_container_header
from meshagent.node.identity import load_or_create_identity
from meshagent.protocol import snapshot as snap


@pytest.fixture
def sealed_file(tmp_path):
    a, b = load_or_create_identity(tmp_path / "a"), load_or_create_identity(tmp_path / "b")
    sealed = snap.seal_snapshot(
        signing_key=a.signing_key, sender_sealing_key=a.sealing_public, recipient=b.peer_id, recipient_key=b.sealing_public,
        agent_id="x", generation=1, sections=[("meta", b"m"), ("module", os.urandom(10_000)), ("journal", os.urandom(9000))],
        now=0.0, ttl_s=10.0, data_key=os.urandom(32), chunk_size=4096,
    )
    path = tmp_path / "x.sealed"
    path.write_bytes(b"".join(sealed.container()))
    return path, sealed, b


def test_body_ranges_skip_the_cached_module(sealed_file):
    path, sealed, b = sealed_file
    data = path.read_bytes()
    full = body_ranges(path, sealed.header, frozenset())
    assert len(full) == 1 and full[0][0] + full[0][1] == len(data)
    without = body_ranges(path, sealed.header, frozenset({"module"}))
    body = b"".join(data[o : o + n] for o, n in without)
    assert body == b"".join(sealed.chunks(skip=frozenset({"module"})))
    reader = snap.SnapshotReader(sealing_key=b.sealing_key, me=b.peer_id, now=1.0, mode="open",
                                 skip=frozenset({"module"}), header_blob=sealed.header_blob)
    names = {e.section for e in reader.receive_data(body) if isinstance(e, snap.SectionData)}
    assert names == {"meta", "journal"} and reader.complete


def test_a_file_that_does_not_match_its_header_is_refused(sealed_file):
    path, sealed, _ = sealed_file
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(HandoffError):
        body_ranges(path, sealed.header, frozenset())
    with open(path, "rb") as f:
        assert read_container_header(f) == sealed.header_blob
    path.write_bytes(b"nope")
    with pytest.raises(HandoffError), open(path, "rb") as f:
        read_container_header(f)

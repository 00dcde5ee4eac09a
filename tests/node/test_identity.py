import os

import pytest

from meshagent.errors import DuplicateIdentityError, IdentityError
from meshagent.node.identity import DataDirLock, load_or_create_identity


def test_created_once_with_private_modes(tmp_path):
    d = tmp_path / "node"
    a = load_or_create_identity(d)
    b = load_or_create_identity(d)
    assert a.peer_id == b.peer_id and a.peer_id.startswith("12D3KooW")
    assert a.sealing_public == b.sealing_public
    for name in ("identity.key", "sealing.key"):
        assert (d / name).stat().st_mode & 0o777 == 0o600
    assert d.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("name, mode", [("identity.key", 0o644), ("sealing-pq.key", 0o640)])
def test_loose_key_mode_refused(tmp_path, name, mode):
    d = tmp_path / "node"
    load_or_create_identity(d)
    os.chmod(d / name, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(d)


@pytest.mark.parametrize("name, data", [("sealing.key", b"short"), ("sealing-pq.key", b"x" * 32)])
def test_corrupt_key_refused(tmp_path, name, data):
    d = tmp_path / "node"
    load_or_create_identity(d)
    (d / name).write_bytes(data)
    with pytest.raises(IdentityError, match="corrupt"):
        load_or_create_identity(d)


def test_libp2p_peer_id_matches(tmp_path):
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID

    ident = load_or_create_identity(tmp_path / "n")
    assert ID.from_pubkey(Ed25519PrivateKey.new(ident.seed()).get_public_key()).to_base58() == ident.peer_id


def test_one_node_per_data_dir(tmp_path):
    d = tmp_path / "node"
    load_or_create_identity(d)
    with DataDirLock(d):
        with pytest.raises(DuplicateIdentityError):
            with DataDirLock(d):
                pass
    with DataDirLock(d):
        pass


def test_hybrid_sealing_key_created_once_with_private_mode(tmp_path):
    from meshagent.protocol.advert import PQ_SEALING_KEY_BYTES
    from meshagent.protocol.snapshot import SUITE_HYBRID, SUITE_X25519

    d = tmp_path / "node"
    a = load_or_create_identity(d)
    b = load_or_create_identity(d)
    assert (d / "sealing-pq.key").stat().st_mode & 0o777 == 0o600
    assert len((d / "sealing-pq.key").read_bytes()) == 64
    assert len(a.hybrid_public) == PQ_SEALING_KEY_BYTES and a.hybrid_public == b.hybrid_public
    assert a.hybrid_public.endswith(a.sealing_public)
    assert a.sealing_for(SUITE_X25519) == (a.sealing_key, a.sealing_public)
    key, pub = a.sealing_for(SUITE_HYBRID)
    assert pub == a.hybrid_public and key is not None


def test_hybrid_key_added_to_an_older_data_dir(tmp_path):
    d = tmp_path / "node"
    a = load_or_create_identity(d)
    (d / "sealing-pq.key").unlink()
    b = load_or_create_identity(d)
    assert (a.peer_id, a.sealing_public) == (b.peer_id, b.sealing_public)
    assert (d / "sealing-pq.key").stat().st_mode & 0o777 == 0o600


def test_hybrid_seal_and_open_with_identity_keys(tmp_path):
    from meshagent.protocol import snapshot as snap

    me = load_or_create_identity(tmp_path / "a")
    other = load_or_create_identity(tmp_path / "b")
    sealed = snap.seal_snapshot(
        signing_key=me.signing_key, sender_sealing_key=me.hybrid_public, recipient=other.peer_id,
        recipient_key=other.hybrid_public, agent_id="a1", generation=1, sections=[("meta", b"hello")],
        now=1000.0, ttl_s=60.0, data_key=b"k" * 32, suite=snap.SUITE_HYBRID,
    )
    key, pub = other.sealing_for(snap.SUITE_HYBRID)
    reader = snap.SnapshotReader(sealing_key=key, sealing_public=pub, me=other.peer_id, now=1001.0, mode="open")
    events = [e for piece in sealed.container() for e in reader.receive_data(piece)]
    assert [e.data for e in events if isinstance(e, snap.SectionData)] == [b"hello"]
    assert reader.header.suite == snap.SUITE_HYBRID

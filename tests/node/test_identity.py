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


def test_loose_key_mode_refused(tmp_path):
    d = tmp_path / "node"
    load_or_create_identity(d)
    os.chmod(d / "identity.key", 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(d)


def test_corrupt_key_refused(tmp_path):
    d = tmp_path / "node"
    load_or_create_identity(d)
    (d / "sealing.key").write_bytes(b"short")
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

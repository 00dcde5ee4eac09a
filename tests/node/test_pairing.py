"""Pairing two real node processes with a short code."""

import pytest

from meshagent.errors import ControlError
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.protocol import pairing


def test_pair_with_code(tmp_path):
    a = NodeProcess(tmp_path / "a").start()
    b = NodeProcess(tmp_path / "b", "--bootstrap", a.addrs[0]).start()
    c = NodeProcess(tmp_path / "c", "--bootstrap", a.addrs[0]).start()
    try:
        wait_for(lambda: a.peer_id in b.peers() and a.peer_id in c.peers(), timeout=10)
        code = a.call("pair_show")["code"]
        # A wrong code is refused, and does not pair anything.
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        with pytest.raises(ControlError, match="wrong code"):
            c.call("pair_join", {"code": wrong, "peer": a.peer_id})
        result = b.call("pair_join", {"code": code})
        assert result["peer_id"] == a.peer_id
        assert [d["peer_id"] for d in a.call("trusted")["devices"]] == [b.peer_id]
        assert [d["peer_id"] for d in b.call("trusted")["devices"]] == [a.peer_id]
        # The code is single-use.
        with pytest.raises(ControlError):
            c.call("pair_join", {"code": code, "peer": a.peer_id})
        assert (a.data_dir / "trust.json").stat().st_mode & 0o777 == 0o600
    finally:
        for n in (a, b, c):
            n.stop()


def test_guessing_is_limited():
    p = pairing.PendingCode("123456", expires_at=100.0)
    for _ in range(pairing.MAX_ATTEMPTS):
        assert p.usable(50.0)
        p = p.attempt()
    assert not p.usable(50.0)
    assert not pairing.PendingCode("123456", 100.0).usable(100.0)


def test_proofs_bind_both_peers_and_roles():
    n1, n2 = b"a" * 16, b"b" * 16
    base = pairing.proof("123456", b"joiner", "A", "B", n1, n2)
    assert base != pairing.proof("123457", b"joiner", "A", "B", n1, n2)
    assert base != pairing.proof("123456", b"shower", "A", "B", n1, n2)
    assert base != pairing.proof("123456", b"joiner", "A", "C", n1, n2)
    assert base != pairing.proof("123456", b"joiner", "A", "B", n2, n1)
    assert pairing.code_from_bytes(b"\x00\x00\x00\x07") == "000007"

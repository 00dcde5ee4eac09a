"""Pairing two real node processes with a short code (the PAKE itself: ``tests/protocol/test_pairing.py``)."""

import json
import subprocess
import sys

import pytest

from meshagent.errors import ControlError
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.protocol import pairing


def wrong_secret_naming(device: str, code: pairing.Code) -> pairing.Code:
    """A wrong code whose device digits still name ``device`` (so it reaches the network)."""
    for n in range(1_000_000):
        secret = f"{n:06d}"
        if secret != code.secret and pairing.device_digits(device, secret) == code.device:
            return pairing.Code(code.device, secret)
    raise AssertionError("unreachable")


def trusted(node: NodeProcess) -> list[str]:
    return [d["peer_id"] for d in node.call("trusted")["devices"]]


def test_pair_with_code(tmp_path):
    a = NodeProcess(tmp_path / "a").start()
    b = NodeProcess(tmp_path / "b", "--bootstrap", a.addrs[0]).start()
    c = NodeProcess(tmp_path / "c", "--bootstrap", a.addrs[0]).start()
    try:
        wait_for(lambda: a.peer_id in b.peers() and a.peer_id in c.peers() and b.peer_id in c.peers(), timeout=15)
        shown = a.call("pair_show")
        code = pairing.parse_code(shown["code"])
        assert code is not None and code.shown_by(a.peer_id) and shown["peer_id"] == a.peer_id
        # A code that names no device c knows is refused on c, without using one of a's tries.
        typo = pairing.Code(code.device, code.secret[:5] + str((int(code.secret[5]) + 1) % 10))
        if not typo.shown_by(a.peer_id) and not typo.shown_by(b.peer_id):
            with pytest.raises(ControlError, match="no device this node knows shows this code"):
                c.call("pair_join", {"code": str(typo)})
        # A code given with a peer it does not name is refused locally as well.
        with pytest.raises(ControlError, match="not shown by"):
            c.call("pair_join", {"code": str(code), "peer": b.peer_id})
        # A wrong code that does name a is refused by both sides, and pairs nothing.
        with pytest.raises(ControlError, match="wrong code"):
            c.call("pair_join", {"code": str(wrong_secret_naming(a.peer_id, code))})
        result = b.call("pair_join", {"code": shown["code"]})
        assert result == {"paired": True, "peer_id": a.peer_id, "name": "a"}
        assert trusted(a) == [b.peer_id]
        assert trusted(b) == [a.peer_id]
        assert trusted(c) == []
        # The code is single-use.
        with pytest.raises(ControlError, match="no pairing code active"):
            c.call("pair_join", {"code": str(code)})
        assert (a.data_dir / "trust.json").stat().st_mode & 0o777 == 0o600
        assert (b.data_dir / "trust.json").stat().st_mode & 0o777 == 0o600
        # The command line: show on a, join on c by typing the code as printed.
        shown = subprocess.run([sys.executable, "-m", "meshagent", "pair", "--data-dir", str(a.data_dir)],
                               capture_output=True, text=True, timeout=60, check=True).stdout
        typed = shown.split("meshagent pair ")[1].split()[0]
        out = subprocess.run([sys.executable, "-m", "meshagent", "pair", typed, "--json", "--data-dir", str(c.data_dir)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert json.loads(out)["peer_id"] == a.peer_id
        assert sorted(trusted(a)) == sorted([b.peer_id, c.peer_id])
        # A failure on the command line is one line saying what to do, and a non-zero exit.
        bad = subprocess.run([sys.executable, "-m", "meshagent", "pair", "12345", "--data-dir", str(c.data_dir)],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "nine digits" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        for n in (a, b, c):
            n.stop()


def test_trust_store_stays_private(tmp_path):
    from meshagent.errors import IdentityError
    from meshagent.node.identity import load_or_create_identity
    from meshagent.node.trust import TrustStore

    peer = load_or_create_identity(tmp_path / "other").peer_id
    (tmp_path / "trust.tmp").write_text("left over")
    (tmp_path / "trust.tmp").chmod(0o644)
    store = TrustStore(tmp_path)
    store.add(peer, "laptop")
    assert (tmp_path / "trust.json").stat().st_mode & 0o777 == 0o600
    assert [d.peer_id for d in TrustStore(tmp_path).devices()] == [peer]
    (tmp_path / "trust.json").chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        TrustStore(tmp_path)
    (tmp_path / "trust.json").chmod(0o600)
    (tmp_path / "trust.json").write_text('{"devices": [{"peer_id": "not a peer id", "name": "x", "paired_at": 0}]}')
    with pytest.raises(IdentityError, match="corrupt"):
        TrustStore(tmp_path)

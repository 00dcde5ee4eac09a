"""Pairing while a rogue node is in the mesh: real ``meshagent join`` processes, real libp2p.

The rogue (``tests/hostile/rogue/pairing.py``) answers every pairing exchange
it is offered and keeps what it receives; as a joiner it guesses. The owner's
phone pairs with the owner's laptop by typing the code the laptop shows.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meshagent.errors import ControlError
from meshagent.node.spawn import NodeProcess, wait_for
from tests.hostile.rogue import rogue_node


def trusted(node: NodeProcess) -> list[str]:
    return [d["peer_id"] for d in node.call("trusted")["devices"]]


def meshagent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshagent", *args], capture_output=True, text=True, timeout=90)


@pytest.fixture
def mesh(tmp_path):
    """laptop ← rogue ← phone: the phone meets the rogue first and learns the laptop through it."""
    laptop = NodeProcess(tmp_path / "laptop").start()
    rogue = rogue_node(tmp_path / "rogue", "--bootstrap", laptop.addrs[0], behave=("pair_responder",)).start()
    phone = NodeProcess(tmp_path / "phone", "--bootstrap", rogue.addrs[0]).start()
    nodes = {"laptop": laptop, "rogue": rogue, "phone": phone}
    try:
        ok, _ = wait_for(lambda: {laptop.peer_id, rogue.peer_id} <= set(phone.peers())
                         and phone.peer_id in laptop.peers(), timeout=30)
        assert ok, "the three nodes did not discover each other"
        yield nodes
    finally:
        for n in nodes.values():
            n.stop()


def test_phone_pairs_with_the_laptop_and_the_rogue_hears_nothing(mesh):
    laptop, rogue, phone = mesh["laptop"], mesh["rogue"], mesh["phone"]
    shown = meshagent("pair", "--json", "--data-dir", str(laptop.data_dir))
    assert shown.returncode == 0, shown.stderr
    code = json.loads(shown.stdout)["code"]

    joined = meshagent("pair", code, "--json", "--data-dir", str(phone.data_dir))
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)["peer_id"] == laptop.peer_id

    assert trusted(phone) == [laptop.peer_id]
    assert trusted(laptop) == [phone.peer_id]
    assert trusted(rogue) == []
    # The phone spoke to the laptop only: the rogue was offered no exchange, so it holds
    # nothing to test a guess against and recovered nothing.
    loot = rogue.call("attack", {"name": "pair_loot", "candidates": [code[-6:]]})["exchanges"]
    assert loot == [], loot
    for node in (phone, laptop):
        assert (node.data_dir / "trust.json").stat().st_mode & 0o777 == 0o600


def test_a_rogue_gets_one_guess_per_exchange_and_nothing_to_test_offline(mesh):
    from meshagent.protocol import pairing

    laptop, rogue, phone = mesh["laptop"], mesh["rogue"], mesh["phone"]
    code = pairing.parse_code(laptop.call("pair_show")["code"])
    assert code is not None
    wrong = [s for s in ("000000", "111111", "222222", "333333") if s != code.secret][:3]
    candidates = [code.secret, *wrong, "123456"]

    # The rare case where the device digits of the laptop's code also name the rogue (1 in
    # 1000 per code, here made certain): the phone then talks to the rogue. The rogue answers with its one
    # guess; the phone refuses its confirmation and sends it nothing derived from the key.
    collided = f"{pairing.device_digits(rogue.peer_id, code.secret)}-{code.secret}"
    with pytest.raises(ControlError, match="wrong code"):
        phone.call("pair_join", {"code": collided, "peer": rogue.peer_id})
    loot, _ = wait_for(lambda: [e for e in rogue.call("attack", {"name": "pair_loot"})["exchanges"] if e.get("over")],
                       timeout=10)
    [exchange] = loot
    assert exchange["protocol"] == pairing.PAIR_PROTOCOL
    assert exchange["received"] == ["Start", "Refuse"]
    assert exchange["key_dependent"] is False and "paired" not in exchange

    # The rogue as joiner: each exchange is one online guess, and the laptop's answer lets it
    # test no code offline — not even the true one, handed to it as a candidate.
    for guess in wrong:
        result = rogue.call("attack", {"name": "pair_guess", "peer": laptop.peer_id, "secret": guess,
                                       "candidates": candidates})
        assert (result["paired"], result["refused"]) == (False, "wrong_code"), result
        assert result["offline_matches"] == [], result
    # Three tries spent: the code is dead, even for the right secret, the rogue's or the owner's.
    result = rogue.call("attack", {"name": "pair_guess", "peer": laptop.peer_id, "secret": code.secret})
    assert (result["paired"], result["refused"]) == (False, "no_code"), result
    with pytest.raises(ControlError, match="no pairing code active"):
        phone.call("pair_join", {"code": str(code)})
    assert trusted(laptop) == [] and trusted(phone) == [] and trusted(rogue) == []

    # The laptop keeps working: a new code pairs the owner's devices.
    again = laptop.call("pair_show")["code"]
    assert phone.call("pair_join", {"code": again})["peer_id"] == laptop.peer_id
    assert trusted(phone) == [laptop.peer_id] and trusted(laptop) == [phone.peer_id]
    assert trusted(rogue) == []

    # Control: the same offline check does recognise the code when the rogue's one guess is right.
    third = pairing.parse_code(laptop.call("pair_show")["code"])
    assert third is not None
    result = rogue.call("attack", {"name": "pair_guess", "peer": laptop.peer_id, "secret": third.secret,
                                   "candidates": ["000000", third.secret]})
    assert result["paired"] is True and result["offline_matches"] == [third.secret], result

"""The rogue node starts as a real ``meshagent join`` and takes attack orders on its control socket."""

from __future__ import annotations

from tests.hostile.rogue import rogue_node


def test_the_rogue_answers_attack_orders(tmp_path):
    rogue = rogue_node(tmp_path / "rogue").start()
    try:
        assert rogue.call("attack", {"name": "whoami"}) == {"peer_id": rogue.peer_id}
    finally:
        rogue.stop()

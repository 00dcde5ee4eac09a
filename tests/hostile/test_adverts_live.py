"""A rogue node against honest ``meshagent join`` processes: adverts, the peer table and the bulk channel.

The rogue (``tests/hostile/rogue/adverts.py``) is a real node: it joins over
libp2p, gossips and exchanges adverts, and opens silent connections to a
receiver's bulk side channel as a stranger on the link would. Each attack is
refused and the honest nodes keep working.
(``lan`` claimed from a routed path: ``tests/lab/test_lab_lan_claims.py``.)
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import trio

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.protocol.peers import MAX_PER_SOURCE
from tests.conftest import MODEL_CACHE
from tests.hostile.rogue import rogue_node


def _node(data_dir: Path, *args: str, rogue: bool = False) -> NodeProcess:
    write_device_config(data_dir, "laptop", MODEL_CACHE)
    if rogue:
        return rogue_node(data_dir, *args, name=data_dir.name)
    return NodeProcess(data_dir, *args, name=data_dir.name)


@pytest.fixture
def mesh(tmp_path):
    """An honest target, an honest peer and the rogue, both bootstrapped from the target."""
    target = _node(tmp_path / "target").start()
    honest = _node(tmp_path / "honest", "--bootstrap", target.addrs[0]).launch()
    rogue = _node(tmp_path / "rogue", "--bootstrap", target.addrs[0], rogue=True).launch()
    nodes = (target, honest, rogue)
    try:
        for n in nodes:
            n.wait_ready()
        ok, _ = wait_for(lambda: {honest.peer_id, rogue.peer_id} <= set(target.peers()), timeout=30)
        assert ok, "the mesh did not form"
        yield target, honest, rogue
    finally:
        for n in nodes:
            n.stop()


def test_insane_adverts_are_refused_and_the_rogue_still_expires(mesh):
    target, honest, rogue = mesh
    dropped = target.call("status")["adverts_dropped"]
    sent = rogue.call("attack", {"name": "insane_adverts", "target": target.peer_id})["sent"]
    # Each lie arrives by peer exchange (and by gossip) and is refused every time.
    ok, _ = wait_for(lambda: target.call("status")["adverts_dropped"] >= dropped + len(sent), timeout=10)
    assert ok, (sent, target.call("status")["adverts_dropped"] - dropped)
    entry = target.peers()[rogue.peer_id]  # still there, with its honest advert only
    assert entry["price_per_1k_tokens"] >= 0
    assert all(m["decode_tps"] is None or math.isfinite(m["decode_tps"]) for m in entry["models"])
    # Invited to no more auctions than the honest peer.
    invited = [target.call("auction", {"privacy": "any", "award": False})["invited"] for _ in range(4)]
    assert sum(rogue.peer_id in i for i in invited) <= sum(honest.peer_id in i for i in invited), invited
    # Killed without a goodbye, the rogue leaves the table like any silent peer (advert TTL 12 s):
    # none of its never-expiring adverts was kept.
    rogue.kill()
    gone, _ = wait_for(lambda: rogue.peer_id not in target.peers(), timeout=30, interval=0.5)
    assert gone, target.peers().get(rogue.peer_id)
    assert honest.peer_id in target.peers() and target.proc.poll() is None


def test_a_flood_of_signed_adverts_by_peer_exchange_stays_within_the_sources_share(mesh):
    target, honest, rogue = mesh
    flood = set(rogue.call("attack", {"name": "advert_flood", "target": target.peer_id, "count": 200},
                           timeout=120)["peers"])
    assert len(flood) == 200
    # Every flooded advert has arrived (accepted or refused) once the drop counter has moved this far.
    ok, _ = wait_for(lambda: target.call("status")["adverts_dropped"] >= 200 - MAX_PER_SOURCE, timeout=30)
    held = flood & set(target.peers())
    assert ok and len(held) <= MAX_PER_SOURCE, (len(held), target.call("status")["adverts_dropped"])
    assert {honest.peer_id, rogue.peer_id} <= set(target.peers())
    assert target.call("auction", {"privacy": "any", "award": False})["winner"] is not None


def test_a_gossip_flood_neither_fills_the_table_nor_crowds_out_honest_adverts(mesh):
    """The rogue publishes adverts of fresh identities as fast as it can for longer than an advert lives:
    the honest peer's own adverts still arrive throughout (it never leaves the table)."""
    target, honest, rogue = mesh
    result: dict[str, list[str]] = {}
    dropped = target.call("status")["adverts_dropped"]
    attack = {"name": "advert_flood", "target": target.peer_id, "via": "gossip", "seconds": 16}
    flooder = threading.Thread(target=lambda: result.update(rogue.call("attack", attack, timeout=120)))
    flooder.start()
    ages = []
    while flooder.is_alive():
        peers = target.peers()
        assert honest.peer_id in peers, "the honest peer's adverts were crowded out"
        ages.append(peers[honest.peer_id]["age_s"])
        held = len(set(peers) - {honest.peer_id, rogue.peer_id})
        assert held <= MAX_PER_SOURCE, held
        time.sleep(0.5)
    flooder.join()
    flooded = len(result["peers"])
    assert flooded > 100, flooded  # it did flood
    assert max(ages) < 12.0, ages  # never older than an advert lives: fresh ones kept arriving
    # One publisher gets a burst of 4 and one advert a second through to the table (the rest is
    # dropped by gossipsub's validator before it is queued or forwarded): at most ~20 in 16 s.
    seen = target.call("status")["adverts_dropped"] - dropped + len(set(result["peers"]) & set(target.peers()))
    print(f"gossip flood: {flooded} published, {seen} reached the peer table's checks; honest advert ages {max(ages)}")
    assert seen <= 4 + 20, seen
    assert target.call("auction", {"privacy": "any", "award": False})["winner"] is not None


async def test_a_strangers_silent_connections_do_not_stall_a_handoff(tmp_path, monkeypatch):
    """The rogue opens a dozen connections to the receiver's bulk side channel the moment it is open,
    before the sender even hears of it, and sends nothing: the handoff still goes over the side channel
    and the agent arrives once. (The receiver tells the rogue the port: the test stands in for an
    attacker that found it by scanning; the two honest nodes run in this process, over real libp2p.)"""
    from meshagent.net import handoff as net_handoff
    from meshagent.net.bulk import BulkListener
    from tests.node.test_handoff import two_nodes
    from tests.node.test_handoff_double import fingerprint, make_agent

    rogue = await trio.to_thread.run_sync(lambda: rogue_node(tmp_path / "rogue").start())
    opened: list[int] = []

    class Squatted(BulkListener):
        async def __aenter__(self) -> Squatted:
            await super().__aenter__()
            host, port = self.addrs[0].rsplit(":", 1)
            order = {"name": "bulk_silent", "host": host, "port": int(port), "count": 12}
            opened.append((await trio.to_thread.run_sync(lambda: rogue.call("attack", order)))["open"])
            return self

    monkeypatch.setattr(net_handoff, "BulkListener", Squatted)
    try:
        async with two_nodes(tmp_path) as (a, b):
            agent = make_agent(vfs_bytes=1 << 20)
            a.custody.put(agent)

            async def emit(event: object) -> None:
                pass

            with trio.fail_after(60):
                result = await a.manager.migrate({"agent": "agent-1", "to": b.peer_id}, emit)
            assert result["resumed"] and result["via"] == "bulk", result
            assert opened == [12]  # all twelve were open before the sender connected
            assert not a.custody.holds("agent-1") and b.custody.state("agent-1") == "running"
            assert fingerprint(b.custody.get("agent-1")) == fingerprint(agent)
    finally:
        await trio.to_thread.run_sync(lambda: (rogue.call("attack", {"name": "bulk_release"}), rogue.stop()))

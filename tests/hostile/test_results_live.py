"""A rogue node against the results relay: forged results and custody, a flood, reading another owner's result.

The owner's agent runs on an honest worker while the rogue (a real ``meshagent
join`` with attack orders, :mod:`tests.hostile.rogue.results`) forges its result,
claims to hold it, invents children for it, floods the owner with 1 MiB results
and asks for a private result. Each is refused; the real result arrives intact
and the owner's store holds nothing of the forgeries.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.protocol import results as rp
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT
from tests.hostile.rogue import rogue_node

PROGRAMS = ROOT / "tests" / "node" / "programs"


@pytest.fixture(scope="module")
def steps_wasm() -> Path:
    return build_cached(PROGRAMS / "steps.c", ROOT / ".cache" / "agents")


def stored(data_dir: Path, query: str) -> list[tuple]:
    """Read the node's store directly (sqlite WAL: a reader beside the running node)."""
    db = sqlite3.connect(f"file:{data_dir / 'node.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_the_rogue_cannot_forge_flood_or_read_results(tmp_path, steps_wasm):
    for name in ("owner", "worker"):
        write_device_config(tmp_path / name, "laptop", MODEL_CACHE)
    owner = NodeProcess(tmp_path / "owner", name="owner").start()
    worker = NodeProcess(tmp_path / "worker", "--bootstrap", owner.addrs[0], name="worker").start()
    rogue = rogue_node(tmp_path / "rogue", "--bootstrap", owner.addrs[0], name="rogue").start()
    nodes = [owner, worker, rogue]
    try:
        assert wait_for(lambda: len(owner.peers()) == 2, timeout=30)[0]
        attack = lambda name, **params: rogue.call("attack", {"name": name, "victim": owner.peer_id, **params},  # noqa: E731
                                                  timeout=120)
        # A private agent that ended at home, and an agent that runs on the worker.
        private = owner.call("run", {"module_path": str(steps_wasm), "args": ["steps", "1", "0", "secret"]},
                             timeout=180)["agents"][0]
        assert private["status"] == "exited"
        run = {"module_path": str(steps_wasm), "args": ["steps", "16", "300", "away"], "privacy": "any", "wait": False}
        aid = owner.call("run", run, timeout=120)["agent_id"]
        assert wait_for(lambda: any(a["agent_id"] == aid and a["host_calls"] >= 2 for a in owner.call("agents")["agents"]),
                        timeout=60)[0]
        assert owner.call("migrate", {"agent": aid, "to": worker.peer_id}, timeout=60)["to"] == worker.peer_id

        # While it runs on the worker: a forged result for it, and for an id the owner never had.
        forged = attack("forge_result", agent=aid)
        assert forged == {"agent": aid, "ok": False, "reset": False, "why": "not accepted from this peer"}
        unknown = attack("forge_result")
        assert unknown["ok"] is False and not unknown["reset"]
        # Claims to hold it (at the largest generation), or to have forked it.
        assert attack("claim_custody", agent=aid)["ok"] is False
        children = attack("claim_children", agent=aid)
        assert children["ok"] is False
        # A flood of 1 MiB results, for the agent and for fresh ids.
        flood = attack("flood_results", agent=aid, count=20)
        assert flood["accepted"] == 0 and flood["sent"] == 20
        flood = attack("flood_results", count=20)
        assert flood["accepted"] == 0
        # Reading another owner's private result.
        fetched = attack("fetch_result", agent=private["agent_id"])
        assert fetched["result"] is None and fetched["refused"]
        assert owner.call("results_owed")["refused"] >= 2 + 2 + 40 + 1

        # The owner keeps working: the real result arrives intact, from the worker.
        result = owner.call("result", {"agent_id": aid, "wait": True}, timeout=180)
        assert result == worker.call("result", {"agent_id": aid})
        assert "FORGED" not in result["stdout"] and result["stdout"].endswith("done after 16 steps\n")
        assert attack("fetch_result", agent=aid)["result"] is None
        # Nothing of the forgeries is stored at the owner.
        assert {r[0] for r in stored(owner.data_dir, "SELECT agent_id FROM results")} == {private["agent_id"], aid}
        assert {r[0] for r in stored(owner.data_dir, "SELECT agent_id FROM agent_meta")} == {private["agent_id"], aid}
        assert stored(owner.data_dir, "SELECT agent_id, holder FROM custody") == [(aid, worker.peer_id)]
        assert stored(owner.data_dir, "SELECT * FROM children") == []
        size = sum(len(r[0]) for r in stored(owner.data_dir, "SELECT result FROM results"))
        assert size < rp.MAX_OUTPUT // 8, size  # the two real results, no megabyte forgeries
        assert owner.proc.poll() is None and worker.proc.poll() is None
    finally:
        for n in nodes:
            n.stop()

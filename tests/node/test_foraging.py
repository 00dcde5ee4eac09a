"""Issue 6's end-to-end test: three real node processes on loopback.

An agent started on the phone runs its private steps on the owner's devices
only, its large-model step on the gpu box, and finishes with the same output
as a run on a single node holding every model.
"""

from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import AGENTS_DIR, build_cached
from tests.conftest import MODEL_CACHE, ROOT


@pytest.fixture(scope="module")
def summarise() -> Path:
    return build_cached(AGENTS_DIR / "summarise.c", ROOT / ".cache" / "agents")


def _run(node: NodeProcess, wasm: Path) -> dict:
    return node.call("run", {"module_path": str(wasm), "args": ["summarise"], "privacy": "any"}, timeout=180)


def test_agent_forages_and_matches_a_single_node_run(tmp_path, summarise):
    for profile in ("phone", "laptop", "gpu"):
        write_device_config(tmp_path / profile, profile, MODEL_CACHE)
    phone = NodeProcess(tmp_path / "phone", "--profile", "phone", name="phone").start()
    others = {p: NodeProcess(tmp_path / p, "--profile", p, "--bootstrap", phone.addrs[0], name=p).launch() for p in ("laptop", "gpu")}
    nodes = [phone, *others.values()]
    try:
        for n in others.values():
            n.wait_ready()
        assert wait_for(lambda: all(len(n.peers()) == 2 for n in nodes), timeout=20)[0]
        code = others["laptop"].call("pair_show")["code"]
        phone.call("pair_join", {"code": code, "peer": others["laptop"].peer_id})

        result = _run(phone, summarise)
        (root,) = result["agents"]
        assert root["status"] == "exited" and root["exit_code"] == 0, root
        lines = root["stdout"].splitlines()
        assert lines[0].startswith("key points (private") and lines[1].startswith("summary (large model)")

        gpu = others["gpu"]
        phone_auctions = phone.call("auctions")["auctions"]
        gpu_auctions = gpu.call("auctions")["auctions"]
        # Step 1 ran on the phone with no auction; step 2 needed a large model: auctioned, the gpu won.
        (heavy,) = [a for a in phone_auctions if a["agent_id"] == root["agent_id"]]
        assert heavy["requirement"] == "size>=large" and heavy["winner"] == gpu.peer_id
        # Step 3 is private: on the gpu (not an owner device) it was auctioned among owner devices only.
        (private,) = [a for a in gpu_auctions if a["agent_id"] == root["agent_id"]]
        assert private["privacy"] == "private" and private["winner"] == phone.peer_id
        assert {b["bidder"] for b in private["bids"]} <= {phone.peer_id, others["laptop"].peer_id}
        assert gpu.peer_id not in {b["bidder"] for b in private["bids"]}
        # The gpu reported how long the heavy step really took: the phone now holds a reliability factor for it.
        assert wait_for(lambda: gpu.peer_id in phone.call("auctions")["reputation"], timeout=10)[0]
        # The gpu handed the agent back and ran nothing private itself.
        assert [h["state"] for h in gpu.call("handoffs")["handoffs"] if h["role"] == "sender"] == ["done"]
    finally:
        for n in nodes:
            n.stop()

    # The same agent on one node that holds every model.
    write_device_config(tmp_path / "solo", "laptop", MODEL_CACHE, extra_models=("phone", "gpu"))
    solo = NodeProcess(tmp_path / "solo", name="solo").start()
    try:
        alone = _run(solo, summarise)["agents"][0]
        assert solo.call("auctions")["auctions"] == []  # it never needed to move
    finally:
        solo.stop()
    assert alone["stdout"] == root["stdout"]

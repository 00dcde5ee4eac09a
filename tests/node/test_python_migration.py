"""Issue 10's end-to-end test: a Python agent (a component) forages across real node processes.

Like the C summariser in test_foraging: started on the phone, its large-model step is
auctioned to the gpu box (the agent moves there, sealed, and resumes by replay — a fresh
CPython instance fed the journal), its private step comes back to the owner's devices,
and it ends with the same output as on one node holding every model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import AGENTS_DIR
from meshagent.sdk.build import build_python_cached
from tests.conftest import MODEL_CACHE, ROOT

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def summarise_py() -> Path:
    return build_python_cached(AGENTS_DIR / "summarise.py", ROOT / ".cache" / "agents")


def _run(node: NodeProcess, wasm: Path) -> dict:
    (root,) = node.call("run", {"module_path": str(wasm), "args": ["summarise"], "privacy": "any"}, timeout=600)["agents"]
    return root


def test_python_agent_migrates_between_nodes_and_matches_a_single_node_run(tmp_path: Path, summarise_py: Path) -> None:
    for profile in ("phone", "gpu"):
        write_device_config(tmp_path / profile, profile, MODEL_CACHE)
    phone = NodeProcess(tmp_path / "phone", "--profile", "phone", name="phone").start()
    gpu = NodeProcess(tmp_path / "gpu", "--profile", "gpu", "--bootstrap", phone.addrs[0], name="gpu").start()
    try:
        assert wait_for(lambda: len(phone.peers()) == 1 and len(gpu.peers()) == 1, timeout=20)[0]
        root = _run(phone, summarise_py)
        assert root["status"] == "exited" and root["exit_code"] == 0, root
        lines = root["stdout"].splitlines()
        assert lines[0].startswith("key points (private") and lines[1].startswith("summary (large model)")
        assert lines[2].startswith("title (private)")
        (heavy,) = [a for a in phone.call("auctions")["auctions"] if a["agent_id"] == root["agent_id"]]
        assert heavy["requirement"] == "size>=large" and heavy["winner"] == gpu.peer_id
        (private,) = [a for a in gpu.call("auctions")["auctions"] if a["agent_id"] == root["agent_id"]]
        assert private["privacy"] == "private" and private["winner"] == phone.peer_id
        assert [h["state"] for h in phone.call("handoffs")["handoffs"] if h["role"] == "sender"] == ["done"]
        assert [h["state"] for h in gpu.call("handoffs")["handoffs"] if h["role"] == "sender"] == ["done"]
    finally:
        phone.stop()
        gpu.stop()

    write_device_config(tmp_path / "solo", "laptop", MODEL_CACHE, extra_models=("phone", "gpu"))
    solo = NodeProcess(tmp_path / "solo", name="solo").start()
    try:
        alone = _run(solo, summarise_py)
        assert solo.call("auctions")["auctions"] == []
    finally:
        solo.stop()
    assert alone["stdout"] == root["stdout"]

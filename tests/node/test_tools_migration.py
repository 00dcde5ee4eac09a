"""Issue 11's end-to-end test: an agent with a WASI tool migrates, mid-run, to a peer that
never saw the tool, runs the tool there from the module its snapshot carried, and ends
with the same output as on a single node."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import build_cached
from meshagent.runtime.tools.sections import with_custom_section
from meshagent.runtime.tools.spec import MANIFEST_SECTION, ToolManifest, ToolSpec
from meshagent.runtime.tools.store import shipped_tool
from tests.conftest import MODEL_CACHE, ROOT

CACHE = ROOT / ".cache" / "agents"
PROGRAMS = ROOT / "tests" / "runtime" / "programs"
ARGS = [
    "tooluser",
    'lines={"args":["-m","-e","TODO","src"]}',
    'fs.write={"path":"notes/plan.txt","text":"check src\\n"}',
    "opt:model=size>=large;max_tokens=8",
    "llm:Summarise the plan in a few words.",
    'lines={"args":["-m","-e","check|TODO","notes","src"]}',
    "cat:notes/plan.txt",
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """tooluser with a manifest declaring the shipped ``lines`` tool; the tool's sha256."""
    lines = shipped_tool("lines", CACHE)
    sha = hashlib.sha256(lines).hexdigest()
    manifest = ToolManifest((ToolSpec("lines", sha, 16 << 20, 200_000_000),))
    base = build_cached(PROGRAMS / "tooluser.c", CACHE).read_bytes()
    path = tmp_path_factory.mktemp("agent") / "tooluser.wasm"
    path.write_bytes(with_custom_section(base, MANIFEST_SECTION, manifest.encode()))
    tool_file = path.with_name("lines.wasm")
    tool_file.write_bytes(lines)
    return path, sha


def _run(node: NodeProcess, wasm: Path, tool: Path, project: Path) -> dict:
    params = {"module_path": str(wasm), "args": ARGS, "privacy": "any", "dir": str(project), "tools": [str(tool)]}
    (root,) = node.call("run", params, timeout=240)["agents"]
    return root


def test_agent_with_a_wasi_tool_migrates_to_a_peer_that_never_saw_it(tmp_path: Path, agent: tuple[Path, str]) -> None:
    wasm, sha = agent
    tool = wasm.with_name("lines.wasm")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.c").write_text("int main(void) {\n  return 0; /* TODO: exit code */\n}\n")
    for profile in ("phone", "gpu"):
        write_device_config(tmp_path / profile, profile, MODEL_CACHE)
    phone = NodeProcess(tmp_path / "phone", "--profile", "phone", name="phone").start()
    gpu = NodeProcess(tmp_path / "gpu", "--profile", "gpu", "--bootstrap", phone.addrs[0], name="gpu").start()
    gpu_tools = tmp_path / "gpu" / "tools"
    try:
        assert wait_for(lambda: len(phone.peers()) == 1 and len(gpu.peers()) == 1, timeout=20)[0]
        assert not (gpu_tools / f"{sha}.wasm").exists()
        root = _run(phone, wasm, tool, project)
        assert root["status"] == "exited" and root["exit_code"] == 0, root
        # The large-model step was auctioned and won by the gpu, where the agent finished.
        (auction,) = [a for a in phone.call("auctions")["auctions"] if a["agent_id"] == root["agent_id"]]
        assert auction["winner"] == gpu.peer_id
        assert [h["state"] for h in phone.call("handoffs")["handoffs"] if h["role"] == "sender"] == ["done"]
        # The gpu never had the tool: it arrived in the sealed snapshot and was kept in its tool store.
        assert (gpu_tools / f"{sha}.wasm").read_bytes() == tool.read_bytes()
    finally:
        phone.stop()
        gpu.stop()

    out = root["stdout"].splitlines()
    first, second = (json.loads(line.split(" -> ", 1)[1]) for line in out if line.startswith("lines -> "))
    assert first["ok"] and "src/main.c:2:" in first["stdout"]
    # The second call ran on the gpu, over the file the agent wrote before it moved.
    assert "notes/plan.txt:1:check src" in second["stdout"] and "src/main.c:2:" in second["stdout"]
    assert root["stdout"].endswith("cat notes/plan.txt: check src\n\n")

    write_device_config(tmp_path / "solo", "laptop", MODEL_CACHE, extra_models=("phone", "gpu"))
    solo = NodeProcess(tmp_path / "solo", name="solo").start()
    try:
        alone = _run(solo, wasm, tool, project)
        assert solo.call("auctions")["auctions"] == []
    finally:
        solo.stop()
    assert alone["stdout"] == root["stdout"]


def test_an_agent_with_a_private_tool_is_placed_as_private(tmp_path: Path) -> None:
    """A tool declared private handles private data: the agent's steps stay on the owner's devices."""
    lines = shipped_tool("lines", CACHE)
    manifest = ToolManifest((ToolSpec("lines", hashlib.sha256(lines).hexdigest(), 16 << 20, 200_000_000, private=True),))
    wasm = tmp_path / "private_tool.wasm"
    wasm.write_bytes(with_custom_section(build_cached(PROGRAMS / "tooluser.c", CACHE).read_bytes(), MANIFEST_SECTION,
                                         manifest.encode()))
    for profile in ("phone", "gpu"):
        write_device_config(tmp_path / profile, profile, MODEL_CACHE)
    phone = NodeProcess(tmp_path / "phone", "--profile", "phone", name="phone").start()
    gpu = NodeProcess(tmp_path / "gpu", "--profile", "gpu", "--bootstrap", phone.addrs[0], name="gpu").start()
    try:
        assert wait_for(lambda: len(phone.peers()) == 1 and len(gpu.peers()) == 1, timeout=20)[0]
        args = ["tooluser", "opt:model=size>=large;max_tokens=8", "llm:Summarise."]
        (root,) = phone.call("run", {"module_path": str(wasm), "args": args, "privacy": "any"}, timeout=120)["agents"]
        # Only the gpu holds a large model, but it is not the owner's device: nobody may take the step.
        assert root["status"] == "failed" and "no peer can run this step" in root["error"], root
        (auction,) = [a for a in phone.call("auctions")["auctions"] if a["agent_id"] == root["agent_id"]]
        assert auction["privacy"] == "private" and auction["winner"] is None
        assert gpu.peer_id not in {b["bidder"] for b in auction["bids"]}
        assert [h for h in phone.call("handoffs")["handoffs"] if h["role"] == "sender"] == []
    finally:
        phone.stop()
        gpu.stop()

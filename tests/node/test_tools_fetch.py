"""Issue 11: a node that lacks an agent's tool fetches it by hash from a peer that has it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import build_cached
from meshagent.runtime.tools.sections import with_custom_section
from meshagent.runtime.tools.spec import MANIFEST_SECTION, ToolManifest, ToolSpec
from meshagent.runtime.tools.store import TOOL_FLAGS
from tests.conftest import MODEL_CACHE, ROOT

CACHE = ROOT / ".cache" / "agents"
PROGRAMS = ROOT / "tests" / "runtime" / "programs"


def test_a_node_fetches_a_missing_tool_by_hash_from_a_peer(tmp_path: Path) -> None:
    tool = build_cached(PROGRAMS / "tool_write.c", CACHE, flags=TOOL_FLAGS).read_bytes()  # not a shipped tool
    sha = hashlib.sha256(tool).hexdigest()
    manifest = ToolManifest((ToolSpec("tool_write", sha, 4 << 20, 10**8),))
    agent = tmp_path / "agent.wasm"
    agent.write_bytes(with_custom_section(build_cached(PROGRAMS / "tooluser.c", CACHE).read_bytes(), MANIFEST_SECTION,
                                          manifest.encode()))
    for profile in ("laptop", "phone"):
        write_device_config(tmp_path / profile, profile, MODEL_CACHE)
    (tmp_path / "laptop" / "tools").mkdir()
    (tmp_path / "laptop" / "tools" / f"{sha}.wasm").write_bytes(tool)  # only the laptop holds the tool
    laptop = NodeProcess(tmp_path / "laptop", "--profile", "laptop", name="laptop").start()
    phone = NodeProcess(tmp_path / "phone", "--profile", "phone", "--bootstrap", laptop.addrs[0], name="phone").start()
    try:
        assert wait_for(lambda: len(phone.peers()) == 1, timeout=20)[0]
        assert not (tmp_path / "phone" / "tools" / f"{sha}.wasm").exists()
        args = ["tooluser", 'tool_write={"args":["out.txt","fetched"]}', "cat:out.txt"]
        (root,) = phone.call("run", {"module_path": str(agent), "args": args}, timeout=120)["agents"]
        assert root["status"] == "exited" and root["exit_code"] == 0, root
        answer = json.loads(root["stdout"].splitlines()[0].split(" -> ", 1)[1])
        assert answer["ok"] and answer["stdout"] == "wrote 1 line(s) to out.txt\n"
        assert "cat out.txt: fetched\n" in root["stdout"]
        assert (tmp_path / "phone" / "tools" / f"{sha}.wasm").read_bytes() == tool
    finally:
        phone.stop()
        laptop.stop()

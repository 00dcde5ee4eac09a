"""Hostile agents inside a live node while other agents keep running and finish correctly (issue 8).

One ``meshagent join`` process (an emulated laptop with a generated model,
tighter sandbox limits so the abuse ends quickly) runs the runtime's hostile
program in each of its behaviours — CPU loop, memory bomb, deep recursion,
stdout flood, trap, out-of-bounds pointers into host calls — at the same
time as a well-behaved agent making LLM steps. Each hostile agent ends
``failed`` with its specific error; the good agent's output equals a run on
a quiet node; the node keeps running.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT

PROGRAMS = ROOT / "tests" / "runtime" / "programs"
STEPS = ROOT / "tests" / "node" / "programs" / "steps.c"
BEHAVIOURS = {
    "loop": "CpuLimitExceeded",
    "grow": "MemoryLimitExceeded",
    "recurse": "StackLimitExceeded",
    "flood": "OutputLimitExceeded",
    "trap": "AgentTrap",
    "llm_prompt": "GuestMemoryError",
    "fd_write": "GuestMemoryError",
    "rollback_unknown": "CheckpointNotFound",
}


@pytest.fixture(scope="module")
def programs() -> tuple[Path, Path]:
    cache = ROOT / ".cache" / "agents"
    return build_cached(PROGRAMS / "hostile.c", cache), build_cached(STEPS, cache)


def test_hostile_agents_fail_alone_while_a_good_agent_finishes(tmp_path, programs):
    hostile, steps = programs
    config = write_device_config(tmp_path / "node", "laptop", MODEL_CACHE)
    config.write_text(config.read_text() + "\n[sandbox]\nfuel = 300000000\nmemory_bytes = 33554432\n"
                      "stack_bytes = 262144\noutput_bytes = 65536\nmax_instances = 16\n")
    write_device_config(tmp_path / "quiet", "laptop", MODEL_CACHE)
    quiet = NodeProcess(tmp_path / "quiet", name="quiet").start()  # the undisturbed run, on a node of its own
    good = {"module_path": str(steps), "args": ["steps", "5", "100", "good"], "privacy": "any"}
    try:
        want = quiet.call("run", good, timeout=120)["agents"][0]["stdout"]
    finally:
        quiet.stop()
    node = NodeProcess(tmp_path / "node", name="node").start()
    try:
        good_id = node.call("run", {**good, "wait": False})["agent_id"]
        bad = {b: node.call("run", {"module_path": str(hostile), "args": ["hostile", b], "wait": False})["agent_id"]
               for b in BEHAVIOURS}
        for behaviour, agent_id in bad.items():
            result = node.call("result", {"agent_id": agent_id, "wait": True}, timeout=180)
            assert result["status"] == "failed", (behaviour, result)
            assert BEHAVIOURS[behaviour] in (result["error"] or ""), (behaviour, result["error"])
        result = node.call("result", {"agent_id": good_id, "wait": True}, timeout=180)
        assert result["status"] == "exited" and result["stdout"] == want
        assert node.call("status")["peer_id"] == node.peer_id and node.proc.poll() is None
    finally:
        node.stop()

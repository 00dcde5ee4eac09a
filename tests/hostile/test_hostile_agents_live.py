"""Hostile agents inside a live node while other agents keep running and finish correctly (issue 8).

One ``meshagent join`` process (an emulated laptop with a generated model,
tighter sandbox limits so the abuse ends quickly) runs the runtime's hostile
program in each of its behaviours — CPU loop, memory bomb, deep recursion,
stdout flood, trap, out-of-bounds pointers into host calls — at the same
time as a well-behaved agent making LLM steps. Each hostile agent ends
``failed`` with its specific error; the good agent's output equals a run on
a quiet node; the node keeps running. Agents that sleep for ever do not keep another
agent run from an execution slot.
"""

from __future__ import annotations

import time
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


def _until(condition, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for a state of the node (polling its control API); the timeout only turns a hang into a failure."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"the node never reached: {what}")
        time.sleep(0.1)


def test_sleeping_agents_do_not_keep_an_agent_run_from_a_slot(tmp_path, programs):
    """Four hostile agents that sleep for ever on a node with four execution slots: they give their
    slots back while they sleep, so an agent run started after them gets one and ends while they
    still sleep (before, it waited for them: a chat took 57 s instead of 1 s)."""
    hostile, steps = programs
    config = write_device_config(tmp_path / "node", "laptop", MODEL_CACHE)
    config.write_text(config.read_text() + "\n[sandbox]\nmax_instances = 4\n")
    node = NodeProcess(tmp_path / "node", name="node").start()
    try:
        sleepers = [node.call("run", {"module_path": str(hostile), "args": ["hostile", "sleep"], "wait": False})["agent_id"]
                    for _ in range(4)]
        _until(lambda: node.call("slots")["sleeping"] == 4, "four agents asleep")
        assert node.call("slots")["busy"] == 0
        run = node.call("run", {"module_path": str(steps), "args": ["steps", "2", "20", "chat"], "privacy": "any"},
                        timeout=300)
        assert run["agents"][0]["status"] == "exited", run
        listed = {a["agent_id"]: a for a in node.call("agents")["agents"]}
        assert all(listed[s]["status"] == "running" and listed[s]["slot"] == "sleeping" for s in sleepers), listed
        for sleeper in sleepers:  # a sleep is cut short by a kill
            assert node.call("kill", {"agent_id": sleeper})["status"] == "killed"
        assert node.call("slots")["sleeping"] == 0 and node.proc.poll() is None
    finally:
        node.stop()


def test_a_strangers_agents_run_within_its_slot_quota_on_the_node_that_adopted_them(tmp_path, programs):
    """A stranger (an unpaired node) sends three agents that spin for ever (with a host call now and
    then, where a kill stops them) to the node that wins their large-model step. There they run under the stranger's quota — one slot at a time, the
    others waiting — and the node's own agent run gets the slot kept for its owner and ends."""
    hostile, steps = programs
    for profile in ("phone", "gpu"):
        write_device_config(tmp_path / profile, profile, MODEL_CACHE)
    with (tmp_path / "gpu" / "config.toml").open("a") as config:
        config.write("\n[sandbox]\nmax_instances = 3\nreserved_slots = 1\nowner_slots = 1\nfuel = 100000000000000\n")
    stranger = NodeProcess(tmp_path / "phone", "--profile", "phone", name="stranger").start()
    node = NodeProcess(tmp_path / "gpu", "--profile", "gpu", "--bootstrap", stranger.addrs[0], name="gpu").start()
    try:
        _until(lambda: node.peer_id in stranger.peers() and stranger.peer_id in node.peers(), "the nodes see each other")
        sent = [stranger.call("run", {"module_path": str(hostile), "args": ["hostile", "large_then_spin"], "privacy": "any",
                                      "wait": False})["agent_id"] for _ in range(3)]

        def adopted() -> dict[str, dict]:
            return {a["agent_id"]: a for a in node.call("agents")["agents"] if a["agent_id"] in sent}

        _until(lambda: len(adopted()) == 3 and node.call("slots")["waiting"] == 2, "three adopted agents, two waiting", 300)
        slots = node.call("slots")
        assert slots["owners"] == {stranger.peer_id: 1} and slots["foreign_busy"] == 1 == slots["busy"], slots
        assert all(a["owner"] == stranger.peer_id for a in adopted().values())
        run = node.call("run", {"module_path": str(steps), "args": ["steps", "2", "20", "own"], "privacy": "private"},
                        timeout=300)
        assert run["agents"][0]["status"] == "exited", run
        assert sorted(a["slot"] for a in adopted().values()) == ["running", "waiting", "waiting"]  # still held back
        for agent_id in sent:
            assert node.call("kill", {"agent_id": agent_id})["status"] == "killed"
        assert node.proc.poll() is None and stranger.proc.poll() is None
    finally:
        node.stop()
        stranger.stop()

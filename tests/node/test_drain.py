"""``meshagent leave`` drains: running agents are handed to a peer before the node stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT

PROGRAMS = Path(__file__).resolve().parent / "programs"


@pytest.fixture(scope="module")
def steps_wasm() -> Path:
    return build_cached(PROGRAMS / "steps.c", ROOT / ".cache" / "agents")


def test_leave_hands_running_agents_to_a_peer(tmp_path, steps_wasm):
    for name in ("a", "b"):
        write_device_config(tmp_path / name, "laptop", MODEL_CACHE)
    a = NodeProcess(tmp_path / "a", name="a").start()
    b = NodeProcess(tmp_path / "b", "--bootstrap", a.addrs[0], name="b").start()
    try:
        assert wait_for(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, timeout=20)[0]
        run = {"module_path": str(steps_wasm), "args": ["steps", "8", "300"], "privacy": "any"}
        want = b.call("run", run, timeout=120)["agents"][0]["stdout"]
        aid = a.call("run", {**run, "wait": False})["agent_id"]
        assert wait_for(lambda: a.call("agents")["agents"][0]["host_calls"] > 3, timeout=20)[0]
        out = subprocess.run([sys.executable, "-m", "meshagent", "leave", "--json", "--data-dir", str(a.data_dir)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["drained"] == {aid: b.peer_id} and report["stayed"] == []
        assert a.proc.wait(timeout=30) == 0
        # The agent finished on b, exactly once, with the output of an undisturbed run.
        done, _ = wait_for(lambda: next((x for x in b.call("agents")["agents"] if x["agent_id"] == aid
                                         and x["status"] == "exited"), None), timeout=60)
        assert done, b.call("agents")
        assert b.call("result", {"agent_id": aid})["stdout"] == want
    finally:
        a.stop()
        b.stop()

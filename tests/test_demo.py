"""`meshagent demo --json`: the main job, end to end (three real node processes)."""

import json
import os
import subprocess
import sys


def test_demo_summarise_moves_to_the_gpu_and_back(tmp_path):
    env = dict(os.environ, MESHAGENT_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-m", "meshagent", "demo", "--json", "--agents", "summarise,code_review,summarise.py"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    events = json.loads(out.stdout)
    for ev in events:
        assert {"agent_id", "step", "model", "privacy", "bids", "placed_on", "handoff_bytes", "sealed", "elapsed_s"} <= set(ev)
    summarise = [e for e in events if e["agent"] == "summarise"]
    assert [e["placed_on"]["profile"] for e in summarise] == ["phone", "gpu", "phone"]
    heavy = summarise[1]
    assert heavy["model"] == "large-chat" and heavy["sealed"] and heavy["handoff_bytes"] > 0
    assert [b["peer"] for b in heavy["bids"]] == ["gpu"]
    back = summarise[2]
    assert back["privacy"] == "private" and back["auctioned_by"] == "gpu" and back["sealed"]
    # Private steps never leave the owner's devices (the phone and the laptop it is paired with).
    private = [e for e in events if e["privacy"] == "private"]
    assert private and all(e["placed_on"]["profile"] in ("phone", "laptop") for e in private)
    assert any(e["agent"] == "code_review" for e in events)
    # The Python version is placed the same way; its first move also carries the component.
    python = [e for e in events if e["agent"] == "summarise.py"]
    assert [e["placed_on"]["profile"] for e in python] == ["phone", "gpu", "phone"]
    assert python[1]["sealed"] and python[1]["handoff_bytes"] > 1_000_000 > heavy["handoff_bytes"]

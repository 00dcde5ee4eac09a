"""Results reach their owner across drains, hops and restarts: real node processes on loopback."""

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


def port_of(node: NodeProcess) -> str:
    return node.addrs[0].split("/tcp/")[1].split("/")[0]


def restart(node: NodeProcess, *args: str) -> NodeProcess:
    """The same data dir, listening again on the port it had (and on a fresh one)."""
    return NodeProcess(node.data_dir, "--listen", f"/ip4/127.0.0.1/tcp/{port_of(node)}", *args, name=node.name).start()


def meshagent(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshagent", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def running(node: NodeProcess, agent_id: str, calls: int) -> bool:
    """The agent runs on ``node`` and made at least ``calls`` host calls."""
    return any(a["agent_id"] == agent_id and a["status"] == "running" and a["host_calls"] >= calls
               for a in node.call("agents")["agents"])


def test_a_drained_agent_reports_to_its_owner_after_both_restart(tmp_path, steps_wasm):
    """``meshagent leave`` drains a running agent to b; the waiting ``run`` says where it went and how to
    wait; b is killed mid-agent and restarts; the agent ends on b while the owner is down; the owner
    restarts on its port and gets the result — and its ``agents`` says so."""
    for name in ("o", "b"):
        write_device_config(tmp_path / name, "laptop", MODEL_CACHE)
    o = NodeProcess(tmp_path / "o", name="o").start()
    b = NodeProcess(tmp_path / "b", "--bootstrap", o.addrs[0], name="b").start()
    nodes = [o, b]
    try:
        assert wait_for(lambda: len(o.peers()) == 1 and len(b.peers()) == 1, timeout=20)[0]
        waiter = subprocess.Popen([sys.executable, "-m", "meshagent", "run", "--privacy", "any", "--data-dir",
                                   str(o.data_dir), str(steps_wasm), "--", "10", "300", "drained"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        agents, _ = wait_for(lambda: o.call("agents")["agents"], timeout=120)
        aid = agents[0]["agent_id"]
        assert wait_for(lambda: running(o, aid, 3), timeout=60)[0]
        left = meshagent("leave", "--json", "--data-dir", str(o.data_dir), timeout=90)
        assert left.returncode == 0, left.stderr
        assert json.loads(left.stdout.strip().splitlines()[-1])["drained"] == {aid: b.peer_id}
        assert o.proc.wait(timeout=30) == 0
        # The waiting run says where the agent went and how to wait for it: one line, non-zero exit.
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode != 0
        assert err.strip().splitlines()[-1] == (
            f"meshagent: agent {aid} moved to {b.peer_id} and this node stopped before it ended; its result comes "
            f"back to this node: start the node again and wait with: meshagent result {aid} --wait "
            f"--data-dir {o.data_dir}")
        assert "closed the connection" not in err
        # b dies mid-agent, restarts, resumes it and finishes it while the owner is down.
        assert wait_for(lambda: running(b, aid, 6), timeout=60)[0]
        b.kill()
        b = restart(b)
        nodes.append(b)
        done, _ = wait_for(lambda: next((a for a in b.call("agents")["agents"]
                                         if a["agent_id"] == aid and a["status"] == "exited"), None), timeout=300)
        assert done, b.call("agents")
        assert b.call("results_owed")["owed"] == [{"owner": o.peer_id, "kind": "result", "agent_id": aid}]
        held = b.call("result", {"agent_id": aid})
        # The owner comes back on its port; the result reaches it.
        o = restart(o, "--bootstrap", b.addrs[0])
        nodes.append(o)
        try:
            got = meshagent("result", aid, "--wait", "--json", "--data-dir", str(o.data_dir), timeout=150)
        except subprocess.TimeoutExpired:
            pytest.fail(f"result --wait did not return; owner has {o.call('agents')}, b owes {b.call('results_owed')}")
        assert got.returncode == 0, got.stderr
        result = json.loads(got.stdout)
        assert result["stdout"] == held["stdout"] and result["status"] == "exited" and result["exit_code"] == 0
        assert result["stdout"].endswith("done after 10 steps\n") and result["stdout"].count("\nstep ") == 9
        (listed,) = [a for a in o.call("agents")["agents"] if a["agent_id"] == aid]
        assert (listed["status"], listed["ended"], listed["held_by"]) == ("moved", "exited", b.peer_id), listed
        assert o.call("logs", {"agent_id": aid})["stdout"] == held["stdout"]
        assert wait_for(lambda: b.call("results_owed")["owed"] == [], timeout=20)[0]
    finally:
        for n in nodes:
            n.stop()


def test_a_result_reaches_the_owner_across_two_hops_while_it_was_away(tmp_path, steps_wasm):
    """Owner → a → b, finishing on b: a's custody notice and b's result are both owed to the owner,
    which was down meanwhile; after its restart it has the result, and knows b held the agent."""
    for name in ("o", "a", "b"):
        write_device_config(tmp_path / name, "laptop", MODEL_CACHE)
    o = NodeProcess(tmp_path / "o", name="o").start()
    a = NodeProcess(tmp_path / "a", "--bootstrap", o.addrs[0], name="a").start()
    b = NodeProcess(tmp_path / "b", "--bootstrap", o.addrs[0], name="b").start()
    nodes = [o, a, b]
    try:
        assert wait_for(lambda: all(len(n.peers()) == 2 for n in nodes), timeout=30)[0]
        run = {"module_path": str(steps_wasm), "args": ["steps", "14", "300", "hops"], "privacy": "any", "wait": False}
        aid = o.call("run", run, timeout=120)["agent_id"]
        assert wait_for(lambda: running(o, aid, 2), timeout=60)[0]
        assert o.call("migrate", {"agent": aid, "to": a.peer_id}, timeout=60)["to"] == a.peer_id
        (listed,) = [x for x in o.call("agents")["agents"] if x["agent_id"] == aid]
        assert listed["held_by"] == a.peer_id and "ended" not in listed
        o.stop()
        assert wait_for(lambda: running(a, aid, 5), timeout=60)[0]
        assert a.call("migrate", {"agent": aid, "to": b.peer_id}, timeout=60)["to"] == b.peer_id
        assert a.call("results_owed")["owed"] == [{"owner": o.peer_id, "kind": "custody", "agent_id": aid}]
        done, _ = wait_for(lambda: next((x for x in b.call("agents")["agents"]
                                         if x["agent_id"] == aid and x["status"] == "exited"), None), timeout=300)
        assert done, b.call("agents")
        held = b.call("result", {"agent_id": aid})
        o = restart(o, "--bootstrap", a.addrs[0], "--bootstrap", b.addrs[0])
        nodes.append(o)
        result = o.call("result", {"agent_id": aid, "wait": True}, timeout=300)
        assert result["stdout"] == held["stdout"] and result["stdout"].endswith("done after 14 steps\n")
        (listed,) = [x for x in o.call("agents")["agents"] if x["agent_id"] == aid]
        assert (listed["status"], listed["ended"], listed["held_by"]) == ("moved", "exited", b.peer_id), listed
        assert wait_for(lambda: a.call("results_owed")["owed"] == [] and b.call("results_owed")["owed"] == [],
                        timeout=30)[0]
    finally:
        for n in nodes:
            n.stop()

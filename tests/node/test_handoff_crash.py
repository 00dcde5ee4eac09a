"""Issue 5's acceptance: SIGKILL the receiver or the sender of a real agent's handoff, restart it.

Two real ``meshagent join`` nodes (emulated laptops with the same generated
model) on loopback. In each trial a real agent (``tests/node/programs/steps.c``:
several LLM steps, one line of output each) starts on node A and is migrated
to node B with the ``migrate`` control op while it runs; the victim (B, the
receiver, or A, the sender) is SIGKILLed

* at a persisted step of the handoff chosen in turn (even trials): the node
  is started with the test hook ``MESHAGENT_CRASH_AT=<point>`` and kills
  itself there, so every step of the recovery rules is exercised;
* or from outside after a random delay (odd trials), which lands anywhere:
  before the freeze, mid-transfer, after commit, or while the agent runs.

The victim is then restarted on the same data dir and port. In every trial
the agent must finish exactly once — on exactly one node, never reported
running on both nodes at once (sampled every 50 ms) — with the output of an
undisturbed run.

``TRIALS`` trials per victim run in the default suite; the acceptance run of
20 trials each is marked ``slow`` (about 3 minutes per victim on 2 cores):
``pytest -m slow tests/node/test_handoff_crash.py``.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from meshagent.errors import MeshError
from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT

PROGRAMS = Path(__file__).resolve().parent / "programs"
TRIALS = int(os.environ.get("MA_HANDOFF_CRASH_TRIALS", "4"))
SENDER_POINTS = ("sender:frozen", "sender:offered", "sender:sending", "sender:committed")
RECEIVER_POINTS = ("receiver:receiving", "receiver:stored", "receiver:committed", "receiver:adopted")
AGENT_ARGS = ["steps", "6", "250"]
"""With a unique tag per trial appended: no trial reuses another's prompt prefix (see steps.c)."""
GONE = ("moved",)
"""Statuses of an agent a node no longer holds."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FixedNode(NodeProcess):
    """A ``meshagent join`` process that keeps its port across restarts (peers keep dialling it)."""

    def __init__(self, data_dir: Path, *args: str, name: str = "") -> None:
        super().__init__(data_dir, *args, name=name)
        self.port = free_port()

    def launch(self) -> NodeProcess:
        cmd = [sys.executable, "-m", "meshagent", "join", "--json", "--data-dir", str(self.data_dir),
               "--listen", f"/ip4/127.0.0.1/tcp/{self.port}", "--no-mdns", "--name", self.name, *self.args]
        env = dict(os.environ, **(self.env or {}))
        self._log = open(self.log, "ab")
        self.peer_id = ""
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=ROOT)
        return self

    def restart(self, crash_at: str = "") -> None:
        self.kill()
        self.env = {"MESHAGENT_CRASH_AT": crash_at} if crash_at else {}
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def try_call(self, op: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
        try:
            return self.call(op, params, timeout=timeout)
        except (MeshError, OSError):
            return None


class Overlap:
    """Samples both nodes' agent lists during a trial; records any moment the agent ran on both."""

    def __init__(self, nodes: list[FixedNode], agent_id: str) -> None:
        self.nodes, self.agent_id = nodes, agent_id
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            running = []
            for n in self.nodes:
                listed = n.try_call("agents", timeout=2.0)
                for a in (listed or {}).get("agents", []):
                    if a["agent_id"] == self.agent_id and a["status"] == "running":
                        running.append(n.name)
            if len(running) > 1:
                self.seen.append(",".join(running))
            self._stop.wait(0.05)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def holders(nodes: list[FixedNode], agent_id: str) -> dict[str, str] | None:
    """Where the agent is (node name → status), once no handoff is pending on either node."""
    found: dict[str, str] = {}
    for n in nodes:
        pending = n.try_call("handoffs")
        listed = n.try_call("agents")
        if pending is None or listed is None or pending["pending"]:
            return None
        for a in listed["agents"]:
            if a["agent_id"] == agent_id and a["status"] not in GONE:
                found[n.name] = a["status"]
    return found


@pytest.fixture(scope="module")
def steps_wasm() -> Path:
    return build_cached(PROGRAMS / "steps.c", ROOT / ".cache" / "agents")


@pytest.fixture
def pair(tmp_path: Path):
    """Nodes a and b, and an isolated reference node that computes each trial's undisturbed output."""
    for name in ("a", "b", "ref"):
        write_device_config(tmp_path / name, "laptop", MODEL_CACHE)
    a = FixedNode(tmp_path / "a", name="a")
    b = FixedNode(tmp_path / "b", name="b")
    ref = FixedNode(tmp_path / "ref", name="ref")
    try:
        a.start()
        b.args = ("--bootstrap", f"/ip4/127.0.0.1/tcp/{a.port}/p2p/{a.peer_id}")
        b.start()
        a.args = ("--bootstrap", f"/ip4/127.0.0.1/tcp/{b.port}/p2p/{b.peer_id}")  # for its restarts
        ref.start()
        yield a, b, ref
    finally:
        a.stop()
        b.stop()
        ref.stop()


def connected(a: FixedNode, b: FixedNode) -> bool:
    pa, pb = a.try_call("peers"), b.try_call("peers")
    return bool(pa and pb and any(p["peer_id"] == b.peer_id for p in pa["peers"])
                and any(p["peer_id"] == a.peer_id for p in pb["peers"]))


def run_trials(pair: tuple[FixedNode, FixedNode, FixedNode], wasm: Path, victim_role: str, trials: int) -> list[str]:
    a, b, ref = pair
    nodes = [a, b]
    rng = random.Random(f"handoff-crash-{victim_role}-{trials}")
    assert wait_for(lambda: connected(a, b), timeout=30)[0]
    victim = b if victim_role == "receiver" else a
    points = RECEIVER_POINTS if victim is b else SENDER_POINTS
    outcomes: list[str] = []
    for trial in range(trials):
        external = trial % 2 == 1
        point = "" if external else points[(trial // 2) % len(points)]
        label = f"trial {trial} ({point or 'external'})"
        if point:
            victim.restart(crash_at=point)
        assert wait_for(lambda: connected(a, b), timeout=30)[0], f"{label}: the nodes did not reconnect"
        run = {"module_path": str(wasm), "args": [*AGENT_ARGS, f"{victim_role}-{trial}"], "privacy": "any"}
        ref_id = ref.call("run", {**run, "wait": False})["agent_id"]  # the undisturbed run, alongside
        aid = a.call("run", {**run, "wait": False})["agent_id"]
        overlap = Overlap(nodes, aid)
        time.sleep(rng.uniform(0.1, 0.9))
        moved: dict[str, Any] = {}

        def migrate(aid: str = aid, moved: dict[str, Any] = moved) -> None:
            try:
                moved["ok"] = a.call("migrate", {"agent": aid, "to": b.peer_id}, timeout=60)
            except (MeshError, OSError) as exc:
                moved["error"] = repr(exc)

        t = threading.Thread(target=migrate)
        t.start()
        if external:
            time.sleep(rng.uniform(0.0, 0.4))
            victim.kill()
        t.join(70)
        if victim.proc is not None:
            try:  # a node that killed itself at a crash point may still be exiting
                victim.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
        died = not victim.alive()
        victim.restart()
        result = a.call("result", {"agent_id": aid, "wait": True}, timeout=120)
        want = ref.call("result", {"agent_id": ref_id, "wait": True}, timeout=120)
        assert want["status"] == "exited" and want["stdout"].count("\n") == 7, want
        final, took = wait_for(lambda aid=aid: holders(nodes, aid), timeout=60.0, interval=0.2)
        twice = overlap.stop()
        assert result["status"] == "exited" and result["stdout"] == want["stdout"], f"{label}: {result} (migrate: {moved})"
        assert final is not None, f"{label}: handoffs did not settle in {took:.0f}s (migrate: {moved})"
        assert list(final.values()) == ["exited"], f"{label}: agent on {final} (migrate: {moved})"
        assert not twice, f"{label}: ran on both nodes at once: {twice}"
        outcomes.append(f"{point or 'external'}:{'died' if died else 'survived'}:{next(iter(final))}")
    return outcomes


def _check(outcomes: list[str], trials: int) -> None:
    print(outcomes)
    assert len(outcomes) == trials
    assert all(":died:" in o for o in outcomes if not o.startswith("external")), outcomes  # every crash point fired
    if trials >= 8:  # both endings happened: the agent stayed on A (aborted) and moved to B (committed)
        assert any(o.endswith(":a") for o in outcomes) and any(o.endswith(":b") for o in outcomes), outcomes


@pytest.mark.parametrize("trials", [TRIALS, pytest.param(20, marks=pytest.mark.slow)])
def test_sigkill_receiver_mid_handoff_of_a_real_agent(pair, steps_wasm, trials):
    _check(run_trials(pair, steps_wasm, "receiver", trials), trials)


@pytest.mark.parametrize("trials", [TRIALS, pytest.param(20, marks=pytest.mark.slow)])
def test_sigkill_sender_mid_handoff_of_a_real_agent(pair, steps_wasm, trials):
    _check(run_trials(pair, steps_wasm, "sender", trials), trials)


def test_an_agent_that_rolled_back_resumes_with_the_undisturbed_output(tmp_path):
    """``retry`` rolls its LLM conversation back with mesh_rollback; a SIGKILL and a resume by replay
    (the same rebuild a receiver does) must give the same answers as a run that was never stopped.

    Found by the chaos runner: the live conversation kept the discarded attempts, a rebuilt one did not.
    """
    from meshagent.runtime.build import example_source

    wasm = build_cached(example_source("retry"), ROOT / ".cache" / "agents")
    write_device_config(tmp_path / "a", "laptop", MODEL_CACHE)
    a = FixedNode(tmp_path / "a", name="a")
    try:
        a.start()
        run = {"module_path": str(wasm), "args": ["retry"], "privacy": "any"}
        want = a.call("run", run, timeout=120)["agents"][0]
        assert want["status"] == "exited" and "attempt" in want["stdout"], want
        for delay in (0.4, 1.0):
            a.restart()  # an engine with no finished conversations: nothing of the first run is reused
            aid = a.call("run", {**run, "wait": False})["agent_id"]
            time.sleep(delay)
            a.restart()
            got = a.call("result", {"agent_id": aid, "wait": True}, timeout=120)
            assert got["stdout"] == want["stdout"], (delay, got)
    finally:
        a.stop()

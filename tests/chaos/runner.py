"""Chaos runner (issue 8): agents on a 5-node lab mesh while a nemesis breaks things.

Run it with ``sudo scripts/chaos [--trials N] [--seed S] [--json] [--nodes 5]``
(root: it uses the network lab of ``scripts/lab``). It

1. brings up a lab of ``--nodes`` network namespaces on one bridge (prefix
   ``mc<pid>``, subnet ``10.79.0``; ``scripts/lab down`` removes it at the end,
   after a failure or Ctrl-C too) and starts one ``meshagent join`` per
   namespace: emulated laptops holding the same generated model, mDNS on the
   lab link plus bootstrap addresses;
2. starts an isolated reference node (root namespace, loopback, no peers)
   that runs every agent once more, undisturbed, for its expected output.
   Agents are ``tests/node/programs/steps.c`` with three argument sets
   (4–8 LLM steps, every step ``privacy=any``) and a tag unique to the agent
   at the head of its prompts: a node reuses the KV of finished agents'
   prompt prefixes, which can flip near-tie answers of the tiny generated
   models, so agents must not share prefixes for "same output" to be a
   fair check. (``retry.c`` is left out for that reason: its prompts are fixed.);
3. per trial, starts ``--agents`` agents on random nodes (the agent's owner)
   while the nemesis, every 0.2–1 s, does one of: migrate an agent to
   another node (``migrate`` op) — sometimes SIGKILLing the sender or the
   receiver 0–0.4 s later, i.e. mid-handoff; force an auction at the agent's
   next LLM step (``migrate_auction``) — sometimes SIGKILLing its node
   0–1 s later, i.e. mid-auction; SIGKILL a random node; restart a node with
   the test hook ``MESHAGENT_CRASH_AT`` set to a random handoff step, so it
   dies exactly there the next time it gets that far; cut a node's link
   (``scripts/lab link I down``) and heal it 1–3 s later; drain a node
   (``leave``: its agents are handed to peers, then it stops). Killed,
   crashed and drained nodes restart on the same data dir after 0.3–2.5 s.
   At most two nodes are faulty at once;
4. when every agent was seen finished (or after 30 s) it heals everything,
   collects each agent's result from its owner and waits until no handoff is
   pending and every node sees every other one (``settle_s_max``: the longest
   time from that final heal until then).

``recovery_s`` of a fault (a kill, a crash point that fired, a drain, a cut)
is the time from its end — the restart command, or the link coming back —
until the node and every other live node list each other as peers again;
it includes the node's own start-up (~2 s of Python and model loading).

Checks, from a history sampled every 0.25 s on every reachable node (the
``agents`` and ``handoffs`` control ops) and the final state:

* ``finished``: the owner returned the agent's result, status ``exited``;
* ``wrong_output``: that result is not ``exited``, or its stdout differs from
  the undisturbed run in anything a fault could break: lines missing,
  repeated or out of order, a step's line lost or doubled, the final line;
* ``diverged_text`` (reported, not a failure): the same lines, but the model's
  answer text of some step differs. llama.cpp's CPU kernels round differently
  for different batch shapes and KV cache layouts (other agents' sessions in
  the same context), so a greedy continuation can flip at a near-tie of the
  tiny generated models (see :mod:`meshagent.inference.llama_engine`); the
  crash tests, with one agent at a time, compare byte for byte;
* ``lost``: no result within 120 s after the heal;
* ``duplicated``: the agent was seen running on two nodes in two consecutive
  samples, it ended (``exited``) on more than one node, or two nodes adopted
  the same handoff generation;
* ``generation_backwards``: a node was seen running the agent at a lower
  handoff generation than an earlier sample (generation of the node = the
  highest receiver handoff it committed for that agent, read right after the
  agent list).

Output: a human summary, or with ``--json`` one JSON object with ``trials``,
``agents``, ``finished``, ``lost``, ``duplicated``, ``wrong_output``,
``generation_backwards``, ``recovery_s_p50``, ``recovery_s_max``,
``recoveries`` (faults measured), ``settle_s_max``, fault counts and the wall time. Exit status 0 when nothing was lost, duplicated,
wrong or out of order.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from meshagent.errors import MeshError
from meshagent.node.control import call
from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess
from meshagent.runtime.build import build_cached

ROOT: Final = Path(__file__).resolve().parents[2]
LAB: Final = ROOT / "scripts" / "lab"
SUBNET: Final = "10.79.0"
PORT: Final = 4737
PROGRAMS: Final = ROOT / "tests" / "node" / "programs"
CRASH_POINTS: Final = ("sender:frozen", "sender:offered", "sender:sending", "sender:committed", "receiver:receiving",
                       "receiver:stored", "receiver:committed", "receiver:adopted")
NEMESIS_S: Final = 30.0
COLLECT_S: Final = 120.0
SAMPLE_S: Final = 0.25
MAX_FAULTY: Final = 2


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Lab:
    """The namespaces, through ``scripts/lab`` (always torn down by :meth:`down`)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.env = {**os.environ, "MA_LAB_PREFIX": f"mc{os.getpid() % 100000}", "MA_LAB_SUBNET": SUBNET}

    def _lab(self, *args: str) -> None:
        out = subprocess.run([str(LAB), *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"scripts/lab {' '.join(args)} failed: {out.stderr.strip()}")

    def up(self) -> None:
        self._lab("up", str(self.n))

    def down(self) -> None:
        self._lab("down")

    def link(self, i: int, state: str) -> None:
        self._lab("link", str(i), state)

    def ns(self, i: int) -> str:
        return f"{self.env['MA_LAB_PREFIX']}-{i}"


class Node:
    """One ``meshagent join`` in namespace ``i`` (same data dir and port across restarts)."""

    def __init__(self, lab: Lab, i: int, root: Path) -> None:
        self.lab, self.i = lab, i
        self.name = f"c{i}"
        self.data_dir = root / self.name
        self.log = root / f"{self.name}.log"
        self.addr = f"/ip4/{SUBNET}.{i}/tcp/{PORT}"
        self.peer_id = ""
        self.bootstrap: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.state = "down"  # up | starting | down | cut | draining
        self.crash_at = ""

    def start(self, crash_at: str = "") -> bool:
        """Start and wait for the ready line (blocking, 60 s at most)."""
        argv = ["ip", "netns", "exec", self.lab.ns(self.i), sys.executable, "-m", "meshagent", "join", "--json",
                "--data-dir", str(self.data_dir), "--name", self.name, "--listen", self.addr, "--interface", "eth0"]
        for b in self.bootstrap:
            argv += ["--bootstrap", b]
        env = dict(os.environ)
        env.pop("MESHAGENT_CRASH_AT", None)
        if crash_at:
            env["MESHAGENT_CRASH_AT"] = crash_at
        self.crash_at = crash_at
        with open(self.log, "ab") as logf:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=logf, env=env, cwd=ROOT)
        self.proc = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            return False
        info = json.loads(line)
        self.peer_id = info["peer_id"]
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def call(self, op: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
        try:
            return call(self.data_dir, op, params, timeout=timeout)
        except (MeshError, OSError, ValueError):
            return None


@dataclass
class AgentRun:
    agent_id: str
    kind: str
    owner: Node
    started: float
    ref_id: str
    expected: str | None = None
    seen_ended: bool = False
    running_on: list[str] = field(default_factory=list)
    dup_streak: int = 0
    duplicated: bool = False
    last_gen: int = -1
    backwards: bool = False
    result: dict[str, Any] | None = None


class Sampler(threading.Thread):
    """Samples every node's agents (and handoff generations) and checks the invariants as it goes."""

    def __init__(self, nodes: list[Node], runs: dict[str, AgentRun]) -> None:
        super().__init__(daemon=True)
        self.nodes, self.runs = nodes, runs
        self.stop_event = threading.Event()
        self.gens: dict[tuple[str, str], int] = {}  # (node, agent) -> highest receiver generation done
        self.samples = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            running: dict[str, list[str]] = {}
            for node in self.nodes:
                if not node.alive():
                    continue
                listed = node.call("agents", timeout=2.0)
                if listed is None:
                    continue
                # Read after the agents: a receiver persists "committed" before it adopts, so the row
                # of any agent just seen running here is in this answer.
                rows = node.call("handoffs", timeout=2.0)
                if rows is None:
                    continue
                for r in rows.get("handoffs", []):
                    if r["role"] == "receiver" and r["state"] in ("committed", "done"):
                        key = (node.name, r["agent"])
                        self.gens[key] = max(self.gens.get(key, -1), int(r["generation"]))
                for a in listed.get("agents", []):
                    run = self.runs.get(a["agent_id"])
                    if run is None:
                        continue
                    if a["status"] == "running":
                        running.setdefault(a["agent_id"], []).append(node.name)
                    elif a["status"] in ("exited", "failed", "killed"):
                        run.seen_ended = True
            for agent_id, run in self.runs.items():
                where = running.get(agent_id, [])
                run.dup_streak = run.dup_streak + 1 if len(where) > 1 else 0
                if run.dup_streak >= 2:
                    run.duplicated = True
                    log(f"DUPLICATE: {agent_id} running on {where}")
                if len(where) == 1:
                    gen = self.gens.get((where[0], agent_id), -1)
                    if gen < run.last_gen:
                        run.backwards = True
                        log(f"GENERATION BACKWARDS: {agent_id} on {where[0]} at {gen} after {run.last_gen}")
                    run.last_gen = max(run.last_gen, gen)
                    run.running_on = where
            self.samples += 1
            self.stop_event.wait(SAMPLE_S)


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.lab = Lab(args.nodes)
        self.root = Path(tempfile.mkdtemp(prefix="meshagent-chaos-"))
        self.nodes = [Node(self.lab, i, self.root) for i in range(1, args.nodes + 1)]
        self.faults: Counter[str] = Counter()
        self.restart_at: dict[str, float] = {}
        self.heal_at: dict[str, float] = {}
        self.threads: list[threading.Thread] = []
        self.kinds: dict[str, tuple[Path, list[str]]] = {}
        self.ref: NodeProcess | None = None
        self.recovering: dict[str, float] = {}
        """Node name -> when its fault ended (restart begun, link healed); until it is back in the mesh."""
        self.recoveries: list[float] = []

    # --- setup ---------------------------------------------------------------------

    def setup(self) -> None:
        from tests.conftest import MODEL_CACHE

        cache = ROOT / ".cache" / "agents"
        steps = build_cached(PROGRAMS / "steps.c", cache)
        self.kinds = {
            "steps-6": (steps, ["steps", "6", "300"]),
            "steps-4": (steps, ["steps", "4", "500"]),
            "steps-8": (steps, ["steps", "8", "200"]),
        }
        self.lab.up()
        for n in self.nodes:
            write_device_config(n.data_dir, "laptop", MODEL_CACHE)
        write_device_config(self.root / "ref", "laptop", MODEL_CACHE)
        self.ref = NodeProcess(self.root / "ref", name="reference").start(60)
        first = self.nodes[0]
        if not first.start():
            raise RuntimeError(f"node {first.name} did not start:\n{first.log.read_text()[-2000:]}")
        for n in self.nodes[1:]:
            n.bootstrap = [f"{first.addr}/p2p/{first.peer_id}"]
            if not n.start():
                raise RuntimeError(f"node {n.name} did not start:\n{n.log.read_text()[-2000:]}")
        for n in self.nodes:
            n.bootstrap = [f"{m.addr}/p2p/{m.peer_id}" for m in self.nodes if m is not n]
            n.state = "up"
        self.wait_whole(60)

    def whole(self) -> bool:
        ids = {n.peer_id for n in self.nodes}
        for n in self.nodes:
            peers = n.call("peers")
            pending = n.call("handoffs")
            if peers is None or pending is None or pending["pending"]:
                return False
            if {p["peer_id"] for p in peers["peers"]} != ids - {n.peer_id}:
                return False
        return True

    def wait_whole(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.whole():
                return True
            time.sleep(0.25)
        return False

    # --- the nemesis ------------------------------------------------------------------

    def faulty(self) -> int:
        return sum(1 for n in self.nodes if n.state != "up")

    def up_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.state == "up" and n.alive()]

    def background(self, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def restart(self, node: Node, crash_at: str = "") -> None:
        with node.lock:
            node.state = "starting"
            node.kill()
            ok = node.start(crash_at)
            node.state = "up" if ok else "down"
        if not ok:
            log(f"{node.name} did not start; retrying later")

    def kill(self, node: Node, reason: str) -> None:
        if node.state not in ("up", "draining"):
            return
        with node.lock:
            if node.state not in ("up", "draining"):
                return
            node.kill()
            node.state = "down"
        self.faults[reason] += 1
        self.restart_at[node.name] = time.monotonic() + self.rng.uniform(0.3, 2.5)

    def holder(self, runs: dict[str, AgentRun]) -> tuple[AgentRun, Node] | None:
        live = [r for r in runs.values() if not r.seen_ended and len(r.running_on) == 1]
        if not live:
            return None
        run = self.rng.choice(live)
        node = next((n for n in self.nodes if n.name == run.running_on[0]), None)
        return (run, node) if node is not None and node.state == "up" else None

    def act(self, runs: dict[str, AgentRun]) -> None:
        action = self.rng.choices(
            ["migrate", "migrate_kill", "auction", "auction_kill", "kill", "crash_point", "cut", "drain"],
            weights=[3, 3, 2, 2, 2, 2, 2, 1],
        )[0]
        can_fault = self.faulty() < MAX_FAULTY
        if action in ("migrate", "migrate_kill"):
            found = self.holder(runs)
            targets = [n for n in self.up_nodes() if found and n is not found[1]]
            if found is None or not targets:
                return
            run, src = found
            dst = self.rng.choice(targets)
            self.faults["migrate"] += 1
            self.background(src.call, "migrate", {"agent": run.agent_id, "to": dst.peer_id}, 30.0)
            if action == "migrate_kill" and can_fault:
                time.sleep(self.rng.uniform(0.0, 0.4))
                self.kill(self.rng.choice([src, dst]), "kill_mid_handoff")
        elif action in ("auction", "auction_kill"):
            found = self.holder(runs)
            if found is None:
                return
            run, node = found
            self.faults["auction"] += 1
            node.call("migrate_auction", {"agent": run.agent_id})
            if action == "auction_kill" and can_fault:
                time.sleep(self.rng.uniform(0.0, 1.0))
                self.kill(node, "kill_mid_auction")
        elif action == "kill" and can_fault:
            candidates = self.up_nodes()
            if candidates:
                self.kill(self.rng.choice(candidates), "kill")
        elif action == "crash_point" and can_fault:
            candidates = self.up_nodes()
            if candidates:
                node = self.rng.choice(candidates)
                point = self.rng.choice(CRASH_POINTS)
                self.faults["crash_point_armed"] += 1
                node.state = "starting"
                self.background(self.restart, node, point)
        elif action == "cut" and can_fault:
            candidates = self.up_nodes()
            if candidates:
                node = self.rng.choice(candidates)
                node.state = "cut"
                self.lab.link(node.i, "down")
                self.faults["cut"] += 1
                self.heal_at[node.name] = time.monotonic() + self.rng.uniform(1.0, 3.0)
        elif action == "drain" and can_fault:
            candidates = self.up_nodes()
            if candidates:
                node = self.rng.choice(candidates)
                node.state = "draining"
                self.faults["drain"] += 1
                self.background(self.drain, node)

    def drain(self, node: Node) -> None:
        node.call("leave", timeout=40.0)
        if node.proc is not None:
            try:
                node.proc.wait(30)
            except subprocess.TimeoutExpired:
                node.kill()
        node.state = "down"
        self.restart_at[node.name] = time.monotonic() + self.rng.uniform(0.3, 2.0)

    def housekeeping(self) -> None:
        now = time.monotonic()
        for n in self.nodes:
            if n.state == "up" and not n.alive():  # died at an armed crash point
                n.state = "down"
                self.faults["crash_point_fired"] += 1
                self.restart_at[n.name] = now + self.rng.uniform(0.3, 1.5)
            if n.state == "down" and self.restart_at.get(n.name, 0.0) <= now:
                self.restart_at.pop(n.name, None)
                n.state = "starting"
                self.recovering[n.name] = now
                self.background(self.restart, n)
            if n.state == "cut" and self.heal_at.get(n.name, 0.0) <= now:
                self.heal_at.pop(n.name, None)
                self.lab.link(n.i, "up")
                self.recovering[n.name] = now
                n.state = "up"
        self.check_recovered()

    def check_recovered(self) -> None:
        """A node has recovered when it and every other live node list each other again."""
        for name, since in list(self.recovering.items()):
            node = next(n for n in self.nodes if n.name == name)
            if node.state != "up" or not node.alive():
                continue
            others = [n for n in self.nodes if n is not node and n.state == "up" and n.alive()]
            mine = node.call("peers", timeout=2.0)
            if mine is None or not {o.peer_id for o in others} <= {p["peer_id"] for p in mine["peers"]}:
                continue
            if all(node.peer_id in {p["peer_id"] for p in (o.call("peers", timeout=2.0) or {"peers": []})["peers"]}
                   for o in others):
                self.recoveries.append(time.monotonic() - since)
                del self.recovering[name]

    def heal_all(self) -> None:
        for t in self.threads:
            t.join(90)
        self.threads.clear()
        for n in self.nodes:
            if n.state == "cut":
                self.lab.link(n.i, "up")
                self.recovering.setdefault(n.name, time.monotonic())
            if not n.alive() or n.crash_at:
                self.recovering.setdefault(n.name, time.monotonic())
                if n.crash_at and n.alive():
                    self.faults["crash_point_disarmed"] += 1
                self.restart(n)
            n.state = "up"
        self.restart_at.clear()
        self.heal_at.clear()

    # --- trials ---------------------------------------------------------------------------

    def trial(self, index: int) -> tuple[list[AgentRun], float]:
        runs: dict[str, AgentRun] = {}
        assert self.ref is not None
        for k in range(self.args.agents):
            kind = self.rng.choice(list(self.kinds))
            wasm, argv = self.kinds[kind]
            run = {"module_path": str(wasm), "args": [*argv, f"s{self.args.seed}-t{index}-a{k}"], "privacy": "any"}
            owner = self.rng.choice(self.up_nodes())
            ref_id = self.ref.call("run", {**run, "wait": False}, timeout=30)["agent_id"]  # the undisturbed run
            out = owner.call("run", {**run, "wait": False}, timeout=30)
            if out is None:
                raise RuntimeError(f"could not start an agent on {owner.name}")
            runs[out["agent_id"]] = AgentRun(out["agent_id"], kind, owner, time.monotonic(), ref_id)
        sampler = Sampler(self.nodes, runs)
        sampler.start()
        start = time.monotonic()
        while time.monotonic() - start < NEMESIS_S and not all(r.seen_ended for r in runs.values()):
            time.sleep(self.rng.uniform(0.2, 1.0))
            self.housekeeping()
            self.act(runs)
        self.heal_all()
        healed = time.monotonic()
        for run in runs.values():
            deadline = healed + COLLECT_S
            while run.result is None and time.monotonic() < deadline:
                run.result = run.owner.call("result", {"agent_id": run.agent_id, "wait": True},
                                            timeout=max(1.0, min(30.0, deadline - time.monotonic())))
        for run in runs.values():
            want = self.ref.call("result", {"agent_id": run.ref_id, "wait": True}, timeout=120)
            run.expected = want["stdout"] if want["status"] == "exited" else None
        self.wait_whole(60)
        self.check_recovered()
        for since in self.recovering.values():  # still not back: count the time until now
            self.recoveries.append(time.monotonic() - since)
        self.recovering.clear()
        recovery = time.monotonic() - healed
        time.sleep(2 * SAMPLE_S)
        sampler.stop_event.set()
        sampler.join(10)
        for run in runs.values():  # ended on more than one node = ran twice
            ended_on = []
            for n in self.nodes:
                listed = n.call("agents") or {}
                if any(a["agent_id"] == run.agent_id and a["status"] in ("exited", "failed", "killed")
                       for a in listed.get("agents", [])):
                    ended_on.append(n.name)
            if len(ended_on) > 1:
                run.duplicated = True
                log(f"DUPLICATE: {run.agent_id} ended on {ended_on}")
            adopted: dict[int, list[str]] = {}
            for n in self.nodes:
                for r in (n.call("handoffs") or {}).get("handoffs", []):
                    if r["agent"] == run.agent_id and r["role"] == "receiver" and r["state"] in ("committed", "done"):
                        adopted.setdefault(int(r["generation"]), []).append(n.name)
            twice = {g: where for g, where in adopted.items() if len(where) > 1}
            if twice:
                run.duplicated = True
                log(f"DUPLICATE: {run.agent_id} adopted twice at generations {twice}")
        return list(runs.values()), recovery

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        all_runs: list[AgentRun] = []
        recoveries: list[float] = []
        self.setup()
        log(f"mesh of {len(self.nodes)} nodes up in {time.monotonic() - t0:.1f} s; logs in {self.root}")
        for i in range(self.args.trials):
            runs, recovery = self.trial(i)
            all_runs += runs
            recoveries.append(recovery)
            bad = [r.agent_id for r in runs if not self.ok(r)]
            log(f"trial {i + 1}/{self.args.trials}: {len(runs)} agents, recovery {recovery:.1f} s, "
                f"faults so far {dict(self.faults)}" + (f", BAD {bad}" if bad else ""))
        finished = [r for r in all_runs if r.result is not None and r.result.get("status") == "exited"]
        return {
            "trials": self.args.trials,
            "nodes": len(self.nodes),
            "seed": self.args.seed,
            "lab_prefix": self.lab.env["MA_LAB_PREFIX"],
            "agents": len(all_runs),
            "finished": len(finished),
            "lost": sum(1 for r in all_runs if r.result is None),
            "duplicated": sum(1 for r in all_runs if r.duplicated),
            "wrong_output": sum(1 for r in all_runs if r.result is not None and not self.correct(r)),
            "diverged_text": sum(1 for r in all_runs if self.correct(r) and self.diverged(r)),
            "generation_backwards": sum(1 for r in all_runs if r.backwards),
            "recovery_s_p50": round(statistics.median(self.recoveries), 2) if self.recoveries else 0.0,
            "recovery_s_max": round(max(self.recoveries), 2) if self.recoveries else 0.0,
            "recoveries": len(self.recoveries),
            "settle_s_max": round(max(recoveries), 2) if recoveries else 0.0,
            "faults": dict(sorted(self.faults.items())),
            "seconds": round(time.monotonic() - t0, 1),
        }

    def correct(self, run: AgentRun) -> bool:
        """Exited, with the undisturbed run's lines: the same step lines in order and the same last line."""
        r = run.result
        if r is None or r.get("status") != "exited" or run.expected is None:
            return False
        return _shape(r.get("stdout", "")) == _shape(run.expected)

    @staticmethod
    def diverged(run: AgentRun) -> bool:
        return run.result is not None and run.expected is not None and run.result.get("stdout") != run.expected

    def ok(self, run: AgentRun) -> bool:
        return self.correct(run) and not run.duplicated and not run.backwards

    def close(self, keep: bool) -> None:
        for t in self.threads:
            t.join(5)
        for n in self.nodes:
            n.kill()
        if self.ref is not None:
            self.ref.kill()
        try:
            self.lab.down()
        finally:
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)


def _shape(stdout: str) -> list[str]:
    """What a fault could break in the output of ``steps``: each line's label, in order, and the last line."""
    lines = stdout.splitlines()
    return [line.split(":", 1)[0] for line in lines] + lines[-1:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--agents", type=int, default=3, help="agents started per trial")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--keep", action="store_true", help="keep data dirs and logs (printed path)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/chaos: must run as root (network namespaces)", file=sys.stderr)
        return 2

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    chaos = Chaos(args)
    report: dict[str, Any] | None = None
    try:
        report = chaos.run()
    finally:
        keep = args.keep or report is None or any(report[k] for k in ("lost", "duplicated", "wrong_output",
                                                                         "generation_backwards"))
        chaos.close(keep)
        if keep:
            log(f"data dirs and node logs kept in {chaos.root}")
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>22}: {v}")
    bad = report["lost"] or report["duplicated"] or report["wrong_output"] or report["generation_backwards"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

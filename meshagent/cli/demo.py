"""``meshagent demo``: a mesh of emulated devices on this machine, running real agents.

Starts a ``phone`` (tiny model, on battery), a ``laptop`` (small model, paired
with the phone: the owner's two devices) and a ``gpu`` box (the large model, at
a price) — each a real ``meshagent join`` process on loopback with its own
data dir and identity — and runs the example agents from the phone:

* ``summarise``: a long-context summariser whose heavy step needs the large
  model: it moves, sealed, to the gpu box and comes back for its private step;
* ``brainstorm``: forks three branches that each want at least a small model
  the phone lacks: the branches are auctioned at once, every bid reserving the
  capacity it offers, and each goes where it is expected to finish first;
* ``code_review``: reviews a small private code base; its steps are private,
  so the code never leaves the owner's devices.

Then the same three as Python agents (``summarise.py``...), placed and moved the
same way; ``--agents`` picks a subset.

It prints a live timeline — each step, the bids, the winner and why, the bytes
handed over — and a summary table. ``--json`` prints the step events instead:
a list of objects with ``agent_id``, ``agent``, ``step`` (0-based), ``model``,
``privacy``, ``bids`` (``peer``, ``peer_id``, ``estimate`` in seconds,
``price``), ``placed_on`` (``peer_id``, ``profile``), ``handoff_bytes``,
``sealed``, ``elapsed_s``, plus the auction's ``reason``, ``trigger``,
``invited`` and ``declined``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from meshagent.node.spawn import NodeProcess, wait_for

__all__ = ["register", "DemoMesh", "step_events"]

DEVICES = ("phone", "laptop", "gpu")
C_AGENTS = ("summarise", "brainstorm", "code_review")
PY_AGENTS = ("summarise.py", "brainstorm.py", "code_review.py")
"""The Python versions: components with CPython inside, built with componentize-py and compiled
once per machine (tens of seconds the first time; every node shares the compiled code), then run
and migrated like the C agents (a move also carries the 6 MB component to a node that lacks it)."""
AGENTS = C_AGENTS + PY_AGENTS

_SAMPLE_CODE = {
    "src/ring.c": (
        "#include <stdlib.h>\n\n/* A fixed-size ring buffer. */\nstruct ring { int *buf; int head, tail, cap; };\n\n"
        "int ring_push(struct ring *r, int v) {\n    if ((r->head + 1) % r->cap == r->tail) return -1;\n"
        "    r->buf[r->head] = v;\n    r->head = (r->head + 1) % r->cap;\n    return 0;\n}\n"
    ),
    "src/main.c": (
        "#include <stdio.h>\n\nint main(void) {\n    char name[16];\n    gets(name);\n"
        "    printf(\"hello %s\\n\", name);\n    return 0;\n}\n"
    ),
    "README.md": "# ring\nA tiny ring buffer, private code of the phone's owner.\n",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run example agents on a mesh of emulated devices on this machine")
    p.add_argument("--json", action="store_true", help="print the step events as JSON")
    p.add_argument("--keep", type=Path, help="keep the nodes' data dirs here instead of a temporary dir")
    p.add_argument("--agents", default=",".join(AGENTS),
                   help=f"which agents to run, in order (default: {','.join(AGENTS)})")
    p.set_defaults(func=cmd_demo)


@dataclass
class DemoMesh:
    """The demo's three node processes, started and paired."""

    root: Path
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def start(self, console: Console) -> None:
        from meshagent.config import default_data_dir
        from meshagent.node.emulation import write_device_config

        models = default_data_dir() / "cache" / "models"
        with console.status("generating the devices' models (once) and starting phone, laptop and gpu nodes…"):
            for name in DEVICES:
                write_device_config(self.root / name, name, models)
            phone = NodeProcess(self.root / "phone", "--profile", "phone", name="phone").start()
            self.nodes["phone"] = phone
            for name in DEVICES[1:]:
                self.nodes[name] = NodeProcess(self.root / name, "--profile", name, "--bootstrap", phone.addrs[0], name=name).launch()
            for n in self.nodes.values():
                n.wait_ready(timeout=120)
        with console.status("waiting for the nodes to discover each other…"):
            ok, _ = wait_for(lambda: all(len(n.peers()) == len(DEVICES) - 1 for n in self.nodes.values()), timeout=60)
            if not ok:
                raise RuntimeError("the demo mesh did not form; see the logs in " + str(self.root))
        with console.status("waiting for every node to measure its model (self-benchmark, cached per machine)…"):
            def measured() -> bool:
                for n in self.nodes.values():
                    for p in n.peers().values():
                        if any(m["kind"] == "llm" and m["decode_tps"] is None for m in p["models"]):
                            return False
                return True

            wait_for(measured, timeout=120, interval=0.5)
        code = self.nodes["laptop"].call("pair_show")["code"]
        self.nodes["phone"].call("pair_join", {"code": code, "peer": self.nodes["laptop"].peer_id})
        console.print(f"paired phone and laptop with code {code}: they are the owner's devices; the gpu box is a stranger at a price")

    def profile_of(self, peer: str | None) -> str:
        for name, n in self.nodes.items():
            if n.peer_id == peer:
                return name
        return "?"

    def stop(self) -> None:
        for n in self.nodes.values():
            n.stop()


def _build_agents(names: list[str]) -> dict[str, Path]:
    from meshagent.config import default_data_dir
    from meshagent.runtime.build import AGENTS_DIR, build_cached

    cache = default_data_dir() / "cache" / "agents"
    built: dict[str, Path] = {}
    for name in names:
        if name.endswith(".py"):
            from meshagent.sdk.build import build_python_cached

            built[name] = build_python_cached(AGENTS_DIR / name, cache)
        else:
            built[name] = build_cached(AGENTS_DIR / f"{name}.c", cache)
    return built


def _precompile(paths: list[Path]) -> None:
    """Compile Python agents into the machine's shared cache, where every node finds them."""
    from meshagent.config import SandboxLimits, user_cache_dir
    from meshagent.runtime.components import ComponentCache
    from meshagent.runtime.modules import engine_for

    cache = ComponentCache(engine_for(SandboxLimits().stack_bytes), user_cache_dir() / "modules")
    for path in paths:
        cache.load(path.read_bytes())


def step_events(mesh: DemoMesh) -> list[dict[str, Any]]:
    """Every LLM step run on the mesh so far, joined with the auction that placed it and its handoff."""
    steps: list[tuple[str, dict[str, Any]]] = []
    auctions: list[tuple[str, dict[str, Any]]] = []
    moves: list[tuple[str, dict[str, Any]]] = []
    for name, node in mesh.nodes.items():
        got = node.call("steps")
        steps += [(name, s) for s in got["steps"]]
        moves += [(name, m) for m in got["moves"]]
        auctions += [(name, a) for a in node.call("auctions")["auctions"]]
    events = []
    for where, s in sorted(steps, key=lambda x: x[1]["finished_at"]):
        placed = [(n, a) for n, a in auctions if a["agent_id"] == s["agent_id"] and a["step"] == s["step"] and a["winner"]]
        auction = placed[-1][1] if placed else None
        move = None
        if auction is not None and auction["winner"] != mesh.nodes[placed[-1][0]].peer_id:
            after = [m for n, m in moves if m["agent_id"] == s["agent_id"] and m["at"] >= auction["at"] and n == placed[-1][0]]
            move = after[0] if after else None
        events.append({
            "agent_id": s["agent_id"],
            "step": s["step"],
            "model": s["model"],
            "privacy": s["privacy"],
            "bids": [
                {"peer": mesh.profile_of(b["bidder"]), "peer_id": b["bidder"], "estimate": b["total_s"], "price": b["price"]}
                for b in (auction["bids"] if auction else [])
            ],
            "declined": [
                {"peer": mesh.profile_of(d["bidder"]), "reason": d["reason"]} for d in (auction["declines"] if auction else [])
                if d["bidder"] != mesh.nodes[placed[-1][0]].peer_id
            ],
            "invited": [mesh.profile_of(p) for p in (auction["invited"] if auction else [])],
            "auctioned_by": placed[-1][0] if placed else None,
            "reason": auction["reason"] if auction else "ran where the agent was (no trigger to move)",
            "trigger": auction.get("trigger") if auction else None,
            "placed_on": {"peer_id": mesh.nodes[where].peer_id, "profile": where},
            "handoff_bytes": move["bytes"] if move else 0,
            "sealed": bool(move and move["sealed"]),
            "elapsed_s": round(s["seconds"], 3),
            "finished_at": s["finished_at"],
        })
    return events


def _describe(event: dict[str, Any], names: dict[str, str]) -> str:
    who = names.get(event["agent_id"], "agent")
    line = f"[bold]{who}[/] {event['agent_id'][:6]} step {event['step'] + 1} ({event['privacy']})"
    if event["auctioned_by"]:
        bids = ", ".join(f"{b['peer']} {b['estimate']:.2f}s/{b['price']:.4f}" for b in event["bids"]) or "none"
        line += f"\n    auction on the {event['auctioned_by']} ({event['trigger']}): bids {bids}"
        silent = set(event["invited"]) - {b["peer"] for b in event["bids"]} - {d["peer"] for d in event["declined"]}
        if silent:
            line += "; no answer in time from " + ", ".join(sorted(silent))
        if event["declined"]:
            line += "; declined: " + ", ".join(f"{d['peer']} ({d['reason']})" for d in event["declined"])
        line += f"\n    → [green]{event['placed_on']['profile']}[/]: {event['reason']}"
        if event["handoff_bytes"]:
            line += f"; handed over {event['handoff_bytes']:,} bytes, sealed for the {event['placed_on']['profile']} alone"
    line += f"\n    ran on the [cyan]{event['placed_on']['profile']}[/] with {event['model']} in {event['elapsed_s']:.2f} s"
    return line


def cmd_demo(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    names = [a for a in args.agents.split(",") if a]
    unknown = set(names) - set(AGENTS)
    if unknown:
        console.print(f"[red]unknown demo agents: {', '.join(sorted(unknown))}[/]")
        return 2
    with tempfile.TemporaryDirectory(prefix="meshagent-demo-") as tmp:
        root = args.keep or Path(tmp)
        mesh = DemoMesh(root)
        try:
            with console.status("building the example agents (zig cc and componentize-py, cached)…"):
                wasm = _build_agents(names)
            if py := [wasm[n] for n in names if n.endswith(".py")]:
                with console.status("compiling the Python agents for this machine (once; every node shares it)…"):
                    _precompile(py)
            mesh.start(console)
            code_dir = root / "private-code"
            for rel, text in _SAMPLE_CODE.items():
                (code_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (code_dir / rel).write_text(text)
            runs: dict[str, dict[str, Any]] = {}
            shown = 0
            agent_names: dict[str, str] = {}
            phone = mesh.nodes["phone"]
            t0 = time.time()
            for name in names:
                base = name.removesuffix(".py")
                params: dict[str, Any] = {"module_path": str(wasm[name]), "args": [base], "policy": "latency"}
                if base == "code_review":
                    params.update(privacy="private", dir=str(code_dir))
                else:
                    params.update(privacy="any")
                console.rule(f"{name}")
                result: dict[str, Any] = {}
                worker = threading.Thread(target=lambda p=params: result.update(phone.call("run", p, timeout=600)))
                worker.start()
                while worker.is_alive() or shown < len(step_events(mesh)):
                    events = step_events(mesh)
                    for ev in events[shown:]:
                        agent_names.setdefault(ev["agent_id"], name)
                        if not args.json:
                            console.print(f"[dim]{ev['finished_at'] - t0:6.2f}s[/] " + _describe(ev, agent_names))
                    shown = len(events)
                    worker.join(timeout=0.3)
                runs[name] = result
                for a in result.get("agents", []):
                    agent_names.setdefault(a["agent_id"], name)
            events = step_events(mesh)
            for ev in events:
                ev["agent"] = agent_names.get(ev["agent_id"], "")
            if args.json:
                print(json.dumps(events))  # a list of step events; "agent" names the example it belongs to
                return 0
            _summary(console, mesh, runs, events, agent_names)
            return 0
        finally:
            mesh.stop()


def _summary(console: Console, mesh: DemoMesh, runs: dict[str, dict[str, Any]], events: list[dict[str, Any]],
             agent_names: dict[str, str]) -> None:
    table = Table(title="summary")
    for col in ("agent", "id", "steps: where they ran", "moves", "bytes handed over", "exit", "output (first line)"):
        table.add_column(col)
    for name, result in runs.items():
        for a in result.get("agents", []):
            mine = [e for e in events if e["agent_id"] == a["agent_id"]]
            where = " → ".join(f"{e['placed_on']['profile']}" for e in mine) or "-"
            moved = sum(1 for e in mine if e["handoff_bytes"])
            first = (a["stdout"].splitlines() or [""])[0]
            table.add_row(name, a["agent_id"][:6], where, str(moved), f"{sum(e['handoff_bytes'] for e in mine):,}",
                          str(a["exit_code"]), first[:60])
    console.print(table)
    private = [e for e in events if e["privacy"] == "private"]
    strays = [e for e in private if e["placed_on"]["profile"] not in ("phone", "laptop")]
    console.print(f"{len(private)} private step(s), {len(strays)} outside the owner's devices")

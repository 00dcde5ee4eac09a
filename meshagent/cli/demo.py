"""``meshagent demo``: a mesh of emulated devices on this machine.

Starts a ``phone``, a ``laptop`` and a ``gpu`` box — each a real
``meshagent join`` process on loopback with its own data dir — waits until
they have found each other, and shows the mesh as the phone sees it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from meshagent.node.spawn import NodeProcess, wait_for

__all__ = ["register"]

DEVICES = (("phone", "phone"), ("laptop", "laptop"), ("gpu", "gpu"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="start a mesh of emulated devices on this machine and show it")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--keep", type=Path, help="keep the nodes' data dirs here instead of a temporary dir")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    with tempfile.TemporaryDirectory(prefix="meshagent-demo-") as tmp:
        root = args.keep or Path(tmp)
        nodes: list[NodeProcess] = []
        try:
            with console.status("starting phone, laptop and gpu nodes…"):
                first = NodeProcess(root / DEVICES[0][0], "--profile", DEVICES[0][1], name=DEVICES[0][0]).start()
                nodes.append(first)
                for name, profile in DEVICES[1:]:
                    nodes.append(NodeProcess(root / name, "--profile", profile, "--bootstrap", first.addrs[0], name=name).launch())
                for n in nodes[1:]:
                    n.wait_ready()
            t0 = time.monotonic()
            with console.status("waiting for the nodes to discover each other…"):
                ids = {n.peer_id for n in nodes}
                ok, took = wait_for(lambda: all(set(n.peers()) == ids - {n.peer_id} for n in nodes), timeout=30)
            peers = first.peers()
            if args.json:
                print(json.dumps({"formed": bool(ok), "formed_s": round(took, 3), "seen_by": first.name, "peers": list(peers.values())}))
            else:
                console.print(f"mesh of {len(nodes)} nodes formed in {time.monotonic() - t0:.2f} s" if ok else "[red]mesh did not form[/]")
                table = Table(title=f"the mesh as the {first.name} sees it")
                for col in ("name", "profile", "cores", "RAM GiB", "accelerators", "battery", "rtt ms"):
                    table.add_column(col)
                for p in peers.values():
                    table.add_row(
                        p["name"], p["profile"], str(p["cpu_cores"]), f"{p['ram_total'] / (1 << 30):.0f}",
                        ", ".join(p["accelerators"]) or "-",
                        "-" if p["battery_percent"] is None else f"{p['battery_percent']:.0f}%",
                        "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.1f}",
                    )
                console.print(table)
            return 0 if ok else 1
        finally:
            for n in nodes:
                n.stop()

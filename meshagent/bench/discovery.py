"""``meshagent bench discovery``: how fast a mesh of real node processes forms and notices departures.

Starts ``--nodes`` (default 5) ``meshagent join`` processes on loopback: the
first alone, then the others at once, each bootstrapping to the first only.
For each joiner it records the time from its launch (process start included)
to the moment its peer table lists every other node (*discovery*). Then it kills one node with SIGKILL and records how long until
every other node has dropped it (*departure_detect_s*), and stops another
cleanly to time the goodbye path (*leave_detect_s*).

Baselines, measured in the same run: how long the joiners took to print their
ready line (*process_ready_p50_s*: interpreter start-up and listening, part of
every discovery time), the time one fresh libp2p host needs to dial the first
node and ping it (*connect_ping_baseline_s*), and the configured advert
interval and TTL that bound the departure figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from meshagent.config import NodeConfig
from meshagent.node.spawn import NodeProcess, wait_for

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "discovery and departure times of a mesh of node processes on loopback"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=5)


def _sees_all(node: NodeProcess, others: set[str]) -> bool:
    try:
        return others <= set(node.peers())
    except Exception:  # the node may still be starting its control API
        return False


def _connect_ping_baseline(addr: str) -> float:
    import trio

    from meshagent.net.host import open_host, split_p2p_addr
    from meshagent.node.identity import load_or_create_identity

    async def main() -> float:
        with tempfile.TemporaryDirectory() as d:
            ident = load_or_create_identity(Path(d))
            async with open_host(ident, ["/ip4/127.0.0.1/tcp/0"]) as host:
                peer, dial = split_p2p_addr(addr)
                start = time.perf_counter()
                await host.dial(peer, [dial])
                await host.ping(peer)
                return time.perf_counter() - start

    return trio.run(main)


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = max(3, args.nodes)
    with tempfile.TemporaryDirectory(prefix="meshagent-bench-") as tmp:
        root = Path(tmp)
        nodes: list[NodeProcess] = []
        try:
            started: dict[str, float] = {}
            first = NodeProcess(root / "n0").start()
            started[first.peer_id] = time.monotonic()
            nodes.append(first)
            # The joiners start together, each knowing only the first node.
            t0 = time.monotonic()
            joining = [NodeProcess(root / f"n{i}", "--bootstrap", first.addrs[0]).launch() for i in range(1, n)]
            ready: list[float] = []
            for node in joining:
                node.wait_ready()
                ready.append(time.monotonic() - t0)
                started[node.peer_id] = t0
                nodes.append(node)
            ids = {x.peer_id for x in nodes}
            discovered: dict[str, float] = {}
            deadline = time.monotonic() + 60
            while len(discovered) < n and time.monotonic() < deadline:
                for x in nodes:
                    if x.peer_id not in discovered and _sees_all(x, ids - {x.peer_id}):
                        discovered[x.peer_id] = time.monotonic() - started[x.peer_id]
                time.sleep(0.05)
            times = [discovered.get(x.peer_id, float("nan")) for x in nodes]
            # Joiners only: the first node's time includes waiting for the others to start.
            joiners = [discovered[x.peer_id] for x in nodes[1:] if x.peer_id in discovered]

            baseline = _connect_ping_baseline(first.addrs[0])

            victim, rest = nodes[-1], nodes[:-1]
            victim.kill()
            t0 = time.monotonic()
            gone, _ = wait_for(lambda: all(victim.peer_id not in x.peers() for x in rest), timeout=60, interval=0.1)
            departure = time.monotonic() - t0 if gone else float("nan")

            leaver, rest = rest[-1], rest[:-1]
            t0 = time.monotonic()
            leaver.stop()
            gone, _ = wait_for(lambda: all(leaver.peer_id not in x.peers() for x in rest), timeout=60, interval=0.05)
            leave = time.monotonic() - t0 if gone else float("nan")
        finally:
            for x in nodes:
                x.stop()
    cfg = NodeConfig()
    return {
        "nodes": n,
        "discovered": len(discovered),
        "discovery_p50_s": round(statistics.median(joiners), 3) if joiners else None,
        "discovery_max_s": round(max(joiners), 3) if joiners else None,
        "discovery_all_s": [round(t, 3) for t in times],
        "departure_detect_s": round(departure, 3),
        "leave_detect_s": round(leave, 3),
        "connect_ping_baseline_s": round(baseline, 4),
        "process_ready_p50_s": round(statistics.median(ready), 3),
        "advert_interval_s": cfg.advert_interval_s,
        "advert_ttl_s": cfg.advert_ttl_s,
    }

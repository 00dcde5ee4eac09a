"""``meshagent bench auction``: how long a placement decision takes among real peers.

Starts a home node and ``--peers`` other ``meshagent join`` processes on
loopback (a mix of emulated phones, Pis, laptops, GPU boxes and cloud nodes,
each with its generated model), waits until the home node sees them all, then
holds ``--rounds`` auctions, ten a second (bidders rate-limit calls for bids
per peer), for an LLM step any of them could run (the call goes to at most
the bounded fan-out). The first auction opens the auction channels to the
bidders (one libp2p stream each, kept open); it is reported on its own as
``decision_ms_cold`` and not counted in the percentiles, which describe the
steady state. Each decision's time is measured from
sending the calls for bids to the ranked decision, awards and releases
excluded; messages count every frame sent or received for the decision,
awards and releases included.

Baseline, in the same run: the round trip of one peer-exchange request to one
peer (``rtt_baseline_ms_p50``) — a single libp2p request/response on the same
streams, the floor under any decision.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "decision time and messages of placement auctions among node processes on loopback"

_PROFILES = ("laptop", "gpu", "pi", "cloud", "phone")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers", type=int, default=10)
    p.add_argument("--rounds", type=int, default=200)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from meshagent.config import default_data_dir

    models = default_data_dir() / "cache" / "models"
    with tempfile.TemporaryDirectory(prefix="meshagent-bench-auction-") as tmp:
        root = Path(tmp)
        nodes: list[NodeProcess] = []
        try:
            write_device_config(root / "home", "laptop", models)
            home = NodeProcess(root / "home", name="home").start()
            nodes.append(home)
            for i in range(args.peers):
                profile = _PROFILES[i % len(_PROFILES)]
                write_device_config(root / f"p{i}", profile, models)
                nodes.append(NodeProcess(root / f"p{i}", "--bootstrap", home.addrs[0], name=f"{profile}{i}").launch())
            for n in nodes:
                n.wait_ready(timeout=120)
            ok, _ = wait_for(lambda: len(home.peers()) == args.peers, timeout=120, interval=0.2)
            if not ok:
                raise RuntimeError(f"home node sees {len(home.peers())} of {args.peers} peers")
            time.sleep(1.0)  # let the first pings and re-exchanges settle
            step = {"requirement": "", "privacy": "any", "context_tokens": 500, "output_tokens": 64, "award": True}
            cold = home.call("auction", step)["decision_ms"]
            decisions: list[float] = []
            messages: list[int] = []
            invited: list[int] = []
            for _ in range(args.rounds):
                time.sleep(0.1)  # ten decisions a second: within every bidder's limit on calls for bids
                r = home.call("auction", step)
                decisions.append(r["decision_ms"])
                messages.append(r["messages"])
                invited.append(len(r["invited"]))
            rtts = [home.call("rtt_probe")["rtt_ms"] for _ in range(20)]
        finally:
            for n in nodes:
                n.stop()
    return {
        "peers": args.peers,
        "rounds": args.rounds,
        "invited_per_decision": statistics.median(invited),
        "decision_ms_p50": round(statistics.median(decisions), 3),
        "decision_ms_p99": round(_pct(decisions, 0.99), 3),
        "decision_ms_max": round(max(decisions), 3),
        "decision_ms_cold": round(cold, 3),
        "messages_per_decision": statistics.median(messages),
        "rtt_baseline_ms_p50": round(statistics.median(rtts), 3),
    }

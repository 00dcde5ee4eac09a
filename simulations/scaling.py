"""Per-decision cost as the mesh grows: messages per placement decision and the simulator's own time.

Meshes of 10 to 10,000 nodes (sites of five devices plus cloud GPUs) are built and
a fixed number of auctions is run through :func:`simulations.policies.forage`,
the real protocol code. Fan-out is bounded by ``MAX_FANOUT``, so messages per
decision must stay flat; the home's local scan of its peer table
(``select_bidders``) is linear in the table, which the timing shows.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from statistics import fmean

import simpy

from meshagent.protocol.auction import CallForBids
from meshagent.protocol.scoring import Policy, Reputation

from simulations.mesh import snapshot_bytes
from simulations.policies import BID_WINDOW_S, PolicySpec, forage
from simulations.world import Layout, build_world

__all__ = ["ScalePoint", "layout_for", "scaling"]

SIZES = (10, 100, 1000, 10_000)


@dataclass(frozen=True, slots=True)
class ScalePoint:
    nodes: int
    messages_per_decision: float
    max_messages: int
    invited_mean: float
    distinct_invited: int
    """Different peers invited over all the decisions (herding shows as a small number)."""
    busiest_share: float
    """Share of decisions that invited the most-invited peer."""
    decisions: int
    sim_seconds: float
    """Wall-clock seconds the simulator spent on this mesh's decisions."""
    build_seconds: float
    """Wall-clock seconds to build the mesh (devices, adverts, peer table)."""

    def as_json(self) -> dict[str, float | int]:
        return {
            "nodes": self.nodes,
            "messages_per_decision": round(self.messages_per_decision, 2),
            "max_messages": self.max_messages,
            "invited_mean": round(self.invited_mean, 2),
            "distinct_invited": self.distinct_invited,
            "busiest_share": round(self.busiest_share, 3),
            "decisions": self.decisions,
            "sim_seconds": round(self.sim_seconds, 3),
            "sim_ms_per_decision": round(1000 * self.sim_seconds / max(self.decisions, 1), 3),
            "build_seconds": round(self.build_seconds, 3),
        }


def layout_for(nodes: int) -> Layout:
    """Five devices per site and the rest (at least one, about 5 %) cloud GPUs."""
    clouds = max(1, nodes // 20)
    sites = max(1, (nodes - clouds) // 5)
    return Layout(sites=sites, clouds=nodes - 5 * sites, liar_share=0.1, churn=False)


def scaling(*, sizes: tuple[int, ...] = SIZES, decisions: int, seed: int) -> list[ScalePoint]:
    points = []
    for n in sizes:
        t0 = time.perf_counter()
        env = simpy.Environment()
        layout = layout_for(n)
        world = build_world(env, layout, seed=seed, horizon=0.0)
        built = time.perf_counter()
        rng = random.Random(f"scaling/{seed}/{n}")
        spec = PolicySpec("meshagent-balanced", "forage", Policy.BALANCED)
        messages, invited = [], []
        asked: Counter[str] = Counter()
        for i in range(decisions):
            owner = rng.randrange(layout.sites)
            home = world.held(owner, "laptop").peer
            context = rng.randint(1000, 20_000)
            call = CallForBids(
                auction_id=f"scale-{n}-{i}",
                agent_id=f"agent-{i}",
                home=home,
                owner=home,
                requirement=rng.choice(("size>=small", "size>=medium", "size>=large", "size>=xl")),
                context_tokens=context,
                output_tokens=rng.randint(100, 2000),
                privacy=rng.choice(("private", "lan", "any", "any")),
                policy="balanced",
                snapshot_bytes=snapshot_bytes(context),
                issued_at=0.0,
                bid_deadline=BID_WINDOW_S,
                fresh_tokens=context,
            )
            placement = forage(world, call, owner, spec, Reputation())
            messages.append(placement.messages)
            invited.append(len(placement.invited))
            asked.update(placement.invited)
        done = time.perf_counter()
        points.append(
            ScalePoint(
                nodes=len(world.devices),
                messages_per_decision=fmean(messages),
                max_messages=max(messages),
                invited_mean=fmean(invited),
                distinct_invited=len(asked),
                busiest_share=max(asked.values(), default=0) / max(decisions, 1),
                decisions=decisions,
                sim_seconds=done - built,
                build_seconds=built - t0,
            )
        )
    return points

"""Running the experiments: every workload under every policy, the reputation study, scaling."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Final

import simpy

from meshagent.protocol.scoring import Policy

from simulations.metrics import Recorder, Summary, summarise
from simulations.mesh import Mesh
from simulations.policies import POLICIES, PolicySpec
from simulations.scaling import SIZES, ScalePoint, scaling
from simulations.workloads import WORKLOADS, make_tasks
from simulations.world import Layout, build_world

__all__ = ["Scenario", "QUICK", "FULL", "run_one", "run_reputation", "run_all", "Results"]


@dataclass(frozen=True, slots=True)
class Scenario:
    layout: Layout
    tasks: int
    """Tasks per workload."""
    mean_gap_s: float
    """Mean time between task arrivals (all owners together)."""
    scaling_decisions: int
    scaling_sizes: tuple[int, ...] = SIZES
    seed: int = 7


QUICK: Final = Scenario(Layout(sites=4, clouds=3, liar_share=0.2), tasks=12, mean_gap_s=60.0, scaling_decisions=20)
FULL: Final = Scenario(Layout(sites=10, clouds=6, liar_share=0.2), tasks=80, mean_gap_s=25.0, scaling_decisions=300)


def run_one(workload: str, spec: PolicySpec, scenario: Scenario) -> tuple[Summary, Recorder]:
    """One workload under one policy on a fresh world built from the scenario's seed."""
    env = simpy.Environment()
    tasks = make_tasks(
        workload, count=scenario.tasks, owners=scenario.layout.sites,
        mean_gap_s=scenario.mean_gap_s, seed=scenario.seed,
    )
    horizon = (tasks[-1].start_s if tasks else 0.0) + 4 * 3600.0
    world = build_world(env, scenario.layout, seed=scenario.seed, horizon=horizon)
    rec = Recorder()
    mesh = Mesh(world, spec, rec, seed=scenario.seed)
    procs = [env.process(mesh.task(t)) for t in tasks]
    env.run(until=env.all_of(procs))
    return summarise(rec), rec


def run_reputation(scenario: Scenario) -> dict[str, tuple[Summary, Recorder]]:
    """Survey drafting (many public fan-out steps) with many lying peers, with and without reputation."""
    lying = replace(scenario, layout=replace(scenario.layout, liar_share=0.4))
    out = {}
    for label, use in (("with-reputation", True), ("without-reputation", False)):
        spec = PolicySpec(f"meshagent-balanced ({label})", "forage", Policy.BALANCED, reputation=use)
        out[label] = run_one("survey", spec, lying)
    return out


@dataclass(frozen=True, slots=True)
class Results:
    scenario: Scenario
    mode: str
    table: dict[str, dict[str, Summary]]
    reputation: dict[str, tuple[Summary, Recorder]]
    scaling: list[ScalePoint]
    wall_s: float


def run_all(scenario: Scenario, *, mode: str, policies: tuple[PolicySpec, ...] = POLICIES) -> Results:
    t0 = time.perf_counter()
    table: dict[str, dict[str, Summary]] = {}
    for workload in WORKLOADS:
        table[workload] = {spec.name: run_one(workload, spec, scenario)[0] for spec in policies}
    reputation = run_reputation(scenario)
    points = scaling(sizes=scenario.scaling_sizes, decisions=scenario.scaling_decisions, seed=scenario.seed)
    return Results(scenario, mode, table, reputation, points, time.perf_counter() - t0)

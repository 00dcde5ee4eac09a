"""A mesh of identical devices: foraging has nothing to find, so it must not look better than staying home."""

import pytest

from simulations.policies import POLICIES
from simulations.run import Scenario, run_one
from simulations.world import Layout

IDENTICAL = Scenario(
    Layout(sites=1, clouds=4, identical="laptop", churn=False, liar_share=0.0),
    tasks=6, mean_gap_s=100_000.0, scaling_decisions=1,  # tasks do not overlap: no queue to escape
)


@pytest.mark.parametrize("workload", ["software-dev", "podcast"])
def test_identical_devices_give_foraging_no_advantage(workload):
    local, _ = run_one(workload, next(p for p in POLICIES if p.name == "local-only"), IDENTICAL)
    for spec in POLICIES:
        if spec.kind != "forage":
            continue
        s, _ = run_one(workload, spec, IDENTICAL)
        # Same device everywhere: only noise (slowdown draws) and auction round trips differ.
        assert s.latency_mean_s >= 0.97 * local.latency_mean_s, spec.name
        assert s.latency_mean_s <= 1.10 * local.latency_mean_s, spec.name
        assert s.privacy_violations == 0


def test_heterogeneous_mesh_is_where_foraging_wins(quick):
    # The converse, so the sanity check above cannot pass by foraging being broken.
    for workload in ("software-dev", "survey"):
        row = quick.table[workload]
        assert row["meshagent-latency"].latency_p50_s < 0.8 * row["local-only"].latency_p50_s

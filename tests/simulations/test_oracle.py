import pytest

from simulations.policies import POLICIES
from simulations.run import QUICK, run_one
from simulations.workloads import WORKLOADS


@pytest.mark.parametrize("workload", WORKLOADS)
def test_oracle_is_never_worse_than_any_privacy_respecting_policy(workload):
    oracle, orec = run_one(workload, next(p for p in POLICIES if p.kind == "oracle"), QUICK)
    assert oracle.privacy_violations == 0
    compared = 0
    for spec in POLICIES:
        if spec.kind == "oracle":
            continue
        s, rec = run_one(workload, spec, QUICK)
        if s.privacy_violations:
            continue  # cloud-only and nearest-peer buy their speed by breaking privacy; the bound is for placements that do not
        compared += 1
        # Task by task, so the percentiles follow.
        for task_id, latency in rec.task_latency.items():
            assert orec.task_latency[task_id] <= latency + 1e-9, (spec.name, task_id)
        assert oracle.latency_p50_s <= s.latency_p50_s and oracle.latency_p95_s <= s.latency_p95_s
    assert compared >= 4

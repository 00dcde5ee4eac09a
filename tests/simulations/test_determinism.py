from dataclasses import replace

from simulations.policies import POLICIES
from simulations.run import QUICK, run_one


def _spec(name):
    return next(p for p in POLICIES if p.name == name)


def test_same_seed_same_results():
    for workload in ("software-dev", "survey"):
        a, ra = run_one(workload, _spec("meshagent-balanced"), QUICK)
        b, rb = run_one(workload, _spec("meshagent-balanced"), QUICK)
        assert a == b
        assert ra.task_latency == rb.task_latency
        assert ra.liar_wins == rb.liar_wins


def test_another_seed_changes_the_run():
    a, _ = run_one("podcast", _spec("meshagent-latency"), QUICK)
    b, _ = run_one("podcast", _spec("meshagent-latency"), replace(QUICK, seed=QUICK.seed + 1))
    assert a != b

import pytest
from hypothesis import given, settings, strategies as st

from meshagent.protocol.scoring import Candidate, Estimate, Reputation, privacy_allows, rank


def est(t, price=0.0):
    return Estimate(transfer_s=0.0, queue_s=0.0, prefill_s=0.0, decode_s=t, price=price)


def test_privacy_filter():
    assert privacy_allows("private", owner_device=True, on_link=False)
    assert not privacy_allows("private", owner_device=False, on_link=True)
    assert privacy_allows("lan", owner_device=False, on_link=True)
    assert not privacy_allows("lan", owner_device=False, on_link=False)
    assert privacy_allows("any", owner_device=False, on_link=False)


def test_policies():
    fast_dear = Candidate("a", est(1.0, 1.0), owner_device=True)
    slow_cheap = Candidate("b", est(10.0, 0.0), owner_device=True)
    mid = Candidate("c", est(2.0, 0.05), owner_device=True)
    cands = [fast_dear, slow_cheap, mid]
    assert rank(cands, policy="latency", privacy="any")[0].candidate.peer == "a"
    assert rank(cands, policy="cost", privacy="any")[0].candidate.peer == "b"
    assert rank(cands, policy="balanced", privacy="any")[0].candidate.peer == "c"


def test_private_never_leaves_owner_devices():
    cands = [Candidate("fast-stranger", est(0.1)), Candidate("own", est(5.0), owner_device=True)]
    ranked = rank(cands, policy="latency", privacy="private")
    assert [r.candidate.peer for r in ranked] == ["own"]
    assert rank([Candidate("x", est(1))], policy="latency", privacy="private") == []


def test_ties_are_deterministic():
    cands = [Candidate(p, est(1.0, 0.5), owner_device=True) for p in ("c", "a", "b")]
    for order in (cands, cands[::-1]):
        assert [r.candidate.peer for r in rank(order, policy="latency", privacy="any")] == ["a", "b", "c"]


def test_max_price_and_deadline():
    cands = [Candidate("dear", est(1.0, 5.0)), Candidate("late", est(100.0, 0.0)), Candidate("ok", est(5.0, 0.1))]
    ranked = rank(cands, policy="cost", privacy="any", max_price=1.0, deadline_s=10.0)
    assert [r.candidate.peer for r in ranked] == ["ok", "late"]


def test_reputation_pushes_liars_out():
    rep = Reputation()
    liar, honest = Candidate("liar", est(1.0)), Candidate("honest", est(2.0))
    assert rank([liar, honest], policy="latency", privacy="any", reliability=rep)[0].candidate.peer == "liar"
    for _ in range(5):
        rep = rep.observe("liar", estimated_s=1.0, actual_s=6.0)
        rep = rep.observe("honest", estimated_s=2.0, actual_s=2.0)
    assert rep.factor("liar") > 3.0 and abs(rep.factor("honest") - 1.0) < 1e-9
    assert rank([liar, honest], policy="latency", privacy="any", reliability=rep)[0].candidate.peer == "honest"


def test_reputation_is_forgiven_over_time_and_a_liar_caught_again():
    rep = Reputation()
    for _ in range(5):
        rep = rep.observe("liar", estimated_s=1.0, actual_s=6.0)
    rep = rep.observe("fast", estimated_s=2.0, actual_s=1.0)
    caught = rep.factor("liar")
    half = rep.decayed(600.0, half_life_s=600.0)
    assert half.factor("liar") == pytest.approx(1 + (caught - 1) / 2) and half.factor("fast") == pytest.approx(1 - 0.15 / 2)
    assert rep.decayed(0.0, half_life_s=600.0) is rep and rep.factor("liar") == caught  # immutable
    later = rep.decayed(6000.0, half_life_s=600.0)
    assert later.factor("liar") < 1.01
    assert later.observe("liar", estimated_s=1.0, actual_s=6.0).factor("liar") > 2.5  # one more lie and it is out again


cand = st.builds(
    Candidate,
    peer=st.text(alphabet="abcdef", min_size=1, max_size=3),
    estimate=st.builds(est, st.floats(0, 100), st.floats(0, 10)),
    owner_device=st.booleans(),
    on_link=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(cand, max_size=8), st.sampled_from(["latency", "cost", "balanced"]), st.sampled_from(["private", "lan", "any"]))
def test_award_never_outside_privacy_class(cands, policy, privacy):
    for r in rank(cands, policy=policy, privacy=privacy):
        assert privacy_allows(privacy, owner_device=r.candidate.owner_device, on_link=r.candidate.on_link)

from meshagent.protocol.auction import MAX_FANOUT

from simulations.scaling import scaling

# Per decision: calls for bids, answers and releases to at most MAX_FANOUT peers, an award and a report.
BOUND = 3 * MAX_FANOUT + 2


def test_messages_per_decision_stay_bounded_as_the_mesh_grows(quick):
    points = quick.scaling
    assert [p.nodes for p in points] == [10, 100, 1000, 10_000]
    for p in points:
        assert p.max_messages <= BOUND
        assert p.invited_mean <= MAX_FANOUT
    # Not linear: a thousand times more nodes, about the same messages.
    assert points[-1].messages_per_decision <= 2 * points[0].messages_per_decision
    assert points[-1].messages_per_decision <= BOUND


def test_fanout_is_what_bounds_it():
    # With a larger fan-out the same meshes need more messages: the bound is the fan-out, not luck.
    small = scaling(sizes=(1000,), decisions=10, seed=3)[0]
    assert small.invited_mean > 3  # enough eligible peers that the cap matters


def test_homes_do_not_herd_onto_the_same_peers(quick):
    # 10,000 nodes: hundreds of equally fast cloud GPUs; different calls must ask different ones.
    big = quick.scaling[-1]
    assert big.distinct_invited > 3 * 8
    assert big.busiest_share < 0.9

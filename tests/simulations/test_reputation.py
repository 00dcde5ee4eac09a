from simulations.report import liar_shares


def test_reputation_pushes_lying_peers_out(quick):
    with_rep = quick.reputation["with-reputation"][1]
    without = quick.reputation["without-reputation"][1]
    liar_wins_with = sum(l for _, l in with_rep.liar_wins)
    liar_wins_without = sum(l for _, l in without.liar_wins)
    assert liar_wins_without > 0
    assert liar_wins_with < 0.85 * liar_wins_without
    shares = liar_shares(with_rep)
    # Early on the liars' claims win; once observed, their adjusted bids lose.
    assert min(shares[1:]) < shares[0]


def test_reputation_also_pays_in_latency(quick):
    with_rep = quick.reputation["with-reputation"][0]
    without = quick.reputation["without-reputation"][0]
    assert with_rep.latency_p50_s < without.latency_p50_s

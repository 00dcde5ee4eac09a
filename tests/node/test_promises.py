"""Promises both ways: a bidder learning what its bids leave out, an auctioneer judging its winners."""

from __future__ import annotations

import pytest

from meshagent.node.promises import Awarded, OwnPromises, PeerPromises
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import BidderContext, CallForBids, Report, estimate_for
from meshagent.protocol.scoring import Estimate
from meshagent.protocol.signed import PeerId

WINNER, OTHER = PeerId("12D3KooWinner"), PeerId("12D3KooWother")


def _estimate(compute_s: float, transfer_s: float = 0.1) -> Estimate:
    return Estimate(transfer_s=transfer_s, queue_s=0.0, prefill_s=compute_s / 4, decode_s=3 * compute_s / 4, price=0.0)


def test_a_bidder_learns_the_fixed_cost_of_a_moved_step_from_its_reports() -> None:
    own = OwnPromises()
    assert own.fixed_s == 0.0
    for i, actual in enumerate((3.1, 2.9, 30.0, 3.1)):  # one step stalled behind other work
        fixed = own.fixed_s
        own.bid(f"a{i}", _estimate(1.0, transfer_s=0.1 + fixed), fixed)  # as the bid included it
        assert own.settle(f"a{i}", actual) == pytest.approx(1.1 + fixed)  # what the report says was promised
    assert own.fixed_s == pytest.approx(2.0)  # the median excess over compute and transfer, not the stalled step's
    # Steps faster than promised pull it down, never below zero.
    for i in range(9):
        own.bid(f"c{i}", _estimate(1.0), 0.0)
        own.settle(f"c{i}", 0.5)
    assert own.fixed_s == 0.0
    assert own.settle("never-bid", 5.0) == 0.0  # nothing promised, nothing learned


def test_the_fixed_cost_is_part_of_a_moved_bid_only() -> None:
    model = ModelAd("m", "m" * 64, 1, kind="llm", tags=("size=small",), prefill_tps=1000.0, decode_tps=100.0)
    call = CallForBids(auction_id="x", agent_id="a", home=PeerId("home"), owner=PeerId("home"), requirement="",
                       context_tokens=100, output_tokens=100, privacy="any", policy="latency", snapshot_bytes=0,
                       issued_at=0.0, bid_deadline=10.0)
    ctx = BidderContext(me=PeerId("me"), models=(model,), price_per_1k_tokens=0.0, slots=1, busy_s=0.0,
                        trusts_owner=False, home_on_link=True, path_bps=1e6, rtt_s=0.01, fixed_s=2.0)
    moved = estimate_for(call, model, ctx, staying=False)
    assert moved.transfer_s == pytest.approx(2.02) and moved.decode_s == pytest.approx(1.0)
    assert estimate_for(call, model, ctx, staying=True).transfer_s == 0.0


def test_only_the_winner_reports_once_and_not_faster_than_the_auctioneer_saw() -> None:
    peers = PeerPromises(0.0, half_life_s=600.0)
    peers.awarded("x", Awarded(WINNER, "agent", promised_s=1.0, at=100.0))
    peers.judge(OTHER, Report("x", OTHER, 1.0, 1.0), now=101.0)  # not the winner: ignored
    assert peers.pending == 1 and dict(peers.reputation) == {}
    peers.judge(WINNER, Report("x", WINNER, 1.0, 0.1), now=105.0)  # claims 0.1 s; 5 s passed here
    assert peers.pending == 0 and peers.reputation.factor(WINNER) == pytest.approx(0.7 + 0.3 * 2.0)  # seen, capped
    before = dict(peers.reputation)
    peers.judge(WINNER, Report("x", WINNER, 1.0, 1.0), now=106.0)  # twice: ignored
    assert dict(peers.reputation) == before


def test_a_silent_winner_is_judged_when_overdue_and_forgiven_with_time() -> None:
    peers = PeerPromises(0.0, half_life_s=10.0)
    peers.awarded("x", Awarded(WINNER, "agent", promised_s=2.0, at=0.0))
    peers.judge_silent(8.5, grace_s=1.0)  # 4 x 2 s + 1 s not yet passed
    assert peers.pending == 1
    peers.judge_silent(10.0, grace_s=1.0)
    assert peers.pending == 0 and peers.reputation.factor(WINNER) == pytest.approx(0.7 + 0.3 * 5.0)
    peers.judge_silent(20.0, grace_s=1.0)  # one half-life later
    assert peers.reputation.factor(WINNER) == pytest.approx(1.0 + 0.3 * 4.0 / 2)


def test_a_failed_handoff_leaves_nothing_to_report() -> None:
    peers = PeerPromises(0.0, half_life_s=600.0)
    peers.awarded("x", Awarded(WINNER, "agent", promised_s=1.0, at=0.0))
    peers.handoff_failed("agent")
    peers.judge_silent(1000.0, grace_s=1.0)
    assert peers.pending == 0 and dict(peers.reputation) == {}

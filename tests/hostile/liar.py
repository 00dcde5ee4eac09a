"""A hostile bidder for tests: the real node, with two lies patched in.

    python -m tests.hostile.liar FACTOR [--silent] join ...

Its bids claim every step takes 1/FACTOR of the time its own honest estimate says
(the node itself runs at its true speed, and keeps calibrating its honest estimate
from the steps it runs); with ``--silent`` it never reports how long a step it won
really took. Everything else — adverts, handoffs, the agents it
runs — is the real node's code, so the honest auctioneer meets it over real libp2p.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import meshagent.node.placement as placement
import meshagent.node.promises as promises
from meshagent.cli import main
from meshagent.protocol.auction import Bid
from meshagent.protocol.scoring import Estimate

_honest: dict[str, Estimate] = {}
"""The honest estimate behind each lie, which the node's own calibration keeps learning from."""


def _lying(factor: float):  # type: ignore[no-untyped-def]
    honest = placement.make_bid

    def make_bid(*args, **kwargs):  # type: ignore[no-untyped-def]
        answer, reservations = honest(*args, **kwargs)
        if isinstance(answer, Bid):
            _honest[answer.auction_id] = answer.estimate
            answer = replace(answer, transfer_s=answer.transfer_s / factor, queue_s=answer.queue_s / factor,
                             prefill_s=answer.prefill_s / factor, decode_s=answer.decode_s / factor)
        return answer, reservations

    return make_bid


def _remember_honestly():  # type: ignore[no-untyped-def]
    real = promises.OwnPromises.bid

    def bid(self, auction_id, estimate, fixed_s):  # type: ignore[no-untyped-def]
        real(self, auction_id, _honest.pop(auction_id, estimate), fixed_s)

    return bid


async def _never_report(self, agent_id: str) -> None:  # type: ignore[no-untyped-def]
    self.awards = {k: v for k, v in self.awards.items() if v[0].agent_id != agent_id}


if __name__ == "__main__":
    placement.make_bid = _lying(float(sys.argv[1]))
    promises.OwnPromises.bid = _remember_honestly()  # type: ignore[method-assign]
    args = sys.argv[2:]
    if args[:1] == ["--silent"]:
        placement.PlacementService.report_step = _never_report  # type: ignore[method-assign]
        args = args[1:]
    raise SystemExit(main(args))

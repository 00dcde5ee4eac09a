"""Promises made in auctions, both ways: this node's own, and those of the peers it awarded.

Its own: each bid this node makes is remembered until it reports the step it won,
and the report teaches it what its bids leave out — a moved step also costs
sealing, opening and resuming the agent, which no rate covers. That cost (the
median of recent reports' excess over the compute and transfer the bid
promised) goes into its next bids, so an honest bidder's promises bear out.

The peers': a winner's report, or its silence, is folded into its reliability
factor (:class:`~meshagent.protocol.scoring.Reputation`), and every factor
drifts back towards 1 with time. Time comes in as an argument.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Final

from meshagent.protocol.auction import Report
from meshagent.protocol.scoring import Estimate, Reputation
from meshagent.protocol.signed import PeerId

__all__ = ["Awarded", "OwnPromises", "PeerPromises"]

log = logging.getLogger(__name__)

_HISTORY: Final = 200
"""Promises remembered at most, either way (bids and awards that never led to a step are forgotten)."""
_OVERHEAD_WINDOW: Final = 9
_OVERHEAD_MAX_S: Final = 120.0
"""A report's excess is bounded: one wildly late step must not make every later bid absurd."""


class OwnPromises:
    """This node's bids until it reports on them, and the fixed cost of a moved step they taught it."""

    def __init__(self) -> None:
        self._bids: dict[str, tuple[float, float]] = {}
        """auction id -> (total seconds promised, fixed seconds included in it)."""
        self._excess: deque[float] = deque(maxlen=_OVERHEAD_WINDOW)

    @property
    def fixed_s(self) -> float:
        """Seconds a moved step has recently cost beyond what the bid's rates and transfer covered."""
        return max(0.0, statistics.median(self._excess)) if self._excess else 0.0

    def bid(self, auction_id: str, estimate: Estimate, fixed_s: float) -> None:
        """Remember a bid (``fixed_s``: the part of its transfer time that was :attr:`fixed_s`)."""
        self._bids[auction_id] = (estimate.total_s, fixed_s if estimate.transfer_s > 0 else 0.0)
        while len(self._bids) > _HISTORY:
            self._bids.pop(next(iter(self._bids)))

    def settle(self, auction_id: str, actual_s: float) -> float:
        """The step of this auction took ``actual_s`` from the award: learn from it; the seconds promised."""
        total, fixed = self._bids.pop(auction_id, (0.0, 0.0))
        if total > 0 and fixed >= 0:
            excess = actual_s - (total - fixed)
            self._excess.append(min(max(excess, -_OVERHEAD_MAX_S), _OVERHEAD_MAX_S))
        return total


@dataclass(frozen=True, slots=True)
class Awarded:
    """An auction this node awarded to a peer, until the winner reports on the step."""

    winner: PeerId
    agent_id: str
    promised_s: float
    at: float

    def overdue(self, now: float, grace_s: float) -> bool:
        """No report after 4x the promise plus ``grace_s``: a winner that never reports must not
        keep a clean record, so it is judged as having taken at least that long."""
        return now - self.at > 4 * self.promised_s + grace_s


class PeerPromises:
    """The promises of the peers this node awarded steps to, and its reputation table."""

    def __init__(self, now: float, *, half_life_s: float) -> None:
        self.reputation = Reputation()
        self._half_life_s = half_life_s
        self._forgiven_at = now
        self._awarded: dict[str, Awarded] = {}

    @property
    def pending(self) -> int:
        """Awards whose winner has not reported yet."""
        return len(self._awarded)

    def awarded(self, auction_id: str, awarded: Awarded) -> None:
        self._awarded[auction_id] = awarded
        while len(self._awarded) > _HISTORY:  # awards never reported on (no step ran) are forgotten
            self._awarded.pop(next(iter(self._awarded)))

    def judge(self, signer: PeerId, report: Report, now: float) -> None:
        """A winner's report of its step: fold it into its reliability factor.

        Only the winner of an auction this node awarded may report on it, once; and
        the time this node itself saw pass before the report arrived bounds the claim
        from below, so a winner cannot report itself faster than it visibly was.
        """
        awarded = self._awarded.get(report.auction_id)
        if awarded is None or awarded.winner != signer or report.bidder != signer:
            log.info("ignored a report from %s for auction %s", signer, report.auction_id)
            return
        del self._awarded[report.auction_id]
        seen = now - awarded.at
        actual = max(report.actual_s, min(seen, report.actual_s * 10 + 1.0))
        self.observe(awarded.winner, awarded.promised_s, actual, now)
        log.info("peer %s promised %.2f s, took %.2f s: reliability factor now %.2f", awarded.winner,
                 awarded.promised_s, actual, self.reputation.factor(awarded.winner))

    def judge_silent(self, now: float, grace_s: float) -> None:
        """Bring the reputation up to ``now``: winners that never reported on a step are judged as
        slow as the time that has passed, and every factor has drifted back towards 1 meanwhile."""
        self._forgive(now)
        for auction_id, awarded in list(self._awarded.items()):
            if awarded.overdue(now, grace_s):
                del self._awarded[auction_id]
                self.observe(awarded.winner, awarded.promised_s, now - awarded.at, now)
                log.info("peer %s never reported on auction %s (promised %.2f s, %.0f s ago): reliability factor now %.2f",
                         awarded.winner, auction_id, awarded.promised_s, now - awarded.at,
                         self.reputation.factor(awarded.winner))

    def _forgive(self, now: float) -> None:
        """Draw every factor back towards 1 for the time since the last look (:meth:`Reputation.decayed`)."""
        self.reputation = self.reputation.decayed(now - self._forgiven_at, half_life_s=self._half_life_s)
        self._forgiven_at = now

    def handoff_failed(self, agent_id: str) -> None:
        """The agent never reached the winner of its step: nothing for the winner to report."""
        for auction_id, awarded in list(self._awarded.items()):
            if awarded.agent_id == agent_id:
                del self._awarded[auction_id]

    def observe(self, peer: PeerId, estimated_s: float, actual_s: float, now: float) -> None:
        """Fold a finished step's estimate-vs-actual into the peer's reliability factor."""
        self._forgive(now)  # the time before this observation, not after it
        self.reputation = self.reputation.observe(peer, estimated_s, actual_s)

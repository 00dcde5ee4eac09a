"""Scoring bids: privacy as a hard filter, then the agent's policy, then a deterministic tie-break.

Everything here is pure and shared by the node and ``simulations/``.

Policies
--------
``latency``
    minimise the expected completion time (transfer + queue + prefill + decode),
    after each bidder's reliability factor is applied.
``cost``
    minimise the price; completion time breaks ties.
``balanced``
    minimise ``t + p / v`` where ``t`` is a bid's adjusted time in seconds, ``p``
    its price and ``v`` the value of a second of waiting (:data:`TIME_VALUE`,
    price units per second; an argument of :func:`rank`). With the default, a
    bid that saves ten seconds may cost 0.1 more.

Ties are broken by (adjusted time, price, peer id), so every node reaches the
same order from the same bids.

Reputation
----------
Each node keeps its own :class:`Reputation`: for every peer, an exponentially
weighted mean of ``actual / estimated`` step time. It multiplies that peer's
future time estimates, so a peer that promises 1 s and takes 3 s soon bids as if
it had said 3 s. No central authority is involved.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

__all__ = [
    "Policy",
    "PrivacyClass",
    "POLICIES",
    "PRIVACY_CLASSES",
    "TIME_VALUE",
    "Estimate",
    "Candidate",
    "Ranked",
    "privacy_allows",
    "rank",
    "Reputation",
]


class Policy(enum.StrEnum):
    LATENCY = "latency"
    COST = "cost"
    BALANCED = "balanced"


class PrivacyClass(enum.StrEnum):
    PRIVATE = "private"
    """Only the owner's own devices (keys in the trust store, added by pairing)."""
    LAN = "lan"
    """Peers reached directly on the local link (found by mDNS, no relays), and own devices."""
    ANY = "any"


POLICIES: Final = tuple(p.value for p in Policy)
PRIVACY_CLASSES: Final = tuple(p.value for p in PrivacyClass)
TIME_VALUE: Final = 0.01
"""Default value of one second of waiting, in price units, for the balanced policy."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A bidder's breakdown of how long the step would take there, and its price."""

    transfer_s: float
    queue_s: float
    prefill_s: float
    decode_s: float
    price: float

    @property
    def total_s(self) -> float:
        return self.transfer_s + self.queue_s + self.prefill_s + self.decode_s

    def scaled(self, factor: float) -> Estimate:
        """Times multiplied by ``factor`` (a reliability factor); price unchanged."""
        return replace(
            self,
            transfer_s=self.transfer_s * factor,
            queue_s=self.queue_s * factor,
            prefill_s=self.prefill_s * factor,
            decode_s=self.decode_s * factor,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One bid as the auctioneer sees it, with what it knows about the bidder."""

    peer: str
    estimate: Estimate
    owner_device: bool = False
    """The bidder's key is in the agent owner's trust store."""
    on_link: bool = False
    """The bidder was reached directly on the local link."""


@dataclass(frozen=True, slots=True)
class Ranked:
    candidate: Candidate
    adjusted: Estimate
    score: float


def privacy_allows(privacy: PrivacyClass | str, *, owner_device: bool, on_link: bool) -> bool:
    """Whether a step of this privacy class may run on a peer with these properties."""
    match PrivacyClass(privacy):
        case PrivacyClass.PRIVATE:
            return owner_device
        case PrivacyClass.LAN:
            return owner_device or on_link
        case PrivacyClass.ANY:
            return True


def rank(
    candidates: Iterable[Candidate],
    *,
    policy: Policy | str,
    privacy: PrivacyClass | str,
    reliability: Mapping[str, float] | None = None,
    max_price: float | None = None,
    deadline_s: float | None = None,
    time_value: float = TIME_VALUE,
) -> list[Ranked]:
    """Eligible candidates, best first. Never returns one outside the privacy class.

    ``max_price`` drops bids above it. ``deadline_s`` is soft: bids that miss it
    rank after every bid that meets it (better late than never).
    """
    reliability = reliability or {}
    eligible = [
        c
        for c in candidates
        if privacy_allows(privacy, owner_device=c.owner_device, on_link=c.on_link)
        and (max_price is None or c.estimate.price <= max_price)
    ]
    if not eligible:
        return []
    adjusted = [(c, c.estimate.scaled(max(reliability.get(c.peer, 1.0), 1e-3))) for c in eligible]
    ranked = []
    for c, a in adjusted:
        match Policy(policy):
            case Policy.LATENCY:
                score = a.total_s
            case Policy.COST:
                score = a.price
            case Policy.BALANCED:
                score = a.total_s + a.price / time_value
        late = deadline_s is not None and a.total_s > deadline_s
        ranked.append((late, score, a.total_s, a.price, c.peer, Ranked(c, a, score)))
    ranked.sort(key=lambda r: r[:5])
    return [r[-1] for r in ranked]


class Reputation(Mapping[str, float]):
    """Per-peer reliability factors (>= ~1 means slower than promised). Immutable."""

    __slots__ = ("_factors", "_alpha", "_lo", "_hi")

    def __init__(
        self,
        factors: Mapping[str, float] | None = None,
        *,
        alpha: float = 0.3,
        lo: float = 0.5,
        hi: float = 20.0,
    ) -> None:
        self._factors = MappingProxyType(dict(factors or {}))
        self._alpha, self._lo, self._hi = alpha, lo, hi

    def __getitem__(self, peer: str) -> float:
        return self._factors[peer]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._factors)

    def __len__(self) -> int:
        return len(self._factors)

    def factor(self, peer: str) -> float:
        return self._factors.get(peer, 1.0)

    def observe(self, peer: str, estimated_s: float, actual_s: float) -> Reputation:
        """Fold one step's estimate-vs-actual into ``peer``'s factor."""
        if estimated_s <= 0 or actual_s < 0:
            return self
        ratio = min(max(actual_s / estimated_s, self._lo), self._hi)
        old = self._factors.get(peer, 1.0)
        new = (1 - self._alpha) * old + self._alpha * ratio
        factors = dict(self._factors)
        factors[peer] = new
        return Reputation(factors, alpha=self._alpha, lo=self._lo, hi=self._hi)

    def decayed(self, elapsed_s: float, *, half_life_s: float) -> Reputation:
        """Every factor drawn back towards 1, halving its distance from 1 each ``half_life_s``.

        A factor only changes when its peer wins, so without this a peer that stopped
        winning would keep its factor for ever: an honest peer after a bad spell, or
        after it improved. A liar forgiven this way is caught again at its next win.
        """
        if elapsed_s <= 0 or not self._factors:
            return self
        keep = 0.5 ** (elapsed_s / half_life_s)
        factors = {p: 1.0 + (f - 1.0) * keep for p, f in self._factors.items()}
        return Reputation(factors, alpha=self._alpha, lo=self._lo, hi=self._hi)


def best(ranked: Sequence[Ranked]) -> Ranked | None:
    return ranked[0] if ranked else None

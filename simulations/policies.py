"""Placement policies: meshagent's auction (the real protocol code) and the baselines.

``meshagent-*``
    the contract-net auction of :mod:`meshagent.protocol.auction`: bounded
    fan-out (:func:`select_bidders`), each bidder's :func:`make_bid` with its
    reservations, the home's :class:`Auction` ranking with privacy as a hard
    filter and the owner's :class:`Reputation`, then award and releases.
``local-only``
    every step on the device the owner holds, with its best fitting model.
``cloud-only``
    every step on a rented cloud GPU (the least-loaded one, as a provider's
    load balancer would), whatever the step's privacy class.
``nearest-peer``
    the classic cyber-foraging surrogate: offload to the nearest other device
    that holds a fitting model, by round-trip time, privacy-unaware.
``oracle``
    perfect knowledge and no contention: each step on the privacy-allowed device
    that would finish it soonest with free KV, no transfer, no queue, no
    auction. A lower bound on the latency of every privacy-respecting policy.

The baselines are not meshagent decisions and so are written here; they reuse
the protocol's :func:`best_model` to pick a model on a device.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import (
    MAX_FANOUT,
    SIZE_ORDER,
    Auction,
    Bid,
    CallForBids,
    Decline,
    ModelRequirement,
    best_model,
    make_bid,
    select_bidders,
)
from meshagent.protocol.scoring import Policy, Reputation, privacy_allows
from meshagent.protocol.signed import PeerId

from simulations.world import Device, World

__all__ = [
    "PolicySpec",
    "POLICIES",
    "Placement",
    "BID_WINDOW_S",
    "PROCESSING_S",
    "forage",
    "local_only",
    "cloud_only",
    "nearest_peer",
    "oracle_bound",
    "fallback_model",
    "relax",
]

_SIZE_BOUND: Final = re.compile(r"^size>=(\w+)$")
BID_WINDOW_S: Final = 0.5
"""Bids arriving later than this after the call are ignored (the call's bid deadline)."""
PROCESSING_S: Final = 0.002
"""A bidder's time to check a call and compute its bid."""


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    kind: str
    """``forage``, ``local``, ``cloud``, ``nearest`` or ``oracle``."""
    policy: Policy = Policy.BALANCED
    reputation: bool = True
    fanout: int = MAX_FANOUT


POLICIES: Final[tuple[PolicySpec, ...]] = (
    PolicySpec("local-only", "local"),
    PolicySpec("cloud-only", "cloud"),
    PolicySpec("nearest-peer", "nearest"),
    PolicySpec("meshagent-latency", "forage", Policy.LATENCY),
    PolicySpec("meshagent-cost", "forage", Policy.COST),
    PolicySpec("meshagent-balanced", "forage", Policy.BALANCED),
    PolicySpec("oracle", "oracle"),
)


@dataclass(frozen=True, slots=True)
class Placement:
    device: PeerId | None
    model: ModelAd | None
    """The advertised model it will run (None when nobody can take the step)."""
    wait_s: float = 0.0
    """Time spent deciding (collecting bids)."""
    messages: int = 0
    """Auction messages on the network for this decision."""
    estimated_s: float | None = None
    """The winning bid's own time estimate, before reputation (what the winner is judged on)."""
    invited: tuple[PeerId, ...] = ()


def relax(requirement: str) -> str:
    """The next weaker requirement: one size down (``size>=xl`` -> ``size>=large``), then any LLM."""
    m = _SIZE_BOUND.match(requirement)
    if m is None or m.group(1) not in SIZE_ORDER or SIZE_ORDER.index(m.group(1)) == 0:
        return ""
    return f"size>={SIZE_ORDER[SIZE_ORDER.index(m.group(1)) - 1]}"


def fallback_model(dev: Device, requirement: str) -> tuple[ModelAd, bool] | None:
    """The device's best model for ``requirement``, relaxed size by size if need be (degraded=True)."""
    req, degraded = requirement, False
    while True:
        m = best_model(dev.ads, ModelRequirement(req))
        if m is not None:
            return m, degraded
        if not req:
            return None
        req, degraded = relax(req), True


def forage(
    world: World,
    call: CallForBids,
    owner: int,
    spec: PolicySpec,
    reputation: Reputation,
) -> Placement:
    """One auction, exactly as a home node runs it, with bidders answering through make_bid."""
    now = call.issued_at
    owner_devices = world.owner_devices(owner)
    on_link = world.on_link(owner)
    invited = select_bidders(
        call, world.adverts(), owner_devices=owner_devices, on_link=on_link,
        rtt_ms=world.rtt_ms(call.home), fanout=spec.fanout,
        reliability=reputation if spec.reputation else None,
    )
    auction = Auction(call, invited, owner_devices=owner_devices, on_link=on_link)
    answers: list[tuple[float, PeerId, Bid | Decline]] = []
    for peer in (call.home, *invited):
        dev = world.devices[peer]
        if not dev.alive:
            continue  # left the mesh; its advert has not expired yet: it never answers
        ctx = world.bidder_context(dev, call, owner)
        answer, dev.reservations = make_bid(call, ctx, dev.reservations, now=now)
        rtt = 0.0 if peer == call.home else world.path(call.home, peer)[1] + PROCESSING_S
        answers.append((now + rtt, peer, answer))
    answers.sort(key=lambda a: (a[0], a[1]))
    everyone = len(answers) == len(invited) + 1
    close = min(max(a[0] for a in answers), call.bid_deadline) if everyone else call.bid_deadline
    remote_answers = 0
    for at, peer, answer in answers:
        if at > call.bid_deadline:
            continue
        remote_answers += peer != call.home
        if isinstance(answer, Bid):
            auction.on_bid(peer, answer, at)
        else:
            auction.on_decline(peer, answer)
    decision = auction.decide(reliability=reputation if spec.reputation else None)
    award, releases = auction.award(decision, now=close)
    for peer, release in releases:
        world.devices[peer].reservations = world.devices[peer].reservations.release(release.auction_id)
    remote_winner = decision.winner is not None and decision.winner != call.home
    messages = (
        len(invited)  # calls for bids
        + remote_answers  # bids and declines
        + sum(1 for p, _ in releases if p != call.home)  # releases
        + (2 if remote_winner else 0)  # award, and the winner's report afterwards
    )
    if award is None or decision.winner is None:
        return Placement(None, None, close - now, messages, None, tuple(invited))
    bid = next(b for b in decision.bids if b.bidder == decision.winner)
    model = next(m for m in world.devices[decision.winner].ads if m.sha256 == bid.model_sha256)
    return Placement(decision.winner, model, close - now, messages, bid.estimate.total_s, tuple(invited))


def local_only(world: World, requirement: str, held: Device) -> tuple[Placement, bool]:
    choice = fallback_model(held, requirement)
    if choice is None:
        return Placement(None, None), False
    return Placement(held.peer, choice[0]), choice[1]


def cloud_only(world: World, requirement: str) -> tuple[Placement, bool]:
    req = ModelRequirement(requirement)
    clouds = [d for d in world.devices.values() if d.alive and d.role == "cloud_gpu"]
    fitting = [(d.outstanding_s / d.cls.slots, d.peer, m) for d in clouds if (m := best_model(d.ads, req)) is not None]
    if fitting:
        _, peer, m = min(fitting, key=lambda f: (f[0], f[1]))
        return Placement(peer, m), False
    if clouds:
        d = min(clouds, key=lambda d: (d.outstanding_s / d.cls.slots, d.peer))
        choice = fallback_model(d, requirement)
        if choice is not None:
            return Placement(d.peer, choice[0]), True
    return Placement(None, None), False


def nearest_peer(world: World, requirement: str, held: Device) -> tuple[Placement, bool]:
    req = ModelRequirement(requirement)
    rtt = world.rtt_ms(held.peer)
    fitting = [
        (rtt[d.peer], d.peer, m)
        for d in world.devices.values()
        if d.alive and d.peer != held.peer and (m := best_model(d.ads, req)) is not None
    ]
    if not fitting:
        return local_only(world, requirement, held)
    _, peer, m = min(fitting, key=lambda f: (f[0], f[1]))
    return Placement(peer, m), False


def oracle_bound(
    world: World, requirement: str, privacy: str, owner: int, fresh_tokens: int, output_tokens: int
) -> tuple[Device, ModelAd, float, bool] | None:
    """The soonest any privacy-allowed device could finish the step, with perfect knowledge.

    Every device that is ever part of the mesh counts (churn ignored), with its true
    speed, the KV of everything before the step for free, no transfer and no queue.
    """
    owned, on_link = world.owner_devices(owner), world.on_link(owner)
    allowed = [
        d for d in world.devices.values()
        if privacy_allows(privacy, owner_device=d.peer in owned, on_link=d.peer in on_link)
    ]
    wanted, degraded = requirement, False
    while True:
        best: tuple[float, PeerId, Device, ModelAd] | None = None
        for d in allowed:
            choices: Mapping[str, ModelAd] = {m.sha256: d.true_model(m) for m in d.ads}
            req = ModelRequirement(wanted)
            for m in choices.values():
                if not req.satisfied_by(m):
                    continue
                pp, tg = m.prefill_tps or 50.0, m.decode_tps or 5.0
                t = fresh_tokens / pp + output_tokens / tg
                if best is None or (t, d.peer) < (best[0], best[1]):
                    best = (t, d.peer, d, m)
        if best is not None:
            return best[2], best[3], best[0], degraded
        if not wanted:
            return None
        wanted, degraded = relax(wanted), True


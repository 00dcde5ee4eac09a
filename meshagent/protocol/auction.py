"""Cyber-foraging auctions (contract net), as pure functions and a state machine.

One auction places one LLM step of one agent::

    home                                   bidders (bounded fan-out)
     │ select_bidders(adverts, call)  ──►  only peers whose adverts could do it
     │ CallForBids (signed)           ──►  make_bid(): refuse what privacy forbids,
     │                                ◄──  Bid (signed, estimate broken down) + reservation
     │ Auction.on_bid()/decide()           privacy filter, policy, deterministic ties
     │ Award (signed) to the winner   ──►  keeps its reservation; the handoff follows
     │ Release to the others          ──►  drop their reservations

The home node always bids for itself (staying costs no transfer). Every time and
random value comes in as an argument; every message is a frozen dataclass with a
signed encoding, checked before decoding like adverts are
(:mod:`meshagent.protocol.auction_messages`). Model requirements are parsed by
:mod:`meshagent.protocol.requirement`.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from meshagent.errors import LocalProtocolError
from meshagent.protocol.advert import Advert, ModelAd
from meshagent.protocol.auction_messages import (
    MAX_MESSAGE_BYTES,
    MESSAGE_KINDS as _KINDS,
    Award,
    Bid,
    CallForBids,
    Decline,
    Message,
    Release,
    Report,
    decode,
    encode,
)
from meshagent.protocol.requirement import SIZE_ORDER, ModelRequirement, best_model, model_size
from meshagent.protocol.scoring import Candidate, Estimate, Ranked, privacy_allows, rank
from meshagent.protocol.signed import PeerId

__all__ = [
    "SIZE_ORDER",
    "MAX_FANOUT",
    "MAX_MESSAGE_BYTES",
    "model_size",
    "Message",
    "ModelRequirement",
    "best_model",
    "CallForBids",
    "Bid",
    "Decline",
    "Award",
    "Release",
    "Report",
    "BidderContext",
    "Reservations",
    "select_bidders",
    "uses_kv",
    "prefill_tokens",
    "estimate_for",
    "make_bid",
    "StepSituation",
    "why_auction",
    "AuctionState",
    "Decision",
    "Auction",
    "encode",
    "decode",
]

MAX_FANOUT: Final = 8
"""Most peers a call for bids goes to: per-decision cost stays bounded as the mesh grows."""


# --- bidding -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservations:
    """Capacity a bidder promised: auction id → (expiry, seconds of work). Immutable."""

    held: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def active(self, now: float) -> Reservations:
        return Reservations({k: v for k, v in self.held.items() if v[0] > now})

    def reserve(self, auction_id: str, until: float, work_s: float) -> Reservations:
        held = dict(self.held)
        held[auction_id] = (until, work_s)
        return Reservations(held)

    def extend(self, auction_id: str, until: float) -> Reservations:
        if auction_id not in self.held:
            return self
        held = dict(self.held)
        held[auction_id] = (until, held[auction_id][1])
        return Reservations(held)

    def release(self, auction_id: str) -> Reservations:
        return Reservations({k: v for k, v in self.held.items() if k != auction_id})

    def work_s(self, now: float) -> float:
        return sum(w for until, w in self.held.values() if until > now)


@dataclass(frozen=True, slots=True)
class BidderContext:
    """What a bidder knows when it answers a call: about itself and about the caller."""

    me: PeerId
    models: tuple[ModelAd, ...]
    price_per_1k_tokens: float
    slots: int
    """Steps it can run at once."""
    busy_s: float
    """Seconds of work already queued or running (beyond free slots it is queueing)."""
    trusts_owner: bool
    """The agent owner is in this node's trust store (paired)."""
    home_on_link: bool
    """The home node is reached directly on the local link."""
    path_bps: float
    """Measured (or assumed) bandwidth from the home node, bytes per second."""
    rtt_s: float
    on_battery: bool = False
    battery_percent: float | None = None
    accept_on_battery_below: float = 20.0
    """Below this battery level the node refuses work for others."""
    hot: bool = False
    """A hot device refuses work for others."""
    cached_model_sha256: str = ""
    """A model for which this node still holds a KV prefix of the agent's context (it hosted the agent before)."""
    cached_tokens: int = 0
    """How many leading context tokens that cache covers: only the rest needs prefilling here."""
    tool_memory_bytes: int = 1 << 30
    """The most memory this node lets one WASI tool sandbox use."""
    tool_fuel: int = 100_000_000_000
    """The most fuel this node lets one WASI tool run use."""
    fixed_s: float = 0.0
    """Seconds a step moved here has cost beyond its transfer and compute (sealing, opening,
    resuming): learned by the bidder from its own reports, and part of its transfer time."""


def uses_kv(call: CallForBids, model: ModelAd, ctx: BidderContext, *, staying: bool) -> bool:
    """Whether the step would run from the agent's KV cache on this bidder.

    Only a bidder holding the same model can use it. The home always does (the cache
    is already there); a peer takes it only when moving ``kv_bytes`` is quicker than
    recomputing the tokens it covers.
    """
    if not call.kv_model_sha256 or call.kv_model_sha256 != model.sha256:
        return False
    if staying:
        return True
    covered = max(call.context_tokens - call.fresh_tokens, 0)
    return call.kv_bytes / max(ctx.path_bps, 1.0) <= covered / (model.prefill_tps or 50.0)


def prefill_tokens(call: CallForBids, model: ModelAd, ctx: BidderContext, *, staying: bool) -> int:
    """Context tokens the bidder must prefill: those no usable KV cache covers.

    A cache comes with the agent (:func:`uses_kv`) or is still held by a node that
    hosted the agent before: agent contexts only grow, so its prefix stays valid.
    """
    todo = call.context_tokens
    if uses_kv(call, model, ctx, staying=staying):
        todo = min(call.fresh_tokens, todo)
    if ctx.cached_tokens and ctx.cached_model_sha256 == model.sha256:
        todo = min(todo, max(call.context_tokens - ctx.cached_tokens, 0))
    return todo


def estimate_for(call: CallForBids, model: ModelAd, ctx: BidderContext, *, staying: bool) -> Estimate:
    """A bidder's estimate for running the step with ``model``; ``staying`` = the home bidding for itself."""
    prefill_tps = model.prefill_tps or 50.0
    decode_tps = model.decode_tps or 5.0
    has_kv = uses_kv(call, model, ctx, staying=staying)
    prefilled = prefill_tokens(call, model, ctx, staying=staying)
    moved = call.snapshot_bytes + (call.kv_bytes if has_kv else 0)
    transfer = 0.0 if staying else ctx.rtt_s * 2 + moved / max(ctx.path_bps, 1.0) + max(ctx.fixed_s, 0.0)
    queue = max(0.0, ctx.busy_s) / max(ctx.slots, 1)
    prefill = prefilled / prefill_tps
    decode = call.output_tokens / decode_tps
    price = (call.output_tokens + prefilled * 0.1) / 1000.0 * ctx.price_per_1k_tokens
    return Estimate(transfer_s=transfer, queue_s=queue, prefill_s=prefill, decode_s=decode, price=price)


def make_bid(
    call: CallForBids,
    ctx: BidderContext,
    reservations: Reservations,
    *,
    now: float,
    bid_ttl_s: float = 5.0,
) -> tuple[Bid | Decline, Reservations]:
    """Answer a call for bids: a bid (and a reservation of the capacity bid) or a reasoned decline."""
    staying = ctx.me == call.home

    def decline(reason: str) -> tuple[Decline, Reservations]:
        return Decline(call.auction_id, ctx.me, reason), reservations

    if call.bid_deadline < now:
        return decline("expired")
    # Staying is exempt only on the owner's own device: an agent that moved to a
    # stranger for a public step must not keep its next private step there.
    if not (staying and ctx.me == call.owner) and not privacy_allows(
        call.privacy, owner_device=ctx.trusts_owner, on_link=ctx.home_on_link
    ):
        return decline(f"privacy: may not take a {call.privacy} step")
    if not staying and ctx.on_battery and (ctx.battery_percent or 0.0) < ctx.accept_on_battery_below:
        return decline("on battery")
    if not staying and ctx.hot:
        return decline("hot")
    if call.tool_memory_bytes > ctx.tool_memory_bytes or call.tool_fuel > ctx.tool_fuel:
        return decline(f"tools: cannot give a tool {call.tool_memory_bytes} bytes of memory and {call.tool_fuel} fuel")
    model = best_model(ctx.models, call.need)
    if model is None:
        return decline(f"no model for {call.requirement or 'an LLM'}")
    reservations = reservations.active(now)
    est = estimate_for(call, model, replace(ctx, busy_s=ctx.busy_s + reservations.work_s(now)), staying=staying)
    if call.max_price is not None and est.price > call.max_price:
        return decline("above max price")
    expires = now + bid_ttl_s
    energy = "mains" if not ctx.on_battery else f"battery {ctx.battery_percent or 0:.0f}%"
    bid = Bid(
        auction_id=call.auction_id,
        bidder=ctx.me,
        model_name=model.name,
        model_sha256=model.sha256,
        transfer_s=est.transfer_s,
        queue_s=est.queue_s,
        prefill_s=est.prefill_s,
        decode_s=est.decode_s,
        price=est.price,
        expires_at=expires,
        energy=energy,
    )
    return bid, reservations.reserve(call.auction_id, expires, est.prefill_s + est.decode_s)


# --- when to hold an auction -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepSituation:
    """What the agent's current node knows when an LLM step comes up."""

    forced: bool = False
    """The owner asked for it (``meshagent migrate AGENT --auction``)."""
    requirement: str = ""
    has_model: bool = True
    """This node holds a model meeting the step's requirement."""
    private_away: bool = False
    """The step is private and this node is not one of the owner's devices."""
    on_battery: bool = False
    battery_percent: float | None = None
    hot: bool = False
    """The device is hot (thermal sensors at their high mark)."""
    deadline_s: float | None = None
    """The step's deadline, seconds from now."""
    local_estimate_s: float | None = None
    """This node's own estimate for the step (the bid it would make for itself)."""
    won_here: bool = False
    """This node won an auction for this step (the agent came here to run it)."""


def why_auction(s: StepSituation, *, battery_floor: float = 20.0) -> str | None:
    """Why the step should be auctioned, or ``None`` to run it here.

    In order: an explicit request; no model here; a private step away from the
    owner's devices; a battery below ``battery_floor`` percent; a hot device; a
    deadline this node's own estimate misses. The last three are soft: a node that
    won the step's auction runs it (else an agent whose deadline no node can meet
    would move on for ever).
    """
    if s.forced:
        return "explicit request (migrate --auction)"
    if not s.has_model:
        return f"this node holds no model for {s.requirement or 'an LLM step'!r}"
    if s.private_away:
        return "private step away from the owner's devices"
    if s.won_here:
        return None
    if s.on_battery and (s.battery_percent or 0.0) < battery_floor:
        return f"on battery at {s.battery_percent or 0.0:.0f}%"
    if s.hot:
        return "the device is hot"
    if s.deadline_s is not None and s.local_estimate_s is not None and s.local_estimate_s > s.deadline_s:
        return f"deadline {s.deadline_s:.2f} s cannot be met here (expected {s.local_estimate_s:.2f} s)"
    return None


# --- the auctioneer ------------------------------------------------------------


def select_bidders(
    call: CallForBids,
    adverts: Mapping[PeerId, Advert],
    *,
    owner_devices: frozenset[PeerId],
    on_link: frozenset[PeerId],
    rtt_ms: Mapping[PeerId, float] | None = None,
    fanout: int = MAX_FANOUT,
    reliability: Mapping[str, float] | None = None,
) -> list[PeerId]:
    """The peers worth asking: their advert holds a fitting model and privacy allows them.

    At most ``fanout`` peers, preferring the fastest advertised decoders and
    then the nearest, so the cost of a decision does not grow with the mesh.
    Remaining ties (a rack of identical cloud GPUs) are broken by a hash of the
    auction id and the peer: deterministic for one call, but different calls
    ask different peers instead of every home herding onto the same few.
    An advertised speed is divided by the peer's ``reliability`` factor (the
    home's :class:`~meshagent.protocol.scoring.Reputation`), so a peer known to
    overstate stops taking a fan-out slot from honest ones.
    """
    req = call.need
    rtt_ms = rtt_ms or {}
    reliability = reliability or {}
    scored = []
    for peer, ad in adverts.items():
        if peer == call.home:
            continue
        if not privacy_allows(call.privacy, owner_device=peer in owner_devices, on_link=peer in on_link):
            continue
        model = best_model(ad.models, req)
        if model is None:
            continue
        if ad.hardware.on_battery and (ad.hardware.battery_percent or 0.0) < 20.0:
            continue
        speed = (model.decode_tps or 0.0) / max(reliability.get(peer, 1.0), 1e-3)
        spread = hashlib.sha256(f"{call.auction_id}\0{peer}".encode()).digest()
        scored.append((-speed, rtt_ms.get(peer, 1e6), spread, peer))
    scored.sort()
    return [p for *_, p in scored[:fanout]]


class AuctionState(enum.Enum):
    COLLECTING = "collecting"
    DECIDED = "decided"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Decision:
    winner: PeerId | None
    ranked: tuple[Ranked, ...]
    reason: str
    bids: tuple[Bid, ...]
    declines: tuple[Decline, ...]


class Auction:
    """The home node's side of one auction.

    Transitions: COLLECTING --decide()--> DECIDED --close()--> CLOSED. Bids from
    peers that were not invited, for another auction, after the bid deadline,
    expired, or repeated are ignored (returned False). A bid from outside the
    privacy class can arrive (a misconfigured or hostile peer) but is never
    ranked: :func:`~meshagent.protocol.scoring.rank` filters it.
    """

    def __init__(
        self,
        call: CallForBids,
        invited: Sequence[PeerId],
        *,
        owner_devices: frozenset[PeerId],
        on_link: frozenset[PeerId],
    ) -> None:
        self.call = call
        self.invited = frozenset(invited) | {call.home}
        self.state = AuctionState.COLLECTING
        # The home counts as the owner's device only when it is the owner's device
        # (or the caller says so): an agent may be hosted by a peer for a public step.
        own_home = frozenset({call.home}) if call.home == call.owner else frozenset()
        self._owner_devices = owner_devices | own_home
        self._on_link = on_link | own_home
        self._bids: dict[PeerId, Bid] = {}
        self._declines: dict[PeerId, Decline] = {}

    @property
    def bids(self) -> tuple[Bid, ...]:
        return tuple(self._bids.values())

    def answered(self) -> bool:
        return set(self._bids) | set(self._declines) >= self.invited

    def on_bid(self, signer: PeerId, bid: Bid, now: float) -> bool:
        if self.state is not AuctionState.COLLECTING:
            return False
        if (
            bid.auction_id != self.call.auction_id
            or signer != bid.bidder
            or bid.bidder not in self.invited
            or bid.bidder in self._bids
            or now > self.call.bid_deadline
            or bid.expires_at < now
        ):
            return False
        self._bids[bid.bidder] = bid
        return True

    def on_decline(self, signer: PeerId, decline: Decline) -> bool:
        if self.state is not AuctionState.COLLECTING or decline.auction_id != self.call.auction_id:
            return False
        if signer != decline.bidder or decline.bidder not in self.invited:
            return False
        self._declines[decline.bidder] = decline
        return True

    def decide(self, *, reliability: Mapping[str, float] | None = None, exclude: frozenset[PeerId] = frozenset()) -> Decision:
        """Rank the bids and name a winner (None when no eligible bid arrived)."""
        if self.state is AuctionState.CLOSED:
            raise LocalProtocolError("auction already closed")
        self.state = AuctionState.DECIDED
        candidates = [
            Candidate(
                peer=b.bidder,
                estimate=b.estimate,
                owner_device=b.bidder in self._owner_devices,
                on_link=b.bidder in self._on_link,
            )
            for b in self._bids.values()
            if b.bidder not in exclude
        ]
        ranked = rank(
            candidates,
            policy=self.call.policy,
            privacy=self.call.privacy,
            reliability=reliability,
            max_price=self.call.max_price,
            deadline_s=self.call.deadline_s,
        )
        if not ranked:
            reason = "no eligible bids" if self._bids else "no bids"
            winner = None
        else:
            top = ranked[0]
            winner = PeerId(top.candidate.peer)
            reason = _explain(self.call.policy, ranked)
        return Decision(winner, tuple(ranked), reason, self.bids, tuple(self._declines.values()))

    def award(self, decision: Decision, *, now: float, ttl_s: float = 10.0) -> tuple[Award | None, list[tuple[PeerId, Release]]]:
        """The award for the winner and a release for every other bidder; closes the auction."""
        self.state = AuctionState.CLOSED
        releases = [(b.bidder, Release(self.call.auction_id)) for b in self._bids.values() if b.bidder != decision.winner]
        if decision.winner is None:
            return None, releases
        return Award(self.call.auction_id, self.call.agent_id, decision.winner, now + ttl_s), releases


def _explain(policy: str, ranked: Sequence[Ranked]) -> str:
    top = ranked[0]
    a = top.adjusted
    what = {
        "latency": f"fastest: {a.total_s:.2f} s expected",
        "cost": f"cheapest: {a.price:.4f}",
        "balanced": f"best time/price balance: {a.total_s:.2f} s at {a.price:.4f}",
    }[str(policy)]
    if len(ranked) > 1:
        b = ranked[1].adjusted
        what += f" (next: {ranked[1].candidate.peer[-6:]} {b.total_s:.2f} s at {b.price:.4f})"
    return what

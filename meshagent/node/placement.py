"""Placement on this node: answering calls for bids, and holding auctions for its own agents.

The decisions are the pure code of :mod:`meshagent.protocol.auction` and
:mod:`meshagent.protocol.scoring`; this module only moves their messages over
``/meshagent/auction/1`` (one signed message each way per stream) and keeps
the node's own state: its reservations and its reputation table.

Every decision is logged with its bids and kept in a bounded history that
``meshagent auctions`` and the dashboard show.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import trio

from meshagent.config import Config
from meshagent.inference.capacity import recommended_capacity
from meshagent.errors import AuctionError, ControlError, LocalProtocolError, RemoteProtocolError
from meshagent.net.host import MeshHost, Stream
from meshagent.node.control import Emit
from meshagent.node.membership import Membership
from meshagent.node.promises import Awarded, OwnPromises, PeerPromises
from meshagent.node.trust import TrustStore
from meshagent.protocol import auction
from meshagent.protocol.advert import Advert, ModelAd
from meshagent.protocol.auction import (
    Auction,
    Award,
    Bid,
    BidderContext,
    CallForBids,
    Decision,
    Decline,
    ModelRequirement,
    Release,
    Report,
    Reservations,
    best_model,
    estimate_for,
    make_bid,
    select_bidders,
)
from meshagent.protocol.scoring import POLICIES, PRIVACY_CLASSES, Reputation
from meshagent.protocol.signed import PeerId

__all__ = ["AUCTION_PROTOCOL", "StepRequest", "PlacementService"]

log = logging.getLogger(__name__)

AUCTION_PROTOCOL: Final = "/meshagent/auction/1.0.0"
_MAX_MSG: Final = auction.MAX_MESSAGE_BYTES
_LAN_BPS: Final = 12.5e6
"""Assumed path bandwidth to an on-link peer before a handoff has measured it (100 Mbit/s)."""
_WAN_BPS: Final = 2.5e6
_HISTORY: Final = 200
_CALLS_PER_PEER_PER_S: Final = 20.0
_AWARD_HOLD_MAX_S: Final = 120.0
"""The longest an award keeps the capacity its bid reserved."""
_CHANNEL_IDLE_S: Final = 120.0
"""An auction channel nobody used for this long is closed by the bidder."""
_LLM_SLOTS: Final = recommended_capacity().llm_per_model
"""LLM steps a node runs at once (one llama.cpp context per model): what bids queue behind."""


@dataclass(frozen=True, slots=True)
class StepRequest:
    """One LLM step to place."""

    agent_id: str
    requirement: str = ""
    context_tokens: int = 0
    output_tokens: int = 64
    privacy: str = "private"
    policy: str = "latency"
    snapshot_bytes: int = 0
    kv_model_sha256: str = ""
    max_price: float | None = None
    deadline_s: float | None = None
    owner: str = ""
    """The owner's device (default: this node)."""
    tool_memory_bytes: int = 0
    """The agent's WASI tools need sandboxes this large (from its manifest)..."""
    tool_fuel: int = 0
    """...and this much fuel: bidders that cannot host them decline."""


@dataclass(slots=True)
class _Channel:
    stream: Stream
    lock: trio.Lock


@dataclass(slots=True)
class _RateLimit:
    tokens: float
    stamp: float


class PlacementService:
    def __init__(
        self,
        host: MeshHost,
        membership: Membership,
        trust: TrustStore,
        config: Config,
        *,
        busy_s: Callable[[], float] = lambda: 0.0,
        bid_window_s: float = 1.5,
        models: Callable[[], tuple[ModelAd, ...]] | None = None,
    ) -> None:
        """``models`` gives this node's models with the rates learned up to now, which its bids
        quote (default: those of its last published advert, up to an advert interval old)."""
        self._host = host
        self._models = models
        self._members = membership
        self._trust = trust
        self._config = config
        self._busy_s = busy_s
        self._bid_window_s = bid_window_s
        self.reservations = Reservations()
        self._peers = PeerPromises(time.time(), half_life_s=config.node.reputation_half_life_s)
        self._own = OwnPromises()
        self.history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        self.awards: dict[str, tuple[Award, PeerId, float]] = {}
        """Auctions this node won: (award, auctioneer, when received) until the step is reported."""
        self._limits: dict[PeerId, _RateLimit] = {}
        self._channels: dict[PeerId, _Channel] = {}
        self.refused_calls = 0
        self.hot: Callable[[], bool] = lambda: False
        """Whether this device is hot (set by the node: thermal sensors or an emulated state)."""

    @property
    def reputation(self) -> Reputation:
        """This node's reliability factor for each peer it awarded steps to."""
        return self._peers.reputation

    def set_busy(self, busy_s: Callable[[], float]) -> None:
        """Where bids learn how much work is already queued here."""
        self._busy_s = busy_s

    def install(self) -> dict[str, Any]:
        self._host.set_handler(AUCTION_PROTOCOL, self._serve)
        return {"auction": self._op_auction, "auctions": self._op_auctions}

    # --- what this node knows --------------------------------------------------

    def own_advert(self) -> Advert:
        if self._members.own is None:
            self._members.refresh_own()
        assert self._members.own is not None
        return self._members.own

    def _adverts(self) -> dict[PeerId, Advert]:
        return {p: e.advert for p, e in self._members.table.items()}

    def on_link(self, peer: PeerId) -> bool:
        """Reached directly on this machine's link: judged from the live connection, never from the
        addresses the peer advertises (:meth:`MeshHost.on_link`)."""
        return self._host.on_link(peer)

    def _owner_devices(self, owner: PeerId) -> frozenset[PeerId]:
        """Devices a ``private`` step of ``owner`` may run on, as this node knows them."""
        if owner == self._host.peer_id:
            return self._trust.peers() | {owner}
        return frozenset({owner}) | (self._trust.peers() if owner in self._trust else frozenset())

    def _context(self, call: CallForBids) -> BidderContext:
        me = self.own_advert()
        home = call.home
        entry = self._members.table.get(home)
        rtt_s = (entry.rtt_ms or 1.0) / 1000.0 if entry else 0.001
        on_link = home == self._host.peer_id or self.on_link(home)
        models = self._models() if self._models is not None else me.models
        return BidderContext(
            me=self._host.peer_id,
            # An LLM whose rates were never measured is not bid with: its quote would be a guess.
            models=tuple(m for m in models if m.kind != "llm" or m.decode_tps is not None),
            price_per_1k_tokens=me.price_per_1k_tokens,
            slots=_LLM_SLOTS,
            busy_s=self._busy_s(),
            trusts_owner=call.owner == self._host.peer_id or call.owner in self._trust,
            home_on_link=on_link,
            path_bps=_LAN_BPS if on_link else _WAN_BPS,
            rtt_s=rtt_s,
            on_battery=me.hardware.on_battery,
            battery_percent=me.hardware.battery_percent,
            hot=self.hot(),
            tool_memory_bytes=self._config.sandbox.memory_bytes,
            tool_fuel=self._config.sandbox.fuel,
            fixed_s=self._own.fixed_s,
        )

    # --- bidder side -------------------------------------------------------------

    def _allow(self, peer: PeerId) -> bool:
        """A token bucket per peer: floods of calls for bids are refused."""
        now = trio.current_time()
        rl = self._limits.get(peer) or _RateLimit(_CALLS_PER_PEER_PER_S, now)
        rl.tokens = min(_CALLS_PER_PEER_PER_S, rl.tokens + (now - rl.stamp) * _CALLS_PER_PEER_PER_S)
        rl.stamp = now
        self._limits[peer] = rl
        if rl.tokens < 1.0:
            self.refused_calls += 1
            return False
        rl.tokens -= 1.0
        return True

    def answer(self, call: CallForBids) -> Bid | Decline:
        ctx = self._context(call)
        answer, self.reservations = make_bid(call, ctx, self.reservations, now=time.time())
        if isinstance(answer, Bid):
            self._own.bid(call.auction_id, answer.estimate, ctx.fixed_s)
        return answer

    async def _serve(self, stream: Stream) -> None:
        """One peer's auction channel: messages in order until it closes (or idles out)."""
        while True:
            frame = None
            with trio.move_on_after(_CHANNEL_IDLE_S):
                frame = await stream.receive_frame_or_eof(_MAX_MSG)
            if frame is None:
                break
            try:
                with trio.fail_after(10):
                    if not await self._handle(stream, frame):
                        await stream.reset()
                        return
            except RemoteProtocolError as exc:  # the peer's fault, refused at decode: drop its channel
                log.info("refused an auction message from %s: %s", stream.peer, exc)
                await stream.reset()
                return
        await stream.close()

    async def _handle(self, stream: Stream, frame: bytes) -> bool:
        """Handle one message; False when the peer went over its rate of calls for bids."""
        signer, msg = auction.decode(frame, now=time.time())
        if signer != stream.peer:
            raise RemoteProtocolError(f"{stream.peer} relayed a message signed by {signer}")
        key = self._members.signing_key
        match msg:
            case CallForBids():
                if not self._allow(stream.peer):
                    return False
                await stream.send_frame(auction.encode(self.answer(msg), key))
            case Award():
                if msg.winner == self._host.peer_id:
                    self.awards[msg.auction_id] = (msg, signer, time.time())
                    while len(self.awards) > _HISTORY:  # bounded: awards arrive from peers
                        self.awards.pop(next(iter(self.awards)))
                    # Held until the handoff comes, but not for as long as any auctioneer likes.
                    until = min(msg.expires_at, time.time() + _AWARD_HOLD_MAX_S)
                    self.reservations = self.reservations.extend(msg.auction_id, until)
            case Release():
                self.reservations = self.reservations.release(msg.auction_id)
                self.awards.pop(msg.auction_id, None)
            case Report():
                self._peers.judge(signer, msg, time.time())
            case _:
                raise RemoteProtocolError(f"unexpected {type(msg).__name__} on the auction protocol")
        return True

    # --- auctioneer side ---------------------------------------------------------

    async def _exchange(self, peer: PeerId, payload: bytes, *, reply: bool) -> bytes | None:
        """Send one message on the peer's auction channel (kept open between auctions).

        A channel whose request was cancelled or failed midway is dropped, so a late
        reply can never be read as the answer to a later request.
        """
        for attempt in (1, 2):
            channel = self._channels.get(peer)
            if channel is None:
                channel = _Channel(await self._host.open_stream(peer, AUCTION_PROTOCOL), trio.Lock())
                self._channels[peer] = channel
            done = False
            try:
                async with channel.lock:
                    await channel.stream.send_frame(payload)
                    answer = await channel.stream.receive_frame(_MAX_MSG) if reply else None
                done = True
                return answer
            except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError, OSError) as exc:
                if attempt == 2:
                    raise
                log.debug("auction channel to %s broke (%s); reopening", peer[-6:], exc)
            except Exception as exc:  # py-libp2p stream errors have no common base; reopen once
                if attempt == 2:
                    raise
                log.debug("auction channel to %s failed (%s); reopening", peer[-6:], exc)
            finally:
                if not done and self._channels.get(peer) is channel:
                    del self._channels[peer]
                    with trio.CancelScope(shield=True):
                        await channel.stream.reset()
        return None

    async def _ask(
        self, peer: PeerId, payload: bytes, auction_obj: Auction, counter: list[int], answered: dict[PeerId, float]
    ) -> None:
        try:
            counter[0] += 1
            t0 = time.perf_counter()
            answer = await self._exchange(peer, payload, reply=True)
            if answer is None:
                return
            answered[peer] = round((time.perf_counter() - t0) * 1000, 3)
            counter[0] += 1
            signer, msg = auction.decode(answer, now=time.time())
            match msg:
                case Bid():
                    auction_obj.on_bid(signer, msg, time.time())
                case Decline():
                    auction_obj.on_decline(signer, msg)
        except RemoteProtocolError as exc:
            log.info("bad answer from %s: %s", peer, exc)
        except Exception as exc:  # a bidder that vanished: its bid is simply missing
            log.debug("asking %s failed: %s", peer, exc)

    async def _tell(self, peer: PeerId, payload: bytes, counter: list[int]) -> None:
        with trio.move_on_after(2):
            try:
                await self._exchange(peer, payload, reply=False)
                counter[0] += 1
            except Exception as exc:  # best effort: reservations expire anyway
                log.debug("telling %s failed: %s", peer, exc)

    def _call_for(self, step: StepRequest, now: float) -> CallForBids:
        me = self._host.peer_id
        return CallForBids(
            auction_id=os.urandom(8).hex(),
            agent_id=step.agent_id,
            home=me,
            owner=PeerId(step.owner or me),
            requirement=step.requirement,
            context_tokens=step.context_tokens,
            output_tokens=step.output_tokens,
            privacy=step.privacy,
            policy=step.policy,
            snapshot_bytes=step.snapshot_bytes,
            issued_at=now,
            bid_deadline=now + self._bid_window_s * 4,
            deadline_s=step.deadline_s,
            kv_model_sha256=step.kv_model_sha256,
            max_price=step.max_price,
            tool_memory_bytes=step.tool_memory_bytes,
            tool_fuel=step.tool_fuel,
        )

    def local_estimate_s(self, step: StepRequest) -> float | None:
        """Seconds this node expects the step to take here (its own bid, without reserving), or None."""
        call = self._call_for(step, time.time())
        ctx = self._context(call)
        model = best_model(ctx.models, ModelRequirement(call.requirement))
        if model is None:
            return None
        busy = replace(ctx, busy_s=ctx.busy_s + self.reservations.active(call.issued_at).work_s(call.issued_at))
        return estimate_for(call, model, busy, staying=True).total_s

    async def run_auction(
        self,
        step: StepRequest,
        *,
        award: bool = True,
        exclude: frozenset[PeerId] = frozenset(),
        trigger: str = "requested",
        step_index: int | None = None,
    ) -> Decision:
        """Hold one auction for ``step``; the home node bids for itself."""
        if step.privacy not in PRIVACY_CLASSES or step.policy not in POLICIES:
            raise AuctionError(f"privacy must be one of {PRIVACY_CLASSES} and policy one of {POLICIES}")
        try:
            ModelRequirement(step.requirement)
        except LocalProtocolError as exc:
            raise AuctionError(f"bad model requirement {step.requirement!r}: {exc}") from exc
        now = time.time()
        self._peers.judge_silent(now, self._config.node.report_grace_s)
        me = self._host.peer_id
        owner = PeerId(step.owner or me)
        call = self._call_for(step, now)
        owner_devices = self._owner_devices(owner)
        on_link = frozenset(p for p in self._members.table if self.on_link(p))
        adverts = {p: a for p, a in self._adverts().items() if p not in exclude}
        rtt = {p: e.rtt_ms for p, e in self._members.table.items() if e.rtt_ms is not None}
        invited = select_bidders(
            call, adverts, owner_devices=owner_devices, on_link=on_link, rtt_ms=rtt, reliability=self.reputation  # type: ignore[arg-type]
        )
        state = Auction(call, invited, owner_devices=owner_devices, on_link=on_link)
        own = self.answer(call)
        if isinstance(own, Bid):
            state.on_bid(me, own, time.time())
        else:
            state.on_decline(me, own)
        payload = auction.encode(call, self._members.signing_key)
        messages = [0]
        answered: dict[PeerId, float] = {}
        t0 = time.perf_counter()
        with trio.move_on_after(self._bid_window_s):
            async with trio.open_nursery() as nursery:
                for peer in invited:
                    nursery.start_soon(self._ask, peer, payload, state, messages, answered)
        decision = state.decide(reliability=self.reputation, exclude=exclude)
        decide_s = time.perf_counter() - t0
        if award:
            award_msg, releases = state.award(decision, now=time.time())
            async with trio.open_nursery() as nursery:
                key = self._members.signing_key
                if award_msg is not None and award_msg.winner != me:
                    winner_bid = next(b for b in decision.bids if b.bidder == award_msg.winner)
                    self._peers.awarded(call.auction_id, Awarded(award_msg.winner, step.agent_id,
                                                                 winner_bid.estimate.total_s, time.time()))
                    nursery.start_soon(self._tell, award_msg.winner, auction.encode(award_msg, key), messages)
                for peer, rel in releases:
                    if peer == me:
                        self.reservations = self.reservations.release(rel.auction_id)
                    else:
                        nursery.start_soon(self._tell, peer, auction.encode(rel, key), messages)
        else:
            self.reservations = self.reservations.release(call.auction_id)
        record = {
            "auction_id": call.auction_id,
            "agent_id": step.agent_id,
            "at": now,
            "requirement": step.requirement,
            "privacy": step.privacy,
            "policy": step.policy,
            "invited": list(invited),
            "bids": [
                {**asdict(b), "total_s": round(b.estimate.total_s, 4), "reliability": round(self.reputation.factor(b.bidder), 3)}
                for b in decision.bids
            ],
            "declines": [asdict(d) for d in decision.declines],
            "winner": decision.winner,
            "reason": decision.reason,
            "trigger": trigger,
            "step": step_index,
            "decision_ms": round(decide_s * 1000, 3),
            "messages": messages[0],
            "answer_ms": answered,
        }
        self.history.append(record)
        log.info("auction %s for %s: winner %s (%s); bids %s", call.auction_id, step.agent_id, decision.winner, decision.reason,
                 [(b.bidder[-6:], round(b.estimate.total_s, 3), b.price) for b in decision.bids])
        return decision

    def handoff_failed(self, agent_id: str) -> None:
        """The agent never reached the winner of its step: nothing for the winner to report."""
        self._peers.handoff_failed(agent_id)

    def won(self, agent_id: str) -> bool:
        """This node won an auction for the agent's current step (not reported yet)."""
        return any(award.agent_id == agent_id for award, _, _ in self.awards.values())

    async def report_step(self, agent_id: str) -> None:
        """After running a step this node won: tell the auctioneer how long it really took."""
        won = [(aid, a) for aid, a in self.awards.items() if a[0].agent_id == agent_id]
        for auction_id, (award, auctioneer, received) in won:
            del self.awards[auction_id]
            self.reservations = self.reservations.release(auction_id)  # the work it held is done
            actual = time.time() - received
            promised = self._own.settle(auction_id, actual)
            report = Report(auction_id, self._host.peer_id, promised, actual)
            await self._tell(auctioneer, auction.encode(report, self._members.signing_key), [0])

    def observe(self, peer: PeerId, estimated_s: float, actual_s: float) -> None:
        """Fold a finished step's estimate-vs-actual into the peer's reliability factor."""
        self._peers.observe(peer, estimated_s, actual_s, time.time())

    # --- control ops ----------------------------------------------------------------

    async def _op_auction(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        try:
            step = StepRequest(
                agent_id=str(params.get("agent_id", "dry-run")),
                requirement=str(params.get("requirement", "")),
                context_tokens=int(params.get("context_tokens", 0)),
                output_tokens=int(params.get("output_tokens", 64)),
                privacy=str(params.get("privacy", "any")),
                policy=str(params.get("policy", "latency")),
                snapshot_bytes=int(params.get("snapshot_bytes", 0)),
                max_price=None if params.get("max_price") is None else float(params["max_price"]),
            )
        except (TypeError, ValueError) as exc:
            raise ControlError(f"bad auction parameters: {exc}") from exc
        await self.run_auction(step, award=bool(params.get("award", False)))
        return self.history[-1]

    async def _op_auctions(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        self._peers.judge_silent(time.time(), self._config.node.report_grace_s)
        return {"auctions": list(self.history), "reputation": dict(self.reputation), "refused_calls": self.refused_calls,
                "awards_pending": len(self.awards), "reports_pending": self._peers.pending,
                "fixed_s": round(self._own.fixed_s, 3)}

"""Agents running on the simulated mesh: each LLM step is placed by a policy, then really waited for.

The *decision* comes from :mod:`simulations.policies` (for meshagent: the real
protocol code). The *truth* is modelled here: the snapshot crosses the real path
(and the KV cache when the winner chose to take it, by the protocol's own
:func:`uses_kv`), the step waits for a free slot on the device, then prefills
and decodes at the device's true (sourced, mean) speed times a random factor
between PEAK_FRACTION and twice that, mean 1 (thermal throttling, background
load), so bids built from measured means are unbiased. A device that leaves mid-step loses the step: the
home notices after the advert TTL and places it again. The home then folds the
winner's estimate against the measured time into the owner's
:class:`~meshagent.protocol.scoring.Reputation`.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import Final

import simpy

from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import CallForBids, estimate_for, prefill_tokens, uses_kv
from meshagent.protocol.scoring import Reputation, privacy_allows
from meshagent.protocol.signed import PeerId

from simulations import handoff
from simulations.devices import ELECTRICITY_PER_KWH
from simulations.metrics import Recorder
from simulations.models import MODELS
from simulations.policies import (
    BID_WINDOW_S,
    Placement,
    PolicySpec,
    cloud_only,
    forage,
    local_only,
    nearest_peer,
    oracle_bound,
    relax,
)
from simulations.workloads import HELD_DEVICE, Fork, Step, Task
from simulations.world import ADVERT_TTL_S, Device, World

__all__ = ["Proc", "AgentState", "Mesh", "snapshot_bytes", "PEAK_FRACTION", "RETRY_S", "MAX_RETRIES"]

PEAK_FRACTION: Final = 1.0 / (1.0 + 0.1 * (1.0 - 2.718281828459045**-10))
"""Sourced speeds are means; a step runs at most this much faster (no throttling, no background load)."""
Proc = Generator[simpy.Event, object, None]
"""A SimPy process body."""
RETRY_S: Final = 2.0
"""Wait before asking again when nobody could take a step."""
MAX_RETRIES: Final = 5
"""After this many empty auctions the step accepts a model one size smaller (counted as degraded)."""
SNAPSHOT_BASE_BYTES: Final = 1_000_000
"""Module reference, compressed memory image and files of a small agent."""
JOURNAL_BYTES_PER_TOKEN: Final = 8
_KV_BYTES: Final = {spec.name: spec.kv_bytes_per_token for spec in MODELS.values()}
_SIZE_OF: Final = {spec.name: spec for spec in MODELS.values()}


def snapshot_bytes(context_tokens: int) -> int:
    return SNAPSHOT_BASE_BYTES + JOURNAL_BYTES_PER_TOKEN * context_tokens


@dataclass(slots=True)
class AgentState:
    agent_id: str
    owner: int
    location: PeerId
    context_tokens: int
    kv_model: ModelAd | None = None
    kv_tokens: int = 0
    decisions: int = 0
    generation: int = 0
    """Grows with every handoff, as the snapshot header's generation does."""

    def fork(self, i: int) -> AgentState:
        return AgentState(f"{self.agent_id}.{i}", self.owner, self.location, self.context_tokens, self.kv_model, self.kv_tokens)


class Mesh:
    """One policy driving every task of one workload on one world."""

    def __init__(self, world: World, spec: PolicySpec, recorder: Recorder, *, seed: int) -> None:
        self.world = world
        self.env = world.env
        self.spec = spec
        self.rec = recorder
        self.rng = random.Random(f"mesh/{seed}/{spec.name}")
        self.reputation: dict[int, Reputation] = {}

    # --- tasks -----------------------------------------------------------------------

    def task(self, task: Task) -> Proc:
        yield self.env.timeout(max(task.start_s - self.env.now, 0.0))
        held = self.world.held(task.owner, HELD_DEVICE[task.workload])
        agent = AgentState(task.task_id, task.owner, held.peer, task.base_tokens)
        start = self.env.now
        for phase in task.phases:
            if isinstance(phase, Step):
                yield from self.step(agent, phase, held)
            else:
                yield from self.fork(agent, phase, held)
        self.rec.latencies.append(self.env.now - start)
        self.rec.task_latency[task.task_id] = self.env.now - start
        self.rec.useful_tokens += task.useful_tokens()

    def fork(self, agent: AgentState, fork: Fork, held: Device) -> Proc:
        children = [agent.fork(i) for i in range(len(fork.children))]
        procs = [self.env.process(self.chain(c, steps, held)) for c, steps in zip(children, fork.children)]
        yield self.env.all_of(procs)
        # The parent gathers the children's results: they become fresh context at its home.
        agent.context_tokens += sum(s.output_tokens for steps in fork.children for s in steps)

    def chain(self, agent: AgentState, steps: tuple[Step, ...], held: Device) -> Proc:
        for s in steps:
            yield from self.step(agent, s, held)

    # --- one step ----------------------------------------------------------------------

    def _call(self, agent: AgentState, step: Step, requirement: str) -> CallForBids:
        agent.decisions += 1
        now = self.env.now
        kv = agent.kv_model
        return CallForBids(
            auction_id=f"{agent.agent_id}/{agent.decisions}",
            agent_id=agent.agent_id,
            home=agent.location,
            owner=self.world.held(agent.owner, "laptop").peer,
            requirement=requirement,
            context_tokens=agent.context_tokens,
            output_tokens=step.output_tokens,
            privacy=step.privacy,
            policy=str(self.spec.policy),
            snapshot_bytes=snapshot_bytes(agent.context_tokens),
            issued_at=now,
            bid_deadline=now + BID_WINDOW_S,
            kv_model_sha256=kv.sha256 if kv is not None else "",
            fresh_tokens=max(agent.context_tokens - agent.kv_tokens, 0) if kv is not None else agent.context_tokens,
            kv_bytes=agent.kv_tokens * _KV_BYTES.get(kv.name, 0) if kv is not None else 0,
        )

    def _place(self, agent: AgentState, call: CallForBids, held: Device) -> tuple[Placement, bool]:
        match self.spec.kind:
            case "forage":
                rep = self.reputation.setdefault(agent.owner, Reputation())
                return forage(self.world, call, agent.owner, self.spec, rep), False
            case "local":
                return local_only(self.world, call.requirement, held)
            case "cloud":
                return cloud_only(self.world, call.requirement)
            case "nearest":
                return nearest_peer(self.world, call.requirement, held)
        raise ValueError(f"unknown policy kind {self.spec.kind!r}")

    def step(self, agent: AgentState, step: Step, held: Device) -> Proc:
        if step.tool_s:
            yield self.env.timeout(step.tool_s)
        agent.context_tokens += step.new_tokens
        self.rec.steps += 1
        if self.spec.kind == "oracle":
            yield from self._oracle_step(agent, step)
            return
        requirement, empty, relaxed = step.requirement, 0, False
        while True:
            call = self._call(agent, step, requirement)
            placement, degraded = self._place(agent, call, held)
            self.rec.messages.append(placement.messages)
            if placement.wait_s:
                yield self.env.timeout(placement.wait_s)
            if placement.device is None or placement.model is None:
                empty += 1
                if empty >= MAX_RETRIES and requirement:
                    requirement, empty, relaxed = relax(requirement), 0, True
                yield self.env.timeout(RETRY_S)
                continue
            done = yield from self._execute(agent, step, call, placement)
            if done:
                self.rec.degraded += degraded or relaxed
                return

    def _execute(
        self, agent: AgentState, step: Step, call: CallForBids, placement: Placement
    ) -> Generator[simpy.Event, object, bool]:
        assert placement.device is not None and placement.model is not None
        world, env = self.world, self.env
        dev = world.devices[placement.device]
        staying = dev.peer == agent.location
        t0 = env.now
        ctx = world.bidder_context(dev, call, agent.owner)
        with_kv = uses_kv(call, placement.model, ctx, staying=staying)
        move: handoff.Handoff | None = None
        if not staying:
            bps, rtt = world.path(agent.location, dev.peer)
            agent.generation += 1
            body = call.snapshot_bytes + (call.kv_bytes if with_kv else 0)
            move = handoff.begin(agent.agent_id, agent.generation, body)
            yield env.timeout(rtt + body / bps)
            if not dev.alive:  # gone before it stored the copy: the sender keeps the agent
                handoff.abort(move)
                self.rec.handoff_frames += move.frames
                yield from self._lost(dev, call)
                return False
            handoff.finish(move)
            self.rec.handoff_frames += move.frames
            yield env.timeout(rtt)
        if not dev.alive:
            yield from self._lost(dev, call)
            return False
        est = estimate_for(call, placement.model, ctx, staying=staying)
        work = est.prefill_s + est.decode_s
        dev.outstanding_s += work
        req = dev.slots.request()
        yield req
        try:
            dev.reservations = dev.reservations.release(call.auction_id)
            true = dev.true_model(placement.model)
            prefilled = prefill_tokens(call, placement.model, ctx, staying=staying)
            run = (prefilled / (true.prefill_tps or 50.0) + call.output_tokens / (true.decode_tps or 5.0)) * self._slowdown()
            down = dev.next_down(env.now)
            if not dev.alive or (down is not None and down < env.now + run):
                partial = max((down or env.now) - env.now, 0.0)
                yield env.timeout(partial)
                self._account(dev, agent, step, partial, prefilled, charge=False)
                failed = True
            else:
                yield env.timeout(run)
                self._account(dev, agent, step, run, prefilled, charge=True)
                failed = False
        finally:
            dev.slots.release(req)
            dev.outstanding_s -= work
        if failed:
            yield from self._lost(dev, call)
            return False
        actual = env.now - t0
        if placement.estimated_s is not None and self.spec.reputation:
            rep = self.reputation.setdefault(agent.owner, Reputation())
            self.reputation[agent.owner] = rep.observe(dev.peer, placement.estimated_s, actual)
        if self.spec.kind == "forage" and dev.owner != agent.owner:
            self.rec.liar_wins.append((env.now, dev.liar))
        owned, on_link = world.owner_devices(agent.owner), world.on_link(agent.owner)
        if not privacy_allows(step.privacy, owner_device=dev.peer in owned, on_link=dev.peer in on_link):
            self.rec.privacy_violations += 1
        if not staying:
            self.rec.migrations += 1
            agent.location = dev.peer
        agent.kv_model = placement.model
        agent.context_tokens += step.output_tokens
        agent.kv_tokens = agent.context_tokens
        dev.kv_cache[agent.agent_id] = (placement.model.sha256, agent.context_tokens)
        return True

    def _slowdown(self) -> float:
        """A step's time over the device's measured mean: at least PEAK_FRACTION, mean 1."""
        return PEAK_FRACTION * (1.0 + min(self.rng.expovariate(10.0), 1.0))

    def _lost(self, dev: Device, call: CallForBids) -> Proc:
        """The step died with its device: the home learns it when the advert expires."""
        self.rec.faults += 1
        dev.reservations = dev.reservations.release(call.auction_id)
        yield self.env.timeout(ADVERT_TTL_S)

    def _account(self, dev: Device, agent: AgentState, step: Step, busy_s: float, prefilled: int, *, charge: bool) -> None:
        energy_wh = dev.cls.power_w * busy_s / 3600.0
        if dev.on_battery and dev.battery_wh is not None:
            before = dev.battery_percent or 0.0
            dev.battery_wh = max(dev.battery_wh - energy_wh, 0.0)
            self.rec.battery_wh += energy_wh
            if int(before // 5) != int((dev.battery_percent or 0.0) // 5):
                self.world.publish(dev)  # a new advert every 5 % of battery
        if dev.price_per_1k_tokens > 0:
            if charge:
                self.rec.cost += (step.output_tokens + prefilled * 0.1) / 1000.0 * dev.price_per_1k_tokens
        else:
            self.rec.cost += energy_wh / 1000.0 * ELECTRICITY_PER_KWH

    def _oracle_step(self, agent: AgentState, step: Step) -> Proc:
        fresh = max(agent.context_tokens - agent.kv_tokens, 0) if agent.kv_model is not None else agent.context_tokens
        bound = oracle_bound(self.world, step.requirement, step.privacy, agent.owner, fresh, step.output_tokens)
        self.rec.messages.append(0)
        if bound is None:  # pragma: no cover - every mesh has an owner device with an LLM
            raise RuntimeError("no device can run this step")
        dev, model, seconds, degraded = bound
        seconds *= PEAK_FRACTION
        self.rec.degraded += degraded
        yield self.env.timeout(seconds)
        energy_wh = dev.cls.power_w * seconds / 3600.0
        if dev.price_per_1k_tokens > 0:
            self.rec.cost += (step.output_tokens + fresh * 0.1) / 1000.0 * dev.price_per_1k_tokens
        else:
            self.rec.cost += energy_wh / 1000.0 * ELECTRICITY_PER_KWH
        if dev.peer != agent.location:
            self.rec.migrations += 1
            agent.location = dev.peer
        agent.kv_model = model
        agent.context_tokens += step.output_tokens
        agent.kv_tokens = agent.context_tokens

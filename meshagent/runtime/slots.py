"""Execution slots: how many agents run at once on a node, and whose.

An agent runs only while it holds a slot (``SandboxLimits.max_instances`` of
them). Agents of other owners — adopted from strangers — also take a slot of
their owner's quota (``owner_slots``) and one of the slots all other owners
share (``max_instances - reserved_slots``), so strangers cannot take the
node's every slot, and one stranger cannot take all of theirs. A slot is given
back while its agent waits without working: asleep in ``poll_oneoff`` or
joining a child.

Slots are taken in one order (owner quota, foreign share, node) and given back
in the other, so agents waiting for them cannot deadlock; each limiter is
first come, first served.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from meshagent.config import SandboxLimits

__all__ = ["Slots", "SlotStats"]


@dataclass(frozen=True, slots=True)
class SlotStats:
    """A count of the slots now (for ``meshagent`` control ops and tests)."""

    total: int
    busy: int
    waiting: int
    foreign_total: int
    foreign_busy: int
    owner_slots: int
    owners: dict[str, int]
    """Slots held by each other owner's agents."""

    def to_json(self) -> dict[str, object]:
        return {"total": self.total, "busy": self.busy, "waiting": self.waiting, "foreign_total": self.foreign_total,
                "foreign_busy": self.foreign_busy, "owner_slots": self.owner_slots, "owners": dict(self.owners)}


class Slots:
    """The node's execution slots (trio; acquire and release on the trio thread)."""

    def __init__(self, limits: SandboxLimits) -> None:
        total = max(1, limits.max_instances)
        self._all = trio.CapacityLimiter(total)
        self._foreign = trio.CapacityLimiter(max(1, total - limits.reserved_slots))
        self._owner_slots = max(1, limits.owner_slots)
        self._owners: dict[str, trio.CapacityLimiter] = {}
        self._held: dict[str, str | None] = {}

    def _chain(self, owner: str | None) -> list[trio.CapacityLimiter]:
        if owner is None:
            return [self._all]
        limiter = self._owners.get(owner)
        if limiter is None:
            limiter = self._owners[owner] = trio.CapacityLimiter(self._owner_slots)
        return [limiter, self._foreign, self._all]

    def holds(self, agent_id: str) -> bool:
        return agent_id in self._held

    async def acquire(self, agent_id: str, owner: str | None) -> None:
        """Wait for a slot for ``agent_id``; ``owner`` is the other owner it runs for, ``None`` for the node's own."""
        taken: list[trio.CapacityLimiter] = []
        try:
            for limiter in self._chain(owner):
                await limiter.acquire_on_behalf_of(agent_id)
                taken.append(limiter)
        except BaseException:
            for limiter in reversed(taken):
                limiter.release_on_behalf_of(agent_id)
            self._forget(owner)
            raise
        self._held[agent_id] = owner

    def release(self, agent_id: str) -> None:
        owner = self._held.pop(agent_id)
        for limiter in reversed(self._chain(owner)):
            limiter.release_on_behalf_of(agent_id)
        self._forget(owner)

    def _forget(self, owner: str | None) -> None:
        """Drop an owner's quota when nobody holds or waits for it (strangers come and go)."""
        limiter = self._owners.get(owner) if owner is not None else None
        if limiter is not None and limiter.borrowed_tokens == 0 and limiter.statistics().tasks_waiting == 0:
            del self._owners[owner]  # type: ignore[arg-type]

    def stats(self) -> SlotStats:
        owners: dict[str, int] = {}
        for owner in self._held.values():
            if owner is not None:
                owners[owner] = owners.get(owner, 0) + 1
        waiting = self._all.statistics().tasks_waiting + self._foreign.statistics().tasks_waiting + sum(
            lim.statistics().tasks_waiting for lim in self._owners.values())
        return SlotStats(total=int(self._all.total_tokens), busy=len(self._held), waiting=waiting,
                         foreign_total=int(self._foreign.total_tokens), foreign_busy=int(self._foreign.borrowed_tokens),
                         owner_slots=self._owner_slots, owners=owners)

"""What the agent manager does for its agents while they run: slots, and the hooks agents call.

:class:`Supervision` is the part of :class:`~meshagent.runtime.manager.AgentManager` that
agents reach from their worker threads (the :class:`~meshagent.runtime.hooks.AgentHooks`:
spawn, join, sleep, journal persistence) and that takes and gives back their execution
slots (:class:`~meshagent.runtime.slots.Slots`). An agent asleep or joining a child runs
without a slot; one asked to stop while it waits for a slot stops at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import trio

from meshagent.errors import AgentNotFound
from meshagent.node.store import NodeStore
from meshagent.runtime.ids import AgentId
from meshagent.runtime.journal import Entry
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.sandbox import Agent
from meshagent.runtime.services import HostServices, RollbackAware, Suspend
from meshagent.runtime.slots import Slots
from meshagent.runtime.snapshot import AgentSnapshot

__all__ = ["AgentInfo", "AgentRecord", "Supervision"]

SLOT_RELEASE_S: Final = 0.01
"""Sleeps at least this long give the agent's slot back (shorter ones are not worth the round trip)."""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    agent_id: str
    parent_id: str | None
    status: str
    host_calls: int
    exit_code: int | None
    error: str | None
    module_sha256: str
    slot: str | None = None
    """While the agent is active: ``running`` (it holds a slot), ``sleeping``, ``joining`` or ``waiting`` (for a slot)."""

    def to_json(self) -> dict[str, object]:
        return {
            "agent_id": self.agent_id,
            "parent_id": self.parent_id,
            "status": self.status,
            "host_calls": self.host_calls,
            "exit_code": self.exit_code,
            "error": self.error,
            "module_sha256": self.module_sha256,
            "slot": self.slot,
        }


@dataclass(slots=True)
class AgentRecord:
    """What the manager keeps about one of its agents."""

    agent: Agent
    owner: str | None = None
    """The other owner whose slot quota the agent runs under (``None``: this node's own)."""
    active: bool = False
    killed: bool = False
    outcome: Outcome | None = None
    waiting: str | None = None
    """``sleeping`` or ``joining`` while the agent waits without its slot."""
    slot_wait: trio.CancelScope | None = None
    """While the agent waits for a slot: cancelled by a stop request (it need not run to stop)."""
    terminal: threading.Event = field(default_factory=threading.Event)


class Supervision:
    """Mixin of :class:`~meshagent.runtime.manager.AgentManager`: its worker-thread hooks and slot handling."""

    _records: dict[str, AgentRecord]
    _slots: Slots
    _store: NodeStore | None
    _services: HostServices | None
    _remote_result: Callable[[str], Awaitable[bytes]] | None
    start: Callable[..., Awaitable[AgentId]]
    """:meth:`AgentManager.start <meshagent.runtime.manager.AgentManager.start>` (children of a fork start through it)."""

    async def _wait_for_slot(self, rec: AgentRecord) -> bool:
        """Take a slot for the agent; ``False`` if a stop request came first (see :meth:`_stop`)."""
        if rec.agent.suspend_requested:
            return False
        with trio.CancelScope() as scope:
            rec.slot_wait = scope
            try:
                await self._slots.acquire(rec.agent.agent_id, rec.owner)
            finally:
                rec.slot_wait = None
        return not scope.cancelled_caught

    def _stop(self, rec: AgentRecord, reason: str) -> None:
        """Ask the agent to stop at its next host call, or at once if it is waiting for a slot."""
        rec.agent.request_suspend(reason)
        if rec.slot_wait is not None:
            rec.slot_wait.cancel()

    def spawn(self, parent: Agent, children: Sequence[AgentSnapshot]) -> None:
        for child in children:
            trio.from_thread.run(partial(self.start, child, loaded=parent.loaded))

    def join(self, parent: Agent, child_id: str) -> bytes:
        if child_id not in self._records and self._remote_result is None:
            raise AgentNotFound(f"mesh_join: child {child_id} is not on this node")
        with self._without_slot(parent, "joining"):
            while True:
                rec = self._records.get(child_id)
                if rec is None:  # handed over to another node (see forget)
                    if self._remote_result is None:
                        raise AgentNotFound(f"mesh_join: child {child_id} left this node")
                    return trio.from_thread.run(self._remote_result, child_id)
                if rec.terminal.wait(0.05):
                    assert rec.outcome is not None
                    return rec.outcome.stdout
                if parent.suspend_requested:
                    raise Suspend(f"suspended while joining child {child_id}")
                parent.check_deadline()

    def sleep(self, agent: Agent, seconds: float) -> None:
        if seconds < SLOT_RELEASE_S:
            agent.doze(seconds)
            return
        with self._without_slot(agent, "sleeping"):
            agent.doze(seconds)

    @contextlib.contextmanager
    def _without_slot(self, agent: Agent, why: str) -> Iterator[None]:
        """Give the agent's slot back for the block (called on its worker thread), then wait for one again.

        An agent that leaves the block by an exception is ending (stopped, out of time): it unwinds
        without a slot. One stopped while it waits for its slot again ends with :class:`Suspend`."""
        rec = self._records[agent.agent_id]
        trio.from_thread.run_sync(self._slots.release, agent.agent_id)
        rec.waiting = why
        try:
            yield
        finally:
            rec.waiting = None
        if not trio.from_thread.run(self._wait_for_slot, rec):
            raise Suspend(agent.suspend_reason or "stopped while waiting for a slot")

    def entry_added(self, agent: Agent, index: int, entry: Entry) -> None:
        if self._store is not None:
            self._store.append_entry(agent.agent_id, index, entry)

    def truncated(self, agent: Agent, length: int) -> None:
        if self._store is not None:
            self._store.truncate(agent.agent_id, length, rollbacks=agent.rollbacks, labels=agent.labels)
        if isinstance(self._services, RollbackAware):
            # The conversation forgets the discarded LLM steps too: a replay of this agent on
            # another node never sees them, so the answers must not depend on them here either.
            steps = sum(1 for e in agent.journal if e.name == "llm" and e.ret is not None and e.ret >= 0)
            self._services.rolled_back(agent.agent_id, steps)

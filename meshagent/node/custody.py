"""The node's side of a handoff: :class:`NodeCustody` implements the handoff manager's
:class:`~meshagent.node.handoff.AgentCustody` over the agent runtime.

Besides freezing, thawing, adopting and releasing agents, it keeps the results
relay's custody in step with handoffs: an agent handed on (the commit persisted
on this sending side) moves its owner's custody record, or owes the owner a
custody notice; an agent that arrives at its owner is held there again.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import trio

from meshagent.node.mover import Mover
from meshagent.node.records import AgentRecords
from meshagent.node.results import ResultsRelay
from meshagent.node.services import NodeServices
from meshagent.node.snapshots import FrozenAgent
from meshagent.node.store import NodeStore
from meshagent.protocol.signed import PeerId
from meshagent.runtime.manager import AgentManager

__all__ = ["NodeCustody"]

log = logging.getLogger(__name__)


class NodeCustody:
    """What the handoff manager may do to this node's agents (every method idempotent)."""

    def __init__(self, *, manager: AgentManager, store: NodeStore, records: AgentRecords, services: NodeServices,
                 relay: ResultsRelay, mover: Mover) -> None:
        self._manager = manager
        self._store = store
        self._records = records
        self._services = services
        self._relay = relay
        self._mover = mover

    async def freeze(self, agent_id: str) -> FrozenAgent:
        snap = await self._manager.suspend(agent_id, "frozen for a handoff")
        if snap.module is None:
            wasm = await trio.to_thread.run_sync(self._store.get_module, snap.module_sha256)
            snap = replace(snap, module=wasm)
        models = tuple(await trio.to_thread.run_sync(self._records.get, agent_id))
        meta = replace(await trio.to_thread.run_sync(self._records.meta, agent_id), llm_models=models)
        return FrozenAgent(snapshot=snap, meta=meta)

    async def thaw(self, agent_id: str) -> None:
        if self._manager.is_known(agent_id):
            self._services.restart_count(agent_id)
            await self._manager.resume(agent_id)
            return
        # After a restart the frozen agent is only in the store; persisted as running again at once.
        snap = await trio.to_thread.run_sync(self._store.load_agent, agent_id)
        await self._manager.start(snap, persist=True)

    async def adopt(self, agent: FrozenAgent, generation: int) -> None:
        if self._manager.is_known(agent.agent_id):
            return
        await trio.to_thread.run_sync(self._records.set_meta, agent.agent_id, replace(agent.meta, llm_models=()))
        await trio.to_thread.run_sync(self._records.set, agent.agent_id, list(agent.meta.llm_models))
        await self._relay.adopted(agent.agent_id, generation)
        self._services.forget(agent.agent_id)  # a fresh incarnation: replay counts its steps from zero
        self._mover.arrived(agent.agent_id)
        await self._manager.adopt(agent.snapshot)
        log.info("adopted agent %s (generation %d, %d journaled host calls)", agent.agent_id, generation, len(agent.snapshot.journal))

    async def handed_over(self, agent_id: str, generation: int, to: PeerId) -> None:
        """The handoff of ``agent_id`` at ``generation`` to ``to`` committed on this side (also on recovery)."""
        await self._relay.handed_over(agent_id, generation, to)

    async def release(self, agent_id: str) -> None:
        if self._manager.is_known(agent_id):
            self._manager.forget(agent_id)
        await trio.to_thread.run_sync(lambda: self._store.set_status(agent_id, "moved"))

    def holds(self, agent_id: str) -> bool:
        return self._manager.is_known(agent_id)

    def frozen_in_store(self, agent_id: str) -> bool:
        return not self._manager.is_known(agent_id) and self._store.status_of(agent_id) == "suspended"

    def has_tool(self, sha256_prefix: str) -> bool:
        return self._manager.tools.store.has_prefix(sha256_prefix)

    def has_module(self, sha256: str) -> bool:
        return self._manager.modules.get(sha256) is not None or self._store.get_module(sha256) is not None

"""Agents on a node: the runtime's manager and the node's parts around it.

:class:`NodeAgents` composes

* the runtime's :class:`~meshagent.runtime.manager.AgentManager` (sandboxes,
  journals, the sqlite store),
* :class:`~meshagent.node.services.NodeServices` (the ``mesh`` imports on this
  node's models), whose placer is the :class:`~meshagent.node.mover.Mover`:
  it auctions a step that should not run here and moves the agent to the winner,
* :class:`~meshagent.node.custody.NodeCustody`, what the handoff manager may do
  to this node's agents,
* the :class:`~meshagent.node.results.ResultsRelay` (``/meshagent/result/2``):
  an agent that ends away from its owner's node reports its outcome there, only
  the agent's holder is believed, and a waiter hears of a result at once,
* :class:`~meshagent.node.records.AgentRecords`: owner, privacy class and policy,
  families, placements,

and the control operations over them (``run``, ``agents``, ``logs``, ``result``, ...).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trio

from meshagent.config import Config, user_cache_dir
from meshagent.errors import AgentNotFound, ControlError, MeshError
from meshagent.net.host import MeshHost
from meshagent.node.control import Emit, Handler
from meshagent.node.custody import NodeCustody
from meshagent.node.models import NodeModels
from meshagent.node.mover import Mover
from meshagent.node.placement import PlacementService
from meshagent.node.records import AgentRecords
from meshagent.node.results import ResultsRelay
from meshagent.node.services import NodeServices, StepRecord
from meshagent.node.snapshots import AgentMeta
from meshagent.node.store import NodeStore
from meshagent.node.tool_exchange import TOOL_PROTOCOL, ToolExchange
from meshagent.node.trust import TrustStore
from meshagent.protocol.scoring import PRIVACY_CLASSES
from meshagent.protocol.signed import PeerId
from meshagent.runtime.control_ops import control_handlers
from meshagent.runtime.ids import new_agent_id
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache, engine_for
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.tools.runtime import ToolRuntime
from meshagent.runtime.tools.spec import ToolNeeds

__all__ = ["NodeAgents"]

log = logging.getLogger(__name__)

_ENDED = ("exited", "failed", "killed")


class NodeAgents:
    def __init__(
        self,
        config: Config,
        data_dir: Path,
        *,
        host: MeshHost,
        models: NodeModels,
        placement: PlacementService,
        trust: TrustStore,
        addrs: Callable[[PeerId], tuple[str, ...]] = lambda peer: (),
    ) -> None:
        """``addrs(peer)``: a peer's advertised addresses, to reach an owner this node is not connected to."""
        self._host = host
        self._placement = placement
        self.store = NodeStore.open(data_dir)
        self.records = AgentRecords(self.store, host.peer_id)
        self.relay = ResultsRelay(self.store, self.records, host=host, trusted=lambda peer: peer in trust,
                                  addrs=addrs)
        self.mover = Mover(self.records, placement=placement, trust=trust, tool_needs=self._tool_needs,
                           migrate=lambda params, emit: self.handoff.migrate(params, emit))
        self.services = NodeServices(models, placer=self.mover.place, on_fork=self.record_children, step_log=self.records,
                                     on_step=self._step_ended)
        self._steps_ended, self._steps_to_report = trio.open_memory_channel[str](math.inf)
        self.manager = AgentManager(
            modules=ModuleCache(engine_for(config.sandbox.stack_bytes), user_cache_dir() / "modules"),
            services=self.services,
            limits=config.sandbox,
            store=self.store,
            remote_result=self.remote_stdout,
            tools=ToolRuntime.create(data_dir / "tools"),
            quota_of=self._slot_owner,
        )
        self.custody = NodeCustody(manager=self.manager, store=self.store, records=self.records, services=self.services,
                                   relay=self.relay, mover=self.mover)
        self.handoff: Any = None
        """The node's HandoffManager (set by the node before :meth:`run`)."""
        self._token: trio.lowlevel.TrioToken | None = None

    # --- records (for the API, the dashboard and tests) ------------------------------------

    @property
    def moves(self) -> Any:
        """Handoffs this node made for placement (bytes, seconds), for the timeline."""
        return self.mover.moves

    def meta(self, agent_id: str) -> AgentMeta:
        return self.records.meta(agent_id)

    def set_meta(self, agent_id: str, meta: AgentMeta) -> None:
        self.records.set_meta(agent_id, meta)

    async def delete(self, agent_id: str) -> None:
        """Remove an ended agent and everything this node stored about it (journal, files, outputs, result,
        metadata, placements, custody), the deleted bytes overwritten in the store and its write-ahead log."""
        self.mover.forget(agent_id)  # before the record goes: the move driver looks each one up
        await self.manager.delete(agent_id)

        def forget() -> None:
            self.records.forget_all(agent_id)
            self.relay.forget(agent_id)
            self.store.scrub()

        await trio.to_thread.run_sync(forget)

    def placements(self, agent_id: str) -> list[dict[str, Any]]:
        return self.records.placements(agent_id)

    def children(self, parent_id: str) -> list[str]:
        return self.records.children(parent_id)

    def record_children(self, parent_id: str, child_ids: list[str]) -> None:
        """A fork (on the agent's thread): the family is recorded, and an owner elsewhere told of it."""
        meta = self.records.record_children(parent_id, child_ids)
        self.relay.forked(parent_id, child_ids, meta.owner)

    def _slot_owner(self, agent_id: str) -> str | None:
        """The runtime's slot quota key: ``None`` for agents of this node and its paired devices, else their owner."""
        owner = self.meta(agent_id).owner
        return None if self.mover.owner_device(owner) else owner

    def _tool_needs(self, agent_id: str) -> ToolNeeds:
        """What the agent's declared WASI tools need from the node that hosts it."""
        return self.manager.agent(agent_id).manifest.needs() if self.manager.is_known(agent_id) else ToolNeeds()

    async def request_auction(self, agent_id: str) -> None:
        """``meshagent migrate AGENT --auction``: auction the agent's next LLM step."""
        self.mover.request_auction(agent_id, self.manager)

    # --- results ------------------------------------------------------------------------

    def result(self, agent_id: str) -> dict[str, Any] | None:
        """The stored result (blocking)."""
        found = self.relay.result(agent_id)
        return None if found is None else found.to_json()

    async def wait_result(self, agent_id: str) -> dict[str, Any]:
        """The final outcome of an agent, wherever it ran (this node must own it, or hold it)."""
        return await self.relay.wait(agent_id)

    async def remote_stdout(self, child_id: str) -> bytes:
        """For ``mesh_join`` of a child that moved away: its stdout once it ended."""
        result = await self.relay.wait(child_id)
        return str(result["stdout"]).encode()

    def _step_ended(self, record: StepRecord) -> None:
        """A live step ended (in the agent's thread): report it at once if this node won it, so the
        auctioneer hears the truth and the capacity the bid reserved is free for the next call."""
        if self._token is None:
            return
        try:
            trio.from_thread.run_sync(self._steps_ended.send_nowait, record.agent_id, trio_token=self._token)
        except trio.RunFinishedError:  # the node is stopping: the step's answer matters, its report does not
            pass

    async def _report_steps(self) -> None:
        """Tell auctioneers how long the steps they awarded here really took (reputation)."""
        async for agent_id in self._steps_to_report:
            await self._placement.report_step(agent_id)

    async def _watch_endings(self) -> None:
        """Save the result of every agent that ends here, and owe it to its owner when that is another node."""
        saved: set[str] = set()
        while True:
            ended = [i.agent_id for i in self.manager.agents() if i.status in _ENDED and i.agent_id not in saved]
            if not ended:  # nothing awaited since the look: no ending can slip in before the wait
                await self.manager.changed()
                continue
            for agent_id in ended:
                saved.add(agent_id)
                try:
                    outcome = self.manager.outcome(agent_id)
                except AgentNotFound:  # forgotten meanwhile
                    continue
                await self._ended(outcome)
                self.services.retire(agent_id)  # its conversations stay a while for prefix reuse

    async def _ended(self, outcome: Outcome) -> None:
        owner = await trio.to_thread.run_sync(self.relay.save_ended, outcome)
        self.relay.ended(outcome.agent_id, owner)

    async def _recover_results(self) -> None:
        """After a restart: save the results of agents that ended just before the crash."""
        for outcome in await trio.to_thread.run_sync(self._unsaved_outcomes):
            log.info("saving the result of %s, which ended before the restart", outcome.agent_id)
            await self._ended(outcome)

    def _unsaved_outcomes(self) -> list[Outcome]:
        out = []
        for info in self.manager.stored_agents():
            if info.status in _ENDED and self.relay.result(info.agent_id) is None:
                stdout, stderr = self.manager.stored_outputs(info.agent_id) or (b"", b"")
                out.append(Outcome(info.agent_id, info.parent_id, info.status, info.exit_code, stdout, stderr,
                                   info.host_calls, error_text=info.error))
        return out

    # --- control ops -------------------------------------------------------------------------

    def _away(self, agent: dict[str, Any]) -> None:
        """An agent of this node held elsewhere: ``held_by`` (where it is or ended), and once its result
        came back, ``ended`` (how it ended there) with its exit code. Its ``status`` stays this node's
        own (``moved``: not here). Blocking."""
        custody = self.relay.custody(agent["agent_id"])
        if custody is None or custody.holder == self._host.peer_id:
            return
        agent["held_by"] = custody.holder
        found = self.relay.result(agent["agent_id"])
        if found is not None and agent["status"] == "moved":
            agent.update(ended=found.status, exit_code=found.exit_code, error=found.error)

    def handlers(self) -> Mapping[str, Handler]:
        ops = dict(control_handlers(self.manager))
        runtime_run, runtime_agents, runtime_logs = ops["run"], ops["agents"], ops["logs"]

        async def run(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            privacy = str(params.get("privacy", "private"))
            policy = str(params.get("policy", "latency"))
            if privacy not in PRIVACY_CLASSES:
                raise ControlError(f"privacy must be one of {', '.join(PRIVACY_CLASSES)}")
            # Recorded before the agent starts: its first step must already see its privacy and policy.
            agent_id = new_agent_id()
            await trio.to_thread.run_sync(self.set_meta, agent_id, AgentMeta(self._host.peer_id, privacy, policy))
            try:
                result = await runtime_run({**params, "wait": False, "agent_id": agent_id}, emit)
            except MeshError:  # nothing started (a bad path, module or parameter): no record left behind
                await trio.to_thread.run_sync(self.records.forget_meta, agent_id)
                raise
            root = result["agent_id"]
            if params.get("wait", True) is False:
                return result
            outcomes = await self._wait_family(root, emit)
            return {"agent_id": root, "agents": outcomes}

        async def agents(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            listed = await runtime_agents(params, emit)
            for a in listed["agents"]:
                a["placements"] = await trio.to_thread.run_sync(self.placements, a["agent_id"])
                meta = self.meta(a["agent_id"])
                a.update(owner=meta.owner, privacy=meta.privacy, policy=meta.policy, node=self._host.peer_id)
                await trio.to_thread.run_sync(self._away, a)
            return listed

        async def logs(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            agent_id = str(params.get("agent_id", ""))
            if not self.manager.is_known(agent_id):  # ended or held elsewhere: its relayed result, if any
                found = await trio.to_thread.run_sync(self.relay.result, agent_id)
                if found is not None and found.agent_id == agent_id:
                    return {"agent_id": agent_id, "status": found.status, "stdout": found.stdout.decode("utf-8", "replace"),
                            "stderr": found.stderr.decode("utf-8", "replace")}
            return await runtime_logs(params, emit)

        async def migrate_auction(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            agent_id = str(params.get("agent") or params.get("agent_id") or "")
            await self.request_auction(agent_id)
            return {"agent": agent_id, "auction": "at its next LLM step"}

        async def result(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            agent_id = str(params.get("agent_id", ""))
            if params.get("wait"):
                return await self.wait_result(agent_id)
            found = await trio.to_thread.run_sync(self.result, agent_id)
            if found is not None:
                return found
            custody = await trio.to_thread.run_sync(self.relay.custody, agent_id)
            where = f" (it runs on {custody.holder})" if custody is not None and custody.holder != self._host.peer_id else ""
            raise AgentNotFound(f"no result for {agent_id} yet{where}; wait for it with: meshagent result {agent_id} --wait")

        async def steps(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            return {
                "node": self._host.peer_id,
                "steps": [asdict(r) for r in self.services.steps],
                "moves": list(self.moves),
            }

        async def owed(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            rows = await trio.to_thread.run_sync(self.relay.owed)
            return {"owed": [{"owner": o, "kind": k, "agent_id": a} for o, k, a in rows], "refused": self.relay.refused}

        ops.update(run=run, agents=agents, logs=logs, migrate_auction=migrate_auction, result=result, steps=steps,
                   results_owed=owed)
        return ops

    async def _wait_family(self, root: str, emit: Emit) -> list[dict[str, Any]]:
        """Outcomes of ``root`` and its descendants, wherever they ended; ``emit`` hears where one went."""

        async def moved(agent_id: str, holder: PeerId) -> None:
            try:
                await emit({"moved": agent_id, "to": holder})
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; the agent carries on

        out: list[dict[str, Any]] = []
        queue = [root]
        while queue:
            agent_id = queue.pop(0)
            res = await self.relay.wait(agent_id, moved)
            out.append(res)
            queue.extend(c for c in res.get("children", []) if c not in queue)
        return out

    # --- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        tools = ToolExchange(self._host, self.manager.tools.store)
        self._host.set_handler(TOOL_PROTOCOL, tools.serve)
        self.manager.tools.store.fetcher = tools.fetcher(self._token)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.relay.run)
                await nursery.start(self.manager.run)
                await nursery.start(self.mover.run, self.manager, self._resume_after_failed_move)
                nursery.start_soon(self._watch_endings)
                nursery.start_soon(self._recover_results)
                nursery.start_soon(self._report_steps)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.store.close)

    async def _resume_after_failed_move(self, agent_id: str) -> None:
        if self.manager.is_known(agent_id):
            self.services.restart_count(agent_id)
            await self.manager.resume(agent_id)

    def busy_s(self) -> float:
        """Rough seconds of queued work, for bids: running agents times a typical step."""
        return 2.0 * sum(1 for a in self.manager.agents() if a.status == "running")

    def load(self) -> int:
        return sum(1 for a in self.manager.agents() if a.status == "running")

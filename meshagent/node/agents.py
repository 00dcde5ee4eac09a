"""Agents on a node: the runtime's manager, placement of their LLM steps, handoffs, results.

:class:`NodeAgents` composes

* the runtime's :class:`~meshagent.runtime.manager.AgentManager` (sandboxes,
  journals, the sqlite store),
* :class:`~meshagent.node.services.NodeServices` (the ``mesh`` imports on this
  node's models), whose placer runs an auction when a step should not run
  here and raises ``Suspend`` when a peer wins,
* the :class:`~meshagent.node.handoff.HandoffManager`, through the
  :class:`AgentCustody` implemented here, which moves a suspended agent to
  the winner,
* the results relay (``/meshagent/result/1``): an agent that ends away from
  its owner's node reports its outcome there, and any node can ask the owner
  for it (``mesh_join`` of a child that moved, ``meshagent run`` of an agent
  that moved).

Agent metadata (owner, privacy class, policy) and relayed results live in the
node store (component ``placement``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import trio

from meshagent.config import Config, user_cache_dir
from meshagent.errors import AgentError, AgentNotFound, ControlError, MeshError, RemoteProtocolError
from meshagent.net.host import MeshHost, Stream
from meshagent.node.control import Emit, Handler
from meshagent.node.models import NodeModels
from meshagent.node.placement import PlacementService, StepRequest
from meshagent.protocol.auction import StepSituation, why_auction
from meshagent.node.services import NodeServices, StepRecord
from meshagent.node.snapshots import AgentMeta, FrozenAgent
from meshagent.node.store import NodeStore
from meshagent.node.tool_exchange import TOOL_PROTOCOL, ToolExchange
from meshagent.node.trust import TrustStore
from meshagent.protocol import codec
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.scoring import PRIVACY_CLASSES
from meshagent.protocol.signed import PeerId
from meshagent.runtime.control_ops import control_handlers
from meshagent.runtime.ids import new_agent_id
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache, engine_for
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.services import LlmOptions, Suspend
from meshagent.runtime.tools.runtime import ToolRuntime
from meshagent.runtime.tools.spec import ToolNeeds

__all__ = ["RESULT_PROTOCOL", "NodeAgents", "stricter"]

log = logging.getLogger(__name__)

RESULT_PROTOCOL: Final = "/meshagent/result/1.0.0"
_PRIVACY_ORDER: Final = {"any": 0, "lan": 1, "private": 2}
_BATTERY_FLOOR: Final = 20.0
_MAX_RESULT: Final = 4 << 20

_SCHEMA: Final = (
    """CREATE TABLE agent_meta (
        agent_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        privacy TEXT NOT NULL,
        policy TEXT NOT NULL)""",
    """CREATE TABLE results (
        agent_id TEXT PRIMARY KEY,
        result BLOB NOT NULL,
        received REAL NOT NULL)""",
    """CREATE TABLE llm_steps (
        agent_id TEXT PRIMARY KEY,
        models BLOB NOT NULL)""",
    """CREATE TABLE children (
        parent_id TEXT NOT NULL,
        child_id TEXT PRIMARY KEY)""",
    """CREATE TABLE placements (
        agent_id TEXT NOT NULL,
        at REAL NOT NULL,
        peer TEXT NOT NULL,
        reason TEXT NOT NULL)""",
)


def stricter(a: str, b: str) -> str:
    """The stricter of two privacy classes."""
    return a if _PRIVACY_ORDER.get(a, 2) >= _PRIVACY_ORDER.get(b, 2) else b


@dataclass(frozen=True, slots=True)
class _Move:
    to: PeerId
    reason: str


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
    ) -> None:
        self._config = config
        self._host = host
        self._models = models
        self._placement = placement
        self._trust = trust
        self.store = NodeStore.open(data_dir)
        self.store.ensure_schema("placement", 1, _SCHEMA)
        with self.store.transaction() as db:  # results not yet delivered to their owner (survives a crash)
            db.execute("CREATE TABLE IF NOT EXISTS unreported (agent_id TEXT PRIMARY KEY, owner TEXT NOT NULL)")
        self.services = NodeServices(models, placer=self._place, on_fork=self.record_children, step_log=self,
                                     on_step=self._step_ended)
        self._steps_ended, self._steps_to_report = trio.open_memory_channel[str](math.inf)
        self.manager = AgentManager(
            modules=ModuleCache(engine_for(config.sandbox.stack_bytes), user_cache_dir() / "modules"),
            services=self.services,
            limits=config.sandbox,
            store=self.store,
            remote_result=self.remote_stdout,
            tools=ToolRuntime.create(data_dir / "tools"),
        )
        self.handoff: Any = None
        """The node's HandoffManager (set by the node before :meth:`run`)."""
        self._token: trio.lowlevel.TrioToken | None = None
        self._moves: dict[str, _Move] = {}
        self._excluded: dict[str, frozenset[PeerId]] = {}
        self._forced: set[str] = set()
        self._results_changed = trio.Event()
        self._meta_cache: dict[str, AgentMeta] = {}
        self.moves: deque[dict[str, Any]] = deque(maxlen=1000)
        """Handoffs this node made for placement (bytes, seconds), for the timeline."""

    # --- metadata ---------------------------------------------------------------------

    def meta(self, agent_id: str) -> AgentMeta:
        cached = self._meta_cache.get(agent_id)
        if cached is not None:
            return cached
        with self.store.transaction() as db:
            row = db.execute("SELECT owner, privacy, policy FROM agent_meta WHERE agent_id = ?", (agent_id,)).fetchone()
        if row is None:  # not cached: the strictest default must not outlive a record made later
            return AgentMeta(owner=self._host.peer_id, privacy="private", policy="latency")
        meta = self._meta_cache[agent_id] = AgentMeta(*row)
        return meta

    def set_meta(self, agent_id: str, meta: AgentMeta) -> None:
        self._meta_cache[agent_id] = meta
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO agent_meta VALUES (?, ?, ?, ?)", (agent_id, meta.owner, meta.privacy, meta.policy))

    def _forget_meta(self, agent_id: str) -> None:
        self._meta_cache.pop(agent_id, None)
        with self.store.transaction() as db:
            db.execute("DELETE FROM agent_meta WHERE agent_id = ?", (agent_id,))

    # StepLog: which model answered each LLM step (persisted; travels in the snapshot meta)
    def get(self, agent_id: str) -> list[str]:
        with self.store.transaction() as db:
            row = db.execute("SELECT models FROM llm_steps WHERE agent_id = ?", (agent_id,)).fetchone()
        if row is None:
            return []
        value = codec.decode(row[0], max_size=1 << 20, max_depth=2)
        return [str(v) for v in value] if isinstance(value, list) else []

    def set(self, agent_id: str, models: list[str]) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO llm_steps VALUES (?, ?)", (agent_id, codec.encode(list(models))))

    def _record_placement(self, agent_id: str, peer: str, reason: str) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO placements VALUES (?, ?, ?, ?)", (agent_id, time.time(), peer, reason))

    def placements(self, agent_id: str) -> list[dict[str, Any]]:
        with self.store.transaction() as db:
            rows = db.execute("SELECT at, peer, reason FROM placements WHERE agent_id = ? ORDER BY at", (agent_id,)).fetchall()
        return [{"at": at, "peer": peer, "reason": reason} for at, peer, reason in rows]

    # --- placement (runs on the agent's worker thread) ------------------------------------

    def _owner_device(self, owner: str) -> bool:
        return owner == self._host.peer_id or owner in self._trust

    def _tool_needs(self, agent_id: str) -> ToolNeeds:
        """What the agent's declared WASI tools need from the node that hosts it."""
        return self.manager.agent(agent_id).manifest.needs() if self.manager.is_known(agent_id) else ToolNeeds()

    def _step_privacy(self, agent_id: str, meta: AgentMeta, options: LlmOptions) -> str:
        """The step's privacy class; an agent that declares a private tool stays on its owner's devices."""
        privacy = stricter(meta.privacy, options.privacy)
        return stricter(privacy, "private") if self._tool_needs(agent_id).private else privacy

    def _trigger(self, agent_id: str, request: StepRequest, local: ModelAd | None) -> str | None:
        """Why this step should be auctioned, or None to run it here (:func:`why_auction`)."""
        meta = self.meta(agent_id)
        own = self._placement.own_advert()
        deadline = request.deadline_s
        return why_auction(StepSituation(
            forced=agent_id in self._forced,
            requirement=request.requirement,
            has_model=local is not None,
            private_away=request.privacy == "private" and not self._owner_device(meta.owner),
            on_battery=own.hardware.on_battery,
            battery_percent=own.hardware.battery_percent,
            hot=self._placement.hot(),
            deadline_s=deadline,
            local_estimate_s=self._placement.local_estimate_s(request) if deadline and local is not None else None,
            won_here=self._placement.won(agent_id),
        ), battery_floor=_BATTERY_FLOOR)

    def _place(self, agent_id: str, options: LlmOptions, prompt_tokens: int, local: ModelAd | None, step: int) -> None:
        meta = self.meta(agent_id)
        needs = self._tool_needs(agent_id)
        request = StepRequest(
            agent_id=agent_id,
            requirement=options.model,
            context_tokens=prompt_tokens,
            output_tokens=options.max_tokens,
            privacy=self._step_privacy(agent_id, meta, options),
            tool_memory_bytes=needs.memory_bytes,
            tool_fuel=needs.fuel,
            policy=meta.policy,
            owner=meta.owner,
            deadline_s=options.deadline_s or None,
        )
        reason = self._trigger(agent_id, request, local)
        if reason is None:
            return
        assert self._token is not None
        exclude = self._excluded.get(agent_id, frozenset())
        decision = trio.from_thread.run(
            lambda: self._placement.run_auction(request, exclude=exclude, trigger=reason, step_index=step), trio_token=self._token
        )
        self._forced.discard(agent_id)
        if decision.winner is None or decision.winner == self._host.peer_id:
            if local is None:
                raise AgentError(f"no peer can run this step ({decision.reason})")
            return
        self._moves[agent_id] = _Move(decision.winner, f"{reason}; {decision.reason}")
        raise Suspend(f"step placed on {decision.winner}: {decision.reason}")

    # --- the migration driver ---------------------------------------------------------------

    async def _drive_moves(self) -> None:
        while True:
            for agent_id, move in list(self._moves.items()):
                if self.manager.is_active(agent_id):
                    continue
                del self._moves[agent_id]
                self._nursery.start_soon(self._move, agent_id, move)
            await self.manager.changed()

    async def _move(self, agent_id: str, move: _Move) -> None:
        async def quiet(event: dict[str, Any]) -> None:
            return None

        try:
            result = await self.handoff.migrate({"agent": agent_id, "to": move.to}, quiet)
            await trio.to_thread.run_sync(self._record_placement, agent_id, move.to, move.reason)
            self.moves.append({"agent_id": agent_id, "to": move.to, "bytes": result["bytes"], "seconds": result["seconds"],
                               "via": result["via"], "sealed": True, "at": time.time()})
            log.info("agent %s moved to %s (%d bytes sealed, %.2f s)", agent_id, move.to, result["bytes"], result["seconds"])
        except (MeshError, OSError) as exc:
            log.warning("moving %s to %s failed (%s); it stays here and tries other peers", agent_id, move.to, exc)
            self._excluded[agent_id] = self._excluded.get(agent_id, frozenset()) | {move.to}
            self._placement.handoff_failed(agent_id)
            if self.manager.is_known(agent_id):
                self.services.restart_count(agent_id)
                await self.manager.resume(agent_id)

    async def request_auction(self, agent_id: str) -> None:
        """``meshagent migrate AGENT --auction``: auction the agent's next LLM step."""
        if not self.manager.is_known(agent_id):
            raise AgentNotFound(f"no agent {agent_id} on this node")
        self._forced.add(agent_id)

    # --- custody (for the handoff manager) --------------------------------------------------

    async def freeze(self, agent_id: str) -> FrozenAgent:
        snap = await self.manager.suspend(agent_id, "frozen for a handoff")
        if snap.module is None:
            wasm = await trio.to_thread.run_sync(self.store.get_module, snap.module_sha256)
            snap = replace(snap, module=wasm)
        meta = replace(self.meta(agent_id), llm_models=tuple(await trio.to_thread.run_sync(self.get, agent_id)))
        return FrozenAgent(snapshot=snap, meta=meta)

    async def thaw(self, agent_id: str) -> None:
        if self.manager.is_known(agent_id):
            self.services.restart_count(agent_id)
            await self.manager.resume(agent_id)
            return
        # After a restart the frozen agent is only in the store; persisted as running again at once.
        snap = await trio.to_thread.run_sync(self.store.load_agent, agent_id)
        await self.manager.start(snap, persist=True)

    async def adopt(self, agent: FrozenAgent, generation: int) -> None:
        if self.manager.is_known(agent.agent_id):
            return
        await trio.to_thread.run_sync(self.set_meta, agent.agent_id, replace(agent.meta, llm_models=()))
        await trio.to_thread.run_sync(self.set, agent.agent_id, list(agent.meta.llm_models))
        self.services.forget(agent.agent_id)  # a fresh incarnation: replay counts its steps from zero
        self._excluded.pop(agent.agent_id, None)
        await self.manager.adopt(agent.snapshot)
        log.info("adopted agent %s (generation %d, %d journaled host calls)", agent.agent_id, generation, len(agent.snapshot.journal))

    async def release(self, agent_id: str) -> None:
        if self.manager.is_known(agent_id):
            self.manager.forget(agent_id)
        await trio.to_thread.run_sync(lambda: self.store.set_status(agent_id, "moved"))

    def holds(self, agent_id: str) -> bool:
        return self.manager.is_known(agent_id)

    def frozen_in_store(self, agent_id: str) -> bool:
        return not self.manager.is_known(agent_id) and self.store.status_of(agent_id) == "suspended"

    def has_tool(self, sha256_prefix: str) -> bool:
        return self.manager.tools.store.has_prefix(sha256_prefix)

    def has_module(self, sha256: str) -> bool:
        return self.manager.modules.get(sha256) is not None or self.store.get_module(sha256) is not None

    # --- results ------------------------------------------------------------------------

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

    async def _report_loop(self) -> None:
        """Send the outcome of agents that end here but belong to another node to their owner."""
        reported: set[str] = set()
        while True:
            for info in self.manager.agents():
                if info.agent_id in reported or info.status not in ("exited", "failed", "killed"):
                    continue
                outcome = self.manager.outcome(info.agent_id)
                await self._ended(outcome)
                reported.add(info.agent_id)
                self.services.retire(info.agent_id)  # its conversations stay a while for prefix reuse
            await self.manager.changed()

    async def _ended(self, outcome: Outcome) -> None:
        """Save an agent's result here and, when it belongs to another node, deliver it (durably marked)."""
        owner = self.meta(outcome.agent_id).owner
        away = bool(owner) and owner != self._host.peer_id
        await trio.to_thread.run_sync(self._save_result, outcome, owner if away else None)
        if away:
            self._nursery.start_soon(self._send_result, PeerId(owner), outcome.agent_id)

    async def _recover_results(self) -> None:
        """After a restart: save the results of agents that ended just before the crash, and deliver
        every result a crash kept from its owner — else the owner would wait for it forever."""
        for outcome in await trio.to_thread.run_sync(self._unsaved_outcomes):
            log.info("saving the result of %s, which ended before the restart", outcome.agent_id)
            await self._ended(outcome)
        for agent_id, owner in await trio.to_thread.run_sync(self._unreported):
            self._nursery.start_soon(self._send_result, PeerId(owner), agent_id)

    def _unsaved_outcomes(self) -> list[Outcome]:
        with self.store.transaction() as db:
            saved = {r[0] for r in db.execute("SELECT agent_id FROM results")}
        out = []
        for info in self.manager.stored_agents():
            if info.status in ("exited", "failed", "killed") and info.agent_id not in saved:
                stdout, stderr = self.manager.stored_outputs(info.agent_id) or (b"", b"")
                out.append(Outcome(info.agent_id, info.parent_id, info.status, info.exit_code, stdout, stderr,
                                   info.host_calls, error_text=info.error))
        return out

    def _unreported(self) -> list[tuple[str, str]]:
        with self.store.transaction() as db:
            return [(r[0], r[1]) for r in db.execute("SELECT agent_id, owner FROM unreported")]

    async def _send_result(self, owner: PeerId, agent_id: str) -> None:
        saved = await trio.to_thread.run_sync(self._saved_raw, agent_id)
        if saved is None:
            return
        payload = codec.encode({"t": "result", "result": codec.decode_map(saved, max_size=_MAX_RESULT)})
        delay = 0.5
        while True:
            try:
                self._host.forget_failures(owner)  # it may have just restarted
                with trio.fail_after(10):
                    stream = await self._host.open_stream(owner, RESULT_PROTOCOL)
                    await stream.send_frame(payload)
                    await stream.receive_frame(64)
                    await stream.close()
                await trio.to_thread.run_sync(self._delivered, agent_id)
                return
            except Exception as exc:  # the owner may be away: retry with backoff
                log.debug("reporting %s to %s failed: %s", agent_id, owner, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _saved_raw(self, agent_id: str) -> bytes | None:
        with self.store.transaction() as db:
            row = db.execute("SELECT result FROM results WHERE agent_id = ?", (agent_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def _delivered(self, agent_id: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM unreported WHERE agent_id = ?", (agent_id,))

    def record_children(self, parent_id: str, child_ids: list[str]) -> None:
        """A fork: remember the family, and the children inherit the parent's owner, privacy and policy."""
        meta = self.meta(parent_id)
        with self.store.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO children VALUES (?, ?)", [(parent_id, c) for c in child_ids])
        for child in child_ids:
            self.set_meta(child, meta)

    def children(self, parent_id: str) -> list[str]:
        with self.store.transaction() as db:
            return [r[0] for r in db.execute("SELECT child_id FROM children WHERE parent_id = ? ORDER BY rowid", (parent_id,))]

    def _save_result(self, outcome: Outcome, owner: str | None = None) -> None:
        """Persist the result; with ``owner``, also mark it for delivery there (in the same transaction)."""
        wire = _outcome_wire(outcome, self.children(outcome.agent_id))
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (outcome.agent_id, codec.encode(wire), time.time()))
            if owner is not None:
                db.execute("INSERT OR REPLACE INTO unreported VALUES (?, ?)", (outcome.agent_id, owner))

    def result(self, agent_id: str) -> dict[str, Any] | None:
        with self.store.transaction() as db:
            row = db.execute("SELECT result FROM results WHERE agent_id = ?", (agent_id,)).fetchone()
        return _outcome_from_wire(codec.decode_map(row[0], max_size=_MAX_RESULT)) if row else None

    async def _serve_results(self, stream: Stream) -> None:
        with trio.fail_after(30):
            msg = codec.decode_map(await stream.receive_frame(_MAX_RESULT), max_size=_MAX_RESULT, max_depth=4)
            match codec.field(msg, "t", str):
                case "result":
                    raw = codec.field(msg, "result", dict)
                    result = _outcome_from_wire(raw)
                    if self.meta(result["agent_id"]).owner != self._host.peer_id:
                        raise RemoteProtocolError(f"{stream.peer} reported an agent this node does not own")
                    await trio.to_thread.run_sync(self._store_raw_result, result["agent_id"], codec.encode(raw))
                    self._results_changed.set()
                    self._results_changed = trio.Event()
                    await stream.send_frame(b"ok")
                case "fetch":
                    agent_id = codec.field(msg, "agent_id", str)
                    with trio.move_on_after(25):
                        while (found := await trio.to_thread.run_sync(self.result, agent_id)) is None:
                            await self._results_changed.wait()
                    await stream.send_frame(codec.encode({"result": None if found is None else _result_to_raw(found)}))
                case other:
                    raise RemoteProtocolError(f"unknown result message {other!r}")
        await stream.close()

    def _store_raw_result(self, agent_id: str, blob: bytes) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (agent_id, blob, time.time()))

    async def wait_result(self, agent_id: str) -> dict[str, Any]:
        """The final outcome of an agent, wherever it ran (this node must own it, or hold it)."""
        while True:
            found = await trio.to_thread.run_sync(self.result, agent_id)
            if found is not None:
                return found
            owner = self.meta(agent_id).owner
            if owner and owner != self._host.peer_id:
                remote = await self._fetch(PeerId(owner), agent_id)
                if remote is not None:
                    return remote
                continue
            with trio.move_on_after(1.0):
                await self._results_changed.wait()

    async def _fetch(self, owner: PeerId, agent_id: str) -> dict[str, Any] | None:
        try:
            with trio.fail_after(30):
                stream = await self._host.open_stream(owner, RESULT_PROTOCOL)
                await stream.send_frame(codec.encode({"t": "fetch", "agent_id": agent_id}))
                reply = codec.decode_map(await stream.receive_frame(_MAX_RESULT), max_size=_MAX_RESULT, max_depth=4)
                await stream.close()
        except Exception as exc:  # the owner may be unreachable for now
            log.debug("fetching the result of %s from %s failed: %s", agent_id, owner, exc)
            await trio.sleep(1.0)
            return None
        raw = reply.get("result")
        return _outcome_from_wire(raw) if isinstance(raw, dict) else None

    async def remote_stdout(self, child_id: str) -> bytes:
        """For ``mesh_join`` of a child that moved away: its stdout once it ended."""
        result = await self.wait_result(child_id)
        return result["stdout"].encode()

    # --- control ops -------------------------------------------------------------------------

    def handlers(self) -> Mapping[str, Handler]:
        ops = dict(control_handlers(self.manager))
        runtime_run = ops["run"]

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
                await trio.to_thread.run_sync(self._forget_meta, agent_id)
                raise
            root = result["agent_id"]
            if params.get("wait", True) is False:
                return result
            outcomes = await self._wait_family(root)
            return {"agent_id": root, "agents": outcomes}

        async def agents(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            listed = await ops_agents(params, emit)
            for a in listed["agents"]:
                a["placements"] = await trio.to_thread.run_sync(self.placements, a["agent_id"])
                meta = self.meta(a["agent_id"])
                a.update(owner=meta.owner, privacy=meta.privacy, policy=meta.policy, node=self._host.peer_id)
            return listed

        ops_agents = ops["agents"]

        async def migrate_auction(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            agent_id = str(params.get("agent") or params.get("agent_id") or "")
            await self.request_auction(agent_id)
            return {"agent": agent_id, "auction": "at its next LLM step"}

        async def result(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            agent_id = str(params.get("agent_id", ""))
            if params.get("wait"):
                return await self.wait_result(agent_id)
            found = await trio.to_thread.run_sync(self.result, agent_id)
            if found is None:
                raise AgentNotFound(f"no result for {agent_id} yet")
            return found

        async def steps(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            return {
                "node": self._host.peer_id,
                "steps": [asdict(r) for r in self.services.steps],
                "moves": list(self.moves),
            }

        ops.update(run=run, agents=agents, migrate_auction=migrate_auction, result=result, steps=steps)
        return ops

    async def _wait_family(self, root: str) -> list[dict[str, Any]]:
        """Outcomes of ``root`` and its descendants, wherever they ended."""
        out: list[dict[str, Any]] = []
        queue = [root]
        while queue:
            agent_id = queue.pop(0)
            res = await self.wait_result(agent_id)
            out.append(res)
            queue.extend(c for c in res.get("children", []) if c not in queue)
        return out

    # --- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._host.set_handler(RESULT_PROTOCOL, self._serve_results)
        tools = ToolExchange(self._host, self.manager.tools.store)
        self._host.set_handler(TOOL_PROTOCOL, tools.serve)
        self.manager.tools.store.fetcher = tools.fetcher(self._token)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.manager.run)
                nursery.start_soon(self._drive_moves)
                nursery.start_soon(self._report_loop)
                nursery.start_soon(self._recover_results)
                nursery.start_soon(self._report_steps)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.store.close)

    def busy_s(self) -> float:
        """Rough seconds of queued work, for bids: running agents times a typical step."""
        return 2.0 * sum(1 for a in self.manager.agents() if a.status == "running")

    def load(self) -> int:
        return sum(1 for a in self.manager.agents() if a.status == "running")


def _outcome_wire(o: Outcome, children: list[str]) -> dict[str, Any]:
    return {
        "agent_id": o.agent_id,
        "parent_id": o.parent_id or "",
        "status": o.status,
        "exit_code": -1 if o.exit_code is None else o.exit_code,
        "stdout": o.stdout,
        "stderr": o.stderr,
        "host_calls": o.host_calls,
        "error": o.error_message or "",
        "children": children,
    }


def _outcome_from_wire(m: Mapping[str | int, Any]) -> dict[str, Any]:
    try:
        children = codec.field(m, "children", list) if "children" in m else []
        return {
            "agent_id": codec.field(m, "agent_id", str),
            "parent_id": codec.field(m, "parent_id", str) or None,
            "status": codec.field(m, "status", str),
            "exit_code": None if codec.field(m, "exit_code", int) == -1 else codec.field(m, "exit_code", int),
            "stdout": codec.field(m, "stdout", bytes).decode("utf-8", "replace"),
            "stderr": codec.field(m, "stderr", bytes).decode("utf-8", "replace"),
            "host_calls": codec.field(m, "host_calls", int),
            "error": codec.field(m, "error", str) or None,
            "children": [str(c) for c in children],
        }
    except MeshError as exc:
        raise RemoteProtocolError(f"malformed agent result: {exc}") from exc


def _result_to_raw(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent_id": r["agent_id"],
        "parent_id": r["parent_id"] or "",
        "status": r["status"],
        "exit_code": -1 if r["exit_code"] is None else r["exit_code"],
        "stdout": r["stdout"].encode(),
        "stderr": r["stderr"].encode(),
        "host_calls": r["host_calls"],
        "error": r["error"] or "",
        "children": r.get("children", []),
    }

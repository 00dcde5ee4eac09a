"""The agent manager: runs a node's agents on worker threads under trio.

* Each agent runs in ``trio.to_thread.run_sync`` holding an execution slot
  (:class:`~meshagent.runtime.slots.Slots`: ``max_instances`` of them, and
  quotas for agents of other owners, whom ``quota_of`` names); a parent
  blocked in ``mesh_join`` and an agent asleep in ``poll_oneoff`` give their
  slot back while they wait, so forks cannot deadlock the node and sleepers
  cannot starve it. Each run gets the wall-clock limit ``wall_clock_s``.
* With a :class:`~meshagent.node.store.NodeStore`, every journal entry is
  appended as it happens and ``run`` resumes the agents that were running
  when the node stopped, from their last host call.
* The migration hook: :meth:`AgentManager.suspend` stops an agent at its next
  host call and returns its snapshot; :meth:`AgentManager.adopt` resumes a
  snapshot (from this node or another) by replay.

Nothing starts in ``__init__``; start :meth:`run` in a nursery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import trio

from meshagent.config import SandboxLimits
from meshagent.errors import AgentError, AgentNotFound
from meshagent.node.store import NodeStore
from meshagent.runtime.ids import AgentId, new_agent_id
from meshagent.runtime.journal import Journal
from meshagent.runtime.modules import EPOCH_TICK_S, LoadedModule, ModuleCache, advance_epochs
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.sandbox import KNOWN_IMPORTS, Agent
from meshagent.runtime.services import HostServices, Suspend, World
from meshagent.runtime.component_agent import ComponentAgent
from meshagent.runtime.components import ComponentCache, is_component
from meshagent.runtime.slots import Slots
from meshagent.runtime.supervision import AgentInfo, Supervision, AgentRecord
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.tools.runtime import ToolRuntime, default_tool_runtime, manifest_of
from meshagent.runtime.tools.store import default_build_dir, resolve_tools
from meshagent.runtime.vfs import VirtualFs

__all__ = ["AgentManager", "AgentInfo"]

log = logging.getLogger(__name__)

_SHUTDOWN = "node shutting down"


class AgentManager(Supervision):
    """Runs agents, forks and joins them, persists and restores them."""

    def __init__(
        self,
        *,
        modules: ModuleCache,
        services: HostServices | None = None,
        world: World | None = None,
        limits: SandboxLimits | None = None,
        store: NodeStore | None = None,
        verify_replay: bool = False,
        remote_result: Callable[[str], Awaitable[bytes]] | None = None,
        tools: ToolRuntime | None = None,
        quota_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """``remote_result(child_id)`` waits for a forked child that runs on another node
        (after :meth:`forget` handed it over) and returns its stdout, for ``mesh_join``.
        ``quota_of(agent_id)`` (blocking; called when an agent starts or is adopted) names the
        owner whose slot quota the agent runs under: ``None`` for agents of this node and its
        paired devices, else the other owner (children run under their parent's)."""
        self.limits = limits or SandboxLimits()
        self._remote_result = remote_result
        self.modules = modules
        self._services = services
        self._world = world
        self._store = store
        self._verify = verify_replay
        self.tools = tools or default_tool_runtime()
        self._components: ComponentCache | None = None
        """Compiled WASI tools and the tool store, shared by this manager's agents."""
        self._quota_of = quota_of
        self._records: dict[str, AgentRecord] = {}
        self._slots = Slots(self.limits)
        self._threads = trio.CapacityLimiter(1024)
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._closing = False

    # --- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._tick_epochs)
            try:
                if self._store is not None:
                    await self._resume_stored()
                task_status.started()
                await trio.sleep_forever()
            finally:
                # Running agents stop at their next host call; the store keeps them "running".
                self._closing = True
                for rec in self._records.values():
                    if rec.active:
                        self._stop(rec, _SHUTDOWN)

    async def _tick_epochs(self) -> None:
        """Keep the engines' epochs on the clock: Stores past their agent's wall-clock deadline trap."""
        while True:
            advance_epochs()
            await trio.sleep(EPOCH_TICK_S)

    async def _resume_stored(self) -> None:
        assert self._store is not None
        rows = await trio.to_thread.run_sync(self._store.agents, ("running", "ready", "idle"))
        for row in rows:
            try:
                snap = await trio.to_thread.run_sync(self._store.load_agent, row.agent_id)
                await self.start(snap, persist=False)
                log.info("resumed agent %s from %d journaled host calls", row.agent_id, row.host_calls)
            except AgentError as exc:
                log.warning("cannot resume stored agent %s: %s", row.agent_id, exc)
                await trio.to_thread.run_sync(lambda: self._store.set_status(row.agent_id, "failed", error=str(exc)))  # type: ignore[union-attr]

    # --- starting agents ----------------------------------------------------------

    async def launch(
        self,
        wasm: bytes,
        *,
        args: Sequence[str] = ("agent",),
        env: Sequence[tuple[str, str]] = (),
        vfs: VirtualFs | None = None,
        suspend_at: int | None = None,
        tools: Sequence[bytes] = (),
        agent_id: AgentId | None = None,
    ) -> AgentId:
        """Start a new agent from module bytes; returns its id (``agent_id``, or a fresh one).

        The WASI tools its manifest declares are resolved now (``tools`` given here, the
        tool store, the shipped tools) and carried in its snapshot wherever it goes. A
        caller that must record something about the agent before its first host call
        (the node: its owner and privacy) picks the id itself.
        """
        agent_id = agent_id or new_agent_id()
        if is_component(wasm):  # a Python agent
            component = await trio.to_thread.run_sync(self.components.load, wasm)
            declared = manifest_of(component.sha256, wasm)
            carried_py = await trio.to_thread.run_sync(
                lambda: resolve_tools(declared, self.tools.store, extra=tools, build_dir=default_build_dir())
            )
            snap = AgentSnapshot(agent_id=agent_id, module_sha256=component.sha256, module=wasm,
                                 journal=Journal(limit=self.limits.journal_bytes), args=tuple(args), env=tuple(env),
                                 vfs=vfs or VirtualFs(), tools=carried_py)
            return await self.start(snap, suspend_at=suspend_at)
        loaded = await trio.to_thread.run_sync(self.modules.load, wasm, KNOWN_IMPORTS)
        manifest = manifest_of(loaded.sha256, loaded.wasm)
        carried = await trio.to_thread.run_sync(
            lambda: resolve_tools(manifest, self.tools.store, extra=tools, build_dir=default_build_dir())
        )
        snap = AgentSnapshot(
            agent_id=agent_id,
            module_sha256=loaded.sha256,
            module=wasm,
            journal=Journal(limit=self.limits.journal_bytes),
            args=tuple(args),
            env=tuple(env),
            vfs=vfs or VirtualFs(),
            tools=carried,
        )
        return await self.start(snap, loaded=loaded, suspend_at=suspend_at)

    async def adopt(self, snapshot: AgentSnapshot, *, hold: bool = False) -> AgentId:
        """Resume a snapshot (from a file, the store or a peer) by replay.

        ``hold=True`` registers it without running it yet (see :meth:`release`), so a
        family can be registered before any parent replays into ``mesh_join``.
        """
        snap = replace(snapshot, status="ready")
        return await self.start(snap, hold=hold)

    def release(self, agent_id: str) -> None:
        """Start an agent registered with ``hold=True``."""
        rec = self._record(agent_id)
        if not rec.active and rec.outcome is None:
            self._launch(rec)

    async def start(self, snapshot: AgentSnapshot, *, loaded: LoadedModule | None = None,
                    suspend_at: int | None = None, persist: bool = True, hold: bool = False) -> AgentId:
        if self._nursery is None:
            raise AgentError("the agent manager is not running")
        if snapshot.agent_id in self._records:
            raise AgentError(f"agent {snapshot.agent_id} is already on this node")
        if loaded is None and snapshot.module is None and self._store is not None:
            wasm = await trio.to_thread.run_sync(self._store.get_module, snapshot.module_sha256)
            if wasm is not None:
                snapshot = replace(snapshot, module=wasm)
        agent = await trio.to_thread.run_sync(lambda: self._make_agent(snapshot, loaded))
        agent.suspend_at = suspend_at
        parent = self._records.get(snapshot.parent_id or "")
        if parent is not None:
            owner = parent.owner
        elif self._quota_of is not None:
            owner = await trio.to_thread.run_sync(self._quota_of, agent.agent_id)
        else:
            owner = None
        rec = AgentRecord(agent, owner)
        self._records[agent.agent_id] = rec
        if persist and self._store is not None:
            full = replace(snapshot, module=agent.loaded.wasm, status="running")
            await trio.to_thread.run_sync(lambda: self._store.save_agent(full))  # type: ignore[union-attr]
        if not hold:
            self._launch(rec)
        return AgentId(agent.agent_id)

    def _make_agent(self, snapshot: AgentSnapshot, loaded: LoadedModule | None) -> Agent:
        if snapshot.module is not None and is_component(snapshot.module):
            return ComponentAgent(snapshot, components=self.components, services=self._services,  # type: ignore[return-value]
                                  limits=self.limits, verify_replay=self._verify, world=self._world, tools=self.tools,
                                  hooks=self)
        return Agent(snapshot, modules=self.modules, services=self._services, limits=self.limits, hooks=self,
                     loaded=loaded, verify_replay=self._verify, world=self._world, tools=self.tools)

    @property
    def components(self) -> ComponentCache:
        """Compiled Python agents (components), cached like modules."""
        if self._components is None:
            self._components = ComponentCache(self.modules.engine, self.modules.cache_dir)
        return self._components

    def _launch(self, rec: AgentRecord) -> None:
        assert self._nursery is not None
        rec.active = True
        rec.agent.status = "running"
        self._nursery.start_soon(self._drive, rec)

    async def _drive(self, rec: AgentRecord) -> None:
        agent = rec.agent
        if await self._wait_for_slot(rec):
            agent.deadline = time.monotonic() + self.limits.wall_clock_s
            try:
                outcome = await trio.to_thread.run_sync(agent.run, limiter=self._threads)
            finally:
                agent.deadline = None
                if self._slots.holds(agent.agent_id):
                    self._slots.release(agent.agent_id)
        else:  # stopped while it waited for a slot: it stops where it stood, never having run
            agent.status = "suspended"
            outcome = agent.outcome()
        if rec.killed:
            agent.status = "killed"
            outcome = replace(outcome, status="killed")
        rec.outcome = outcome
        rec.active = False
        if self._store is not None:
            stored = outcome.status
            if outcome.status == "suspended" and (self._closing or not agent.suspend_requested):
                # Shutting down, or its host services stopped it (a placement move about to start):
                # stored as running, so a crash before the move is recorded resumes it here.
                stored = "running"
            await trio.to_thread.run_sync(
                lambda: self._store.set_status(agent.agent_id, stored, exit_code=outcome.exit_code,  # type: ignore[union-attr]
                                               error=outcome.error_message, stdout=outcome.stdout, stderr=outcome.stderr)
            )
        if outcome.status in ("exited", "failed", "killed", "idle"):
            rec.terminal.set()
        self._pulse()

    async def changed(self) -> None:
        """Return at the next change of any agent's state (for supervisors' wait loops)."""
        await self._changed.wait()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- queries and control --------------------------------------------------------

    def _record(self, agent_id: str) -> AgentRecord:
        rec = self._records.get(agent_id)
        if rec is None:
            raise AgentNotFound(f"no agent {agent_id!r} on this node (see `meshagent agents`)")
        return rec

    def agent(self, agent_id: str) -> Agent:
        return self._record(agent_id).agent

    def info(self, agent_id: str) -> AgentInfo:
        rec = self._record(agent_id)
        a = rec.agent
        error = rec.outcome.error_message if rec.outcome is not None and not rec.active else None
        slot = None
        if rec.active:
            slot = rec.waiting or ("running" if self._slots.holds(agent_id) else "waiting")
        return AgentInfo(a.agent_id, a.parent_id, a.status, len(a.journal), a.exit_code, error, a.loaded.sha256, slot)

    def slots(self) -> dict[str, object]:
        """The execution slots now: totals, held, waited for, and the active agents by what they do."""
        stats = self._slots.stats().to_json()
        for state in ("running", "sleeping", "joining", "waiting"):
            stats[state] = 0
        for agent_id, rec in self._records.items():
            if rec.active:
                state = rec.waiting or ("running" if self._slots.holds(agent_id) else "waiting")
                stats[state] = int(stats[state]) + 1  # type: ignore[call-overload]
        return stats

    def agents(self) -> list[AgentInfo]:
        """The agents in memory (call from the trio thread)."""
        return [self.info(agent_id) for agent_id in list(self._records)]

    def stored_agents(self, exclude: frozenset[str] = frozenset()) -> list[AgentInfo]:
        """Agents known only to the store, from earlier lives of the node (blocking: use a thread)."""
        if self._store is None:
            return []
        return [
            AgentInfo(r.agent_id, r.parent_id, r.status, r.host_calls, r.exit_code, r.error, r.module_sha256)
            for r in self._store.agents()
            if r.agent_id not in exclude
        ]

    def stored_outputs(self, agent_id: str) -> tuple[bytes, bytes] | None:
        """stdout/stderr of an agent known only to the store (blocking: use a thread)."""
        if self._store is None:
            return None
        if not any(r.agent_id == agent_id for r in self._store.agents()):
            return None
        return self._store.outputs(agent_id)

    def family(self, root: str) -> list[str]:
        """``root`` and all its descendants, parents before children."""
        out = [root]
        for agent_id in out:
            out.extend(cid for cid, rec in self._records.items() if rec.agent.parent_id == agent_id and cid not in out)
        return out

    def is_known(self, agent_id: str) -> bool:
        """Whether this node holds the agent (running, stopped or frozen)."""
        return agent_id in self._records

    def is_active(self, agent_id: str) -> bool:
        """Whether the agent is running now (on a worker thread)."""
        return self._record(agent_id).active

    def outcome(self, agent_id: str) -> Outcome:
        rec = self._record(agent_id)
        return rec.outcome if rec.outcome is not None and not rec.active else rec.agent.outcome()

    async def wait(self, agent_id: str) -> Outcome:
        rec = self._record(agent_id)
        while rec.active:
            await self._changed.wait()
        return self.outcome(agent_id)

    async def wait_family(self, root: str) -> list[Outcome]:
        """Wait until ``root`` and every descendant have stopped; their outcomes, root first."""
        self._record(root)
        while True:
            members = self.family(root)
            if not any(self._records[m].active for m in members):
                return [self.outcome(m) for m in members]
            await self._changed.wait()

    async def suspend(self, agent_id: str, reason: str = "suspended by the node") -> AgentSnapshot:
        """Stop the agent at its next host call; return its snapshot (the migration hook)."""
        rec = self._record(agent_id)
        if rec.active:
            self._stop(rec, reason)
            while rec.active:
                await self._changed.wait()
        if rec.agent.status == "suspended" and self._store is not None:
            # Durable before the snapshot leaves: after a crash the node must not resume an agent
            # that may already be handed over (the handoff manager decides, by its recovery rules).
            await trio.to_thread.run_sync(lambda: self._store.set_status(agent_id, "suspended"))  # type: ignore[union-attr]
        return rec.agent.snapshot()

    def forget(self, agent_id: str) -> None:
        """Drop a stopped agent from this node (after it was handed over to another node)."""
        rec = self._record(agent_id)
        if rec.active:
            raise AgentError(f"agent {agent_id} is still running; suspend it first")
        del self._records[agent_id]
        self._pulse()

    async def delete(self, agent_id: str) -> None:
        """Remove an ended agent from this node and its store: journal, memory image, files, outputs."""
        rec = self._records.get(agent_id)
        if rec is not None and rec.active:
            raise AgentError(f"agent {agent_id} is still running; kill it first")
        self._records.pop(agent_id, None)
        if self._store is not None:
            await trio.to_thread.run_sync(self._store.delete_agent, agent_id)
        self._pulse()

    def suspend_all(self, reason: str = "suspended by the node") -> None:
        for rec in self._records.values():
            if rec.active:
                self._stop(rec, reason)

    async def resume(self, agent_id: str) -> None:
        rec = self._record(agent_id)
        if rec.active:
            return
        if self._store is not None:
            # Durable before it runs again: a crash from here on resumes it at the next start.
            await trio.to_thread.run_sync(lambda: self._store.set_status(agent_id, "running"))  # type: ignore[union-attr]
            if rec.active:
                return
        rec.agent.clear_suspend()
        self._launch(rec)

    async def kill(self, agent_id: str) -> AgentInfo:
        rec = self._record(agent_id)
        rec.killed = True
        if rec.active:
            self._stop(rec, "killed")
            while rec.active:
                await self._changed.wait()
        else:
            rec.agent.status = "killed"
            rec.outcome = replace(rec.agent.outcome(), status="killed")
            rec.terminal.set()
            if self._store is not None:
                await trio.to_thread.run_sync(lambda: self._store.set_status(agent_id, "killed"))  # type: ignore[union-attr]
            self._pulse()
        return self.info(agent_id)

    async def invoke(self, agent_id: str, export: str, *args: int) -> int | float | None:
        """Call an entry point of an idle reactor agent; then store a fresh memory image."""
        rec = self._record(agent_id)
        if rec.active or rec.agent.status != "idle":
            raise AgentError(f"agent {agent_id} is {rec.agent.status}; only idle reactor agents can be invoked")
        agent = rec.agent
        rec.active = True
        agent.status = "running"
        await self._slots.acquire(agent_id, rec.owner)
        agent.deadline = time.monotonic() + self.limits.wall_clock_s
        try:
            result = await trio.to_thread.run_sync(lambda: agent.invoke(export, *args), limiter=self._threads)
            agent.status = "idle"
        except Suspend:
            agent.status = "suspended"
            raise
        except AgentError as exc:
            agent.status = "failed"
            agent.error_text = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            agent.deadline = None
            if self._slots.holds(agent_id):
                self._slots.release(agent_id)
            rec.active = False
            rec.outcome = agent.outcome()
            self._pulse()
        if self._store is not None:
            image = await trio.to_thread.run_sync(lambda: agent.snapshot(include_module=False).image)
            if image is not None:
                await trio.to_thread.run_sync(lambda: self._store.put_image(agent_id, image))  # type: ignore[union-attr]
        return result

    async def checkpoint(self, agent_id: str, label: str) -> int:
        agent = self._record(agent_id).agent
        position = agent.add_label(label)
        if self._store is not None:
            await trio.to_thread.run_sync(lambda: self._store.set_labels(agent_id, dict(agent.labels)))  # type: ignore[union-attr]
        return position

    async def rollback(self, agent_id: str, label: str) -> int:
        rec = self._record(agent_id)
        if rec.killed:
            raise AgentError(f"agent {agent_id} was killed")
        position = rec.agent.request_rollback(label)
        if not rec.active:
            rec.terminal.clear()
            rec.outcome = None
            self._launch(rec)
        return position

    async def fork(self, agent_id: str, n: int) -> list[AgentId]:
        """Clone an agent from outside: ``n`` children continue from its last host call."""
        if not 1 <= n <= 64:
            raise AgentError("fork: n must be between 1 and 64")
        parent = self._record(agent_id).agent
        base = parent.snapshot(capture_image=False)
        ids = []
        for _ in range(n):
            child = replace(base, agent_id=new_agent_id(), parent_id=agent_id, status="ready", exit_code=None, error=None)
            ids.append(await self.start(child, loaded=parent.loaded))
        return ids

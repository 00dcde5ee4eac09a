"""Running one chat completion as a mesh agent (``meshagent/agents/chat.c``), and ending its stay.

The request's transcript and options go into the agent's virtual directory;
the agent makes one ``mesh_llm`` step and prints the reply. Its metadata
(owner = this node, privacy class, policy) is stored *before* it starts, so
its very first step is placed under the request's privacy class: a step for a
model only a peer holds is auctioned and the agent moves there, sealed; the
result comes back through the results relay like any agent's.

A chat agent lives only as long as its request. Once the answer is sent it is
deleted with its files (the prompt), journal and result, or kept for
``[api] chat_retention_s`` and deleted then; a client that goes away first has
its agent stopped (killed, even while it still waits for a slot) and deleted
the same way. The agents the API started are listed in the store (table
``api_chats``, ids and times only), so one left by a restart is stopped and
deleted too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from meshagent.errors import BuildError
from meshagent.node.agents import NodeAgents
from meshagent.node.api.chat_request import ChatRequest, llm_options, render_prompt
from meshagent.node.api.errors import ApiError
from meshagent.node.placement import PlacementService
from meshagent.node.snapshots import AgentMeta
from meshagent.runtime.build import AGENTS_DIR, build_cached
from meshagent.runtime.ids import new_agent_id
from meshagent.runtime.journal import Journal
from meshagent.runtime.sandbox import KNOWN_IMPORTS
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.vfs import VirtualFs

__all__ = ["ChatReply", "ChatAgents", "CHAT_SOURCE"]

log = logging.getLogger(__name__)

CHAT_SOURCE = AGENTS_DIR / "chat.c"
_SCHEMA: Final = (
    """CREATE TABLE api_chats (
        agent_id TEXT PRIMARY KEY,
        started REAL NOT NULL,
        ended REAL)""",
)
"""The chat agents this API started; ``ended`` (wall time) when the request was over, the retention starting then."""
_RESULT_WAIT_S: Final = 30.0
"""How long a stopped agent's result may take to be saved by the node (it is deleted after that, never before)."""
_SWEEP_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class ChatReply:
    text: str
    agent_id: str
    node: str
    """Peer id of the node whose model answered (this node, or the auction's winner)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    """Token counts are known when the step ran on this node (its step log); ``None`` when a peer ran it."""


class ChatAgents:
    """Builds the chat agent once (cached in the data dir), runs one per request, and deletes it after."""

    def __init__(self, agents: NodeAgents, placement: PlacementService, peer_id: str, cache_dir: Path, *,
                 retention_s: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self._agents = agents
        self._placement = placement
        self._peer_id = peer_id
        self._cache_dir = cache_dir
        self._retention_s = retention_s
        self._clock = clock
        self._wasm: bytes | None = None
        self._lock = trio.Lock()
        self._serving: set[str] = set()
        """Agents whose request is still open: never stopped or deleted behind its back."""
        self._ending: set[str] = set()
        self._abandoned, self._to_stop = trio.open_memory_channel[str](math.inf)
        self.deleted = 0
        """Chat agents deleted since the node started."""

    async def module(self) -> bytes:
        """The chat agent's wasm, built with ``zig cc`` on first use (``BuildError`` → 503)."""
        async with self._lock:
            if self._wasm is None:
                try:
                    # zig can wait minutes for its cache lock on a busy machine: never hold up the node's exit.
                    path = await trio.to_thread.run_sync(build_cached, CHAT_SOURCE, self._cache_dir, abandon_on_cancel=True)
                except BuildError as exc:
                    raise ApiError(503, f"cannot build the chat agent: {exc}", type="server_error",
                                   code="chat_agent_unavailable") from exc
                self._wasm = await trio.to_thread.run_sync(path.read_bytes)
            return self._wasm

    async def start(self, request: ChatRequest) -> str:
        """Start the agent for ``request``; returns its id. The caller must end its stay:
        :meth:`release` once it ended, else :meth:`abandon`."""
        wasm = await self.module()
        manager = self._agents.manager
        agent_id = new_agent_id()
        self._serving.add(agent_id)
        try:
            await trio.to_thread.run_sync(self._listed, agent_id, self._clock())
            meta = AgentMeta(owner=self._peer_id, privacy=request.privacy, policy=request.policy)
            await trio.to_thread.run_sync(self._agents.set_meta, agent_id, meta)
            files = {"prompt.txt": render_prompt(request.messages).encode(), "options.txt": llm_options(request).encode()}
            loaded = await trio.to_thread.run_sync(manager.modules.load, wasm, KNOWN_IMPORTS)
            snapshot = AgentSnapshot(
                agent_id=agent_id,
                module_sha256=loaded.sha256,
                module=wasm,
                journal=Journal(limit=manager.limits.journal_bytes),
                args=("chat",),
                vfs=VirtualFs(files=files),
            )
            await manager.start(snapshot, loaded=loaded)
        except BaseException:
            self.abandon(agent_id)
            raise
        log.info("chat completion for %r runs as agent %s (privacy %s, policy %s)",
                 request.model, agent_id, request.privacy, request.policy)
        return agent_id

    def ran_on(self, agent_id: str) -> str:
        """The node that ran the agent's step: the winner of its last auction, else this node.

        (Its result can arrive before the move is recorded in the placements table,
        but never before the auction that sent it away.)"""
        for record in reversed(self._placement.history):
            if record["agent_id"] == agent_id and record["winner"]:
                return str(record["winner"])
        return self._peer_id

    async def finish(self, agent_id: str) -> ChatReply:
        """Wait for the agent's outcome wherever it ran; a failed agent is an :class:`ApiError` with its error."""
        result: dict[str, Any] = await self._agents.wait_result(agent_id)
        if result["status"] != "exited" or result["exit_code"] != 0:
            why = result.get("error") or result.get("stderr", "").strip() or f"status {result['status']}"
            raise _failure(agent_id, str(why))
        node = self.ran_on(agent_id)
        step = next((s for s in reversed(self._agents.services.steps) if s.agent_id == agent_id), None)
        return ChatReply(
            text=result["stdout"],
            agent_id=agent_id,
            node=node,
            prompt_tokens=None if step is None else step.prompt_tokens,
            completion_tokens=None if step is None else step.completion_tokens,
        )

    # --- the end of a chat agent's stay ---------------------------------------------------------

    async def release(self, agent_id: str) -> None:
        """The request got its answer (or the agent's failure): delete the agent now, or start its retention.

        Shielded and bounded: a client that leaves at this moment must not leave the prompt behind."""
        if agent_id not in self._serving:
            return
        self._serving.discard(agent_id)
        with trio.CancelScope(shield=True):
            await self._end(agent_id)

    def abandon(self, agent_id: str) -> None:
        """The request is over before its answer (the client left, a timeout): stop the agent, then as
        :meth:`release`. Never blocks, so it can run where the request is being cancelled; a no-op after
        :meth:`release`."""
        if agent_id in self._serving:
            self._serving.discard(agent_id)
            self._abandoned.send_nowait(agent_id)

    async def _end(self, agent_id: str) -> None:
        if agent_id in self._ending:
            return
        self._ending.add(agent_id)
        try:
            manager = self._agents.manager
            if manager.is_known(agent_id):
                if manager.is_active(agent_id):
                    await manager.kill(agent_id)
                    log.info("chat agent %s stopped: its client went away", agent_id)
                # The node saves every ended agent's result; deleting before that would let it be written back.
                with trio.move_on_after(_RESULT_WAIT_S):
                    await self._agents.wait_result(agent_id)
                    if self._retention_s <= 0:
                        await self._delete(agent_id)
                        return
                    await trio.to_thread.run_sync(self._ended, agent_id, self._clock())
                    return
                log.warning("chat agent %s ended but its result was not saved in time; deleting it later", agent_id)
                return
            # Not here (it ran on a peer, or never started): only this node's records of it remain.
            if self._retention_s <= 0:
                await self._delete(agent_id)
            else:
                await trio.to_thread.run_sync(self._ended, agent_id, self._clock())
        finally:
            self._ending.discard(agent_id)

    async def _delete(self, agent_id: str) -> None:
        await self._agents.delete(agent_id)
        await trio.to_thread.run_sync(self._unlisted, agent_id)
        self.deleted += 1

    async def _sweep(self) -> None:
        """Delete the agents whose retention is over; stop and end the ones no request serves (a restart)."""
        now = self._clock()
        for agent_id, ended in await trio.to_thread.run_sync(self._ledger):
            if agent_id in self._serving or agent_id in self._ending:
                continue
            if ended is None:  # each stopped in its own task: one in a long LLM step holds up no other
                self._abandoned.send_nowait(agent_id)
            elif now - ended >= self._retention_s:
                await self._delete(agent_id)

    async def _sweep_loop(self) -> None:
        interval = _SWEEP_S if self._retention_s <= 0 else min(max(self._retention_s / 4, 0.5), _SWEEP_S)
        while True:
            try:
                await self._sweep()
            except Exception:  # task boundary: a failed sweep is retried at the next one
                log.exception("deleting ended chat agents failed")
            await trio.sleep(interval)

    async def _stop(self, agent_id: str) -> None:
        try:
            await self._end(agent_id)
        except Exception:  # task boundary: the next sweep tries again
            log.exception("stopping chat agent %s failed", agent_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stop and delete abandoned chat agents as they come, and sweep ended ones."""
        store = self._agents.store
        await trio.to_thread.run_sync(store.ensure_schema, "api", 1, _SCHEMA)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep_loop)
            task_status.started()
            async for agent_id in self._to_stop:
                nursery.start_soon(self._stop, agent_id)

    # --- the list of chat agents (blocking: run in a thread) ------------------------------------

    def _listed(self, agent_id: str, now: float) -> None:
        with self._agents.store.transaction() as db:
            db.execute("INSERT INTO api_chats VALUES (?, ?, NULL)", (agent_id, now))

    def _ended(self, agent_id: str, now: float) -> None:
        with self._agents.store.transaction() as db:
            db.execute("UPDATE api_chats SET ended = ? WHERE agent_id = ? AND ended IS NULL", (now, agent_id))

    def _unlisted(self, agent_id: str) -> None:
        with self._agents.store.transaction() as db:
            db.execute("DELETE FROM api_chats WHERE agent_id = ?", (agent_id,))

    def _ledger(self) -> list[tuple[str, float | None]]:
        with self._agents.store.transaction() as db:
            return [(str(a), e) for a, e in db.execute("SELECT agent_id, ended FROM api_chats ORDER BY started")]


def _failure(agent_id: str, why: str) -> ApiError:
    """The API error for a failed chat agent. Its error crosses the sandbox and the results relay as
    ``"ErrorClass: message"`` text, so the class name is what tells the cases apart."""
    if why.startswith("ContextOverflow:"):
        return ApiError(400, f"the conversation is too long for the model: {why.split(':', 1)[1].strip()}",
                        param="messages", code="context_length_exceeded")
    if why.startswith("AgentError: no peer can run this step"):
        return ApiError(503, f"no node that this request's privacy class allows can run the step ({why}); pair a device "
                        "that holds the model (meshagent pair), or allow more with X-Meshagent-Privacy: lan or any",
                        type="mesh_error", code="no_eligible_node")
    return ApiError(502, f"the chat agent {agent_id} failed: {why}", type="mesh_error", code="agent_failed")

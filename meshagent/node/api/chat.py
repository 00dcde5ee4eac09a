"""Running one chat completion as a mesh agent (``meshagent/agents/chat.c``).

The request's transcript and options go into the agent's virtual directory;
the agent makes one ``mesh_llm`` step and prints the reply. Its metadata
(owner = this node, privacy class, policy) is stored *before* it starts, so
its very first step is placed under the request's privacy class: a step for a
model only a peer holds is auctioned and the agent moves there, sealed; the
result comes back through the results relay like any agent's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """Builds the chat agent once (cached in the data dir) and runs one per request."""

    def __init__(self, agents: NodeAgents, placement: PlacementService, peer_id: str, cache_dir: Path) -> None:
        self._agents = agents
        self._placement = placement
        self._peer_id = peer_id
        self._cache_dir = cache_dir
        self._wasm: bytes | None = None
        self._lock = trio.Lock()

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
        """Start the agent for ``request``; returns its id."""
        wasm = await self.module()
        manager = self._agents.manager
        agent_id = new_agent_id()
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

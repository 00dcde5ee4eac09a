"""The mover: placement of each LLM step, and moving an agent to the peer that won its step.

:meth:`Mover.place` is the placer of :class:`~meshagent.node.services.NodeServices`:
it runs on the agent's worker thread before each live step, decides whether the
step should be auctioned (:func:`~meshagent.protocol.auction.why_auction`),
runs the auction on the trio thread, and raises ``Suspend`` when a peer won.
:meth:`Mover.run` then hands each suspended agent to its winner through the
handoff manager; a failed move resumes the agent here and excludes that peer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from meshagent.errors import AgentError, AgentNotFound, MeshError
from meshagent.node.control import Emit
from meshagent.node.placement import PlacementService, StepRequest
from meshagent.node.records import AgentRecords
from meshagent.node.snapshots import AgentMeta
from meshagent.node.trust import TrustStore
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import StepSituation, why_auction
from meshagent.protocol.signed import PeerId
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.services import LlmOptions, Suspend
from meshagent.runtime.tools.spec import ToolNeeds

__all__ = ["Mover", "stricter"]

log = logging.getLogger(__name__)

_PRIVACY_ORDER: Final = {"any": 0, "lan": 1, "private": 2}
_BATTERY_FLOOR: Final = 20.0

Migrate = Callable[[dict[str, Any], Emit], Awaitable[dict[str, Any]]]


def stricter(a: str, b: str) -> str:
    """The stricter of two privacy classes."""
    return a if _PRIVACY_ORDER.get(a, 2) >= _PRIVACY_ORDER.get(b, 2) else b


@dataclass(frozen=True, slots=True)
class _Move:
    to: PeerId
    reason: str


class Mover:
    """Placement of one node's agents. :meth:`place` on the agents' threads; :meth:`run` in the node's nursery."""

    def __init__(self, records: AgentRecords, *, placement: PlacementService, trust: TrustStore,
                 tool_needs: Callable[[str], ToolNeeds], migrate: Migrate) -> None:
        """``tool_needs(agent_id)``: what the agent's WASI tools need from its host;
        ``migrate``: the handoff manager's ``migrate`` operation."""
        self._records = records
        self._placement = placement
        self._trust = trust
        self._tool_needs = tool_needs
        self._migrate = migrate
        self._token: trio.lowlevel.TrioToken | None = None
        self._moves: dict[str, _Move] = {}
        self._excluded: dict[str, frozenset[PeerId]] = {}
        self._forced: set[str] = set()
        self.moves: deque[dict[str, Any]] = deque(maxlen=1000)
        """Handoffs this node made for placement (bytes, seconds), for the timeline."""

    # --- on the agent's worker thread ------------------------------------------------------

    def owner_device(self, owner: str) -> bool:
        """This node, or one of its paired devices."""
        return owner == self._records.me or owner in self._trust

    def _step_privacy(self, agent_id: str, meta: AgentMeta, options: LlmOptions) -> str:
        """The step's privacy class; an agent that declares a private tool stays on its owner's devices."""
        privacy = stricter(meta.privacy, options.privacy)
        return stricter(privacy, "private") if self._tool_needs(agent_id).private else privacy

    def _trigger(self, agent_id: str, request: StepRequest, local: ModelAd | None) -> str | None:
        """Why this step should be auctioned, or None to run it here (:func:`why_auction`)."""
        meta = self._records.meta(agent_id)
        own = self._placement.own_advert()
        deadline = request.deadline_s
        return why_auction(StepSituation(
            forced=agent_id in self._forced,
            requirement=request.requirement,
            has_model=local is not None,
            private_away=request.privacy == "private" and not self.owner_device(meta.owner),
            on_battery=own.hardware.on_battery,
            battery_percent=own.hardware.battery_percent,
            hot=self._placement.hot(),
            deadline_s=deadline,
            local_estimate_s=self._placement.local_estimate_s(request) if deadline and local is not None else None,
            won_here=self._placement.won(agent_id),
        ), battery_floor=_BATTERY_FLOOR)

    def place(self, agent_id: str, options: LlmOptions, prompt_tokens: int, local: ModelAd | None, step: int) -> None:
        """The placer: return to run the step here; raise ``Suspend`` when a peer won it."""
        meta = self._records.meta(agent_id)
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
        if decision.winner is None or decision.winner == self._records.me:
            if local is None:
                raise AgentError(f"no peer can run this step ({decision.reason})")
            return
        self._moves[agent_id] = _Move(decision.winner, f"{reason}; {decision.reason}")
        raise Suspend(f"step placed on {decision.winner}: {decision.reason}")

    # --- on the trio thread ------------------------------------------------------------------

    def request_auction(self, agent_id: str, manager: AgentManager) -> None:
        """``meshagent migrate AGENT --auction``: auction the agent's next LLM step."""
        if not manager.is_known(agent_id):
            raise AgentNotFound(f"no agent {agent_id} on this node")
        self._forced.add(agent_id)

    def arrived(self, agent_id: str) -> None:
        """A fresh incarnation of the agent runs here: peers it failed to reach before may be tried again."""
        self._excluded.pop(agent_id, None)

    def forget(self, agent_id: str) -> None:
        """A deleted agent: no move is pending for it any more."""
        self._moves.pop(agent_id, None)
        self._excluded.pop(agent_id, None)

    async def run(self, manager: AgentManager, resume: Callable[[str], Awaitable[None]], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move each agent whose step a peer won, once it has stopped; ``resume`` brings back one whose move failed."""
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for agent_id, move in list(self._moves.items()):
                    if manager.is_active(agent_id):
                        continue
                    del self._moves[agent_id]
                    nursery.start_soon(self._move, agent_id, move, resume)
                await manager.changed()

    async def _move(self, agent_id: str, move: _Move, resume: Callable[[str], Awaitable[None]]) -> None:
        async def quiet(event: dict[str, Any]) -> None:
            return None

        try:
            result = await self._migrate({"agent": agent_id, "to": move.to}, quiet)
            await trio.to_thread.run_sync(self._records.record_placement, agent_id, move.to, move.reason)
            self.moves.append({"agent_id": agent_id, "to": move.to, "bytes": result["bytes"], "seconds": result["seconds"],
                               "via": result["via"], "sealed": True, "at": time.time()})
            log.info("agent %s moved to %s (%d bytes sealed, %.2f s)", agent_id, move.to, result["bytes"], result["seconds"])
        except (MeshError, OSError) as exc:
            log.warning("moving %s to %s failed (%s); it stays here and tries other peers", agent_id, move.to, exc)
            self._excluded[agent_id] = self._excluded.get(agent_id, frozenset()) | {move.to}
            self._placement.handoff_failed(agent_id)
            await resume(agent_id)

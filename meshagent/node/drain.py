"""Drain on leave: hand this node's agents to peers before the node stops.

``meshagent leave`` (and SIGTERM) first moves every agent that has not ended
to a peer, through the ordinary sealed handoff (so every recovery rule still
holds if either side dies meanwhile), trying peers from the least loaded up
and skipping those the agent's privacy class forbids. An agent no peer takes
within the time limit stays here: it is persisted and resumes when the node
comes back. While draining, the node refuses incoming handoffs
(:func:`admit_while_draining`), so two leaving nodes do not swap agents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import trio

from meshagent.errors import MeshError
from meshagent.protocol.handoff import RejectReason
from meshagent.protocol.peers import PeerEntry
from meshagent.protocol.signed import PeerId
from meshagent.protocol.snapshot import SnapshotHeader

__all__ = ["DRAIN_TIMEOUT_S", "Drain", "drain_order"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S: Final = 20.0
"""How long ``leave`` spends handing agents over before it stops anyway."""
ENDED: Final = frozenset({"exited", "failed", "killed", "moved"})

Migrate = Callable[[dict[str, Any], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[dict[str, Any]]]


def drain_order(entries: Iterable[PeerEntry], me: PeerId) -> list[PeerId]:
    """Peers to offer agents to: least loaded first, then nearest (unknown round-trip last)."""
    peers = [e for e in entries if e.advert.peer_id != me]
    peers.sort(key=lambda e: (e.advert.load, math.inf if e.rtt_ms is None else e.rtt_ms, e.advert.peer_id))
    return [e.advert.peer_id for e in peers]


class Drain:
    """Moves a leaving node's agents away (one agent at a time, each to the first peer that takes it)."""

    def __init__(self, *, agents: Callable[[], Iterable[tuple[str, str]]], migrate: Migrate,
                 peers: Callable[[], list[PeerId]], timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """``agents()`` yields ``(agent_id, status)`` of the agents held here; ``migrate`` is the
        handoff manager's control op; ``peers()`` lists candidates in order of preference."""
        self._agents = agents
        self._migrate = migrate
        self._peers = peers
        self._timeout = timeout_s
        self.draining = False

    def admit(self, header: SnapshotHeader) -> RejectReason | None:
        """The handoff manager's ``admit`` hook: no new agents while draining."""
        return RejectReason.FULL if self.draining else None

    async def run(self, emit: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> Mapping[str, Any]:
        """Drain now; returns which agents moved where and which stayed."""
        self.draining = True
        moved: dict[str, str] = {}
        stayed: list[str] = []

        async def quiet(event: dict[str, Any]) -> None:
            return None

        with trio.move_on_after(self._timeout) as scope:
            for agent_id, status in list(self._agents()):
                if status in ENDED:
                    continue
                for peer in self._peers():
                    try:
                        await self._migrate({"agent": agent_id, "to": peer}, quiet)
                    except (MeshError, OSError) as exc:  # privacy, refused, unreachable: the next peer
                        log.info("drain: %s not moved to %s: %s", agent_id, peer, exc)
                        continue
                    moved[agent_id] = peer
                    log.info("drain: %s moved to %s", agent_id, peer)
                    if emit is not None:
                        try:
                            await emit({"phase": "drained", "agent": agent_id, "to": peer})
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            emit = None  # the CLI went away; keep draining
                    break
                else:
                    stayed.append(agent_id)
        if scope.cancelled_caught:
            stayed += [a for a, s in self._agents() if s not in ENDED and a not in moved and a not in stayed]
        if stayed:
            log.warning("leaving with %d agent(s) no peer took; they resume here at the next start", len(stayed))
        return {"drained": moved, "stayed": stayed}

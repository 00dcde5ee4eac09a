"""What the API and the dashboard show of the mesh, read from the node's services.

Models come from verified adverts (this node's and every peer's); the
dashboard state adds hardware, load and battery, this node's agents and where
they went, its auctions (bids, winner, reason), its handoffs (bytes, seconds)
and the LLM steps it ran.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Final

import trio

from meshagent.errors import LocalProtocolError
from meshagent.node.agents import NodeAgents
from meshagent.node.membership import Membership
from meshagent.node.placement import PlacementService
from meshagent.protocol.advert import Advert, ModelAd
from meshagent.protocol.auction import ModelRequirement, best_model

__all__ = ["MeshView"]

_RECENT: Final = 40


def _peer(ad: Advert, *, me: bool, rtt_ms: float | None, age_s: float) -> dict[str, Any]:
    hw = ad.hardware
    return {
        "peer_id": ad.peer_id,
        "name": ad.name,
        "self": me,
        "profile": ad.profile or "real",
        "emulated": ad.emulated,
        "arch": hw.arch,
        "cpu_cores": hw.cpu_cores,
        "ram_total": hw.ram_total,
        "ram_free": hw.ram_free,
        "accelerators": list(hw.accelerators),
        "battery_percent": hw.battery_percent,
        "on_battery": hw.on_battery,
        "models": [{"name": m.name, "kind": m.kind, "tags": list(m.tags), "decode_tps": m.decode_tps} for m in ad.models],
        "load": ad.load,
        "price_per_1k_tokens": ad.price_per_1k_tokens,
        "rtt_ms": None if rtt_ms is None else round(rtt_ms, 2),
        "age_s": round(age_s, 1),
    }


class MeshView:
    def __init__(self, membership: Membership, placement: PlacementService, agents: NodeAgents, peer_id: str) -> None:
        self._members = membership
        self._placement = placement
        self._agents = agents
        self.peer_id = peer_id
        self.builds = 0
        """Dashboard states built so far (each reads the store for every recent agent)."""

    def adverts(self) -> list[Advert]:
        """This node's advert first, then every peer's."""
        return [self._placement.own_advert(), *(e.advert for e in self._members.table.values())]

    def models(self) -> dict[str, tuple[ModelAd, list[Advert]]]:
        """Every LLM on the mesh by name, with the nodes that hold it (this node first)."""
        out: dict[str, tuple[ModelAd, list[Advert]]] = {}
        for ad in self.adverts():
            for m in ad.models:
                if m.kind == "llm":
                    out.setdefault(m.name, (m, []))[1].append(ad)
        return out

    def serves(self, model: str) -> bool:
        """Whether any node of the mesh holds a model for ``model`` (a name or ``size>=large``-style requirement)."""
        try:
            req = ModelRequirement(model)
            return any(best_model(ad.models, req) is not None for ad in self.adverts())
        except LocalProtocolError:
            return False

    def name_of(self, peer_id: str) -> str:
        return next((ad.name for ad in self.adverts() if ad.peer_id == peer_id), peer_id[-8:])

    async def agents(self) -> list[dict[str, Any]]:
        """Recent agents of this node: their privacy, status, and the node they run (or ran) on."""
        live = self._agents.manager.agents()
        known = frozenset(a.agent_id for a in live)
        stored = await trio.to_thread.run_sync(self._agents.manager.stored_agents, known)
        out = []
        for info in [*stored, *live][-_RECENT:]:
            placements = await trio.to_thread.run_sync(self._agents.placements, info.agent_id)
            meta = self._agents.meta(info.agent_id)
            moved = bool(placements) and info.status == "moved"
            where = placements[-1]["peer"] if moved else self.peer_id
            status = info.status
            if moved:  # the outcome relayed by the node it moved to, once it ended there
                result = await trio.to_thread.run_sync(self._agents.result, info.agent_id)
                status = result["status"] if result else "moved"
            out.append({
                "agent_id": info.agent_id,
                "status": status,
                "moved": moved,
                "owner": meta.owner,
                "privacy": meta.privacy,
                "policy": meta.policy,
                "node": where,
                "placements": placements,
            })
        return out

    async def state(self) -> dict[str, Any]:
        """The whole dashboard state as JSON-ready data."""
        self.builds += 1
        now = time.time()
        own = self._placement.own_advert()
        peers = [_peer(own, me=True, rtt_ms=None, age_s=0.0)]
        for e in self._members.table.values():
            peers.append(_peer(e.advert, me=False, rtt_ms=e.rtt_ms, age_s=now - e.last_seen))
        return {
            "self": self.peer_id,
            "at": now,
            "peers": peers,
            "agents": await self.agents(),
            "auctions": list(self._placement.history)[-_RECENT:],
            "moves": list(self._agents.moves)[-_RECENT:],
            "steps": [asdict(s) for s in list(self._agents.services.steps)[-_RECENT:]],
        }

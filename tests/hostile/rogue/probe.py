"""The rogue's own plumbing check: an attack that only reports who the rogue is."""

from __future__ import annotations

from typing import Any


async def whoami(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    return {"peer_id": str(node.identity.peer_id)}


ATTACKS = {"whoami": whoami}
BEHAVIOURS: dict[str, Any] = {}

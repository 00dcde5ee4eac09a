"""A family snapshot: an agent and all its forked descendants in one document.

Used by ``meshagent run --snapshot-at N FILE`` and ``meshagent resume FILE``:
a parent waiting in ``mesh_join`` needs its children, so they travel
together. Module bytes are stored once per content hash. Decoding is strict
and size-capped like :class:`~meshagent.runtime.snapshot.AgentSnapshot`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from meshagent.errors import DecodeError, JournalError
from meshagent.protocol import codec
from meshagent.runtime.snapshot import MAX_SNAPSHOT_BYTES, AgentSnapshot

__all__ = ["encode_family", "decode_family", "FAMILY_VERSION"]

FAMILY_VERSION: Final = 1
MAX_AGENTS: Final = 4096


def encode_family(snapshots: Sequence[AgentSnapshot]) -> bytes:
    modules = {s.module_sha256: s.module for s in snapshots if s.module is not None}
    return codec.encode({
        "v": FAMILY_VERSION,
        "kind": "meshagent-family",
        "modules": modules,
        "agents": [replace(s, module=None).to_wire() for s in snapshots],
    })


def decode_family(data: bytes, *, max_size: int = MAX_SNAPSHOT_BYTES, journal_limit: int = 64 << 20) -> list[AgentSnapshot]:
    """Decode untrusted bytes; corrupt, forged or truncated input raises :class:`JournalError`."""
    try:
        raw = codec.decode_map(data, max_size=max_size, max_depth=12)
        if codec.field(raw, "v", int) != FAMILY_VERSION or raw.get("kind") != "meshagent-family":  # type: ignore[arg-type]
            raise JournalError("not a meshagent family snapshot (or an unsupported version)")
        modules = codec.field(raw, "modules", dict)  # type: ignore[arg-type]
        agents = codec.field(raw, "agents", list)  # type: ignore[arg-type]
    except DecodeError as exc:
        raise JournalError(f"snapshot file is corrupt or truncated: {exc}") from exc
    if not agents or len(agents) > MAX_AGENTS:
        raise JournalError("a family snapshot must hold between 1 and 4096 agents")
    for sha, wasm in modules.items():
        if not isinstance(sha, str) or not isinstance(wasm, bytes) or hashlib.sha256(wasm).hexdigest() != sha:
            raise JournalError("a module in the snapshot does not match its sha256 (forged or corrupt)")
    out: list[AgentSnapshot] = []
    ids: set[str] = set()
    for item in agents:
        if not isinstance(item, dict):
            raise JournalError("an agent in the family snapshot is not a map")
        snap = AgentSnapshot.from_wire(item, journal_limit=journal_limit)
        if snap.module_sha256 not in modules:
            raise JournalError(f"the module of agent {snap.agent_id} is missing from the snapshot")
        if snap.agent_id in ids:
            raise JournalError(f"agent {snap.agent_id} appears twice in the snapshot")
        ids.add(snap.agent_id)
        out.append(replace(snap, module=modules[snap.module_sha256]))  # type: ignore[arg-type]
    return out

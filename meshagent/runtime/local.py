"""Running agents in-process, without a node: ``meshagent run --local`` and ``meshagent resume``.

The same :class:`~meshagent.runtime.manager.AgentManager` the node uses, in a
``trio.run`` of its own, with no store. Optionally stops the whole family at
the root's N-th host call and writes it to a file that
:func:`resume_local` (in this or another process) continues. That file is not
sealed, so it is written with mode 0600.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from meshagent.config import SandboxLimits
from meshagent.errors import JournalError
from meshagent.runtime.bundle import decode_family, encode_family
from meshagent.runtime.hostfiles import write_private
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache, engine_for
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.services import HostServices, World
from meshagent.runtime.vfs import VirtualFs

__all__ = ["LocalResult", "run_local", "resume_local"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalResult:
    outcomes: list[Outcome]
    """Root first, then its descendants (parents before children)."""
    snapshot_written: bool = False
    written: dict[str, bytes | None] = field(default_factory=dict)
    """The root agent's file writes (path → bytes, ``None`` = deleted), for ``meshagent run --out-dir``."""


def _manager(services: HostServices | None, world: World | None, limits: SandboxLimits, verify_replay: bool,
             cache_dir: Path | None) -> AgentManager:
    modules = ModuleCache(engine_for(limits.stack_bytes), cache_dir)
    return AgentManager(modules=modules, services=services, world=world, limits=limits, verify_replay=verify_replay)


async def _supervise(manager: AgentManager, root: str, snapshot_path: Path | None) -> LocalResult:
    suspended = False
    while True:
        members = manager.family(root)
        if (snapshot_path is not None and not suspended and not manager.is_active(root)
                and manager.agent(root).status == "suspended"):
            suspended = True
            manager.suspend_all("family snapshot requested")
        if not any(manager.is_active(m) for m in members):
            break
        await manager.changed()
    members = manager.family(root)
    if suspended and snapshot_path is not None:
        data = encode_family([manager.agent(m).snapshot() for m in members])
        await trio.to_thread.run_sync(write_private, snapshot_path, data)  # unsealed: the owner's eyes only
        log.info("wrote a snapshot of %d agent(s) to %s", len(members), snapshot_path)
    written = manager.agent(root).state.written.to_dict()
    return LocalResult([manager.outcome(m) for m in members], suspended, written)


def run_local(
    wasm: bytes,
    *,
    args: Sequence[str] = ("agent",),
    env: Sequence[tuple[str, str]] = (),
    vfs: VirtualFs | None = None,
    services: HostServices | None = None,
    world: World | None = None,
    limits: SandboxLimits | None = None,
    verify_replay: bool = False,
    snapshot_at: int | None = None,
    snapshot_path: Path | None = None,
    cache_dir: Path | None = None,
    tools: Sequence[bytes] = (),
) -> LocalResult:
    """Run an agent and its forked children to the end (or to a family snapshot).

    ``tools``: WASI tool modules the agent's manifest declares (shipped tools are found without)."""
    lim = limits or SandboxLimits()

    async def main() -> LocalResult:
        manager = _manager(services, world, lim, verify_replay, cache_dir)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            root = await manager.launch(wasm, args=args, env=env, vfs=vfs, suspend_at=snapshot_at, tools=tools)
            result = await _supervise(manager, root, snapshot_path if snapshot_at is not None else None)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


def resume_local(
    data: bytes,
    *,
    services: HostServices | None = None,
    world: World | None = None,
    limits: SandboxLimits | None = None,
    verify_replay: bool = False,
    cache_dir: Path | None = None,
) -> LocalResult:
    """Resume a family snapshot written by :func:`run_local` (possibly in another process)."""
    lim = limits or SandboxLimits()
    snaps = decode_family(data, journal_limit=lim.journal_bytes)
    ids = {s.agent_id for s in snaps}
    roots = [s for s in snaps if s.parent_id not in ids]
    if len(roots) != 1:
        raise JournalError("a family snapshot must have exactly one root agent")

    async def main() -> LocalResult:
        manager = _manager(services, world, lim, verify_replay, cache_dir)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            # Register the whole family first, so that a parent replaying into mesh_join finds its children.
            for snap in snaps:
                await manager.adopt(snap, hold=True)
            for snap in snaps:
                manager.release(snap.agent_id)
            result = await _supervise(manager, roots[0].agent_id, None)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)



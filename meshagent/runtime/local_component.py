"""``meshagent run --local`` and ``meshagent resume`` for Python agents (components).

A component agent runs in this process without an agent manager (it cannot
fork yet). ``snapshot_at`` stops it before host call N and writes a family
snapshot file (one agent) that :func:`resume_component` continues, in this
or another process.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from meshagent.config import SandboxLimits
from meshagent.runtime.bundle import encode_family
from meshagent.runtime.component_agent import ComponentAgent, component_snapshot
from meshagent.runtime.components import ComponentCache
from meshagent.runtime.hostfiles import write_private
from meshagent.runtime.ids import new_agent_id
from meshagent.runtime.local import LocalResult
from meshagent.runtime.modules import engine_for
from meshagent.runtime.services import HostServices, World
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.vfs import VirtualFs

__all__ = ["run_component", "resume_component", "component_cache"]

log = logging.getLogger(__name__)


def component_cache(limits: SandboxLimits, cache_dir: Path | None) -> ComponentCache:
    return ComponentCache(engine_for(limits.stack_bytes), cache_dir)


def _finish(agent: ComponentAgent, snapshot_path: Path | None) -> LocalResult:
    outcome = agent.run()
    if outcome.status == "suspended" and snapshot_path is not None:
        write_private(snapshot_path, encode_family([agent.snapshot()]))  # unsealed: mode 0600
        return LocalResult([outcome], True)
    return LocalResult([outcome], False)


def run_component(
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
) -> LocalResult:
    lim = limits or SandboxLimits()
    cache = component_cache(lim, cache_dir)
    snap = component_snapshot(wasm, cache, agent_id=new_agent_id(), args=tuple(args), env=tuple(env), limits=lim)
    snap = dataclasses.replace(snap, vfs=vfs or VirtualFs())
    agent = ComponentAgent(snap, components=cache, services=services, limits=lim, verify_replay=verify_replay, world=world)
    agent.suspend_at = snapshot_at
    return _finish(agent, snapshot_path if snapshot_at is not None else None)


def resume_component(snapshot: AgentSnapshot, *, services: HostServices | None = None, world: World | None = None,
                     limits: SandboxLimits | None = None, verify_replay: bool = False, cache_dir: Path | None = None) -> LocalResult:
    lim = limits or SandboxLimits()
    agent = ComponentAgent(dataclasses.replace(snapshot, status="ready"), components=component_cache(lim, cache_dir),
                           services=services, limits=lim, verify_replay=verify_replay, world=world)
    return _finish(agent, None)

"""Helpers shared by the runtime tests."""

from __future__ import annotations

from pathlib import Path

from meshagent.config import SandboxLimits
from meshagent.runtime.journal import Journal
from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.sandbox import KNOWN_IMPORTS, Agent
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.vfs import VirtualFs
from tests.runtime.fakes import ScriptedLlm


def new_snapshot(modules: ModuleCache, wasm: bytes, *args: str, vfs_dir: Path | None = None,
                 agent_id: str = "agent0") -> AgentSnapshot:
    loaded = modules.load(wasm, KNOWN_IMPORTS)
    return AgentSnapshot(
        agent_id=agent_id,
        module_sha256=loaded.sha256,
        module=wasm,
        journal=Journal(),
        args=("agent", *args),
        vfs=VirtualFs.from_directory(vfs_dir) if vfs_dir else VirtualFs(),
    )


def run_alone(modules: ModuleCache, wasm: bytes, *args: str, limits: SandboxLimits | None = None,
              services: ScriptedLlm | None = None, verify: bool = False) -> tuple[Outcome, Agent]:
    agent = Agent(new_snapshot(modules, wasm, *args), modules=modules, services=services or ScriptedLlm(),
                  limits=limits, verify_replay=verify)
    return agent.run(), agent


def family_view(outcomes: list[Outcome]) -> list[tuple[str, int | None, str, int]]:
    """What must not change between a plain run, a verified replay and a resumed run (ids do)."""
    return [(o.status, o.exit_code, o.stdout.decode(), o.host_calls) for o in outcomes]


def component_journal(wasm: bytes, cache_dir: Path, *args: str) -> Journal:
    """The journal of a Python agent (component) run to its end with scripted services."""
    from meshagent.runtime.component_agent import ComponentAgent, component_snapshot
    from meshagent.runtime.components import ComponentCache
    from meshagent.runtime.modules import engine_for

    cache = ComponentCache(engine_for(SandboxLimits().stack_bytes), cache_dir)
    agent = ComponentAgent(component_snapshot(wasm, cache, agent_id="probe", args=args), components=cache,
                           services=ScriptedLlm())
    agent.run()
    return agent.journal

"""Running agents in-process, without a node: ``meshagent run --local`` and ``meshagent resume``.

The same :class:`~meshagent.runtime.manager.AgentManager` the node uses, in a
``trio.run`` of its own, with no store. Optionally stops the whole family at
the root's N-th host call and writes it to a file that
:func:`resume_local` (in this or another process) continues. That file is not
sealed, so it is written with mode 0600.

With a model (``--model``), :class:`LocalModel` matches each step's
``model=`` against it the way a node matches its own models (a name, a tag,
or ``size>=large``-style bounds on its ``size=`` tag, derived from the
parameter count unless given): there is nowhere else for a step to go, so a
step the model does not fit fails the agent with the reason, never a silent
suspension. Without one, :class:`NoModel` names the command to repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from meshagent.config import SandboxLimits
from meshagent.errors import InferenceError, JournalError, MeshError
from meshagent.inference.engine import Embedder, LlmEngine
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import ModelRequirement
from meshagent.runtime.bundle import decode_family, encode_family
from meshagent.runtime.hostfiles import write_private
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache, engine_for
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.services import EngineServices, HostServices, LlmOptions, NoServices, World
from meshagent.runtime.vfs import VirtualFs

__all__ = ["LocalResult", "LocalModel", "NoModel", "model_fits", "run_local", "resume_local"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalResult:
    outcomes: list[Outcome]
    """Root first, then its descendants (parents before children)."""
    snapshot_written: bool = False
    written: dict[str, bytes | None] = field(default_factory=dict)
    """The root agent's file writes (path → bytes, ``None`` = deleted), for ``meshagent run --out-dir``."""


def model_fits(model: ModelAd, want: str) -> bool:
    """Whether ``model`` can serve a step that asks for ``want`` (``model=`` of ``mesh_llm_options``):
    empty, its name or digest, one of its tags, or a size bound its ``size=`` tag meets."""
    want = want.strip()
    return not want or want in model.tags or ModelRequirement(want).satisfied_by(model)


class LocalModel:
    """:class:`HostServices` of ``run --local --model``: one engine, each step matched against it."""

    def __init__(self, engine: LlmEngine, embedder: Embedder | None = None, *, label: str = "") -> None:
        """``label``: how the user named the model (its path), for messages."""
        self._engine = engine
        self._inner = EngineServices(engine, embedder)
        self._label = label

    def advert(self) -> ModelAd:
        info = self._engine.info
        return ModelAd(name=info.name, sha256=info.sha256, size_bytes=info.size_bytes, kind=info.kind,
                       parameters=info.parameters, tags=info.tags)

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        model = self.advert()
        if not model_fits(model, options.model):
            raise InferenceError(self._misfit(model, options.model.strip()))
        return self._inner.llm(agent_id, prompt, replace(options, model=""))

    def _misfit(self, model: ModelAd, want: str) -> str:
        size = next((t for t in model.tags if t.startswith("size=")), "no size")
        params = f", {model.parameters / 1e6:.1f}M parameters" if model.parameters else ""
        what = f"a model of {want}" if want.startswith("size") else f"model {want!r}"
        tag = want.replace(">=", "=").replace("<=", "=").replace(" ", "") if want.startswith("size") else want
        return (f"this step needs {what}; {self._label or model.name} is {size}{params}: give a model that fits "
                f"with --model, or --model-tag {tag} to use this one anyway")

    def embed(self, agent_id: str, text: str) -> Sequence[float]:
        return self._inner.embed(agent_id, text)

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes:
        return self._inner.tool(agent_id, name, args)

    def fork(self, parent_id: str, child_ids: Sequence[str]) -> None:
        self._inner.fork(parent_id, child_ids)


class NoModel(NoServices):
    """Services with no LLM: a step fails with the command line that gives the agent one."""

    def __init__(self, command: str, elsewhere: str = "") -> None:
        """``command``: the command to repeat with ``--model``; ``elsewhere``: another way, if any."""
        self._command = command
        self._elsewhere = elsewhere

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        raise InferenceError(f"no LLM engine is loaded: give it a model with `{self._command} --model MODEL.gguf`"
                             + (f", or {self._elsewhere}" if self._elsewhere else ""))


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


async def _with_manager(manager: AgentManager, body: Callable[[AgentManager], Awaitable[LocalResult]]) -> LocalResult:
    """Run ``body`` with the manager running; a :class:`MeshError` (a module that does not load,
    an import meshagent does not provide) leaves as itself, not inside the nursery's exception group."""
    failure: MeshError | None = None
    result: LocalResult | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        try:
            result = await body(manager)
        except MeshError as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    assert result is not None
    return result


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

    async def body(manager: AgentManager) -> LocalResult:
        root = await manager.launch(wasm, args=args, env=env, vfs=vfs, suspend_at=snapshot_at, tools=tools)
        return await _supervise(manager, root, snapshot_path if snapshot_at is not None else None)

    return trio.run(_with_manager, _manager(services, world, lim, verify_replay, cache_dir), body)


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

    async def body(manager: AgentManager) -> LocalResult:
        # Register the whole family first, so that a parent replaying into mesh_join finds its children.
        for snap in snaps:
            await manager.adopt(snap, hold=True)
        for snap in snaps:
            manager.release(snap.agent_id)
        return await _supervise(manager, roots[0].agent_id, None)

    return trio.run(_with_manager, _manager(services, world, lim, verify_replay, cache_dir), body)



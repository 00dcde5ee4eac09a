"""What the host offers an agent beyond WASI: the LLM, embeddings and tools.

The runtime never talks to an engine directly. The node injects an object
implementing :class:`HostServices`; :class:`EngineServices` adapts the
inference engine protocols (:class:`~meshagent.inference.engine.LlmEngine`,
:class:`~meshagent.inference.engine.Embedder`) to it.

A service may raise :class:`Suspend` instead of answering: the agent then
stops *before* that host call is journaled, its snapshot is complete, and the
node can resume it anywhere (for example on the peer that won the auction for
this LLM step) — the call is made live there.

All methods are blocking; they run on the agent's worker thread.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol, runtime_checkable

from meshagent.errors import InferenceError, MeshError
from meshagent.inference.engine import Embedder, GenerateOptions, LlmEngine, SessionId
from meshagent.runtime.costs import Meter

__all__ = [
    "PRIVACY_CLASSES",
    "LlmOptions",
    "parse_llm_options",
    "Suspend",
    "HostServices",
    "EngineServices",
    "NoServices",
    "World",
    "RealWorld",
    "ReplayAware",
    "RollbackAware",
    "MeteredTools",
]

log = logging.getLogger(__name__)

PRIVACY_CLASSES: Final = ("private", "lan", "any")


class Suspend(Exception):
    """Raised by a host service (or the node) to stop an agent at a host call.

    Not an error: the agent's journal ends just before the call, so a snapshot
    taken now resumes by replay and then makes the call live, wherever it runs.
    """

    def __init__(self, reason: str = "suspended") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LlmOptions:
    """Options of the agent's next ``mesh_llm`` calls (set by ``mesh_llm_options``)."""

    model: str = ""
    """Model name or tag the step needs; empty = any model the node holds."""
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    privacy: str = "any"
    """``private`` (owner's devices only), ``lan`` or ``any``."""
    deadline_s: float = 0.0
    """Seconds the step should take at most (0: none); a node that expects to miss it auctions the step."""

    def to_wire(self) -> list[object]:
        base: list[object] = [self.model, self.max_tokens, self.temperature, self.seed, self.privacy]
        return [*base, self.deadline_s] if self.deadline_s else base  # journals without a deadline keep their digests

    @classmethod
    def from_wire(cls, raw: object) -> LlmOptions:
        model, max_tokens, temperature, seed, privacy, *rest = raw  # type: ignore[misc]
        deadline = rest[0] if len(rest) == 1 else 0.0
        if not (isinstance(model, str) and isinstance(max_tokens, int) and isinstance(temperature, (int, float))
                and isinstance(seed, int) and privacy in PRIVACY_CLASSES and len(rest) <= 1
                and isinstance(deadline, (int, float)) and math.isfinite(deadline) and deadline >= 0):
            raise ValueError("invalid llm options")
        return cls(model, max_tokens, float(temperature), seed, str(privacy), float(deadline))


def parse_llm_options(text: str, base: LlmOptions) -> LlmOptions | None:
    """Parse ``key=value`` pairs separated by ``;``, ``,`` or newlines; ``None`` if invalid.

    Keys: ``model``, ``max_tokens`` (1..65536), ``temperature`` (0..2),
    ``seed``, ``privacy`` (private | lan | any), ``deadline`` (seconds for the
    step, 0 for none, at most a day). Unset keys keep their value;
    an empty string resets to the defaults.
    """
    if not text.strip():
        return LlmOptions()
    options = base
    for item in text.replace("\n", ";").replace(",", ";").split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            return None
        try:
            match key:
                case "model":
                    options = replace(options, model=value)
                case "max_tokens":
                    n = int(value)
                    if not 1 <= n <= 65536:
                        return None
                    options = replace(options, max_tokens=n)
                case "temperature":
                    t = float(value)
                    if not (math.isfinite(t) and 0.0 <= t <= 2.0):
                        return None
                    options = replace(options, temperature=t)
                case "seed":
                    options = replace(options, seed=int(value))
                case "privacy":
                    if value not in PRIVACY_CLASSES:
                        return None
                    options = replace(options, privacy=value)
                case "deadline":
                    d = float(value)
                    if not (math.isfinite(d) and 0.0 <= d <= 86400.0):
                        return None
                    options = replace(options, deadline_s=d)
                case _:
                    return None
        except ValueError:
            return None
    return options


@runtime_checkable
class World(Protocol):
    """Where live clocks, randomness and sleeps come from (replay answers from the journal instead).

    ``position`` is the agent's journal length at the call; real worlds ignore
    it, deterministic test worlds can be a pure function of it.
    """

    def now_ns(self, clock_id: int, position: int) -> int: ...

    def random_bytes(self, n: int, position: int) -> bytes: ...

    def sleep(self, seconds: float) -> None: ...


class RealWorld:
    """The real clocks (realtime and monotonic) and the OS's randomness."""

    def now_ns(self, clock_id: int, position: int) -> int:
        return time.time_ns() if clock_id == 0 else time.monotonic_ns()

    def random_bytes(self, n: int, position: int) -> bytes:
        return os.urandom(n)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@runtime_checkable
class HostServices(Protocol):
    """Blocking services behind the ``mesh`` imports. Raise :class:`Suspend` to migrate."""

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str: ...

    def embed(self, agent_id: str, text: str) -> Sequence[float]: ...

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes: ...

    def fork(self, parent_id: str, child_ids: Sequence[str]) -> None:
        """The agent forked: children continue the parent's conversation (share its KV prefix)."""
        ...


@runtime_checkable
class ReplayAware(Protocol):
    """Optional: services that want to see the LLM steps a replay answers from the journal.

    A restored agent's engine session is empty (replay does not call the engine).
    Services implementing this get each replayed step (prompt and recorded answer) in
    order, and can rebuild the conversation — by prefill, or from a KV blob — before
    the agent's next live ``mesh_llm``.
    """

    def llm_replayed(self, agent_id: str, prompt: str, answer: str, options: LlmOptions) -> None: ...


@runtime_checkable
class RollbackAware(Protocol):
    """Optional: services that keep per-agent conversation state must roll it back with the agent.

    ``mesh_rollback`` discards the journal after a checkpoint, LLM steps included.
    A conversation (engine session, KV cache) that still held the discarded steps
    would make the agent's next answers depend on steps that no longer exist —
    and differ from a replay of the same agent elsewhere, which never sees them.
    """

    def rolled_back(self, agent_id: str, llm_steps: int) -> None:
        """The agent now has only its first ``llm_steps`` LLM steps."""
        ...


@runtime_checkable
class MeteredTools(Protocol):
    """Optional: services whose tools charge the work they do to the calling agent.

    ``tool_metered`` replaces ``tool`` when the services have it: the tool's work (a
    WASI tool's fuel, bytes it handles) is charged to ``meter``, which the agent pays
    from its own fuel, and a WASI tool runs within the meter's caps.
    """

    def tool_metered(self, agent_id: str, name: str, args: bytes, meter: Meter) -> bytes: ...


class NoServices:
    """Services of a node with no engine: every LLM, embed or tool call fails clearly."""

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        raise InferenceError(
            "no LLM engine is loaded: give `meshagent run --local` a model (--model MODEL.gguf), "
            "or run the agent on a node that has one"
        )

    def embed(self, agent_id: str, text: str) -> Sequence[float]:
        raise InferenceError("this node has no embedding model loaded")

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes:
        raise MeshError(f"no tool named {name!r} is installed on this node")

    def fork(self, parent_id: str, child_ids: Sequence[str]) -> None:
        return None


class EngineServices:
    """Adapter: :class:`HostServices` backed by an ``LlmEngine`` (and optional ``Embedder``).

    Each agent is one engine session (its id), so consecutive ``mesh_llm`` calls
    continue one conversation and a fork copies the KV prefix.
    """

    def __init__(self, engine: LlmEngine, embedder: Embedder | None = None) -> None:
        self._engine = engine
        self._embedder = embedder

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        want = options.model
        info = self._engine.info
        if want and want != info.name and want not in info.tags:
            # The node's placement layer may catch this and move the step elsewhere.
            raise Suspend(f"the step needs model {want!r}; this engine holds {info.name!r}")
        generation = self._engine.generate(
            SessionId(agent_id),
            prompt,
            GenerateOptions(max_tokens=options.max_tokens, temperature=options.temperature, seed=options.seed),
        )
        return generation.text

    def embed(self, agent_id: str, text: str) -> Sequence[float]:
        if self._embedder is None:
            raise InferenceError("this node has no embedding model loaded")
        return self._embedder.embed([text])[0]

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes:
        raise MeshError(f"no tool named {name!r} is installed on this node")

    def fork(self, parent_id: str, child_ids: Sequence[str]) -> None:
        for child in child_ids:
            try:
                self._engine.fork(SessionId(parent_id), SessionId(child))
            except InferenceError as exc:
                # No conversation yet (the parent never called the LLM): children start fresh.
                log.debug("no LLM session to fork from %s: %s", parent_id, exc)

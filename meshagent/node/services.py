"""Host services of a node: the ``mesh`` imports backed by this node's models, with placement.

Each ``mesh_llm`` step is a placement decision. The step runs here when this
node holds a model that fits and may run it; otherwise (or when the device is
on a low battery) the node holds an auction, and if another peer wins, the
service raises :class:`~meshagent.runtime.services.Suspend`: the agent stops
before the call is journaled, and the node hands it over to the winner, where
replay brings it back to this very call, made live there.

Conversations: each (agent, model) pair is one engine session. A session that
is not resident here (the agent arrived by handoff, or the node restarted) is
rebuilt before the next live step by replaying that model's earlier steps
into the engine — greedy decoding is deterministic, so the rebuilt
conversation is the one the agent had.

Prefix reuse across agents: when an agent ends, its conversations stay in
the engine for a while (the last few per node), with their text. A new
agent's first live step whose prompt *extends* one of those texts word for
word — the next turn of a chat that an OpenAI client sends with its whole
history — forks that session (llama.cpp sequence copy, no KV bytes copied)
and prefills only the new part. The text is matched, not the tokens: with a
BPE vocabulary the boundary may tokenize differently from one whole prompt.

Emulated profiles really run slower: after each step the service sleeps so
that the step takes ``1 / speed`` times as long as it did on this machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from meshagent.errors import InferenceError, MeshError
from meshagent.inference.engine import GenerateOptions, LlmEngine, SessionId
from meshagent.node.models import NodeModels
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import ModelRequirement, best_model
from meshagent.config import SandboxLimits
from meshagent.runtime.costs import Meter
from meshagent.runtime.services import LlmOptions
from meshagent.runtime.tools.node_tools import NodeTools

__all__ = ["StepRecord", "StepLog", "MemoryStepLog", "NodeServices", "Placer", "session_of", "requirement_of"]

log = logging.getLogger(__name__)

Placer = Callable[[str, LlmOptions, int, "ModelAd | None", int], None]
"""``placer(agent_id, options, prompt_tokens, local_model, step)``: returns to run here, raises Suspend to move."""


def session_of(agent_id: str, model_name: str) -> SessionId:
    return SessionId(f"{agent_id}@{model_name}")


def requirement_of(options: LlmOptions) -> ModelRequirement:
    """``model=`` of ``mesh_llm_options``: a model name, ``size>=large`` or ``size=large``."""
    return ModelRequirement(options.model.strip())


def _known(engine: LlmEngine, session: SessionId) -> bool:
    try:
        return bool(engine.tokens(session))
    except InferenceError:
        return False


class StepLog(Protocol):
    """Which model answered each LLM step of an agent (model sha256 per step, in order)."""

    def get(self, agent_id: str) -> list[str]: ...

    def set(self, agent_id: str, models: list[str]) -> None: ...


class MemoryStepLog:
    """A :class:`StepLog` in memory (``meshagent run --local``; nodes persist theirs)."""

    def __init__(self) -> None:
        self._steps: dict[str, list[str]] = {}

    def get(self, agent_id: str) -> list[str]:
        return list(self._steps.get(agent_id, []))

    def set(self, agent_id: str, models: list[str]) -> None:
        self._steps[agent_id] = list(models)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One live LLM step run here (for ``meshagent steps``, the demo timeline and reputation)."""

    agent_id: str
    step: int
    model: str
    privacy: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finished_at: float
    reused_tokens: int = 0
    """Prompt tokens whose KV was already here (continued session, or a finished agent's prefix)."""


@dataclass(slots=True)
class _Conversation:
    replayed: list[tuple[str, str, LlmOptions]] = field(default_factory=list)
    live: bool = False
    text: str = ""
    """Prompts and answers this session holds, in order (for prefix reuse once the agent ends)."""


DEFAULT_LIMITS: Final = SandboxLimits()

_RETIRED: Final = 8
"""Sessions of finished agents kept per node for prefix reuse (least recently retired dropped first)."""


class NodeServices:
    """:class:`~meshagent.runtime.services.HostServices` and ``ReplayAware`` for a node."""

    def __init__(
        self,
        models: NodeModels,
        *,
        placer: Placer | None = None,
        on_fork: Callable[[str, list[str]], None] | None = None,
        step_log: StepLog | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
    ) -> None:
        """``on_fork(parent_id, child_ids)`` is told of every fork (the node records the family);
        ``step_log`` keeps, per agent, which model answered each LLM step (it travels with the agent);
        ``on_step`` is told of every live step when it ends (from the agent's thread)."""
        self._models = models
        self._on_step = on_step
        self._placer = placer
        self._on_fork = on_fork
        self._step_log = step_log or MemoryStepLog()
        self._lock = threading.Lock()
        self._conversations: dict[tuple[str, str], _Conversation] = {}
        self._seen: dict[str, int] = {}
        """LLM steps (replayed or live) this incarnation of each agent has made."""
        self._history: dict[str, list[tuple[str | None, str, str, LlmOptions]]] = {}
        """Per agent, each LLM step in order: (model here or None, prompt, answer, options) — for rollbacks."""
        self.steps: deque[StepRecord] = deque(maxlen=1000)
        self._node_tools = NodeTools()
        self._retired: deque[tuple[str, SessionId, str]] = deque()
        """(model name, session, text) of finished agents' conversations, oldest first."""

    def _next_step(self, agent_id: str) -> int:
        with self._lock:
            index = self._seen.get(agent_id, 0)
            self._seen[agent_id] = index + 1
            return index

    def _by_sha(self, sha256: str) -> ModelAd | None:
        return next((m for m in self._models.adverts() if m.sha256 == sha256 and m.kind == "llm"), None)

    def _local_model(self, options: LlmOptions) -> ModelAd | None:
        return best_model(self._models.adverts(), requirement_of(options))

    def _conversation(self, agent_id: str, model: str) -> _Conversation:
        with self._lock:
            return self._conversations.setdefault((agent_id, model), _Conversation())

    # --- HostServices -------------------------------------------------------------

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        local = self._local_model(options)
        with self._lock:
            index = self._seen.get(agent_id, 0)
        if self._placer is not None:
            self._placer(agent_id, options, max(1, len(prompt) // 4), local, index)
        if local is None:
            raise InferenceError(f"no model here fits {options.model or 'an LLM step'!r} and no peer took the step")
        self._next_step(agent_id)
        engine = self._models.registry.llm(local.name)
        session = session_of(agent_id, local.name)
        conv = self._conversation(agent_id, local.name)
        gen_options = GenerateOptions(max_tokens=options.max_tokens, temperature=options.temperature, seed=options.seed)
        if not conv.live and conv.replayed and not _known(engine, session):
            self._rebuild(engine, session, conv)
        sent = prompt
        if not conv.live and not conv.replayed and not _known(engine, session):
            sent = self._continue_prefix(engine, local.name, session, conv, prompt)
        start = time.perf_counter()
        generation = engine.generate(session, sent, gen_options)
        conv.text += prompt + generation.text
        self._remember(agent_id, index, (local.name, prompt, generation.text, options))
        elapsed = time.perf_counter() - start
        speed = self._models.speed
        if speed < 1.0:
            time.sleep(elapsed * (1.0 / speed - 1.0))  # emulated device: honestly slower
        conv.live = True
        steps = self._step_log.get(agent_id)
        self._step_log.set(agent_id, [*steps[:index], local.sha256])
        record = StepRecord(agent_id, index, local.name, options.privacy, generation.prompt_tokens,
                            generation.completion_tokens, time.perf_counter() - start, time.time(), generation.reused_tokens)
        self.steps.append(record)
        if self._on_step is not None:
            self._on_step(record)
        return generation.text

    def _continue_prefix(self, engine: LlmEngine, model: str, session: SessionId, conv: _Conversation, prompt: str) -> str:
        """Fork the longest finished conversation on ``model`` that ``prompt`` extends; returns what is left to send."""
        with self._lock:
            found = max(((s, t) for m, s, t in self._retired if m == model and t and len(t) < len(prompt)
                         and prompt.startswith(t)), key=lambda st: len(st[1]), default=None)
        if found is None:
            return prompt
        try:
            engine.fork(found[0], session)
        except InferenceError as exc:
            log.debug("prefix %s is gone: %s", found[0], exc)
            return prompt
        conv.text = found[1]
        log.info("session %s continues %s (%d characters of prefix already here)", session, found[0], len(found[1]))
        return prompt[len(found[1]):]

    def retire(self, agent_id: str) -> None:
        """The agent ended: keep its conversations for prefix reuse (the last few), forget the rest."""
        with self._lock:
            kept = [(model, session_of(agent_id, model), conv.text)
                    for (a, model), conv in self._conversations.items() if a == agent_id and conv.live and conv.text]
        dropped: list[tuple[str, SessionId]] = []
        with self._lock:
            for model, session, text in kept:
                # A longer text of the same chat makes the shorter one redundant.
                for entry in [e for e in self._retired if e[0] == model and text.startswith(e[2])]:
                    self._retired.remove(entry)
                    dropped.append((entry[0], entry[1]))
                self._retired.append((model, session, text))
            while len(self._retired) > _RETIRED:
                model, session, _ = self._retired.popleft()
                dropped.append((model, session))
        self.forget(agent_id, keep={model for model, _, _ in kept})
        for model, session in dropped:
            try:
                self._models.registry.llm(model).drop(session)
            except InferenceError:
                pass

    def _rebuild(self, engine: LlmEngine, session: SessionId, conv: _Conversation) -> None:
        """Replay this model's earlier steps into a fresh session (deterministic decoding)."""
        start = time.perf_counter()
        for prompt, answer, options in conv.replayed:
            gen = engine.generate(
                session, prompt, GenerateOptions(max_tokens=options.max_tokens, temperature=options.temperature, seed=options.seed)
            )
            conv.text += prompt + gen.text
            if gen.text != answer:
                log.warning("rebuilt conversation %s differs from the journal (numerical near-tie); continuing", session)
        log.info("rebuilt %s from %d journaled steps in %.2f s", session, len(conv.replayed), time.perf_counter() - start)
        conv.replayed.clear()

    def llm_replayed(self, agent_id: str, prompt: str, answer: str, options: LlmOptions) -> None:
        index = self._next_step(agent_id)
        steps = self._step_log.get(agent_id)
        local = self._by_sha(steps[index]) if index < len(steps) else None
        self._remember(agent_id, index, (local.name if local is not None else None, prompt, answer, options))
        if local is None:
            return  # that step ran on a model this node does not hold
        conv = self._conversation(agent_id, local.name)
        if not conv.live:
            conv.replayed.append((prompt, answer, options))

    def _remember(self, agent_id: str, index: int, step: tuple[str | None, str, str, LlmOptions]) -> None:
        with self._lock:
            history = self._history.setdefault(agent_id, [])
            del history[index:]
            history.append(step)

    def rolled_back(self, agent_id: str, llm_steps: int) -> None:
        """RollbackAware: the agent rolled back to its first ``llm_steps`` steps; so do its conversations.

        Each conversation is dropped and rebuilt, at the next live step, from the steps that remain —
        exactly what a node that receives the agent does — so the answers after a rollback do not
        depend on discarded steps, and are the same here and after a move.
        """
        with self._lock:
            history = self._history.get(agent_id, [])[:llm_steps]
            self._history[agent_id] = history
            self._seen[agent_id] = min(self._seen.get(agent_id, 0), llm_steps)
            models = [model for (a, model) in self._conversations if a == agent_id]
            for model in models:
                self._conversations[(agent_id, model)] = _Conversation(
                    replayed=[(p, ans, o) for m, p, ans, o in history if m == model])
        for model in models:
            try:
                self._models.registry.llm(model).drop(session_of(agent_id, model))
            except InferenceError:
                pass
        self._step_log.set(agent_id, self._step_log.get(agent_id)[:llm_steps])

    def embed(self, agent_id: str, text: str) -> Sequence[float]:
        try:
            return self._models.registry.embedder().embed([text])[0]
        except MeshError:
            raise
        except Exception as exc:  # onnxruntime raises its own types
            raise InferenceError(f"embedding failed: {exc}") from exc

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes:
        """Tools the agent's own registry does not know: the node's tools (shipped WASI tools, inline files),
        within the node's default tool caps (the runtime calls :meth:`tool_metered` instead)."""
        return self.tool_metered(agent_id, name, args, Meter(DEFAULT_LIMITS.fuel, tool_memory_bytes=DEFAULT_LIMITS.tool_memory_bytes,
                                                             tool_fuel=DEFAULT_LIMITS.tool_fuel))

    def tool_metered(self, agent_id: str, name: str, args: bytes, meter: Meter) -> bytes:
        """MeteredTools: a node tool's run is charged to the calling agent's meter (its fuel pays for it)."""
        return self._node_tools.call(agent_id, name, args, meter)

    def fork(self, parent_id: str, child_ids: Sequence[str]) -> None:
        """Children continue the parent's conversations, sharing the KV prefix (llama.cpp sequence copy)."""
        if self._on_fork is not None:
            self._on_fork(parent_id, list(child_ids))
        steps = self._step_log.get(parent_id)
        with self._lock:
            seen = self._seen.get(parent_id, 0)
        for child in child_ids:
            self._step_log.set(child, steps[:seen])
            with self._lock:
                self._seen[child] = seen
        for ad in self._models.adverts():
            if ad.kind != "llm":
                continue
            parent = session_of(parent_id, ad.name)
            try:
                engine = self._models.registry.llm(ad.name)
                if not _known(engine, parent):
                    continue
                for child in child_ids:
                    engine.fork(parent, session_of(child, ad.name))
                    self._conversation(child, ad.name).live = True
            except InferenceError as exc:
                log.debug("no conversation to fork on %s: %s", ad.name, exc)

    def restart_count(self, agent_id: str) -> None:
        """The agent is about to replay from its start again here (resumed after a failed move)."""
        with self._lock:
            self._seen.pop(agent_id, None)

    def forget(self, agent_id: str, *, keep: frozenset[str] | set[str] = frozenset()) -> None:
        """Drop an agent's conversations here (it finished, or moved away for good); ``keep``: models whose
        engine session stays (retired for prefix reuse)."""
        with self._lock:
            self._seen.pop(agent_id, None)
            self._history.pop(agent_id, None)
            keys = [k for k in self._conversations if k[0] == agent_id]
            for k in keys:
                del self._conversations[k]
        for ad in self._models.adverts():
            if ad.kind == "llm" and ad.name not in keep:
                try:
                    self._models.registry.llm(ad.name).drop(session_of(agent_id, ad.name))
                except InferenceError:
                    pass


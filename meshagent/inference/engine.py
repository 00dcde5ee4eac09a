"""The engine interface the runtime and the node use; engines implement it.

The runtime's ``mesh_llm`` / ``mesh_embed`` host calls and the node's adverts
only ever see these protocols, never llama.cpp or onnxruntime directly, so the
runtime does not depend on any one engine.

All methods are *blocking*: the node calls them through
``trio.to_thread.run_sync`` behind a ``CapacityLimiter`` sized to the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType, Protocol, runtime_checkable

__all__ = [
    "SessionId",
    "ModelInfo",
    "GenerateOptions",
    "Generation",
    "LlmEngine",
    "Embedder",
]

SessionId = NewType("SessionId", str)
"""One agent's conversation with one model (usually the agent id)."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a node advertises about a model it holds."""

    name: str
    sha256: str
    size_bytes: int
    kind: str = "llm"
    """``llm`` or ``embed``."""
    parameters: int = 0
    quantization: str = ""
    n_ctx: int = 0
    tags: tuple[str, ...] = ()
    prefill_tps: float | None = None
    """Measured prompt tokens per second (self-benchmark), when known."""
    decode_tps: float | None = None
    """Measured generated tokens per second (self-benchmark), when known."""
    price_per_1k_tokens: float | None = None
    """Per-model price from config; ``None`` means the node's default price."""
    accelerator: str = "cpu"
    """Where the model runs: ``cpu``, or ``gpu`` when layers are offloaded."""
    gpu_layers: int = 0
    """Layers offloaded to the GPU (0 on CPU-only builds, whatever was configured)."""
    providers: tuple[str, ...] = ()
    """Execution providers in use (ONNX Runtime embedders), e.g. ``("CPUExecutionProvider",)``."""


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    max_tokens: int = 64
    temperature: float = 0.0
    """0 means greedy decoding."""
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    prefill_s: float
    decode_s: float
    reused_tokens: int = 0
    """Prompt tokens that were already in the session's KV cache (not recomputed)."""


@runtime_checkable
class LlmEngine(Protocol):
    """A loaded LLM holding per-session conversations."""

    @property
    def info(self) -> ModelInfo: ...

    def generate(self, session: SessionId, prompt: str, options: GenerateOptions) -> Generation:
        """Append ``prompt`` to the session's conversation and generate a continuation.

        The session's token history (prompt and completion) is kept, so the next
        call continues the same conversation and reuses its KV cache.
        """
        ...

    def fork(self, parent: SessionId, child: SessionId) -> None:
        """Make ``child`` a copy of ``parent``'s conversation, sharing its KV prefix."""
        ...

    def drop(self, session: SessionId) -> None:
        """Forget a session and free its KV cache."""
        ...

    def tokens(self, session: SessionId) -> list[int]:
        """The session's token history (the truth the KV cache is a cache of)."""
        ...

    def export_kv(self, session: SessionId) -> bytes:
        """The session's KV state as a self-describing blob bound to this model and engine version."""
        ...

    def import_kv(self, session: SessionId, tokens: list[int], blob: bytes | None) -> bool:
        """Restore a session from its tokens, using ``blob`` when it is valid.

        Returns True when the blob was used, False when the session was rebuilt
        by re-prefilling ``tokens`` (blob absent, corrupt or for another model).
        """
        ...


@runtime_checkable
class Embedder(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One L2-normalised vector per text."""
        ...

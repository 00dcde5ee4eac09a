"""The models a node holds: declared in config, plus the built-in embedder.

The registry turns :class:`~meshagent.config.ModelConfig` entries into engines
(created on demand, loaded lazily on first use) and into the
:class:`~meshagent.inference.engine.ModelInfo` of adverts. A model's sha256
is computed once and cached by (path, size, mtime); its prefill/decode rates
start from the per-sha256 cache (or a self-benchmark on first load when none
is cached), are learned from every generation the engine runs, and are
written back (:mod:`.selfbench`).

Cache layout under ``cache_dir``: ``sha256.json`` and ``throughput/<sha256>.json``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meshagent.config import ModelConfig
from meshagent.errors import ConfigError, MeshError, ModelError
from meshagent.inference.engine import ModelInfo
from meshagent.inference.hashing import Sha256Cache
from meshagent.inference.llama_engine import LlamaEngine
from meshagent.inference.onnx_embedder import BUILTIN_EMBED_NAME, OnnxEmbedder
from meshagent.inference.selfbench import ThroughputCache

__all__ = ["ModelEntry", "ModelRegistry", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("llm", "embed")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    kind: str
    path: Path | None
    """``None`` for the built-in embedder (its file comes from a package)."""
    config: ModelConfig | None


class ModelRegistry:
    """Models by name; engines are created once per model and shared."""

    def __init__(
        self,
        models: Sequence[ModelConfig] = (),
        *,
        cache_dir: Path,
        builtin_embed: bool = True,
        max_sessions: int = 16,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self._hashes = Sha256Cache(self.cache_dir / "sha256.json")
        self._throughput = ThroughputCache(self.cache_dir / "throughput")
        self._max_sessions = max_sessions
        self._entries: dict[str, ModelEntry] = {}
        self._llms: dict[str, LlamaEngine] = {}
        self._embedders: dict[str, OnnxEmbedder] = {}
        self._lock = threading.Lock()
        for m in models:
            if m.kind not in KINDS:
                raise ConfigError(f"model {m.name!r}: kind must be one of {', '.join(KINDS)}, not {m.kind!r}")
            if not m.name or m.name in self._entries:
                raise ConfigError(f"model name {m.name!r} is empty or declared twice")
            self._entries[m.name] = ModelEntry(m.name, m.kind, Path(m.path).expanduser(), m)
        if builtin_embed and BUILTIN_EMBED_NAME not in self._entries:
            self._entries[BUILTIN_EMBED_NAME] = ModelEntry(BUILTIN_EMBED_NAME, "embed", None, None)

    # --- lookup ---------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise ModelError(f"no model named {name!r} (known: {', '.join(self._entries) or 'none'})") from None

    def sha256(self, name: str) -> str:
        e = self.entry(name)
        if e.path is None:
            return self.embedder(name).sha256
        return self._hashes.sha256(e.path)

    def by_sha256(self, sha256: str) -> str | None:
        """The name of the model with this digest, if this node holds it."""
        for name in self._entries:
            try:
                if self.sha256(name) == sha256:
                    return name
            except ModelError:
                continue
        return None

    # --- engines --------------------------------------------------------------------

    def llm(self, name: str) -> LlamaEngine:
        """The engine of an LLM (created once; llama.cpp loads on its first use)."""
        e = self.entry(name)
        if e.kind != "llm" or e.path is None or e.config is None:
            raise ModelError(f"model {name!r} is not an LLM")
        with self._lock:
            engine = self._llms.get(name)
            if engine is None:
                engine = LlamaEngine(
                    e.path,
                    sha256=self._hashes.sha256(e.path),
                    name=name,
                    n_ctx=e.config.n_ctx,
                    n_gpu_layers=e.config.n_gpu_layers,
                    max_sessions=self._max_sessions,
                    tags=e.config.tags,
                    price_per_1k_tokens=e.config.price_per_1k_tokens,
                    throughput_cache=self._throughput,
                )
                self._llms[name] = engine
            return engine

    def embedder(self, name: str | None = None) -> OnnxEmbedder:
        """An embedder by name; the built-in one when ``name`` is ``None``."""
        name = name or BUILTIN_EMBED_NAME
        e = self.entry(name)
        if e.kind != "embed":
            raise ModelError(f"model {name!r} is not an embedding model")
        with self._lock:
            emb = self._embedders.get(name)
            if emb is None:
                if e.path is None:
                    emb = OnnxEmbedder(name=name)
                else:
                    assert e.config is not None
                    emb = OnnxEmbedder(
                        e.path,
                        name=name,
                        sha256=self._hashes.sha256(e.path),
                        tags=e.config.tags,
                        price_per_1k_tokens=e.config.price_per_1k_tokens,
                        quantization="",
                    )
                self._embedders[name] = emb
            return emb

    # --- adverts ----------------------------------------------------------------------

    def info(self, name: str) -> ModelInfo:
        e = self.entry(name)
        return self.llm(name).info if e.kind == "llm" else self.embedder(name).info

    def infos(self) -> list[ModelInfo]:
        """Adverts of every usable model; a broken model is logged and left out."""
        out: list[ModelInfo] = []
        for name in self._entries:
            try:
                out.append(self.info(name))
            except MeshError as exc:
                log.warning("model %s is unavailable: %s", name, exc)
        return out

    def close(self) -> None:
        with self._lock:
            for engine in self._llms.values():
                engine.close()
            self._llms.clear()

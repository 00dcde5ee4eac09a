"""The models this node holds, as the mesh sees them.

Wraps the :class:`~meshagent.inference.registry.ModelRegistry`: hashes models
once at start (in a worker thread), turns their ``ModelInfo`` into advert
entries, and applies an emulated profile's speed factor to the advertised
throughput (the inference path applies the same factor for real).
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from meshagent.config import Config, user_cache_dir
from meshagent.errors import MeshError
from meshagent.inference.engine import ModelInfo
from meshagent.inference.registry import ModelRegistry
from meshagent.node.hardware import PROFILE_SPEED
from meshagent.protocol.advert import ModelAd

__all__ = ["NodeModels", "model_ad"]

log = logging.getLogger(__name__)


def model_ad(info: ModelInfo, speed: float = 1.0) -> ModelAd:
    return ModelAd(
        name=info.name,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        kind=info.kind,
        parameters=info.parameters,
        quantization=info.quantization,
        n_ctx=info.n_ctx,
        tags=info.tags,
        prefill_tps=None if info.prefill_tps is None else info.prefill_tps * speed,
        decode_tps=None if info.decode_tps is None else info.decode_tps * speed,
    )


def machine_cache_dir() -> Path:
    """Per-machine cache of model digests and measured throughput, shared by every data dir.

    Throughput is a property of this machine and model, not of one node's identity.
    """
    return user_cache_dir()


class NodeModels:
    def __init__(self, config: Config, data_dir: Path) -> None:
        self.registry = ModelRegistry(config.models, cache_dir=machine_cache_dir())
        self.speed = PROFILE_SPEED.get(config.node.profile, 1.0)
        self._ads: tuple[ModelAd, ...] = ()

    async def load(self) -> None:
        """Hash every model (once; cached on disk) without blocking the node."""
        infos = await trio.to_thread.run_sync(self.registry.infos)
        self._ads = tuple(model_ad(i, self.speed) for i in infos)
        for ad in self._ads:
            log.info("model %s (%s, %d bytes, %s)", ad.name, ad.sha256[:12], ad.size_bytes, ", ".join(ad.tags) or "no tags")

    async def self_benchmark(self) -> None:
        """Measure prefill/decode rates of models never measured on this machine (cached per model)."""
        for ad in self._ads:
            if ad.kind != "llm" or ad.decode_tps is not None:
                continue
            try:
                tp = await trio.to_thread.run_sync(lambda: self.registry.llm(ad.name).self_benchmark())
                log.info("model %s: prefill %.0f tok/s, decode %.1f tok/s on this machine", ad.name, tp.prefill_tps, tp.decode_tps)
            except MeshError as exc:
                log.warning("self-benchmark of %s failed: %s", ad.name, exc)
        self.refresh()

    def refresh(self) -> None:
        """Pick up throughput measured since start (cheap: everything is cached)."""
        try:
            self._ads = tuple(model_ad(i, self.speed) for i in self.registry.infos())
        except MeshError as exc:
            log.warning("refreshing models failed: %s", exc)

    def adverts(self) -> tuple[ModelAd, ...]:
        return self._ads

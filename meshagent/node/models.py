"""The models this node holds, as the mesh sees them.

Wraps the :class:`~meshagent.inference.registry.ModelRegistry`: hashes models
and knows every LLM's rates before the node joins the mesh (in worker threads),
turns their ``ModelInfo`` into advert entries with the rates learned from the
steps run so far, and applies an emulated profile's speed factor to the
advertised throughput (the inference path applies the same factor for real).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import trio

from meshagent.config import Config, user_cache_dir
from meshagent.errors import MeshError
from meshagent.inference.engine import ModelInfo
from meshagent.inference.registry import ModelRegistry
from meshagent.inference.selfbench import PROVISIONAL_CONTENTION, Contention, Throughput
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
        self._measured: set[str] = set()
        """LLMs measured by this node since it started (the others started from the cache)."""

    async def load(self) -> None:
        """Hash every model (once; cached on disk) and know every LLM's rates, without blocking the node.

        Runs before the node joins the mesh: it never answers a call for bids with rates it
        has not measured (an unmeasured model would be quoted from a guess that no step bears
        out, and the auctioneer could not judge it). Cached rates are a starting point: those
        that no real step produced (a benchmark alone, perhaps taken under load, or written by
        an older node) are checked by measuring again before the node joins, the others by
        :meth:`self_benchmark` once it runs.
        """
        infos = await trio.to_thread.run_sync(self.registry.infos)
        self._ads = tuple(model_ad(i, self.speed) for i in infos)
        for ad in self._ads:
            log.info("model %s (%s, %d bytes, %s)", ad.name, ad.sha256[:12], ad.size_bytes, ", ".join(ad.tags) or "no tags")
        for ad in self._ads:
            if ad.kind == "llm" and not self._from_steps(ad.name):
                await self._measure(ad.name, again=True)
                self._measured.add(ad.name)

    async def _measure(self, name: str, *, again: bool) -> None:
        try:
            tp = await trio.to_thread.run_sync(lambda: self.registry.llm(name).self_benchmark(again=again))
            log.info("model %s: prefill %.0f tok/s, decode %.1f tok/s on this machine%s", name, tp.prefill_tps,
                     tp.decode_tps, " (provisional: measured under load)" if tp.provisional else "")
        except MeshError as exc:
            log.warning("self-benchmark of %s failed: %s", name, exc)

    async def self_benchmark(self, *, first_s: float = 5.0, interval_s: float = 30.0, tries_under_load: int = 3) -> None:
        """Check cached rates, then measure again rates that were measured under load, until
        real steps take over.

        Rates taken from the cache at start are measured again at once: a rate cached too
        slow would never be corrected by steps, since a node quoting it wins none. Then,
        while rates are provisional, they are measured again ``first_s`` after start, when
        the node's own start (and that of nodes started with it) no longer competes with the
        measurement; later every ``interval_s`` while the machine is quieter than during the
        last measurement, ``tries_under_load`` times at most unless it is quiet. Each
        measurement keeps the faster of each rate unless it was quiet, when it replaces them
        (:meth:`~meshagent.inference.selfbench.LearnedRates.benchmark`). Ends as soon as every
        LLM's rates rest on a quiet measurement or on real steps.
        """
        for ad in self._ads:
            if ad.kind == "llm" and ad.name not in self._measured:
                await self._measure(ad.name, again=True)
        tries = 0
        delay = first_s
        while True:
            await trio.sleep(delay)
            delay = interval_s
            pending = {ad.name: seed for ad in self._ads if ad.kind == "llm" and (seed := self._provisional(ad.name))}
            if not pending:
                return
            probe = Contention()
            await trio.sleep(1.0)
            share = probe.share()
            quiet = share <= PROVISIONAL_CONTENTION
            for name, seed in pending.items():
                if quiet or tries == 0 or (tries < tries_under_load and share < seed.contention):
                    await self._measure(name, again=True)
            tries += 1

    def _from_steps(self, name: str) -> bool:
        try:
            return self.registry.llm(name).rates.from_steps
        except MeshError:
            return False

    def _provisional(self, name: str) -> Throughput | None:
        """The model's provisional starting point, while no real step has replaced it."""
        try:
            rates = self.registry.llm(name).rates
        except MeshError:
            return None
        seed = rates.seed
        return seed if seed is not None and seed.provisional and not rates.from_steps else None

    def adverts(self) -> tuple[ModelAd, ...]:
        """This node's models as the mesh sees them, with the rates learned so far."""
        return tuple(self._live(ad) for ad in self._ads)

    def _live(self, ad: ModelAd) -> ModelAd:
        if ad.kind != "llm":
            return ad
        try:
            tp = self.registry.llm(ad.name).throughput
        except MeshError:
            return ad
        if tp is None:
            return ad
        return replace(ad, prefill_tps=tp.prefill_tps * self.speed, decode_tps=tp.decode_tps * self.speed)

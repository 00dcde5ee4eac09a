"""How much inference this hardware can run at once.

The node wraps every blocking engine call in ``trio.to_thread.run_sync``
behind a ``trio.CapacityLimiter``; these helpers size those limiters so that
they reflect real capacity instead of a guess:

* a llama.cpp context is not thread-safe and already uses the cores (all but one) for one
  batch, so each loaded LLM gets **one** slot (on a GPU too: one context, one
  stream of batches); the sessions of many agents share that context as
  sequences, they do not need parallel calls;
* ONNX Runtime sessions are thread-safe; on CPU each call uses a couple of
  cores, so embedding gets ``max(1, cores // 2)`` slots (one when there are
  only two cores, so embedding does not starve the LLM).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from meshagent.errors import InferenceError

__all__ = ["CapacityPlan", "recommended_capacity"]


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    llm_per_model: int
    """``CapacityLimiter`` size for each loaded LLM engine."""
    embed: int
    """``CapacityLimiter`` size for the embedder."""
    llm_models_loaded: int
    """How many LLMs to keep loaded at once (each holds a context and KV cache)."""
    cpu_count: int
    gpu: bool


def recommended_capacity(
    *, cpu_count: int | None = None, gpu: bool | None = None, memory_bytes: int | None = None
) -> CapacityPlan:
    """The limiter sizes for this node (arguments override the probe, for emulated profiles)."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if gpu is None:
        try:
            from meshagent.inference.llama_api import supports_gpu_offload

            gpu = supports_gpu_offload()
        except (InferenceError, OSError):  # llama-cpp-python missing or broken: no offload
            gpu = False
    if memory_bytes is None:
        try:
            import psutil

            memory_bytes = int(psutil.virtual_memory().total)
        except ImportError:
            memory_bytes = 0
    # One model per 8 GiB of RAM, at least one, at most four.
    models = max(1, min(4, memory_bytes // (8 << 30))) if memory_bytes else 1
    return CapacityPlan(
        llm_per_model=1,
        embed=max(1, cores // 2) if cores > 2 else 1,
        llm_models_loaded=models,
        cpu_count=cores,
        gpu=bool(gpu),
    )

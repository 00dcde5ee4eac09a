"""The model catalogue of the simulated mesh: four llama-family GGUFs, one per size tag.

Parameter counts, file sizes and KV-cache sizes are those of the public models
(Hugging Face model cards and ``config.json``: layers x KV heads x head dim x 2
(K and V) x 2 bytes at f16). Throughput is a property of the device, see
:mod:`simulations.devices`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

__all__ = ["ModelSpec", "MODELS", "REFERENCE_PARAMS_B", "model_sha256"]

REFERENCE_PARAMS_B: Final = 8.03
"""Device speeds are quoted for an 8B Q4 model (Llama 3.1 8B) and scaled from it."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    size: str
    """Size tag used by auction requirements (``size>=medium``)."""
    params_b: float
    file_bytes: int
    kv_bytes_per_token: int
    n_ctx: int


MODELS: Final[dict[str, ModelSpec]] = {
    # Llama 3.2 1B: 16 layers, 8 KV heads, head dim 64 -> 32 KiB/token.
    "small": ModelSpec("llama-3.2-1b-instruct-q4_k_m", "small", 1.24, 808_000_000, 16 * 8 * 64 * 4, 131_072),
    # Llama 3.2 3B: 28 layers, 8 KV heads, head dim 128 -> 112 KiB/token.
    "medium": ModelSpec("llama-3.2-3b-instruct-q4_k_m", "medium", 3.21, 2_020_000_000, 28 * 8 * 128 * 4, 131_072),
    # Llama 3.1 8B: 32 layers, 8 KV heads, head dim 128 -> 128 KiB/token.
    "large": ModelSpec("llama-3.1-8b-instruct-q4_k_m", "large", 8.03, 4_920_000_000, 32 * 8 * 128 * 4, 131_072),
    # Llama 3.1 70B: 80 layers, 8 KV heads, head dim 128 -> 320 KiB/token.
    "xl": ModelSpec("llama-3.1-70b-instruct-q4_k_m", "xl", 70.6, 42_500_000_000, 80 * 8 * 128 * 4, 131_072),
}


def model_sha256(spec: ModelSpec) -> str:
    """A stable stand-in for the GGUF's sha256 (the same file on every device)."""
    return hashlib.sha256(spec.name.encode()).hexdigest()

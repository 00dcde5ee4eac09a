"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / ".cache" / "models"
"""Generated models live here (gitignored) and are reused across runs."""


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Path of the seeded tiny llama GGUF (generated once into ``.cache/models``).

    Same bytes on every machine, so greedy outputs are deterministic. Use it
    with :class:`meshagent.inference.llama_engine.LlamaEngine` or point a
    ``ModelConfig(name=..., path=str(tiny_model))`` at it.
    """
    from meshagent.inference.tiny import ensure_tiny_model

    return ensure_tiny_model(MODEL_CACHE)

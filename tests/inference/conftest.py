"""Fixtures for the inference tests: engines on the tiny model, the embedder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshagent.inference.hashing import sha256_file
from meshagent.inference.llama_engine import LlamaEngine
from meshagent.inference.onnx_embedder import OnnxEmbedder


@pytest.fixture(scope="session")
def tiny_sha(tiny_model: Path) -> str:
    return sha256_file(tiny_model)


@pytest.fixture
def make_engine(tiny_model: Path, tiny_sha: str) -> Iterator[Callable[..., LlamaEngine]]:
    """Factory of engines on the tiny model; all are closed at teardown."""
    made: list[LlamaEngine] = []

    def make(**kwargs: object) -> LlamaEngine:
        kwargs.setdefault("n_ctx", 2048)
        kwargs.setdefault("max_sessions", 8)
        engine = LlamaEngine(tiny_model, sha256=tiny_sha, **kwargs)  # type: ignore[arg-type]
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., LlamaEngine]) -> LlamaEngine:
    return make_engine()


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder()
